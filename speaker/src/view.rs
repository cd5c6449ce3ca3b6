//! The speaker's picture of the cluster: watches over Services, EndpointSlices, Nodes, pools
//! and advertisements, kept as the facts the election reads from them, and the [`Change`]s
//! they see.
//!
//! The caches keep the last state they saw: when the API server goes away the watchers retry
//! with backoff and the speaker goes on electing, and failing over, from that state.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crds::{BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use model::bgp::{BfdProfile, BgpAdvertisement, BgpPeer};
use model::{ClassPolicy, Labels, Pool, ServiceKey, TrafficPolicy};
use speaker_core::election::NodeName;
use tokio::sync::mpsc;

use crate::cache::{Cache, Watch};
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
    /// A BGPPeer, BGPAdvertisement or BFDProfile: BGP mode's sessions and routes.
    Bgp,
}

/// A Service's share of the election's input: its facts, and the advertisements covering
/// each of its addresses.
pub struct ServiceInput {
    pub facts: ServiceFacts,
    pub advertisements: BTreeMap<IpAddr, Vec<Advertisement>>,
}

/// What the speaker keeps of a Service of ours (of a class it takes, and `LoadBalancer`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub key: ServiceKey,
    /// `status.loadBalancer.ingress`.
    pub ingress: Vec<IpAddr>,
    /// The pool, as [`Names`] shares it.
    pub allocated_from: Option<Arc<str>>,
    pub traffic_policy: TrafficPolicy,
    pub conflict_reported: bool,
    pub generation: Option<i64>,
    /// The `Announced` condition as the API server has it.
    pub announced: Option<Announced>,
}

/// What the speaker reads of a Service's `Announced` condition: whether it should be written
/// again, and who it names. Its reason and message are kept as a digest: the text (a hundred
/// bytes a Service) is only ever compared with the condition wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub status: bool,
    /// [`Announced::digest`] of the reason and message.
    pub digest: u64,
    /// The node a True condition names: its message's last word (the admission policy makes
    /// every writer sign it so).
    /// (As [`Names`] shares it.)
    pub by: Option<Arc<str>>,
    pub last_transition_time: Time,
}

impl Announced {
    /// A digest of a condition's reason and message. std's `DefaultHasher::new` is the same in
    /// every run; a collision would only delay a rewrite until the text changes again.
    pub fn digest(reason: &str, message: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (reason, message).hash(&mut hasher);
        hasher.finish()
    }
}

/// One shared copy of each pool and node name the Service records hold: a few dozen distinct
/// names, where a copy apiece was two small allocations a Service (at least 64 bytes of heap
/// a Service, glibc spending 32 bytes on the smallest block).
#[derive(Debug, Default)]
pub struct Names {
    held: Mutex<HeldNames>,
}

#[derive(Debug, Default)]
struct HeldNames {
    names: HashSet<Arc<str>>,
    /// How many names trigger the next sweep.
    sweep_at: usize,
}

impl Names {
    pub fn get(&self, name: &str) -> Arc<str> {
        let mut held = self.held();
        if let Some(name) = held.names.get(name) {
            return name.clone();
        }
        // A node or pool gone leaves its name held here alone. Sweeping such names each time
        // the set has doubled since the last sweep keeps the work per new name constant.
        if held.names.len() >= held.sweep_at {
            held.names.retain(|name| Arc::strong_count(name) > 1);
            held.sweep_at = (2 * held.names.len()).max(64);
        }
        let name: Arc<str> = name.into();
        held.names.insert(name.clone());
        name
    }

    /// How many names are held.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.held().names.len()
    }

    /// The set; a panic elsewhere while it was held leaves it whole (each change is one
    /// insert or one sweep).
    fn held(&self) -> std::sync::MutexGuard<'_, HeldNames> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ServiceRecord {
    /// The record of a Service ferrolb announces for, read through the one Service parser;
    /// `None` for anybody else's.
    pub fn of(svc: &Service, classes: ClassPolicy, names: &Names) -> Option<ServiceRecord> {
        let service = crds::read::service(svc);
        service.is_ours(classes).then(|| ServiceRecord {
            key: service.key,
            ingress: service.ingress,
            allocated_from: service
                .allocated_from
                .as_deref()
                .map(|pool| names.get(pool)),
            traffic_policy: service.traffic_policy,
            conflict_reported: service.conflict_reported,
            generation: svc.metadata.generation,
            announced: svc
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.type_ == model::service::ANNOUNCED_CONDITION)
                })
                .map(|c| Announced {
                    status: c.status == "True",
                    digest: Announced::digest(&c.reason, &c.message),
                    by: (c.status == "True")
                        .then(|| model::announcement::writer(&c.message))
                        .flatten()
                        .map(|node| names.get(node)),
                    last_transition_time: c.last_transition_time.clone(),
                }),
        })
    }

    /// A Service's new record takes its old one's key when they name the same Service: the
    /// election, the loop and the reports hold that one, and a key apiece per condition write
    /// was three copies a Service (1.7 MB at 10,000, heaptrack).
    pub fn carry(new: &mut ServiceRecord, old: &ServiceRecord) {
        if new.key == old.key {
            new.key = old.key.clone();
        }
    }

    /// The node the `Announced` condition says announces the Service.
    pub fn announced_by(&self) -> Option<&str> {
        self.announced.as_ref()?.by.as_deref()
    }
}

/// What the speaker keeps of an EndpointSlice: its Service, and the nodes it has a usable
/// endpoint on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceRecord {
    pub namespace: String,
    pub service: String,
    pub endpoint_nodes: BTreeSet<NodeName>,
}

impl SliceRecord {
    pub fn of(slice: &EndpointSlice) -> Option<SliceRecord> {
        Some(SliceRecord {
            namespace: slice.namespace().unwrap_or_default(),
            service: slice.labels().get(SERVICE_NAME_LABEL)?.clone(),
            endpoint_nodes: endpoint_nodes(slice),
        })
    }
}

/// What of a Node the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub facts: NodeFacts,
    /// What advertisements' node selectors read.
    pub labels: Labels,
    /// Where its speaker gossips.
    pub gossip_ip: Option<IpAddr>,
}

impl NodeRecord {
    pub fn of(node: &Node) -> NodeRecord {
        NodeRecord {
            name: node.name_any(),
            facts: node_facts(node),
            labels: node.labels().clone(),
            gossip_ip: internal_ip(node),
        }
    }
}

/// EndpointSlices by the namespace and name of their Service.
type SlicesByService = BTreeMap<(String, String), Vec<Arc<SliceRecord>>>;

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
    nodes: Vec<Arc<NodeRecord>>,
    /// The cache, read only if a Local Service needs it: most batches never index it.
    slices: Cache<SliceRecord>,
    /// The slices by Service, built the first time a Local Service asks.
    slices_by_service: std::sync::OnceLock<SlicesByService>,
}

/// The watch caches.
#[derive(Clone)]
pub struct Stores {
    services: Cache<ServiceRecord>,
    slices: Cache<SliceRecord>,
    nodes: Cache<NodeRecord>,
    pools: Cache<Pool>,
    advertisements: Cache<model::Advertisement>,
    bgp_peers: Cache<BgpPeer>,
    bgp_advertisements: Cache<BgpAdvertisement>,
    bfd_profiles: Cache<BfdProfile>,
}

impl Stores {
    /// Starts one watch per kind; each event that changes what the election reads is sent
    /// to `changes`.
    pub fn start(
        client: &Client,
        classes: ClassPolicy,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Stores {
        Stores {
            services: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                Watch {
                    project: {
                        let names = Names::default();
                        Box::new(move |svc: &Service| ServiceRecord::of(svc, classes, &names))
                    },
                    changed: |svc: &Service| Change::Service {
                        namespace: svc.namespace().unwrap_or_default(),
                        name: svc.name_any(),
                    },
                    relisted: Change::AllServices,
                    carry: Some(ServiceRecord::carry),
                },
                changes.clone(),
            ),
            slices: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default().labels(SERVICE_NAME_LABEL),
                Watch {
                    project: Box::new(SliceRecord::of),
                    changed: |slice: &EndpointSlice| Change::Endpoints {
                        namespace: slice.namespace().unwrap_or_default(),
                        service: slice
                            .labels()
                            .get(SERVICE_NAME_LABEL)
                            .cloned()
                            .unwrap_or_default(),
                    },
                    relisted: Change::AllServices,
                    carry: None,
                },
                changes.clone(),
            ),
            nodes: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                Watch {
                    project: Box::new(|node: &Node| Some(NodeRecord::of(node))),
                    changed: |node: &Node| Change::Node(node.name_any()),
                    relisted: Change::AllNodes,
                    carry: None,
                },
                changes.clone(),
            ),
            pools: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                Watch {
                    // The spec only: the controller rewrites a pool's status (its usage)
                    // after allocations, which changes nothing here.
                    project: Box::new(|pool: &IPAddressPool| Some(crds::read::pool(pool))),
                    changed: |_| Change::Advertising,
                    relisted: Change::Advertising,
                    carry: None,
                },
                changes.clone(),
            ),
            advertisements: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                Watch {
                    project: Box::new(|ad: &L2Advertisement| Some(crds::read::advertisement(ad))),
                    changed: |_| Change::Advertising,
                    relisted: Change::Advertising,
                    carry: None,
                },
                changes.clone(),
            ),
            bgp_peers: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                Watch {
                    project: Box::new(|peer: &BGPPeer| readable(peer, crds::read::bgp_peer)),
                    changed: |_| Change::Bgp,
                    relisted: Change::Bgp,
                    carry: None,
                },
                changes.clone(),
            ),
            bgp_advertisements: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                Watch {
                    project: Box::new(|ad: &BGPAdvertisement| {
                        readable(ad, crds::read::bgp_advertisement)
                    }),
                    changed: |_| Change::Bgp,
                    relisted: Change::Bgp,
                    carry: None,
                },
                changes.clone(),
            ),
            bfd_profiles: Cache::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                Watch {
                    project: Box::new(|profile: &BFDProfile| {
                        Some(crds::read::bfd_profile(profile))
                    }),
                    changed: |_| Change::Bgp,
                    relisted: Change::Bgp,
                    carry: None,
                },
                changes,
            ),
        }
    }

    /// Waits until every cache of layer 2 mode has had its first complete list (BGP mode's
    /// follow on their own: a cluster without BGP starts as fast as before).
    pub async fn wait_ready(&self) {
        let _ = tokio::join!(
            self.services.wait_ready(),
            self.slices.wait_ready(),
            self.nodes.wait_ready(),
            self.pools.wait_ready(),
            self.advertisements.wait_ready(),
        );
    }

    /// The pools, advertisements, Nodes and EndpointSlices as they are now, read through the
    /// model: the same pools and advertisements the controller decides from.
    pub fn context(&self) -> Context {
        Context {
            pools: self.pools.all().iter().map(|p| Pool::clone(p)).collect(),
            advertisements: self
                .advertisements
                .all()
                .iter()
                .map(|ad| model::Advertisement::clone(ad))
                .collect(),
            nodes: self.nodes.all(),
            slices: self.slices.clone(),
            slices_by_service: std::sync::OnceLock::new(),
        }
    }

    /// The BGPPeers whose `nodeSelectors` select `node`, by name.
    pub fn bgp_peers_of(&self, node: &str) -> Vec<Arc<BgpPeer>> {
        let Some(node) = self.node(node) else {
            return Vec::new();
        };
        let mut peers: Vec<Arc<BgpPeer>> = self
            .bgp_peers
            .all()
            .into_iter()
            .filter(|peer| peer.nodes.selects_node(&node.labels))
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }

    /// A BFDProfile by name.
    pub fn bfd_profile(&self, name: &str) -> Option<Arc<BfdProfile>> {
        self.bfd_profiles.get("", name)
    }

    /// What BGP mode decides from: the Nodes, the Services holding addresses of our pools,
    /// and the BGPAdvertisements covering each address's pool, their node selectors resolved.
    pub fn bgp_facts(&self, context: &Context) -> speaker_core::decide::bgp::Facts {
        let advertisements: Vec<speaker_core::decide::bgp::BgpAdvertisement> = self
            .bgp_advertisements
            .all()
            .into_iter()
            .map(|spec| speaker_core::decide::bgp::BgpAdvertisement {
                nodes: selected_nodes(&spec.scope, &context.nodes),
                spec,
            })
            .collect();
        let mut facts = speaker_core::decide::bgp::Facts {
            nodes: context
                .nodes
                .iter()
                .map(|n| (NodeName::new(n.name.as_str()), n.facts.clone()))
                .collect(),
            ..Default::default()
        };
        if advertisements.is_empty() {
            return facts;
        }
        for (namespace, name) in self.service_names() {
            let Some((service, pools)) = self.holding(&namespace, &name, context) else {
                continue;
            };
            for (ip, pool) in pools {
                facts.advertisements.entry(ip).or_insert_with(|| {
                    advertisements
                        .iter()
                        .filter(|ad| ad.spec.scope.covers_pool(&pool.name, &pool.labels))
                        .cloned()
                        .collect()
                });
            }
            facts.services.push(service);
        }
        facts
    }

    /// Every Service of ours by namespace and name.
    pub fn service_names(&self) -> Vec<(String, String)> {
        self.services.keys()
    }

    /// The election's input from one Service, if it is ours and holds addresses of our
    /// pools.
    pub fn service_input(
        &self,
        namespace: &str,
        name: &str,
        context: &Context,
    ) -> Option<ServiceInput> {
        let (facts, pools) = self.holding(namespace, name, context)?;
        let advertisements = pools
            .into_iter()
            .map(|(ip, pool)| {
                let covering = context
                    .advertisements
                    .iter()
                    .filter(|ad| ad.covers_pool(&pool.name, &pool.labels))
                    .map(|ad| advertisement(ad, &context.nodes))
                    .collect();
                (ip, covering)
            })
            .collect();
        Some(ServiceInput {
            facts,
            advertisements,
        })
    }

    /// A Service's facts and the home pool of each of its addresses, if it is ours and holds
    /// addresses of our pools: what both modes read of it.
    fn holding<'c>(
        &self,
        namespace: &str,
        name: &str,
        context: &'c Context,
    ) -> Option<(ServiceFacts, BTreeMap<IpAddr, &'c Pool>)> {
        let service = self.services.get(namespace, name)?;
        // Only addresses of our pools are ours to announce; an address two pools share
        // belongs where the controller recorded it, as it does for the controller.
        let pools: BTreeMap<IpAddr, &Pool> = service
            .ingress
            .iter()
            .filter_map(|ip| {
                model::home_pool(&context.pools, *ip, service.allocated_from.as_deref())
                    .map(|pool| (*ip, pool))
            })
            .collect();
        if pools.is_empty() {
            return None;
        }
        let local = service.traffic_policy == TrafficPolicy::Local;
        let facts = ServiceFacts {
            endpoint_nodes: if local {
                context
                    .slices_of(&service.key)
                    .iter()
                    .flat_map(|s| s.endpoint_nodes.iter().cloned())
                    .collect()
            } else {
                BTreeSet::new()
            },
            service: service.key.clone(),
            addresses: pools.keys().copied().collect(),
            local,
            conflict_reported: service.conflict_reported,
        };
        Some((facts, pools))
    }

    /// Where the other speakers listen: every Node's first InternalIP (IPv4 preferred).
    pub fn gossip_seeds(&self, port: u16) -> Vec<SocketAddr> {
        self.nodes
            .all()
            .iter()
            .filter_map(|n| n.gossip_ip)
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    }

    /// A Node by name.
    pub fn node(&self, name: &str) -> Option<Arc<NodeRecord>> {
        self.nodes.get("", name)
    }

    /// Every Node's name.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .keys()
            .into_iter()
            .map(|(_, name)| name)
            .collect()
    }

    /// A Service by key; not a later Service of the same name.
    pub fn service(&self, service: &ServiceKey) -> Option<Arc<ServiceRecord>> {
        self.services
            .get(&service.namespace, &service.name)
            .filter(|svc| svc.key.uid == service.uid)
    }
}

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The internal address of a Node the speakers gossip on.
fn internal_ip(node: &Node) -> Option<IpAddr> {
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
    fn slices_of(&self, service: &ServiceKey) -> &[Arc<SliceRecord>] {
        let index = self.slices_by_service.get_or_init(|| {
            let mut index = SlicesByService::new();
            for slice in self.slices.all() {
                index
                    .entry((slice.namespace.clone(), slice.service.clone()))
                    .or_default()
                    .push(slice);
            }
            index
        });
        index
            .get(&(service.namespace.clone(), service.name.clone()))
            .map_or(&[], Vec::as_slice)
    }
}

/// The election's view of a Node.
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

/// Nodes with an endpoint in the slice that is ready, or serving while terminating (its
/// connections still work, and kube-proxy still uses it when nothing else is ready).
fn endpoint_nodes(slice: &EndpointSlice) -> BTreeSet<NodeName> {
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            c.ready.unwrap_or(true) || c.serving.unwrap_or(false)
        })
        .filter_map(|e| e.node_name.clone())
        .map(NodeName::new)
        .collect()
}

/// The election's view of an advertisement: the nodes its selectors pick now.
fn advertisement(ad: &model::Advertisement, nodes: &[Arc<NodeRecord>]) -> Advertisement {
    Advertisement {
        name: ad.name.clone(),
        nodes: selected_nodes(ad, nodes),
        interfaces: (!ad.interfaces.is_empty()).then(|| ad.interfaces.clone()),
    }
}

/// The nodes a scope's `nodeSelectors` pick now; `None` when it selects every node.
fn selected_nodes(
    scope: &model::Advertisement,
    nodes: &[Arc<NodeRecord>],
) -> Option<BTreeSet<NodeName>> {
    scope.selects_some_nodes.then(|| {
        nodes
            .iter()
            .filter(|n| scope.selects_node(&n.labels))
            .map(|n| NodeName::new(n.name.as_str()))
            .collect()
    })
}

/// An object read into the model, or left out with a warning: the schema refuses what
/// cannot be read, so this is an object older than a rule.
fn readable<K: ResourceExt, T>(object: &K, read: fn(&K) -> Result<T, String>) -> Option<T> {
    read(object)
        .inspect_err(|e| tracing::warn!(name = object.name_any(), "ignored: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceStatus;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceSpec};
    use k8s_openapi::api::discovery::v1::EndpointConditions;

    const OURS: ClassPolicy = ClassPolicy {
        handle_unclassed: true,
    };

    fn service(type_: &str, class: Option<&str>) -> Service {
        let mut svc = Service::default();
        svc.metadata.name = Some("web".into());
        svc.metadata.namespace = Some("shop".into());
        svc.metadata.uid = Some("u1".into());
        svc.metadata.generation = Some(3);
        svc.spec = Some(ServiceSpec {
            type_: Some(type_.into()),
            load_balancer_class: class.map(Into::into),
            external_traffic_policy: Some("Local".into()),
            ..ServiceSpec::default()
        });
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("192.0.2.10".into()),
                    ..LoadBalancerIngress::default()
                }]),
            }),
            conditions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: model::service::ANNOUNCED_CONDITION.into(),
                    status: "True".into(),
                    reason: "Announced".into(),
                    message: "192.0.2.10 is announced by node node-2".into(),
                    last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ),
                    observed_generation: Some(3),
                },
            ]),
        });
        svc
    }

    #[test]
    fn a_service_of_ours_keeps_what_the_election_and_the_report_read() {
        let record = ServiceRecord::of(&service("LoadBalancer", None), OURS, &Names::default())
            .expect("ours");
        assert_eq!(record.key, ServiceKey::new("shop", "web", "u1"));
        assert_eq!(record.ingress, ["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(record.traffic_policy, TrafficPolicy::Local);
        assert_eq!(record.generation, Some(3));
        assert_eq!(record.announced_by(), Some("node-2"));
    }

    #[test]
    fn records_share_one_copy_of_each_name() {
        let names = Names::default();
        let mut svc = service("LoadBalancer", None);
        svc.metadata.annotations = Some(
            [(
                model::service::ANNOTATION_ALLOCATED_FROM.to_string(),
                "lan".to_string(),
            )]
            .into(),
        );
        let one = ServiceRecord::of(&svc, OURS, &names).expect("ours");
        let two = ServiceRecord::of(&svc, OURS, &names).expect("ours");
        let by = |record: &ServiceRecord| record.announced.clone().and_then(|a| a.by);
        assert_eq!(one.allocated_from.as_deref(), Some("lan"));
        assert!(Arc::ptr_eq(
            one.allocated_from.as_ref().unwrap(),
            two.allocated_from.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&by(&one).unwrap(), &by(&two).unwrap()));
        assert_eq!(names.count(), 2);
    }

    #[test]
    fn names_nobody_holds_are_let_go() {
        let names = Names::default();
        let kept = names.get("node-kept");
        for i in 0..1000 {
            names.get(&format!("node-{i}"));
        }
        assert!(names.count() <= 64, "{} names held", names.count());
        assert!(Arc::ptr_eq(&names.get("node-kept"), &kept));
    }

    #[test]
    fn anybody_elses_service_is_not_kept() {
        assert!(ServiceRecord::of(&service("ClusterIP", None), OURS, &Names::default()).is_none());
        assert!(
            ServiceRecord::of(
                &service("LoadBalancer", Some("other.io/lb")),
                OURS,
                &Names::default()
            )
            .is_none()
        );
        let unclassed_elsewhere = ClassPolicy {
            handle_unclassed: false,
        };
        assert!(
            ServiceRecord::of(
                &service("LoadBalancer", None),
                unclassed_elsewhere,
                &Names::default()
            )
            .is_none()
        );
        assert!(
            ServiceRecord::of(
                &service("LoadBalancer", Some(model::service::LOAD_BALANCER_CLASS)),
                unclassed_elsewhere,
                &Names::default()
            )
            .is_some()
        );
    }

    #[test]
    fn a_slice_keeps_the_nodes_of_its_ready_or_serving_endpoints() {
        use k8s_openapi::api::discovery::v1::Endpoint;
        let endpoint = |node: &str, ready: Option<bool>, serving: Option<bool>| Endpoint {
            addresses: vec!["192.0.2.100".into()],
            node_name: Some(node.into()),
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating: None,
            }),
            ..Endpoint::default()
        };
        let mut slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                endpoint("ready", Some(true), Some(true)),
                endpoint("unknown", None, None),
                endpoint("terminating-serving", Some(false), Some(true)),
                endpoint("not-ready", Some(false), Some(false)),
            ]),
            ..EndpointSlice::default()
        };
        slice.metadata.namespace = Some("shop".into());
        assert_eq!(SliceRecord::of(&slice), None, "a slice of no Service");
        slice.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into());
        let record = SliceRecord::of(&slice).expect("a slice of web");
        assert_eq!(
            (record.namespace.as_str(), record.service.as_str()),
            ("shop", "web")
        );
        let nodes: Vec<&str> = record.endpoint_nodes.iter().map(|n| n.as_str()).collect();
        assert_eq!(nodes, ["ready", "terminating-serving", "unknown"]);
    }
}
