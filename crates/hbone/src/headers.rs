//! The optional request headers HBONE carries besides `:authority`: W3C `baggage`,
//! `forwarded` and `traceparent`. A receiver tolerates any of them being absent and never
//! uses them for authorization (identity comes from the certificate).

use http::HeaderMap;

/// HBONE request metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HboneHeaders {
    /// W3C baggage (`k8s.cluster.name=…,k8s.namespace.name=…`).
    pub baggage: Option<String>,
    /// `for=<original source ip>`.
    pub forwarded: Option<String>,
    /// W3C trace context.
    pub traceparent: Option<String>,
}

impl HboneHeaders {
    pub(crate) fn from_map(map: &HeaderMap) -> Self {
        let get = |name: &str| {
            map.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            baggage: get("baggage"),
            forwarded: get("forwarded"),
            traceparent: get("traceparent"),
        }
    }

    pub(crate) fn apply(&self, mut req: http::request::Builder) -> http::request::Builder {
        for (name, value) in [
            ("baggage", &self.baggage),
            ("forwarded", &self.forwarded),
            ("traceparent", &self.traceparent),
        ] {
            if let Some(v) = value {
                req = req.header(name, v.as_str());
            }
        }
        req
    }
}
