//! Arbitrary bytes into the BFD Control packet decoder: it may not panic, what it accepts
//! encodes back to the same 24 bytes (the length byte normalised), and that decodes to the same
//! packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use speaker_core::bfd::{ControlPacket, LEN};

fuzz_target!(|payload: &[u8]| {
    if let Ok(packet) = ControlPacket::decode(payload) {
        let encoded = packet.encode();
        let mut expected = payload[..LEN].to_vec();
        expected[3] = LEN as u8;
        assert_eq!(encoded.to_vec(), expected);
        assert_eq!(ControlPacket::decode(&encoded), Ok(packet));
    }
});
