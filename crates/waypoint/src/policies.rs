//! What a waypoint gets beside the mesh state: its L7 policies
//! (`bowline.l7.v1.Authorization`, validated into [`policy::Policy`]) and the route tables
//! of the services it serves (`bowline.l7.v1.RouteTable`, validated into
//! [`crate::routes::Table`]; an ingress gateway's per-port tables are kept apart, by
//! Gateway and port), both over one delta ADS stream (wildcard). A resource that
//! fails validation is NACKed with its field and its previous version stays. Each set is
//! swapped whole (readers never block); on disconnect the last good sets keep serving and
//! the client reconnects with backoff. With a snapshot file, what was accepted is also
//! kept on disk (ztunnel's snapshot format) and served at start, before the control plane
//! answers — a waypoint restarted while the control plane is away still enforces its
//! policies; a file that cannot be used whole is ignored (nothing half-loaded).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use policy::Policy;
use prost::Message;
use xds::ads_client::AdsStream;
use xds::backoff::Backoff;
use xds::discovery::DeltaDiscoveryResponse;

use crate::routes::Table;

/// The types this client asks for.
const TYPES: [&str; 2] = [xds::L7_AUTHORIZATION_TYPE_URL, xds::ROUTE_TABLE_TYPE_URL];

/// Route tables by (namespace, service).
pub type RouteTables = HashMap<(String, String), Arc<Table>>;

/// Ingress gateways' tables by (namespace, Gateway), then port.
pub type IngressTables = HashMap<(String, String), BTreeMap<u16, Arc<Table>>>;

/// The L7 configuration in force.
#[derive(Debug, Default)]
pub struct PolicyStore {
    current: ArcSwap<Vec<Arc<Policy>>>,
    routes: ArcSwap<RouteTables>,
    ingress: ArcSwap<IngressTables>,
    answered: [AtomicBool; 2],
}

impl PolicyStore {
    /// The tables of ingress Gateway `gateway` (namespace, name), by port.
    pub fn ingress_ports(&self, gateway: &(String, String)) -> BTreeMap<u16, Arc<Table>> {
        self.ingress
            .load()
            .get(gateway)
            .cloned()
            .unwrap_or_default()
    }

    /// The table of port `port` of ingress Gateway `gateway`.
    pub fn ingress_table(&self, gateway: &(String, String), port: u16) -> Option<Arc<Table>> {
        self.ingress.load().get(gateway)?.get(&port).cloned()
    }

    /// Every policy held.
    pub fn load(&self) -> Arc<Vec<Arc<Policy>>> {
        self.current.load_full()
    }

    /// Every route table held.
    pub fn routes(&self) -> Arc<RouteTables> {
        self.routes.load_full()
    }

    /// Whether the control plane has answered both types once.
    pub fn loaded(&self) -> bool {
        self.answered.iter().all(|a| a.load(Ordering::Acquire))
    }

    /// The policies that apply to a request through waypoint `gateway` to `service`
    /// (`namespace`, `name`) if the destination is a service — or, `at_ingress`, at
    /// ingress gateway `gateway` (only the policies that target that Gateway).
    pub fn applying<'a>(
        policies: &'a [Arc<Policy>],
        gateway: (&'a str, &'a str),
        service: Option<(&'a str, &'a str)>,
        at_ingress: bool,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        policies.iter().map(AsRef::as_ref).filter(move |p| {
            if at_ingress {
                p.applies_at_ingress(gateway)
            } else {
                p.applies_through(gateway, service)
            }
        })
    }
}

/// Why one resource was refused.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
struct Refused {
    name: String,
    reason: String,
}

/// A held route table: (version, table, (namespace, service)).
type HeldTable = (String, Arc<Table>, (String, String));

/// What is held: per type, name → (version, validated resource), and the resources as
/// the control plane sent them (for the snapshot file).
#[derive(Debug, Default)]
struct Held {
    policies: HashMap<String, (String, Arc<Policy>)>,
    routes: HashMap<String, HeldTable>,
    raw: HashMap<&'static str, HashMap<String, Arc<xds::discovery::Resource>>>,
}

impl Held {
    /// The snapshot file's contents.
    fn contents(&self) -> ztunnel::state::snapshot_file::Contents {
        TYPES
            .iter()
            .map(|t| {
                let resources = self
                    .raw
                    .get(t)
                    .map(|r| r.values().cloned().collect())
                    .unwrap_or_default();
                ((*t).to_owned(), resources)
            })
            .collect()
    }

    fn versions(&self, type_url: &str) -> HashMap<String, String> {
        if type_url == xds::ROUTE_TABLE_TYPE_URL {
            self.routes
                .iter()
                .map(|(n, (v, _, _))| (n.clone(), v.clone()))
                .collect()
        } else {
            self.policies
                .iter()
                .map(|(n, (v, _))| (n.clone(), v.clone()))
                .collect()
        }
    }

    fn publish(&self, store: &PolicyStore, type_url: &str) {
        if type_url == xds::ROUTE_TABLE_TYPE_URL {
            let mut tables = RouteTables::new();
            let mut ingress = IngressTables::new();
            for (_, table, key) in self.routes.values() {
                match &table.ingress {
                    Some(port) => {
                        ingress
                            .entry(key.clone())
                            .or_default()
                            .insert(port.port, table.clone());
                    }
                    None => {
                        tables.insert(key.clone(), table.clone());
                    }
                }
            }
            store.routes.store(Arc::new(tables));
            store.ingress.store(Arc::new(ingress));
            store.answered[1].store(true, Ordering::Release);
        } else {
            let policies = self.policies.values().map(|(_, p)| p.clone()).collect();
            store.current.store(Arc::new(policies));
            store.answered[0].store(true, Ordering::Release);
        }
    }
}

/// Runs the client until the task is dropped; with `snapshot_file`, serves what that file
/// holds at once and keeps it up to date.
pub async fn run(
    config: ztunnel::state::xds_client::XdsConfig,
    node: xds::core::Node,
    store: Arc<PolicyStore>,
    snapshot_file: Option<std::path::PathBuf>,
) {
    use ztunnel::state::snapshot_file;
    let mut held = Held::default();
    if let Some(path) = &snapshot_file {
        match snapshot_file::read(path).await {
            Ok(Some(responses)) => {
                let mut loaded = Held::default();
                let refused: usize = responses.iter().map(|r| merge(&mut loaded, r).len()).sum();
                if refused == 0 && responses.len() == TYPES.len() {
                    for t in TYPES {
                        loaded.publish(&store, t);
                    }
                    tracing::info!(file = %path.display(), policies = loaded.policies.len(), route_tables = loaded.routes.len(), "xds: serving the waypoint snapshot until the control plane answers");
                    held = loaded;
                } else {
                    tracing::error!(file = %path.display(), "xds: ignoring the waypoint snapshot (it holds resources this waypoint refuses, or not every type)");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "xds: ignoring the waypoint snapshot"),
        }
    }
    let (save, saved) = tokio::sync::watch::channel(None);
    let writer = async {
        if let Some(path) = snapshot_file.clone() {
            snapshot_file::write_latest(path, saved).await;
        }
        std::future::pending::<()>().await;
    };
    let client = client(&config, &node, &store, &mut held, &save);
    tokio::join!(writer, client);
}

async fn client(
    config: &ztunnel::state::xds_client::XdsConfig,
    node: &xds::core::Node,
    store: &PolicyStore,
    held: &mut Held,
    save: &tokio::sync::watch::Sender<Option<Arc<ztunnel::state::snapshot_file::Contents>>>,
) {
    let mut backoff = Backoff::new(
        ztunnel::state::xds_client::RETRY_BASE,
        ztunnel::state::xds_client::RETRY_CAP,
    );
    loop {
        let subscriptions = TYPES
            .iter()
            .map(|t| ((*t).to_owned(), held.versions(t)))
            .collect();
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
                let refused = merge(held, &response);
                if TYPES.contains(&response.type_url.as_str()) {
                    held.publish(store, &response.type_url);
                    save.send_replace(Some(Arc::new(held.contents())));
                }
                let error = (!refused.is_empty()).then(|| {
                    let list: Vec<String> = refused.iter().map(ToString::to_string).collect();
                    list.join("; ")
                });
                if let Some(error) = &error {
                    tracing::warn!(type_url = %response.type_url, %error, "xds: rejected waypoint resources (NACK); keeping their previous versions");
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
                "xds: control plane closed the waypoint stream; reconnecting"
            ),
            Err(error) => {
                tracing::warn!(%error, ?retry_in, "xds: no control plane for waypoint config; serving the last good one")
            }
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// Takes `response` into `held`; the refused resources (kept at their previous version).
fn merge(held: &mut Held, response: &DeltaDiscoveryResponse) -> Vec<Refused> {
    let (routes, type_url) = match response.type_url.as_str() {
        xds::ROUTE_TABLE_TYPE_URL => (true, xds::ROUTE_TABLE_TYPE_URL),
        xds::L7_AUTHORIZATION_TYPE_URL => (false, xds::L7_AUTHORIZATION_TYPE_URL),
        other => {
            return vec![Refused {
                name: other.to_owned(),
                reason: "a type this waypoint did not ask for".into(),
            }];
        }
    };
    let mut refused = Vec::new();
    for resource in &response.resources {
        let Some(any) = resource.resource.as_ref() else {
            refused.push(Refused {
                name: resource.name.clone(),
                reason: "no body".into(),
            });
            continue;
        };
        let name = resource.name.clone();
        let version = resource.version.clone();
        let taken = if routes {
            xds::l7::RouteTable::decode(any.value.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|wire| {
                    let key = (wire.namespace.clone(), wire.service.clone());
                    Table::try_from(wire)
                        .map(|t| (key, t))
                        .map_err(|e| e.to_string())
                })
                .map(|(key, table)| {
                    held.routes
                        .insert(name.clone(), (version, Arc::new(table), key));
                })
        } else {
            xds::l7::Authorization::decode(any.value.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|wire| Policy::try_from(wire).map_err(|e| e.to_string()))
                .map(|policy| {
                    held.policies
                        .insert(name.clone(), (version, Arc::new(policy)));
                })
        };
        match taken {
            Ok(()) => {
                held.raw
                    .entry(type_url)
                    .or_default()
                    .insert(name, Arc::new(resource.clone()));
            }
            Err(reason) => refused.push(Refused { name, reason }),
        }
    }
    for name in &response.removed_resources {
        if routes {
            held.routes.remove(name);
        } else {
            held.policies.remove(name);
        }
        if let Some(raw) = held.raw.get_mut(type_url) {
            raw.remove(name);
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds::discovery::Resource;

    fn response(
        type_url: &str,
        resources: Vec<(&str, Vec<u8>)>,
        removed: Vec<&str>,
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            resources: resources
                .into_iter()
                .map(|(name, value)| Resource {
                    name: name.into(),
                    version: "1".into(),
                    resource: Some(xds::google::protobuf::Any {
                        type_url: type_url.into(),
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
        let t = xds::L7_AUTHORIZATION_TYPE_URL;
        let mut held = Held::default();
        let refused = merge(
            &mut held,
            &response(t, vec![("shop/a", policy("a"))], vec![]),
        );
        assert!(refused.is_empty(), "{refused:?}");
        let refused = merge(
            &mut held,
            &response(t, vec![("shop/b", b"garbage\xff".to_vec())], vec![]),
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].name, "shop/b");
        assert!(held.policies.contains_key("shop/a") && !held.policies.contains_key("shop/b"));
        merge(&mut held, &response(t, vec![], vec!["shop/a"]));
        assert!(held.policies.is_empty());
    }

    #[test]
    fn route_tables_are_kept_by_service_and_a_bad_one_is_refused() {
        let t = xds::ROUTE_TABLE_TYPE_URL;
        let table = xds::l7::RouteTable {
            namespace: "shop".into(),
            service: "reviews".into(),
            entries: vec![],
            ingress: None,
            tcp: vec![],
        };
        let gateway_port = xds::l7::RouteTable {
            namespace: "shop".into(),
            service: "web".into(),
            entries: vec![],
            ingress: Some(xds::l7::Ingress {
                port: 80,
                ..Default::default()
            }),
            tcp: vec![],
        };
        let mut held = Held::default();
        assert!(
            merge(
                &mut held,
                &response(
                    t,
                    vec![
                        ("shop/reviews", table.encode_to_vec()),
                        ("shop/web:80", gateway_port.encode_to_vec())
                    ],
                    vec![]
                )
            )
            .is_empty()
        );
        let bad = xds::l7::RouteTable::default().encode_to_vec();
        assert_eq!(
            merge(&mut held, &response(t, vec![("shop/x", bad)], vec![])).len(),
            1
        );
        let store = PolicyStore::default();
        held.publish(&store, t);
        assert!(
            store
                .routes()
                .contains_key(&("shop".to_owned(), "reviews".to_owned()))
        );
        assert!(!store.loaded(), "policies have not answered yet");
        let web = ("shop".to_owned(), "web".to_owned());
        assert!(store.ingress_table(&web, 80).is_some());
        assert!(
            !store.routes().contains_key(&web),
            "an ingress port is no service's table"
        );
    }
}
