//! Checks of `VirtualService` and `DestinationRule` beyond their shape: the parts Istio
//! requires, values that parse (durations, expressions, statuses, percentages), and the
//! fields Bowline does not implement — each refused naming the field and saying what to
//! do instead, never accepted and ignored.

use super::routes::{header_name, header_value};
use super::{Invalid, dns_name, invalid};
use crate::resources::traffic::*;
use crate::resources::{DestinationRule, VirtualService};

/// Most retry attempts a route may ask for.
const MAX_ATTEMPTS: u32 = super::MAX_RETRY_ATTEMPTS;

pub(super) fn virtual_service(service: &VirtualService) -> Result<(), Invalid> {
    let spec = &service.spec;
    // Without hosts it is a delegate: its routes are used where a root delegates to it.
    let delegate = spec.hosts.is_empty();
    if delegate && !spec.gateways.is_empty() {
        return invalid(
            "spec.gateways",
            "a delegate VirtualService (no hosts) takes its root's gateways; remove them",
        );
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        if host.trim().is_empty() {
            return invalid(format!("spec.hosts[{i}]"), "a host cannot be empty");
        }
    }
    for (i, gateway) in spec.gateways.iter().enumerate() {
        if gateway != "mesh" {
            return invalid(
                format!("spec.gateways[{i}]"),
                format!(
                    "{gateway:?}: only `mesh` is supported yet — a VirtualService at an ingress gateway needs Istio's networking.istio.io Gateway, which Bowline does not support; for a Gateway API Gateway (class istio) write an HTTPRoute with parentRefs to it, as Istio requires too"
                ),
            );
        }
    }
    if !spec.tls.is_empty() {
        return invalid(
            "spec.tls",
            "TLS (SNI) routes are not supported; route HTTP with `http`",
        );
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        tcp_route(route, &format!("spec.tcp[{i}]"))?;
    }
    for (i, route) in spec.http.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        if let Some(to) = &route.delegate {
            if delegate {
                return invalid(
                    format!("{at}.delegate"),
                    "a delegate VirtualService cannot delegate again (one level, as in Istio)",
                );
            }
            delegation(route, to, &at)?;
            continue;
        }
        http_route(route, &at)?;
    }
    Ok(())
}

fn tcp_route(route: &TcpRoute, at: &str) -> Result<(), Invalid> {
    if route.route.is_empty() {
        return invalid(format!("{at}.route"), "a TCP route needs a destination");
    }
    for (j, m) in route.matches.iter().enumerate() {
        let here = format!("{at}.match[{j}]");
        if !m.destination_subnets.is_empty() {
            return invalid(
                format!("{here}.destinationSubnets"),
                "not supported: a waypoint routes a service's traffic; match on port, sourceLabels or sourceNamespace",
            );
        }
        if m.source_subnet.is_some() {
            return invalid(
                format!("{here}.sourceSubnet"),
                "not supported; match on sourceLabels or sourceNamespace",
            );
        }
        if let Some((k, _)) = m.gateways.iter().enumerate().find(|(_, g)| *g != "mesh") {
            return invalid(format!("{here}.gateways[{k}]"), "only `mesh` is supported");
        }
        if let Some(port) = m.port {
            port_number(u32::from(port), &format!("{here}.port"))?;
        }
    }
    for (k, d) in route.route.iter().enumerate() {
        let here = format!("{at}.route[{k}]");
        destination(&d.destination, &format!("{here}.destination"))?;
        if d.weight.is_some_and(|w| w > 100) {
            return invalid(format!("{here}.weight"), "a weight is a percentage, 0-100");
        }
    }
    Ok(())
}

/// A route that delegates takes only its matches (and name) besides `delegate`.
fn delegation(route: &HttpRoute, to: &Delegate, at: &str) -> Result<(), Invalid> {
    dns_name(&to.name, &format!("{at}.delegate.name"))?;
    if let Some(ns) = &to.namespace {
        dns_name(ns, &format!("{at}.delegate.namespace"))?;
    }
    let alone = HttpRoute {
        name: route.name.clone(),
        matches: route.matches.clone(),
        delegate: route.delegate.clone(),
        ..HttpRoute::default()
    };
    if *route != alone {
        return invalid(
            at.to_owned(),
            "a route that delegates takes only `match` (and `name`): the delegate VirtualService's routes say what to do",
        );
    }
    for (j, m) in route.matches.iter().enumerate() {
        http_match(m, &format!("{at}.match[{j}]"))?;
    }
    Ok(())
}

fn http_route(route: &HttpRoute, at: &str) -> Result<(), Invalid> {
    let answers = [
        !route.route.is_empty(),
        route.redirect.is_some(),
        route.direct_response.is_some(),
    ];
    match answers.iter().filter(|a| **a).count() {
        0 => {
            return invalid(
                at.to_owned(),
                "a route needs one of route, redirect or directResponse",
            );
        }
        1 => {}
        _ => {
            return invalid(
                at.to_owned(),
                "route, redirect and directResponse exclude each other",
            );
        }
    }
    for (j, m) in route.matches.iter().enumerate() {
        http_match(m, &format!("{at}.match[{j}]"))?;
    }
    for (k, d) in route.route.iter().enumerate() {
        let here = format!("{at}.route[{k}]");
        destination(&d.destination, &format!("{here}.destination"))?;
        if d.weight.is_some_and(|w| w > 100) {
            return invalid(format!("{here}.weight"), "a weight is a percentage, 0-100");
        }
        if let Some(h) = &d.headers {
            headers(h, &format!("{here}.headers"))?;
        }
    }
    if let Some(r) = &route.redirect {
        let here = format!("{at}.redirect");
        if let Some(code) = r.redirect_code
            && !matches!(code, 301 | 302 | 303 | 307 | 308)
        {
            return invalid(
                format!("{here}.redirectCode"),
                format!("{code} is not a redirect (301, 302, 303, 307, 308)"),
            );
        }
        if r.derive_port.as_deref() == Some("FROM_REQUEST_PORT") {
            return invalid(
                format!("{here}.derivePort"),
                "FROM_REQUEST_PORT is not supported; give `port`, or leave it out for the scheme's default",
            );
        }
        if let Some(port) = r.port {
            port_number(port, &format!("{here}.port"))?;
        }
        if let Some(scheme) = &r.scheme
            && !matches!(scheme.as_str(), "http" | "https")
        {
            return invalid(
                format!("{here}.scheme"),
                format!("{scheme:?}: http or https"),
            );
        }
    }
    if let Some(d) = &route.direct_response {
        if !(200..=599).contains(&d.status) {
            return invalid(
                format!("{at}.directResponse.status"),
                format!("{} is not an HTTP status (200-599)", d.status),
            );
        }
        if let Some(body) = &d.body {
            body.decoded()
                .map_err(|e| (format!("{at}.directResponse.body.bytes"), e))?;
        }
    }
    if let Some(r) = &route.rewrite {
        if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
            return invalid(
                format!("{at}.rewrite"),
                "uri and uriRegexRewrite exclude each other",
            );
        }
        if let Some(re) = &r.uri_regex_rewrite {
            regex(&re.pattern, &format!("{at}.rewrite.uriRegexRewrite.match"))?;
        }
    }
    if let Some(t) = &route.timeout {
        duration(t, &format!("{at}.timeout"))?;
    }
    if let Some(r) = &route.retries {
        retries(r, &format!("{at}.retries"))?;
    }
    if let Some(f) = &route.fault {
        fault(f, &format!("{at}.fault"))?;
    }
    if let Some(m) = &route.mirror {
        destination(m, &format!("{at}.mirror"))?;
    }
    if route.mirror.is_none()
        && (route.mirror_percentage.is_some() || route.mirror_percent.is_some())
    {
        return invalid(
            format!("{at}.mirrorPercentage"),
            "a mirror percentage needs `mirror`",
        );
    }
    if let Some(p) = &route.mirror_percentage {
        percent(p, &format!("{at}.mirrorPercentage"))?;
    }
    if route.mirror_percent.is_some_and(|p| p > 100) {
        return invalid(format!("{at}.mirrorPercent"), "a percentage is 0-100");
    }
    for (k, m) in route.mirrors.iter().enumerate() {
        destination(&m.destination, &format!("{at}.mirrors[{k}].destination"))?;
        if let Some(p) = &m.percentage {
            percent(p, &format!("{at}.mirrors[{k}].percentage"))?;
        }
    }
    if let Some(c) = &route.cors_policy {
        cors(c, &format!("{at}.corsPolicy"))?;
    }
    if let Some(h) = &route.headers {
        headers(h, &format!("{at}.headers"))?;
    }
    Ok(())
}

fn http_match(m: &HttpMatchRequest, at: &str) -> Result<(), Invalid> {
    if m.scheme.is_some() {
        return invalid(
            format!("{at}.scheme"),
            "scheme matches are not supported (a waypoint sees plain HTTP inside the mesh tunnel)",
        );
    }
    if m.stat_prefix.is_some() {
        return invalid(
            format!("{at}.statPrefix"),
            "Envoy stat prefixes are not supported; remove it",
        );
    }
    for (i, g) in m.gateways.iter().enumerate() {
        if g != "mesh" {
            return invalid(
                format!("{at}.gateways[{i}]"),
                format!("{g:?}: only `mesh` is supported yet"),
            );
        }
    }
    if let Some(uri) = &m.uri {
        string_match(uri, &format!("{at}.uri"))?;
    }
    if let Some(method) = &m.method {
        string_match(method, &format!("{at}.method"))?;
    }
    if let Some(authority) = &m.authority {
        string_match(authority, &format!("{at}.authority"))?;
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, value) in map {
            let here = format!("{at}.{field}.{name}");
            header_name(name, &here)?;
            string_match(value, &here)?;
        }
    }
    for (name, value) in &m.query_params {
        string_match(value, &format!("{at}.queryParams.{name}"))?;
    }
    if let Some(port) = m.port {
        port_number(port, &format!("{at}.port"))?;
    }
    Ok(())
}

fn string_match(m: &StringMatch, at: &str) -> Result<(), Invalid> {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()];
    if set.iter().filter(|s| **s).count() > 1 {
        return invalid(at.to_owned(), "exact, prefix and regex exclude each other");
    }
    if let Some(re) = &m.regex {
        regex(re, &format!("{at}.regex"))?;
    }
    Ok(())
}

fn regex(pattern: &str, at: &str) -> Result<(), Invalid> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| (at.to_owned(), format!("not a regular expression: {e}")))
}

fn destination(d: &Destination, at: &str) -> Result<(), Invalid> {
    if d.host.trim().is_empty() {
        return invalid(format!("{at}.host"), "a destination needs a host");
    }
    if let Some(subset) = &d.subset {
        dns_name(subset, &format!("{at}.subset"))?;
    }
    if let Some(p) = &d.port {
        port_number(p.number, &format!("{at}.port.number"))?;
    }
    Ok(())
}

fn port_number(port: u32, at: &str) -> Result<(), Invalid> {
    if !(1..=65535).contains(&port) {
        return invalid(at.to_owned(), format!("{port} is not a port (1-65535)"));
    }
    Ok(())
}

fn duration(text: &str, at: &str) -> Result<(), Invalid> {
    match istio_duration(text) {
        Some(_) => Ok(()),
        None => invalid(
            at.to_owned(),
            format!("{text:?} is not a duration (such as 0.5s, 10s, 100ms, 1m)"),
        ),
    }
}

fn percent(p: &Percent, at: &str) -> Result<(), Invalid> {
    if !(0.0..=100.0).contains(&p.value) {
        return invalid(format!("{at}.value"), "a percentage is 0-100");
    }
    Ok(())
}

fn retries(r: &HttpRetry, at: &str) -> Result<(), Invalid> {
    if r.attempts > MAX_ATTEMPTS {
        return invalid(
            format!("{at}.attempts"),
            format!("at most {MAX_ATTEMPTS} attempts (Bowline's limit)"),
        );
    }
    for (field, value) in [
        ("perTryTimeout", &r.per_try_timeout),
        ("backoff", &r.backoff),
    ] {
        if let Some(text) = value {
            duration(text, &format!("{at}.{field}"))?;
        }
    }
    if let Some(on) = &r.retry_on {
        for condition in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let status = condition
                .parse::<u16>()
                .is_ok_and(|c| (100..600).contains(&c));
            if !status && !RETRY_ON.contains(&condition) {
                return invalid(
                    format!("{at}.retryOn"),
                    format!(
                        "{condition:?} is not a retry condition Bowline knows ({}, or a status code)",
                        RETRY_ON.join(", ")
                    ),
                );
            }
        }
    }
    Ok(())
}

fn fault(f: &HttpFaultInjection, at: &str) -> Result<(), Invalid> {
    if let Some(d) = &f.delay {
        let here = format!("{at}.delay");
        if d.exponential_delay.is_some() {
            return invalid(
                format!("{here}.exponentialDelay"),
                "not supported; use fixedDelay",
            );
        }
        match &d.fixed_delay {
            Some(text) => duration(text, &format!("{here}.fixedDelay"))?,
            None => return invalid(format!("{here}.fixedDelay"), "a delay needs fixedDelay"),
        }
        if let Some(p) = &d.percentage {
            percent(p, &format!("{here}.percentage"))?;
        }
        if d.percent.is_some_and(|p| p > 100) {
            return invalid(format!("{here}.percent"), "a percentage is 0-100");
        }
    }
    if let Some(a) = &f.abort {
        let here = format!("{at}.abort");
        if a.http2_error.is_some() {
            return invalid(
                format!("{here}.http2Error"),
                "not supported; abort with httpStatus or grpcStatus",
            );
        }
        match (a.http_status, a.grpc_code()) {
            (Some(_), Some(_)) => {
                return invalid(here, "httpStatus and grpcStatus exclude each other");
            }
            (None, None) => return invalid(here, "an abort needs httpStatus or grpcStatus"),
            (Some(status), None) if !(200..=599).contains(&status) => {
                return invalid(
                    format!("{here}.httpStatus"),
                    format!("{status} is not an HTTP status (200-599)"),
                );
            }
            (None, Some(Err(e))) => return invalid(format!("{here}.grpcStatus"), e),
            _ => {}
        }
        if let Some(p) = &a.percentage {
            percent(p, &format!("{here}.percentage"))?;
        }
    }
    Ok(())
}

fn cors(c: &CorsPolicy, at: &str) -> Result<(), Invalid> {
    for (i, o) in c.allow_origins.iter().enumerate() {
        string_match(o, &format!("{at}.allowOrigins[{i}]"))?;
    }
    if let Some(age) = &c.max_age {
        duration(age, &format!("{at}.maxAge"))?;
    }
    if c.unmatched_preflights.as_deref() == Some("IGNORE") {
        return invalid(
            format!("{at}.unmatchedPreflights"),
            "IGNORE is not supported; unmatched preflights are forwarded (FORWARD)",
        );
    }
    for (field, list) in [
        ("allowMethods", &c.allow_methods),
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        header_value(&list.join(","), &format!("{at}.{field}"))?;
    }
    Ok(())
}

fn headers(h: &Headers, at: &str) -> Result<(), Invalid> {
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let here = format!("{at}.{side}.{op}.{name}");
                header_name(name, &here)?;
                header_value(value, &here)?;
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            header_name(name, &format!("{at}.{side}.remove[{i}]"))?;
        }
    }
    Ok(())
}

pub(super) fn destination_rule(rule: &DestinationRule) -> Result<(), Invalid> {
    let spec = &rule.spec;
    if spec.host.trim().is_empty() {
        return invalid("spec.host", "a DestinationRule needs a host");
    }
    if spec.workload_selector.is_some() {
        return invalid(
            "spec.workloadSelector",
            "workload selectors are for sidecars and have no meaning in ambient mode; remove it",
        );
    }
    if let Some(p) = &spec.traffic_policy {
        traffic_policy(p, "spec.trafficPolicy")?;
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        if let Some(p) = &subset.traffic_policy {
            traffic_policy(p, &format!("spec.subsets[{i}].trafficPolicy"))?;
        }
        let at = format!("spec.subsets[{i}].name");
        if subset.name.is_empty() {
            return invalid(at, "a subset needs a name");
        }
        dns_name(&subset.name, &at)?;
        if !names.insert(&subset.name) {
            return invalid(at, format!("subset {:?} is defined twice", subset.name));
        }
    }
    Ok(())
}

fn traffic_policy(p: &TrafficPolicy, at: &str) -> Result<(), Invalid> {
    policy_parts(
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        at,
    )?;
    for (i, port) in p.port_level_settings.iter().enumerate() {
        let here = format!("{at}.portLevelSettings[{i}]");
        match &port.port {
            Some(n) => port_number(n.number, &format!("{here}.port.number"))?,
            None => return invalid(format!("{here}.port"), "a port-level setting needs a port"),
        }
        policy_parts(
            port.load_balancer.as_ref(),
            port.connection_pool.as_ref(),
            port.outlier_detection.as_ref(),
            &here,
        )?;
    }
    Ok(())
}

fn policy_parts(
    lb: Option<&LoadBalancer>,
    pool: Option<&ConnectionPool>,
    outlier: Option<&OutlierDetection>,
    at: &str,
) -> Result<(), Invalid> {
    if let Some(lb) = lb {
        let here = format!("{at}.loadBalancer");
        match (lb.simple.as_deref(), &lb.consistent_hash) {
            (Some(_), Some(_)) => {
                return invalid(here, "simple and consistentHash exclude each other");
            }
            (Some("PASSTHROUGH"), _) => {
                return invalid(
                    format!("{here}.simple"),
                    "PASSTHROUGH is not supported: a waypoint sends to the service's endpoints; use LEAST_REQUEST, ROUND_ROBIN or RANDOM",
                );
            }
            (Some(s), _)
                if !matches!(
                    s,
                    "UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN" | "ROUND_ROBIN" | "RANDOM"
                ) =>
            {
                return invalid(
                    format!("{here}.simple"),
                    format!("{s:?}: use LEAST_REQUEST, ROUND_ROBIN or RANDOM"),
                );
            }
            (None, Some(hash)) => {
                let keys = [
                    hash.http_header_name.is_some(),
                    hash.http_cookie.is_some(),
                    hash.use_source_ip == Some(true),
                    hash.http_query_parameter_name.is_some(),
                ];
                if keys.iter().filter(|k| **k).count() != 1 {
                    return invalid(
                        format!("{here}.consistentHash"),
                        "name exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
                    );
                }
                if hash.http_cookie.as_ref().is_some_and(|c| c.ttl.is_some()) {
                    return invalid(
                        format!("{here}.consistentHash.httpCookie.ttl"),
                        "generated cookies are not supported: hash on a cookie the client sends (leave ttl out)",
                    );
                }
            }
            _ => {}
        }
    }
    if let Some(pool) = pool {
        let here = format!("{at}.connectionPool");
        if let Some(tcp) = &pool.tcp {
            for (field, value) in [
                ("connectTimeout", &tcp.connect_timeout),
                ("maxConnectionDuration", &tcp.max_connection_duration),
                ("idleTimeout", &tcp.idle_timeout),
            ] {
                if let Some(text) = value {
                    duration(text, &format!("{here}.tcp.{field}"))?;
                }
            }
        }
        if let Some(text) = pool.http.as_ref().and_then(|h| h.idle_timeout.as_ref()) {
            duration(text, &format!("{here}.http.idleTimeout"))?;
        }
    }
    if let Some(o) = outlier {
        let here = format!("{at}.outlierDetection");
        for (field, value) in [
            ("interval", &o.interval),
            ("baseEjectionTime", &o.base_ejection_time),
        ] {
            if let Some(text) = value {
                duration(text, &format!("{here}.{field}"))?;
            }
        }
        for (field, value) in [
            ("maxEjectionPercent", o.max_ejection_percent),
            ("minHealthPercent", o.min_health_percent),
        ] {
            if value.is_some_and(|v| v > 100) {
                return invalid(format!("{here}.{field}"), "a percentage is 0-100");
            }
        }
    }
    Ok(())
}
