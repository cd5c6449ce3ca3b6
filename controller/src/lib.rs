//! ferrolb-controller: allocates external addresses from IPAddressPools to LoadBalancer
//! Services. The binary (`main.rs`) only wires flags, the client and the lease to this.

pub mod lease;
pub mod metrics;
pub mod peers;
pub mod pools;
pub mod restore;
pub mod run;
pub mod services;
pub mod state;
pub mod write;
