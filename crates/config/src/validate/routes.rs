//! Checks of `HTTPRoute` and `GRPCRoute` beyond their shape: what they attach to (a
//! Service or a waypoint's Gateway), where they send traffic (Services, with a port),
//! matches (paths, header names, methods, expressions that compile), filters (the field
//! their `type` names, and combinations the Gateway API forbids), durations and retries.
//! `status` is never looked at: it is kept, not trusted.
//!
//! The rules are the Gateway API's own (its CRD schema and CEL rules) where it has one,
//! so a route accepted here is one a cluster would accept, plus Bowline's limits (Service
//! backends only, no extension filters, at most 10 retry attempts), each said as such.

use std::net::IpAddr;
use std::time::Duration;

use super::{Invalid, dns_name, invalid};
use crate::resources::*;

/// The [`Backend`] of `reference`, a backend reference of any kind (they all have a
/// Gateway API `BackendObjectReference`'s fields).
macro_rules! backend {
    ($reference:ident) => {
        Backend {
            group: $reference.group.as_deref(),
            kind: $reference.kind.as_deref(),
            name: &$reference.name,
            namespace: $reference.namespace.as_deref(),
            port: $reference.port,
        }
    };
}

/// The methods an `HTTPRoute` can match (the Gateway API's `HTTPMethod`).
pub const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Retries one rule may ask for.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// A Gateway API duration (GEP-2257): one to four `<number><unit>` parts, each number of
/// one to five digits, units `h`, `m`, `s` or `ms` — `10s`, `1m30s`, `500ms`, `0s` —
/// summed; `None` for anything else (no sign, no fractions, no spaces).
pub fn gateway_duration(text: &str) -> Option<Duration> {
    let mut rest = text.as_bytes();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    for _ in 0..4 {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=5).contains(&digits) {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        // At most 99,999: no overflow below, even in hours.
        let n = number
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        let (part, after) = match after {
            [b'm', b's', after @ ..] => (Duration::from_millis(n), after),
            [b'h', after @ ..] => (Duration::from_secs(n * 3600), after),
            [b'm', after @ ..] => (Duration::from_secs(n * 60), after),
            [b's', after @ ..] => (Duration::from_secs(n), after),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = after;
        if rest.is_empty() {
            return Some(total);
        }
    }
    None
}

/// Checks an `HTTPRoute`.
pub(super) fn http_route(route: &HttpRoute) -> Result<(), Invalid> {
    route_spec(&route.spec, http_rule)
}

/// Checks a `GRPCRoute`.
pub(super) fn grpc_route(route: &GrpcRoute) -> Result<(), Invalid> {
    route_spec(&route.spec, grpc_rule)
}

/// Checks a route's spec, each rule with its kind's `rule` check.
fn route_spec<R: RouteRule>(
    spec: &RouteSpec<R>,
    rule: fn(&R, &str) -> Result<(), Invalid>,
) -> Result<(), Invalid> {
    parent_refs(&spec.parent_refs)?;
    hostnames(&spec.hostnames)?;
    rule_names(spec.rules.iter().map(R::name))?;
    for (r, checked) in spec.rules.iter().enumerate() {
        rule(checked, &format!("spec.rules[{r}]"))?;
    }
    Ok(())
}

fn parent_refs(refs: &[ParentRef]) -> Result<(), Invalid> {
    if refs.is_empty() {
        return invalid(
            "spec.parentRefs",
            format!(
                "a route needs a parent: the Service whose traffic it routes (parentRefs: [{{group: \"\", kind: Service, name: reviews}}]) or a waypoint's Gateway ([{{group: {GATEWAY_API_GROUP}, kind: Gateway, name: waypoint}}])"
            ),
        );
    }
    for (i, parent) in refs.iter().enumerate() {
        let at = |field: &str| format!("spec.parentRefs[{i}].{field}");
        if parent.parent().is_none() {
            let group = parent.group.as_deref();
            let kind = parent.kind.as_deref();
            return if matches!(kind, None | Some("Service" | "Gateway")) {
                invalid(
                    at("group"),
                    format!(
                        "group {:?} does not go with kind {}: write group \"\" for a Service, {GATEWAY_API_GROUP} for a Gateway",
                        group.unwrap_or_default(),
                        kind.unwrap_or("Gateway (the default)"),
                    ),
                )
            } else {
                invalid(
                    at("kind"),
                    format!(
                        "{:?}: a mesh route attaches to a Service (group \"\", kind: Service) or a waypoint's Gateway (group {GATEWAY_API_GROUP}, kind: Gateway)",
                        kind.unwrap_or_default()
                    ),
                )
            };
        }
        dns_name(&parent.name, &at("name"))?;
        if let Some(namespace) = &parent.namespace {
            dns_name(namespace, &at("namespace"))?;
        }
        if let Some(section) = &parent.section_name {
            dns_name(section, &at("sectionName"))?;
        }
        port(parent.port, &at("port"))?;
    }
    Ok(())
}

fn port(port: Option<u16>, at: &str) -> Result<(), Invalid> {
    if port == Some(0) {
        return invalid(at, "must be 1-65535");
    }
    Ok(())
}

fn hostnames(names: &[String]) -> Result<(), Invalid> {
    for (i, name) in names.iter().enumerate() {
        hostname(name, true, &format!("spec.hostnames[{i}]"))?;
    }
    Ok(())
}

/// A Gateway API `Hostname` (`wildcard`: may start with `*.`) or `PreciseHostname`.
fn hostname(name: &str, wildcard: bool, at: &str) -> Result<(), Invalid> {
    if name.parse::<IpAddr>().is_ok() {
        return invalid(
            at,
            format!(
                "{name:?} is an IP address; write a host name (reviews.shop.svc.cluster.local)"
            ),
        );
    }
    let bare = match name.strip_prefix("*.") {
        Some(bare) if wildcard => bare,
        _ => name,
    };
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() <= 253 && bare.split('.').all(label_ok) {
        return Ok(());
    }
    let wildcard_hint = if wildcard {
        ", optionally starting with `*.`"
    } else {
        "; no wildcard"
    };
    invalid(
        at,
        format!(
            "{name:?} is not a host name (dot-separated labels of lower-case letters, digits and '-'{wildcard_hint})"
        ),
    )
}

fn rule_names<'a>(names: impl Iterator<Item = Option<&'a str>>) -> Result<(), Invalid> {
    let mut seen: Vec<&str> = Vec::new();
    for (r, name) in names.enumerate() {
        let Some(name) = name else { continue };
        let at = format!("spec.rules[{r}].name");
        dns_name(name, &at)?;
        if let Some(first) = seen.iter().position(|n| *n == name) {
            return invalid(
                at,
                format!(
                    "{name:?} is the name of rules[{first}] too; rule names are unique in a route"
                ),
            );
        }
        seen.push(name);
    }
    Ok(())
}

fn http_rule(rule: &HttpRouteRule, at: &str) -> Result<(), Invalid> {
    for (m, matched) in rule.matches.iter().enumerate() {
        let at = format!("{at}.matches[{m}]");
        if let Some(path) = &matched.path {
            path_match(path, &format!("{at}.path"))?;
        }
        header_matches(&matched.headers, "header", &format!("{at}.headers"))?;
        header_matches(
            &matched.query_params,
            "query parameter",
            &format!("{at}.queryParams"),
        )?;
        if let Some(method) = &matched.method
            && !HTTP_METHODS.contains(&method.as_str())
        {
            return invalid(
                format!("{at}.method"),
                format!("{method:?}: use one of {}", HTTP_METHODS.join(", ")),
            );
        }
    }
    filters(&rule.filters, at)?;
    // A prefix is replaced only where one prefix matched (an omitted match is `/`).
    let one_prefix = match rule.matches.as_slice() {
        [] => true,
        [only] => only
            .path
            .as_ref()
            .is_none_or(|p| p.effective_type() == "PathPrefix"),
        _ => false,
    };
    for (f, filter) in rule.filters.iter().enumerate() {
        let path = match (&filter.request_redirect, &filter.url_rewrite) {
            (Some(redirect), _) => redirect.path.as_ref().map(|p| ("requestRedirect", p)),
            (None, Some(rewrite)) => rewrite.path.as_ref().map(|p| ("urlRewrite", p)),
            (None, None) => None,
        };
        if let Some((field, path)) = path
            && path.replace_prefix_match.is_some()
            && !one_prefix
        {
            return invalid(
                format!("{at}.filters[{f}].{field}.path.replacePrefixMatch"),
                "replaces the prefix a PathPrefix match matched, so its rule needs exactly one match, of type PathPrefix; use ReplaceFullPath or split the rule",
            );
        }
    }
    if let Some(f) = rule
        .filters
        .iter()
        .position(|f| f.request_redirect.is_some())
        && !rule.backend_refs.is_empty()
    {
        return invalid(
            format!("{at}.filters[{f}]"),
            "a RequestRedirect answers the request itself, so its rule has no backendRefs: remove them or the redirect",
        );
    }
    backend_refs(&rule.backend_refs, at)?;
    if let Some(timeouts) = &rule.timeouts {
        let at = format!("{at}.timeouts");
        let request = timeouts
            .request
            .as_deref()
            .map(|d| duration(d, &format!("{at}.request")))
            .transpose()?;
        let backend = timeouts
            .backend_request
            .as_deref()
            .map(|d| duration(d, &format!("{at}.backendRequest")))
            .transpose()?;
        if let (Some(request), Some(backend)) = (request, backend)
            && !request.is_zero()
            && backend > request
        {
            return invalid(
                format!("{at}.backendRequest"),
                format!(
                    "{:?} is longer than the request timeout {:?}: one attempt cannot outlast the whole request; shorten backendRequest or lengthen request",
                    timeouts.backend_request.as_deref().unwrap_or_default(),
                    timeouts.request.as_deref().unwrap_or_default(),
                ),
            );
        }
    }
    if let Some(retry) = &rule.retry {
        let at = format!("{at}.retry");
        if let Some(attempts) = retry.attempts
            && attempts > MAX_RETRY_ATTEMPTS
        {
            return invalid(
                format!("{at}.attempts"),
                format!(
                    "{attempts}: Bowline allows at most {MAX_RETRY_ATTEMPTS} — each retry sends the request again to a backend that is already failing, so more multiply an outage's load (a retry storm); use {MAX_RETRY_ATTEMPTS} or fewer"
                ),
            );
        }
        for (c, code) in retry.codes.iter().enumerate() {
            if !(400..=599).contains(code) {
                return invalid(
                    format!("{at}.codes[{c}]"),
                    format!("{code}: only error responses are retried; use codes 400-599"),
                );
            }
        }
        if let Some(backoff) = &retry.backoff {
            duration(backoff, &format!("{at}.backoff"))?;
        }
    }
    Ok(())
}

fn grpc_rule(rule: &GrpcRouteRule, at: &str) -> Result<(), Invalid> {
    for (m, matched) in rule.matches.iter().enumerate() {
        let at = format!("{at}.matches[{m}]");
        if let Some(method) = &matched.method {
            grpc_method(method, &format!("{at}.method"))?;
        }
        header_matches(&matched.headers, "header", &format!("{at}.headers"))?;
    }
    filters(&rule.filters, at)?;
    backend_refs(&rule.backend_refs, at)
}

fn duration(text: &str, at: &str) -> Result<Duration, Invalid> {
    gateway_duration(text).ok_or_else(|| {
        (
            at.to_owned(),
            format!(
                "{text:?} is not a Gateway API duration: write one to four number-unit pairs, numbers of at most 5 digits, units h, m, s or ms (10s, 1m30s, 500ms)"
            ),
        )
    })
}

fn path_match(path: &PathMatch, at: &str) -> Result<(), Invalid> {
    let value = path.effective_value();
    match path.effective_type() {
        "Exact" | "PathPrefix" => {
            if !value.starts_with('/') {
                return invalid(
                    format!("{at}.value"),
                    format!("{value:?}: a path starts with `/` (/reviews)"),
                );
            }
            if ["//", "/./", "/../", "%2f", "%2F", "#"]
                .iter()
                .any(|bad| value.contains(bad))
                || value.ends_with("/.")
                || value.ends_with("/..")
            {
                return invalid(
                    format!("{at}.value"),
                    format!(
                        "{value:?}: a path match is a normalised path, without `//`, `/./`, `/../`, `%2f`, `#` or a trailing `/.` or `/..`"
                    ),
                );
            }
            Ok(())
        }
        "RegularExpression" => regex(value, &format!("{at}.value")),
        other => invalid(
            format!("{at}.type"),
            format!("{other:?}: use Exact, PathPrefix or RegularExpression"),
        ),
    }
}

/// Header or query parameter (`what`) matches.
fn header_matches(matches: &[HeaderMatch], what: &str, at: &str) -> Result<(), Invalid> {
    for (i, matched) in matches.iter().enumerate() {
        let at = format!("{at}[{i}]");
        token(&matched.name, what, &format!("{at}.name"))?;
        match matched.effective_type() {
            "Exact" => {}
            "RegularExpression" => regex(&matched.value, &format!("{at}.value"))?,
            other => {
                return invalid(
                    format!("{at}.type"),
                    format!("{other:?}: use Exact or RegularExpression"),
                );
            }
        }
    }
    Ok(())
}

/// The regular expressions the waypoint matches with (the `regex` crate's syntax, RE2's
/// near enough).
fn regex(pattern: &str, at: &str) -> Result<(), Invalid> {
    let Err(e) = regex::Regex::new(pattern) else {
        return Ok(());
    };
    // A syntax error is drawn over several lines, under the pattern; keep its last, the
    // reason.
    let e = e.to_string();
    let reason = e
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(&e);
    invalid(
        at,
        format!("{pattern:?} is not a regular expression Bowline can use (RE2 syntax): {reason}"),
    )
}

/// An HTTP header name: an RFC 9110 `token`.
pub(super) fn header_name(name: &str, at: &str) -> Result<(), Invalid> {
    token(name, "header", at)
}

/// A `token`, the Gateway API's `HTTPHeaderName` (for query parameter names too).
fn token(name: &str, what: &str, at: &str) -> Result<(), Invalid> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.is_empty() && name.chars().all(tchar) {
        return Ok(());
    }
    invalid(
        at,
        format!(
            "{name:?} is not an HTTP {what} name (letters, digits and !#$%&'*+-.^_`|~; no spaces or colons)"
        ),
    )
}

pub(super) fn header_value(value: &str, at: &str) -> Result<(), Invalid> {
    if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return invalid(
            at,
            "a header value cannot hold control characters (a line break would end the header); remove them",
        );
    }
    Ok(())
}

/// A filter's `type` names the one field set; `fields` is `(type, field, set)` for every
/// type the route kind has.
fn filter_shape(type_: &str, fields: &[(&str, &str, bool)], at: &str) -> Result<(), Invalid> {
    let Some(&(_, field, set)) = fields.iter().find(|(t, ..)| *t == type_) else {
        let types: Vec<&str> = fields
            .iter()
            .map(|(t, ..)| *t)
            .filter(|t| *t != "ExtensionRef")
            .collect();
        return invalid(
            format!("{at}.type"),
            format!("{type_:?}: use one of {}", types.join(", ")),
        );
    };
    if !set {
        return invalid(
            format!("{at}.{field}"),
            format!("missing: a filter of type {type_} says what it does in {field}"),
        );
    }
    if let Some((other_type, other, _)) = fields.iter().find(|(t, _, set)| *set && *t != type_) {
        return invalid(
            format!("{at}.{other}"),
            format!(
                "a filter of type {type_} takes only {field}; put {other} in a filter of its own, of type {other_type}"
            ),
        );
    }
    if type_ == "ExtensionRef" {
        return invalid(
            format!("{at}.extensionRef"),
            "Bowline has no extension filters (requests through a filter the mesh does not know would be answered 500); remove this filter",
        );
    }
    Ok(())
}

/// Filter types the Gateway API allows once per list (the others, mirrors and
/// extensions, may repeat).
fn once_each<'a>(types: impl Iterator<Item = (usize, &'a str)>, at: &str) -> Result<(), Invalid> {
    let mut seen: Vec<&str> = Vec::new();
    for (f, type_) in types {
        if matches!(type_, "RequestMirror" | "ExtensionRef") {
            continue;
        }
        if seen.contains(&type_) {
            return invalid(
                format!("{at}.filters[{f}].type"),
                format!("{type_} is given twice; merge them into one filter"),
            );
        }
        seen.push(type_);
    }
    Ok(())
}

/// What one route kind's filters have beyond the fields both kinds' have
/// ([`RouteFilter`]): HTTP's redirects and rewrites.
trait Filter: RouteFilter + Sized {
    /// `(type, field, set)` for the filter types only this kind has, in the Gateway API's
    /// order (they come between the header modifiers and `RequestMirror`).
    fn own_fields(&self) -> Vec<(&'static str, &'static str, bool)> {
        Vec::new()
    }

    /// Checks of those types' fields, at `at` (the filter).
    fn own_checks(&self, _at: &str) -> Result<(), Invalid> {
        Ok(())
    }

    /// Checks of how the filters of one list (at `at`) go together, beyond [`once_each`].
    fn combination(_filters: &[Self], _at: &str) -> Result<(), Invalid> {
        Ok(())
    }
}

impl Filter for GrpcRouteFilter {}

impl Filter for HttpRouteFilter {
    fn own_fields(&self) -> Vec<(&'static str, &'static str, bool)> {
        vec![
            (
                "RequestRedirect",
                "requestRedirect",
                self.request_redirect.is_some(),
            ),
            ("URLRewrite", "urlRewrite", self.url_rewrite.is_some()),
        ]
    }

    fn own_checks(&self, at: &str) -> Result<(), Invalid> {
        if let Some(redirect) = &self.request_redirect {
            request_redirect(redirect, &format!("{at}.requestRedirect"))?;
        }
        if let Some(rewrite) = &self.url_rewrite {
            let at = format!("{at}.urlRewrite");
            if let Some(host) = &rewrite.hostname {
                hostname(host, false, &format!("{at}.hostname"))?;
            }
            if let Some(path) = &rewrite.path {
                path_modifier(path, &format!("{at}.path"))?;
            }
        }
        Ok(())
    }

    fn combination(filters: &[Self], at: &str) -> Result<(), Invalid> {
        let redirect = filters.iter().any(|f| f.request_redirect.is_some());
        if let Some(f) = filters.iter().position(|f| f.url_rewrite.is_some())
            && redirect
        {
            return invalid(
                format!("{at}.filters[{f}]"),
                "a RequestRedirect and a URLRewrite cannot be used together: a redirect answers the request, so nothing is forwarded to rewrite; keep one",
            );
        }
        Ok(())
    }
}

/// A rule's or a backend's `filters` (at `at`), of either route kind.
fn filters<F: Filter>(filters: &[F], at: &str) -> Result<(), Invalid> {
    for (f, filter) in filters.iter().enumerate() {
        let at = format!("{at}.filters[{f}]");
        let request = filter.request_header_modifier();
        let response = filter.response_header_modifier();
        let mut fields = vec![
            (
                "RequestHeaderModifier",
                "requestHeaderModifier",
                request.is_some(),
            ),
            (
                "ResponseHeaderModifier",
                "responseHeaderModifier",
                response.is_some(),
            ),
        ];
        fields.extend(filter.own_fields());
        fields.extend([
            (
                "RequestMirror",
                "requestMirror",
                filter.request_mirror().is_some(),
            ),
            (
                "ExtensionRef",
                "extensionRef",
                filter.extension_ref().is_some(),
            ),
        ]);
        filter_shape(filter.type_(), &fields, &at)?;
        if let Some(modifier) = request {
            header_modifier(modifier, &format!("{at}.requestHeaderModifier"))?;
        }
        if let Some(modifier) = response {
            header_modifier(modifier, &format!("{at}.responseHeaderModifier"))?;
        }
        filter.own_checks(&at)?;
        if let Some(mirror) = filter.request_mirror() {
            request_mirror(mirror, &format!("{at}.requestMirror"))?;
        }
    }
    once_each(filters.iter().map(F::type_).enumerate(), at)?;
    F::combination(filters, at)
}

fn header_modifier(modifier: &HeaderModifier, at: &str) -> Result<(), Invalid> {
    for (field, headers) in [("set", &modifier.set), ("add", &modifier.add)] {
        for (i, header) in headers.iter().enumerate() {
            header_name(&header.name, &format!("{at}.{field}[{i}].name"))?;
            header_value(&header.value, &format!("{at}.{field}[{i}].value"))?;
        }
    }
    for (i, name) in modifier.remove.iter().enumerate() {
        header_name(name, &format!("{at}.remove[{i}]"))?;
    }
    Ok(())
}

fn request_redirect(redirect: &RequestRedirect, at: &str) -> Result<(), Invalid> {
    if let Some(scheme) = &redirect.scheme
        && !matches!(scheme.as_str(), "http" | "https")
    {
        return invalid(
            format!("{at}.scheme"),
            format!("{scheme:?}: use http or https"),
        );
    }
    if let Some(host) = &redirect.hostname {
        hostname(host, false, &format!("{at}.hostname"))?;
    }
    if let Some(path) = &redirect.path {
        path_modifier(path, &format!("{at}.path"))?;
    }
    port(redirect.port, &format!("{at}.port"))?;
    if let Some(code) = redirect.status_code
        && !matches!(code, 301 | 302)
    {
        return invalid(
            format!("{at}.statusCode"),
            format!(
                "{code}: a redirect answers 301 (moved permanently) or 302 (found, the default)"
            ),
        );
    }
    Ok(())
}

fn path_modifier(path: &PathModifier, at: &str) -> Result<(), Invalid> {
    let (field, other, set, other_set) = match path.type_.as_str() {
        "ReplaceFullPath" => (
            "replaceFullPath",
            "replacePrefixMatch",
            path.replace_full_path.is_some(),
            path.replace_prefix_match.is_some(),
        ),
        "ReplacePrefixMatch" => (
            "replacePrefixMatch",
            "replaceFullPath",
            path.replace_prefix_match.is_some(),
            path.replace_full_path.is_some(),
        ),
        other => {
            return invalid(
                format!("{at}.type"),
                format!("{other:?}: use ReplaceFullPath or ReplacePrefixMatch"),
            );
        }
    };
    if !set {
        return invalid(
            format!("{at}.{field}"),
            format!("missing: a path of type {} needs {field}", path.type_),
        );
    }
    if other_set {
        return invalid(
            format!("{at}.{other}"),
            format!(
                "a path of type {} takes only {field}; remove {other}",
                path.type_
            ),
        );
    }
    Ok(())
}

fn request_mirror(mirror: &RequestMirror, at: &str) -> Result<(), Invalid> {
    let backend = &mirror.backend_ref;
    backend_ref(backend!(backend), &format!("{at}.backendRef"))?;
    if let Some(percent) = mirror.percent
        && percent > 100
    {
        return invalid(
            format!("{at}.percent"),
            format!("{percent}: a share of requests, 0-100"),
        );
    }
    Ok(())
}

/// A rule's `backendRefs` (at `at`), of either route kind.
fn backend_refs<F: Filter>(refs: &[BackendRef<F>], at: &str) -> Result<(), Invalid> {
    for (b, backend) in refs.iter().enumerate() {
        let at = format!("{at}.backendRefs[{b}]");
        backend_ref(backend!(backend), &at)?;
        weight(backend.weight, &at)?;
        filters(&backend.filters, &at)?;
    }
    Ok(())
}

/// The object part of a backend reference (`backendRefs[]`, a mirror's `backendRef`).
struct Backend<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    name: &'a str,
    namespace: Option<&'a str>,
    port: Option<u16>,
}

fn backend_ref(backend: Backend<'_>, at: &str) -> Result<(), Invalid> {
    let field = |name: &str| format!("{at}.{name}");
    if let Some(kind) = backend.kind
        && kind != "Service"
    {
        return invalid(
            field("kind"),
            format!("{kind:?}: Bowline routes to Services only; use kind: Service (the default)"),
        );
    }
    if let Some(group) = backend.group
        && !group.is_empty()
    {
        return invalid(
            field("group"),
            format!("{group:?}: a Service is in the core group; write group: \"\" or omit it"),
        );
    }
    dns_name(backend.name, &field("name"))?;
    // Another namespace is allowed; the name must still be one.
    if let Some(namespace) = backend.namespace {
        dns_name(namespace, &field("namespace"))?;
    }
    match backend.port {
        None => invalid(
            field("port"),
            format!(
                "missing: give the port of Service {} to send to (port: 9080)",
                backend.name
            ),
        ),
        Some(0) => invalid(field("port"), "must be 1-65535"),
        Some(_) => Ok(()),
    }
}

fn weight(weight: Option<u32>, at: &str) -> Result<(), Invalid> {
    if let Some(weight) = weight
        && weight > 1_000_000
    {
        return invalid(
            format!("{at}.weight"),
            format!(
                "{weight}: weights are 0-1000000, a share relative to the rule's other backends"
            ),
        );
    }
    Ok(())
}

fn grpc_method(method: &GrpcMethodMatch, at: &str) -> Result<(), Invalid> {
    if method.service.is_none() && method.method.is_none() {
        return invalid(
            at,
            "give service, method or both (shop.v1.Reviews, GetReview); to match every call, omit method",
        );
    }
    match method.effective_type() {
        "Exact" => {
            if let Some(service) = &method.service
                && !grpc_service_name(service)
            {
                return invalid(
                    format!("{at}.service"),
                    format!(
                        "{service:?} is not a gRPC service name: write it fully qualified, shop.v1.Reviews"
                    ),
                );
            }
            if let Some(name) = &method.method
                && !grpc_identifier(name)
            {
                return invalid(
                    format!("{at}.method"),
                    format!(
                        "{name:?} is not a gRPC method name (letters, digits and '_', as GetReview)"
                    ),
                );
            }
            Ok(())
        }
        "RegularExpression" => {
            if let Some(service) = &method.service {
                regex(service, &format!("{at}.service"))?;
            }
            if let Some(name) = &method.method {
                regex(name, &format!("{at}.method"))?;
            }
            Ok(())
        }
        other => invalid(
            format!("{at}.type"),
            format!("{other:?}: use Exact or RegularExpression"),
        ),
    }
}

fn grpc_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A protobuf full name, as the Gateway API writes it (`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`).
fn grpc_service_name(name: &str) -> bool {
    let name = name.strip_prefix('.').unwrap_or(name);
    name.split('.').all(grpc_identifier)
}
