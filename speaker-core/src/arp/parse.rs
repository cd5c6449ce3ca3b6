//! Reading ARP frames.

use std::net::Ipv4Addr;

use super::{Arp, ArpAnswer, ArpDrop, ArpOp, ArpQuestion};
use crate::MacAddr;
use crate::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetHeader};

const HARDWARE_ETHERNET: u16 = 1;
const BODY_LEN: usize = 28;

/// Classifies a received Ethernet frame; trailing padding is ignored.
pub fn parse(frame: &[u8]) -> Result<Arp, ArpDrop> {
    let truncated = ArpDrop::Truncated { len: frame.len() };
    let (header, body) = EthernetHeader::parse(frame).ok_or(truncated)?;
    if header.ethertype != ETHERTYPE_ARP {
        return Err(ArpDrop::NotArp {
            ethertype: header.ethertype,
        });
    }
    if body.len() < BODY_LEN {
        return Err(truncated);
    }
    let be16 = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let ipv4 = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);

    let hardware = be16(0);
    if hardware != HARDWARE_ETHERNET {
        return Err(ArpDrop::HardwareType(hardware));
    }
    let protocol = be16(2);
    if protocol != ETHERTYPE_IPV4 {
        return Err(ArpDrop::ProtocolType(protocol));
    }
    if (body[4], body[5]) != (6, 4) {
        return Err(ArpDrop::AddressLengths {
            hardware: body[4],
            protocol: body[5],
        });
    }
    let op = match be16(6) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        other => return Err(ArpDrop::UnknownOpcode(other)),
    };
    let sender_mac = MacAddr::from_slice(&body[8..14]);
    if sender_mac.is_multicast() {
        return Err(ArpDrop::SenderMacNotUnicast(sender_mac));
    }
    let sender_ip = ipv4(14);
    let target_mac = MacAddr::from_slice(&body[18..24]);
    let target_ip = ipv4(24);

    let question = ArpQuestion {
        sender_mac,
        sender_ip,
        target_ip,
    };
    Ok(match op {
        ArpOp::Request if sender_ip.is_unspecified() => Arp::Probe(question),
        _ if sender_ip == target_ip && !sender_ip.is_unspecified() => Arp::Gratuitous {
            op,
            sender_mac,
            ip: sender_ip,
        },
        ArpOp::Request => Arp::Request(question),
        ArpOp::Reply => Arp::Reply(ArpAnswer {
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        }),
    })
}
