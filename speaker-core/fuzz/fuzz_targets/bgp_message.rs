//! Arbitrary bytes into the BGP message decoder, framed as the session reads them: neither
//! may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use speaker_core::bgp::wire::{decode, frame_len};

fuzz_target!(|data: &[u8]| {
    let asn4 = data.first().is_some_and(|b| b & 1 == 1);
    let stream = data.get(1..).unwrap_or_default();
    if let Ok(Some(len)) = frame_len(stream)
        && len <= stream.len()
    {
        let _ = decode(&stream[..len], asn4);
    }
});
