//! AuthorizationPolicy → `istio.security.Authorization`.
//!
//! Scope: no selector in the root namespace → GLOBAL, no selector elsewhere → NAMESPACE,
//! a selector → WORKLOAD_SELECTOR (listed on the selected workloads). Each rule becomes one
//! OR-ed rule of AND-ed clauses: the `to` list, the `from` list, then each `when` condition.
//! Strings: `*` → presence, `*x` → suffix, `x*` → prefix, else exact. Rules that need HTTP
//! attributes: omitted from an ALLOW policy (they can never match at L4); in a DENY
//! policy the HTTP part is taken as matching, so the rule denies more. Both are reported.
//! Policies attached to a waypoint (`targetRefs`) are for a waypoint, and Bowline has no
//! waypoint yet: such a policy **fails closed**. It compiles to a deny-all policy
//! (`<ns>/l7-unenforced~<name>`) listed on every pod it targets — the pods of the targeted
//! Service, of the services (and workloads) bound to the targeted Gateway, or of every
//! waypoint-bound service for GatewayClass `istio-waypoint` in the root namespace — and
//! the status says so. Istio skips such a policy when no waypoint runs, turning a "GET
//! only" policy into allow-all; Bowline refuses the traffic instead.

use config::resources::{self as k8s, DRY_RUN};
use config::validate::{L4_CONDITION_KEYS, ip_block, port_number};
use xds::security as sec;

use super::{Compiled, Index};

pub(super) fn policies(index: &Index<'_>, out: &mut Compiled, wanted: &dyn Fn(&str) -> bool) {
    for policy in &index.policies {
        if !wanted(policy.metadata.namespace()) {
            continue;
        }
        let object = format!(
            "AuthorizationPolicy {}/{}",
            policy.metadata.namespace(),
            policy.metadata.name
        );
        if !policy.spec.target_refs.is_empty() {
            fail_closed(index, policy, object, out);
            continue;
        }
        let compiled = compile(index, policy, &object, out);
        out.insert_authorization(compiled);
    }
}

/// The name of the deny-all policy that stands in for L7 policy `name` while no waypoint
/// enforces it (`~` cannot appear in a Kubernetes name, so it never clashes).
fn unenforced_name(name: &str) -> String {
    format!("l7-unenforced~{name}")
}

/// Compiles a `targetRefs` policy to the deny-all stand-in and says why.
fn fail_closed(
    index: &Index<'_>,
    policy: &k8s::AuthorizationPolicy,
    object: String,
    out: &mut Compiled,
) {
    let namespace = policy.metadata.namespace();
    let targets: Vec<String> = policy
        .spec
        .target_refs
        .iter()
        .map(|t| format!("{} {}", t.kind, t.name))
        .collect();
    let targets = targets.join(", ");
    let mesh_wide_elsewhere = namespace != index.settings.root_namespace
        && policy
            .spec
            .target_refs
            .iter()
            .any(|t| t.kind == "GatewayClass");
    if mesh_wide_elsewhere {
        out.report(
            object.clone(),
            format!(
                "targets GatewayClass {} outside the root namespace {}: that part has no effect (as in Istio); move the policy to {} to apply it to every waypoint",
                k8s::WAYPOINT_CLASS,
                index.settings.root_namespace,
                index.settings.root_namespace
            ),
        );
    }
    out.report(
        object,
        format!(
            "attached through a waypoint ({targets}), and Bowline has no waypoint to enforce L7 policy yet: traffic to the targeted pods is refused (fail closed) until one does; delete the policy to allow it again"
        ),
    );
    // One rule without clauses matches every connection.
    let mut stand_in = deny_selected(
        namespace,
        unenforced_name(&policy.metadata.name),
        vec![sec::Rule::default()],
    );
    stand_in.dry_run = dry_run(policy);
    out.insert_authorization(stand_in);
}

/// A DENY policy for the pods that list it (scope WORKLOAD_SELECTOR).
pub(super) fn deny_selected(
    namespace: &str,
    name: String,
    rules: Vec<sec::Rule>,
) -> sec::Authorization {
    sec::Authorization {
        name,
        namespace: namespace.to_owned(),
        scope: sec::Scope::WorkloadSelector as i32,
        action: sec::Action::Deny as i32,
        rules,
        ..Default::default()
    }
}

/// Whether the policy carries `istio.io/dry-run: "true"`.
fn dry_run(policy: &k8s::AuthorizationPolicy) -> bool {
    policy
        .metadata
        .annotations
        .get(DRY_RUN)
        .is_some_and(|v| v == "true")
}

/// Keys of the fail-closed stand-ins of the `targetRefs` policies that target `pod` (see
/// the module docs).
pub(super) fn unenforced_for<'a>(
    index: &'a Index<'_>,
    pod: &'a k8s::Pod,
) -> impl Iterator<Item = String> + 'a {
    index
        .policies
        .iter()
        .filter(|p| !p.spec.target_refs.is_empty())
        .filter(move |p| targets_pod(index, p, pod))
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace(),
                unenforced_name(&p.metadata.name)
            )
        })
}

fn targets_pod(index: &Index<'_>, policy: &k8s::AuthorizationPolicy, pod: &k8s::Pod) -> bool {
    let namespace = policy.metadata.namespace();
    let root = namespace == index.settings.root_namespace;
    let selecting = || {
        index
            .services_by_namespace
            .get(pod.metadata.namespace())
            .into_iter()
            .flatten()
            .filter(|service| selects(service, pod))
    };
    policy
        .spec
        .target_refs
        .iter()
        .any(|target| match target.kind.as_str() {
            "Service" => {
                pod.metadata.namespace() == namespace
                    && selecting().any(|service| service.metadata.name == target.name)
            }
            "Gateway" => {
                let bound_to_it = |waypoint: Option<(String, String)>| {
                    waypoint.is_some_and(|(ns, name)| ns == namespace && name == target.name)
                };
                bound_to_it(super::waypoint::requested_by(index, &pod.metadata))
                    || selecting()
                        .any(|s| bound_to_it(super::waypoint::requested_by(index, &s.metadata)))
            }
            "GatewayClass" => {
                root && (super::waypoint::requested_by(index, &pod.metadata).is_some()
                    || selecting()
                        .any(|s| super::waypoint::requested_by(index, &s.metadata).is_some()))
            }
            _ => false,
        })
}

/// Whether `service` selects `pod` (same namespace, non-empty selector, all labels).
fn selects(service: &k8s::Service, pod: &k8s::Pod) -> bool {
    let selector = &service.spec.selector;
    service.metadata.namespace() == pod.metadata.namespace()
        && !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
}

/// Keys of the selector-scoped policies that select `pod` (its namespace's and the root
/// namespace's).
pub(super) fn selecting<'a>(
    index: &'a Index<'_>,
    pod: &'a k8s::Pod,
) -> impl Iterator<Item = String> + 'a {
    let namespace = pod.metadata.namespace();
    let root = index.settings.root_namespace.as_str();
    let own = index.selector_policies.get(namespace);
    let mesh_wide = if namespace == root {
        None
    } else {
        index.selector_policies.get(root)
    };
    own.into_iter()
        .chain(mesh_wide)
        .flatten()
        .filter_map(move |policy| {
            let selector = policy.spec.selector.as_ref()?;
            let policy_ns = policy.metadata.namespace();
            let applies = policy.spec.target_refs.is_empty()
                && selector
                    .match_labels
                    .iter()
                    .all(|(k, v)| pod.metadata.labels.get(k) == Some(v));
            applies.then(|| format!("{policy_ns}/{}", policy.metadata.name))
        })
}

fn compile(
    index: &Index<'_>,
    policy: &k8s::AuthorizationPolicy,
    object: &str,
    out: &mut Compiled,
) -> sec::Authorization {
    let namespace = policy.metadata.namespace();
    let deny = policy.spec.action.as_deref() == Some("DENY");
    let scope = match (
        &policy.spec.selector,
        namespace == index.settings.root_namespace,
    ) {
        (Some(_), _) => sec::Scope::WorkloadSelector,
        (None, true) => sec::Scope::Global,
        (None, false) => sec::Scope::Namespace,
    };
    let mut rules = Vec::new();
    for (i, rule) in policy.spec.rules.iter().flatten().enumerate() {
        let mut l7 = Vec::new();
        let clauses = clauses(rule, namespace, &mut l7);
        if l7.is_empty() {
            rules.push(sec::Rule { clauses });
        } else if deny {
            out.report(
                object.to_owned(),
                format!(
                    "partially enforced: rule {i} uses HTTP attributes ({}); ztunnel denies on its L4 part alone, so it denies more — bind a waypoint to enforce it exactly",
                    l7.join(", ")
                ),
            );
            rules.push(sec::Rule { clauses });
        } else {
            out.report(
                object.to_owned(),
                format!(
                    "partially enforced: ALLOW rule {i} uses HTTP attributes ({}) and is omitted at L4, so it allows nothing — bind a waypoint to enforce it",
                    l7.join(", ")
                ),
            );
        }
    }
    sec::Authorization {
        name: policy.metadata.name.clone(),
        namespace: namespace.to_owned(),
        scope: scope as i32,
        action: if deny {
            sec::Action::Deny
        } else {
            sec::Action::Allow
        } as i32,
        rules,
        dry_run: dry_run(policy),
        ..Default::default()
    }
}

/// The L4 clauses of `rule`; names of HTTP-only fields go to `l7`. A `from`/`to` list
/// with an entry that is HTTP-only, and an HTTP `when`, give no clause (they are taken as
/// matching; an ALLOW rule with any of them is dropped by the caller).
fn clauses(
    rule: &k8s::AuthorizationRule,
    namespace: &str,
    l7: &mut Vec<String>,
) -> Vec<sec::Clause> {
    let mut clauses = Vec::new();
    let to = rule.to.iter().map(|to| {
        let op = &to.operation;
        note_l7(
            "to.operation",
            &[
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ],
            l7,
        );
        sec::Match {
            destination_ports: ports(&op.ports),
            not_destination_ports: ports(&op.not_ports),
            ..Default::default()
        }
    });
    clauses.extend(any_of(to.collect()));
    let from = rule.from.iter().map(|from| {
        let s = &from.source;
        note_l7(
            "from.source",
            &[
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ],
            l7,
        );
        sec::Match {
            namespaces: strings(&s.namespaces),
            not_namespaces: strings(&s.not_namespaces),
            principals: strings(&s.principals),
            not_principals: strings(&s.not_principals),
            source_ips: addresses(&s.ip_blocks),
            not_source_ips: addresses(&s.not_ip_blocks),
            service_accounts: accounts(&s.service_accounts, namespace),
            not_service_accounts: accounts(&s.not_service_accounts, namespace),
            ..Default::default()
        }
    });
    let from: Vec<sec::Match> = from.collect();
    clauses.extend(any_of(from));
    for condition in &rule.when {
        if !L4_CONDITION_KEYS.contains(&condition.key.as_str()) {
            l7.push(format!("when {}", condition.key));
            continue;
        }
        let (values, not_values) = (&condition.values, &condition.not_values);
        let m = match condition.key.as_str() {
            "source.ip" => sec::Match {
                source_ips: addresses(values),
                not_source_ips: addresses(not_values),
                ..Default::default()
            },
            "destination.ip" => sec::Match {
                destination_ips: addresses(values),
                not_destination_ips: addresses(not_values),
                ..Default::default()
            },
            "destination.port" => sec::Match {
                destination_ports: ports(values),
                not_destination_ports: ports(not_values),
                ..Default::default()
            },
            "source.namespace" => sec::Match {
                namespaces: strings(values),
                not_namespaces: strings(not_values),
                ..Default::default()
            },
            _ => sec::Match {
                principals: strings(values),
                not_principals: strings(not_values),
                ..Default::default()
            },
        };
        clauses.push(sec::Clause { matches: vec![m] });
    }
    clauses
}

/// Records the HTTP-only fields (of `section`) that are set.
fn note_l7(section: &str, fields: &[(&str, &Vec<String>)], l7: &mut Vec<String>) {
    for (field, values) in fields {
        if !values.is_empty() {
            l7.push(format!("{section}.{field}"));
        }
    }
}

/// The clause "any of `matches`", or none when the list is empty or one entry has no L4
/// condition (it matches anything, so the whole list does).
fn any_of(matches: Vec<sec::Match>) -> Option<sec::Clause> {
    let always = matches.iter().any(|m| *m == sec::Match::default());
    (!matches.is_empty() && !always).then_some(sec::Clause { matches })
}

/// Istio's string forms: `*` any (present), `*x` suffix, `x*` prefix, else exact.
pub(super) fn string_match(value: &str) -> sec::StringMatch {
    use sec::string_match::MatchType;
    let kind = if value == "*" {
        MatchType::Presence(())
    } else if let Some(suffix) = value.strip_prefix('*') {
        MatchType::Suffix(suffix.to_owned())
    } else if let Some(prefix) = value.strip_suffix('*') {
        MatchType::Prefix(prefix.to_owned())
    } else {
        MatchType::Exact(value.to_owned())
    };
    sec::StringMatch {
        match_type: Some(kind),
    }
}

fn strings(values: &[String]) -> Vec<sec::StringMatch> {
    values.iter().map(|v| string_match(v)).collect()
}

fn ports(values: &[String]) -> Vec<u32> {
    values
        .iter()
        .filter_map(|p| port_number(p))
        .map(u32::from)
        .collect()
}

fn addresses(values: &[String]) -> Vec<sec::Address> {
    values
        .iter()
        .filter_map(|v| ip_block(v))
        .map(|net| sec::Address {
            address: xds::ip_to_bytes(net.network()).into(),
            length: u32::from(net.prefix_len()),
        })
        .collect()
}

fn accounts(values: &[String], namespace: &str) -> Vec<sec::ServiceAccountMatch> {
    values
        .iter()
        .map(|v| match v.split_once('/') {
            Some((ns, sa)) => sec::ServiceAccountMatch {
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
            },
            None => sec::ServiceAccountMatch {
                namespace: namespace.to_owned(),
                service_account: v.clone(),
            },
        })
        .collect()
}
