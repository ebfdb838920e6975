//! A control plane on loopback ephemeral ports over a temporary state and config
//! directory, stopped when dropped.

#![allow(dead_code)]

pub(crate) mod xds_client;

use std::path::PathBuf;
use std::time::Duration;

use control_plane::app::{self, Bound, Config};
use control_plane::translate::MeshSettings;

pub(crate) struct ControlPlane {
    pub(crate) bound: Bound,
    pub(crate) dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl ControlPlane {
    /// Starts with `files` (name, YAML) in its config directory.
    pub(crate) async fn start(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, files).await
    }

    /// Starts over an existing state directory (a restart).
    pub(crate) async fn start_in(dir: tempfile::TempDir, files: &[(&str, &str)]) -> Self {
        test_support::init_tracing();
        identity::tls::install_default_provider();
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        for (name, text) in files {
            std::fs::write(config_dir.join(name), text).unwrap();
        }
        let config = Config {
            state_dir: dir.path().join("state"),
            config_paths: vec![config_dir],
            xds_plaintext_addr: Some("127.0.0.1:0".parse().unwrap()),
            xds_tls_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            api_addr: "127.0.0.1:0".parse().unwrap(),
            tls_names: vec!["127.0.0.1".into()],
            mesh: MeshSettings::default(),
            debounce: Duration::from_millis(10),
        };
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app::run(
                config,
                move |b| {
                    let _ = bound_tx.send(b);
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        let bound = tokio::time::timeout(Duration::from_secs(10), bound_rx)
            .await
            .expect("control plane started")
            .expect("control plane bound");
        Self {
            bound,
            dir,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A channel to the TLS port (xDS, CA, capture reports), trusting the mesh root.
    pub(crate) fn tls_channel(&self) -> tonic::transport::Channel {
        let root = std::fs::read_to_string(self.state_dir().join("ca/root-cert.pem")).unwrap();
        let url = format!("https://{}", self.bound.xds_tls);
        xds::transport::lazy_channel(&url, Some(&root)).unwrap()
    }

    /// A node token for `node`, valid ten minutes.
    pub(crate) fn node_token(&self, node: &str) -> String {
        control_plane::tokens::NodeTokens::load_or_create(&self.state_dir())
            .unwrap()
            .issue(node, std::time::Duration::from_secs(600))
            .unwrap()
    }

    pub(crate) fn plaintext_url(&self) -> String {
        format!("http://{}", self.bound.xds_plaintext.unwrap())
    }

    /// The operator token the control plane made in its state directory.
    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.state_dir().join(control_plane::operator_token::FILE))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A request to the management API with the operator token: (status, body).
    pub(crate) async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let token = self.token();
        http(&self.bound.api, method, path, body, Some(&token)).await
    }

    /// Stops it and hands back its directory.
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, placeholder)
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`): (status, body).
pub(crate) async fn http(
    addr: &std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413, 401) before taking the whole body.
    let _ = tcp.write_all(body.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}
