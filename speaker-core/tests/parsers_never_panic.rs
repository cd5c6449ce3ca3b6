//! Parsers face whatever the wire carries: none may panic, on noise or on near-valid frames.
//! The same inputs drive the fuzz target in `fuzz/`.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use speaker_core::arp::{self, ArpOp};
use speaker_core::ndp::{self, Ndp};
use speaker_core::{Frame, FrameDrop, MacAddr, parse_frame};

fn parse_all(bytes: &[u8]) {
    let _ = arp::parse(bytes);
    let _ = ndp::parse(bytes);
    let _ = parse_frame(bytes);
}

fn valid_frames() -> Vec<Vec<u8>> {
    let mac = MacAddr([2, 0, 0x5e, 0x10, 0, 1]);
    let v4 = Ipv4Addr::new(192, 0, 2, 10);
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    vec![
        arp::build_gratuitous(mac, v4, ArpOp::Request),
        arp::build_gratuitous(mac, v4, ArpOp::Reply),
        arp::build_probe(mac, v4),
        ndp::build_unsolicited_advertisement(mac, Ipv6Addr::LOCALHOST, v6),
        ndp::build_dad_solicitation(mac, v6),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn noise_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        parse_all(&bytes);
    }

    /// Noise behind a right ethertype reaches past the first check.
    #[test]
    fn noise_behind_a_known_ethertype_never_panics(
        ethertype in prop_oneof![Just([0x08u8, 0x06]), Just([0x86, 0xdd])],
        body in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(&body);
        parse_all(&frame);
    }

    /// Valid frames with bytes overwritten, cut short or extended.
    #[test]
    fn mangled_valid_frames_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut frame = which.get(&valid_frames()).clone();
        for (at, byte) in edits {
            let at = at.index(frame.len());
            frame[at] = byte;
        }
        frame.truncate(cut.index(frame.len() + 1));
        frame.extend_from_slice(&tail);
        parse_all(&frame);
    }

    /// Neighbor Discovery bodies of any content behind a valid IPv6 header and a correct
    /// checksum: reaches option parsing, which noise almost never does.
    #[test]
    fn any_checksummed_icmpv6_body_never_panics(
        icmp_type in prop_oneof![Just(135u8), Just(136u8)],
        rest in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut frame = ndp::build_unsolicited_advertisement(
            MacAddr([2, 0, 0, 0, 0, 1]),
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
        );
        frame.truncate(14 + 40);
        let mut message = vec![icmp_type, 0, 0, 0];
        message.extend_from_slice(&rest);
        frame[18..20].copy_from_slice(&(message.len() as u16).to_be_bytes());
        frame.extend_from_slice(&message);
        let sum = icmpv6_checksum(&frame);
        frame[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&sum.to_be_bytes());
        let parsed = ndp::parse(&frame);
        prop_assert!(
            !matches!(parsed, Err(ndp::NdpDrop::BadChecksum { .. })),
            "the checksum was filled in, yet {:?}",
            parsed
        );
    }
}

/// Checksum for a frame whose checksum field is zero.
fn icmpv6_checksum(frame: &[u8]) -> u16 {
    let ip = &frame[14..];
    let message = &ip[40..];
    let mut bytes = ip[8..40].to_vec();
    bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 58]);
    bytes.extend_from_slice(message);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(w[1]))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn parse_frame_dispatches_on_ethertype() {
    let frames = valid_frames();
    assert!(matches!(parse_frame(&frames[0]), Ok(Frame::Arp(_))));
    assert!(matches!(
        parse_frame(&frames[3]),
        Ok(Frame::Ndp(Ndp::Advertisement(_)))
    ));
    let mut ipv4 = frames[0].clone();
    ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse_frame(&ipv4), Err(FrameDrop::OtherEtherType(0x0800)));
    assert_eq!(parse_frame(&[0; 5]), Err(FrameDrop::Truncated { len: 5 }));
    let mut bad_hop = frames[3].clone();
    bad_hop[21] = 64;
    let drop = parse_frame(&bad_hop).unwrap_err();
    assert_eq!(drop, FrameDrop::Ndp(ndp::NdpDrop::HopLimit(64)));
    assert_eq!(drop.reason(), "hop_limit");
}
