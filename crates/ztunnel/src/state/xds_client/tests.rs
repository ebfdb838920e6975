//! The xDS client without a network: answers merged and served, the snapshot file loaded
//! stale through the same validation (and refused whole when anything in it is bad), the
//! reconnect delays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use xds::google::protobuf::Any;

use super::*;

fn workload(uid: &str, ip: [u8; 4]) -> Resource {
    let w = wire::Workload {
        uid: uid.into(),
        name: uid.rsplit('/').next().unwrap_or(uid).into(),
        namespace: "shop".into(),
        addresses: vec![ip.to_vec().into()],
        tunnel_protocol: wire::TunnelProtocol::Hbone as i32,
        ..Default::default()
    };
    let address = wire::Address {
        r#type: Some(wire::address::Type::Workload(w)),
    };
    Resource {
        name: uid.into(),
        version: format!("v1-{uid}"),
        resource: Some(Any {
            type_url: xds::ADDRESS_TYPE_URL.into(),
            value: address.encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn deny_policy(name: &str) -> Resource {
    let policy = sec::Authorization {
        name: name.into(),
        namespace: "shop".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        rules: vec![sec::Rule {
            clauses: vec![sec::Clause {
                matches: vec![sec::Match {
                    destination_ports: vec![9090],
                    ..Default::default()
                }],
            }],
        }],
        ..Default::default()
    };
    Resource {
        name: format!("shop/{name}"),
        version: "p1".into(),
        resource: Some(Any {
            type_url: xds::AUTHORIZATION_TYPE_URL.into(),
            value: policy.encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn response(type_url: &str, resources: Vec<Resource>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        resources,
        ..Default::default()
    }
}

/// What a client holds after the control plane sent two workloads and a DENY policy.
fn synced(store: &Store) -> Held {
    let mut held = Held::default();
    let addresses = response(
        xds::ADDRESS_TYPE_URL,
        vec![
            workload("shop/a", [10, 1, 0, 2]),
            workload("shop/b", [10, 1, 0, 3]),
        ],
    );
    assert!(receive(&mut held, &addresses, store).unwrap());
    assert!(!store.loaded(), "served only once both types answered");
    let policies = response(xds::AUTHORIZATION_TYPE_URL, vec![deny_policy("no-admin")]);
    receive(&mut held, &policies, store).unwrap();
    assert!(store.loaded());
    held
}

#[test]
fn a_bad_resource_is_nacked_and_the_good_ones_are_served() {
    let store = Store::default();
    let mut held = synced(&store);
    let mut bad = workload("shop/c", [10, 1, 0, 4]);
    bad.resource.as_mut().unwrap().value = vec![0xff, 0xff];
    let update = response(
        xds::ADDRESS_TYPE_URL,
        vec![bad, workload("shop/d", [10, 1, 0, 5])],
    );
    let (applied, error) = receive(&mut held, &update, &store).unwrap_err();
    assert!(applied);
    assert!(error.to_string().starts_with("shop/c: "), "{error}");
    let snap = store.load();
    assert!(snap.workload("shop/d").is_some());
    assert!(snap.workload("shop/c").is_none());
    assert_eq!(held.versions(xds::ADDRESS_TYPE_URL).len(), 3);
}

#[test]
fn a_conflicting_update_changes_nothing() {
    let store = Store::default();
    let mut held = synced(&store);
    let clash = response(
        xds::ADDRESS_TYPE_URL,
        vec![workload("shop/c", [10, 1, 0, 2])],
    );
    let (applied, error) = receive(&mut held, &clash, &store).unwrap_err();
    assert!(!applied);
    assert!(matches!(error, SessionError::Conflict(_)), "{error}");
    assert!(store.load().workload("shop/c").is_none());
    assert!(!held.versions(xds::ADDRESS_TYPE_URL).contains_key("shop/c"));
}

#[tokio::test]
async fn the_snapshot_file_is_served_stale_with_the_versions_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.snapshot");
    let held = synced(&Store::default());
    snapshot_file::write(&path, &snapshot_file::encode(&held.contents())).unwrap();

    let store = Store::default();
    let loaded = load(&path, &store).await.unwrap().expect("a snapshot");
    assert!(store.loaded() && store.is_stale());
    let snap = store.load();
    assert!(snap.workload("shop/a").is_some() && snap.workload("shop/b").is_some());
    assert_eq!(snap.policies().len(), 1, "the DENY policy is in force");
    // The versions the control plane is told on connecting are the ones it sent.
    assert_eq!(
        loaded.versions(xds::ADDRESS_TYPE_URL),
        held.versions(xds::ADDRESS_TYPE_URL)
    );
    assert_eq!(
        loaded.versions(xds::AUTHORIZATION_TYPE_URL)["shop/no-admin"],
        "p1"
    );
}

#[tokio::test]
async fn a_snapshot_file_with_one_refused_resource_is_ignored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.snapshot");
    let mut policy = deny_policy("no-admin");
    policy.resource.as_mut().unwrap().value = vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff];
    let contents = vec![
        (
            xds::ADDRESS_TYPE_URL.to_owned(),
            vec![Arc::new(workload("shop/a", [10, 1, 0, 2]))],
        ),
        (
            xds::AUTHORIZATION_TYPE_URL.to_owned(),
            vec![Arc::new(policy)],
        ),
    ];
    snapshot_file::write(&path, &snapshot_file::encode(&contents)).unwrap();
    let store = Store::default();
    let error = load(&path, &store).await.unwrap_err();
    assert!(
        matches!(error, SnapshotFileError::Refused { .. })
            && error.to_string().contains("shop/no-admin"),
        "{error}"
    );
    assert!(!store.loaded(), "nothing is served from a refused file");
}

#[tokio::test]
async fn a_damaged_or_incomplete_snapshot_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.snapshot");
    let store = Store::default();
    std::fs::write(&path, b"\x00\x01garbage").unwrap();
    let error = load(&path, &store).await.unwrap_err();
    assert!(
        matches!(error, SnapshotFileError::NotASnapshot { .. }),
        "{error}"
    );
    let only_addresses = vec![(
        xds::ADDRESS_TYPE_URL.to_owned(),
        vec![Arc::new(workload("shop/a", [10, 1, 0, 2]))],
    )];
    snapshot_file::write(&path, &snapshot_file::encode(&only_addresses)).unwrap();
    let error = load(&path, &store).await.unwrap_err();
    assert!(error.to_string().contains("every resource type"), "{error}");
    assert!(!store.loaded());
    assert!(
        load(&dir.path().join("absent"), &store)
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn reconnect_delays_grow_while_the_control_plane_is_away_and_restart_after_an_answer() {
    let mut backoff = Backoff::with_seed(RETRY_BASE, RETRY_CAP, 11);
    let away: Vec<_> = (0..20).map(|_| retry_delay(&mut backoff, false)).collect();
    assert!(
        away.iter().all(|d| *d >= RETRY_BASE && *d <= RETRY_CAP),
        "{away:?}"
    );
    assert!(
        away[10..].iter().sum::<Duration>() > Duration::from_secs(15),
        "no longer retrying every 400 ms: {away:?}"
    );
    let after_answer = retry_delay(&mut backoff, true);
    assert!(after_answer <= RETRY_BASE * 3, "{after_answer:?}");
}

#[test]
fn a_refused_resource_names_itself_and_why_and_waits_for_an_operator() {
    let store = Store::default();
    let mut held = synced(&store);
    let empty = Resource {
        name: "shop/e".into(),
        ..Default::default()
    };
    let (_, error) = receive(
        &mut held,
        &response(xds::ADDRESS_TYPE_URL, vec![empty]),
        &store,
    )
    .unwrap_err();
    assert_eq!(error.to_string(), "shop/e: no resource body");
    assert!(!error.is_retriable(), "the same update fails again");
    let lost = SessionError::from(xds::XdsError::Stream(tonic::Status::unavailable("reset")));
    assert!(lost.is_retriable(), "{lost}");
}
