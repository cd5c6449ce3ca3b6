//! Writing Neighbor Advertisements and Solicitations.

use std::net::Ipv6Addr;

use super::multicast::{ALL_NODES, solicited_node_multicast};
use super::wire::{
    FLAG_OVERRIDE, FLAG_SOLICITED, IPV6_HEADER_LEN, MESSAGE_LEN, NEXT_HEADER_ICMPV6,
    OPTION_SOURCE_LINK_ADDR, OPTION_TARGET_LINK_ADDR, TYPE_NEIGHBOR_ADVERTISEMENT,
    TYPE_NEIGHBOR_SOLICITATION,
};
use super::{HOP_LIMIT, NeighborSolicitation, checksum};
use crate::MacAddr;
use crate::ethernet::{ETHERTYPE_IPV6, EthernetHeader, HEADER_LEN};

/// Answer to `solicitation` for its target, which the caller owns, at `our_mac`.
///
/// Sent from `our_link_local`, the link-local address of the interface it leaves by: RFC 4861
/// §7.2.4 wants an address of that interface, and switches with ND inspection drop
/// advertisements from anything else (the announced address is on no interface). Override is
/// set so the asker replaces any stale binding. A normal solicitation gets a unicast reply with
/// Solicited set; a DAD solicitation, whose sender has no address yet, gets an all-nodes reply
/// with Solicited clear, which also makes the sender's DAD fail.
pub fn build_advertisement_reply(
    solicitation: &NeighborSolicitation,
    our_mac: MacAddr,
    our_link_local: Ipv6Addr,
) -> Vec<u8> {
    let (eth_dst, dst, flags) = if solicitation.is_dad() {
        (MacAddr::ipv6_multicast(ALL_NODES), ALL_NODES, FLAG_OVERRIDE)
    } else {
        (
            solicitation.reply_mac(),
            solicitation.src,
            FLAG_SOLICITED | FLAG_OVERRIDE,
        )
    };
    advertisement(
        our_mac,
        our_link_local,
        eth_dst,
        solicitation.target,
        dst,
        flags,
    )
}

/// Unsolicited advertisement of `address` at `our_mac` to all nodes, from `our_link_local`,
/// Override set and Solicited clear: the IPv6 counterpart of a gratuitous ARP, sent on
/// takeover.
pub fn build_unsolicited_advertisement(
    our_mac: MacAddr,
    our_link_local: Ipv6Addr,
    address: Ipv6Addr,
) -> Vec<u8> {
    advertisement(
        our_mac,
        our_link_local,
        MacAddr::ipv6_multicast(ALL_NODES),
        address,
        ALL_NODES,
        FLAG_OVERRIDE,
    )
}

/// Duplicate Address Detection probe for `address`: a solicitation from `::` to the address's
/// solicited-node group, without a source link-layer option (RFC 4862 §5.4.2). Any
/// advertisement for `address` in return means another host holds it.
pub fn build_dad_solicitation(our_mac: MacAddr, address: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node_multicast(address);
    let message = icmp_message(TYPE_NEIGHBOR_SOLICITATION, 0, address, None);
    packet(
        our_mac,
        MacAddr::ipv6_multicast(group),
        Ipv6Addr::UNSPECIFIED,
        group,
        message,
    )
}

/// Solicitation "who has `target`?" from `src` to `target`'s solicited-node group, with our
/// Source Link-Layer Address option so the answer comes straight back: what a host resolving a
/// neighbour sends (a test client or a diagnostic tool, never the announcer). From `::` it is
/// a DAD probe, which must carry no link-layer option, so it equals
/// [`build_dad_solicitation`].
pub fn build_solicitation(our_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    if src.is_unspecified() {
        return build_dad_solicitation(our_mac, target);
    }
    let group = solicited_node_multicast(target);
    let message = icmp_message(
        TYPE_NEIGHBOR_SOLICITATION,
        0,
        target,
        Some((OPTION_SOURCE_LINK_ADDR, our_mac)),
    );
    packet(our_mac, MacAddr::ipv6_multicast(group), src, group, message)
}

fn advertisement(
    our_mac: MacAddr,
    src: Ipv6Addr,
    eth_dst: MacAddr,
    target: Ipv6Addr,
    dst: Ipv6Addr,
    flags: u8,
) -> Vec<u8> {
    let message = icmp_message(
        TYPE_NEIGHBOR_ADVERTISEMENT,
        flags,
        target,
        Some((OPTION_TARGET_LINK_ADDR, our_mac)),
    );
    packet(our_mac, eth_dst, src, dst, message)
}

/// An NS or NA body with a zero checksum, and a link-layer address option (its type and the
/// address) if given.
fn icmp_message(
    icmp_type: u8,
    flags: u8,
    target: Ipv6Addr,
    link_addr_option: Option<(u8, MacAddr)>,
) -> Vec<u8> {
    let mut message = Vec::with_capacity(MESSAGE_LEN + 8);
    message.extend_from_slice(&[icmp_type, 0, 0, 0, flags, 0, 0, 0]);
    message.extend_from_slice(&target.octets());
    if let Some((option, mac)) = link_addr_option {
        message.extend_from_slice(&[option, 1]);
        message.extend_from_slice(&mac.octets());
    }
    message
}

/// Wraps `message` in IPv6 (hop limit 255) and Ethernet, filling in the ICMPv6 checksum.
fn packet(
    our_mac: MacAddr,
    eth_dst: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    mut message: Vec<u8>,
) -> Vec<u8> {
    let sum = checksum::icmpv6(src, dst, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    // Messages are at most 32 bytes, far below the 16-bit payload length.
    let payload_len = message.len() as u16;

    let mut frame = Vec::with_capacity(HEADER_LEN + IPV6_HEADER_LEN + message.len());
    EthernetHeader {
        dst: eth_dst,
        src: our_mac,
        ethertype: ETHERTYPE_IPV6,
    }
    .write(&mut frame);
    frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    frame.extend_from_slice(&payload_len.to_be_bytes());
    frame.extend_from_slice(&[NEXT_HEADER_ICMPV6, HOP_LIMIT]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(&message);
    frame
}
