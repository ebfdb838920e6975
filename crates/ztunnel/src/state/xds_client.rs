//! The delta ADS client: mesh state from the control plane instead of a file.
//!
//! It subscribes (wildcard) to `istio.workload.Address` and `istio.security.Authorization`,
//! with the node id and metadata Istio's ztunnel sends. Each response is validated
//! resource by resource: good ones are applied, bad ones are NACKed with the reason and
//! the previous version stays. The store is first filled only once both types have
//! answered (readiness waits for that). When the control plane goes away, the last good
//! state keeps serving; the client reconnects with backoff (100 ms doubling to 5 s) and
//! resyncs by telling the server the versions it holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use xds::ads_client::AdsStream;
use xds::discovery::DeltaDiscoveryResponse;
use xds::google::protobuf::{Struct, Value, value::Kind};
use xds::security as sec;
use xds::workload as wire;

use super::{Service, Snapshot, Store, Workload, convert};

/// Who this ztunnel is, as the control plane sees it.
#[derive(Debug, Clone)]
pub struct XdsConfig {
    /// `http://host:15010` or `https://host:15012`.
    pub url: String,
    /// The mesh root (needed for `https`).
    pub root_pem: Option<String>,
    /// The node this ztunnel serves.
    pub node_name: String,
    /// This ztunnel's address, for the node id.
    pub instance_ip: String,
}

impl XdsConfig {
    fn node(&self) -> xds::core::Node {
        let text = |s: &str| Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        };
        let pod = format!("ztunnel-{}", self.node_name);
        xds::core::Node {
            id: format!(
                "ztunnel~{}~{pod}.istio-system~istio-system.svc.cluster.local",
                self.instance_ip
            ),
            metadata: Some(Struct {
                fields: [
                    ("NAME".to_owned(), text(&pod)),
                    ("NAMESPACE".to_owned(), text("istio-system")),
                    ("INSTANCE_IPS".to_owned(), text(&self.instance_ip)),
                    ("NODE_NAME".to_owned(), text(&self.node_name)),
                ]
                .into(),
            }),
            ..Default::default()
        }
    }
}

/// What the client holds, validated, by xDS name.
#[derive(Debug, Default, Clone)]
struct Held {
    workloads: HashMap<String, Workload>,
    services: HashMap<String, Service>,
    policies: HashMap<String, policy::Policy>,
    versions: HashMap<&'static str, HashMap<String, String>>,
    answered: std::collections::HashSet<&'static str>,
}

const TYPES: [&str; 2] = [xds::ADDRESS_TYPE_URL, xds::AUTHORIZATION_TYPE_URL];

/// Runs the client until the task is dropped.
pub async fn run(config: XdsConfig, store: Arc<Store>) {
    let mut held = Held::default();
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&config, &store, &mut held).await {
            Ok(()) => {
                tracing::info!(url = %config.url, "xds: control plane closed the stream; reconnecting")
            }
            Err(error) => {
                tracing::warn!(url = %config.url, %error, retry_in = ?backoff, "xds: no control plane; serving the last good state")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if store.loaded() {
            // A session got far enough to apply state; start the next backoff small.
            backoff = backoff.min(Duration::from_millis(400));
        }
    }
}

async fn session(config: &XdsConfig, store: &Store, held: &mut Held) -> Result<(), String> {
    let subscriptions = TYPES
        .iter()
        .map(|t| {
            (
                (*t).to_owned(),
                held.versions.get(t).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let mut stream = AdsStream::open(
        &config.url,
        config.root_pem.as_deref(),
        config.node(),
        subscriptions,
    )
    .await?;
    tracing::info!(url = %config.url, "xds: connected");
    while let Some(response) = stream.next().await? {
        let error = apply(held, &response, store).err();
        if let Some(errors) = &error {
            tracing::warn!(type_url = %response.type_url, %errors, "xds: rejected resources (NACK); keeping their previous versions");
        }
        stream.answer(&response, error).await?;
    }
    Ok(())
}

/// Applies one response: good resources in, bad ones listed in the error.
fn apply(held: &mut Held, response: &DeltaDiscoveryResponse, store: &Store) -> Result<(), String> {
    let Some(type_url) = TYPES.into_iter().find(|t| *t == response.type_url) else {
        return Err(format!(
            "type {} is not one ztunnel uses",
            response.type_url
        ));
    };
    let mut next = held.clone();
    let mut errors = Vec::new();
    for resource in &response.resources {
        let Some(any) = &resource.resource else {
            errors.push(format!("{}: no resource body", resource.name));
            continue;
        };
        let result = if type_url == xds::ADDRESS_TYPE_URL {
            add_address(&mut next, &resource.name, &any.value)
        } else {
            sec::Authorization::decode(any.value.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|a| convert::policy(a).map_err(|e| e.to_string()))
                .map(|p| {
                    next.policies.insert(resource.name.clone(), p);
                })
        };
        match result {
            Ok(()) => {
                next.versions
                    .entry(type_url)
                    .or_default()
                    .insert(resource.name.clone(), resource.version.clone());
            }
            Err(e) => errors.push(format!("{}: {e}", resource.name)),
        }
    }
    for name in &response.removed_resources {
        if type_url == xds::ADDRESS_TYPE_URL {
            next.workloads.remove(name);
            next.services.remove(name);
        } else {
            next.policies.remove(name);
        }
        if let Some(v) = next.versions.get_mut(type_url) {
            v.remove(name);
        }
    }
    next.answered.insert(type_url);
    if next.answered.len() == TYPES.len() {
        let snapshot = Snapshot::build(
            next.workloads.values().cloned().collect(),
            next.services.values().cloned().collect(),
            next.policies.values().cloned().collect(),
        )
        .map_err(|e| format!("the update conflicts: {e}"))?;
        store.replace(snapshot);
    }
    *held = next;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn add_address(next: &mut Held, name: &str, bytes: &[u8]) -> Result<(), String> {
    let address = wire::Address::decode(bytes).map_err(|e| e.to_string())?;
    match address.r#type {
        Some(wire::address::Type::Workload(w)) => {
            let w = convert::workload(w).map_err(|e| e.to_string())?;
            next.workloads.insert(name.to_owned(), w);
        }
        Some(wire::address::Type::Service(s)) => {
            let s = convert::service(s).map_err(|e| e.to_string())?;
            next.services.insert(name.to_owned(), s);
        }
        None => return Err("an Address with neither workload nor service".into()),
    }
    Ok(())
}
