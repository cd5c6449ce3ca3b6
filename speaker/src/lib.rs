//! ferrolb's speaker: which node announces each external address, and the announcing.
//!
//! - [`view`]: the watches, and the facts the election reads from them;
//! - [`membership`]: the speakers' SWIM gossip, authenticated with the cluster's key;
//! - [`announce`]: ARP and NDP on raw sockets (the election and the announcer's state machine
//!   are pure and live in `speaker-core`);
//! - [`report`]: the Service condition and Events;
//! - [`run`]: the loop that ties them together.

pub mod announce;
pub mod membership;
pub mod report;
pub mod run;
pub mod view;
