//! What users write that the lab reads and does not act on: the pod and container
//! fields kept as written ([`PodSpecExtras`], [`ContainerExtras`]), the Service settings
//! and waypoint Gateway fields without effect — each named by `without_effect`, for one
//! note per object.

use serde::{Deserialize, Serialize};

use super::{GatewaySpec, PodSpec, ServiceSpec};

impl GatewaySpec {
    /// What of a waypoint Gateway's spec is read without effect, one phrase each.
    pub fn without_effect(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.addresses.is_empty() {
            out.push("spec.addresses (the gateway's address is its Service's VIP)".to_owned());
        }
        if self.infrastructure.is_some() {
            out.push(
                "spec.infrastructure (the gateway's pod and Service get the controller's labels)"
                    .to_owned(),
            );
        }
        let waypoint = self.gateway_class_name == super::WAYPOINT_CLASS;
        for (i, listener) in self.listeners.iter().enumerate() {
            if waypoint && listener.tls.is_some() {
                out.push(format!(
                    "spec.listeners[{i}].tls (HBONE is mutual TLS with the mesh's certificates)"
                ));
            }
            if waypoint && listener.hostname.is_some() {
                out.push(format!(
                    "spec.listeners[{i}].hostname (a waypoint serves every host bound to it)"
                ));
            }
            if listener
                .allowed_routes
                .as_ref()
                .is_some_and(|r| !r.kinds.is_empty())
            {
                out.push(format!(
                    "spec.listeners[{i}].allowedRoutes.kinds (the gateway takes HTTPRoutes and GRPCRoutes)"
                ));
            }
        }
        out
    }
}

/// Pod spec fields read and not acted on in the lab.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init_containers: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node_selector: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    affinity: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tolerations: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topology_spread_constraints: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    termination_grace_period_seconds: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    volumes: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    security_context: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_pull_secrets: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority_class_name: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dns_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dns_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    automount_service_account_token: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enable_service_links: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduler_name: Option<serde_json::Value>,
}

impl PodSpecExtras {
    /// The fields given, by their YAML names.
    fn given(&self) -> Vec<&'static str> {
        [
            ("initContainers", self.init_containers.is_some()),
            ("restartPolicy", self.restart_policy.is_some()),
            ("nodeSelector", self.node_selector.is_some()),
            ("affinity", self.affinity.is_some()),
            ("tolerations", self.tolerations.is_some()),
            (
                "topologySpreadConstraints",
                self.topology_spread_constraints.is_some(),
            ),
            (
                "terminationGracePeriodSeconds",
                self.termination_grace_period_seconds.is_some(),
            ),
            ("volumes", self.volumes.is_some()),
            ("securityContext", self.security_context.is_some()),
            ("imagePullSecrets", self.image_pull_secrets.is_some()),
            ("priorityClassName", self.priority_class_name.is_some()),
            ("dnsPolicy", self.dns_policy.is_some()),
            ("dnsConfig", self.dns_config.is_some()),
            (
                "automountServiceAccountToken",
                self.automount_service_account_token.is_some(),
            ),
            ("enableServiceLinks", self.enable_service_links.is_some()),
            ("schedulerName", self.scheduler_name.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

impl PodSpec {
    /// The fields given that have no effect in the lab, as paths (`spec.affinity`,
    /// `spec.containers[0].resources`); empty when everything written is in force.
    pub fn without_effect(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unenforced
            .given()
            .into_iter()
            .map(|f| format!("spec.{f}"))
            .collect();
        for (i, container) in self.containers.iter().enumerate() {
            out.extend(
                container
                    .unenforced
                    .given()
                    .into_iter()
                    .map(|f| format!("spec.containers[{i}].{f}")),
            );
        }
        out
    }
}

/// Container fields read and not acted on in the lab.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_pull_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env_from: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resources: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    volume_mounts: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    security_context: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    liveness_probe: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    readiness_probe: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    startup_probe: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lifecycle: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    working_dir: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    termination_message_path: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    termination_message_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdin: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tty: Option<serde_json::Value>,
}

impl ContainerExtras {
    /// The fields given, by their YAML names.
    fn given(&self) -> Vec<&'static str> {
        [
            ("imagePullPolicy", self.image_pull_policy.is_some()),
            ("envFrom", self.env_from.is_some()),
            ("resources", self.resources.is_some()),
            ("volumeMounts", self.volume_mounts.is_some()),
            ("securityContext", self.security_context.is_some()),
            ("livenessProbe", self.liveness_probe.is_some()),
            ("readinessProbe", self.readiness_probe.is_some()),
            ("startupProbe", self.startup_probe.is_some()),
            ("lifecycle", self.lifecycle.is_some()),
            ("workingDir", self.working_dir.is_some()),
            (
                "terminationMessagePath",
                self.termination_message_path.is_some(),
            ),
            (
                "terminationMessagePolicy",
                self.termination_message_policy.is_some(),
            ),
            ("stdin", self.stdin.is_some()),
            ("tty", self.tty.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

impl ServiceSpec {
    /// What of this spec has no effect in the lab or the mesh yet, one phrase each
    /// (empty: all of it is in force).
    pub fn without_effect(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(kind @ ("NodePort" | "LoadBalancer")) = self.kind.as_deref() {
            out.push(format!(
                "type {kind}: served on its cluster IP only (the lab has no node ports or load balancers)"
            ));
        }
        let dual = matches!(
            self.ip_family_policy.as_deref(),
            Some("PreferDualStack" | "RequireDualStack")
        ) || self.ip_families.iter().any(|f| f == "IPv6");
        if dual && self.cluster_ips.iter().all(|ip| !ip.contains(':')) {
            out.push(
                "ipFamilyPolicy/ipFamilies: IPv6 is not given (the lab's cluster network is IPv4 only)"
                    .into(),
            );
        }
        if self.session_affinity.as_deref() == Some("ClientIP") {
            out.push(
                "sessionAffinity ClientIP: not honoured (each connection is balanced on its own)"
                    .into(),
            );
        }
        if self.external_traffic_policy.as_deref() == Some("Local") {
            out.push("externalTrafficPolicy Local: no traffic comes from outside the lab".into());
        }
        if self.internal_traffic_policy.as_deref() == Some("Local") {
            out.push(
                "internalTrafficPolicy Local: not honoured yet (endpoints on every node are used)"
                    .into(),
            );
        }
        if self.publish_not_ready_addresses == Some(true) {
            out.push(
                "publishNotReadyAddresses: not honoured yet (only ready pods are endpoints)".into(),
            );
        }
        out
    }
}
