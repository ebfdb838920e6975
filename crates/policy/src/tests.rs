//! Istio's L4 authorization semantics, table by table, on policies built in wire form
//! (so conversion is exercised too).

use std::net::IpAddr;

use xds::security as wire;
use xds::security::string_match::MatchType;

use super::*;

mod l7;

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn req<'a>(src: Option<&'a SpiffeId>, src_ip: &str, port: u16) -> L4Request<'a> {
    L4Request {
        source_identity: src,
        source_ip: ip(src_ip),
        destination_ip: ip("10.0.1.5"),
        destination_port: port,
    }
}

fn exact(s: &str) -> wire::StringMatch {
    wire::StringMatch {
        match_type: Some(MatchType::Exact(s.into())),
    }
}

fn cidr(s: &str) -> wire::Address {
    let net: ipnet::IpNet = s.parse().unwrap();
    let address = match net.addr() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    wire::Address {
        address: address.into(),
        length: u32::from(net.prefix_len()),
    }
}

/// One rule with one clause holding `matches`.
fn policy(name: &str, action: wire::Action, matches: Vec<wire::Match>) -> Policy {
    Policy::try_from(wire::Authorization {
        name: name.into(),
        namespace: "shop".into(),
        scope: wire::Scope::Namespace as i32,
        action: action as i32,
        rules: vec![wire::Rule {
            clauses: vec![wire::Clause { matches }],
        }],
        ..Default::default()
    })
    .unwrap()
}

fn allowed(policies: &[Policy], request: &L4Request<'_>) -> bool {
    evaluate(policies, request).decision.is_allowed()
}

#[test]
fn no_policy_allows_everything() {
    assert!(allowed(&[], &req(None, "10.0.0.1", 80)));
}

#[test]
fn allow_by_namespace_admits_only_that_namespace() {
    let p = [policy(
        "from-shop",
        wire::Action::Allow,
        vec![wire::Match {
            namespaces: vec![exact("shop")],
            ..Default::default()
        }],
    )];
    let shop = id("shop", "frontend");
    let other = id("other", "frontend");
    assert!(allowed(&p, &req(Some(&shop), "10.0.0.1", 80)));
    let verdict = evaluate(&p, &req(Some(&other), "10.0.0.1", 80));
    assert_eq!(
        verdict.decision,
        Decision::Deny {
            by: "shop/from-shop".into(),
            reason: "no rule of the ALLOW policies shop/from-shop matches".into()
        }
    );
    assert!(
        !allowed(&p, &req(None, "10.0.0.1", 80)),
        "plaintext has no namespace"
    );
}

#[test]
fn principals_match_with_or_without_the_scheme() {
    for written in [
        "cluster.local/ns/shop/sa/frontend",
        "spiffe://cluster.local/ns/shop/sa/frontend",
    ] {
        let p = [policy(
            "frontend-only",
            wire::Action::Allow,
            vec![wire::Match {
                principals: vec![exact(written)],
                ..Default::default()
            }],
        )];
        assert!(allowed(
            &p,
            &req(Some(&id("shop", "frontend")), "10.0.0.1", 80)
        ));
        assert!(!allowed(
            &p,
            &req(Some(&id("shop", "admin")), "10.0.0.1", 80)
        ));
    }
}

#[test]
fn prefix_suffix_and_presence() {
    let m = |sm: wire::StringMatch| {
        [policy(
            "p",
            wire::Action::Allow,
            vec![wire::Match {
                principals: vec![sm],
                ..Default::default()
            }],
        )]
    };
    let fe = id("shop", "frontend");
    let prefix = m(wire::StringMatch {
        match_type: Some(MatchType::Prefix("cluster.local/ns/shop/".into())),
    });
    assert!(allowed(&prefix, &req(Some(&fe), "10.0.0.1", 80)));
    assert!(!allowed(
        &prefix,
        &req(Some(&id("other", "frontend")), "10.0.0.1", 80)
    ));
    let suffix = m(wire::StringMatch {
        match_type: Some(MatchType::Suffix("/sa/frontend".into())),
    });
    assert!(allowed(
        &suffix,
        &req(Some(&id("other", "frontend")), "10.0.0.1", 80)
    ));
    let presence = m(wire::StringMatch {
        match_type: Some(MatchType::Presence(())),
    });
    assert!(allowed(&presence, &req(Some(&fe), "10.0.0.1", 80)));
    assert!(!allowed(&presence, &req(None, "10.0.0.1", 80)));
}

#[test]
fn deny_wins_over_allow() {
    let p = [
        policy(
            "allow-all",
            wire::Action::Allow,
            vec![wire::Match::default()],
        ),
        policy(
            "deny-admin-port",
            wire::Action::Deny,
            vec![wire::Match {
                destination_ports: vec![9090],
                ..Default::default()
            }],
        ),
    ];
    let fe = id("shop", "frontend");
    assert!(allowed(&p, &req(Some(&fe), "10.0.0.1", 8080)));
    let verdict = evaluate(&p, &req(Some(&fe), "10.0.0.1", 9090));
    assert_eq!(
        verdict.decision,
        Decision::Deny {
            by: "shop/deny-admin-port".into(),
            reason: "denied by DENY policy shop/deny-admin-port".into()
        }
    );
}

#[test]
fn source_and_destination_addresses_and_their_negations() {
    let p = [policy(
        "from-subnet",
        wire::Action::Allow,
        vec![wire::Match {
            source_ips: vec![cidr("10.0.0.0/24")],
            not_source_ips: vec![cidr("10.0.0.66/32")],
            destination_ips: vec![cidr("10.0.1.0/24")],
            ..Default::default()
        }],
    )];
    assert!(allowed(&p, &req(None, "10.0.0.7", 80)));
    assert!(!allowed(&p, &req(None, "10.0.0.66", 80)));
    assert!(!allowed(&p, &req(None, "10.9.0.7", 80)));
    let mut r = req(None, "10.0.0.7", 80);
    r.destination_ip = ip("10.0.2.5");
    assert!(!allowed(&p, &r));
}

#[test]
fn ports_and_not_ports() {
    let p = [policy(
        "web",
        wire::Action::Allow,
        vec![wire::Match {
            not_destination_ports: vec![8443],
            ..Default::default()
        }],
    )];
    assert!(allowed(&p, &req(None, "10.0.0.1", 80)));
    assert!(!allowed(&p, &req(None, "10.0.0.1", 8443)));
}

#[test]
fn service_accounts_and_their_negation() {
    let sa = |ns: &str, name: &str| wire::ServiceAccountMatch {
        namespace: ns.into(),
        service_account: name.into(),
    };
    let p = [policy(
        "sa",
        wire::Action::Allow,
        vec![wire::Match {
            service_accounts: vec![sa("shop", "frontend"), sa("shop", "checkout")],
            not_service_accounts: vec![sa("shop", "checkout")],
            ..Default::default()
        }],
    )];
    assert!(allowed(
        &p,
        &req(Some(&id("shop", "frontend")), "10.0.0.1", 80)
    ));
    assert!(!allowed(
        &p,
        &req(Some(&id("shop", "checkout")), "10.0.0.1", 80)
    ));
    assert!(!allowed(
        &p,
        &req(Some(&id("other", "frontend")), "10.0.0.1", 80)
    ));
}

#[test]
fn strict_mtls_as_a_deny_on_absent_principal_refuses_plaintext_only() {
    let p = [policy(
        "istio_converged_peer_authentication",
        wire::Action::Deny,
        vec![wire::Match {
            not_principals: vec![wire::StringMatch {
                match_type: Some(MatchType::Presence(())),
            }],
            ..Default::default()
        }],
    )];
    assert!(!allowed(&p, &req(None, "10.0.0.1", 80)));
    assert!(allowed(
        &p,
        &req(Some(&id("shop", "frontend")), "10.0.0.1", 80)
    ));
}

#[test]
fn clauses_are_and_ed_and_matches_or_ed() {
    let p = Policy::try_from(wire::Authorization {
        name: "shop-on-80-or-81".into(),
        namespace: "shop".into(),
        action: wire::Action::Allow as i32,
        rules: vec![wire::Rule {
            clauses: vec![
                wire::Clause {
                    matches: vec![wire::Match {
                        namespaces: vec![exact("shop")],
                        ..Default::default()
                    }],
                },
                wire::Clause {
                    matches: vec![
                        wire::Match {
                            destination_ports: vec![80],
                            ..Default::default()
                        },
                        wire::Match {
                            destination_ports: vec![81],
                            ..Default::default()
                        },
                    ],
                },
            ],
        }],
        ..Default::default()
    })
    .unwrap();
    let p = [p];
    let fe = id("shop", "frontend");
    assert!(allowed(&p, &req(Some(&fe), "10.0.0.1", 80)));
    assert!(allowed(&p, &req(Some(&fe), "10.0.0.1", 81)));
    assert!(!allowed(&p, &req(Some(&fe), "10.0.0.1", 82)));
    assert!(!allowed(&p, &req(Some(&id("other", "x")), "10.0.0.1", 80)));
}

#[test]
fn an_allow_policy_without_rules_allows_nothing_and_an_empty_rule_allows_all() {
    let nothing = Policy::try_from(wire::Authorization {
        name: "allow-nothing".into(),
        namespace: "shop".into(),
        action: wire::Action::Allow as i32,
        ..Default::default()
    })
    .unwrap();
    assert!(!allowed(&[nothing], &req(None, "10.0.0.1", 80)));
    let all = Policy::try_from(wire::Authorization {
        name: "allow-all".into(),
        namespace: "shop".into(),
        action: wire::Action::Allow as i32,
        rules: vec![wire::Rule::default()],
        ..Default::default()
    })
    .unwrap();
    assert!(allowed(&[all], &req(None, "10.0.0.1", 80)));
}

#[test]
fn dry_run_policies_are_reported_but_never_decide() {
    let mut deny = policy(
        "would-deny",
        wire::Action::Deny,
        vec![wire::Match::default()],
    );
    deny.dry_run = true;
    let verdict = evaluate(&[deny], &req(None, "10.0.0.1", 80));
    assert!(verdict.decision.is_allowed());
    assert_eq!(verdict.dry_run_matches, vec!["shop/would-deny".to_string()]);
}

#[test]
fn scope_decides_which_workloads_a_policy_applies_to() {
    let mut p = policy("p", wire::Action::Allow, vec![]);
    p.scope = Scope::Global;
    assert!(p.applies_to("anything", &[]));
    p.scope = Scope::Namespace;
    assert!(p.applies_to("shop", &[]));
    assert!(!p.applies_to("other", &[]));
    p.scope = Scope::WorkloadSelector;
    assert!(!p.applies_to("shop", &[]));
    assert!(p.applies_to("shop", &["shop/p".to_string()]));
    assert!(!p.applies_to("shop", &["other/p".to_string()]));
}

#[test]
fn malformed_wire_policies_are_refused_with_the_field() {
    let base = || wire::Authorization {
        name: "bad".into(),
        namespace: "shop".into(),
        ..Default::default()
    };
    let with_match = |m: wire::Match| wire::Authorization {
        rules: vec![wire::Rule {
            clauses: vec![wire::Clause { matches: vec![m] }],
        }],
        ..base()
    };
    let cases = [
        (
            with_match(wire::Match {
                source_ips: vec![wire::Address {
                    address: vec![1, 2, 3].into(),
                    length: 8,
                }],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].source_ips[0]",
        ),
        (
            with_match(wire::Match {
                destination_ips: vec![wire::Address {
                    address: vec![10, 0, 0, 0].into(),
                    length: 33,
                }],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].destination_ips[0]",
        ),
        (
            with_match(wire::Match {
                destination_ports: vec![70000],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].destination_ports[0]",
        ),
        (
            with_match(wire::Match {
                namespaces: vec![wire::StringMatch { match_type: None }],
                ..Default::default()
            }),
            "rules[0].clauses[0].matches[0].namespaces[0]",
        ),
        (
            wire::Authorization {
                action: 7,
                ..base()
            },
            "action",
        ),
        (
            wire::Authorization {
                name: String::new(),
                ..base()
            },
            "name",
        ),
    ];
    for (input, field) in cases {
        let err = Policy::try_from(input).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().contains(field));
    }
}
