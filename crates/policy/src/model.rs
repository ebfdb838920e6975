//! The validated policy model and how one policy matches an L4 request.
//!
//! Matching follows Istio: a policy matches if any rule matches; a rule if all its
//! clauses match (an empty rule matches everything); a clause if any of its matches
//! match; a match if every non-empty field matches one of its values and no `not_` field
//! does (an empty match matches everything). A policy without rules matches nothing.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::L4Request;

/// Which workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// Every workload (policies in the root namespace).
    Global,
    /// Workloads in the policy's namespace.
    Namespace,
    /// Workloads that list the policy in `authorization_policies`.
    WorkloadSelector,
}

/// What a match does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Allow matching connections (and, once any ALLOW applies, only those).
    Allow,
    /// Deny matching connections.
    Deny,
}

/// One compiled authorization policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Policy name.
    pub name: String,
    /// Policy namespace.
    pub namespace: String,
    /// Which workloads it applies to.
    pub scope: Scope,
    /// ALLOW or DENY.
    pub action: Action,
    /// OR-ed rules.
    pub rules: Vec<Rule>,
    /// Evaluated and reported, never enforced.
    pub dry_run: bool,
}

/// AND-ed clauses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Rule {
    /// The clauses.
    pub clauses: Vec<Clause>,
}

/// OR-ed matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Clause {
    /// The matches.
    pub matches: Vec<Match>,
}

/// Conditions on one connection; every non-empty field must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Match {
    /// Source namespace is one of these.
    pub namespaces: Vec<StringMatch>,
    /// Source namespace is none of these.
    pub not_namespaces: Vec<StringMatch>,
    /// Source principal (`<td>/ns/<ns>/sa/<sa>`) is one of these.
    pub principals: Vec<StringMatch>,
    /// Source principal is none of these.
    pub not_principals: Vec<StringMatch>,
    /// Source address is in one of these.
    pub source_ips: Vec<IpNet>,
    /// Source address is in none of these.
    pub not_source_ips: Vec<IpNet>,
    /// Destination address is in one of these.
    pub destination_ips: Vec<IpNet>,
    /// Destination address is in none of these.
    pub not_destination_ips: Vec<IpNet>,
    /// Destination port is one of these.
    pub destination_ports: Vec<u16>,
    /// Destination port is none of these.
    pub not_destination_ports: Vec<u16>,
    /// Source service account is one of these.
    pub service_accounts: Vec<ServiceAccountMatch>,
    /// Source service account is none of these.
    pub not_service_accounts: Vec<ServiceAccountMatch>,
}

/// A service account in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceAccountMatch {
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

/// How a string attribute is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// The attribute exists at all (a peer identity is present).
    Presence,
}

impl StringMatch {
    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (_, None) => false,
            (Self::Presence, Some(_)) => true,
            (Self::Exact(s), Some(v)) => v == s,
            (Self::Prefix(s), Some(v)) => v.starts_with(s.as_str()),
            (Self::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
        }
    }
}

impl Policy {
    /// `namespace/name`, the key workloads use to select the policy.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the policy applies to a workload in `namespace` whose selected policies
    /// (`namespace/name` keys) are `selected`.
    pub fn applies_to(&self, namespace: &str, selected: &[String]) -> bool {
        match self.scope {
            Scope::Global => true,
            Scope::Namespace => self.namespace == namespace,
            Scope::WorkloadSelector => selected.iter().any(|key| {
                key.split_once('/') == Some((self.namespace.as_str(), self.name.as_str()))
            }),
        }
    }

    /// Whether any rule matches `request`.
    pub fn matches(&self, request: &L4Request<'_>) -> bool {
        let attrs = Attributes::of(request);
        self.rules.iter().any(|rule| {
            rule.clauses
                .iter()
                .all(|clause| clause.matches.iter().any(|m| m.matches(&attrs)))
        })
    }
}

/// The request's attributes in the forms policies compare.
struct Attributes<'a> {
    principal: Option<String>,
    namespace: Option<&'a str>,
    service_account: Option<(&'a str, &'a str)>,
    source_ip: IpAddr,
    destination_ip: IpAddr,
    destination_port: u16,
}

impl<'a> Attributes<'a> {
    fn of(request: &L4Request<'a>) -> Self {
        let id = request.source_identity;
        Self {
            principal: id.map(|id| {
                format!(
                    "{}/ns/{}/sa/{}",
                    id.trust_domain(),
                    id.namespace(),
                    id.service_account()
                )
            }),
            namespace: id.map(|id| id.namespace()),
            service_account: id.map(|id| (id.namespace(), id.service_account())),
            source_ip: request.source_ip,
            destination_ip: request.destination_ip,
            destination_port: request.destination_port,
        }
    }
}

/// `positive` is empty or holds a match; `negative` holds none.
fn field<T>(positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&hit)) && !negative.iter().any(&hit)
}

impl Match {
    fn matches(&self, a: &Attributes<'_>) -> bool {
        let principal = a.principal.as_deref();
        field(&self.namespaces, &self.not_namespaces, |m| {
            m.matches(a.namespace)
        }) && field(&self.principals, &self.not_principals, |m| {
            m.matches(principal)
        }) && field(&self.source_ips, &self.not_source_ips, |net| {
            net.contains(&a.source_ip)
        }) && field(&self.destination_ips, &self.not_destination_ips, |net| {
            net.contains(&a.destination_ip)
        }) && field(
            &self.destination_ports,
            &self.not_destination_ports,
            |port| *port == a.destination_port,
        ) && field(&self.service_accounts, &self.not_service_accounts, |sa| {
            a.service_account == Some((sa.namespace.as_str(), sa.service_account.as_str()))
        })
    }
}
