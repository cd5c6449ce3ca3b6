//! One entry point for whatever an announce socket receives: ARP or Neighbor Discovery.

use thiserror::Error;

use crate::arp::{self, Arp, ArpDrop};
use crate::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV6, EthernetHeader};
use crate::ndp::{self, Ndp, NdpDrop};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Arp(Arp),
    Ndp(Ndp),
}

/// Why a received frame is ignored; `reason()` is its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameDrop {
    #[error("frame of {len} bytes is shorter than an Ethernet header")]
    Truncated { len: usize },
    #[error("ethertype {0:#06x} is neither ARP nor IPv6")]
    OtherEtherType(u16),
    #[error(transparent)]
    Arp(#[from] ArpDrop),
    #[error(transparent)]
    Ndp(#[from] NdpDrop),
}

impl FrameDrop {
    pub fn reason(&self) -> &'static str {
        match self {
            FrameDrop::Truncated { .. } => "truncated",
            FrameDrop::OtherEtherType(_) => "other_ethertype",
            FrameDrop::Arp(drop) => drop.reason(),
            FrameDrop::Ndp(drop) => drop.reason(),
        }
    }
}

/// Dispatches on the ethertype to [`arp::parse`] or [`ndp::parse`].
pub fn parse_frame(frame: &[u8]) -> Result<Frame, FrameDrop> {
    let (header, _) =
        EthernetHeader::parse(frame).ok_or(FrameDrop::Truncated { len: frame.len() })?;
    match header.ethertype {
        ETHERTYPE_ARP => Ok(Frame::Arp(arp::parse(frame)?)),
        ETHERTYPE_IPV6 => Ok(Frame::Ndp(ndp::parse(frame)?)),
        other => Err(FrameDrop::OtherEtherType(other)),
    }
}
