//! Gateway API routes (`gateway.networking.k8s.io/v1`) as a mesh reads them, GAMMA style:
//! an `HTTPRoute` or `GRPCRoute` attached to a Service (the traffic to it, through its
//! waypoint) or to a waypoint's Gateway. Fields keep the Gateway API's names and
//! optionality; where the API defines a default the field stays an `Option` and a method
//! gives the defaulted value, so what was written round-trips unchanged.
//!
//! Owns: the route types. Must not: judge them ([`crate::validate`] does) or compile them
//! (the control plane does). `status` is kept as written and never read: it is what some
//! controller once reported, not something a user can assert.
//!
//! What the two kinds share is written once: [`Route`], [`RouteSpec`] and [`BackendRef`]
//! are generic over the kind's rule or filter ([`RouteRule`], [`RouteFilter`]) and named
//! per kind by aliases ([`HttpRoute`], [`GrpcBackendRef`], ...), which serde's errors
//! keep saying (`expected struct HttpBackendRef`); the fields an object reference or a
//! filter always has are declared by [`object_ref!`] and [`route_filter!`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{GATEWAY_API_GROUP, ObjectMeta};

/// A route kind's rule ([`HttpRouteRule`], [`GrpcRouteRule`]): what [`Route`] and
/// [`RouteSpec`] take to be that kind's.
pub trait RouteRule {
    /// The route's name in serde's errors (`expected struct HttpRoute`).
    const ROUTE: &'static str;
    /// The spec's name in serde's errors (`expected struct HttpRouteSpec`).
    const SPEC: &'static str;
    /// `name`: the rule's name, unique in the route.
    fn name(&self) -> Option<&str>;
}

/// A route kind's filter ([`HttpRouteFilter`], [`GrpcRouteFilter`]): what [`BackendRef`]
/// takes to be that kind's, and the fields both kinds' filters have.
pub trait RouteFilter {
    /// The kind's `backendRefs` entry's name in serde's errors (`expected struct
    /// HttpBackendRef`).
    const BACKEND_REF: &'static str;
    /// `type`: which one field says what the filter does.
    fn type_(&self) -> &str;
    /// `requestHeaderModifier`.
    fn request_header_modifier(&self) -> Option<&HeaderModifier>;
    /// `responseHeaderModifier`.
    fn response_header_modifier(&self) -> Option<&HeaderModifier>;
    /// `requestMirror`.
    fn request_mirror(&self) -> Option<&RequestMirror>;
    /// `extensionRef`.
    fn extension_ref(&self) -> Option<&LocalObjectRef>;
}

/// Declares a struct whose fields start with those of a Gateway API object reference,
/// `group`, `kind`, `name`, `namespace` and `port`, documented by the texts given (or by
/// a backend's, for `backend;`), and go on with the fields written after them.
macro_rules! object_ref {
    (
        $(#[$attr:meta])*
        pub struct $name:ident $(<$param:ident>)? {
            backend;
            $($fields:tt)*
        }
    ) => {
        object_ref! {
            $(#[$attr])*
            pub struct $name $(<$param>)? {
                group: "API group, `\"\"` (core, the default).",
                kind: "`Service` (the default).",
                name: "The Service's name.",
                namespace: "Its namespace (the route's own when omitted).",
                port: "The Service port (required for a Service).";
                $($fields)*
            }
        }
    };
    (
        $(#[$attr:meta])*
        pub struct $name:ident $(<$param:ident>)? {
            group: $group:literal,
            kind: $kind:literal,
            name: $object:literal,
            namespace: $namespace:literal,
            port: $port:literal;
            $($fields:tt)*
        }
    ) => {
        $(#[$attr])*
        pub struct $name $(<$param>)? {
            #[doc = $group]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub group: Option<String>,
            #[doc = $kind]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub kind: Option<String>,
            #[doc = $object]
            pub name: String,
            #[doc = $namespace]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub namespace: Option<String>,
            #[doc = $port]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub port: Option<u16>,
            $($fields)*
        }
    };
}

/// Declares a route kind's filter and its [`RouteFilter`] (`backend_ref` the name of the
/// kind's [`BackendRef`]): `type` (documented by the types it can name), the header
/// modifiers, the fields written here (the kind's own filters), then `requestMirror` and
/// `extensionRef`.
macro_rules! route_filter {
    (
        $(#[$attr:meta])*
        pub struct $name:ident($backend_ref:literal) {
            type: $types:literal;
            $($fields:tt)*
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            #[doc = $types]
            #[serde(rename = "type")]
            pub type_: String,
            /// Headers (gRPC: metadata) changed on the request.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub request_header_modifier: Option<HeaderModifier>,
            /// Headers (gRPC: metadata) changed on the response.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub response_header_modifier: Option<HeaderModifier>,
            $($fields)*
            /// Send a copy of the request (gRPC: the call) elsewhere, ignoring the answer.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub request_mirror: Option<RequestMirror>,
            /// An implementation's own filter (Bowline has none).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub extension_ref: Option<LocalObjectRef>,
        }

        impl RouteFilter for $name {
            const BACKEND_REF: &'static str = $backend_ref;

            fn type_(&self) -> &str {
                &self.type_
            }

            fn request_header_modifier(&self) -> Option<&HeaderModifier> {
                self.request_header_modifier.as_ref()
            }

            fn response_header_modifier(&self) -> Option<&HeaderModifier> {
                self.response_header_modifier.as_ref()
            }

            fn request_mirror(&self) -> Option<&RequestMirror> {
                self.request_mirror.as_ref()
            }

            fn extension_ref(&self) -> Option<&LocalObjectRef> {
                self.extension_ref.as_ref()
            }
        }
    };
}

/// Gateway API `HTTPRoute`.
pub type HttpRoute = Route<HttpRouteRule>;
/// Gateway API `GRPCRoute`.
pub type GrpcRoute = Route<GrpcRouteRule>;
/// `HTTPRoute.spec`.
pub type HttpRouteSpec = RouteSpec<HttpRouteRule>;
/// `GRPCRoute.spec`.
pub type GrpcRouteSpec = RouteSpec<GrpcRouteRule>;

/// A route of the kind whose rules are `R` ([`HttpRoute`], [`GrpcRoute`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
#[serde(bound(deserialize = "R: RouteRule + Default + Deserialize<'de>"))]
pub struct Route<R> {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: RouteSpec<R>,
    /// Status, as a `kubectl get -o yaml` export carries it: kept, never trusted or read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// A route's `spec` ([`HttpRouteSpec`], [`GrpcRouteSpec`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec<R> {
    /// What the route attaches to: Services (GAMMA) or waypoint Gateways (required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route answers for (`*.` prefix for a wildcard); none: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<R>,
}

object_ref! {
    /// A route's `parentRefs` entry (the Gateway API's `ParentReference`).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ParentRef {
        group: "API group: `\"\"` with kind `Service` (GAMMA), or `gateway.networking.k8s.io` \
            (the default) with kind `Gateway`.",
        kind: "`Gateway` (the default) or `Service`.",
        name: "The parent's name.",
        namespace: "The parent's namespace (the route's own when omitted).",
        port: "The parent's port (a Service port, or a Gateway listener's port).";
        /// A Gateway listener's name, or a Service port's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub section_name: Option<String>,
    }
}

/// What a [`ParentRef`] attaches a route to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteParent {
    /// A Service (GAMMA): the route applies to traffic addressed to it.
    Service,
    /// A Gateway (a waypoint): the route applies to everything through it.
    Gateway,
}

impl ParentRef {
    /// What this refers to, `None` for a kind a mesh route cannot attach to. An absent
    /// kind is `Gateway`, as in the Gateway API; an absent group goes with either kind.
    pub fn parent(&self) -> Option<RouteParent> {
        match (self.group.as_deref(), self.kind.as_deref()) {
            (None | Some(""), Some("Service")) => Some(RouteParent::Service),
            (None | Some(GATEWAY_API_GROUP), None | Some("Gateway")) => Some(RouteParent::Gateway),
            _ => None,
        }
    }

    /// The parent's namespace: its own, or `route_namespace` when omitted.
    pub fn namespace_or<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(route_namespace)
    }
}

/// An `HTTPRoute` rule: requests matching any of `matches` get `filters` and go to
/// `backendRefs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// The rule's name, unique in the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, OR-ed; none matches every request (a `PathPrefix` `/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Applied in order to every request the rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Where matching requests go, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Time limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Retries of failed requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// One of an HTTP rule's `matches`: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// The path (a `PathPrefix` `/` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HeaderMatch>,
    /// The method: `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `CONNECT`, `OPTIONS`, `TRACE`,
    /// `PATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// `matches[].path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path, prefix or expression (`/` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl PathMatch {
    /// The match type, `PathPrefix` when omitted.
    pub fn effective_type(&self) -> &str {
        self.type_.as_deref().unwrap_or("PathPrefix")
    }

    /// The value, `/` when omitted.
    pub fn effective_value(&self) -> &str {
        self.value.as_deref().unwrap_or("/")
    }
}

/// A header or query parameter condition (HTTP `headers` and `queryParams`, gRPC
/// `headers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The header's name (case-insensitive) or the query parameter's (case-sensitive).
    pub name: String,
    /// The value, or the expression it must match.
    pub value: String,
}

impl HeaderMatch {
    /// The match type, `Exact` when omitted.
    pub fn effective_type(&self) -> &str {
        self.type_.as_deref().unwrap_or("Exact")
    }
}

route_filter! {
    /// An HTTP filter: `type` names the one field that says what it does.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct HttpRouteFilter("HttpBackendRef") {
        type: "`RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`, \
            `URLRewrite`, `RequestMirror` or `ExtensionRef`.";
        /// Answer with a redirect instead of forwarding.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub request_redirect: Option<RequestRedirect>,
        /// Change the host or path before forwarding.
        #[serde(
            default,
            rename = "urlRewrite",
            skip_serializing_if = "Option::is_none"
        )]
        pub url_rewrite: Option<UrlRewrite>,
    }
}

/// `requestHeaderModifier` / `responseHeaderModifier`: applied as `set`, `add`, `remove`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers replaced (or added when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    /// Headers appended to any already there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    /// Names of headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `requestRedirect`: each field given replaces that part of the request's URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// The port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `301` or `302` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

/// `urlRewrite`: the request forwarded with another host or path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// The `Host` (`:authority`) sent on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The path sent on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A redirect's or rewrite's `path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The whole new path (`ReplaceFullPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// What replaces the matched `PathPrefix` (`ReplacePrefixMatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// `requestMirror`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// Where the copies go.
    pub backend_ref: BackendObjectRef,
    /// Which share of requests is copied, 0-100 (all when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

object_ref! {
    /// A backend named without weight or filters (a mirror's `backendRef`).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct BackendObjectRef {
        backend;
    }
}

/// An object in the route's namespace (an `extensionRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectRef {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// An HTTP rule's `backendRefs` entry.
pub type HttpBackendRef = BackendRef<HttpRouteFilter>;
/// A gRPC rule's `backendRefs` entry.
pub type GrpcBackendRef = BackendRef<GrpcRouteFilter>;

object_ref! {
    /// A rule's `backendRefs` entry, with filters of its route's kind `F`
    /// ([`HttpBackendRef`], [`GrpcBackendRef`]).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields)]
    pub struct BackendRef<F> {
        backend;
        /// This backend's share of the rule's requests (calls), 0-1,000,000 (1 when
        /// omitted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub weight: Option<u32>,
        /// Filters for requests (calls) sent to this backend only.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub filters: Vec<F>,
    }
}

impl<F> BackendRef<F> {
    /// The weight, 1 when omitted.
    pub fn effective_weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }
}

/// An HTTP rule's `timeouts`, as Gateway API durations
/// ([`crate::validate::gateway_duration`]); `0s` means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// From the request's start to the response's end, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// One attempt at a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// An HTTP rule's `retry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Retries after the first attempt (at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Response statuses retried, 400-599.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// The wait before a retry, a Gateway API duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// A `GRPCRoute` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    /// The rule's name, unique in the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, OR-ed; none matches every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatch>,
    /// Applied in order to every call the rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GrpcRouteFilter>,
    /// Where matching calls go, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<GrpcBackendRef>,
}

/// One of a gRPC rule's `matches`: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    /// The service and method called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Request metadata (headers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// `matches[].method`: the call's `/service/method` path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The fully qualified service (`shop.v1.Reviews`); any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method (`GetReview`); any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl GrpcMethodMatch {
    /// The match type, `Exact` when omitted.
    pub fn effective_type(&self) -> &str {
        self.type_.as_deref().unwrap_or("Exact")
    }
}

route_filter! {
    /// A gRPC filter: `type` names the one field that says what it does.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct GrpcRouteFilter("GrpcBackendRef") {
        type: "`RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror` or `ExtensionRef`.";
    }
}

/// [`RouteRule`] for each route kind's rule type, with the names serde gives the kind's
/// [`Route`] and [`RouteSpec`].
macro_rules! route_rules {
    ($($rule:ty => $route:literal, $spec:literal;)*) => {$(
        impl RouteRule for $rule {
            const ROUTE: &'static str = $route;
            const SPEC: &'static str = $spec;

            fn name(&self) -> Option<&str> {
                self.name.as_deref()
            }
        }
    )*};
}

route_rules! {
    HttpRouteRule => "HttpRoute", "HttpRouteSpec";
    GrpcRouteRule => "GrpcRoute", "GrpcRouteSpec";
}

/// Serde for the generic route parts: the derived code (their `remote = "Self"` makes it
/// inherent functions), deserializing under the name `name` gives for the kind, so that
/// errors say `expected struct HttpBackendRef` as they would of a type of that name.
macro_rules! named_serde {
    ($($type:ident<$param:ident: $bound:ident> => $name:expr),* $(,)?) => {$(
        impl<$param: Serialize> Serialize for $type<$param> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                Self::serialize(self, serializer)
            }
        }

        impl<'de, $param: $bound + Default + Deserialize<'de>> Deserialize<'de> for $type<$param> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::deserialize(named::Struct { inner: deserializer, name: $name })
            }
        }
    )*};
}

named_serde!(
    Route<R: RouteRule> => R::ROUTE,
    RouteSpec<R: RouteRule> => R::SPEC,
    BackendRef<F: RouteFilter> => F::BACKEND_REF,
);

/// A deserializer that gives the struct deserialized through it another name.
mod named {
    use std::fmt;

    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

    /// `inner`, deserializing a struct as one named `name`. Only `deserialize_struct` (all
    /// that derived struct code calls) is changed; the rest goes to `inner` as is.
    pub(super) struct Struct<D> {
        pub(super) inner: D,
        pub(super) name: &'static str,
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for Struct<D> {
        type Error = D::Error;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            let visitor = Named {
                inner: visitor,
                name: self.name,
            };
            self.inner.deserialize_struct(self.name, fields, visitor)
        }

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.deserialize_any(visitor)
        }

        fn is_human_readable(&self) -> bool {
            self.inner.is_human_readable()
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    /// A struct's visitor, expecting `struct <name>`.
    struct Named<V> {
        inner: V,
        name: &'static str,
    }

    impl<'de, V: Visitor<'de>> Visitor<'de> for Named<V> {
        type Value = V::Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "struct {}", self.name)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
            self.inner.visit_map(map)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
            self.inner.visit_seq(seq)
        }
    }
}
