//! The L7 policies a waypoint enforces: `bowline.l7.v1.Authorization` over delta ADS
//! (wildcard), each validated into a [`policy::Policy`] — a bad one is NACKed with its
//! field and the previous version stays. The set is swapped whole (readers never block);
//! on disconnect the last good set keeps serving and the client reconnects with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use policy::Policy;
use prost::Message;
use xds::ads_client::AdsStream;
use xds::backoff::Backoff;
use xds::discovery::DeltaDiscoveryResponse;

/// The policies in force.
#[derive(Debug, Default)]
pub struct PolicyStore {
    current: ArcSwap<Vec<Arc<Policy>>>,
    loaded: AtomicBool,
}

impl PolicyStore {
    /// Every policy held.
    pub fn load(&self) -> Arc<Vec<Arc<Policy>>> {
        self.current.load_full()
    }

    /// Whether the control plane has answered once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn replace(&self, policies: Vec<Arc<Policy>>) {
        self.current.store(Arc::new(policies));
        self.loaded.store(true, Ordering::Release);
    }

    /// The policies that apply to a request through waypoint `gateway` to `service`
    /// (`namespace`, `name`) if the destination is a service.
    pub fn applying<'a>(
        policies: &'a [Arc<Policy>],
        gateway: (&'a str, &'a str),
        service: Option<(&'a str, &'a str)>,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        policies
            .iter()
            .map(AsRef::as_ref)
            .filter(move |p| p.applies_through(gateway, service))
    }
}

/// Why one response was (partly) refused.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
struct Refused {
    name: String,
    reason: String,
}

/// Runs the client until the task is dropped.
pub async fn run(
    config: ztunnel::state::xds_client::XdsConfig,
    node: xds::core::Node,
    store: Arc<PolicyStore>,
) {
    let mut held: HashMap<String, (String, Arc<Policy>)> = HashMap::new();
    let mut backoff = Backoff::new(
        ztunnel::state::xds_client::RETRY_BASE,
        ztunnel::state::xds_client::RETRY_CAP,
    );
    loop {
        let versions = held
            .iter()
            .map(|(name, (version, _))| (name.clone(), version.clone()))
            .collect();
        let subscriptions = vec![(xds::L7_AUTHORIZATION_TYPE_URL.to_owned(), versions)];
        let result = async {
            let mut stream = AdsStream::open(
                &config.url,
                config.root_pem.as_deref(),
                node.clone(),
                subscriptions,
            )
            .await?;
            while let Some(response) = stream.next().await? {
                backoff.reset();
                let refused = merge(&mut held, &response);
                let policies = held.values().map(|(_, p)| p.clone()).collect();
                store.replace(policies);
                let error = (!refused.is_empty()).then(|| {
                    let list: Vec<String> = refused.iter().map(ToString::to_string).collect();
                    list.join("; ")
                });
                if let Some(error) = &error {
                    tracing::warn!(%error, "xds: rejected L7 policies (NACK); keeping their previous versions");
                }
                stream.answer(&response, error).await?;
            }
            Ok::<(), xds::XdsError>(())
        }
        .await;
        let retry_in = backoff.next_delay();
        match result {
            Ok(()) => tracing::info!(
                ?retry_in,
                "xds: control plane closed the L7 stream; reconnecting"
            ),
            Err(error) => {
                tracing::warn!(%error, ?retry_in, "xds: no control plane for L7 policies; serving the last good ones")
            }
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// Takes `response` into `held`; the refused resources (kept at their previous version).
fn merge(
    held: &mut HashMap<String, (String, Arc<Policy>)>,
    response: &DeltaDiscoveryResponse,
) -> Vec<Refused> {
    let mut refused = Vec::new();
    if response.type_url != xds::L7_AUTHORIZATION_TYPE_URL {
        refused.push(Refused {
            name: response.type_url.clone(),
            reason: "a type this waypoint did not ask for".into(),
        });
        return refused;
    }
    for resource in &response.resources {
        let decoded = resource
            .resource
            .as_ref()
            .ok_or_else(|| "no body".to_owned())
            .and_then(|any| {
                xds::l7::Authorization::decode(any.value.as_ref()).map_err(|e| e.to_string())
            })
            .and_then(|wire| Policy::try_from(wire).map_err(|e| e.to_string()));
        match decoded {
            Ok(policy) => {
                held.insert(
                    resource.name.clone(),
                    (resource.version.clone(), Arc::new(policy)),
                );
            }
            Err(reason) => refused.push(Refused {
                name: resource.name.clone(),
                reason,
            }),
        }
    }
    for name in &response.removed_resources {
        held.remove(name);
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds::discovery::Resource;

    fn response(resources: Vec<(&str, Vec<u8>)>, removed: Vec<&str>) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: xds::L7_AUTHORIZATION_TYPE_URL.into(),
            resources: resources
                .into_iter()
                .map(|(name, value)| Resource {
                    name: name.into(),
                    version: "1".into(),
                    resource: Some(xds::google::protobuf::Any {
                        type_url: xds::L7_AUTHORIZATION_TYPE_URL.into(),
                        value,
                    }),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    fn policy(name: &str) -> Vec<u8> {
        xds::l7::Authorization {
            name: name.into(),
            namespace: "shop".into(),
            targets: vec![xds::l7::Target {
                kind: xds::l7::target::Kind::Service as i32,
                namespace: "shop".into(),
                name: "reviews".into(),
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_bad_policy_is_refused_by_name_and_the_good_ones_stay() {
        let mut held = HashMap::new();
        let refused = merge(&mut held, &response(vec![("shop/a", policy("a"))], vec![]));
        assert!(refused.is_empty(), "{refused:?}");
        let refused = merge(
            &mut held,
            &response(vec![("shop/b", b"garbage\xff".to_vec())], vec![]),
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].name, "shop/b");
        assert!(held.contains_key("shop/a") && !held.contains_key("shop/b"));
        merge(&mut held, &response(vec![], vec!["shop/a"]));
        assert!(held.is_empty());
    }
}
