//! Writing ARP frames.

use std::net::Ipv4Addr;

use super::{ArpOp, ArpQuestion, FRAME_LEN};
use crate::MacAddr;
use crate::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetHeader};

/// The fields of one ARP frame, in wire order.
struct Fields {
    eth_dst: MacAddr,
    op: ArpOp,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
}

fn encode(f: Fields) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_LEN);
    EthernetHeader {
        dst: f.eth_dst,
        src: f.sender_mac,
        ethertype: ETHERTYPE_ARP,
    }
    .write(&mut frame);
    frame.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&(f.op as u16).to_be_bytes());
    frame.extend_from_slice(&f.sender_mac.octets());
    frame.extend_from_slice(&f.sender_ip.octets());
    frame.extend_from_slice(&f.target_mac.octets());
    frame.extend_from_slice(&f.target_ip.octets());
    frame
}

/// Unicast reply from `our_mac` saying `question.target_ip` is at `our_mac`, sent to the asker.
///
/// The caller decides whether we own the address. A probe's asker has no address yet, so the
/// reply's target IP is 0.0.0.0, as Linux answers probes.
pub fn build_reply(question: &ArpQuestion, our_mac: MacAddr) -> Vec<u8> {
    encode(Fields {
        eth_dst: question.sender_mac,
        op: ArpOp::Reply,
        sender_mac: our_mac,
        sender_ip: question.target_ip,
        target_mac: question.sender_mac,
        target_ip: question.sender_ip,
    })
}

/// Broadcast gratuitous ARP for `ip` at `our_mac`, sender IP = target IP = `ip`.
///
/// Both forms are sent on takeover because neighbours differ in which one updates their cache.
/// The request form carries a zero target MAC (RFC 5227 §2.3, an ARP Announcement); the reply
/// form carries our own MAC there (RFC 5944 §4.6).
pub fn build_gratuitous(our_mac: MacAddr, ip: Ipv4Addr, op: ArpOp) -> Vec<u8> {
    encode(Fields {
        eth_dst: MacAddr::BROADCAST,
        op,
        sender_mac: our_mac,
        sender_ip: ip,
        target_mac: match op {
            ArpOp::Request => MacAddr::ZERO,
            ArpOp::Reply => our_mac,
        },
        target_ip: ip,
    })
}

/// Broadcast request "who has `target_ip`? tell `our_ip`", as a host with an address asks: what
/// a test client or a diagnostic tool sends, never the announcer.
pub fn build_request(our_mac: MacAddr, our_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    encode(Fields {
        eth_dst: MacAddr::BROADCAST,
        op: ArpOp::Request,
        sender_mac: our_mac,
        sender_ip: our_ip,
        target_mac: MacAddr::ZERO,
        target_ip,
    })
}

/// Broadcast RFC 5227 probe: "is anyone using `ip`?", asked without claiming it (sender IP
/// 0.0.0.0), so a neighbour's cache is not touched if the answer is yes.
pub fn build_probe(our_mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    encode(Fields {
        eth_dst: MacAddr::BROADCAST,
        op: ArpOp::Request,
        sender_mac: our_mac,
        sender_ip: Ipv4Addr::UNSPECIFIED,
        target_mac: MacAddr::ZERO,
        target_ip: ip,
    })
}
