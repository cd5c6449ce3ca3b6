//! The speaker's picture of the cluster: reflectors over Services, EndpointSlices, Nodes, pools
//! and advertisements, and the [`Facts`] the election reads from them.
//!
//! The stores keep the last state they saw: when the API server goes away the watchers retry
//! with backoff and the speaker goes on electing, and failing over, from that state.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crds::{IPAddressPool, L2Advertisement};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use model::{ClassPolicy, Labels, Pool, ServiceKey, TrafficPolicy};
use speaker_core::election::NodeName;
use tokio::sync::Notify;

use speaker_core::decide::{Advertisement, EXCLUDE_LABEL, Facts, NodeFacts, ServiceFacts};

/// The reflectors' stores.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub nodes: Store<Node>,
    pub pools: Store<IPAddressPool>,
    pub advertisements: Store<L2Advertisement>,
}

impl Stores {
    /// Starts one reflector per kind; `changed` is notified after every event of any of them.
    pub fn start(client: &Client, changed: Arc<Notify>) -> Stores {
        Stores {
            services: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
            slices: reflect(
                Api::all(client.clone()),
                watcher::Config::default().labels("kubernetes.io/service-name"),
                &changed,
            ),
            nodes: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
            pools: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
            advertisements: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changed,
            ),
        }
    }

    /// Waits until every store has had its first complete list.
    pub async fn wait_ready(&self) {
        let _ = tokio::join!(
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.pools.wait_until_ready(),
            self.advertisements.wait_until_ready(),
        );
    }

    /// The election's input as the stores hold it now, read through the model: the same
    /// Services, pools and advertisements the controller decides from.
    pub fn facts(&self, classes: ClassPolicy) -> Facts {
        let nodes = self.nodes.state();
        let pools: Vec<Pool> = self
            .pools
            .state()
            .iter()
            .map(|p| crds::read::pool(p))
            .collect();
        let advertisements: Vec<model::Advertisement> = self
            .advertisements
            .state()
            .iter()
            .map(|ad| crds::read::advertisement(ad))
            .collect();
        let slices = self.slices.state();

        let mut facts = Facts {
            nodes: nodes
                .iter()
                .map(|n| (NodeName::new(n.name_any()), node_facts(n)))
                .collect(),
            ..Facts::default()
        };
        for svc in self.services.state().iter() {
            let service = crds::read::service(svc);
            if !service.is_ours(classes) {
                continue;
            }
            let mut addresses = BTreeSet::new();
            for ip in &service.ingress {
                // Only addresses of our pools are ours to announce; an address two pools share
                // belongs where the controller recorded it, as it does for the controller.
                let Some(pool) = model::home_pool(&pools, *ip, service.allocated_from.as_deref())
                else {
                    continue;
                };
                addresses.insert(*ip);
                let covering = advertisements
                    .iter()
                    .filter(|ad| ad.covers_pool(&pool.name, &pool.labels))
                    .map(|ad| advertisement(ad, &nodes))
                    .collect();
                facts.advertisements.insert(*ip, covering);
            }
            if addresses.is_empty() {
                continue;
            }
            let local = service.traffic_policy == TrafficPolicy::Local;
            facts.services.push(ServiceFacts {
                endpoint_nodes: if local {
                    endpoint_nodes(&slices, &service.key)
                } else {
                    BTreeSet::new()
                },
                service: service.key,
                addresses: addresses.into_iter().collect(),
                local,
                conflict_reported: service.conflict_reported,
            });
        }
        facts
    }

    /// Where the other speakers listen: every Node's first InternalIP (IPv4 preferred).
    pub fn gossip_seeds(&self, port: u16) -> Vec<SocketAddr> {
        self.nodes
            .state()
            .iter()
            .filter_map(|n| internal_ip(n))
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    }

    /// A Node by name, from the store.
    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| n.name_any() == name)
    }

    /// A Service by key, from the store; not a later Service of the same name.
    pub fn service(&self, service: &ServiceKey) -> Option<Arc<Service>> {
        self.services
            .get(&reflector::ObjectRef::new(&service.name).within(&service.namespace))
            .filter(|svc| svc.metadata.uid.as_deref().unwrap_or_default() == service.uid)
    }
}

fn reflect<K>(api: Api<K>, config: watcher::Config, changed: &Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<K>();
    let changed = changed.clone();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(
        writer,
        watcher(api, config)
            .backoff(common::watch_backoff())
            .modify(|o| o.managed_fields_mut().clear()),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(kind, "watch is back");
                    }
                    changed.notify_one();
                }
                // The store keeps its last state; the speaker goes on from it.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(kind, "watch failing, working from the last state: {e}");
                }
                Err(_) => {}
            }
        }
    });
    store
}

/// The internal address of a Node the speakers gossip on.
pub fn internal_ip(node: &Node) -> Option<IpAddr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    let ips: Vec<IpAddr> = addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    ips.iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| ips.first())
        .copied()
}

fn node_facts(node: &Node) -> NodeFacts {
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        });
    NodeFacts {
        excluded: node.labels().contains_key(EXCLUDE_LABEL) || network_unavailable,
        cordoned: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
    }
}

/// Nodes with an endpoint of the Service that is ready, or serving while terminating (its
/// connections still work, and kube-proxy still uses it when nothing else is ready).
fn endpoint_nodes(slices: &[Arc<EndpointSlice>], service: &ServiceKey) -> BTreeSet<NodeName> {
    slices
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(service.namespace.as_str())
                && s.labels().get("kubernetes.io/service-name") == Some(&service.name)
        })
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            c.ready.unwrap_or(true) || c.serving.unwrap_or(false)
        })
        .filter_map(|e| e.node_name.clone())
        .map(NodeName::new)
        .collect()
}

/// The election's view of an advertisement: the nodes its selectors pick now.
fn advertisement(ad: &model::Advertisement, nodes: &[Arc<Node>]) -> Advertisement {
    let selected = ad.selects_some_nodes.then(|| {
        nodes
            .iter()
            .filter(|n| {
                let labels: Labels = n.labels().clone();
                ad.selects_node(&labels)
            })
            .map(|n| NodeName::new(n.name_any()))
            .collect()
    });
    Advertisement {
        name: ad.name.clone(),
        nodes: selected,
        interfaces: (!ad.interfaces.is_empty()).then(|| ad.interfaces.clone()),
    }
}
