//! The validated policy model and how one policy matches a request.
//!
//! Matching follows Istio: a policy matches if any rule matches; a rule if all its
//! clauses match (an empty rule matches everything); a clause if any of its matches
//! match; a match if every non-empty field matches one of its values and no `not_` field
//! does (an empty match matches everything). A policy without rules matches nothing.
//! How each HTTP attribute is compared, and what a match with HTTP conditions does when
//! only L4 is known, is in the crate docs. Must not: allocate per request beyond the
//! formatted principal.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;
use serde::Serialize;

use crate::{HttpRequest, L4Request, Request};

/// Which workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// Every workload (policies in the root namespace).
    Global,
    /// Workloads in the policy's namespace.
    Namespace,
    /// Workloads that list the policy in `authorization_policies`.
    WorkloadSelector,
    /// Requests through a waypoint, as [`Policy::targets`] say
    /// ([`Policy::applies_through`]); never a workload's own policy.
    Targets,
}

/// What a waypoint policy is attached to (Istio's `targetRefs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Target {
    /// Requests to this Service through its waypoint.
    Service {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
    },
    /// Every request through this waypoint (its Gateway).
    Gateway {
        /// The Gateway's namespace.
        namespace: String,
        /// The Gateway's name.
        name: String,
    },
    /// Every request through every waypoint (the `istio-waypoint` GatewayClass).
    AllWaypoints,
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
    /// Which workloads (or, for [`Scope::Targets`], which waypoint traffic) it applies to.
    pub scope: Scope,
    /// What a [`Scope::Targets`] policy is attached to; empty for every other scope.
    pub targets: Vec<Target>,
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
    /// Request host (without port, compared without case) is one of these.
    pub hosts: Vec<StringMatch>,
    /// Request host is none of these.
    pub not_hosts: Vec<StringMatch>,
    /// Request method is one of these (case-sensitive).
    pub methods: Vec<StringMatch>,
    /// Request method is none of these.
    pub not_methods: Vec<StringMatch>,
    /// Request path (without query) is one of these.
    pub paths: Vec<StringMatch>,
    /// Request path is none of these.
    pub not_paths: Vec<StringMatch>,
    /// Every one of these header conditions holds.
    pub headers: Vec<HeaderMatch>,
    /// The original client's address is in one of these.
    pub remote_ips: Vec<IpNet>,
    /// The original client's address is in none of these.
    pub not_remote_ips: Vec<IpNet>,
}

/// A condition on one request header (`request.headers[name]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    /// The header name, lower-case.
    pub name: String,
    /// Some value of the header is one of these (a missing header fails).
    pub values: Vec<StringMatch>,
    /// No value of the header is one of these (a missing header passes).
    pub not_values: Vec<StringMatch>,
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
    /// The attribute exists at all (a peer identity, a host, the header).
    Presence,
}

impl StringMatch {
    fn matches(&self, value: Option<&str>) -> bool {
        self.compare(value.map(str::as_bytes), |a, b| a == b)
    }

    fn matches_ignoring_case(&self, value: Option<&str>) -> bool {
        self.compare(value.map(str::as_bytes), <[u8]>::eq_ignore_ascii_case)
    }

    /// Header values are bytes; compared as bytes, so a value that is not UTF-8 cannot
    /// slip past a prefix or suffix (`admin\xff` still starts with `admin`).
    fn matches_bytes(&self, value: &[u8]) -> bool {
        self.compare(Some(value), |a, b| a == b)
    }

    /// `eq` decides whether two byte strings of equal length are the same.
    fn compare(&self, value: Option<&[u8]>, eq: impl Fn(&[u8], &[u8]) -> bool) -> bool {
        let Some(v) = value else {
            return false;
        };
        match self {
            Self::Presence => true,
            Self::Exact(s) => eq(v, s.as_bytes()),
            Self::Prefix(s) => v.get(..s.len()).is_some_and(|head| eq(head, s.as_bytes())),
            Self::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .and_then(|start| v.get(start..))
                .is_some_and(|tail| eq(tail, s.as_bytes())),
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
            Scope::Targets => false,
        }
    }

    /// Whether the policy applies to a request through the waypoint `waypoint`
    /// (`(namespace, name)` of its Gateway) to the Service `service`, if the request is
    /// addressed to one: some target is that Service, that Gateway, or every waypoint.
    /// Only [`Scope::Targets`] policies apply through waypoints.
    pub fn applies_through(&self, waypoint: (&str, &str), service: Option<(&str, &str)>) -> bool {
        self.scope == Scope::Targets
            && self.targets.iter().any(|target| match target {
                Target::Service { namespace, name } => {
                    service == Some((namespace.as_str(), name.as_str()))
                }
                Target::Gateway { namespace, name } => {
                    waypoint == (namespace.as_str(), name.as_str())
                }
                Target::AllWaypoints => true,
            })
    }

    /// Whether the policy applies at ingress gateway `gateway` (`(namespace, name)` of its
    /// Gateway): some target is that Gateway. A GatewayClass target means every
    /// *waypoint* (`istio-waypoint`), not ingress gateways.
    pub fn applies_at_ingress(&self, gateway: (&str, &str)) -> bool {
        self.scope == Scope::Targets
            && self.targets.iter().any(|target| {
                matches!(target, Target::Gateway { namespace, name }
                    if gateway == (namespace.as_str(), name.as_str()))
            })
    }

    /// Whether any rule matches a connection of which only L4 is known.
    pub fn matches(&self, request: &L4Request<'_>) -> bool {
        self.matches_request(&Request {
            l4: *request,
            http: None,
        })
    }

    /// Whether any rule matches `request`.
    pub fn matches_request(&self, request: &Request<'_>) -> bool {
        self.matches_attributes(&Attributes::of(request))
    }

    pub(crate) fn matches_attributes(&self, attrs: &Attributes<'_>) -> bool {
        self.rules.iter().any(|rule| {
            rule.clauses
                .iter()
                .all(|clause| clause.matches.iter().any(|m| m.matches(attrs, self.action)))
        })
    }
}

/// The request's attributes in the forms policies compare; built once per evaluation.
pub(crate) struct Attributes<'a> {
    principal: Option<String>,
    namespace: Option<&'a str>,
    service_account: Option<(&'a str, &'a str)>,
    source_ip: IpAddr,
    destination_ip: IpAddr,
    destination_port: u16,
    http: Option<HttpRequest<'a>>,
}

impl<'a> Attributes<'a> {
    pub(crate) fn of(request: &Request<'a>) -> Self {
        let id = request.l4.source_identity;
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
            source_ip: request.l4.source_ip,
            destination_ip: request.l4.destination_ip,
            destination_port: request.l4.destination_port,
            http: request.http,
        }
    }
}

/// `positive` is empty or holds a match; `negative` holds none.
fn field<T>(positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&hit)) && !negative.iter().any(&hit)
}

impl Match {
    /// Whether any HTTP field is set, so the match can only be decided on a request.
    pub fn needs_http(&self) -> bool {
        !(self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty()
            && self.headers.is_empty()
            && self.remote_ips.is_empty()
            && self.not_remote_ips.is_empty())
    }

    /// `action` is the policy's: it decides an HTTP condition when only L4 is known.
    fn matches(&self, a: &Attributes<'_>, action: Action) -> bool {
        self.matches_l4(a)
            && match &a.http {
                Some(http) => self.matches_http(http),
                // Opaque TCP: a DENY with HTTP conditions denies more (its HTTP part is
                // taken as holding), an ALLOW allows less (it does not match). Never open.
                None => action == Action::Deny || !self.needs_http(),
            }
    }

    fn matches_http(&self, r: &HttpRequest<'_>) -> bool {
        let host = (!r.host.is_empty()).then_some(r.host);
        field(&self.hosts, &self.not_hosts, |m| {
            m.matches_ignoring_case(host)
        }) && field(&self.methods, &self.not_methods, |m| {
            m.matches(Some(r.method))
        }) && field(&self.paths, &self.not_paths, |m| m.matches(Some(r.path)))
            && field(&self.remote_ips, &self.not_remote_ips, |net| {
                net.contains(&r.remote_ip)
            })
            && self.headers.iter().all(|h| h.matches(r.headers))
    }

    fn matches_l4(&self, a: &Attributes<'_>) -> bool {
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

impl HeaderMatch {
    /// Some value matches `values` (if any are given) and none matches `not_values`.
    fn matches(&self, headers: &HeaderMap) -> bool {
        let present = headers.get_all(self.name.as_str());
        let any_is = |wanted: &[StringMatch]| {
            present
                .iter()
                .any(|v| wanted.iter().any(|m| m.matches_bytes(v.as_bytes())))
        };
        (self.values.is_empty() || any_is(&self.values)) && !any_is(&self.not_values)
    }
}
