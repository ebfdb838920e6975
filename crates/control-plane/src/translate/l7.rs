//! AuthorizationPolicy with `targetRefs` → `bowline.l7.v1.Authorization`, for waypoints.
//!
//! Targets: a Service → SERVICE (that service's traffic through its waypoint), a Gateway →
//! GATEWAY (everything through that waypoint), GatewayClass `istio-waypoint` in the root
//! namespace → GATEWAY_CLASS (every waypoint; elsewhere it has no effect, as in Istio).
//! Each rule is the AND of: the `to` list (ports, hosts, methods, paths), the `from` list
//! (identities and peer addresses as at L4, `remoteIpBlocks` as the original client), and
//! each `when` condition (L4 keys, `remote.ip`, `request.headers[name]`). What the
//! waypoint cannot check yet — JWT (`requestPrincipals`, `request.auth.*`), `connection.sni`,
//! `destination.port.name`, `experimental.*` — makes an ALLOW rule match nothing and is
//! taken as matching in a DENY rule (it denies more); both are reported. Never fail open.

use config::resources as k8s;
use xds::l7;
use xds::security as sec;

use super::authz::{
    addresses, any_of, compile_rules, condition_l4, dry_run, from_l4, string_match, strings, to_l4,
};
use super::{Compiled, Index};

/// The waypoint form of `policy` (which has `targetRefs`).
pub(super) fn authorization(
    index: &Index<'_>,
    policy: &k8s::AuthorizationPolicy,
    object: &str,
    out: &mut Compiled,
) -> l7::Authorization {
    let namespace = policy.metadata.namespace();
    let root = namespace == index.settings.root_namespace;
    let targets = policy
        .spec
        .target_refs
        .iter()
        .filter_map(|t| {
            let kind = match t.kind.as_str() {
                "Service" => l7::target::Kind::Service,
                "Gateway" => l7::target::Kind::Gateway,
                "GatewayClass" if root => {
                    return Some(l7::Target {
                        kind: l7::target::Kind::GatewayClass as i32,
                        ..Default::default()
                    });
                }
                _ => return None,
            };
            Some(l7::Target {
                kind: kind as i32,
                namespace: namespace.to_owned(),
                name: t.name.clone(),
            })
        })
        .collect();
    let deny = policy.spec.action.as_deref() == Some("DENY");
    let rules = compile_rules(
        policy,
        object,
        out,
        |rule, unsupported| l7::Rule {
            clauses: clauses(rule, namespace, unsupported),
        },
        |i, what| {
            format!(
                "partially enforced: rule {i} uses what the waypoint cannot check yet ({what}); it is taken as matching, so the rule denies more"
            )
        },
        |i, what| {
            format!(
                "partially enforced: ALLOW rule {i} uses what the waypoint cannot check yet ({what}) and is omitted, so it allows nothing"
            )
        },
    );
    l7::Authorization {
        name: policy.metadata.name.clone(),
        namespace: namespace.to_owned(),
        targets,
        action: if deny {
            sec::Action::Deny
        } else {
            sec::Action::Allow
        } as i32,
        rules,
        dry_run: dry_run(policy),
    }
}

/// The clauses of `rule`; what cannot be checked goes to `unsupported` (and gives no
/// clause: it is taken as matching, the caller drops ALLOW rules that have any).
fn clauses(
    rule: &k8s::AuthorizationRule,
    namespace: &str,
    unsupported: &mut Vec<String>,
) -> Vec<l7::Clause> {
    let mut clauses = Vec::new();
    let to = rule.to.iter().map(|to| {
        let op = &to.operation;
        l7::Match {
            l4: Some(to_l4(op)).filter(|m| *m != sec::Match::default()),
            hosts: strings(&op.hosts),
            not_hosts: strings(&op.not_hosts),
            methods: exact(&op.methods),
            not_methods: exact(&op.not_methods),
            paths: strings(&op.paths),
            not_paths: strings(&op.not_paths),
            ..Default::default()
        }
    });
    clauses.extend(any_of(to.collect()).map(|matches| l7::Clause { matches }));
    let from = rule.from.iter().map(|from| {
        let s = &from.source;
        if !s.request_principals.is_empty() || !s.not_request_principals.is_empty() {
            unsupported.push("from.source.requestPrincipals (JWT)".into());
        }
        l7::Match {
            l4: Some(from_l4(s, namespace)).filter(|m| *m != sec::Match::default()),
            remote_ips: addresses(&s.remote_ip_blocks),
            not_remote_ips: addresses(&s.not_remote_ip_blocks),
            ..Default::default()
        }
    });
    let from: Vec<l7::Match> = from.collect();
    clauses.extend(any_of(from).map(|matches| l7::Clause { matches }));
    for condition in &rule.when {
        let key = condition.key.as_str();
        let (values, not_values) = (&condition.values, &condition.not_values);
        let m = if let Some(l4) = condition_l4(condition) {
            l7::Match {
                l4: Some(l4),
                ..Default::default()
            }
        } else if key == "remote.ip" {
            l7::Match {
                remote_ips: addresses(values),
                not_remote_ips: addresses(not_values),
                ..Default::default()
            }
        } else if let Some(header) = key
            .strip_prefix("request.headers[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            l7::Match {
                headers: vec![l7::HeaderMatch {
                    name: header.to_ascii_lowercase(),
                    values: strings(values),
                    not_values: strings(not_values),
                }],
                ..Default::default()
            }
        } else {
            unsupported.push(format!("when {key}"));
            continue;
        };
        clauses.push(l7::Clause { matches: vec![m] });
    }
    clauses
}

/// Methods compare exactly (`*` is not a wildcard there in Istio either, but a present
/// method always matches it).
fn exact(values: &[String]) -> Vec<sec::StringMatch> {
    values
        .iter()
        .map(|v| {
            if v == "*" {
                string_match(v)
            } else {
                sec::StringMatch {
                    match_type: Some(sec::string_match::MatchType::Exact(v.clone())),
                }
            }
        })
        .collect()
}
