//! Arbitrary frames into every parser an announce socket feeds: none may panic, the dispatcher
//! agrees with the parser it dispatches to, and the answer to every question accepted parses
//! back as the answer meant.
//!
//! Input: one control byte, then the frame. Control bit 0 rewrites the ICMPv6 checksum of an
//! IPv6 frame before parsing, so mutations reach the checks behind it instead of all dying at
//! `BadChecksum`.

#![no_main]

mod checksum;

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use speaker_core::arp::{self, Arp, ArpAnswer};
use speaker_core::ndp::{self, ALL_NODES, Ndp};
use speaker_core::{Frame, FrameDrop, MacAddr, parse_frame};

const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0x5e, 0x10, 0, 1]);
const OUR_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x11);

fuzz_target!(|data: &[u8]| {
    let Some((&control, frame)) = data.split_first() else {
        return;
    };
    let mut frame = frame.to_vec();
    if control & 1 == 1 {
        fix_icmpv6_checksum(&mut frame);
    }

    let arp = arp::parse(&frame);
    let ndp = ndp::parse(&frame);
    match parse_frame(&frame) {
        Ok(Frame::Arp(a)) => assert_eq!(arp, Ok(a)),
        Ok(Frame::Ndp(n)) => assert_eq!(ndp, Ok(n)),
        Err(FrameDrop::Arp(drop)) => assert_eq!(arp, Err(drop)),
        Err(FrameDrop::Ndp(drop)) => assert_eq!(ndp, Err(drop)),
        Err(FrameDrop::Truncated { .. } | FrameDrop::OtherEtherType(_)) => {
            assert!(arp.is_err() && ndp.is_err());
        }
    }

    // What an announcer sends back must read, by our own parser, as the answer it means.
    if let Ok(question) = arp
        && let Some(q) = question.question()
    {
        let reply = arp::build_reply(q, OUR_MAC);
        assert_eq!(
            arp::parse(&reply),
            Ok(Arp::Reply(ArpAnswer {
                sender_mac: OUR_MAC,
                sender_ip: q.target_ip,
                target_mac: q.sender_mac,
                target_ip: q.sender_ip,
            }))
        );
    }
    if let Ok(Ndp::Solicitation(ns)) = ndp {
        let reply = ndp::build_advertisement_reply(&ns, OUR_MAC, OUR_LINK_LOCAL);
        let Ok(Ndp::Advertisement(na)) = ndp::parse(&reply) else {
            panic!(
                "our answer to {ns:?} does not parse: {:?}",
                ndp::parse(&reply)
            );
        };
        assert_eq!(na.eth_src, OUR_MAC);
        assert_eq!(na.src, OUR_LINK_LOCAL);
        assert_eq!(na.target, ns.target);
        assert_eq!(na.claimed_mac(), OUR_MAC);
        assert!(na.flags.override_ && !na.flags.router);
        assert_eq!(na.flags.solicited, !ns.is_dad());
        assert_eq!(na.dst, if ns.is_dad() { ALL_NODES } else { ns.src });
        if !ns.is_dad() {
            assert_eq!(reply[..6], ns.reply_mac().octets());
        }
    }
});

/// Recomputes the ICMPv6 checksum of an Ethernet + IPv6 frame in place (RFC 4443 §2.3), over
/// as much of the payload as the frame holds.
fn fix_icmpv6_checksum(frame: &mut [u8]) {
    const IP: usize = 14;
    const MESSAGE: usize = IP + 40;
    if frame.len() < MESSAGE + 4 || frame[12..14] != [0x86, 0xdd] {
        return;
    }
    let payload_len = usize::from(u16::from_be_bytes([frame[IP + 4], frame[IP + 5]]));
    let end = frame.len().min(MESSAGE + payload_len);
    if end < MESSAGE + 4 {
        return;
    }
    frame[MESSAGE + 2..MESSAGE + 4].fill(0);
    let mut pseudo = frame[IP + 8..IP + 40].to_vec();
    pseudo.extend_from_slice(&((end - MESSAGE) as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&frame[MESSAGE..end]);
    let sum = checksum::internet_checksum(&pseudo);
    frame[MESSAGE + 2..MESSAGE + 4].copy_from_slice(&sum.to_be_bytes());
}
