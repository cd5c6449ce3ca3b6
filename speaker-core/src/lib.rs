//! The speaker's pure core: which node announces which address, and the bytes it reads and
//! writes to do so. No I/O, no clock, no randomness: the `speaker` binary wires sockets,
//! membership and timers to these functions, and tests drive them with plain values.
//!
//! - [`decide`]: the election rules: which node owns each address, stage by stage.
//! - [`election`]: rendezvous hashing of addresses over eligible nodes.
//! - [`announce`]: the announcer's state machine (probe, answer, defend, release).
//! - [`arp`], [`ndp`]: parsing and building ARP and IPv6 Neighbor Discovery frames.
//! - [`frame`]: one parser for everything an announce socket receives.
//! - [`reach`]: the failover's fast path, echo requests to the nodes this one succeeds.
//! - [`bfd`]: BFD sessions (RFC 5880) for BGP mode: state machine and Control packets.
//! - [`bgp`]: a BGP session's state machine (RFC 4271 §8) for a speaker that only originates.
//! - [`ethernet`], [`mac`]: the link-layer pieces both codecs share.

pub mod announce;
pub mod arp;
pub mod bfd;
pub mod bgp;
pub mod decide;
pub mod election;
pub mod ethernet;
pub mod frame;
pub mod mac;
pub mod ndp;
pub mod reach;

pub use election::{ElectionKey, NodeName, ServiceAddresses};
pub use frame::{Frame, FrameDrop, parse_frame};
pub use mac::MacAddr;
