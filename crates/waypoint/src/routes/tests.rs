//! Matching, precedence, the index, weights, rewrites, retry conditions and refusals of
//! route tables.

use super::*;

fn entry(path: (wire::path_match::Kind, &str), method: &str, backend: &str) -> wire::RouteEntry {
    wire::RouteEntry {
        route: "HTTPRoute shop/r".into(),
        rule: 0,
        r#match: Some(wire::RouteMatch {
            path: Some(wire::PathMatch {
                kind: path.0 as i32,
                value: path.1.into(),
                ..Default::default()
            }),
            method: method.into(),
            ..Default::default()
        }),
        action: Some(wire::RouteAction {
            backends: vec![wire::Backend {
                backend: Some(wire::BackendRef {
                    namespace: "shop".into(),
                    name: backend.into(),
                    port: 80,
                    hostname: format!("{backend}.shop.svc.cluster.local"),
                    ..Default::default()
                }),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }),
        hostnames: Vec::new(),
    }
}

/// A table of `entries`, each its own rule.
fn table(mut entries: Vec<wire::RouteEntry>) -> Table {
    for (i, e) in entries.iter_mut().enumerate() {
        e.rule = i as u32;
    }
    Table::try_from(wire::RouteTable {
        ingress: None,
        tcp: Vec::new(),
        namespace: "shop".into(),
        service: "reviews".into(),
        entries,
    })
    .unwrap()
}

fn backend_for(
    t: &Table,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<String> {
    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
    let view = RequestView {
        method: &method,
        path,
        query,
        headers,
        authority: Some("reviews:9080"),
        port: 9080,
        source_uid: Some("Kubernetes//Pod/shop/productpage-1"),
        source_namespace: "shop",
        host: None,
    };
    t.find(&view)
        .and_then(|e| e.action.backend(0))
        .map(|b| b.target.name.clone())
}

#[test]
fn prefixes_match_whole_segments_and_the_first_entry_wins() {
    use wire::path_match::Kind;
    let t = table(vec![
        entry((Kind::Exact, "/api/login"), "", "login"),
        entry((Kind::Prefix, "/api/"), "POST", "writes"),
        entry((Kind::Prefix, "/api"), "", "api"),
        entry((Kind::Regex, "/static/.*\\.css"), "", "css"),
    ]);
    let none = HeaderMap::new();
    assert_eq!(
        backend_for(&t, "GET", "/api/login", None, &none).as_deref(),
        Some("login")
    );
    assert_eq!(
        backend_for(&t, "POST", "/api/v1", None, &none).as_deref(),
        Some("writes")
    );
    assert_eq!(
        backend_for(&t, "GET", "/api/v1", None, &none).as_deref(),
        Some("api")
    );
    assert_eq!(
        backend_for(&t, "GET", "/api", None, &none).as_deref(),
        Some("api")
    );
    assert_eq!(backend_for(&t, "GET", "/apis", None, &none), None);
    assert_eq!(
        backend_for(&t, "GET", "/static/a.css", None, &none).as_deref(),
        Some("css")
    );
    assert_eq!(
        backend_for(&t, "GET", "/static/a.css.map", None, &none),
        None,
        "regexes match the whole path"
    );
}

#[test]
fn header_and_query_matches_must_all_hold() {
    let mut e = entry((wire::path_match::Kind::Prefix, "/"), "", "canary");
    let m = e.r#match.as_mut().unwrap();
    m.headers.push(wire::ValueMatch {
        kind: wire::value_match::Kind::Exact as i32,
        name: "x-canary".into(),
        value: "yes".into(),
    });
    m.query_params.push(wire::ValueMatch {
        kind: wire::value_match::Kind::Regex as i32,
        name: "v".into(),
        value: "2|3".into(),
    });
    let t = table(vec![
        e,
        entry((wire::path_match::Kind::Prefix, "/"), "", "stable"),
    ]);
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("yes"));
    assert_eq!(
        backend_for(&t, "GET", "/", Some("a=1&v=3"), &canary).as_deref(),
        Some("canary")
    );
    assert_eq!(
        backend_for(&t, "GET", "/", Some("v=4"), &canary).as_deref(),
        Some("stable")
    );
    assert_eq!(
        backend_for(&t, "GET", "/", Some("v=2"), &HeaderMap::new()).as_deref(),
        Some("stable")
    );
}

#[test]
fn weights_split_draws_in_proportion() {
    let mut e = entry((wire::path_match::Kind::Prefix, "/"), "", "v1");
    let action = e.action.as_mut().unwrap();
    action.backends[0].weight = 90;
    let mut v2 = action.backends[0].clone();
    v2.backend.as_mut().unwrap().name = "v2".into();
    v2.weight = 10;
    action.backends.push(v2);
    let t = table(vec![e]);
    let action = &t.entries[0].action;
    let v2 = (0..1000u64)
        .filter(|roll| action.backend(*roll).unwrap().target.name == "v2")
        .count();
    assert_eq!(v2, 100);
}

#[test]
fn virtual_service_matches_string_prefixes_case_and_what_must_not_hold() {
    use wire::path_match::Kind;
    let mut plain = entry((Kind::StringPrefix, "/API"), "", "plain");
    plain
        .r#match
        .as_mut()
        .unwrap()
        .path
        .as_mut()
        .unwrap()
        .ignore_case = true;
    let mut without = entry((Kind::Prefix, "/"), "", "without");
    let m = without.r#match.as_mut().unwrap();
    m.without_headers.push(wire::ValueMatch {
        kind: wire::value_match::Kind::Present as i32,
        name: "x-debug".into(),
        value: String::new(),
    });
    m.port = 9080;
    m.source_namespace = "shop".into();
    let mut elsewhere = entry((Kind::Prefix, "/"), "", "other-port");
    elsewhere.r#match.as_mut().unwrap().port = 8080;
    let t = table(vec![plain, elsewhere, without]);
    let none = HeaderMap::new();
    assert_eq!(
        backend_for(&t, "GET", "/apis/x", None, &none).as_deref(),
        Some("plain"),
        "a VirtualService prefix is a string prefix, here ignoring case"
    );
    assert_eq!(
        backend_for(&t, "GET", "/other", None, &none).as_deref(),
        Some("without")
    );
    let mut debug = HeaderMap::new();
    debug.insert("x-debug", HeaderValue::from_static("1"));
    assert_eq!(backend_for(&t, "GET", "/other", None, &debug), None);
}

#[test]
fn the_index_finds_what_walking_the_whole_table_finds() {
    use wire::path_match::Kind;
    let mut entries = Vec::new();
    for i in 0..40 {
        let mut e = match i % 4 {
            0 => entry((Kind::Exact, &format!("/p{}", i % 7)), "", &format!("b{i}")),
            1 => entry(
                (Kind::Prefix, &format!("/p{}", i % 5)),
                "",
                &format!("b{i}"),
            ),
            _ => entry((Kind::Prefix, "/"), "", &format!("b{i}")),
        };
        let m = e.r#match.as_mut().unwrap();
        if i % 3 == 0 {
            m.headers.push(wire::ValueMatch {
                kind: wire::value_match::Kind::Exact as i32,
                name: format!("x-h{}", i % 2),
                value: format!("{}", i % 4),
            });
        }
        if i % 5 == 0 {
            m.method = "POST".into();
        }
        entries.push(e);
    }
    let t = table(entries);
    for path in ["/", "/p0", "/p1", "/p3/x", "/p6", "/q"] {
        for method in ["GET", "POST"] {
            for (h0, h1) in [
                (None, None),
                (Some("0"), None),
                (Some("2"), Some("1")),
                (None, Some("3")),
            ] {
                let mut headers = HeaderMap::new();
                if let Some(v) = h0 {
                    headers.insert("x-h0", HeaderValue::from_static(v));
                }
                if let Some(v) = h1 {
                    headers.insert("x-h1", HeaderValue::from_static(v));
                }
                let method = http::Method::from_bytes(method.as_bytes()).unwrap();
                let view = RequestView {
                    method: &method,
                    path,
                    query: None,
                    headers: &headers,
                    authority: None,
                    port: 80,
                    source_uid: None,
                    source_namespace: "shop",
                    host: None,
                };
                let walked = t.entries.iter().position(|e| e.matcher.matches(&view));
                let found = t.find(&view).map(|e| e.rule as usize);
                assert_eq!(found, walked, "{method} {path} {h0:?} {h1:?}");
            }
        }
    }
}

#[test]
fn retry_conditions_follow_retry_on() {
    let retry = |on: Vec<RetryOn>, codes: Vec<u16>| Retry {
        attempts: 2,
        codes,
        backoff: Duration::ZERO,
        on,
    };
    let gateway = retry(vec![RetryOn::GatewayError], vec![]);
    assert!(gateway.retries(Attempt::Response(503, None)));
    assert!(!gateway.retries(Attempt::Response(500, None)));
    assert!(gateway.retries(Attempt::ConnectFailed));
    let five = retry(vec![RetryOn::ServerError], vec![]);
    assert!(five.retries(Attempt::Response(500, None)));
    assert!(five.retries(Attempt::Reset));
    assert!(!five.retries(Attempt::Response(404, None)));
    let connect = retry(vec![RetryOn::ConnectFailure], vec![]);
    assert!(!connect.retries(Attempt::Response(503, None)));
    assert!(!connect.retries(Attempt::Reset));
    let codes = retry(vec![RetryOn::StatusCodes], vec![418]);
    assert!(codes.retries(Attempt::Response(418, None)));
    let grpc = retry(vec![RetryOn::GrpcUnavailable], vec![]);
    assert!(grpc.retries(Attempt::Response(200, Some(14))));
    assert!(!grpc.retries(Attempt::Response(200, Some(2))));
    let gateway_api = retry(vec![], vec![503]);
    assert!(gateway_api.retries(Attempt::ConnectFailed));
    assert!(gateway_api.retries(Attempt::Response(503, None)));
    assert!(!gateway_api.retries(Attempt::Reset));
}

#[test]
fn prefix_rewrites_keep_the_rest_of_the_path() {
    assert_eq!(
        replace_string_prefix("/productpage/x", "/productpage", "/v2"),
        "/v2/x"
    );
    assert_eq!(
        replace_prefix("/api/v1/users", "/api", "/v2"),
        "/v2/v1/users"
    );
    assert_eq!(replace_prefix("/api", "/api", "/"), "/");
    assert_eq!(replace_prefix("/api/x", "/api", "/"), "/x");
    assert_eq!(replace_prefix("/api/x", "/api", "/new/"), "/new/x");
}

#[test]
fn a_bad_regex_or_header_is_refused_with_its_field() {
    let mut e = entry((wire::path_match::Kind::Regex, "(unclosed"), "", "x");
    let error = Table::try_from(wire::RouteTable {
        ingress: None,
        tcp: Vec::new(),
        namespace: "shop".into(),
        service: "reviews".into(),
        entries: vec![e.clone()],
    })
    .unwrap_err();
    assert_eq!(error.field, "entries[0].match.path.value");
    e.r#match = Some(wire::RouteMatch::default());
    e.action.as_mut().unwrap().request_headers = Some(wire::HeaderModifier {
        set: vec![wire::Header {
            name: "bad header".into(),
            value: "x".into(),
        }],
        ..Default::default()
    });
    let error = Table::try_from(wire::RouteTable {
        ingress: None,
        tcp: Vec::new(),
        namespace: "shop".into(),
        service: "reviews".into(),
        entries: vec![e],
    })
    .unwrap_err();
    assert_eq!(error.field, "entries[0].action.request_headers.set[0].name");
}

#[test]
fn ingress_entries_match_their_hosts_exact_or_under_a_wildcard_ignoring_case() {
    use wire::path_match::Kind;
    let mut exact = entry((Kind::Prefix, "/"), "", "exact");
    exact.hostnames = vec!["reviews.shop.example".into()];
    let mut wild = entry((Kind::Prefix, "/"), "", "wild");
    wild.hostnames = vec!["*.shop.example".into()];
    let t = table(vec![exact, wild, entry((Kind::Prefix, "/"), "", "any")]);
    let headers = HeaderMap::new();
    let method = http::Method::GET;
    let found = |host: Option<&str>| {
        let view = RequestView {
            method: &method,
            path: "/",
            query: None,
            headers: &headers,
            authority: host,
            port: 80,
            source_uid: None,
            source_namespace: "",
            host,
        };
        t.find(&view)
            .map(|e| e.action.backend(0).unwrap().target.name.clone())
    };
    assert_eq!(
        found(Some("Reviews.Shop.Example")).as_deref(),
        Some("exact")
    );
    assert_eq!(found(Some("a.b.shop.example")).as_deref(), Some("wild"));
    assert_eq!(
        found(Some("shop.example")).as_deref(),
        Some("any"),
        "a wildcard takes names under it only"
    );
    assert_eq!(found(None).as_deref(), Some("any"));
    let ingress = Ingress {
        port: 443,
        tls: true,
        listeners: vec![
            IngressListener {
                name: "reviews".into(),
                hostname: Some("reviews.shop.example".into()),
                certificates: vec![],
            },
            IngressListener {
                name: "shop".into(),
                hostname: Some("*.shop.example".into()),
                certificates: vec![],
            },
        ],
    };
    assert_eq!(
        ingress
            .listener_for(Some("reviews.shop.example"))
            .unwrap()
            .name,
        "reviews"
    );
    assert_eq!(
        ingress.listener_for(Some("x.shop.example")).unwrap().name,
        "shop"
    );
    assert!(ingress.listener_for(Some("other.example")).is_none());
}

#[test]
fn tcp_entries_match_port_and_source_in_order_and_a_tcp_only_table_leaves_http_alone() {
    let backend = |name: &str| wire::Backend {
        backend: Some(wire::BackendRef {
            namespace: "shop".into(),
            name: name.into(),
            port: 5432,
            hostname: format!("{name}.shop.svc.cluster.local"),
            ..Default::default()
        }),
        weight: 100,
        ..Default::default()
    };
    let t = Table::try_from(wire::RouteTable {
        namespace: "shop".into(),
        service: "db".into(),
        entries: vec![],
        ingress: None,
        tcp: vec![
            wire::TcpEntry {
                route: "VirtualService shop/db".into(),
                rule: 0,
                port: 5432,
                source_namespace: "legacy".into(),
                backends: vec![backend("db-old")],
                ..Default::default()
            },
            wire::TcpEntry {
                route: "VirtualService shop/db".into(),
                rule: 1,
                backends: vec![backend("db-new")],
                ..Default::default()
            },
        ],
    })
    .unwrap();
    let target = |port, ns| {
        t.find_tcp(port, None, ns)
            .and_then(|e| e.action.backend(0))
            .map(|b| b.target.name.clone())
    };
    assert_eq!(target(5432, "legacy").as_deref(), Some("db-old"));
    assert_eq!(target(5432, "shop").as_deref(), Some("db-new"));
    assert_eq!(target(6000, "legacy").as_deref(), Some("db-new"));
    assert!(!t.routes_http(), "HTTP to db goes to its own endpoints");
}
