//! Wire types Bowline shares with Istio: the workload discovery resources
//! (`istio.workload.Address` = `Workload` | `Service`), the compiled L4 authorization
//! (`istio.security.Authorization`), the node agent protocol (`istio.workload.zds`) and
//! the certificate service (`istio.v1.auth`); and Bowline's own node agent → control plane
//! capture reports (`bowline.agent.v1`).
//!
//! The `.proto` files under `proto/` are our own, written from the facts in
//! docs/protocols.md; `build.rs` compiles them with protox and prost (services with tonic).
//! The delta ADS envelope comes from `envoy-types` ([`discovery`]). Owns: the messages and
//! their type URLs, and the client side's channel, stream and their errors ([`XdsError`]). Must not: know what the fields mean for policy or routing — that is
//! for the crates that consume them.

#![forbid(unsafe_code)]

/// Generated code, nested as the protobuf packages are so cross-package paths resolve.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod istio {
    /// `istio.workload`: workloads and services.
    pub mod workload {
        include!(concat!(env!("OUT_DIR"), "/istio.workload.rs"));

        /// `istio.workload.zds`: the node agent ↔ ztunnel protocol.
        pub mod zds {
            include!(concat!(env!("OUT_DIR"), "/istio.workload.zds.rs"));
        }
    }

    /// `istio.security`: compiled authorization policies.
    pub mod security {
        include!(concat!(env!("OUT_DIR"), "/istio.security.rs"));
    }

    /// `istio.v1.auth`: the certificate service.
    pub mod v1 {
        /// `istio.v1.auth`.
        pub mod auth {
            include!(concat!(env!("OUT_DIR"), "/istio.v1.auth.rs"));
        }
    }
}

/// Generated code of Bowline's own services (not Istio interfaces).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod bowline {
    /// `bowline.agent`.
    pub mod agent {
        /// `bowline.agent.v1`: node agent → control plane capture reports.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/bowline.agent.v1.rs"));
        }
    }
    /// `bowline.l7`.
    pub mod l7 {
        /// `bowline.l7.v1`: waypoint resources (L7 authorization, route tables).
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/bowline.l7.v1.rs"));
        }
    }
}

pub use bowline::agent::v1 as agent;
pub use bowline::l7::v1 as l7;
pub use istio::v1::auth as ca;

/// The workload extension (`Workload.extensions[].name`) by which the control plane asks a
/// pod's node agent to capture it: the pod is enrolled. The pod is advertised as HBONE only
/// once its agent reported the capture ([`agent`]); Istio's ztunnel ignores the extension.
pub const CAPTURE_EXTENSION: &str = "bowline.io/capture";

/// Envoy's node description and its `google.protobuf` types.
pub use envoy_types::pb::envoy::config::core::v3 as core;
/// The Envoy discovery envelope (delta ADS) the workload resources travel in.
pub use envoy_types::pb::envoy::service::discovery::v3 as discovery;
/// The `google.protobuf` and `google.rpc` types of the envelope.
pub use envoy_types::pb::google;

pub use istio::security;
pub use istio::workload;
pub use istio::workload::zds;

pub mod backoff;
mod error;

pub use error::XdsError;

/// Serde helpers the generated types use for readable JSON dumps.
pub mod json {
    /// An address field as text (`10.0.0.1`), or its bytes in hex when not an address.
    pub fn ip<S: serde::Serializer>(bytes: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&text(bytes))
    }

    /// A body as text (lossy where it is not UTF-8).
    pub fn lossy<S: serde::Serializer>(bytes: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&String::from_utf8_lossy(bytes))
    }

    /// A list of address fields as text.
    pub fn ips<S: serde::Serializer>(list: &[bytes::Bytes], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| text(b)))
    }

    fn text(bytes: &[u8]) -> String {
        super::ip_from_bytes(bytes).map_or_else(
            || bytes.iter().map(|b| format!("{b:02x}")).collect(),
            |ip| ip.to_string(),
        )
    }
}

/// An IP address from its network-order bytes (4 for IPv4, 16 for IPv6), as the wire
/// carries addresses.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

/// The network-order bytes of an address, as the wire carries it.
pub fn ip_to_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Type URL of workload and service resources.
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
/// Type URL of authorization resources.
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";
/// Type URL of waypoint authorization resources (Bowline's own, waypoints only).
pub const L7_AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/bowline.l7.v1.Authorization";
/// Type URL of waypoint route tables (Bowline's own, waypoints only).
pub const ROUTE_TABLE_TYPE_URL: &str = "type.googleapis.com/bowline.l7.v1.RouteTable";

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn field_numbers_match_the_wire_contract() {
        // A Workload with uid (20) and name (1): tag bytes are (20 << 3 | 2) = 0xA2 0x01
        // and (1 << 3 | 2) = 0x0A.
        let w = workload::Workload {
            uid: "u".into(),
            name: "n".into(),
            ..Default::default()
        };
        let bytes = w.encode_to_vec();
        assert_eq!(bytes, vec![0x0A, 1, b'n', 0xA2, 0x01, 1, b'u']);

        // ZDS: DelWorkload.uid is field 2; WorkloadRequest.keep is field 5.
        let del = zds::DelWorkload { uid: "x".into() };
        assert_eq!(del.encode_to_vec(), vec![0x12, 1, b'x']);
        let keep = zds::WorkloadRequest {
            payload: Some(zds::workload_request::Payload::Keep(zds::KeepWorkload {
                uid: "y".into(),
            })),
        };
        assert_eq!(keep.encode_to_vec(), vec![0x2A, 3, 0x0A, 1, b'y']);
    }

    #[test]
    fn authorization_round_trips() {
        let policy = security::Authorization {
            name: "deny-admin".into(),
            namespace: "shop".into(),
            scope: security::Scope::Namespace as i32,
            action: security::Action::Deny as i32,
            rules: vec![security::Rule {
                clauses: vec![security::Clause {
                    matches: vec![security::Match {
                        destination_ports: vec![9090],
                        ..Default::default()
                    }],
                }],
            }],
            ..Default::default()
        };
        let decoded = security::Authorization::decode(policy.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, policy);
    }
}

/// Channels to the control plane, plaintext (`http://host:15010`) or TLS
/// (`https://host:15012`, verified against the mesh root and the control plane's name).
pub mod transport {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

    use crate::XdsError;

    /// The name in the control plane's certificate.
    pub const CONTROL_PLANE_NAME: &str = "bowline-control-plane";

    /// A channel to `url` that connects on first use and reconnects as needed. `https`
    /// URLs need `root_pem`, the mesh root that signed the control plane's certificate.
    /// Fails only on settings (address, root); reachability shows on first use.
    pub fn lazy_channel(url: &str, root_pem: Option<&str>) -> Result<Channel, XdsError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| XdsError::Address {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(std::time::Duration::from_secs(5))
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let endpoint = if url.starts_with("https://") {
            let root = root_pem.ok_or_else(|| XdsError::MissingRoot {
                url: url.to_owned(),
            })?;
            endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(root))
                        .domain_name(CONTROL_PLANE_NAME),
                )
                .map_err(|source| XdsError::Tls {
                    url: url.to_owned(),
                    source,
                })?
        } else {
            endpoint
        };
        Ok(endpoint.connect_lazy())
    }
}

/// The client side of one delta ADS stream: open it with the first request of each type,
/// read responses, answer each with an ACK or a NACK. Used by ztunnel, the node agent and
/// the control-plane benchmark.
pub mod ads_client {
    use std::collections::HashMap;

    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Streaming;

    use crate::XdsError;
    use crate::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use crate::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};

    /// Largest response accepted (a full sync of a large mesh).
    const MAX_RESPONSE: usize = 256 << 20;

    /// An open stream.
    #[derive(Debug)]
    pub struct AdsStream {
        requests: mpsc::Sender<DeltaDiscoveryRequest>,
        responses: Streaming<DeltaDiscoveryResponse>,
    }

    impl AdsStream {
        /// Connects to `url` (see [`crate::transport::lazy_channel`]) as `node` and
        /// subscribes (wildcard) to each type, telling the server the versions already
        /// held.
        pub async fn open(
            url: &str,
            root_pem: Option<&str>,
            node: crate::core::Node,
            subscriptions: Vec<(String, HashMap<String, String>)>,
        ) -> Result<Self, XdsError> {
            let channel = crate::transport::lazy_channel(url, root_pem)?;
            let mut client = AggregatedDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE);
            let (requests, rx) = mpsc::channel(8);
            for (type_url, initial_resource_versions) in subscriptions {
                requests
                    .send(DeltaDiscoveryRequest {
                        type_url,
                        node: Some(node.clone()),
                        initial_resource_versions,
                        ..Default::default()
                    })
                    .await
                    .map_err(|_| XdsError::RequestsClosed)?;
            }
            let responses = client
                .delta_aggregated_resources(ReceiverStream::new(rx))
                .await
                .map_err(|status| XdsError::Connect {
                    url: url.to_owned(),
                    status,
                })?
                .into_inner();
            Ok(Self {
                requests,
                responses,
            })
        }

        /// The next response, `None` when the server closed the stream.
        pub async fn next(&mut self) -> Result<Option<DeltaDiscoveryResponse>, XdsError> {
            self.responses.message().await.map_err(XdsError::Stream)
        }

        /// ACKs `response`, or NACKs it with `error` (sent as the NACK's detail).
        pub async fn answer(
            &self,
            response: &DeltaDiscoveryResponse,
            error: Option<String>,
        ) -> Result<(), XdsError> {
            self.requests
                .send(DeltaDiscoveryRequest {
                    type_url: response.type_url.clone(),
                    response_nonce: response.nonce.clone(),
                    error_detail: error.map(|message| crate::google::rpc::Status {
                        code: tonic::Code::InvalidArgument as i32,
                        message,
                        details: Vec::new(),
                    }),
                    ..Default::default()
                })
                .await
                .map_err(|_| XdsError::RequestsClosed)
        }
    }
}
