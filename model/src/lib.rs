//! ferrolb's one reading of the cluster.
//!
//! Everything the controller and the speaker decide from, in plain types: Services keyed by
//! namespace, name and UID ([`service`]), pools with their addresses parsed entry by entry
//! ([`pool`]), advertisements with their selectors ([`advertisement`]), label selectors
//! ([`selector`]), BGP mode's peers, advertisements and BFD profiles ([`bgp`]), the address
//! parser ([`address`]) and the wording of who announces a Service ([`announcement`]). No
//! Kubernetes types and no I/O: `crds` converts API objects into these once, and the
//! allocator, the controller's reconcile and the speaker's election all take them, so the two
//! binaries cannot disagree about what they saw.

pub mod address;
pub mod address_cases;
pub mod advertisement;
pub mod announcement;
pub mod bgp;
pub mod pool;
pub mod selector;
pub mod service;

pub use address::{AddressError, AddressRange, Family};
pub use advertisement::Advertisement;
pub use pool::{InvalidEntry, Pool, ServiceAllocation, home_pool};
pub use selector::{LabelSelector, Labels, Operator, Requirement, SelectorError, labels_of};
pub use service::{
    ClassPolicy, FamilyPolicy, ForeignAnnotation, Protocol, RequestError, Service, ServiceKey,
    ServiceRequest, TrafficPolicy,
};
