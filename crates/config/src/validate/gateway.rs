//! Gateways: a waypoint (class `istio-waypoint`: exactly its HBONE listener) or an ingress
//! gateway (class `istio`: HTTP and HTTPS listeners, TLS terminated with certificates
//! from `kubernetes.io/tls` Secrets); and those Secrets (a PEM chain and a key).

use std::collections::BTreeMap;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{Invalid, invalid};
use crate::resources::*;

pub(super) fn gateway_spec(gateway: &Gateway) -> Result<(), Invalid> {
    match gateway.spec.gateway_class_name.as_str() {
        WAYPOINT_CLASS => waypoint(gateway),
        INGRESS_CLASS => ingress(gateway),
        other => invalid(
            "spec.gatewayClassName",
            format!(
                "{other:?}: Bowline runs waypoints (gatewayClassName: {WAYPOINT_CLASS}) and ingress gateways (gatewayClassName: {INGRESS_CLASS})"
            ),
        ),
    }
}

fn waypoint(gateway: &Gateway) -> Result<(), Invalid> {
    // A waypoint has one listener, the HBONE one its ztunnels tunnel to.
    match gateway.spec.listeners.as_slice() {
        [only] if only.port == 15008 && only.protocol == "HBONE" => {}
        [] => {
            return invalid(
                "spec.listeners",
                "a waypoint needs its listener: {name: mesh, port: 15008, protocol: HBONE}",
            );
        }
        listeners => {
            let (i, other) = listeners
                .iter()
                .enumerate()
                .find(|(_, l)| l.port != 15008 || l.protocol != "HBONE")
                .unwrap_or((1, &listeners[1]));
            return invalid(
                format!("spec.listeners[{i}]"),
                format!(
                    "{} ({}/{}): a waypoint takes exactly one listener, {{name: mesh, port: 15008, protocol: HBONE}}; remove the others",
                    other.name, other.port, other.protocol
                ),
            );
        }
    }
    if let Some(for_) = gateway.metadata.labels.get(WAYPOINT_FOR)
        && !matches!(for_.as_str(), "service" | "workload" | "all" | "none")
    {
        return invalid(
            format!("metadata.labels.{WAYPOINT_FOR}"),
            format!("{for_:?}: use service, workload, all or none"),
        );
    }
    Ok(())
}

/// Ports an ingress gateway's pod keeps for itself.
const RESERVED_PORTS: [u16; 4] = [15000, 15008, 15020, 15021];

fn ingress(gateway: &Gateway) -> Result<(), Invalid> {
    if gateway.spec.listeners.is_empty() {
        return invalid(
            "spec.listeners",
            "an ingress gateway needs at least one listener, e.g. {name: http, port: 80, protocol: HTTP}",
        );
    }
    let mut names = BTreeMap::new();
    let mut protocols: BTreeMap<u16, &str> = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    for (i, l) in gateway.spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        super::dns_name(&l.name, &format!("{at}.name"))?;
        if let Some(first) = names.insert(l.name.as_str(), i) {
            return invalid(
                format!("{at}.name"),
                format!(
                    "{:?} is also listeners[{first}]'s name; names must be unique",
                    l.name
                ),
            );
        }
        if l.port == 0 || RESERVED_PORTS.contains(&l.port) {
            return invalid(
                format!("{at}.port"),
                format!(
                    "{}: use 1-65535 except {RESERVED_PORTS:?} (the gateway's own ports)",
                    l.port
                ),
            );
        }
        let tls = match l.protocol.as_str() {
            "HTTP" => false,
            "HTTPS" => true,
            other => {
                return invalid(
                    format!("{at}.protocol"),
                    format!(
                        "{other:?}: an ingress gateway serves HTTP and HTTPS listeners (TLS, TCP and UDP listeners are not supported)"
                    ),
                );
            }
        };
        if let Some(was) = protocols.insert(l.port, l.protocol.as_str())
            && was != l.protocol
        {
            return invalid(
                format!("{at}.protocol"),
                format!(
                    "port {} already has a {was} listener; one port serves one protocol",
                    l.port
                ),
            );
        }
        if let Some(host) = &l.hostname {
            hostname(host, &format!("{at}.hostname"))?;
        }
        if let Some(first) = hosts.insert((l.port, l.hostname.clone()), i) {
            return invalid(
                format!("{at}.hostname"),
                format!(
                    "listeners[{first}] already serves port {} for {}; give each listener on a port its own hostname",
                    l.port,
                    l.hostname.as_deref().unwrap_or("any host")
                ),
            );
        }
        match (&l.tls, tls) {
            (Some(_), false) => {
                return invalid(
                    format!("{at}.tls"),
                    "only an HTTPS listener takes tls; remove it or make the protocol HTTPS",
                );
            }
            (None, true) => {
                return invalid(
                    format!("{at}.tls"),
                    "an HTTPS listener needs tls.certificateRefs: [{kind: Secret, name: …}] (a kubernetes.io/tls Secret)",
                );
            }
            (Some(settings), true) => listener_tls(settings, &at)?,
            (None, false) => {}
        }
        if let Some(from) = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
            .and_then(|n| n.from.as_deref())
            && !matches!(from, "Same" | "All")
        {
            return invalid(
                format!("{at}.allowedRoutes.namespaces.from"),
                format!("{from:?}: use Same or All (Selector is not supported yet)"),
            );
        }
    }
    Ok(())
}

fn listener_tls(tls: &ListenerTls, at: &str) -> Result<(), Invalid> {
    match tls.mode.as_deref() {
        None | Some("Terminate") => {}
        Some(mode) => {
            return invalid(
                format!("{at}.tls.mode"),
                format!(
                    "{mode:?}: the ingress gateway terminates TLS (mode Terminate); Passthrough is not supported"
                ),
            );
        }
    }
    if tls.certificate_refs.is_empty() {
        return invalid(
            format!("{at}.tls.certificateRefs"),
            "name at least one kubernetes.io/tls Secret",
        );
    }
    for (j, r) in tls.certificate_refs.iter().enumerate() {
        let path = format!("{at}.tls.certificateRefs[{j}]");
        if r.group.as_deref().is_some_and(|g| !g.is_empty())
            || r.kind.as_deref().is_some_and(|k| k != "Secret")
        {
            return invalid(
                path,
                "only core Secrets (group \"\", kind Secret) hold certificates here",
            );
        }
        super::dns_name(&r.name, &format!("{path}.name"))?;
    }
    Ok(())
}

/// A listener host name: a DNS name, or `*.` and one.
fn hostname(host: &str, path: &str) -> Result<(), Invalid> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.contains('*')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && name.parse::<std::net::IpAddr>().is_err();
    if ok {
        Ok(())
    } else {
        invalid(
            path,
            format!(
                "{host:?}: write a lower-case DNS name (bookinfo.example.com) or a wildcard (*.example.com); addresses are not host names"
            ),
        )
    }
}

pub(super) fn secret(secret: &Secret) -> Result<(), Invalid> {
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Ok(());
    }
    let field = |key: &str| {
        if secret.string_data.contains_key(key) {
            format!("stringData.{key}")
        } else {
            format!("data.{key}")
        }
    };
    for key in ["tls.crt", "tls.key"] {
        if secret.data.contains_key(key) && secret.value(key).is_none() {
            return invalid(
                field(key),
                "is not base64 (data values are base64; write text under stringData)",
            );
        }
    }
    let Some(chain) = secret.value("tls.crt") else {
        return invalid(
            field("tls.crt"),
            "a kubernetes.io/tls Secret needs tls.crt, the PEM certificate chain (base64 in data)",
        );
    };
    let Some(key) = secret.value("tls.key") else {
        return invalid(
            field("tls.key"),
            "a kubernetes.io/tls Secret needs tls.key, the PEM private key (base64 in data)",
        );
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&chain).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => {}
        _ => {
            return invalid(
                field("tls.crt"),
                "is not a PEM certificate chain (-----BEGIN CERTIFICATE-----)",
            );
        }
    }
    if PrivateKeyDer::from_pem_slice(&key).is_err() {
        return invalid(
            field("tls.key"),
            "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
        );
    }
    Ok(())
}
