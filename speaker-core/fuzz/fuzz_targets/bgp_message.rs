//! Arbitrary bytes into the BGP decoder, read as the session reads its TCP stream: frame, decode,
//! drop the message, repeat. Nothing may panic, and what has an encoder reads back the same:
//! KEEPALIVE and NOTIFICATION byte for byte, an OPEN through `encode_open` field for field.
//!
//! Input: one byte whose bit 0 is `asn4` (both OPENs carried the 4-byte ASN capability), then
//! the stream.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use speaker_core::bgp::wire::{
    HEADER_LEN, Message, decode, encode_keepalive, encode_notification, encode_open, frame_len,
};
use speaker_core::bgp::{Families, Open, PeerConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut stream)) = data.split_first() else {
        return;
    };
    let asn4 = control & 1 == 1;
    while let Ok(Some(len)) = frame_len(stream) {
        let Some(frame) = stream.get(..len) else {
            return;
        };
        stream = &stream[len..];
        match decode(frame, asn4) {
            Ok(Message::Keepalive) => assert_eq!(encode_keepalive(), frame),
            Ok(Message::Notification(n)) => {
                // The data after the subcode is not kept.
                let mut expected = frame[..HEADER_LEN + 2].to_vec();
                expected[16..18].copy_from_slice(&((HEADER_LEN + 2) as u16).to_be_bytes());
                assert_eq!(encode_notification(n), expected);
            }
            Ok(Message::Open(open)) => open_reads_back(&open),
            Ok(Message::Update | Message::RouteRefresh) | Err(_) => {}
        }
    }
});

/// An OPEN with what `open` says, as this end writes one, decodes to `open` again, save what
/// this end's OPEN always says: version 4 and the 4-byte ASN capability.
fn open_reads_back(open: &Open) {
    let config = PeerConfig {
        local_asn: open.asn,
        peer_asn: open.asn,
        router_id: open.router_id,
        hold_time: Duration::from_secs(u64::from(open.hold_time)),
        keepalive_time: None,
        connect_retry: Duration::from_secs(5),
        families: open.families,
    };
    // Offering no family is written as no multiprotocol capability, which reads as IPv4 alone.
    let families = if open.families == Families::default() {
        Families {
            ipv4: true,
            ipv6: false,
        }
    } else {
        open.families
    };
    let expected = Open {
        version: 4,
        four_octet_asn: true,
        families,
        ..open.clone()
    };
    let bytes = encode_open(&config);
    for asn4 in [false, true] {
        assert_eq!(decode(&bytes, asn4), Ok(Message::Open(expected.clone())));
    }
}
