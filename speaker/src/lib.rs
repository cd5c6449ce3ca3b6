//! ferrolb's speaker: which node announces each external address, and the announcing.
//!
//! - [`view`]: the watches, and the facts the election reads from them, kept in [`cache`]s;
//! - [`membership`]: the speakers' SWIM gossip, authenticated with the cluster's key;
//! - [`announce`]: ARP and NDP on raw sockets (the election and the announcer's state machine
//!   are pure and live in `speaker-core`);
//! - [`bgp`], [`bfd`]: BGP mode's sessions to the routers, and BFD watching the paths to them;
//! - [`bgp_mode`]: which sessions this node keeps and the routes it gives them;
//! - [`reach`]: the failover's fast path, echo requests to the nodes this one succeeds;
//! - [`report`]: the Service condition and Events;
//! - [`run`]: the loop that ties them together;
//! - [`fault`]: a test-only hook that makes one loop panic or stall.

pub mod announce;
pub mod bfd;
pub mod bgp;
pub mod bgp_mode;
pub mod cache;
pub mod fault;
pub mod membership;
pub mod reach;
pub mod report;
pub mod run;
pub mod view;
