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
            attached(index, policy, object, out);
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

/// The name of the policy that, while waypoint `namespace/waypoint` enforces L7 policy
/// `name`, refuses every connection to the targeted pods that does not come from it.
fn via_waypoint_name(name: &str, (namespace, waypoint): (&str, &str)) -> String {
    format!("l7-via~{name}~{namespace}~{waypoint}")
}

/// A `targetRefs` policy: the L7 resource for waypoints, and the L4 stand-ins that make it
/// the only way in — "only from the waypoint" on pods whose waypoint runs, deny-all on the
/// others (see the module docs).
fn attached(
    index: &Index<'_>,
    policy: &k8s::AuthorizationPolicy,
    object: String,
    out: &mut Compiled,
) {
    let namespace = policy.metadata.namespace();
    let name = &policy.metadata.name;
    let root = namespace == index.settings.root_namespace;
    if !root
        && policy
            .spec
            .target_refs
            .iter()
            .any(|t| t.kind == "GatewayClass")
    {
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
    let l7 = super::l7::authorization(index, policy, &object, out);
    out.insert_l7_authorization(l7);

    let dry_run = dry_run(policy);
    // One rule without clauses matches every connection.
    let mut deny_all = deny_selected(namespace, unenforced_name(name), vec![sec::Rule::default()]);
    deny_all.dry_run = dry_run;
    out.insert_authorization(deny_all);
    let mut missing = Vec::new();
    for waypoint in waypoints_through(index, policy) {
        let (w_ns, w_name) = (waypoint.0.as_str(), waypoint.1.as_str());
        if !super::waypoint::running(index, w_ns, w_name) {
            missing.push(format!("{w_ns}/{w_name}"));
            continue;
        }
        let principal = format!("{}/ns/{w_ns}/sa/{w_name}", index.settings.trust_domain);
        let only_waypoint = sec::Rule {
            clauses: vec![sec::Clause {
                matches: vec![sec::Match {
                    not_principals: vec![string_match(&principal)],
                    ..Default::default()
                }],
            }],
        };
        let mut stand_in = deny_selected(
            namespace,
            via_waypoint_name(name, (w_ns, w_name)),
            vec![only_waypoint],
        );
        stand_in.dry_run = dry_run;
        out.insert_authorization(stand_in);
    }
    let targets: Vec<String> = policy
        .spec
        .target_refs
        .iter()
        .map(|t| format!("{} {}", t.kind, t.name))
        .collect();
    let targets = targets.join(", ");
    if !missing.is_empty() {
        out.report(
            object.clone(),
            format!(
                "attached through waypoint(s) {} that are not running: traffic to the pods they would serve is refused (fail closed) until they run (`bowline waypoint apply -n NS`); delete the policy to allow it again",
                missing.join(", ")
            ),
        );
    }
    let unbound = policy
        .spec
        .target_refs
        .iter()
        .filter(|t| t.kind == "Service")
        .filter(|t| {
            index
                .services_by_namespace
                .get(namespace)
                .into_iter()
                .flatten()
                .find(|s| s.metadata.name == t.name)
                .is_none_or(|s| super::waypoint::requested_by(index, &s.metadata).is_none())
        });
    let unbound: Vec<String> = unbound.map(|t| t.name.clone()).collect();
    if !unbound.is_empty() {
        out.report(
            object,
            format!(
                "attached ({targets}) but Service {} uses no waypoint (istio.io/use-waypoint): traffic to its pods is refused (fail closed) until one is bound; delete the policy to allow it again",
                unbound.join(", ")
            ),
        );
    }
}

/// The waypoints through which a `targetRefs` policy applies: the targeted Services'
/// waypoints, the targeted Gateways, every Gateway for GatewayClass in the root namespace.
fn waypoints_through(
    index: &Index<'_>,
    policy: &k8s::AuthorizationPolicy,
) -> std::collections::BTreeSet<(String, String)> {
    let namespace = policy.metadata.namespace();
    let root = namespace == index.settings.root_namespace;
    let mut out = std::collections::BTreeSet::new();
    for target in &policy.spec.target_refs {
        match target.kind.as_str() {
            "Service" => out.extend(
                index
                    .services_by_namespace
                    .get(namespace)
                    .into_iter()
                    .flatten()
                    .filter(|s| s.metadata.name == target.name)
                    .filter_map(|s| super::waypoint::requested_by(index, &s.metadata)),
            ),
            "Gateway" => {
                out.insert((namespace.to_owned(), target.name.clone()));
            }
            "GatewayClass" if root => out.extend(
                index
                    .gateways
                    .keys()
                    .map(|(ns, name)| ((*ns).to_owned(), (*name).to_owned())),
            ),
            _ => {}
        }
    }
    out
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
pub(super) fn dry_run(policy: &k8s::AuthorizationPolicy) -> bool {
    policy
        .metadata
        .annotations
        .get(DRY_RUN)
        .is_some_and(|v| v == "true")
}

/// Keys of the stand-ins of the `targetRefs` policies that target `pod`: "only from the
/// waypoint" where the waypoint the policy applies through runs, deny-all otherwise.
pub(super) fn unenforced_for<'a>(
    index: &'a Index<'_>,
    pod: &'a k8s::Pod,
) -> impl Iterator<Item = String> + 'a {
    index
        .policies
        .iter()
        .filter(|p| !p.spec.target_refs.is_empty())
        .filter_map(move |p| {
            let through = waypoint_for_pod(index, p, pod)?;
            let name = &p.metadata.name;
            let stand_in = match through {
                Some((ns, waypoint)) if super::waypoint::running(index, &ns, &waypoint) => {
                    via_waypoint_name(name, (&ns, &waypoint))
                }
                _ => unenforced_name(name),
            };
            Some(format!("{}/{stand_in}", p.metadata.namespace()))
        })
}

/// Whether `policy` targets `pod`: `None` when not; `Some(waypoint)` when it does, with
/// the waypoint through which it applies (`None` when the pod's traffic has none).
fn waypoint_for_pod(
    index: &Index<'_>,
    policy: &k8s::AuthorizationPolicy,
    pod: &k8s::Pod,
) -> Option<Option<(String, String)>> {
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
    let requested = |meta: &k8s::ObjectMeta| super::waypoint::requested_by(index, meta);
    let own_or_services =
        || requested(&pod.metadata).or_else(|| selecting().find_map(|s| requested(&s.metadata)));
    policy
        .spec
        .target_refs
        .iter()
        .find_map(|target| match target.kind.as_str() {
            "Service" if pod.metadata.namespace() == namespace => selecting()
                .find(|service| service.metadata.name == target.name)
                .map(|service| requested(&service.metadata)),
            "Gateway" => {
                let it = (namespace.to_owned(), target.name.clone());
                let bound = |w: Option<(String, String)>| w.as_ref() == Some(&it);
                (bound(requested(&pod.metadata))
                    || selecting().any(|s| bound(requested(&s.metadata))))
                .then_some(Some(it))
            }
            "GatewayClass" if root => own_or_services().map(Some),
            _ => None,
        })
}

/// Whether `service` selects `pod` (same namespace, non-empty selector, all labels).
pub(super) fn selects(service: &k8s::Service, pod: &k8s::Pod) -> bool {
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
    let rules = compile_rules(
        policy,
        object,
        out,
        |rule, l7| sec::Rule {
            clauses: clauses(rule, namespace, l7),
        },
        |i, l7| {
            format!(
                "partially enforced: rule {i} uses HTTP attributes ({l7}); ztunnel denies on its L4 part alone, so it denies more — bind a waypoint to enforce it exactly"
            )
        },
        |i, l7| {
            format!(
                "partially enforced: ALLOW rule {i} uses HTTP attributes ({l7}) and is omitted at L4, so it allows nothing — bind a waypoint to enforce it"
            )
        },
    );
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

/// The rules of `policy`, each compiled by `compile`, which lists what it cannot check:
/// such a rule stays in a DENY policy (it is taken as matching there, so it denies more)
/// and leaves an ALLOW policy (it allows less); both are reported (`deny_note`,
/// `allow_note`, given the rule's index and that list). Never fail open.
pub(super) fn compile_rules<R>(
    policy: &k8s::AuthorizationPolicy,
    object: &str,
    out: &mut Compiled,
    mut compile: impl FnMut(&k8s::AuthorizationRule, &mut Vec<String>) -> R,
    deny_note: impl Fn(usize, &str) -> String,
    allow_note: impl Fn(usize, &str) -> String,
) -> Vec<R> {
    let deny = policy.spec.action.as_deref() == Some("DENY");
    let mut rules = Vec::new();
    for (i, rule) in policy.spec.rules.iter().flatten().enumerate() {
        let mut unchecked = Vec::new();
        let compiled = compile(rule, &mut unchecked);
        let list = unchecked.join(", ");
        if unchecked.is_empty() {
            rules.push(compiled);
        } else if deny {
            out.report(object.to_owned(), deny_note(i, &list));
            rules.push(compiled);
        } else {
            out.report(object.to_owned(), allow_note(i, &list));
        }
    }
    rules
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
        to_l4(op)
    });
    clauses.extend(any_of(to.collect()).map(|matches| sec::Clause { matches }));
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
        from_l4(s, namespace)
    });
    let from: Vec<sec::Match> = from.collect();
    clauses.extend(any_of(from).map(|matches| sec::Clause { matches }));
    for condition in &rule.when {
        match condition_l4(condition) {
            Some(m) => clauses.push(sec::Clause { matches: vec![m] }),
            None => l7.push(format!("when {}", condition.key)),
        }
    }
    clauses
}

/// The L4 part of a `to.operation`: its ports.
pub(super) fn to_l4(op: &k8s::Operation) -> sec::Match {
    sec::Match {
        destination_ports: ports(&op.ports),
        not_destination_ports: ports(&op.not_ports),
        ..Default::default()
    }
}

/// The L4 part of a `from.source`: identities and peer addresses.
pub(super) fn from_l4(s: &k8s::Source, namespace: &str) -> sec::Match {
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
}

/// A `when` condition on an L4 key as a match; `None` for other keys.
pub(super) fn condition_l4(condition: &k8s::Condition) -> Option<sec::Match> {
    if !L4_CONDITION_KEYS.contains(&condition.key.as_str()) {
        return None;
    }
    let (values, not_values) = (&condition.values, &condition.not_values);
    Some(match condition.key.as_str() {
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
    })
}

/// Records the HTTP-only fields (of `section`) that are set.
fn note_l7(section: &str, fields: &[(&str, &Vec<String>)], l7: &mut Vec<String>) {
    for (field, values) in fields {
        if !values.is_empty() {
            l7.push(format!("{section}.{field}"));
        }
    }
}

/// "Any of `matches`" as a clause's list, or `None` when the list is empty or one entry
/// has no condition (it matches anything, so the whole list does).
pub(super) fn any_of<M: Default + PartialEq>(matches: Vec<M>) -> Option<Vec<M>> {
    let always = matches.iter().any(|m| *m == M::default());
    (!matches.is_empty() && !always).then_some(matches)
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

pub(super) fn strings(values: &[String]) -> Vec<sec::StringMatch> {
    values.iter().map(|v| string_match(v)).collect()
}

fn ports(values: &[String]) -> Vec<u32> {
    values
        .iter()
        .filter_map(|p| port_number(p))
        .map(u32::from)
        .collect()
}

pub(super) fn addresses(values: &[String]) -> Vec<sec::Address> {
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
