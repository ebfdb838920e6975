//! A client pool and an HBONE server (forwarding to loopback targets) wired to one test
//! CA, on ephemeral loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bench::demo::Forwarder;
use hbone::{
    ClientSettings, ConnectHandler, ConnectRequest, H2Stream, HboneError, HboneHeaders, Pool,
    PoolKey, Server, ServerSettings, ServerStats,
};
use identity::{CertificateManager, SpiffeId};
use test_support::{TestCa, id};
use tokio::net::TcpListener;

pub(crate) struct Harness {
    pub(crate) ca: TestCa,
    pub(crate) manager: CertificateManager,
    pub(crate) client: SpiffeId,
    pub(crate) server: SpiffeId,
    pub(crate) server_addr: SocketAddr,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) forwarder: Forwarder,
    pub(crate) pool: Pool,
}

impl Harness {
    pub(crate) async fn start() -> Self {
        Self::with(ClientSettings::default(), ServerSettings::default()).await
    }

    pub(crate) async fn with(client: ClientSettings, server: ServerSettings) -> Self {
        let ca = TestCa::new();
        let manager = ca.manager();
        let forwarder = Forwarder::default();
        let server_id = id("shop", "backend");
        let (server_addr, stats) = start_server(
            manager.clone(),
            server_id.clone(),
            server,
            forwarder.clone(),
        )
        .await;
        Self {
            pool: Pool::new(manager.clone(), client),
            ca,
            manager,
            client: id("shop", "frontend"),
            server: server_id,
            server_addr,
            stats,
            forwarder,
        }
    }

    pub(crate) fn key(&self) -> PoolKey {
        PoolKey {
            source: self.client.clone(),
            destination: self.server.clone(),
            address: self.server_addr,
        }
    }

    pub(crate) async fn connect(&self, target: SocketAddr) -> Result<H2Stream, HboneError> {
        self.pool.connect(&self.key(), &request(target)).await
    }

    pub(crate) fn connections(&self) -> usize {
        self.pool.connections(&self.key())
    }
}

pub(crate) fn request(target: SocketAddr) -> ConnectRequest {
    ConnectRequest {
        authority: target,
        headers: HboneHeaders::default(),
    }
}

pub(crate) async fn start_server<H: ConnectHandler>(
    manager: CertificateManager,
    identity: SpiffeId,
    settings: ServerSettings,
    handler: H,
) -> (SocketAddr, Arc<ServerStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(identity, manager, handler, settings);
    let stats = server.stats();
    tokio::spawn(server.serve(listener));
    (addr, stats)
}
