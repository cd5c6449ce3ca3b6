//! Neighbor Discovery frames byte for byte. Checksums are pinned as literals (computed with a
//! separate tool) and re-verified here by an implementation independent of the crate's.

use std::net::Ipv6Addr;

use speaker_core::MacAddr;
use speaker_core::ndp::{
    self, ALL_NODES, NaFlags, Ndp, NdpDrop, NeighborAdvertisement, NeighborSolicitation,
    build_advertisement_reply, build_dad_solicitation, build_solicitation,
    build_unsolicited_advertisement, solicited_node_multicast,
};

const OURS: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
const PEER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const PEER_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const VIP_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x10);
/// The link-local address of our interface: where our advertisements come from.
const OUR_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x51);
#[rustfmt::skip]
const OUR_LL_BYTES: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x51];

#[rustfmt::skip]
const VIP_BYTES: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
#[rustfmt::skip]
const PEER_IP_BYTES: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
#[rustfmt::skip]
const ALL_NODES_BYTES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
#[rustfmt::skip]
const VIP_GROUP_BYTES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0x10];

/// Independent ICMPv6 checksum check: sums the whole pseudo-header and message as 16-bit words
/// in a u64 and folds once at the end; a correct frame sums to 0xffff.
fn checksum_verifies(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let message = &ip[40..];
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&ip[8..40]); // source and destination
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
    sum == 0xffff
}

/// The checksum a message needs, by the same independent method: used to build test inputs.
fn checksum_for(src: [u8; 16], dst: [u8; 16], message: &[u8]) -> [u8; 2] {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src);
    bytes.extend_from_slice(&dst);
    bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 58]);
    bytes.extend_from_slice(message);
    bytes[40 + 2..40 + 4].fill(0);
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
    (!(sum as u16)).to_be_bytes()
}

/// An Ethernet + IPv6 frame around `message`, its checksum filled in by the test's method.
fn frame(
    eth_dst: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    mut message: Vec<u8>,
) -> Vec<u8> {
    let sum = checksum_for(src, dst, &message);
    message[2..4].copy_from_slice(&sum);
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&PEER.octets());
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(message.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, hop_limit]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&message);
    f
}

fn ns_message(target: [u8; 16], options: &[u8]) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target);
    m.extend_from_slice(options);
    m
}

fn na_message(flags: u8, target: [u8; 16], options: &[u8]) -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target);
    m.extend_from_slice(options);
    m
}

const PEER_SLLA: [u8; 8] = [1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER_TLLA: [u8; 8] = [2, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// The peer asking for the VIP at its solicited-node group, as a host sends it.
#[rustfmt::skip]
fn peer_solicitation() -> Vec<u8> {
    let mut f = vec![
        0x33, 0x33, 0xff, 0x00, 0x00, 0x10,  0x52, 0x54, 0x00, 0x12, 0x34, 0x56,  0x86, 0xdd,
        0x60, 0, 0, 0,  0, 32,  58, 255,
    ];
    f.extend_from_slice(&PEER_IP_BYTES);
    f.extend_from_slice(&VIP_GROUP_BYTES);
    f.extend_from_slice(&[135, 0, 0x97, 0x4f, 0, 0, 0, 0]);
    f.extend_from_slice(&VIP_BYTES);
    f.extend_from_slice(&PEER_SLLA);
    f
}

fn parsed_solicitation(frame: &[u8]) -> NeighborSolicitation {
    match ndp::parse(frame) {
        Ok(Ndp::Solicitation(ns)) => ns,
        other => panic!("expected a solicitation, got {other:?}"),
    }
}

#[test]
fn test_helpers_agree_with_the_pinned_checksum() {
    let f = peer_solicitation();
    assert!(checksum_verifies(&f));
    let rebuilt = frame(
        [0x33, 0x33, 0xff, 0, 0, 0x10],
        PEER_IP_BYTES,
        VIP_GROUP_BYTES,
        255,
        ns_message(VIP_BYTES, &PEER_SLLA),
    );
    assert_eq!(rebuilt, f);
}

#[test]
fn a_solicitation_parses_with_its_source_link_address() {
    let ns = parsed_solicitation(&peer_solicitation());
    assert_eq!(
        ns,
        NeighborSolicitation {
            eth_src: PEER,
            src: PEER_IP,
            dst: VIP_GROUP,
            target: VIP,
            source_link_addr: Some(PEER),
        }
    );
    assert!(!ns.is_dad());
    let mut padded = peer_solicitation();
    padded.extend_from_slice(&[0; 10]);
    assert_eq!(parsed_solicitation(&padded), ns);
}

#[test]
fn solicited_advertisement_goes_back_to_the_solicitor_from_our_link_local_address() {
    #[rustfmt::skip]
    let mut expected = vec![
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56,  0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0x86, 0xdd,
        0x60, 0, 0, 0,  0, 32,  58, 255,
    ];
    expected.extend_from_slice(&OUR_LL_BYTES);
    expected.extend_from_slice(&PEER_IP_BYTES);
    // Type 136, code 0, checksum (below), flags S|O, target, Target Link-Layer Address option.
    let mut message = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    message.extend_from_slice(&VIP_BYTES);
    message.extend_from_slice(&[2, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
    let sum = checksum_for(OUR_LL_BYTES, PEER_IP_BYTES, &message);
    message[2..4].copy_from_slice(&sum);
    expected.extend_from_slice(&message);

    let reply = build_advertisement_reply(&parsed_solicitation(&peer_solicitation()), OURS, OUR_LL);
    assert_eq!(reply, expected);
    assert!(checksum_verifies(&reply));
    assert_eq!(
        ndp::parse(&reply),
        Ok(Ndp::Advertisement(NeighborAdvertisement {
            eth_src: OURS,
            src: OUR_LL,
            dst: PEER_IP,
            target: VIP,
            flags: NaFlags {
                router: false,
                solicited: true,
                override_: true
            },
            target_link_addr: Some(OURS),
        }))
    );
}

#[rustfmt::skip]
fn expected_unsolicited() -> Vec<u8> {
    let mut expected = vec![
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01,  0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0x86, 0xdd,
        0x60, 0, 0, 0,  0, 32,  58, 255,
    ];
    expected.extend_from_slice(&OUR_LL_BYTES);
    expected.extend_from_slice(&ALL_NODES_BYTES);
    // Flags: Override only; the checksum below.
    let mut message = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    message.extend_from_slice(&VIP_BYTES);
    message.extend_from_slice(&[2, 1, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
    let sum = checksum_for(OUR_LL_BYTES, ALL_NODES_BYTES, &message);
    message[2..4].copy_from_slice(&sum);
    expected.extend_from_slice(&message);
    expected
}

#[test]
fn unsolicited_advertisement_goes_to_all_nodes_with_override() {
    let frame = build_unsolicited_advertisement(OURS, OUR_LL, VIP);
    assert_eq!(frame, expected_unsolicited());
    assert!(checksum_verifies(&frame));
    let Ok(Ndp::Advertisement(na)) = ndp::parse(&frame) else {
        panic!("not an advertisement");
    };
    assert_eq!(
        (na.src, na.dst, na.target, na.claimed_mac()),
        (OUR_LL, ALL_NODES, VIP, OURS)
    );
    assert_eq!(
        na.flags,
        NaFlags {
            router: false,
            solicited: false,
            override_: true
        }
    );
}

#[test]
fn dad_solicitation_comes_from_unspecified_to_the_solicited_node_group() {
    #[rustfmt::skip]
    let mut expected = vec![
        0x33, 0x33, 0xff, 0x00, 0x00, 0x10,  0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0x86, 0xdd,
        0x60, 0, 0, 0,  0, 24,  58, 255,
    ];
    expected.extend_from_slice(&[0; 16]);
    expected.extend_from_slice(&VIP_GROUP_BYTES);
    expected.extend_from_slice(&[135, 0, 0x4c, 0xcf, 0, 0, 0, 0]);
    expected.extend_from_slice(&VIP_BYTES);

    let frame = build_dad_solicitation(OURS, VIP);
    assert_eq!(frame, expected);
    assert!(checksum_verifies(&frame));
    let ns = parsed_solicitation(&frame);
    assert!(ns.is_dad());
    assert_eq!(
        (ns.target, ns.dst, ns.source_link_addr),
        (VIP, VIP_GROUP, None)
    );
    assert_eq!(solicited_node_multicast(VIP), VIP_GROUP);
}

#[test]
fn a_built_solicitation_is_what_a_host_sends() {
    let frame = build_solicitation(PEER, PEER_IP, VIP);
    assert_eq!(frame, peer_solicitation());
    assert!(checksum_verifies(&frame));
}

#[test]
fn a_solicitation_from_the_unspecified_address_is_a_dad_probe_without_options() {
    let frame = build_solicitation(OURS, Ipv6Addr::UNSPECIFIED, VIP);
    assert_eq!(frame, build_dad_solicitation(OURS, VIP));
    assert!(parsed_solicitation(&frame).is_dad());
}

#[test]
fn answering_someone_elses_dad_goes_to_all_nodes_unsolicited() {
    let dad = build_dad_solicitation(PEER, VIP);
    let reply = build_advertisement_reply(&parsed_solicitation(&dad), OURS, OUR_LL);
    assert_eq!(reply, expected_unsolicited());
}

#[test]
fn a_foreign_advertisement_names_the_other_owner() {
    let f = frame(
        PEER.octets(),
        PEER_IP_BYTES,
        ALL_NODES_BYTES,
        255,
        na_message(0x20, VIP_BYTES, &PEER_TLLA),
    );
    let Ok(Ndp::Advertisement(na)) = ndp::parse(&f) else {
        panic!("not an advertisement");
    };
    assert_eq!((na.target, na.claimed_mac()), (VIP, PEER));
    // Without the option the frame's source is the claim.
    let bare = frame(
        PEER.octets(),
        PEER_IP_BYTES,
        ALL_NODES_BYTES,
        255,
        na_message(0x20, VIP_BYTES, &[]),
    );
    let Ok(Ndp::Advertisement(na)) = ndp::parse(&bare) else {
        panic!("not an advertisement");
    };
    assert_eq!((na.target_link_addr, na.claimed_mac()), (None, PEER));
}

#[test]
fn unknown_options_are_skipped_and_the_first_link_address_wins() {
    // A nonce option (type 14, 8 bytes), then two source link-layer addresses.
    let mut options = vec![14, 1, 1, 2, 3, 4, 5, 6];
    options.extend_from_slice(&PEER_SLLA);
    options.extend_from_slice(&[1, 1, 0xaa, 0, 0, 0, 0, 1]);
    let f = frame(
        [0x33, 0x33, 0xff, 0, 0, 0x10],
        PEER_IP_BYTES,
        VIP_GROUP_BYTES,
        255,
        ns_message(VIP_BYTES, &options),
    );
    assert_eq!(parsed_solicitation(&f).source_link_addr, Some(PEER));
}

#[test]
fn each_rfc_4861_violation_is_dropped_with_its_reason() {
    let group_mac = [0x33, 0x33, 0xff, 0, 0, 0x10];
    let good = peer_solicitation();
    let with = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let ns = |src, dst, hop, options: &[u8]| {
        frame(group_mac, src, dst, hop, ns_message(VIP_BYTES, options))
    };
    let mut flipped_target = good.clone();
    flipped_target[14 + 40 + 8] ^= 0x01;
    let mut icmp_echo = ns_message(VIP_BYTES, &[]);
    icmp_echo[0] = 128;
    let mut code_one = ns_message(VIP_BYTES, &PEER_SLLA);
    code_one[1] = 1;
    let short_message = ns_message(VIP_BYTES, &[])[..20].to_vec();

    let cases: Vec<(Vec<u8>, NdpDrop)> = vec![
        (
            with(12, &[0x08, 0x00]),
            NdpDrop::NotIpv6 { ethertype: 0x0800 },
        ),
        (good[..10].to_vec(), NdpDrop::Truncated { len: 10 }),
        (good[..14 + 39].to_vec(), NdpDrop::Truncated { len: 53 }),
        (
            good[..good.len() - 1].to_vec(),
            NdpDrop::Truncated { len: 85 },
        ),
        (with(14, &[0x40]), NdpDrop::IpVersion(4)),
        (with(14 + 6, &[17]), NdpDrop::NotIcmpv6 { next_header: 17 }),
        (
            frame(group_mac, PEER_IP_BYTES, VIP_GROUP_BYTES, 255, icmp_echo),
            NdpDrop::NotNeighborDiscovery { icmp_type: 128 },
        ),
        (with(14 + 7, &[64]), NdpDrop::HopLimit(64)),
        (
            ns(PEER_IP_BYTES, VIP_GROUP_BYTES, 1, &PEER_SLLA),
            NdpDrop::HopLimit(1),
        ),
        (
            flipped_target.clone(),
            NdpDrop::BadChecksum {
                found: 0x974f,
                computed: u16::from_be_bytes(checksum_for(
                    PEER_IP_BYTES,
                    VIP_GROUP_BYTES,
                    &flipped_target[14 + 40..],
                )),
            },
        ),
        (
            frame(group_mac, PEER_IP_BYTES, VIP_GROUP_BYTES, 255, code_one),
            NdpDrop::Code(1),
        ),
        (
            frame(
                group_mac,
                PEER_IP_BYTES,
                VIP_GROUP_BYTES,
                255,
                short_message,
            ),
            NdpDrop::Truncated { len: 14 + 40 + 20 },
        ),
        (
            frame(
                group_mac,
                PEER_IP_BYTES,
                VIP_GROUP_BYTES,
                255,
                ns_message(ALL_NODES_BYTES, &[]),
            ),
            NdpDrop::MulticastTarget(ALL_NODES),
        ),
        (
            ns(
                PEER_IP_BYTES,
                VIP_GROUP_BYTES,
                255,
                &[1, 0, 0, 0, 0, 0, 0, 0],
            ),
            NdpDrop::ZeroLengthOption,
        ),
        (
            ns(
                PEER_IP_BYTES,
                VIP_GROUP_BYTES,
                255,
                &[1, 2, 0, 0, 0, 0, 0, 0],
            ),
            NdpDrop::TruncatedOption,
        ),
        (
            ns(PEER_IP_BYTES, VIP_GROUP_BYTES, 255, &[1]),
            NdpDrop::TruncatedOption,
        ),
        (
            ns([0; 16], ALL_NODES_BYTES, 255, &[]),
            NdpDrop::DadNotToSolicitedNode(ALL_NODES),
        ),
        (
            ns([0; 16], VIP_GROUP_BYTES, 255, &PEER_SLLA),
            NdpDrop::DadWithSourceLinkAddress,
        ),
        (
            frame(
                [0x33, 0x33, 0, 0, 0, 1],
                PEER_IP_BYTES,
                ALL_NODES_BYTES,
                255,
                na_message(0x60, VIP_BYTES, &PEER_TLLA),
            ),
            NdpDrop::SolicitedToMulticast(ALL_NODES),
        ),
    ];
    for (frame, reason) in cases {
        assert_eq!(ndp::parse(&frame), Err(reason), "{reason}");
    }
}

/// Found by the `parse_frame` fuzz target: a solicitation from a multicast source (here
/// all-nodes) was accepted, and its answer went out with Solicited set to that group, an
/// advertisement every receiver discards (RFC 4861 §7.1.2).
#[test]
#[rustfmt::skip]
fn a_solicitation_from_a_multicast_source_is_dropped() {
    let frame = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x10,  0x52, 0x54, 0x00, 0x12, 0x34, 0x56,  0x86, 0xdd,
        0x60, 0, 0, 0,  0, 32,  58, 255,
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0x10,
        135, 0, 0xc6, 0x05, 0, 0, 0, 0,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
    ];
    assert!(checksum_verifies(&frame));
    assert_eq!(
        ndp::parse(&frame).map_err(|drop| drop.reason()),
        Err("multicast_source")
    );
}
