//! What users write: Kubernetes-style YAML for the mesh — core `Node`, `Namespace`,
//! `ServiceAccount`, `Pod`, `Service`; Gateway API `Gateway` (class `istio-waypoint`) and,
//! GAMMA style (attached to a Service or a waypoint's Gateway), `HTTPRoute` and
//! `GRPCRoute`; Istio `AuthorizationPolicy`, `PeerAuthentication`, `ServiceEntry`,
//! `VirtualService` and `DestinationRule` (typed, [`resources::traffic`]);
//! `RequestAuthentication` is kept with its `spec` as written. Objects the mesh does not use (ConfigMaps,
//! RBAC, NetworkPolicy, other projects' kinds) are accepted and set aside, listed in one
//! note; mesh kinds Bowline does not implement are refused by kind ([`kinds`]).
//!
//! Owns: the resource types ([`resources`]), multi-document parsing ([`parse`]) within
//! [`limits`] (documents, nesting depth, scalar size, values) and validation
//! ([`validate`]), with errors that name the source, the document index and the
//! field path ([`ConfigError`]). A field Bowline does not support is refused, never
//! silently ignored. Must not: do I/O beyond reading the text it is given, or know how the
//! mesh compiles these resources (that is the control plane's translation).

#![forbid(unsafe_code)]

mod kinds;
pub mod limits;
pub mod parse;
pub mod resources;
pub mod validate;

pub use limits::{Limit, Limits};
pub use parse::{
    ParseError, Parsed, parse_documents, parse_documents_noting, parse_documents_with, unused_note,
};
pub use resources::{Kind, ObjectKey, Resource};

/// A document that cannot be used: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: document {document}{}: {}{message}", object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default(), if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    /// The file (or `apply` request) the document came from.
    pub source_name: String,
    /// 1-based index of the document in its source.
    pub document: usize,
    /// `Kind namespace/name`, when known.
    pub object: Option<String>,
    /// The field, as `spec.rules[0].from[0].source.principals` (empty for the whole
    /// document).
    pub path: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

/// The default cluster domain of service hostnames.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Istio's root namespace: policies there without a selector apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

#[cfg(test)]
mod tests;
