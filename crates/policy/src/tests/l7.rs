//! HTTP attributes and waypoint targets, on policies built in the waypoint's wire form
//! (`bowline.l7.v1.Authorization`), so conversion is exercised too.

use http::{HeaderMap, HeaderName, HeaderValue};
use xds::l7;
use xds::l7::target::Kind;
use xds::security as wire;
use xds::security::string_match::MatchType;

use super::{cidr, exact, id, ip};
use crate::{
    Decision, HttpRequest, L4Request, Policy, Request, Scope, StringMatch, Target, evaluate,
    evaluate_request,
};

fn prefix(s: &str) -> wire::StringMatch {
    wire::StringMatch {
        match_type: Some(MatchType::Prefix(s.into())),
    }
}

fn suffix(s: &str) -> wire::StringMatch {
    wire::StringMatch {
        match_type: Some(MatchType::Suffix(s.into())),
    }
}

fn gateway(ns: &str, name: &str) -> l7::Target {
    l7::Target {
        kind: Kind::Gateway as i32,
        namespace: ns.into(),
        name: name.into(),
    }
}

/// Attached to the `shop/waypoint` Gateway; one rule with one clause holding `matches`.
fn policy(name: &str, action: wire::Action, matches: Vec<l7::Match>) -> Policy {
    Policy::try_from(l7::Authorization {
        name: name.into(),
        namespace: "shop".into(),
        targets: vec![gateway("shop", "waypoint")],
        action: action as i32,
        rules: vec![l7::Rule {
            clauses: vec![l7::Clause { matches }],
        }],
        ..Default::default()
    })
    .unwrap()
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    map
}

fn l4(port: u16) -> L4Request<'static> {
    L4Request {
        source_identity: None,
        source_ip: ip("10.0.0.1"),
        destination_ip: ip("10.0.1.5"),
        destination_port: port,
    }
}

fn http<'a>(method: &'a str, path: &'a str, headers: &'a HeaderMap) -> HttpRequest<'a> {
    HttpRequest {
        host: "shop.example.com",
        method,
        path,
        headers,
        remote_ip: ip("192.0.2.7"),
    }
}

/// An HTTP request on port 8080.
fn on_8080(http: HttpRequest<'_>) -> Request<'_> {
    Request {
        l4: l4(8080),
        http: Some(http),
    }
}

/// Opaque TCP to `port`: only L4 is known.
fn tcp(port: u16) -> Request<'static> {
    Request {
        l4: l4(port),
        http: None,
    }
}

fn allowed(policies: &[Policy], request: &Request<'_>) -> bool {
    evaluate_request(policies, request).decision.is_allowed()
}

#[test]
fn an_allow_on_get_admits_get_and_refuses_post() {
    let p = [policy(
        "read-only",
        wire::Action::Allow,
        vec![l7::Match {
            methods: vec![exact("GET")],
            ..Default::default()
        }],
    )];
    let h = HeaderMap::new();
    assert!(allowed(&p, &on_8080(http("GET", "/", &h))));
    assert_eq!(
        evaluate_request(&p, &on_8080(http("POST", "/", &h))).decision,
        Decision::Deny {
            by: "shop/read-only".into(),
            reason: "no rule of the ALLOW policies shop/read-only matches".into()
        }
    );
    assert!(
        !allowed(&p, &on_8080(http("get", "/", &h))),
        "methods are case-sensitive"
    );
}

#[test]
fn a_deny_on_a_path_prefix_refuses_only_that_prefix() {
    let p = [policy(
        "no-admin",
        wire::Action::Deny,
        vec![l7::Match {
            paths: vec![prefix("/admin/")],
            ..Default::default()
        }],
    )];
    let h = HeaderMap::new();
    assert!(!allowed(&p, &on_8080(http("GET", "/admin/users", &h))));
    assert!(allowed(&p, &on_8080(http("GET", "/admin", &h))));
    assert!(allowed(&p, &on_8080(http("GET", "/public/admin/", &h))));
    assert!(
        allowed(&p, &on_8080(http("GET", "/Admin/users", &h))),
        "paths are case-sensitive"
    );
}

#[test]
fn exact_suffix_and_negated_paths() {
    let p = [policy(
        "static",
        wire::Action::Allow,
        vec![l7::Match {
            paths: vec![exact("/"), suffix(".css")],
            not_paths: vec![exact("/private.css")],
            ..Default::default()
        }],
    )];
    let h = HeaderMap::new();
    assert!(allowed(&p, &on_8080(http("GET", "/", &h))));
    assert!(allowed(&p, &on_8080(http("GET", "/site.css", &h))));
    assert!(!allowed(&p, &on_8080(http("GET", "/private.css", &h))));
    assert!(!allowed(&p, &on_8080(http("GET", "/index.html", &h))));
}

#[test]
fn header_conditions_match_any_value_and_not_values_excludes() {
    let p = [policy(
        "prod-not-canary",
        wire::Action::Allow,
        vec![l7::Match {
            headers: vec![l7::HeaderMatch {
                name: "x-env".into(),
                values: vec![exact("prod")],
                not_values: vec![exact("canary")],
            }],
            ..Default::default()
        }],
    )];
    let one = headers(&[("x-env", b"prod")]);
    assert!(allowed(&p, &on_8080(http("GET", "/", &one))));
    let several = headers(&[("x-env", b"dev"), ("x-env", b"prod")]);
    assert!(
        allowed(&p, &on_8080(http("GET", "/", &several))),
        "any value may match"
    );
    let excluded = headers(&[("x-env", b"prod"), ("x-env", b"canary")]);
    assert!(
        !allowed(&p, &on_8080(http("GET", "/", &excluded))),
        "no value may be excluded"
    );
    let other = headers(&[("x-env", b"dev")]);
    assert!(!allowed(&p, &on_8080(http("GET", "/", &other))));
    let sent_capitalised = headers(&[("X-Env", b"prod")]);
    assert!(
        allowed(&p, &on_8080(http("GET", "/", &sent_capitalised))),
        "header names have no case"
    );
}

#[test]
fn a_missing_header_fails_values_and_passes_not_values() {
    let condition = |values, not_values| {
        [policy(
            "h",
            wire::Action::Allow,
            vec![l7::Match {
                headers: vec![l7::HeaderMatch {
                    name: "x-env".into(),
                    values,
                    not_values,
                }],
                ..Default::default()
            }],
        )]
    };
    let none = HeaderMap::new();
    let presence = wire::StringMatch {
        match_type: Some(MatchType::Presence(())),
    };
    assert!(!allowed(
        &condition(vec![presence], vec![]),
        &on_8080(http("GET", "/", &none))
    ));
    assert!(allowed(
        &condition(vec![], vec![exact("canary")]),
        &on_8080(http("GET", "/", &none))
    ));
}

#[test]
fn a_header_value_that_is_not_utf8_is_compared_as_bytes() {
    let p = [policy(
        "no-admins",
        wire::Action::Deny,
        vec![l7::Match {
            headers: vec![l7::HeaderMatch {
                name: "x-user".into(),
                values: vec![prefix("admin")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    )];
    let sneaky = headers(&[("x-user", b"admin\xff")]);
    assert!(
        !allowed(&p, &on_8080(http("GET", "/", &sneaky))),
        "a non-UTF-8 tail must not slip past a prefix"
    );
    let other = headers(&[("x-user", b"\xffadmin")]);
    assert!(allowed(&p, &on_8080(http("GET", "/", &other))));
}

#[test]
fn hosts_match_without_case() {
    let p = [policy(
        "shop-hosts",
        wire::Action::Allow,
        vec![l7::Match {
            hosts: vec![exact("shop.example.com"), suffix(".Example.org")],
            not_hosts: vec![exact("ADMIN.example.org")],
            ..Default::default()
        }],
    )];
    let h = HeaderMap::new();
    let to = |host| HttpRequest {
        host,
        ..http("GET", "/", &h)
    };
    assert!(allowed(&p, &on_8080(to("SHOP.Example.COM"))));
    assert!(allowed(&p, &on_8080(to("api.example.ORG"))));
    assert!(!allowed(&p, &on_8080(to("admin.example.org"))));
    assert!(!allowed(&p, &on_8080(to("other.com"))));
    assert!(!allowed(&p, &on_8080(to(""))), "an empty host is absent");
}

#[test]
fn remote_ips_are_compared_with_the_original_client() {
    let p = [policy(
        "from-office",
        wire::Action::Allow,
        vec![l7::Match {
            remote_ips: vec![cidr("192.0.2.0/24")],
            not_remote_ips: vec![cidr("192.0.2.66/32")],
            ..Default::default()
        }],
    )];
    let h = HeaderMap::new();
    let from = |remote| HttpRequest {
        remote_ip: ip(remote),
        ..http("GET", "/", &h)
    };
    assert!(allowed(&p, &on_8080(from("192.0.2.7"))));
    assert!(!allowed(&p, &on_8080(from("192.0.2.66"))));
    assert!(
        !allowed(&p, &on_8080(from("10.0.0.1"))),
        "the peer's address is not the client's"
    );
}

#[test]
fn an_l7_allow_rule_allows_nothing_when_only_l4_is_known() {
    let p = [policy(
        "get-only",
        wire::Action::Allow,
        vec![l7::Match {
            methods: vec![exact("GET")],
            ..Default::default()
        }],
    )];
    assert!(!allowed(&p, &tcp(8080)));
    assert!(!evaluate(&p, &l4(8080)).decision.is_allowed());
    let negated = [policy(
        "not-delete",
        wire::Action::Allow,
        vec![l7::Match {
            not_methods: vec![exact("DELETE")],
            ..Default::default()
        }],
    )];
    assert!(
        !allowed(&negated, &tcp(8080)),
        "a negated condition is not known to hold either"
    );
    let l4_rule_too = Policy::try_from(l7::Authorization {
        name: "get-or-port-9000".into(),
        namespace: "shop".into(),
        targets: vec![gateway("shop", "waypoint")],
        action: wire::Action::Allow as i32,
        rules: vec![
            l7::Rule {
                clauses: vec![l7::Clause {
                    matches: vec![l7::Match {
                        methods: vec![exact("GET")],
                        ..Default::default()
                    }],
                }],
            },
            l7::Rule {
                clauses: vec![l7::Clause {
                    matches: vec![l7::Match {
                        l4: Some(wire::Match {
                            destination_ports: vec![9000],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                }],
            },
        ],
        ..Default::default()
    })
    .unwrap();
    let p = [l4_rule_too];
    assert!(allowed(&p, &tcp(9000)), "an L4-only rule still allows");
    assert!(!allowed(&p, &tcp(8080)));
}

#[test]
fn an_l7_deny_rule_denies_on_its_l4_part_when_only_l4_is_known() {
    let p = [policy(
        "no-admin-on-9090",
        wire::Action::Deny,
        vec![l7::Match {
            l4: Some(wire::Match {
                destination_ports: vec![9090],
                ..Default::default()
            }),
            paths: vec![prefix("/admin")],
            ..Default::default()
        }],
    )];
    assert_eq!(
        evaluate_request(&p, &tcp(9090)).decision,
        Decision::Deny {
            by: "shop/no-admin-on-9090".into(),
            reason: "denied by DENY policy shop/no-admin-on-9090".into()
        }
    );
    assert!(allowed(&p, &tcp(8080)), "its L4 part still has to hold");
    let h = HeaderMap::new();
    let public_on_9090 = Request {
        l4: l4(9090),
        http: Some(http("GET", "/public", &h)),
    };
    assert!(allowed(&p, &public_on_9090), "known HTTP is compared");
    let negated = [policy(
        "deny-non-get",
        wire::Action::Deny,
        vec![l7::Match {
            not_methods: vec![exact("GET")],
            ..Default::default()
        }],
    )];
    assert!(!allowed(&negated, &tcp(8080)));
}

#[test]
fn l4_policies_decide_http_requests_on_their_l4_part() {
    let p = [super::policy(
        "deny-9090",
        wire::Action::Deny,
        vec![wire::Match {
            destination_ports: vec![9090],
            ..Default::default()
        }],
    )];
    let h = HeaderMap::new();
    let get = http("GET", "/", &h);
    assert!(allowed(&p, &on_8080(get)));
    assert!(!allowed(
        &p,
        &Request {
            l4: l4(9090),
            http: Some(get)
        }
    ));
    assert!(!p[0].rules[0].clauses[0].matches[0].needs_http());
}

#[test]
fn the_l4_part_of_a_waypoint_match_compares_the_tunnel_peer() {
    let p = [policy(
        "frontend-gets",
        wire::Action::Allow,
        vec![l7::Match {
            l4: Some(wire::Match {
                principals: vec![exact("spiffe://cluster.local/ns/shop/sa/frontend")],
                ..Default::default()
            }),
            methods: vec![exact("GET")],
            ..Default::default()
        }],
    )];
    assert!(p[0].rules[0].clauses[0].matches[0].needs_http());
    let h = HeaderMap::new();
    let frontend = id("shop", "frontend");
    let admin = id("shop", "admin");
    let from = |peer| Request {
        l4: L4Request {
            source_identity: Some(peer),
            ..l4(8080)
        },
        http: Some(http("GET", "/", &h)),
    };
    assert!(allowed(&p, &from(&frontend)));
    assert!(!allowed(&p, &from(&admin)));
}

#[test]
fn a_policy_applies_through_its_service_gateway_or_class_targets() {
    let with = |targets| {
        Policy::try_from(l7::Authorization {
            name: "p".into(),
            namespace: "shop".into(),
            targets,
            action: wire::Action::Allow as i32,
            ..Default::default()
        })
        .unwrap()
    };
    let service = |ns: &str, name: &str| l7::Target {
        kind: Kind::Service as i32,
        namespace: ns.into(),
        name: name.into(),
    };
    let waypoint = ("shop", "waypoint");

    let to_cart = with(vec![service("shop", "cart")]);
    assert_eq!(to_cart.scope, Scope::Targets);
    assert_eq!(
        to_cart.targets,
        vec![Target::Service {
            namespace: "shop".into(),
            name: "cart".into()
        }]
    );
    assert!(to_cart.applies_through(waypoint, Some(("shop", "cart"))));
    assert!(!to_cart.applies_through(waypoint, Some(("shop", "orders"))));
    assert!(!to_cart.applies_through(waypoint, Some(("other", "cart"))));
    assert!(!to_cart.applies_through(waypoint, None));

    let through_gateway = with(vec![gateway("shop", "waypoint")]);
    assert!(through_gateway.applies_through(waypoint, None));
    assert!(through_gateway.applies_through(waypoint, Some(("shop", "cart"))));
    assert!(!through_gateway.applies_through(("shop", "other-waypoint"), None));

    let everywhere = with(vec![l7::Target {
        kind: Kind::GatewayClass as i32,
        ..Default::default()
    }]);
    assert_eq!(everywhere.targets, vec![Target::AllWaypoints]);
    assert!(everywhere.applies_through(("any", "waypoint"), None));
    // At an ingress gateway only the policies that target that Gateway apply: the
    // GatewayClass target is every waypoint, and services are chosen by routes there.
    assert!(!everywhere.applies_at_ingress(("shop", "web")));
    assert!(through_gateway.applies_at_ingress(waypoint));
    assert!(!to_cart.applies_at_ingress(waypoint));

    let either = with(vec![service("shop", "cart"), gateway("shop", "edge")]);
    assert!(either.applies_through(waypoint, Some(("shop", "cart"))));
    assert!(either.applies_through(("shop", "edge"), None));
    assert!(!either.applies_through(waypoint, None));

    assert!(
        !everywhere.applies_to("shop", &["shop/p".to_string()]),
        "a waypoint policy is never a workload's"
    );
    let workload_policy = super::policy("p", wire::Action::Allow, vec![]);
    assert!(
        !workload_policy.applies_through(waypoint, None),
        "a workload's policy never applies through a waypoint"
    );
}

#[test]
fn a_waypoint_policy_keeps_http_strings_as_written() {
    let p = policy(
        "p",
        wire::Action::Allow,
        vec![l7::Match {
            paths: vec![exact("spiffe://not-a-principal")],
            ..Default::default()
        }],
    );
    let m = &p.rules[0].clauses[0].matches[0];
    assert_eq!(
        m.paths,
        vec![StringMatch::Exact("spiffe://not-a-principal".into())]
    );
    assert!(m.principals.is_empty(), "absent l4 means no L4 condition");
}

#[test]
fn malformed_waypoint_policies_are_refused_with_the_field() {
    let base = || l7::Authorization {
        name: "bad".into(),
        namespace: "shop".into(),
        targets: vec![gateway("shop", "waypoint")],
        ..Default::default()
    };
    let with_targets = |targets| l7::Authorization { targets, ..base() };
    let with_match = |m: l7::Match| l7::Authorization {
        rules: vec![l7::Rule {
            clauses: vec![l7::Clause { matches: vec![m] }],
        }],
        ..base()
    };
    let header = |name: &str| l7::HeaderMatch {
        name: name.into(),
        values: vec![exact("x")],
        ..Default::default()
    };
    let target = |kind: i32, ns: &str, name: &str| l7::Target {
        kind,
        namespace: ns.into(),
        name: name.into(),
    };
    let cases = [
        (with_targets(vec![]), "targets", "at least one target"),
        (
            with_targets(vec![target(Kind::Service as i32, "shop", "")]),
            "targets[0].name",
            "required",
        ),
        (
            with_targets(vec![target(Kind::Gateway as i32, "", "waypoint")]),
            "targets[0].namespace",
            "required",
        ),
        (
            with_targets(vec![
                gateway("shop", "waypoint"),
                target(Kind::GatewayClass as i32, "istio-system", ""),
            ]),
            "targets[1].namespace",
            "every waypoint",
        ),
        (
            with_targets(vec![target(
                Kind::GatewayClass as i32,
                "",
                "istio-waypoint",
            )]),
            "targets[0].name",
            "every waypoint",
        ),
        (
            with_targets(vec![target(9, "shop", "x")]),
            "targets[0].kind",
            "unknown value 9",
        ),
        (
            l7::Authorization {
                rules: vec![l7::Rule {
                    clauses: vec![
                        l7::Clause::default(),
                        l7::Clause {
                            matches: vec![l7::Match {
                                headers: vec![header("x-a"), header("x-b"), header("X-Env")],
                                ..Default::default()
                            }],
                        },
                    ],
                }],
                ..base()
            },
            "rules[0].clauses[1].matches[0].headers[2].name",
            "\"x-env\"",
        ),
        (
            with_match(l7::Match {
                headers: vec![header("")],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].headers[0].name",
            "required",
        ),
        (
            with_match(l7::Match {
                headers: vec![header("x env")],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].headers[0].name",
            "not a valid HTTP header name",
        ),
        (
            with_match(l7::Match {
                headers: vec![header(":path")],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].headers[0].name",
            "pseudo-header",
        ),
        (
            with_match(l7::Match {
                headers: vec![l7::HeaderMatch {
                    name: "x-env".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].headers[0].values",
            "values or not_values",
        ),
        (
            with_match(l7::Match {
                headers: vec![l7::HeaderMatch {
                    name: "x-env".into(),
                    not_values: vec![wire::StringMatch { match_type: None }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].headers[0].not_values[0]",
            "no match type",
        ),
        (
            with_match(l7::Match {
                l4: Some(wire::Match {
                    destination_ports: vec![70000],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].l4.destination_ports[0]",
            "not a port",
        ),
        (
            with_match(l7::Match {
                remote_ips: vec![wire::Address {
                    address: vec![1, 2, 3].into(),
                    length: 8,
                }],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].remote_ips[0]",
            "expected 4 or 16",
        ),
        (
            with_match(l7::Match {
                not_hosts: vec![exact("ok.example.com"), exact("shop.example.com:8080")],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].not_hosts[1]",
            "has a port",
        ),
        (
            with_match(l7::Match {
                methods: vec![wire::StringMatch { match_type: None }],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].methods[0]",
            "no match type",
        ),
        (
            l7::Authorization {
                action: 7,
                ..base()
            },
            "action",
            "unknown value 7",
        ),
        (
            l7::Authorization {
                name: String::new(),
                ..base()
            },
            "name",
            "required",
        ),
    ];
    for (input, field, why) in cases {
        let err = Policy::try_from(input).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.reason.contains(why), "{err}");
        assert!(err.to_string().contains(field));
    }
}

#[test]
fn ipv6_literal_hosts_are_not_mistaken_for_ports() {
    let p = policy(
        "v6",
        wire::Action::Allow,
        vec![l7::Match {
            hosts: vec![exact("[2001:db8::1]")],
            ..Default::default()
        }],
    );
    let h = HeaderMap::new();
    let to_v6 = HttpRequest {
        host: "[2001:DB8::1]",
        ..http("GET", "/", &h)
    };
    assert!(allowed(&[p], &on_8080(to_v6)));
}
