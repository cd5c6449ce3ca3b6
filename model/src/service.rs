//! A LoadBalancer Service as every decision reads it: who it is (namespace, name and UID), whether
//! it is ferrolb's, what it asks for and what it holds. `crds::read::service` builds it from the
//! API object, once; the controller, the allocator and the speaker take this type.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::address::Family;
use crate::selector::Labels;

/// The `spec.loadBalancerClass` of Services that are always ferrolb's (Services without a class
/// are ferrolb's too unless both binaries are told otherwise).
pub const LOAD_BALANCER_CLASS: &str = "ferrolb.io/l2";

/// Requested addresses, comma-separated, at most one per family.
pub const ANNOTATION_IPS: &str = "ferrolb.io/load-balancer-ips";
/// The pool a Service asks to be allocated from.
pub const ANNOTATION_POOL: &str = "ferrolb.io/address-pool";
/// Services with the same key may share an address.
pub const ANNOTATION_SHARING: &str = "ferrolb.io/allow-shared-ip";
/// Written by the controller: the pool the Service's addresses were allocated from, so every
/// speaker places an address that two pools contain in the same one.
pub const ANNOTATION_ALLOCATED_FROM: &str = "ferrolb.io/ip-allocated-from-pool";
/// MetalLB's annotation prefixes, current and old, read as equivalents of ours.
pub const METALLB_PREFIXES: [&str; 2] = ["metallb.io/", "metallb.universe.tf/"];
/// MetalLB's names (after one of [`METALLB_PREFIXES`]) of our request annotations.
pub const METALLB_IPS: &str = "loadBalancerIPs";
pub const METALLB_POOL: &str = "address-pool";
pub const METALLB_SHARING: &str = "allow-shared-ip";
/// Our request annotations with MetalLB's name for each.
pub const METALLB_EQUIVALENTS: [(&str, &str); 3] = [
    (ANNOTATION_IPS, METALLB_IPS),
    (ANNOTATION_POOL, METALLB_POOL),
    (ANNOTATION_SHARING, METALLB_SHARING),
];

/// The Service condition the announcing speaker writes.
pub const ANNOUNCED_CONDITION: &str = "ferrolb.io/Announced";
/// Its reason when a foreign host answers for one of the Service's addresses.
pub const CONFLICT_REASON: &str = "AddressConflict";

/// A Service's identity. The UID tells a Service from a later one of the same name: what was
/// held by a deleted Service is never mistaken for its successor's.
///
/// Its parts are shared by every clone: the election and the binaries' maps hold a key per
/// Service several times over, which at 10,000 Services was megabytes of copied strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey(Arc<KeyParts>);

/// What a [`ServiceKey`] is made of; its fields read through the key (`key.name`).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyParts {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::ops::Deref for ServiceKey {
    type Target = KeyParts;

    fn deref(&self) -> &KeyParts {
        &self.0
    }
}

impl ServiceKey {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> ServiceKey {
        ServiceKey(Arc::new(KeyParts {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }))
    }

    /// Whether both name the same namespace and name, whatever their UIDs.
    pub fn same_name(&self, other: &ServiceKey) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }
}

/// What users read: `namespace/name`.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which families a Service needs, from its `ipFamilyPolicy` and `ipFamilies[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// One address of this family.
    SingleStack(Family),
    /// One of each family from one pool when a pool can give both, else this family only.
    PreferDualStack(Family),
    /// One of each family from one pool, or nothing.
    RequireDualStack(Family),
}

impl FamilyPolicy {
    /// The family the Service cannot do without.
    pub fn first(self) -> Family {
        match self {
            FamilyPolicy::SingleStack(f)
            | FamilyPolicy::PreferDualStack(f)
            | FamilyPolicy::RequireDualStack(f) => f,
        }
    }

    /// Whether the Service may hold an address of `family`.
    pub fn allows(self, family: Family) -> bool {
        match self {
            FamilyPolicy::SingleStack(f) => f == family,
            FamilyPolicy::PreferDualStack(_) | FamilyPolicy::RequireDualStack(_) => true,
        }
    }

    pub fn is_dual_stack(self) -> bool {
        !matches!(self, FamilyPolicy::SingleStack(_))
    }
}

impl fmt::Display for FamilyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FamilyPolicy::SingleStack(family) => write!(f, "{family} single-stack"),
            FamilyPolicy::PreferDualStack(family) => {
                write!(f, "dual-stack if possible ({family} first)")
            }
            FamilyPolicy::RequireDualStack(family) => {
                write!(f, "dual-stack required ({family} first)")
            }
        }
    }
}

/// The protocol of a Service port; a shared address may carry the same port number once per
/// protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    /// Only nodes with a ready endpoint of the Service may take its traffic.
    Local,
}

/// A MetalLB annotation that was read in place of ours: worth a one-time Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignAnnotation {
    pub found: String,
    pub ours: &'static str,
}

/// Why a Service's request cannot be understood. Each becomes an `AllocationFailed` Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "both spec.loadBalancerIP and the {annotation} annotation are set; use only the annotation"
    )]
    BothRequestForms { annotation: String },
    #[error("{annotation}: {value:?} is not a comma-separated list of IP addresses")]
    BadAddressList { annotation: String, value: String },
    #[error("spec.loadBalancerIP {value:?} is not an IP address")]
    BadLoadBalancerIp { value: String },
}

/// Which Services are ferrolb's: those of class [`LOAD_BALANCER_CLASS`], and those without a
/// class when `handle_unclassed` (the default of both binaries' `--handle-unclassed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassPolicy {
    pub handle_unclassed: bool,
}

impl ClassPolicy {
    pub fn takes(self, class: Option<&str>) -> bool {
        match class {
            None => self.handle_unclassed,
            Some(class) => class == LOAD_BALANCER_CLASS,
        }
    }
}

/// A Service, as read once from the API object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    /// `spec.type: LoadBalancer`.
    pub load_balancer: bool,
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    pub labels: Labels,
    pub families: FamilyPolicy,
    /// Addresses asked for (`load-balancer-ips` or `spec.loadBalancerIP`), or why they cannot
    /// be read.
    pub requested: Result<Vec<IpAddr>, RequestError>,
    /// The pool the Service names (`address-pool`).
    pub pool: Option<String>,
    /// The pool the controller recorded its addresses as allocated from.
    pub allocated_from: Option<String>,
    /// `allow-shared-ip`, when set and not empty.
    pub sharing_key: Option<String>,
    pub traffic_policy: TrafficPolicy,
    /// For `Local`, the pod selector in a canonical order: Services sharing an address must
    /// send its traffic to the same pods. `None` for `Cluster`.
    pub backend_key: Option<String>,
    pub ports: Vec<(Protocol, u16)>,
    /// The addresses in `status.loadBalancer.ingress`, in their order there.
    pub ingress: Vec<IpAddr>,
    /// RFC 3339 creation time; the older of two claimants keeps a disputed address.
    pub created: String,
    /// MetalLB annotations read in place of ours.
    pub foreign_annotations: Vec<ForeignAnnotation>,
    /// Its announcing speaker reported that a foreign host answers for one of its addresses:
    /// whoever owns them next probes again before answering.
    pub conflict_reported: bool,
}

impl Service {
    /// Whether ferrolb gives this Service addresses and announces them.
    pub fn is_ours(&self, classes: ClassPolicy) -> bool {
        self.load_balancer && classes.takes(self.class.as_deref())
    }

    /// The allocator's request, given the labels of the Service's namespace; the request error
    /// when the Service's annotations cannot be read.
    pub fn request(&self, namespace_labels: Labels) -> Result<ServiceRequest, RequestError> {
        Ok(ServiceRequest {
            key: self.key.clone(),
            namespace_labels,
            labels: self.labels.clone(),
            families: self.families,
            requested: self.requested.clone()?,
            pool: self.pool.clone(),
            sharing_key: self.sharing_key.clone(),
            backend_key: self.backend_key.clone(),
            ports: self.ports.clone(),
        })
    }
}

/// Everything the allocator needs to know about one Service: the Service's request and the
/// labels of its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    pub key: ServiceKey,
    /// Labels of the Service's namespace, for `serviceAllocation.namespaceSelectors`.
    pub namespace_labels: Labels,
    /// Labels of the Service, for `serviceAllocation.serviceSelectors`.
    pub labels: Labels,
    pub families: FamilyPolicy,
    /// Addresses the Service asks for; at most one per family. When present, the Service gets
    /// exactly these or an error.
    pub requested: Vec<IpAddr>,
    pub pool: Option<String>,
    /// `allow-shared-ip`; an empty key means no sharing.
    pub sharing_key: Option<String>,
    /// See [`Service::backend_key`].
    pub backend_key: Option<String>,
    /// Services sharing an address must not use the same port.
    pub ports: Vec<(Protocol, u16)>,
}

impl ServiceRequest {
    /// A request with no labels, no requested address, no pool and no sharing.
    pub fn new(key: ServiceKey, families: FamilyPolicy) -> ServiceRequest {
        ServiceRequest {
            key,
            namespace_labels: Labels::new(),
            labels: Labels::new(),
            families,
            requested: Vec::new(),
            pool: None,
            sharing_key: None,
            backend_key: None,
            ports: Vec::new(),
        }
    }

    pub fn with_pool(mut self, pool: &str) -> ServiceRequest {
        self.pool = Some(pool.to_string());
        self
    }

    pub fn requesting(mut self, ip: IpAddr) -> ServiceRequest {
        self.requested.push(ip);
        self
    }

    /// Sets `allow-shared-ip`, the backend key and the ports.
    pub fn sharing(
        mut self,
        key: &str,
        backend: Option<&str>,
        ports: &[(Protocol, u16)],
    ) -> ServiceRequest {
        self.sharing_key = Some(key.to_string());
        self.backend_key = backend.map(str::to_string);
        self.ports = ports.to_vec();
        self
    }

    pub fn with_labels<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.labels = crate::selector::labels_of(pairs);
        self
    }

    pub fn with_namespace_labels<'a>(
        mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.namespace_labels = crate::selector::labels_of(pairs);
        self
    }

    /// The sharing key if it is set and not empty.
    pub fn effective_sharing_key(&self) -> Option<&str> {
        self.sharing_key.as_deref().filter(|key| !key.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_rule() {
        let unclassed = ClassPolicy {
            handle_unclassed: true,
        };
        let classed_only = ClassPolicy {
            handle_unclassed: false,
        };
        assert!(unclassed.takes(None));
        assert!(!classed_only.takes(None));
        assert!(unclassed.takes(Some(LOAD_BALANCER_CLASS)));
        assert!(classed_only.takes(Some(LOAD_BALANCER_CLASS)));
        assert!(!unclassed.takes(Some("other.example/lb")));
    }

    #[test]
    fn keys_differ_by_uid_but_share_a_name() {
        let a = ServiceKey::new("shop", "web", "u1");
        let b = ServiceKey::new("shop", "web", "u2");
        assert_ne!(a, b);
        assert!(a.same_name(&b));
        assert_eq!(a.to_string(), "shop/web");
    }
}
