//! Arbitrary packets into the ICMP echo reply reader of the failover's fast path: it may not
//! panic, the kernel filter installed for it passes everything it accepts (or the speaker would
//! never see those replies), and the reply to one of our own requests is ours.
//!
//! Input: one control byte (bit 0: IPv6; high nibble: the IPv4 header's length in words for the
//! round trip), the identifier (2 bytes), then the packet as the raw socket hands it over.

#![no_main]

mod checksum;

use libfuzzer_sys::fuzz_target;
use speaker_core::reach::echo::{self, BpfInstruction};

fuzz_target!(|data: &[u8]| {
    let [control, id_hi, id_lo, packet @ ..] = data else {
        return;
    };
    let v6 = control & 1 == 1;
    let identifier = u16::from_be_bytes([*id_hi, *id_lo]);
    let filter = echo::reply_filter(v6, identifier);

    if let Some(sequence) = echo::reply(v6, identifier, packet) {
        assert!(
            passes(&filter, packet),
            "the filter drops an accepted reply"
        );
        let header = if v6 {
            0
        } else {
            usize::from(packet[0] & 0x0f) * 4
        };
        assert_eq!(
            sequence,
            u16::from_be_bytes([packet[header + 6], packet[header + 7]])
        );
    }

    // Our request, answered as the peer's kernel answers it: type changed, rest echoed.
    let sequence = packet
        .first_chunk::<2>()
        .map_or(0, |s| u16::from_be_bytes(*s));
    let request = echo::request(v6, identifier, sequence);
    let mut answer = request.to_vec();
    answer[0] = if v6 { 129 } else { 0 };
    let answer = if v6 {
        answer
    } else {
        answer[2..4].fill(0);
        let sum = checksum::internet_checksum(&answer);
        answer[2..4].copy_from_slice(&sum.to_be_bytes());
        let words = usize::from((control >> 4).max(5));
        let mut ip = vec![0u8; words * 4];
        ip[0] = 0x40 | words as u8;
        ip.extend(answer);
        ip
    };
    assert_eq!(echo::reply(v6, identifier, &answer), Some(sequence));
    assert!(passes(&filter, &answer));
    assert_eq!(echo::reply(v6, identifier ^ 1, &answer), None);
});

/// The classic BPF instructions `reply_filter` uses, run as the kernel runs them: a load past
/// the end of the packet drops it.
fn passes(program: &[BpfInstruction], packet: &[u8]) -> bool {
    let (mut a, mut x, mut pc) = (0u32, 0usize, 0usize);
    let byte = |at: usize| packet.get(at).map(|b| u32::from(*b));
    let half = |at: usize| Some((byte(at)? << 8) | byte(at + 1)?);
    loop {
        let Some(&(code, jt, jf, k)) = program.get(pc) else {
            panic!("the filter runs off its end");
        };
        pc += 1;
        let k_at = k as usize;
        let loaded = match code {
            0x30 => byte(k_at),     // ld b [k]
            0x28 => half(k_at),     // ldh [k]
            0x50 => byte(x + k_at), // ld b [x + k]
            0x48 => half(x + k_at), // ldh [x + k]
            0xb1 => {
                // ldx 4 * ([k] & 0xf)
                match byte(k_at) {
                    Some(b) => x = (b as usize & 0x0f) * 4,
                    None => return false,
                }
                continue;
            }
            0x15 => {
                // jeq #k
                pc += usize::from(if a == k { jt } else { jf });
                continue;
            }
            0x06 => return k != 0, // ret #k
            other => panic!("instruction {other:#x} not modelled"),
        };
        match loaded {
            Some(value) => a = value,
            None => return false,
        }
    }
}
