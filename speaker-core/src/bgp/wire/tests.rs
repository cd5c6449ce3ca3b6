use std::net::{IpAddr, Ipv4Addr};

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::path_attribute::{AsPath, MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use proptest::prelude::*;

use super::*;

fn config(local_asn: u32) -> PeerConfig {
    PeerConfig {
        local_asn,
        ..crate::bgp::tests::config()
    }
}

/// An address alone: /32 or /128.
fn host_prefix(ip: IpAddr) -> Prefix {
    match ip {
        IpAddr::V4(_) => (ip, 32),
        IpAddr::V6(_) => (ip, 128),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The UPDATE as netgauze reads it, for the attributes' values.
fn parsed(bytes: &[u8]) -> BgpUpdateMessage {
    let mut context = BgpParsingContext::new(
        true,
        Default::default(),
        Default::default(),
        true,
        true,
        true,
        true,
    );
    match BgpMessage::parse(&mut SliceReader::new(bytes), &mut context).unwrap() {
        BgpMessage::Update(update) => update,
        other => panic!("not an UPDATE: {other:?}"),
    }
}

#[derive(Debug, Default, PartialEq)]
struct Seen {
    as_path: Vec<u32>,
    next_hop: Option<IpAddr>,
    local_pref: Option<u32>,
    communities: Vec<u32>,
    large: usize,
    announced: Vec<String>,
    withdrawn: Vec<String>,
}

fn seen(bytes: &[u8]) -> Seen {
    let update = parsed(bytes);
    let mut s = Seen {
        announced: update
            .nlri()
            .iter()
            .map(|n| n.network().address().to_string())
            .collect(),
        withdrawn: update
            .withdraw_routes()
            .iter()
            .map(|n| n.network().address().to_string())
            .collect(),
        ..Seen::default()
    };
    for attribute in update.path_attributes() {
        match attribute.value() {
            PathAttributeValue::AsPath(AsPath::As4PathSegments(segments)) => {
                s.as_path = segments
                    .iter()
                    .flat_map(|g| g.as_numbers().to_vec())
                    .collect();
            }
            PathAttributeValue::NextHop(hop) => s.next_hop = Some(IpAddr::V4(hop.next_hop())),
            PathAttributeValue::LocalPreference(p) => s.local_pref = Some(p.metric()),
            PathAttributeValue::Communities(c) => {
                s.communities = c.communities().iter().map(|c| c.value()).collect();
            }
            PathAttributeValue::LargeCommunities(c) => s.large = c.communities().len(),
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                next_hop_global,
                nlri,
                ..
            }) => {
                s.next_hop = Some(IpAddr::V6(*next_hop_global));
                s.announced = nlri
                    .iter()
                    .map(|n| n.network().address().to_string())
                    .collect();
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                s.withdrawn = nlri
                    .iter()
                    .map(|n| n.network().address().to_string())
                    .collect();
            }
            _ => {}
        }
    }
    s
}

#[test]
fn an_open_reads_back_with_the_4_byte_asn_and_the_families() {
    let bytes = encode_open(&config(4_200_000_001));
    // The 2-byte field holds AS_TRANS; the capability the real ASN.
    assert_eq!(u16::from_be_bytes([bytes[20], bytes[21]]), AS_TRANS);
    assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
    assert_eq!(
        decode(&bytes, false),
        Ok(Message::Open(Open {
            version: 4,
            asn: 4_200_000_001,
            hold_time: 90,
            router_id: Ipv4Addr::new(198, 51, 100, 11),
            four_octet_asn: true,
            families: Families {
                ipv4: true,
                ipv6: true
            },
        }))
    );
    let small = encode_open(&config(64512));
    assert_eq!(u16::from_be_bytes([small[20], small[21]]), 64512);
}

#[test]
fn keepalive_and_notification_are_their_fixed_bytes() {
    let mut keepalive = vec![0xff; 16];
    keepalive.extend_from_slice(&[0, 19, 4]);
    assert_eq!(encode_keepalive(), keepalive);
    assert_eq!(decode(&keepalive, true), Ok(Message::Keepalive));
    let cease = encode_notification(Notification::ADMIN_SHUTDOWN);
    assert_eq!(&cease[16..], &[0, 21, 3, 6, 2]);
    assert_eq!(
        decode(&cease, true),
        Ok(Message::Notification(Notification::ADMIN_SHUTDOWN))
    );
    // A subcode from a newer RFC than any library knows still reads as a NOTIFICATION, with
    // whatever data follows it.
    let mut newer = encode_notification(Notification::new(6, 42));
    newer.extend_from_slice(b"bye");
    newer[17] = newer.len() as u8;
    assert_eq!(
        decode(&newer, true),
        Ok(Message::Notification(Notification::new(6, 42)))
    );
}

#[test]
fn an_ebgp_announcement_carries_our_asn_and_next_hop_and_no_local_pref() {
    let attributes = Attributes {
        communities: vec![0xFFFF_FF01, (64512 << 16) | 7],
        large_communities: vec![(4_200_000_001, 1, 2)],
        local_pref: Some(200),
    };
    let prefixes = [
        host_prefix(ip("198.51.100.200")),
        host_prefix(ip("198.51.100.201")),
    ];
    let messages = encode_announce(
        &config(4_200_000_001),
        ip("198.51.100.11"),
        &prefixes,
        &attributes,
    )
    .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(decode(&messages[0], true), Ok(Message::Update));
    assert_eq!(
        seen(&messages[0]),
        Seen {
            as_path: vec![4_200_000_001],
            next_hop: Some(ip("198.51.100.11")),
            local_pref: None,
            communities: vec![0xFFFF_FF01, (64512 << 16) | 7],
            large: 1,
            announced: vec!["198.51.100.200/32".into(), "198.51.100.201/32".into()],
            withdrawn: vec![],
        }
    );
}

#[test]
fn an_ibgp_announcement_has_an_empty_as_path_and_the_local_pref() {
    let attributes = Attributes {
        local_pref: Some(200),
        ..Attributes::default()
    };
    let messages = encode_announce(
        &config(64500),
        ip("198.51.100.11"),
        &[(ip("198.51.100.200"), 32)],
        &attributes,
    )
    .unwrap();
    let s = seen(&messages[0]);
    assert_eq!((s.as_path, s.local_pref), (vec![], Some(200)));
}

#[test]
fn ipv6_goes_in_mp_reach_and_mp_unreach_with_a_global_next_hop() {
    let prefixes = [host_prefix(ip("2001:db8::1:5"))];
    let announce = encode_announce(
        &config(64512),
        ip("2001:db8::11"),
        &prefixes,
        &Attributes::default(),
    )
    .unwrap();
    let s = seen(&announce[0]);
    assert_eq!(s.next_hop, Some(ip("2001:db8::11")));
    assert_eq!(s.announced, ["2001:db8::1:5/128"]);
    let withdraw = encode_withdraw(&prefixes).unwrap();
    assert_eq!(seen(&withdraw[0]).withdrawn, ["2001:db8::1:5/128"]);
    let withdraw = encode_withdraw(&[(ip("198.51.100.200"), 32)]).unwrap();
    assert_eq!(seen(&withdraw[0]).withdrawn, ["198.51.100.200/32"]);
    // An aggregated prefix is written by its network address.
    let aggregate = encode_announce(
        &config(64512),
        ip("198.51.100.11"),
        &[(ip("198.51.100.201"), 24)],
        &Attributes::default(),
    )
    .unwrap();
    assert_eq!(seen(&aggregate[0]).announced, ["198.51.100.0/24"]);
    // A prefix of the other family than the next hop is refused, not sent wrong.
    assert!(
        encode_announce(
            &config(64512),
            ip("2001:db8::11"),
            &[(ip("198.51.100.1"), 32)],
            &Attributes::default()
        )
        .is_err()
    );
}

#[test]
fn many_prefixes_are_split_into_updates_that_fit_4096_bytes() {
    let prefixes: Vec<Prefix> = (0..400u16)
        .map(|i| {
            host_prefix(IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0, 0, 0, 0, 1, i,
            )))
        })
        .collect();
    let announce = encode_announce(
        &config(64512),
        ip("2001:db8::11"),
        &prefixes,
        &Attributes::default(),
    )
    .unwrap();
    assert_eq!(announce.len(), 3);
    let mut all = vec![];
    for message in &announce {
        assert!(message.len() <= MAX_LEN, "{} bytes", message.len());
        all.extend(seen(message).announced);
    }
    assert_eq!(all.len(), 400);
}

#[test]
fn a_bad_header_is_answered_as_rfc_4271_says() {
    let mut keepalive = encode_keepalive();
    assert_eq!(frame_len(&keepalive[..18]), Ok(None));
    keepalive[3] = 0;
    assert_eq!(frame_len(&keepalive), Err(Notification::new(1, 1)));
    let mut short = encode_keepalive();
    short[17] = 18;
    assert_eq!(frame_len(&short), Err(Notification::new(1, 2)));
    let mut long = encode_keepalive();
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert_eq!(frame_len(&long), Err(Notification::new(1, 2)));
    let mut unknown = encode_keepalive();
    unknown[18] = 9;
    assert_eq!(decode(&unknown, true), Err(Notification::new(1, 3)));
    let mut keepalive_with_body = encode_keepalive();
    keepalive_with_body.push(0);
    keepalive_with_body[17] = 20;
    assert_eq!(
        decode(&keepalive_with_body, true),
        Err(Notification::new(1, 2))
    );
    // A broken OPEN is an OPEN Message Error.
    let mut open = encode_open(&config(64512));
    open[28] = 200; // the optional parameters' length, beyond the message
    assert_eq!(decode(&open, true), Err(Notification::new(2, 0)));
}

proptest! {
    #[test]
    fn decoding_any_message_never_panics(
        kind in 1u8..6, body in proptest::collection::vec(any::<u8>(), 0..200), asn4 in any::<bool>()
    ) {
        let mut frame = vec![0xff; 16];
        frame.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        frame.push(kind);
        frame.extend_from_slice(&body);
        let _ = decode(&frame, asn4);
    }
}
