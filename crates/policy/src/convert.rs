//! From the wire form (`istio.security.Authorization`) to the validated [`Policy`].
//! Anything malformed is refused with the field that is wrong, so a bad resource is
//! NACKed or reported instead of being half-enforced.

use ipnet::IpNet;
use xds::security as wire;

use crate::model::{Action, Clause, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch};

/// Why a wire policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorization policy {policy:?}: {field}: {reason}")]
pub struct PolicyError {
    /// `namespace/name`.
    pub policy: String,
    /// The offending field, e.g. `rules[0].clauses[1].matches[0].source_ips[2]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl TryFrom<wire::Authorization> for Policy {
    type Error = PolicyError;

    fn try_from(w: wire::Authorization) -> Result<Self, Self::Error> {
        let key = format!("{}/{}", w.namespace, w.name);
        let err = |field: String, reason: String| PolicyError {
            policy: key.clone(),
            field,
            reason,
        };
        if w.name.is_empty() || w.namespace.is_empty() {
            return Err(err("name".into(), "name and namespace are required".into()));
        }
        let scope = match wire::Scope::try_from(w.scope) {
            Ok(wire::Scope::Global) => Scope::Global,
            Ok(wire::Scope::Namespace) => Scope::Namespace,
            Ok(wire::Scope::WorkloadSelector) => Scope::WorkloadSelector,
            Err(_) => return Err(err("scope".into(), format!("unknown value {}", w.scope))),
        };
        let action = match wire::Action::try_from(w.action) {
            Ok(wire::Action::Allow) => Action::Allow,
            Ok(wire::Action::Deny) => Action::Deny,
            Err(_) => return Err(err("action".into(), format!("unknown value {}", w.action))),
        };
        let mut rules = Vec::with_capacity(w.rules.len());
        for (r, rule) in w.rules.into_iter().enumerate() {
            let mut clauses = Vec::with_capacity(rule.clauses.len());
            for (c, clause) in rule.clauses.into_iter().enumerate() {
                let mut matches = Vec::with_capacity(clause.matches.len());
                for (m, wm) in clause.matches.into_iter().enumerate() {
                    let at = format!("rules[{r}].clauses[{c}].matches[{m}]");
                    matches
                        .push(convert_match(wm).map_err(|(f, why)| err(format!("{at}.{f}"), why))?);
                }
                clauses.push(Clause { matches });
            }
            rules.push(Rule { clauses });
        }
        Ok(Policy {
            name: w.name,
            namespace: w.namespace,
            scope,
            action,
            rules,
            dry_run: w.dry_run,
        })
    }
}

type FieldError = (String, String);

fn convert_match(w: wire::Match) -> Result<Match, FieldError> {
    if !w.extensions.is_empty() {
        return Err((
            "extensions".into(),
            "extension matches are not supported; refusing rather than ignoring them".into(),
        ));
    }
    Ok(Match {
        namespaces: strings("namespaces", w.namespaces)?,
        not_namespaces: strings("not_namespaces", w.not_namespaces)?,
        principals: strings("principals", w.principals)?,
        not_principals: strings("not_principals", w.not_principals)?,
        source_ips: nets("source_ips", w.source_ips)?,
        not_source_ips: nets("not_source_ips", w.not_source_ips)?,
        destination_ips: nets("destination_ips", w.destination_ips)?,
        not_destination_ips: nets("not_destination_ips", w.not_destination_ips)?,
        destination_ports: ports("destination_ports", w.destination_ports)?,
        not_destination_ports: ports("not_destination_ports", w.not_destination_ports)?,
        service_accounts: accounts(w.service_accounts),
        not_service_accounts: accounts(w.not_service_accounts),
    })
}

fn strings(field: &str, values: Vec<wire::StringMatch>) -> Result<Vec<StringMatch>, FieldError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            use wire::string_match::MatchType;
            // Principals may be written with or without the scheme; compare without.
            let bare = |s: String| s.strip_prefix("spiffe://").map(str::to_owned).unwrap_or(s);
            match v.match_type {
                Some(MatchType::Exact(s)) => Ok(StringMatch::Exact(bare(s))),
                Some(MatchType::Prefix(s)) => Ok(StringMatch::Prefix(bare(s))),
                Some(MatchType::Suffix(s)) => Ok(StringMatch::Suffix(s)),
                Some(MatchType::Presence(_)) => Ok(StringMatch::Presence),
                None => Err((format!("{field}[{i}]"), "no match type set".into())),
            }
        })
        .collect()
}

fn nets(field: &str, values: Vec<wire::Address>) -> Result<Vec<IpNet>, FieldError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let at = || format!("{field}[{i}]");
            let ip = xds::ip_from_bytes(&a.address).ok_or_else(|| {
                (
                    at(),
                    format!("{} address bytes; expected 4 or 16", a.address.len()),
                )
            })?;
            let len = u8::try_from(a.length).unwrap_or(u8::MAX);
            IpNet::new(ip, len).map_err(|_| {
                (
                    at(),
                    format!("prefix length {} is too long for {ip}", a.length),
                )
            })
        })
        .collect()
}

fn ports(field: &str, values: Vec<u32>) -> Result<Vec<u16>, FieldError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| (format!("{field}[{i}]"), format!("{p} is not a port")))
        })
        .collect()
}

fn accounts(values: Vec<wire::ServiceAccountMatch>) -> Vec<ServiceAccountMatch> {
    values
        .into_iter()
        .map(|sa| ServiceAccountMatch {
            namespace: sa.namespace,
            service_account: sa.service_account,
        })
        .collect()
}
