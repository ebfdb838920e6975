//! Writes the seed corpora under `fuzz/corpus/<target>/`: a few realistic inputs per
//! target, made with the same encoders the real peers use (an h2 client, prost, hickory,
//! the control plane's compilation of `examples/demo`), so they stay right when the wire
//! types change. Run after changing a protocol:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bowline_fuzz::{hbone_connect::PREFACE, record};
use bytes::Bytes;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use http::{Method, Request};
use prost::Message as _;
use tokio::io::AsyncReadExt;
use xds::zds;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = fuzz.join("../examples/demo");
    let corpus = fuzz.join("corpus");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut written = 0;
    let mut write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        written += 1;
        Ok(())
    };

    // hbone_connect: what an h2 client writes after the preface.
    for (name, requests) in hbone_requests() {
        write(
            "hbone_connect",
            name,
            &runtime.block_on(h2_bytes(requests))?,
        )?;
    }

    // dns: queries as a pod's stub resolver sends them.
    for (name, qname, kind, edns) in [
        (
            "a_service_fqdn",
            "reviews.shop.svc.cluster.local.",
            RecordType::A,
            false,
        ),
        ("aaaa_short_name", "reviews.", RecordType::AAAA, false),
        (
            "a_headless_edns",
            "db.shop.svc.cluster.local.",
            RecordType::A,
            true,
        ),
        (
            "a_search_expansion",
            "ratings.other.shop.svc.cluster.local.",
            RecordType::A,
            false,
        ),
        (
            "nxdomain",
            "nope.shop.svc.cluster.local.",
            RecordType::A,
            false,
        ),
        ("forwarded", "example.com.", RecordType::A, true),
        ("txt_mesh_name", "reviews.shop.", RecordType::TXT, false),
    ] {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(qname)?, kind));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            message.edns = Some(e);
        }
        write("dns", name, &message.to_vec()?)?;
    }

    // zds: first byte 0 = ztunnel's side (requests), 1 = the agent's side (hello, acks).
    let request = |payload| zds::WorkloadRequest {
        payload: Some(payload),
    };
    let add = request(zds::workload_request::Payload::Add(zds::AddWorkload {
        uid: "Kubernetes//Pod/shop/frontend-0".into(),
        workload_info: Some(zds::WorkloadInfo {
            name: "frontend-0".into(),
            namespace: "shop".into(),
            service_account: "frontend".into(),
        }),
    }));
    let keep = request(zds::workload_request::Payload::Keep(zds::KeepWorkload {
        uid: "Kubernetes//Pod/shop/frontend-0".into(),
    }));
    let del = request(zds::workload_request::Payload::Del(zds::DelWorkload {
        uid: "Kubernetes//Pod/shop/frontend-0".into(),
    }));
    let sent = request(zds::workload_request::Payload::SnapshotSent(
        zds::SnapshotSent {},
    ));
    let mut snapshot = vec![0u8];
    snapshot.extend(record(1, &add.encode_to_vec()));
    snapshot.extend(record(0, &keep.encode_to_vec()));
    snapshot.extend(record(0, &sent.encode_to_vec()));
    snapshot.extend(record(0, &del.encode_to_vec()));
    write("zds", "ztunnel_snapshot_then_del", &snapshot)?;
    let mut no_fd = vec![0u8];
    no_fd.extend(record(0, &add.encode_to_vec()));
    no_fd.extend(record(0, &zds::WorkloadRequest::default().encode_to_vec()));
    write("zds", "ztunnel_add_without_fd_and_empty", &no_fd)?;
    let hello = zds::ZdsHello {
        version: zds::Version::V1 as i32,
    };
    let ack = |error: &str| zds::WorkloadResponse {
        payload: Some(zds::workload_response::Payload::Ack(zds::Ack {
            error: error.into(),
        })),
    };
    let mut agent = vec![1u8];
    agent.extend(record(0, &hello.encode_to_vec()));
    agent.extend(record(0, &ack("").encode_to_vec()));
    agent.extend(record(
        0,
        &ack("keep x: this ztunnel does not serve that pod").encode_to_vec(),
    ));
    agent.extend(record(0, &zds::WorkloadResponse::default().encode_to_vec()));
    agent.extend(record(0, &ack("").encode_to_vec()));
    write("zds", "agent_hello_and_acks", &agent)?;

    // config_yaml: the demo's files, the walkthrough's edits, ztunnel's local-file format.
    let mut demo_text = String::new();
    for file in sorted_yaml(&demo)?
        .into_iter()
        .chain(sorted_yaml(&demo.join("walkthrough"))?)
    {
        let text = std::fs::read_to_string(&file)?;
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("demo");
        write("config_yaml", &format!("demo_{name}"), text.as_bytes())?;
        if file.parent() == Some(demo.as_path()) {
            demo_text.push_str("\n---\n");
            demo_text.push_str(&text);
        }
    }
    write(
        "config_yaml",
        "ztunnel_local_mesh",
        bowline_fuzz::MESH_YAML.as_bytes(),
    )?;

    // xds_state: the control plane's compilation of the whole demo, as the resources a
    // ztunnel receives (tag 0 = Address, 1 = Authorization).
    // Pods get their addresses as the lab gives them (10.<node>.0.<n>; one dual-stack).
    let mut resources = config::parse_documents(&demo_text, "examples/demo")?;
    let mut n = 1;
    for resource in &mut resources {
        if let config::Resource::Pod(pod) = resource {
            n += 1;
            let node = if pod.spec.node_name.as_deref() == Some("node-2") {
                11
            } else {
                10
            };
            let ip = format!("10.{node}.0.{n}");
            pod.status.pod_ip = Some(ip.clone());
            if n == 2 {
                pod.status.pod_ips = [ip, format!("fd00:{node}::{n}")]
                    .into_iter()
                    .map(|ip| config::resources::PodIp { ip })
                    .collect();
            }
        }
    }
    // The same objects in the form `bowline ztunnel-config`/`apply` also read: JSON.
    let json: Vec<String> = resources.iter().map(|r| r.to_json().to_string()).collect();
    write(
        "config_yaml",
        "demo_as_json_with_pod_ips",
        json.join("\n---\n").as_bytes(),
    )?;
    let objects: BTreeMap<_, _> = resources.into_iter().map(|r| (r.key(), r)).collect();
    let compiled = compile(&objects);
    let mut all = Vec::new();
    let mut addresses = Vec::new();
    for address in compiled.addresses.values() {
        let r = record(0, &address.encode_to_vec());
        all.extend(&r);
        addresses.extend(r);
    }
    let mut authorizations = Vec::new();
    for authorization in compiled.authorizations.values() {
        let r = record(1, &authorization.encode_to_vec());
        all.extend(&r);
        authorizations.extend(r);
    }
    write("xds_state", "demo_addresses", &addresses)?;
    if !authorizations.is_empty() {
        write("xds_state", "demo_authorizations", &authorizations)?;
        write("xds_state", "demo_everything", &all)?;
    }
    let walkthrough =
        std::fs::read_to_string(demo.join("walkthrough/reviews-only-from-frontend.yaml"))?;
    let mut with_policy = objects.clone();
    for r in config::parse_documents(&walkthrough, "walkthrough")? {
        with_policy.insert(r.key(), r);
    }
    let compiled = compile(&with_policy);
    let mut policies = Vec::new();
    for authorization in compiled.authorizations.values() {
        policies.extend(record(1, &authorization.encode_to_vec()));
    }
    if let Some(reviews) = compiled
        .addresses
        .values()
        .find(|a| format!("{a:?}").contains("reviews"))
    {
        policies.extend(record(0, &reviews.encode_to_vec()));
    }
    write("xds_state", "walkthrough_policy", &policies)?;

    // waypoint_config: a waypoint bound to reviews, with a route and an L7 policy, as the
    // resources the waypoint receives (tag 0 = bowline.l7.v1.Authorization, 1 = RouteTable).
    let mut with_waypoint = objects.clone();
    for r in with_waypoint.values_mut() {
        if let config::Resource::Service(service) = r
            && service.metadata.name == "reviews"
        {
            service
                .metadata
                .labels
                .insert("istio.io/use-waypoint".into(), "waypoint".into());
        }
    }
    for r in config::parse_documents(WAYPOINT_YAML, "waypoint seeds")? {
        with_waypoint.insert(r.key(), r);
    }
    let compiled = compile(&with_waypoint);
    let mut l7 = Vec::new();
    for policy in compiled.l7_authorizations.values() {
        l7.extend(record(0, &policy.encode_to_vec()));
    }
    for table in compiled.route_tables.values() {
        l7.extend(record(1, &table.encode_to_vec()));
    }
    write("waypoint_config", "reviews_routes_and_policy", &l7)?;

    println!("wrote {written} seed files under {}", corpus.display());
    Ok(())
}

/// A waypoint for `shop`, a route and an L7 policy on `reviews`.
const WAYPOINT_YAML: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
    - matches:
        - path: {type: PathPrefix, value: /api}
          headers: [{name: x-version, value: v2}]
          queryParams: [{type: RegularExpression, name: v, value: "[0-9]+"}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-routed, value: "yes"}], remove: [x-debug]}
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
      backendRefs:
        - {name: reviews, port: 9080, weight: 90}
        - {name: db, port: 8080, weight: 10}
      timeouts: {request: 2s, backendRequest: 500ms}
      retry: {attempts: 2, codes: [503], backoff: 10ms}
    - matches: [{path: {type: Exact, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {hostname: reviews.example, statusCode: 301}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  rules:
    - to: [{operation: {methods: [GET], paths: ["/api/*"]}}]
      when: [{key: "request.headers[x-user]", values: [alice]}]
"#;

/// The control plane's compilation once every node agent reported its pods captured.
fn compile(
    objects: &BTreeMap<config::ObjectKey, config::Resource>,
) -> control_plane::translate::Compiled {
    use control_plane::translate::{Captured, MeshSettings, translate};
    let settings = MeshSettings::default();
    let before = translate(objects, &settings, &Captured::default());
    translate(
        objects,
        &settings,
        &bowline_fuzz::config_yaml::all_captured(&before),
    )
}

fn sorted_yaml(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// One request a seed carries: the request and an optional body (sent with END_STREAM).
type Hbone = (Request<()>, Option<&'static [u8]>);

fn connect(authority: &str, metadata: bool) -> Request<()> {
    let mut builder = Request::builder().method(Method::CONNECT).uri(authority);
    if metadata {
        builder = builder
            .header(
                "baggage",
                "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop",
            )
            .header("forwarded", "for=10.10.0.3")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
    }
    builder.body(()).expect("a valid request")
}

fn hbone_requests() -> Vec<(&'static str, Vec<Hbone>)> {
    // Ports pick the fuzz handler's answer: ≡ 2 (mod 3) accept and echo, ≡ 0 refuse,
    // ≡ 1 drop unanswered.
    vec![
        (
            "connect_echo_with_metadata",
            vec![(
                connect("10.10.0.2:8080", true),
                Some(b"GET / HTTP/1.1\r\n\r\n"),
            )],
        ),
        (
            "connect_refused",
            vec![(connect("10.11.0.2:9080", false), None)],
        ),
        (
            "connect_dropped",
            vec![(connect("[fd00::2]:15001", false), None)],
        ),
        (
            "get_is_405",
            vec![(
                Request::builder()
                    .method(Method::GET)
                    .uri("http://10.10.0.2:8080/")
                    .body(())
                    .expect("a valid request"),
                None,
            )],
        ),
        (
            "hostname_authority_is_400",
            vec![(connect("reviews.shop:9080", false), None)],
        ),
        (
            "two_streams",
            vec![
                (connect("10.10.0.2:8080", true), Some(b"hello")),
                (connect("10.11.0.2:9080", false), None),
            ],
        ),
    ]
}

/// What an h2 client writes after the preface for `requests`, captured from an in-memory
/// pipe with nobody answering.
async fn h2_bytes(requests: Vec<Hbone>) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (client_io, mut server_io) = tokio::io::duplex(1 << 20);
    let (send, connection) = h2::client::handshake(client_io).await?;
    tokio::spawn(connection);
    let mut held = Vec::new();
    for (request, body) in requests {
        let mut ready = send.clone().ready().await?;
        let (response, mut stream) = ready.send_request(request, body.is_none())?;
        if let Some(body) = body {
            stream.send_data(Bytes::from_static(body), true)?;
        }
        held.push((response, stream));
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), server_io.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out
        .strip_prefix(PREFACE)
        .ok_or("the h2 client did not start with the preface")?
        .to_vec())
}
