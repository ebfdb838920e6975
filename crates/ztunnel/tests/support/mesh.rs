//! A small mesh in network namespaces for ztunnel's end-to-end tests: a router
//! namespace, pods joined to it by veth pairs (with /32 addresses, as CNIs do), capture
//! rules in enrolled pods, apps inside pods, an in-process ztunnel, and a node agent
//! stand-in that hands pods to ztunnel over the real ZDS protocol.
//!
//! Everything is removed when the `Mesh` drops, also when a test fails.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use netns::capture::{self, CaptureSpec};
use netns::{Namespace, socket};
use test_support::{TestCa, unique_name};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use ztunnel::inpod::{PodPorts, Pods};
use ztunnel::proxy::{ProxyInputs, ProxySettings};
use ztunnel::state::{Store, file_source};

/// Where the test ztunnel's state comes from.
enum Feed<'a> {
    /// A local file with this content.
    File(&'a str),
    /// A control plane.
    ControlPlane {
        xds: ztunnel::state::xds_client::XdsConfig,
        manager: identity::CertificateManager,
    },
}

pub(crate) struct TestPod {
    pub(crate) ns: Namespace,
    pub(crate) ip: IpAddr,
    pub(crate) uid: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) service_account: String,
}

pub(crate) struct Mesh {
    pub(crate) store: Arc<Store>,
    pub(crate) inputs: Arc<ProxyInputs>,
    pub(crate) pods: Arc<Pods>,
    pub(crate) agent: NodeAgent,
    pub(crate) dir: tempfile::TempDir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The ztunnel child process, when not in-process.
    pub(crate) process: Option<std::process::Child>,
    pub(crate) members: Vec<TestPod>,
    /// The CA every node's certificates come from.
    pub(crate) ca: TestCa,
    /// A second node's in-process ztunnel and its agent, once started.
    pub(crate) second: Option<(Arc<Pods>, NodeAgent)>,
    /// The workload uid of pod (namespace, name).
    pub(crate) uid: fn(&str, &str) -> String,
    // Dropped last: the namespaces outlive the tasks and processes using them.
    pub(crate) fabric: lab::topology::Fabric,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Mesh {
    /// A router namespace, an in-process ztunnel over `config` (local file format), and a
    /// node agent it is connected to.
    pub(crate) async fn start(config: &str) -> Self {
        Self::start_with(config, None).await
    }

    /// Like [`Mesh::start`], but ztunnel is the `bowline` binary at `binary`, run as a
    /// child process (killed, by its PID, when the mesh drops).
    pub(crate) async fn start_process(config: &str, binary: &std::path::Path) -> Self {
        Self::start_with(config, Some(binary)).await
    }

    async fn start_with(config: &str, binary: Option<&std::path::Path>) -> Self {
        Self::start_fed(Feed::File(config), binary).await
    }

    /// A mesh whose in-process ztunnel takes its state from a control plane's xDS and its
    /// certificates from `manager`; pod uids are Kubernetes-style.
    pub(crate) async fn start_with_control_plane(
        xds: ztunnel::state::xds_client::XdsConfig,
        manager: identity::CertificateManager,
    ) -> Self {
        let mut mesh = Self::start_fed(Feed::ControlPlane { xds, manager }, None).await;
        mesh.uid = |ns, name| format!("Kubernetes//Pod/{ns}/{name}");
        mesh
    }

    async fn start_fed(feed: Feed<'_>, binary: Option<&std::path::Path>) -> Self {
        let fabric = lab::topology::Fabric::new(&unique_name("bm")).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::default());
        let ca = TestCa::new();
        let (watcher, manager) = match feed {
            Feed::File(config) => {
                let file = dir.path().join("mesh.yaml");
                std::fs::write(&file, config).unwrap();
                let watcher =
                    file_source::watch(file, store.clone(), Duration::from_millis(50)).unwrap();
                (watcher, ca.manager())
            }
            Feed::ControlPlane { xds, manager } => (
                tokio::spawn(ztunnel::state::xds_client::run(xds, store.clone())),
                manager,
            ),
        };
        let (dns_upstream, upstream_task) = fake_upstream_resolver().await;
        let inputs = Arc::new(ProxyInputs::new(
            store.clone(),
            manager,
            settings(dns_upstream),
        ));
        let pods = Arc::new(Pods::new(inputs.clone(), PodPorts::default()));
        let socket_path = dir.path().join("ztunnel.sock");
        let listener = cni::zds::AgentSocket::bind(&socket_path).unwrap();
        let mut tasks = vec![watcher, upstream_task];
        let mut process = None;
        match binary {
            None => tasks.push(tokio::spawn(ztunnel::inpod::zds::run(
                socket_path.clone(),
                pods.clone(),
            ))),
            Some(binary) => {
                let child = lab::process::ztunnel_command(
                    binary,
                    &dir.path().join("mesh.yaml"),
                    &socket_path,
                    &dir.path().join("ca"),
                    &std::env::var("BOWLINE_TEST_ZTUNNEL_LOG").unwrap_or_else(|_| "info".into()),
                )
                .args(["--drain-seconds", "1"])
                .stderr(std::fs::File::create(dir.path().join("ztunnel.log")).unwrap())
                .spawn()
                .unwrap();
                process = Some(child);
            }
        }
        let agent = NodeAgent::accept(listener).await;
        Self {
            fabric,
            store,
            inputs,
            pods,
            agent,
            dir,
            tasks,
            process,
            members: Vec::new(),
            ca,
            second: None,
            uid: |ns, name| format!("{ns}/{name}"),
        }
    }

    /// Starts a second node: another in-process ztunnel (its own pods, pools and
    /// certificate holder, the same CA and configuration) with its own node agent.
    pub(crate) async fn start_second_node(&mut self) {
        let inputs = Arc::new(ProxyInputs::new(
            self.store.clone(),
            self.ca.manager(),
            self.inputs.settings.clone(),
        ));
        let pods = Arc::new(Pods::new(inputs, PodPorts::default()));
        let socket_path = self.dir.path().join("ztunnel-b.sock");
        let listener = cni::zds::AgentSocket::bind(&socket_path).unwrap();
        self.tasks.push(tokio::spawn(ztunnel::inpod::zds::run(
            socket_path,
            pods.clone(),
        )));
        let agent = NodeAgent::accept(listener).await;
        self.second = Some((pods, agent));
    }

    /// Installs capture in pod `i` and hands it to the second node's ztunnel.
    pub(crate) async fn enrol_on_second_node(&self, i: usize) -> Result<(), String> {
        let pod = &self.members[i];
        capture::install(&pod.ns, &CaptureSpec::default()).unwrap();
        let (_, agent) = self.second.as_ref().expect("second node started");
        agent.add(pod).await
    }

    /// Rewrites the configuration file; the watcher applies it.
    pub(crate) async fn reconfigure(&self, config: &str) {
        let mut updates = self.store.subscribe();
        updates.mark_unchanged();
        std::fs::write(self.dir.path().join("mesh.yaml"), config).unwrap();
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .expect("configuration applied")
            .unwrap();
    }

    /// A pod namespace with `ip`, joined to the router. Returns its index.
    pub(crate) fn pod(
        &mut self,
        namespace: &str,
        name: &str,
        service_account: &str,
        ip: &str,
    ) -> usize {
        let ip: IpAddr = ip.parse().unwrap();
        let index = self.fabric.add_pod(ip).unwrap();
        let net = self.fabric.pod(index).unwrap();
        self.members.push(TestPod {
            ns: Namespace::existing(net.ns.name()),
            ip,
            uid: (self.uid)(namespace, name),
            name: name.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        });
        self.members.len() - 1
    }

    /// Installs capture in pod `i` and hands it to ztunnel; returns the agent's ack.
    pub(crate) async fn enrol(&self, i: usize) -> Result<(), String> {
        self.enrol_with(i, &CaptureSpec::default()).await
    }

    /// Like [`Mesh::enrol`], with these capture rules (for example DNS capture on).
    pub(crate) async fn enrol_with(&self, i: usize, spec: &CaptureSpec) -> Result<(), String> {
        let pod = &self.members[i];
        capture::install(&pod.ns, spec).unwrap();
        self.agent.add(pod).await
    }

    /// Starts the app in pod `i` on `port`: it first writes the peer address it sees and
    /// a newline, then echoes.
    pub(crate) async fn app(&mut self, i: usize, port: u16) {
        let listener = self.listen_in(i, port).await;
        self.tasks.push(tokio::spawn(async move {
            while let Ok((mut tcp, peer)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = tcp.write_all(format!("{}\n", peer.ip()).as_bytes()).await;
                    let (mut r, mut w) = tcp.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        }));
    }

    /// A listener on `port` at pod `i`'s address, inside its namespace.
    async fn listen_in(&self, i: usize, port: u16) -> tokio::net::TcpListener {
        let addr = SocketAddr::new(self.members[i].ip, port);
        let listener = self.members[i]
            .ns
            .run(move || socket::listen(addr, false))
            .await
            .unwrap()
            .unwrap();
        socket::into_tokio(listener).unwrap()
    }

    /// Starts an app in pod `i` on `port` that answers `bye` and closes first, as an
    /// HTTP/1.0 server does.
    pub(crate) async fn app_closing_first(&mut self, i: usize, port: u16) {
        let listener = self.listen_in(i, port).await;
        self.tasks.push(tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.write_all(b"bye").await;
            }
        }));
    }

    /// Connects from inside pod `i` (or the router when `None`) to `target`, as an app
    /// would.
    pub(crate) async fn dial(
        &self,
        from: Option<usize>,
        target: SocketAddr,
    ) -> std::io::Result<TcpStream> {
        let ns = match from {
            Some(i) => &self.members[i].ns,
            None => self.fabric.router(),
        };
        let socket = ns
            .run(move || socket::outgoing_socket(target, socket::Outgoing::default()))
            .await
            .map_err(std::io::Error::other)??;
        tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }
}

/// Proxy settings of test ztunnels: names outside the mesh go to `dns_upstream`.
fn settings(dns_upstream: SocketAddr) -> ProxySettings {
    ProxySettings {
        dns: ztunnel::dns::DnsSettings {
            upstreams: vec![dns_upstream],
            upstream_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..ProxySettings::default()
    }
}

/// The address every name outside the mesh resolves to through the fake upstream.
pub(crate) const UPSTREAM_ANSWER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 53);

/// A resolver on 127.0.0.1 (UDP and TCP, same port) answering every A query with
/// [`UPSTREAM_ANSWER`], standing in for the node's resolver.
async fn fake_upstream_resolver() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use hickory_proto::op::Message;
    use hickory_proto::rr::{RData, Record, rdata::A};
    fn answer(query: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        reply.queries = request.queries.clone();
        for q in &request.queries {
            reply.answers.push(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(UPSTREAM_ANSWER)),
            ));
        }
        reply.to_vec().ok()
    }
    // UDP and TCP on the same port: a free UDP port may be taken for TCP (by another
    // test's connection), so try ports until both bind.
    let mut attempts = 0;
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, tcp),
            Err(_) if attempts < 50 => attempts += 1,
            Err(e) => panic!("no port free for both UDP and TCP: {e}"),
        }
    };
    let addr = udp.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let udp_loop = async {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                if let Some(bytes) = answer(&buf[..n]) {
                    let _ = udp.send_to(&bytes, peer).await;
                }
            }
        };
        let tcp_loop = async {
            while let Ok((mut conn, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let len = conn.read_u16().await.unwrap_or(0);
                    let mut query = vec![0u8; usize::from(len)];
                    if conn.read_exact(&mut query).await.is_ok()
                        && let Some(bytes) = answer(&query)
                    {
                        let _ = conn.write_u16(bytes.len() as u16).await;
                        let _ = conn.write_all(&bytes).await;
                    }
                });
            }
        };
        tokio::join!(udp_loop, tcp_loop);
    });
    (addr, task)
}

/// Whether a call from pod `from` to `target` fails: refused, reset, or closed before
/// the app answers.
pub(crate) async fn refused(mesh: &Mesh, from: usize, target: SocketAddr) -> bool {
    match mesh.dial(Some(from), target).await {
        Ok(tcp) => call(tcp, 10).await.is_err(),
        Err(_) => true,
    }
}

/// A connection from pod `from` to `target` on which the app's greeting (the source
/// address it saw) has been read.
pub(crate) async fn greeted(mesh: &Mesh, from: usize, target: SocketAddr) -> (TcpStream, String) {
    let mut tcp = mesh.dial(Some(from), target).await.unwrap();
    let mut line = String::new();
    BufReader::new(&mut tcp).read_line(&mut line).await.unwrap();
    (tcp, line.trim().to_owned())
}

impl Mesh {
    /// The first line of this node's metrics that `matches`, waiting (bounded) for it.
    pub(crate) async fn metric_line(&self, matches: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.inputs.metrics.encode();
            if let Some(line) = text.lines().find(|l| matches(l)) {
                return line.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such metric line in:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether `tcp` is closed by the other side within five seconds.
pub(crate) async fn closes_soon(tcp: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// Calls the app: reads the source address it saw, then checks that `len` bytes echo.
pub(crate) async fn call(mut tcp: TcpStream, len: usize) -> std::io::Result<IpAddr> {
    let mut reader = BufReader::new(&mut tcp);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting"))??;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "closed before the greeting",
        ));
    }
    let seen: IpAddr = line
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad greeting {line:?}")))?;
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let (mut r, mut w) = tcp.split();
    let write = async {
        w.write_all(&payload).await?;
        w.shutdown().await
    };
    let read = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let ((), back) = tokio::try_join!(write, read)?;
    if back != payload {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(seen)
}

/// Plays the node agent, through the agent side of ZDS in the `cni` crate.
pub(crate) struct NodeAgent {
    socket: cni::zds::AgentSocket,
    connection: cni::zds::ZtunnelConnection,
}

impl NodeAgent {
    async fn accept(socket: cni::zds::AgentSocket) -> Self {
        let connection = tokio::time::timeout(Duration::from_secs(10), socket.accept())
            .await
            .expect("ztunnel connects to the node agent")
            .unwrap();
        Self { socket, connection }
    }

    pub(crate) async fn add(&self, pod: &TestPod) -> Result<(), String> {
        let file = pod.ns.open().unwrap();
        let pod_ref = cni::zds::PodRef {
            uid: &pod.uid,
            name: &pod.name,
            namespace: &pod.namespace,
            service_account: &pod.service_account,
        };
        self.connection
            .add(&pod_ref, std::os::fd::AsFd::as_fd(&file))
            .await
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn keep(&self, uid: &str) -> Result<(), String> {
        self.connection.keep(uid).await.map_err(|e| e.to_string())
    }

    /// Ends the connection (as an agent restart would) and greets ztunnel's reconnect.
    pub(crate) async fn reconnect(&mut self) {
        self.connection.close().unwrap();
        self.connection = tokio::time::timeout(Duration::from_secs(10), self.socket.accept())
            .await
            .expect("ztunnel reconnects")
            .unwrap();
    }

    pub(crate) async fn del(&self, uid: &str) -> Result<(), String> {
        self.connection.del(uid).await.map_err(|e| e.to_string())
    }

    pub(crate) async fn snapshot_sent(&self) -> Result<(), String> {
        self.connection
            .snapshot_sent()
            .await
            .map_err(|e| e.to_string())
    }
}

pub(crate) fn socket_path(mesh: &Mesh) -> PathBuf {
    mesh.dir.path().join("ztunnel.sock")
}

/// Runs the SOCKS5 handshake for `host:port` on `tcp`; returns the reply code.
pub(crate) async fn socks5_connect(tcp: &mut tokio::net::TcpStream, host: &str, port: u16) -> u8 {
    tcp.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    tcp.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice, [5, 0], "no-authentication method chosen");
    let mut request = vec![5, 1, 0, 3, u8::try_from(host.len()).unwrap()];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    tcp.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    tcp.read_exact(&mut reply).await.unwrap();
    reply[1]
}
