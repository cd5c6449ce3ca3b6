//! ferrolb-controller: allocates external addresses from IPAddressPools to LoadBalancer
//! Services. The binary (`main.rs`) only wires flags, the client and the lease to this.

pub mod metrics;
pub mod pools;
pub mod reconcile;
pub mod service;
pub mod state;
