//! ARP for IPv4 over Ethernet (RFC 826, RFC 5227): what a speaker reads and what it sends.
//!
//! [`parse`] turns a received frame into an [`Arp`] message or an [`ArpDrop`] reason; the
//! builders produce the three frames an announcer sends: a reply to a question about an owned
//! address, gratuitous ARPs on takeover, and RFC 5227 probes before the first announcement;
//! [`build_request`] is the question a client asks, for tests and diagnostics.

mod build;
mod parse;

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::MacAddr;

pub use build::{build_gratuitous, build_probe, build_reply, build_request};
pub use parse::parse;

/// Ethernet header plus the 28-byte ARP body; builders emit exactly this many bytes.
pub const FRAME_LEN: usize = crate::ethernet::HEADER_LEN + 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request = 1,
    Reply = 2,
}

/// "Who has `target_ip`? Tell `sender_mac`": an ARP request, or an RFC 5227 probe when
/// `sender_ip` is 0.0.0.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpQuestion {
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// A reply: `sender_ip` is at `sender_mac`, addressed to `target_mac`/`target_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpAnswer {
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// A well-formed ARP message, classified by what it means to an announcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arp {
    /// A question to answer if we own `target_ip`.
    Request(ArpQuestion),
    /// RFC 5227 probe (sender IP 0.0.0.0): someone checks whether `target_ip` is free. An
    /// owner answers it too, which is how it defends the address.
    Probe(ArpQuestion),
    /// An answer to someone's question.
    Reply(ArpAnswer),
    /// Sender IP equals target IP: a host announcing `ip` (RFC 5227 calls the request form an
    /// ARP Announcement). Never answered.
    Gratuitous {
        op: ArpOp,
        sender_mac: MacAddr,
        ip: Ipv4Addr,
    },
}

impl Arp {
    /// The question to answer, for requests and probes.
    pub fn question(&self) -> Option<&ArpQuestion> {
        match self {
            Arp::Request(q) | Arp::Probe(q) => Some(q),
            Arp::Reply(_) | Arp::Gratuitous { .. } => None,
        }
    }

    /// The (MAC, IPv4) binding the sender states for itself, if any: what conflict detection
    /// compares with the address it is about to announce. A probe states none.
    pub fn sender_claim(&self) -> Option<(MacAddr, Ipv4Addr)> {
        match *self {
            Arp::Request(q) => Some((q.sender_mac, q.sender_ip)),
            Arp::Reply(a) => Some((a.sender_mac, a.sender_ip)),
            Arp::Gratuitous { sender_mac, ip, .. } => Some((sender_mac, ip)),
            Arp::Probe(_) => None,
        }
    }
}

/// Why a frame was not accepted as ARP; `reason()` is its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ArpDrop {
    #[error("not ARP: ethertype {ethertype:#06x}")]
    NotArp { ethertype: u16 },
    #[error("truncated ARP frame of {len} bytes")]
    Truncated { len: usize },
    #[error("ARP hardware type {0} is not Ethernet (1)")]
    HardwareType(u16),
    #[error("ARP protocol type {0:#06x} is not IPv4")]
    ProtocolType(u16),
    #[error("ARP address lengths {hardware}/{protocol}, expected 6/4")]
    AddressLengths { hardware: u8, protocol: u8 },
    #[error("unknown ARP opcode {0}")]
    UnknownOpcode(u16),
    /// Answering would send a reply to a group: refuse rather than amplify.
    #[error("ARP sender MAC {0} is not unicast")]
    SenderMacNotUnicast(MacAddr),
}

impl ArpDrop {
    pub fn reason(&self) -> &'static str {
        match self {
            ArpDrop::NotArp { .. } => "not_arp",
            ArpDrop::Truncated { .. } => "truncated",
            ArpDrop::HardwareType(_) => "hardware_type",
            ArpDrop::ProtocolType(_) => "protocol_type",
            ArpDrop::AddressLengths { .. } => "address_lengths",
            ArpDrop::UnknownOpcode(_) => "unknown_opcode",
            ArpDrop::SenderMacNotUnicast(_) => "sender_mac_not_unicast",
        }
    }
}
