//! `bowline up --publish [ADDR:]HOSTPORT[=NS/GATEWAY:PORT]`: a loopback port on the host
//! forwarded to an ingress gateway's listener, so a browser or `curl` on the host reaches
//! the lab's north-south entry (the host has no route into the lab's addresses).
//!
//! The lab controller serves each published port (it runs in the host's namespace for the
//! lab's lifetime): a connection accepted on the host is dialled from the lab's router
//! namespace to the gateway's pod (`<gateway>-istio-0`, looked up per connection, so a
//! restarted gateway is found again) and the bytes are pumped both ways. Without
//! `=NS/GATEWAY:PORT`, the lab's only ingress Gateway and listener port are meant.
//!
//! Owns: parsing and resolving the spec, the forwarders. Must not: touch the traffic —
//! TLS and HTTP are the gateway's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use config::Resource;
use config::resources::INGRESS_CLASS;
use serde::{Deserialize, Serialize};

use super::{LabError, LabState, invalid};

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Where the host listens (loopback by default).
    pub listen: SocketAddr,
    /// The ingress Gateway, `ns/name`.
    pub gateway: String,
    /// Its listener port.
    pub port: u16,
}

/// Reads `spec` against the ingress Gateways in `resources`.
pub(super) fn parse(spec: &str, resources: &[Resource]) -> Result<Published, LabError> {
    let hint = "write [ADDR:]HOSTPORT[=NAMESPACE/GATEWAY:PORT], e.g. 8080=shop/bookinfo-gateway:80";
    let (listen, target) = match spec.split_once('=') {
        Some((l, t)) => (l, Some(t)),
        None => (spec, None),
    };
    let listen = match listen.rsplit_once(':') {
        Some((addr, port)) => {
            let ip: IpAddr = addr.parse().map_err(|_| {
                LabError::Invalid(format!(
                    "--publish {spec:?}: {addr:?} is not an address; {hint}"
                ))
            })?;
            SocketAddr::new(ip, port_of(port, spec, hint)?)
        }
        None => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port_of(listen, spec, hint)?),
    };
    let gateways: Vec<(String, Vec<u16>)> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Gateway(g) if g.spec.gateway_class_name == INGRESS_CLASS => {
                let mut ports: Vec<u16> = g.spec.listeners.iter().map(|l| l.port).collect();
                ports.dedup();
                Some((
                    format!("{}/{}", g.metadata.namespace(), g.metadata.name),
                    ports,
                ))
            }
            _ => None,
        })
        .collect();
    let (gateway, port) = match target {
        Some(target) => {
            let (gateway, port) = target.rsplit_once(':').ok_or_else(|| {
                LabError::Invalid(format!(
                    "--publish {spec:?}: {target:?} has no :PORT; {hint}"
                ))
            })?;
            if !gateway.contains('/') {
                return invalid(format!(
                    "--publish {spec:?}: {gateway:?} is not NAMESPACE/GATEWAY; {hint}"
                ));
            }
            (gateway.to_owned(), port_of(port, spec, hint)?)
        }
        None => match gateways.as_slice() {
            [(gateway, ports)] if ports.len() == 1 => (gateway.clone(), ports[0]),
            [] => {
                return invalid(format!(
                    "--publish {spec:?}: the manifests hold no ingress Gateway (gatewayClassName: {INGRESS_CLASS}) to publish"
                ));
            }
            _ => {
                return invalid(format!(
                    "--publish {spec:?}: say which gateway and port (ingress gateways: {}); {hint}",
                    gateways
                        .iter()
                        .map(|(g, p)| format!("{g} {p:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        },
    };
    Ok(Published {
        listen,
        gateway,
        port,
    })
}

fn port_of(text: &str, spec: &str, hint: &str) -> Result<u16, LabError> {
    text.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
        LabError::Invalid(format!(
            "--publish {spec:?}: {text:?} is not a port; {hint}"
        ))
    })
}

/// The gateway pod's address for `published`, as the lab holds it now.
fn target(state: &LabState, published: &Published) -> Option<SocketAddr> {
    let pod = format!("{}-istio-0", published.gateway);
    let (_, ip, _) = state.pods.get(&pod)?;
    Some(SocketAddr::new(ip.parse().ok()?, published.port))
}

/// Serves `published` for lab `lab` until the task is dropped.
pub(super) async fn serve(lab: String, published: Published) {
    let listener = loop {
        match tokio::net::TcpListener::bind(published.listen).await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::error!(listen = %published.listen, %error, "publish: cannot listen; will try again");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    };
    tracing::info!(listen = %published.listen, gateway = %published.gateway, port = published.port, "publish: forwarding");
    loop {
        let Ok((mut inbound, from)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (lab, published) = (lab.clone(), published.clone());
        tokio::spawn(async move {
            let outbound = match dial(&lab, &published).await {
                Ok(stream) => stream,
                Err(why) => {
                    tracing::warn!(%from, gateway = %published.gateway, "publish: {why}");
                    return;
                }
            };
            let mut outbound = outbound;
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

/// A connection to the gateway's pod, made from the lab's router namespace.
async fn dial(lab: &str, published: &Published) -> Result<tokio::net::TcpStream, String> {
    let state = LabState::load(lab).map_err(|e| e.to_string())?;
    let addr = target(&state, published).ok_or_else(|| {
        format!(
            "gateway {} has no running pod in lab {lab}",
            published.gateway
        )
    })?;
    crate::client::connect_in(&netns::Namespace::existing(&state.router), addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateways(yaml: &str) -> Vec<Resource> {
        config::parse_documents(yaml, "gw.yaml").unwrap()
    }

    const ONE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
";

    #[test]
    fn a_published_port_defaults_to_loopback_and_the_only_ingress_gateway() {
        let p = parse("8080", &gateways(ONE)).unwrap();
        assert_eq!(p.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((p.gateway.as_str(), p.port), ("shop/web", 80));
        let p = parse("127.0.0.2:9443=shop/other:443", &gateways(ONE)).unwrap();
        assert_eq!((p.gateway.as_str(), p.port), ("shop/other", 443));
        for bad in ["x", "8080=web:80", "8080=shop/web", "0"] {
            assert!(parse(bad, &gateways(ONE)).is_err(), "{bad}");
        }
        assert!(parse("8080", &[]).is_err());
    }
}
