//! What the allocator knows of a Service: its identity, what it asks for, and what it holds.

use std::fmt;
use std::net::IpAddr;

use crds::address::Family;

use crate::error::{Error, Result};
use crate::selector::Labels;

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

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

/// Everything the allocator needs to know about one LoadBalancer Service, read by the controller
/// from the Service, its annotations and its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    pub key: ServiceKey,
    /// Labels of the Service's namespace, for `serviceAllocation.namespaceSelectors`.
    pub namespace_labels: Labels,
    /// Labels of the Service, for `serviceAllocation.serviceSelectors`.
    pub labels: Labels,
    pub families: FamilyPolicy,
    /// Addresses the Service asks for (`load-balancer-ips`, `spec.loadBalancerIP`); at most one
    /// per family. When present, the Service gets exactly these or an error.
    pub requested: Vec<IpAddr>,
    /// The pool the Service names (`address-pool`).
    pub pool: Option<String>,
    /// `allow-shared-ip`; an empty key means no sharing.
    pub sharing_key: Option<String>,
    /// What Services sharing an address must agree on: `None` for
    /// `externalTrafficPolicy: Cluster`, the pod selector for `Local`, so that Cluster and Local
    /// Services never share and Local ones only when they select the same pods.
    pub backend_key: Option<String>,
    /// The Service's ports; Services sharing an address must not use the same one.
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
        self.labels = to_labels(pairs);
        self
    }

    pub fn with_namespace_labels<'a>(
        mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.namespace_labels = to_labels(pairs);
        self
    }

    /// Whether the requested addresses fit the family policy: at most one per family, only
    /// families the Service has, and one of each when dual-stack is required. The controller may
    /// call this to refuse bad annotations early; [`crate::Allocator::allocate`] calls it too.
    pub fn check(&self) -> Result<()> {
        check_one_per_family(&self.requested)?;
        if let Some(ip) = self
            .requested
            .iter()
            .find(|ip| !self.families.allows(Family::of(**ip)))
        {
            return Err(Error::FamilyMismatch {
                ip: *ip,
                policy: self.families,
            });
        }
        if let FamilyPolicy::RequireDualStack(_) = self.families
            && !self.requested.is_empty()
            && let Some(missing) = [Family::V4, Family::V6]
                .into_iter()
                .find(|family| !self.requested.iter().any(|ip| Family::of(*ip) == *family))
        {
            return Err(Error::RequestMissingFamily { missing });
        }
        Ok(())
    }

    /// The sharing key if it is set and not empty.
    pub fn effective_sharing_key(&self) -> Option<&str> {
        self.sharing_key.as_deref().filter(|key| !key.is_empty())
    }
}

/// At most one address per family.
pub(crate) fn check_one_per_family(ips: &[IpAddr]) -> Result<()> {
    for (i, a) in ips.iter().enumerate() {
        if let Some(b) = ips[i + 1..]
            .iter()
            .find(|b| Family::of(**b) == Family::of(*a))
        {
            return Err(Error::TooManyAddresses {
                family: Family::of(*a),
                ips: [*a, *b],
            });
        }
    }
    Ok(())
}

fn to_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One address a Service holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AssignedAddress {
    pub ip: IpAddr,
    /// The pool the address belongs to; `None` when no pool contains it any more (an orphan,
    /// kept because addresses are never taken away from a live Service).
    pub pool: Option<String>,
}

/// The addresses a Service holds, the family it asked for first coming first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub addresses: Vec<AssignedAddress>,
}

impl Assignment {
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| a.ip).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}
