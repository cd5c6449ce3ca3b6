//! IPv6 Neighbor Discovery over Ethernet (RFC 4861): the solicitations a speaker answers, the
//! advertisements that reveal a foreign owner, and the frames it sends.
//!
//! Parsing applies RFC 4861 §7.1's validity checks (hop limit 255, ICMPv6 checksum, code 0,
//! lengths, non-multicast target, no zero-length option, the DAD and solicited-flag rules) and
//! RFC 4291 §2.7's non-multicast source, and names the first one that fails in an
//! [`NdpDrop`]. Builders always set hop limit 255, without which receivers discard the packet,
//! and fill in the checksum.

mod build;
pub(crate) mod checksum;
mod multicast;
mod parse;
mod wire;

use std::net::Ipv6Addr;

use thiserror::Error;

use crate::MacAddr;

pub use build::{
    build_advertisement_reply, build_dad_solicitation, build_solicitation,
    build_unsolicited_advertisement,
};
pub use multicast::{ALL_NODES, is_solicited_node_multicast, solicited_node_multicast};
pub use parse::parse;

/// The address an interface's Neighbor Discovery messages come from, among its IPv6
/// addresses: the link-local one, else the first (RFC 4861 wants an address of the sending
/// interface, and the link-local one is what every host has).
pub fn source_among(addresses: impl IntoIterator<Item = Ipv6Addr>) -> Option<Ipv6Addr> {
    let mut first = None;
    for address in addresses {
        if address.is_unicast_link_local() {
            return Some(address);
        }
        first = first.or(Some(address));
    }
    first
}

/// Neighbor Discovery packets are only accepted, and only sent, with this hop limit: it proves
/// they were not forwarded by a router (RFC 4861 §7.1).
pub const HOP_LIMIT: u8 = 255;

/// A Neighbor Solicitation: "who has `target`?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicitation {
    pub eth_src: MacAddr,
    /// `::` for Duplicate Address Detection.
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    pub source_link_addr: Option<MacAddr>,
}

impl NeighborSolicitation {
    /// Sent by a host checking that `target` is free before using it (RFC 4862 §5.4).
    pub fn is_dad(&self) -> bool {
        self.src.is_unspecified()
    }

    /// Where an answer goes at the link layer: the Source Link-Layer Address option when present,
    /// else the frame's source.
    pub fn reply_mac(&self) -> MacAddr {
        self.source_link_addr.unwrap_or(self.eth_src)
    }
}

/// The flags of a Neighbor Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NaFlags {
    pub router: bool,
    /// An answer to a solicitation, which confirms reachability.
    pub solicited: bool,
    /// The receiver replaces a cached link-layer address: what makes a takeover take.
    pub override_: bool,
}

/// A Neighbor Advertisement: "`target` is at `target_link_addr`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    pub eth_src: MacAddr,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    pub flags: NaFlags,
    pub target_link_addr: Option<MacAddr>,
}

impl NeighborAdvertisement {
    /// The link-layer address the advertiser claims `target` for: the option when present,
    /// else the frame's source.
    pub fn claimed_mac(&self) -> MacAddr {
        self.target_link_addr.unwrap_or(self.eth_src)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ndp {
    Solicitation(NeighborSolicitation),
    Advertisement(NeighborAdvertisement),
}

/// Why a frame was not accepted as Neighbor Discovery; `reason()` is its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NdpDrop {
    #[error("not IPv6: ethertype {ethertype:#06x}")]
    NotIpv6 { ethertype: u16 },
    #[error("truncated frame of {len} bytes")]
    Truncated { len: usize },
    #[error("IP version {0}, expected 6")]
    IpVersion(u8),
    /// Extension headers are not followed: Neighbor Discovery does not use them.
    #[error("next header {next_header}, expected ICMPv6 (58)")]
    NotIcmpv6 { next_header: u8 },
    #[error("ICMPv6 type {icmp_type} is not a neighbor solicitation or advertisement")]
    NotNeighborDiscovery { icmp_type: u8 },
    #[error("hop limit {0}, RFC 4861 requires 255")]
    HopLimit(u8),
    #[error("ICMPv6 checksum {found:#06x}, computed {computed:#06x}")]
    BadChecksum { found: u16, computed: u16 },
    #[error("ICMPv6 code {0}, expected 0")]
    Code(u8),
    #[error("multicast target {0}")]
    MulticastTarget(Ipv6Addr),
    /// RFC 4291 §2.7: never a source. Answering would send a solicited advertisement to a group.
    #[error("multicast source {0}")]
    MulticastSource(Ipv6Addr),
    #[error("option with length zero")]
    ZeroLengthOption,
    #[error("option runs past the end of the packet")]
    TruncatedOption,
    #[error("DAD solicitation sent to {0}, not to a solicited-node multicast address")]
    DadNotToSolicitedNode(Ipv6Addr),
    #[error("DAD solicitation carries a source link-layer address")]
    DadWithSourceLinkAddress,
    #[error("solicited advertisement sent to multicast {0}")]
    SolicitedToMulticast(Ipv6Addr),
}

impl NdpDrop {
    pub fn reason(&self) -> &'static str {
        match self {
            NdpDrop::NotIpv6 { .. } => "not_ipv6",
            NdpDrop::Truncated { .. } => "truncated",
            NdpDrop::IpVersion(_) => "ip_version",
            NdpDrop::NotIcmpv6 { .. } => "not_icmpv6",
            NdpDrop::NotNeighborDiscovery { .. } => "not_neighbor_discovery",
            NdpDrop::HopLimit(_) => "hop_limit",
            NdpDrop::BadChecksum { .. } => "bad_checksum",
            NdpDrop::Code(_) => "code",
            NdpDrop::MulticastTarget(_) => "multicast_target",
            NdpDrop::MulticastSource(_) => "multicast_source",
            NdpDrop::ZeroLengthOption => "zero_length_option",
            NdpDrop::TruncatedOption => "truncated_option",
            NdpDrop::DadNotToSolicitedNode(_) => "dad_not_to_solicited_node",
            NdpDrop::DadWithSourceLinkAddress => "dad_with_source_link_address",
            NdpDrop::SolicitedToMulticast(_) => "solicited_to_multicast",
        }
    }
}
