//! Meaning checks beyond the shape: names, addresses, ports, modes, actions and
//! condition keys; routes' parents, matches, filters, backends and durations (in a
//! submodule of their own). Each failure names the field and says what would be accepted.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::resources::*;

mod gateway;
mod routes;
mod traffic;
pub use routes::{HTTP_METHODS, MAX_RETRY_ATTEMPTS, gateway_duration};

/// `(field path, message)`.
pub(crate) type Invalid = (String, String);

fn invalid<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((path.into(), message.into()))
}

/// Checks one resource.
pub(crate) fn resource(resource: &Resource) -> Result<(), Invalid> {
    metadata(resource.metadata(), resource.kind())?;
    match resource {
        Resource::Pod(pod) => pod_spec(pod),
        Resource::Service(service) => service_spec(service),
        Resource::Gateway(gateway) => gateway::gateway_spec(gateway),
        Resource::Secret(secret) => gateway::secret(secret),
        Resource::AuthorizationPolicy(policy) => authorization(policy),
        Resource::PeerAuthentication(peer) => peer_authentication(peer),
        Resource::HttpRoute(route) => routes::http_route(route),
        Resource::GrpcRoute(route) => routes::grpc_route(route),
        Resource::Node(node) => match &node.spec.pod_cidr {
            Some(cidr) if cidr.parse::<IpNet>().is_err() => {
                invalid("spec.podCIDR", format!("{cidr:?} is not a CIDR"))
            }
            _ => Ok(()),
        },
        Resource::Workload(kind, workload) => workload_spec(*kind, workload),
        Resource::ServiceEntry(entry) => service_entry(&entry.spec),
        Resource::VirtualService(service) => traffic::virtual_service(service),
        Resource::DestinationRule(rule) => traffic::destination_rule(rule),
        Resource::Opaque(..) => Ok(()),
        Resource::Namespace(_) | Resource::ServiceAccount(_) => Ok(()),
    }
}

fn metadata(meta: &ObjectMeta, kind: Kind) -> Result<(), Invalid> {
    dns_name(&meta.name, "metadata.name")?;
    if let Some(ns) = &meta.namespace {
        if !kind.namespaced() {
            return invalid(
                "metadata.namespace",
                format!("{kind} is not namespaced; remove the namespace"),
            );
        }
        dns_name(ns, "metadata.namespace")?;
    }
    if let Some(mode) = meta.labels.get(DATAPLANE_MODE)
        && !matches!(mode.as_str(), "ambient" | "none")
    {
        return invalid(
            format!("metadata.labels.{DATAPLANE_MODE}"),
            format!("{mode:?}: use \"ambient\" to enrol or \"none\" to opt out"),
        );
    }
    Ok(())
}

fn dns_name(name: &str, path: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        invalid(
            path,
            format!("{name:?} is not a valid name (lower-case letters, digits, '-' and '.')"),
        )
    }
}

fn pod_spec(pod: &Pod) -> Result<(), Invalid> {
    if let Some(ip) = &pod.status.pod_ip {
        ip_address(ip, "status.podIP")?;
    }
    for (i, entry) in pod.status.pod_ips.iter().enumerate() {
        ip_address(&entry.ip, &format!("status.podIPs[{i}].ip"))?;
    }
    pod_spec_at(&pod.spec, "spec")
}

/// The checks of a pod's spec, found at `at` (`spec`, or `spec.template.spec` in a
/// workload controller).
fn pod_spec_at(spec: &PodSpec, at: &str) -> Result<(), Invalid> {
    // The account becomes a SPIFFE id segment every ztunnel must accept.
    if let Some(account) = &spec.service_account_name {
        dns_name(account, &format!("{at}.serviceAccountName"))?;
    }
    for (c, container) in spec.containers.iter().enumerate() {
        for (p, port) in container.ports.iter().enumerate() {
            if port.container_port == 0 {
                return invalid(
                    format!("{at}.containers[{c}].ports[{p}].containerPort"),
                    "must be 1-65535",
                );
            }
        }
    }
    Ok(())
}

/// A ServiceEntry: hosts, ports and protocols Istio accepts; endpoints that fit its
/// resolution (addresses for STATIC), or a workload selector instead.
fn service_entry(spec: &ServiceEntrySpec) -> Result<(), Invalid> {
    if spec.hosts.is_empty() {
        return invalid("spec.hosts", "a ServiceEntry needs at least one host");
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty() || bare.contains('*') || bare.contains('/') || bare.contains(' ') {
            return invalid(
                format!("spec.hosts[{i}]"),
                format!("{host:?} is not a host name (a wildcard only as a leading \"*.\")"),
            );
        }
    }
    let resolution = spec.resolution();
    if !matches!(resolution, "NONE" | "STATIC" | "DNS" | "DNS_ROUND_ROBIN") {
        return invalid(
            "spec.resolution",
            format!("{resolution:?}: use NONE, STATIC, DNS or DNS_ROUND_ROBIN"),
        );
    }
    if let Some(location) = &spec.location
        && !matches!(location.as_str(), "MESH_EXTERNAL" | "MESH_INTERNAL")
    {
        return invalid(
            "spec.location",
            format!("{location:?}: use MESH_EXTERNAL or MESH_INTERNAL"),
        );
    }
    for (i, address) in spec.addresses.iter().enumerate() {
        let ip = address.strip_suffix("/32").unwrap_or(address);
        if ip.parse::<IpAddr>().is_err() && address.parse::<IpNet>().is_err() {
            return invalid(
                format!("spec.addresses[{i}]"),
                format!("{address:?} is not an IP address or CIDR"),
            );
        }
    }
    if spec.ports.is_empty() {
        return invalid("spec.ports", "a ServiceEntry needs at least one port");
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        if port.number == 0 || port.target_port == Some(0) {
            return invalid(format!("spec.ports[{i}]"), "ports are 1-65535");
        }
        if port.name.is_empty() || !names.insert(&port.name) {
            return invalid(
                format!("spec.ports[{i}].name"),
                "each port needs a name of its own",
            );
        }
        if let Some(protocol) = &port.protocol
            && !matches!(
                protocol.to_ascii_uppercase().as_str(),
                "HTTP" | "HTTPS" | "HTTP2" | "GRPC" | "TCP" | "TLS" | "MONGO"
            )
        {
            return invalid(
                format!("spec.ports[{i}].protocol"),
                format!("{protocol:?}: use HTTP, HTTPS, HTTP2, GRPC, TCP, TLS or MONGO"),
            );
        }
    }
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        return invalid(
            "spec.workloadSelector",
            "give endpoints or a workloadSelector, not both",
        );
    }
    if resolution == "NONE" && !spec.endpoints.is_empty() {
        return invalid(
            "spec.endpoints",
            "endpoints need resolution STATIC or DNS (NONE passes connections through to the address dialled)",
        );
    }
    if resolution.starts_with("DNS")
        && spec.endpoints.is_empty()
        && spec.hosts.iter().any(|h| h.starts_with("*."))
    {
        return invalid(
            "spec.hosts",
            "resolution DNS needs hosts without wildcards (or endpoints)",
        );
    }
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        let is_ip = endpoint.address.parse::<IpAddr>().is_ok();
        if resolution == "STATIC" && !is_ip {
            return invalid(
                format!("spec.endpoints[{i}].address"),
                format!(
                    "{:?}: resolution STATIC takes IP addresses (host names need resolution DNS)",
                    endpoint.address
                ),
            );
        }
        if endpoint.address.is_empty() {
            return invalid(
                format!("spec.endpoints[{i}].address"),
                "an endpoint needs an address",
            );
        }
        if let Some(account) = &endpoint.service_account {
            dns_name(account, &format!("spec.endpoints[{i}].serviceAccount"))?;
        }
    }
    Ok(())
}

/// A workload controller: a template with containers whose labels its selector selects
/// (as the API server checks), and only the counts its kind has.
fn workload_spec(kind: Kind, workload: &Workload) -> Result<(), Invalid> {
    let spec = &workload.spec;
    let labels = &spec.template.metadata.labels;
    match &spec.selector {
        None if kind != Kind::Job => {
            return invalid(
                "spec.selector",
                format!(
                    "a {kind} needs a selector; write spec.selector.matchLabels with the template's labels"
                ),
            );
        }
        Some(selector) => {
            if selector.match_labels.is_empty() && selector.match_expressions.is_none() {
                return invalid(
                    "spec.selector",
                    "an empty selector would select every pod; write matchLabels",
                );
            }
            if let Some((k, v)) = selector
                .match_labels
                .iter()
                .find(|(k, v)| labels.get(*k) != Some(*v))
            {
                return invalid(
                    format!("spec.selector.matchLabels.{k}"),
                    format!(
                        "{k}={v} is not among spec.template.metadata.labels: the selector must select the pods the template makes"
                    ),
                );
            }
        }
        None => {}
    }
    if spec.template.spec.containers.is_empty() {
        return invalid(
            "spec.template.spec.containers",
            "a pod template needs at least one container",
        );
    }
    if spec.replicas.is_some() && matches!(kind, Kind::DaemonSet | Kind::Job) {
        let instead = if kind == Kind::Job {
            "completions"
        } else {
            "nothing: it runs one pod per node"
        };
        return invalid(
            "spec.replicas",
            format!("a {kind} has no replicas; write {instead}"),
        );
    }
    if spec.completions.is_some() && kind != Kind::Job {
        return invalid(
            "spec.completions",
            format!("only a Job has completions; a {kind} has replicas"),
        );
    }
    if spec.service_name.is_some() && kind != Kind::StatefulSet {
        return invalid(
            "spec.serviceName",
            format!("only a StatefulSet has a serviceName, not a {kind}"),
        );
    }
    if let Some(service) = &spec.service_name {
        dns_name(service, "spec.serviceName")?;
    }
    pod_spec_at(&spec.template.spec, "spec.template.spec")
}

fn ip_address(ip: &str, path: &str) -> Result<IpAddr, Invalid> {
    ip.parse()
        .map_err(|_| (path.to_owned(), format!("{ip:?} is not an IP address")))
}

fn service_spec(service: &Service) -> Result<(), Invalid> {
    let spec = &service.spec;
    if let Some(kind) = &spec.kind
        && !matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        return invalid(
            "spec.type",
            format!(
                "{kind:?} services are not supported; use ClusterIP (the default), NodePort or LoadBalancer (both served on the cluster IP in the lab)"
            ),
        );
    }
    let one_of = |value: &Option<String>, path: &str, allowed: &[&str]| match value {
        Some(v) if !allowed.contains(&v.as_str()) => {
            invalid(path, format!("{v:?} is not one of {}", allowed.join(", ")))
        }
        _ => Ok(()),
    };
    one_of(
        &spec.ip_family_policy,
        "spec.ipFamilyPolicy",
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
    )?;
    for (i, family) in spec.ip_families.iter().enumerate() {
        one_of(
            &Some(family.clone()),
            &format!("spec.ipFamilies[{i}]"),
            &["IPv4", "IPv6"],
        )?;
    }
    one_of(
        &spec.session_affinity,
        "spec.sessionAffinity",
        &["None", "ClientIP"],
    )?;
    one_of(
        &spec.external_traffic_policy,
        "spec.externalTrafficPolicy",
        &["Cluster", "Local"],
    )?;
    one_of(
        &spec.internal_traffic_policy,
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
    )?;
    if let Some(ip) = &spec.cluster_ip
        && ip != "None"
    {
        ip_address(ip, "spec.clusterIP")?;
    }
    for (i, ip) in spec.cluster_ips.iter().enumerate() {
        if ip != "None" {
            ip_address(ip, &format!("spec.clusterIPs[{i}]"))?;
        }
    }
    for (i, port) in spec.ports.iter().enumerate() {
        if port.port == 0 {
            return invalid(format!("spec.ports[{i}].port"), "must be 1-65535");
        }
        if let Some(protocol) = &port.protocol
            && protocol != "TCP"
        {
            return invalid(
                format!("spec.ports[{i}].protocol"),
                format!("{protocol}: the mesh carries TCP only; remove the port or use TCP"),
            );
        }
        match &port.target_port {
            Some(IntOrString::Int(0)) => {
                return invalid(format!("spec.ports[{i}].targetPort"), "must be 1-65535");
            }
            Some(IntOrString::String(name)) if name.is_empty() => {
                return invalid(
                    format!("spec.ports[{i}].targetPort"),
                    "a port name must not be empty",
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// `when` keys ztunnel can check at L4.
pub const L4_CONDITION_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// Whether `key` is a condition Istio defines (L4 or L7).
fn known_condition(key: &str) -> bool {
    L4_CONDITION_KEYS.contains(&key)
        || matches!(
            key,
            "remote.ip"
                | "request.auth.principal"
                | "request.auth.audiences"
                | "request.auth.presenter"
                | "connection.sni"
                | "destination.port.name"
        )
        || key.starts_with("request.headers[")
        || key.starts_with("request.auth.claims[")
        || key.starts_with("experimental.")
}

/// `targetRefs`: a Service (core group), a Gateway, or GatewayClass `istio-waypoint`, in
/// the policy's own namespace; never together with a selector.
fn target_refs(policy: &AuthorizationPolicy) -> Result<(), Invalid> {
    let spec = &policy.spec;
    if spec.target_refs.is_empty() {
        return Ok(());
    }
    if spec.selector.is_some() {
        return invalid(
            "spec.targetRefs",
            "a policy has either a selector (enforced by ztunnel) or targetRefs (enforced by a waypoint), not both",
        );
    }
    for (i, target) in spec.target_refs.iter().enumerate() {
        let at = |field: &str| format!("spec.targetRefs[{i}].{field}");
        match (target.group.as_str(), target.kind.as_str()) {
            ("" | "core", "Service") => {}
            (crate::resources::GATEWAY_API_GROUP, "Gateway") => {}
            (crate::resources::GATEWAY_API_GROUP, "GatewayClass") => {
                if target.name != crate::resources::WAYPOINT_CLASS {
                    return invalid(
                        at("name"),
                        format!(
                            "{:?}: the only GatewayClass a policy can target is {:?} (every waypoint)",
                            target.name,
                            crate::resources::WAYPOINT_CLASS
                        ),
                    );
                }
            }
            (group, kind) => {
                return invalid(
                    at("kind"),
                    format!(
                        "{kind:?} in group {group:?}: target a Service (group \"\"), a Gateway or GatewayClass {:?} (group {:?})",
                        crate::resources::WAYPOINT_CLASS,
                        crate::resources::GATEWAY_API_GROUP
                    ),
                );
            }
        }
        dns_name(&target.name, &at("name"))?;
        if let Some(namespace) = &target.namespace
            && namespace != policy.metadata.namespace()
        {
            return invalid(
                at("namespace"),
                format!(
                    "{namespace:?}: a policy can only target objects in its own namespace ({:?})",
                    policy.metadata.namespace()
                ),
            );
        }
    }
    Ok(())
}

fn authorization(policy: &AuthorizationPolicy) -> Result<(), Invalid> {
    let spec = &policy.spec;
    match spec.action.as_deref() {
        None | Some("ALLOW" | "DENY") => {}
        Some(action @ ("AUDIT" | "CUSTOM")) => {
            return invalid(
                "spec.action",
                format!("{action} is not supported by Bowline; use ALLOW or DENY"),
            );
        }
        Some(other) => return invalid("spec.action", format!("{other:?}: use ALLOW or DENY")),
    }
    target_refs(policy)?;
    if let Some(dry) = policy.metadata.annotations.get(DRY_RUN)
        && !matches!(dry.as_str(), "true" | "false")
    {
        return invalid(
            format!("metadata.annotations.{DRY_RUN}"),
            format!("{dry:?}: use \"true\" or \"false\""),
        );
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        for (f, from) in rule.from.iter().enumerate() {
            let at = |field: &str| format!("spec.rules[{r}].from[{f}].source.{field}");
            let s = &from.source;
            for (field, blocks) in [
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ] {
                for (i, block) in blocks.iter().enumerate() {
                    if ip_block(block).is_none() {
                        return invalid(
                            format!("{}[{i}]", at(field)),
                            format!("{block:?} is not an IP address or CIDR"),
                        );
                    }
                }
            }
            for (field, accounts) in [
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
            ] {
                for (i, account) in accounts.iter().enumerate() {
                    if account.split('/').count() > 2 || account.is_empty() {
                        return invalid(
                            format!("{}[{i}]", at(field)),
                            format!("{account:?}: write \"namespace/name\" or \"name\""),
                        );
                    }
                }
            }
        }
        for (t, to) in rule.to.iter().enumerate() {
            let op = &to.operation;
            for (field, ports) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
                for (i, port) in ports.iter().enumerate() {
                    if port_number(port).is_none() {
                        return invalid(
                            format!("spec.rules[{r}].to[{t}].operation.{field}[{i}]"),
                            format!("{port:?} is not a port number (1-65535)"),
                        );
                    }
                }
            }
        }
        for (w, condition) in rule.when.iter().enumerate() {
            let at = format!("spec.rules[{r}].when[{w}]");
            if !known_condition(&condition.key) {
                return invalid(
                    format!("{at}.key"),
                    format!("{:?} is not a condition Istio defines", condition.key),
                );
            }
            if condition.values.is_empty() && condition.not_values.is_empty() {
                return invalid(at, "give values or notValues");
            }
            let check: Option<fn(&str) -> bool> = match condition.key.as_str() {
                "source.ip" | "destination.ip" => Some(|v| ip_block(v).is_some()),
                "destination.port" => Some(|v| port_number(v).is_some()),
                _ => None,
            };
            if let Some(check) = check {
                for (field, values) in [
                    ("values", &condition.values),
                    ("notValues", &condition.not_values),
                ] {
                    for (i, value) in values.iter().enumerate() {
                        if !check(value) {
                            return invalid(
                                format!("{at}.{field}[{i}]"),
                                format!("{value:?} does not fit {}", condition.key),
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn peer_authentication(peer: &PeerAuthentication) -> Result<(), Invalid> {
    let mode_ok = |mtls: &Mtls| {
        matches!(
            mtls.mode.as_deref(),
            None | Some("UNSET" | "DISABLE" | "PERMISSIVE" | "STRICT")
        )
    };
    if let Some(mtls) = &peer.spec.mtls
        && !mode_ok(mtls)
    {
        return invalid(
            "spec.mtls.mode",
            format!(
                "{:?}: use UNSET, DISABLE, PERMISSIVE or STRICT",
                mtls.mode.as_deref().unwrap_or_default()
            ),
        );
    }
    for (port, mtls) in &peer.spec.port_level_mtls {
        if port.port().is_none() {
            return invalid(
                format!("spec.portLevelMtls.{port}"),
                format!("{port:?} is not a port number (1-65535)"),
            );
        }
        if !mode_ok(mtls) {
            return invalid(
                format!("spec.portLevelMtls.{port}.mode"),
                "use UNSET, DISABLE, PERMISSIVE or STRICT",
            );
        }
    }
    if !peer.spec.port_level_mtls.is_empty() && peer.spec.selector.is_none() {
        return invalid(
            "spec.portLevelMtls",
            "port-level modes need a selector (they apply to the selected pods' ports)",
        );
    }
    Ok(())
}

/// An IP address (as a host prefix) or CIDR.
pub fn ip_block(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A port number 1-65535.
pub fn port_number(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p != 0)
}
