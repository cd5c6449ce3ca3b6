//! When two Services may hold one address (`allow-shared-ip`), and who holds each address.
//!
//! Two Services share an address only when both allow it with the same non-empty key, both have
//! the same backend key (so `externalTrafficPolicy: Cluster` never shares with `Local`, and
//! `Local` Services only with ones selecting the same pods), and no (protocol, port) is used by
//! both. Sharing is allowed, never forced.

use std::fmt;
use std::sync::Arc;

use model::service::{Protocol, ServiceKey, ServiceRequest};

/// What a Service that allows sharing agrees to; Services without a sharing key have none and
/// hold their addresses alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharingTerms {
    pub key: String,
    pub backend: Option<String>,
    /// Sorted and without duplicates, so clashes are found by a merge.
    pub ports: Vec<(Protocol, u16)>,
}

impl SharingTerms {
    pub fn of(service: &ServiceRequest) -> Option<SharingTerms> {
        let key = service.effective_sharing_key()?;
        let mut ports = service.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        Some(SharingTerms {
            key: key.to_string(),
            backend: service.backend_key.clone(),
            ports,
        })
    }
}

/// Why a Service with a sharing key cannot join another that has one too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharingConflict {
    /// The two sharing keys differ.
    KeyDiffers { ours: String, theirs: String },
    /// The backend keys differ: one is Cluster and the other Local, or both are Local with
    /// different pod selectors.
    BackendDiffers {
        ours: Option<String>,
        theirs: Option<String>,
    },
    /// Both use this port.
    PortClash { protocol: Protocol, port: u16 },
    /// This Service no longer sets `allow-shared-ip`.
    NoLongerShared,
}

impl fmt::Display for SharingConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharingConflict::KeyDiffers { ours, theirs } => write!(
                f,
                "it allows sharing with key {theirs:?}, but this Service uses key {ours:?}"
            ),
            SharingConflict::BackendDiffers {
                ours: None,
                theirs: Some(_),
            } => f.write_str(
                "it has externalTrafficPolicy Local and this Service Cluster; only Services with the same traffic policy can share an address",
            ),
            SharingConflict::BackendDiffers {
                ours: Some(_),
                theirs: None,
            } => f.write_str(
                "it has externalTrafficPolicy Cluster and this Service Local; only Services with the same traffic policy can share an address",
            ),
            SharingConflict::BackendDiffers { ours, theirs } => write!(
                f,
                "both have externalTrafficPolicy Local but select different pods ({} and {}); Local Services share an address only when they select the same pods",
                theirs.as_deref().unwrap_or(""),
                ours.as_deref().unwrap_or(""),
            ),
            SharingConflict::PortClash { protocol, port } => {
                write!(f, "both use port {port}/{protocol}")
            }
            SharingConflict::NoLongerShared => {
                f.write_str("this Service no longer sets allow-shared-ip")
            }
        }
    }
}

/// Why a Service may not hold an address another Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// One of the two does not allow sharing at all.
    Exclusive,
    /// Both allow sharing, but not with each other.
    Conflict(SharingConflict),
}

/// Whether a Service with terms `ours` may hold an address also held by one with `theirs`.
pub(crate) fn may_share(
    ours: Option<&SharingTerms>,
    theirs: Option<&SharingTerms>,
) -> Result<(), Refusal> {
    let (Some(ours), Some(theirs)) = (ours, theirs) else {
        return Err(Refusal::Exclusive);
    };
    if ours.key != theirs.key {
        return Err(Refusal::Conflict(SharingConflict::KeyDiffers {
            ours: ours.key.clone(),
            theirs: theirs.key.clone(),
        }));
    }
    if ours.backend != theirs.backend {
        return Err(Refusal::Conflict(SharingConflict::BackendDiffers {
            ours: ours.backend.clone(),
            theirs: theirs.backend.clone(),
        }));
    }
    match first_common(&ours.ports, &theirs.ports) {
        Some(&(protocol, port)) => Err(Refusal::Conflict(SharingConflict::PortClash {
            protocol,
            port,
        })),
        None => Ok(()),
    }
}

/// The lowest element of two sorted slices.
fn first_common<'a, T: Ord>(a: &'a [T], b: &[T]) -> Option<&'a T> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some(&a[i]),
        }
    }
    None
}

/// The Services holding one address, sorted by key. Almost every address has one holder, which
/// is stored without a second allocation.
#[derive(Debug, Clone)]
pub(crate) enum Holders {
    One(Arc<ServiceKey>),
    Shared(Vec<Arc<ServiceKey>>),
}

impl Holders {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceKey>> {
        match self {
            Holders::One(key) => std::slice::from_ref(key).iter(),
            Holders::Shared(keys) => keys.iter(),
        }
    }

    pub fn add(&mut self, key: Arc<ServiceKey>) {
        match self {
            Holders::One(existing) if *existing == key => {}
            Holders::One(existing) => {
                let mut keys = vec![existing.clone(), key];
                keys.sort();
                *self = Holders::Shared(keys);
            }
            Holders::Shared(keys) => {
                if let Err(at) = keys.binary_search(&key) {
                    keys.insert(at, key);
                }
            }
        }
    }

    /// Removes `key`; true when nobody holds the address any more.
    pub fn remove(&mut self, key: &ServiceKey) -> bool {
        match self {
            Holders::One(existing) => **existing == *key,
            Holders::Shared(keys) => {
                keys.retain(|k| **k != *key);
                if let [only] = keys.as_slice() {
                    *self = Holders::One(only.clone());
                }
                keys_is_empty(self)
            }
        }
    }
}

fn keys_is_empty(holders: &Holders) -> bool {
    matches!(holders, Holders::Shared(keys) if keys.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::address::Family;
    use model::service::{FamilyPolicy, Protocol::*};

    fn terms(key: &str, backend: Option<&str>, ports: &[(Protocol, u16)]) -> SharingTerms {
        let request = ServiceRequest::new(
            ServiceKey::new("ns", "svc", "uid"),
            FamilyPolicy::SingleStack(Family::V4),
        )
        .sharing(key, backend, ports);
        SharingTerms::of(&request).unwrap()
    }

    #[test]
    fn sharing_rules() {
        let dns_tcp = terms("dns", None, &[(Tcp, 53)]);
        type Case = (
            &'static str,
            Option<SharingTerms>,
            Option<SharingTerms>,
            Result<(), Refusal>,
        );
        let cases: Vec<Case> = vec![
            (
                "TCP and UDP on one port",
                Some(dns_tcp.clone()),
                Some(terms("dns", None, &[(Udp, 53)])),
                Ok(()),
            ),
            (
                "same port and protocol",
                Some(terms("dns", None, &[(Udp, 53), (Tcp, 80), (Tcp, 53)])),
                Some(terms("dns", None, &[(Tcp, 53), (Tcp, 443)])),
                Err(Refusal::Conflict(SharingConflict::PortClash {
                    protocol: Tcp,
                    port: 53,
                })),
            ),
            (
                "different keys",
                Some(terms("a", None, &[(Tcp, 1)])),
                Some(terms("b", None, &[(Tcp, 2)])),
                Err(Refusal::Conflict(SharingConflict::KeyDiffers {
                    ours: "a".into(),
                    theirs: "b".into(),
                })),
            ),
            (
                "Cluster with Local",
                Some(terms("k", None, &[(Tcp, 1)])),
                Some(terms("k", Some("app=web"), &[(Tcp, 2)])),
                Err(Refusal::Conflict(SharingConflict::BackendDiffers {
                    ours: None,
                    theirs: Some("app=web".into()),
                })),
            ),
            (
                "Local with different pods",
                Some(terms("k", Some("app=web"), &[(Tcp, 1)])),
                Some(terms("k", Some("app=db"), &[(Tcp, 2)])),
                Err(Refusal::Conflict(SharingConflict::BackendDiffers {
                    ours: Some("app=web".into()),
                    theirs: Some("app=db".into()),
                })),
            ),
            (
                "Local with the same pods",
                Some(terms("k", Some("app=web"), &[(Tcp, 1)])),
                Some(terms("k", Some("app=web"), &[(Tcp, 2)])),
                Ok(()),
            ),
            (
                "we do not share",
                None,
                Some(dns_tcp.clone()),
                Err(Refusal::Exclusive),
            ),
            (
                "they do not share",
                Some(dns_tcp),
                None,
                Err(Refusal::Exclusive),
            ),
            ("nobody shares", None, None, Err(Refusal::Exclusive)),
        ];
        for (name, ours, theirs, expected) in cases {
            assert_eq!(
                may_share(ours.as_ref(), theirs.as_ref()),
                expected,
                "{name}"
            );
            let reversed = may_share(theirs.as_ref(), ours.as_ref());
            assert_eq!(reversed.is_ok(), expected.is_ok(), "{name} reversed");
        }
    }

    #[test]
    fn an_empty_key_is_no_key() {
        let request = ServiceRequest::new(
            ServiceKey::new("ns", "svc", "uid"),
            FamilyPolicy::SingleStack(Family::V4),
        )
        .sharing("", None, &[]);
        assert_eq!(SharingTerms::of(&request), None);
    }

    #[test]
    fn conflicts_read_as_sentences() {
        let text = SharingConflict::BackendDiffers {
            ours: Some("app=web".into()),
            theirs: None,
        }
        .to_string();
        assert!(text.contains("Cluster and this Service Local"), "{text}");
        let text = SharingConflict::PortClash {
            protocol: Udp,
            port: 53,
        }
        .to_string();
        assert_eq!(text, "both use port 53/UDP");
    }

    #[test]
    fn holders_stay_sorted_and_collapse() {
        let key = |name: &str| Arc::new(ServiceKey::new("ns", name, "uid"));
        let mut holders = Holders::One(key("b"));
        holders.add(key("c"));
        holders.add(key("a"));
        holders.add(key("a"));
        let names: Vec<_> = holders.iter().map(|k| k.name.clone()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(!holders.remove(&ServiceKey::new("ns", "b", "uid")));
        assert!(!holders.remove(&ServiceKey::new("ns", "a", "uid")));
        assert!(matches!(holders, Holders::One(ref k) if k.name == "c"));
        assert!(holders.remove(&ServiceKey::new("ns", "c", "uid")));
    }
}
