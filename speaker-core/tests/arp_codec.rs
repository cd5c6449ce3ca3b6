//! ARP frames byte for byte: every builder against a hand-written vector, every drop reason
//! against a frame that triggers it, and parse(build(x)) round trips.

use std::net::Ipv4Addr;

use speaker_core::MacAddr;
use speaker_core::arp::{
    self, Arp, ArpAnswer, ArpDrop, ArpOp, ArpQuestion, build_gratuitous, build_probe, build_reply,
    build_request,
};

const OURS: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
const PEER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// "Who has 192.0.2.10? Tell 192.0.2.1", as a host sends it, padded to 60 bytes by its NIC.
#[rustfmt::skip]
const REQUEST: [u8; 60] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  0x52, 0x54, 0x00, 0x12, 0x34, 0x56,  0x08, 0x06,
    0x00, 0x01,  0x08, 0x00,  6, 4,  0x00, 0x01,
    0x52, 0x54, 0x00, 0x12, 0x34, 0x56,  192, 0, 2, 1,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  192, 0, 2, 10,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn question() -> ArpQuestion {
    ArpQuestion {
        sender_mac: PEER,
        sender_ip: PEER_IP,
        target_ip: VIP,
    }
}

#[test]
fn a_padded_request_parses_as_a_question() {
    assert_eq!(arp::parse(&REQUEST), Ok(Arp::Request(question())));
    assert_eq!(arp::parse(&REQUEST[..42]), Ok(Arp::Request(question())));
}

#[test]
fn a_built_request_is_what_a_host_sends_before_padding() {
    let frame = build_request(PEER, PEER_IP, VIP);
    assert_eq!(frame, REQUEST[..42]);
    assert_eq!(arp::parse(&frame), Ok(Arp::Request(question())));
}

#[test]
fn reply_goes_to_the_asker_and_names_our_mac() {
    #[rustfmt::skip]
    let expected = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56,  0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0x08, 0x06,
        0x00, 0x01,  0x08, 0x00,  6, 4,  0x00, 0x02,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  192, 0, 2, 10,
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56,  192, 0, 2, 1,
    ];
    let frame = build_reply(&question(), OURS);
    assert_eq!(frame, expected);
    assert_eq!(
        arp::parse(&frame),
        Ok(Arp::Reply(ArpAnswer {
            sender_mac: OURS,
            sender_ip: VIP,
            target_mac: PEER,
            target_ip: PEER_IP,
        }))
    );
}

#[test]
fn gratuitous_request_is_a_broadcast_announcement_with_zero_target_mac() {
    #[rustfmt::skip]
    let expected = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0x08, 0x06,
        0x00, 0x01,  0x08, 0x00,  6, 4,  0x00, 0x01,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  192, 0, 2, 10,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  192, 0, 2, 10,
    ];
    let frame = build_gratuitous(OURS, VIP, ArpOp::Request);
    assert_eq!(frame, expected);
    assert_eq!(
        arp::parse(&frame),
        Ok(Arp::Gratuitous {
            op: ArpOp::Request,
            sender_mac: OURS,
            ip: VIP
        })
    );
}

#[test]
fn gratuitous_reply_is_broadcast_with_our_mac_as_target() {
    #[rustfmt::skip]
    let expected = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0x08, 0x06,
        0x00, 0x01,  0x08, 0x00,  6, 4,  0x00, 0x02,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  192, 0, 2, 10,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  192, 0, 2, 10,
    ];
    let frame = build_gratuitous(OURS, VIP, ArpOp::Reply);
    assert_eq!(frame, expected);
    assert_eq!(
        arp::parse(&frame),
        Ok(Arp::Gratuitous {
            op: ArpOp::Reply,
            sender_mac: OURS,
            ip: VIP
        })
    );
}

#[test]
fn probe_asks_from_the_unspecified_address() {
    #[rustfmt::skip]
    let expected = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0x08, 0x06,
        0x00, 0x01,  0x08, 0x00,  6, 4,  0x00, 0x01,
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01,  0, 0, 0, 0,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  192, 0, 2, 10,
    ];
    let frame = build_probe(OURS, VIP);
    assert_eq!(frame, expected);
    let parsed = arp::parse(&frame).unwrap();
    assert_eq!(
        parsed,
        Arp::Probe(ArpQuestion {
            sender_mac: OURS,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_ip: VIP,
        })
    );
    assert_eq!(parsed.sender_claim(), None, "a probe claims nothing");
}

#[test]
fn answering_a_probe_defends_the_address_without_naming_an_ip_for_the_prober() {
    let probe = arp::parse(&build_probe(PEER, VIP)).unwrap();
    let reply = build_reply(probe.question().unwrap(), OURS);
    assert_eq!(
        arp::parse(&reply),
        Ok(Arp::Reply(ArpAnswer {
            sender_mac: OURS,
            sender_ip: VIP,
            target_mac: PEER,
            target_ip: Ipv4Addr::UNSPECIFIED,
        }))
    );
    assert_eq!(&reply[..6], &PEER.octets(), "unicast to the prober");
}

#[test]
fn sender_claims_reveal_who_uses_an_address() {
    let claims = |frame: &[u8]| arp::parse(frame).unwrap().sender_claim();
    assert_eq!(claims(&REQUEST), Some((PEER, PEER_IP)));
    assert_eq!(
        claims(&build_gratuitous(PEER, VIP, ArpOp::Reply)),
        Some((PEER, VIP))
    );
    assert_eq!(claims(&build_reply(&question(), OURS)), Some((OURS, VIP)));
    assert_eq!(arp::parse(&REQUEST).unwrap().question(), Some(&question()));
    let gratuitous = arp::parse(&build_gratuitous(PEER, VIP, ArpOp::Request)).unwrap();
    assert_eq!(
        gratuitous.question(),
        None,
        "announcements are not answered"
    );
}

/// `REQUEST` with `bytes` written at `at`.
fn request_with(at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut frame = REQUEST.to_vec();
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

#[test]
fn each_malformation_is_dropped_with_its_reason() {
    let cases: Vec<(Vec<u8>, ArpDrop)> = vec![
        (
            request_with(12, &[0x86, 0xdd]),
            ArpDrop::NotArp { ethertype: 0x86dd },
        ),
        (REQUEST[..13].to_vec(), ArpDrop::Truncated { len: 13 }),
        (REQUEST[..41].to_vec(), ArpDrop::Truncated { len: 41 }),
        (request_with(14, &[0x00, 0x06]), ArpDrop::HardwareType(6)),
        (
            request_with(16, &[0x86, 0xdd]),
            ArpDrop::ProtocolType(0x86dd),
        ),
        (
            request_with(18, &[6, 16]),
            ArpDrop::AddressLengths {
                hardware: 6,
                protocol: 16,
            },
        ),
        (
            request_with(18, &[8, 4]),
            ArpDrop::AddressLengths {
                hardware: 8,
                protocol: 4,
            },
        ),
        (request_with(20, &[0x00, 0x03]), ArpDrop::UnknownOpcode(3)),
        (request_with(20, &[0x00, 0x00]), ArpDrop::UnknownOpcode(0)),
        (
            request_with(22, &[0xff; 6]),
            ArpDrop::SenderMacNotUnicast(MacAddr::BROADCAST),
        ),
        (
            request_with(22, &[0x01, 0x00, 0x5e, 0, 0, 1]),
            ArpDrop::SenderMacNotUnicast(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1])),
        ),
    ];
    for (frame, reason) in cases {
        assert_eq!(arp::parse(&frame), Err(reason), "{reason}");
    }
}

#[test]
fn drop_reasons_have_distinct_metric_labels() {
    let labels = [
        ArpDrop::NotArp { ethertype: 0 }.reason(),
        ArpDrop::Truncated { len: 0 }.reason(),
        ArpDrop::HardwareType(0).reason(),
        ArpDrop::ProtocolType(0).reason(),
        ArpDrop::AddressLengths {
            hardware: 0,
            protocol: 0,
        }
        .reason(),
        ArpDrop::UnknownOpcode(0).reason(),
        ArpDrop::SenderMacNotUnicast(MacAddr::BROADCAST).reason(),
    ];
    let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
    assert_eq!(distinct.len(), labels.len());
}
