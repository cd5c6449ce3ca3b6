//! Arbitrary bytes into every parser an announce socket feeds: none may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use speaker_core::{arp, ndp, parse_frame};

fuzz_target!(|frame: &[u8]| {
    let _ = arp::parse(frame);
    let _ = ndp::parse(frame);
    let _ = parse_frame(frame);
});
