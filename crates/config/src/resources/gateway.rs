//! Gateway API `Gateway` (a waypoint's, class `istio-waypoint`, or an ingress gateway's,
//! class `istio`) and the `Secret`s an ingress gateway's HTTPS listeners take their
//! certificates from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// Gateway API `Gateway`: class `istio-waypoint` (a waypoint) or `istio` (an ingress
/// gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// Metadata (`istio.io/waypoint-for` label).
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: GatewaySpec,
}

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// `istio-waypoint` or `istio`.
    pub gateway_class_name: String,
    /// Listeners (a waypoint's `{name: mesh, port: 15008, protocol: HBONE}`; an ingress
    /// gateway's HTTP and HTTPS listeners).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Addresses asked for (read; a waypoint's address is its Service's VIP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<serde_json::Value>,
    /// Labels and annotations for what the Gateway deploys (read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<serde_json::Value>,
}

/// A gateway listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// Protocol (`HBONE` for a waypoint, `HTTP` or `HTTPS` for an ingress gateway).
    pub protocol: String,
    /// Which namespaces may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
    /// TLS termination of an HTTPS listener (a waypoint's HBONE is mutual TLS with the
    /// mesh's certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// The host names an ingress listener serves (exact or `*.suffix`; none: any); a
    /// waypoint serves every host bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// `listeners[].tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// `Terminate` (default); `Passthrough` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The `kubernetes.io/tls` Secrets with the certificate and key.
    #[serde(default)]
    pub certificate_refs: Vec<SecretRef>,
}

/// A reference to a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// `""` (core) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Secret` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace (default: the Gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `Secret` (the mesh reads `kubernetes.io/tls` ones: an ingress gateway's certificates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// `kubernetes.io/tls`, `Opaque`…
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Values, base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Values as text (taken over `data` for the same key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// Whether it may change (read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// The `type` of TLS Secrets.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

impl Secret {
    /// The value of `key`: `stringData`, else `data` decoded; `None` when missing or not
    /// base64.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        if let Some(text) = self.string_data.get(key) {
            return Some(text.clone().into_bytes());
        }
        let encoded = self.data.get(key)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
    }
}

/// `allowedRoutes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    /// `namespaces.from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Route kinds allowed (read; a waypoint takes HTTPRoutes and GRPCRoutes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<serde_json::Value>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    /// `Same` (default) or `All`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}
