//! Reading Neighbor Solicitations and Advertisements, with RFC 4861 §7.1's validity checks.

use std::net::Ipv6Addr;

use super::multicast::is_solicited_node_multicast;
use super::wire::{
    FLAG_OVERRIDE, FLAG_ROUTER, FLAG_SOLICITED, IPV6_HEADER_LEN, MESSAGE_LEN, NEXT_HEADER_ICMPV6,
    OPTION_SOURCE_LINK_ADDR, OPTION_TARGET_LINK_ADDR, TYPE_NEIGHBOR_ADVERTISEMENT,
    TYPE_NEIGHBOR_SOLICITATION,
};
use super::{
    HOP_LIMIT, NaFlags, Ndp, NdpDrop, NeighborAdvertisement, NeighborSolicitation, checksum,
};
use crate::MacAddr;
use crate::ethernet::{ETHERTYPE_IPV6, EthernetHeader};

/// Classifies a received Ethernet frame; bytes past the IPv6 payload length (padding) are ignored.
pub fn parse(frame: &[u8]) -> Result<Ndp, NdpDrop> {
    let truncated = NdpDrop::Truncated { len: frame.len() };
    let (ethernet, packet) = EthernetHeader::parse(frame).ok_or(truncated)?;
    if ethernet.ethertype != ETHERTYPE_IPV6 {
        return Err(NdpDrop::NotIpv6 {
            ethertype: ethernet.ethertype,
        });
    }
    if packet.len() < IPV6_HEADER_LEN {
        return Err(truncated);
    }
    let version = packet[0] >> 4;
    if version != 6 {
        return Err(NdpDrop::IpVersion(version));
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let next_header = packet[6];
    let hop_limit = packet[7];
    let src = ipv6_at(packet, 8);
    let dst = ipv6_at(packet, 24);
    let message = packet
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
        .ok_or(truncated)?;
    if next_header != NEXT_HEADER_ICMPV6 {
        return Err(NdpDrop::NotIcmpv6 { next_header });
    }
    if message.len() < 4 {
        return Err(truncated);
    }
    let icmp_type = message[0];
    if icmp_type != TYPE_NEIGHBOR_SOLICITATION && icmp_type != TYPE_NEIGHBOR_ADVERTISEMENT {
        return Err(NdpDrop::NotNeighborDiscovery { icmp_type });
    }
    if hop_limit != HOP_LIMIT {
        return Err(NdpDrop::HopLimit(hop_limit));
    }
    verify_checksum(src, dst, message)?;
    if message[1] != 0 {
        return Err(NdpDrop::Code(message[1]));
    }
    if message.len() < MESSAGE_LEN {
        return Err(truncated);
    }
    let target = ipv6_at(message, 8);
    if target.is_multicast() {
        return Err(NdpDrop::MulticastTarget(target));
    }
    // Linux drops such packets before Neighbor Discovery sees them; an announce socket gets
    // them first.
    if src.is_multicast() {
        return Err(NdpDrop::MulticastSource(src));
    }
    let options = Options::parse(&message[MESSAGE_LEN..])?;

    if icmp_type == TYPE_NEIGHBOR_SOLICITATION {
        if src.is_unspecified() {
            if !is_solicited_node_multicast(dst) {
                return Err(NdpDrop::DadNotToSolicitedNode(dst));
            }
            if options.source_link_addr.is_some() {
                return Err(NdpDrop::DadWithSourceLinkAddress);
            }
        }
        return Ok(Ndp::Solicitation(NeighborSolicitation {
            eth_src: ethernet.src,
            src,
            dst,
            target,
            source_link_addr: options.source_link_addr,
        }));
    }

    let flags = NaFlags {
        router: message[4] & FLAG_ROUTER != 0,
        solicited: message[4] & FLAG_SOLICITED != 0,
        override_: message[4] & FLAG_OVERRIDE != 0,
    };
    if flags.solicited && dst.is_multicast() {
        return Err(NdpDrop::SolicitedToMulticast(dst));
    }
    Ok(Ndp::Advertisement(NeighborAdvertisement {
        eth_src: ethernet.src,
        src,
        dst,
        target,
        flags,
        target_link_addr: options.target_link_addr,
    }))
}

fn ipv6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

fn verify_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> Result<(), NdpDrop> {
    // Summing a message together with a correct checksum gives all ones, whose complement is 0.
    if checksum::icmpv6(src, dst, message) == 0 {
        return Ok(());
    }
    let mut zeroed = message.to_vec();
    zeroed[2..4].fill(0);
    Err(NdpDrop::BadChecksum {
        found: u16::from_be_bytes([message[2], message[3]]),
        computed: checksum::icmpv6(src, dst, &zeroed),
    })
}

/// The link-layer address options; others (nonce, redirect, ...) are skipped.
#[derive(Default)]
struct Options {
    source_link_addr: Option<MacAddr>,
    target_link_addr: Option<MacAddr>,
}

impl Options {
    fn parse(mut bytes: &[u8]) -> Result<Options, NdpDrop> {
        let mut options = Options::default();
        while !bytes.is_empty() {
            let (kind, units) = match bytes {
                [kind, units, ..] => (*kind, usize::from(*units)),
                _ => return Err(NdpDrop::TruncatedOption),
            };
            if units == 0 {
                return Err(NdpDrop::ZeroLengthOption);
            }
            let option = bytes.get(..units * 8).ok_or(NdpDrop::TruncatedOption)?;
            // The first option of a kind wins; an Ethernet address fills bytes 2..8.
            let mac = MacAddr::from_slice(&option[2..8]);
            match kind {
                OPTION_SOURCE_LINK_ADDR => {
                    options.source_link_addr.get_or_insert(mac);
                }
                OPTION_TARGET_LINK_ADDR => {
                    options.target_link_addr.get_or_insert(mac);
                }
                _ => {}
            }
            bytes = &bytes[units * 8..];
        }
        Ok(options)
    }
}
