//! From the wire forms (`istio.security.Authorization` for ztunnel,
//! `bowline.l7.v1.Authorization` for waypoints) to the validated [`Policy`]. Anything
//! malformed is refused with the field that is wrong, so a bad resource is NACKed or
//! reported instead of being half-enforced. Both forms share the rule walking and the L4
//! match; the waypoint form adds targets and HTTP conditions.

use http::HeaderName;
use ipnet::IpNet;
use xds::l7;
use xds::security as wire;

use crate::model::{
    Action, Clause, HeaderMatch, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch,
    Target,
};

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
        let policy = format!("{}/{}", w.namespace, w.name);
        convert_l4_policy(w).map_err(|(field, reason)| PolicyError {
            policy,
            field,
            reason,
        })
    }
}

impl TryFrom<l7::Authorization> for Policy {
    type Error = PolicyError;

    fn try_from(w: l7::Authorization) -> Result<Self, Self::Error> {
        let policy = format!("{}/{}", w.namespace, w.name);
        convert_l7_policy(w).map_err(|(field, reason)| PolicyError {
            policy,
            field,
            reason,
        })
    }
}

/// The field (a path from the policy) and what is wrong with it.
type FieldError = (String, String);

/// A nested field's error, its path prefixed with `at` (formatted only on error).
fn under(at: impl std::fmt::Display, (field, reason): FieldError) -> FieldError {
    (format!("{at}.{field}"), reason)
}

fn convert_l4_policy(w: wire::Authorization) -> Result<Policy, FieldError> {
    require_name(&w.name, &w.namespace)?;
    let scope = match wire::Scope::try_from(w.scope) {
        Ok(wire::Scope::Global) => Scope::Global,
        Ok(wire::Scope::Namespace) => Scope::Namespace,
        Ok(wire::Scope::WorkloadSelector) => Scope::WorkloadSelector,
        Err(_) => return Err(("scope".into(), format!("unknown value {}", w.scope))),
    };
    let action = convert_action(w.action)?;
    let rules = convert_rules(
        w.rules
            .into_iter()
            .map(|rule| rule.clauses.into_iter().map(|clause| clause.matches)),
        convert_match,
    )?;
    Ok(Policy {
        name: w.name,
        namespace: w.namespace,
        scope,
        targets: vec![],
        action,
        rules,
        dry_run: w.dry_run,
    })
}

fn convert_l7_policy(w: l7::Authorization) -> Result<Policy, FieldError> {
    require_name(&w.name, &w.namespace)?;
    if w.targets.is_empty() {
        return Err((
            "targets".into(),
            "at least one target is required; a waypoint policy attached to nothing would \
             never apply"
                .into(),
        ));
    }
    let targets = w
        .targets
        .into_iter()
        .enumerate()
        .map(|(i, t)| convert_target(t).map_err(|e| under(format_args!("targets[{i}]"), e)))
        .collect::<Result<_, _>>()?;
    let action = convert_action(w.action)?;
    let rules = convert_rules(
        w.rules
            .into_iter()
            .map(|rule| rule.clauses.into_iter().map(|clause| clause.matches)),
        convert_l7_match,
    )?;
    Ok(Policy {
        name: w.name,
        namespace: w.namespace,
        scope: Scope::Targets,
        targets,
        action,
        rules,
        dry_run: w.dry_run,
    })
}

fn require_name(name: &str, namespace: &str) -> Result<(), FieldError> {
    if name.is_empty() || namespace.is_empty() {
        return Err(("name".into(), "name and namespace are required".into()));
    }
    Ok(())
}

fn convert_action(action: i32) -> Result<Action, FieldError> {
    match wire::Action::try_from(action) {
        Ok(wire::Action::Allow) => Ok(Action::Allow),
        Ok(wire::Action::Deny) => Ok(Action::Deny),
        Err(_) => Err(("action".into(), format!("unknown value {action}"))),
    }
}

/// Walks rules → clauses → matches of either wire form, converting each match with
/// `convert` and naming a refused one by its position.
fn convert_rules<W, C, R>(
    rules: R,
    convert: impl Fn(W) -> Result<Match, FieldError>,
) -> Result<Vec<Rule>, FieldError>
where
    R: IntoIterator,
    R::Item: IntoIterator<Item = C>,
    C: IntoIterator<Item = W>,
{
    let mut converted = Vec::new();
    for (r, clauses) in rules.into_iter().enumerate() {
        let mut rule = Rule::default();
        for (c, matches) in clauses.into_iter().enumerate() {
            let mut clause = Clause::default();
            for (m, wm) in matches.into_iter().enumerate() {
                let at = |e| under(format_args!("rules[{r}].clauses[{c}].matches[{m}]"), e);
                clause.matches.push(convert(wm).map_err(at)?);
            }
            rule.clauses.push(clause);
        }
        converted.push(rule);
    }
    Ok(converted)
}

fn convert_target(t: l7::Target) -> Result<Target, FieldError> {
    use l7::target::Kind;
    let named = |t: l7::Target| {
        if t.namespace.is_empty() {
            return Err(("namespace".into(), "a namespace is required".into()));
        }
        if t.name.is_empty() {
            return Err(("name".into(), "a name is required".into()));
        }
        Ok((t.namespace, t.name))
    };
    match Kind::try_from(t.kind) {
        Ok(Kind::Service) => named(t).map(|(namespace, name)| Target::Service { namespace, name }),
        Ok(Kind::Gateway) => named(t).map(|(namespace, name)| Target::Gateway { namespace, name }),
        Ok(Kind::GatewayClass) if !t.namespace.is_empty() => Err((
            "namespace".into(),
            "a GATEWAY_CLASS target means every waypoint and names no namespace".into(),
        )),
        Ok(Kind::GatewayClass) if !t.name.is_empty() => Err((
            "name".into(),
            "a GATEWAY_CLASS target means every waypoint and names no name".into(),
        )),
        Ok(Kind::GatewayClass) => Ok(Target::AllWaypoints),
        Err(_) => Err(("kind".into(), format!("unknown value {}", t.kind))),
    }
}

fn convert_match(w: wire::Match) -> Result<Match, FieldError> {
    if !w.extensions.is_empty() {
        return Err((
            "extensions".into(),
            "extension matches are not supported; refusing rather than ignoring them".into(),
        ));
    }
    Ok(Match {
        namespaces: identity_strings("namespaces", w.namespaces)?,
        not_namespaces: identity_strings("not_namespaces", w.not_namespaces)?,
        principals: identity_strings("principals", w.principals)?,
        not_principals: identity_strings("not_principals", w.not_principals)?,
        source_ips: nets("source_ips", w.source_ips)?,
        not_source_ips: nets("not_source_ips", w.not_source_ips)?,
        destination_ips: nets("destination_ips", w.destination_ips)?,
        not_destination_ips: nets("not_destination_ips", w.not_destination_ips)?,
        destination_ports: ports("destination_ports", w.destination_ports)?,
        not_destination_ports: ports("not_destination_ports", w.not_destination_ports)?,
        service_accounts: accounts(w.service_accounts),
        not_service_accounts: accounts(w.not_service_accounts),
        ..Match::default()
    })
}

/// The L4 part (absent = no L4 condition) plus the HTTP conditions.
fn convert_l7_match(w: l7::Match) -> Result<Match, FieldError> {
    let l4 = match w.l4 {
        Some(l4) => convert_match(l4).map_err(|e| under("l4", e))?,
        None => Match::default(),
    };
    Ok(Match {
        hosts: hosts("hosts", w.hosts)?,
        not_hosts: hosts("not_hosts", w.not_hosts)?,
        methods: strings("methods", w.methods)?,
        not_methods: strings("not_methods", w.not_methods)?,
        paths: strings("paths", w.paths)?,
        not_paths: strings("not_paths", w.not_paths)?,
        headers: w
            .headers
            .into_iter()
            .enumerate()
            .map(|(i, h)| convert_header(h).map_err(|e| under(format_args!("headers[{i}]"), e)))
            .collect::<Result<_, _>>()?,
        remote_ips: nets("remote_ips", w.remote_ips)?,
        not_remote_ips: nets("not_remote_ips", w.not_remote_ips)?,
        ..l4
    })
}

fn convert_header(h: l7::HeaderMatch) -> Result<HeaderMatch, FieldError> {
    let refuse = |reason: String| Err(("name".into(), reason));
    if h.name.is_empty() {
        return refuse("a header name is required".into());
    }
    if h.name.starts_with(':') {
        return refuse(format!(
            "{:?} is a pseudo-header; match it with hosts, methods or paths",
            h.name
        ));
    }
    match HeaderName::from_bytes(h.name.as_bytes()) {
        Err(_) => return refuse(format!("{:?} is not a valid HTTP header name", h.name)),
        Ok(valid) if valid.as_str() != h.name => {
            return refuse(format!(
                "{:?} is not lower-case; write {:?}",
                h.name,
                valid.as_str()
            ));
        }
        Ok(_) => {}
    }
    if h.values.is_empty() && h.not_values.is_empty() {
        return Err((
            "values".into(),
            "a header condition needs values or not_values".into(),
        ));
    }
    Ok(HeaderMatch {
        values: strings("values", h.values)?,
        not_values: strings("not_values", h.not_values)?,
        name: h.name,
    })
}

/// Hosts are compared without the port, so a host written with one could never match
/// (and a DENY on it would never deny): refused.
fn hosts(field: &str, values: Vec<wire::StringMatch>) -> Result<Vec<StringMatch>, FieldError> {
    let hosts = strings(field, values)?;
    for (i, host) in hosts.iter().enumerate() {
        let written = match host {
            StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Suffix(s) => s,
            StringMatch::Presence => continue,
        };
        // Outside an IPv6 literal's brackets, a host without its port has no colon.
        if written
            .rsplit(']')
            .next()
            .is_some_and(|tail| tail.contains(':'))
        {
            return Err((
                format!("{field}[{i}]"),
                format!(
                    "{written:?} has a port; hosts are matched without the port, write the host alone"
                ),
            ));
        }
    }
    Ok(hosts)
}

/// Strings naming identities: principals may be written with or without the scheme;
/// compare without.
fn identity_strings(
    field: &str,
    values: Vec<wire::StringMatch>,
) -> Result<Vec<StringMatch>, FieldError> {
    let bare = |s: String| s.strip_prefix("spiffe://").map(str::to_owned).unwrap_or(s);
    Ok(strings(field, values)?
        .into_iter()
        .map(|m| match m {
            StringMatch::Exact(s) => StringMatch::Exact(bare(s)),
            StringMatch::Prefix(s) => StringMatch::Prefix(bare(s)),
            other => other,
        })
        .collect())
}

fn strings(field: &str, values: Vec<wire::StringMatch>) -> Result<Vec<StringMatch>, FieldError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            use wire::string_match::MatchType;
            match v.match_type {
                Some(MatchType::Exact(s)) => Ok(StringMatch::Exact(s)),
                Some(MatchType::Prefix(s)) => Ok(StringMatch::Prefix(s)),
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
