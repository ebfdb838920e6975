//! Name resolution from the mesh state, and the wire answers a pod's resolver gets.

use std::path::Path;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use super::*;
use crate::state::file_source;

const MESH: &str = r#"
workloads:
  - uid: shop/db-0
    name: db-0
    namespace: shop
    addresses: [10.2.0.7]
    protocol: HBONE
    services:
      shop/db.shop.svc.cluster.local: [{servicePort: 5432, targetPort: 5432}]
  - uid: shop/db-1
    name: db-1
    namespace: shop
    addresses: [10.2.0.8]
    protocol: HBONE
    status: Unhealthy
    services:
      shop/db.shop.svc.cluster.local: [{servicePort: 5432, targetPort: 5432}]
services:
  - name: reviews
    namespace: shop
    hostname: reviews.shop.svc.cluster.local
    vips: [10.96.0.10, "fd00::10"]
    ports: [{servicePort: 9080, targetPort: 8080}]
  - name: ratings
    namespace: other
    hostname: ratings.other.svc.cluster.local
    vips: [10.96.0.11]
    ports: [{servicePort: 9080, targetPort: 8080}]
  - name: db
    namespace: shop
    hostname: db.shop.svc.cluster.local
    ports: [{servicePort: 5432, targetPort: 5432}]
  - name: payments
    namespace: shop
    hostname: api.payments.example
    vips: [240.240.3.4]
    ports: [{servicePort: 443, targetPort: 443}]
"#;

fn snapshot() -> Snapshot {
    file_source::parse(MESH, Path::new("mesh.yaml")).unwrap()
}

fn found(ips: &[&str]) -> Resolution {
    Resolution::Found(ips.iter().map(|ip| ip.parse().unwrap()).collect())
}

#[test]
fn service_names_resolve_in_every_form_a_pod_may_use() {
    let snap = snapshot();
    let both = found(&["10.96.0.10", "fd00::10"]);
    for name in [
        "reviews",
        "reviews.shop",
        "reviews.shop.svc",
        "reviews.shop.svc.cluster.local",
        // Search-list expansions of the shorter forms.
        "reviews.shop.shop.svc.cluster.local",
        "reviews.shop.svc.svc.cluster.local",
    ] {
        assert_eq!(
            resolve(&snap, name, "shop", "cluster.local"),
            both,
            "{name}"
        );
    }
    assert_eq!(
        resolve(&snap, "ratings.other", "shop", "cluster.local"),
        found(&["10.96.0.11"])
    );
}

#[test]
fn service_entry_hosts_resolve_as_written_and_through_the_search_list() {
    let snap = snapshot();
    for name in [
        "api.payments.example",
        "api.payments.example.shop.svc.cluster.local",
        "api.payments.example.svc.cluster.local",
    ] {
        assert_eq!(
            resolve(&snap, name, "shop", "cluster.local"),
            found(&["240.240.3.4"]),
            "{name}"
        );
    }
    assert_eq!(
        resolve(&snap, "other.payments.example", "shop", "cluster.local"),
        Resolution::NotOurs
    );
}

#[test]
fn short_names_are_relative_to_the_asking_pods_namespace() {
    let snap = snapshot();
    assert_eq!(
        resolve(&snap, "ratings", "other", "cluster.local"),
        found(&["10.96.0.11"])
    );
    assert_eq!(
        resolve(&snap, "ratings", "shop", "cluster.local"),
        Resolution::NotOurs
    );
}

#[test]
fn headless_service_resolves_to_its_healthy_endpoints() {
    assert_eq!(
        resolve(&snapshot(), "db", "shop", "cluster.local"),
        found(&["10.2.0.7"])
    );
}

#[test]
fn unknown_cluster_names_are_nxdomain_and_other_names_are_forwarded() {
    let snap = snapshot();
    assert_eq!(
        resolve(
            &snap,
            "nope.shop.svc.cluster.local",
            "shop",
            "cluster.local"
        ),
        Resolution::NoSuchService
    );
    assert_eq!(
        resolve(&snap, "example.com", "shop", "cluster.local"),
        Resolution::NotOurs
    );
    assert_eq!(
        resolve(&snap, "www.example.com", "shop", "cluster.local"),
        Resolution::NotOurs
    );
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

fn context() -> DnsContext {
    DnsContext::new(
        Arc::default(),
        DnsSettings {
            upstreams: Vec::new(),
            ..DnsSettings::default()
        },
        "shop",
        "shop/frontend-0",
    )
}

fn decoded(answer: Action) -> Message {
    match answer {
        Action::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn a_and_aaaa_answers_carry_the_matching_vips_with_the_query_id() {
    let snap = snapshot();
    let request = query("reviews.", RecordType::A);
    let id = Message::from_vec(&request).unwrap().metadata.id;
    let reply = decoded(answer(&snap, &context(), &request));
    assert_eq!(reply.metadata.id, id);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    let ips: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ips, ["10.96.0.10"]);

    let reply = decoded(answer(
        &snap,
        &context(),
        &query("reviews.shop.svc.cluster.local.", RecordType::AAAA),
    ));
    let ips: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ips, ["fd00::10"]);

    // A name we know with a type we have nothing for: no error, no answers.
    let reply = decoded(answer(
        &snap,
        &context(),
        &query("reviews.", RecordType::MX),
    ));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
}

#[test]
fn unknown_service_gets_nxdomain_and_outside_names_are_forwarded() {
    let snap = snapshot();
    let reply = decoded(answer(
        &snap,
        &context(),
        &query("gone.shop.svc.cluster.local.", RecordType::A),
    ));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        answer(&snap, &context(), &query("example.com.", RecordType::A)),
        Action::Forward
    );
}

#[test]
fn garbage_is_refused_without_a_panic() {
    let snap = snapshot();
    assert_eq!(answer(&snap, &context(), b""), Action::Drop);
    assert_eq!(answer(&snap, &context(), b"\x01\x02"), Action::Drop);
    let reply = decoded(answer(
        &snap,
        &context(),
        b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff",
    ));
    assert_eq!(reply.metadata.id, 0xabcd);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn resolv_conf_nameservers_become_upstreams() {
    let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fd00::53\nnameserver bogus\noptions ndots:5\n";
    let upstreams: Vec<String> = parse_resolv_conf(text)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(upstreams, ["10.0.0.2:53", "[fd00::53]:53"]);
}
