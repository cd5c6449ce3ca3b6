//! The speaker's picture of the cluster: reflectors over Services, EndpointSlices, Nodes, pools
//! and advertisements, the [`Change`]s they see, and the facts the election reads from them.
//!
//! The stores keep the last state they saw: when the API server goes away the watchers retry
//! with backoff and the speaker goes on electing, and failing over, from that state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crds::{IPAddressPool, L2Advertisement};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use model::{ClassPolicy, Labels, Pool, ServiceKey, TrafficPolicy};
use speaker_core::election::NodeName;
use tokio::sync::mpsc;

use speaker_core::decide::{Advertisement, EXCLUDE_LABEL, NodeFacts, ServiceFacts};

/// What a watch event changed, as far as the election cares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Service {
        namespace: String,
        name: String,
    },
    /// An EndpointSlice of this Service.
    Endpoints {
        namespace: String,
        service: String,
    },
    Node(String),
    /// A pool or an advertisement: which advertisements cover which addresses.
    Advertising,
    /// Services or EndpointSlices were listed anew (at start, or after a broken watch
    /// resumed, when deletions may have gone unseen): every Service is read again.
    AllServices,
    /// Nodes were listed anew: every Node is read again.
    AllNodes,
}

/// A Service's share of the election's input: its facts, and the advertisements covering
/// each of its addresses.
pub struct ServiceInput {
    pub facts: ServiceFacts,
    pub advertisements: BTreeMap<IpAddr, Vec<Advertisement>>,
}

/// EndpointSlices by the namespace and name of their Service.
type SlicesByService = BTreeMap<(String, String), Vec<Arc<EndpointSlice>>>;

/// The pools and advertisements as the election reads them: their specs, not their status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Advertising {
    pools: Vec<Pool>,
    advertisements: Vec<model::Advertisement>,
}

/// What every Service's input is read against, read once for a batch of changes.
pub struct Context {
    pools: Vec<Pool>,
    advertisements: Vec<model::Advertisement>,
    nodes: Vec<Arc<Node>>,
    /// The store, read only if a Local Service needs it: most batches never clone it.
    slices: Store<EndpointSlice>,
    /// The slices by Service, built the first time a Local Service asks.
    slices_by_service: std::sync::OnceLock<SlicesByService>,
    classes: ClassPolicy,
}

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
    /// Starts one reflector per kind; each watch event that matters to the election is sent
    /// to `changes`.
    pub fn start(client: &Client, changes: mpsc::UnboundedSender<Change>) -> Stores {
        Stores {
            services: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changes,
                |svc: &Service| Change::Service {
                    namespace: svc.namespace().unwrap_or_default(),
                    name: svc.name_any(),
                },
                Change::AllServices,
            ),
            slices: reflect(
                Api::all(client.clone()),
                watcher::Config::default().labels(SERVICE_NAME_LABEL),
                &changes,
                |slice: &EndpointSlice| Change::Endpoints {
                    namespace: slice.namespace().unwrap_or_default(),
                    service: slice
                        .labels()
                        .get(SERVICE_NAME_LABEL)
                        .cloned()
                        .unwrap_or_default(),
                },
                Change::AllServices,
            ),
            nodes: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changes,
                |node: &Node| Change::Node(node.name_any()),
                Change::AllNodes,
            ),
            pools: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changes,
                |_: &IPAddressPool| Change::Advertising,
                Change::Advertising,
            ),
            advertisements: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                &changes,
                |_: &L2Advertisement| Change::Advertising,
                Change::Advertising,
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

    /// The stores' pools, advertisements, Nodes and EndpointSlices as they are now, read
    /// through the model: the same pools and advertisements the controller decides from.
    pub fn context(&self, classes: ClassPolicy) -> Context {
        Context {
            pools: self
                .pools
                .state()
                .iter()
                .map(|p| crds::read::pool(p))
                .collect(),
            advertisements: self
                .advertisements
                .state()
                .iter()
                .map(|ad| crds::read::advertisement(ad))
                .collect(),
            nodes: self.nodes.state(),
            slices: self.slices.clone(),
            slices_by_service: std::sync::OnceLock::new(),
            classes,
        }
    }

    /// Every Service in the store by namespace and name.
    pub fn service_names(&self) -> Vec<(String, String)> {
        self.services
            .state()
            .iter()
            .map(|svc| (svc.namespace().unwrap_or_default(), svc.name_any()))
            .collect()
    }

    /// The election's input from one Service, if it is ours and holds addresses of our
    /// pools.
    pub fn service_input(
        &self,
        namespace: &str,
        name: &str,
        context: &Context,
    ) -> Option<ServiceInput> {
        let svc = self
            .services
            .get(&reflector::ObjectRef::new(name).within(namespace))?;
        let service = crds::read::service(&svc);
        if !service.is_ours(context.classes) {
            return None;
        }
        let mut addresses = BTreeSet::new();
        let mut advertisements = BTreeMap::new();
        for ip in &service.ingress {
            // Only addresses of our pools are ours to announce; an address two pools share
            // belongs where the controller recorded it, as it does for the controller.
            let Some(pool) =
                model::home_pool(&context.pools, *ip, service.allocated_from.as_deref())
            else {
                continue;
            };
            addresses.insert(*ip);
            let covering = context
                .advertisements
                .iter()
                .filter(|ad| ad.covers_pool(&pool.name, &pool.labels))
                .map(|ad| advertisement(ad, &context.nodes))
                .collect();
            advertisements.insert(*ip, covering);
        }
        if addresses.is_empty() {
            return None;
        }
        let local = service.traffic_policy == TrafficPolicy::Local;
        Some(ServiceInput {
            facts: ServiceFacts {
                endpoint_nodes: if local {
                    endpoint_nodes(context.slices_of(&service.key))
                } else {
                    BTreeSet::new()
                },
                service: service.key,
                addresses: addresses.into_iter().collect(),
                local,
                conflict_reported: service.conflict_reported,
            },
            advertisements,
        })
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
        self.nodes.get(&reflector::ObjectRef::new(name))
    }

    /// Every Node's name in the store.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.state().iter().map(|n| n.name_any()).collect()
    }

    /// A Service by key, from the store; not a later Service of the same name.
    pub fn service(&self, service: &ServiceKey) -> Option<Arc<Service>> {
        self.services
            .get(&reflector::ObjectRef::new(&service.name).within(&service.namespace))
            .filter(|svc| svc.metadata.uid.as_deref().unwrap_or_default() == service.uid)
    }
}

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A reflector whose events go to `changes`: `one` for an object applied or deleted,
/// `relisted` when a (re)list completes.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changes: &mpsc::UnboundedSender<Change>,
    one: fn(&K) -> Change,
    relisted: Change,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<K>();
    let changes = changes.clone();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(writer, common::watch(api, config));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(kind, "watch is back");
                    }
                    let change = match &event {
                        watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                            one(object)
                        }
                        watcher::Event::InitDone => relisted.clone(),
                        watcher::Event::Init | watcher::Event::InitApply(_) => continue,
                    };
                    if changes.send(change).is_err() {
                        return;
                    }
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

impl Context {
    /// The pools and advertisements, in name order. A pool's status (its usage, rewritten by
    /// the controller after every allocation) is not part of it: only a change of this makes
    /// every Service worth reading again.
    pub fn advertising(&self) -> Advertising {
        let mut pools = self.pools.clone();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        let mut advertisements = self.advertisements.clone();
        advertisements.sort_by(|a, b| a.name.cmp(&b.name));
        Advertising {
            pools,
            advertisements,
        }
    }

    /// Whether some advertisement picks nodes by label (else the Nodes' labels do not matter
    /// to the election).
    pub fn selects_nodes(&self) -> bool {
        self.advertisements.iter().any(|ad| ad.selects_some_nodes)
    }

    /// The EndpointSlices of a Service.
    fn slices_of(&self, service: &ServiceKey) -> &[Arc<EndpointSlice>] {
        let index = self.slices_by_service.get_or_init(|| {
            let mut index = SlicesByService::new();
            for slice in self.slices.state() {
                if let Some(name) = slice.labels().get(SERVICE_NAME_LABEL) {
                    index
                        .entry((slice.namespace().unwrap_or_default(), name.clone()))
                        .or_default()
                        .push(slice.clone());
                }
            }
            index
        });
        index
            .get(&(service.namespace.clone(), service.name.clone()))
            .map_or(&[], Vec::as_slice)
    }
}

/// The election's view of a Node, and the address its speaker gossips on.
pub fn node_facts(node: &Node) -> NodeFacts {
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
fn endpoint_nodes(slices: &[Arc<EndpointSlice>]) -> BTreeSet<NodeName> {
    slices
        .iter()
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
