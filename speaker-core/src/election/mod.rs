//! Which node announces which address: stateless rendezvous (highest-random-weight) hashing.
//!
//! Every speaker runs the same pure function over the same view (live members, node selectors,
//! exclusions, Local endpoints) and so reaches the same answer without a lock or a lease:
//!
//! 1. [`election_keys`] maps each address to the [`ElectionKey`] it is elected by. Addresses that
//!    must live together (the IPv4 and IPv6 address of a dual-stack Service) share one key.
//! 2. [`owner`] picks the eligible node with the highest [`weight`]; which nodes are eligible is
//!    `crate::decide`'s business.
//!
//! Election is per address, never per Service: one address has one key, so one owner, however
//! many Services share it.

mod keys;
mod node;
mod rank;

pub use keys::{ElectionKey, ServiceAddresses, election_keys, group_by_key};
pub use node::NodeName;
pub use rank::{owner, ranked, weight};
