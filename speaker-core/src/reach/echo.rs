//! ICMP echo request and reply, v4 (RFC 792) and v6 (RFC 4443), as a raw socket sends and reads
//! them: an IPv4 raw socket hands over the IP header in front of the message, an ICMPv6 one only
//! the message, whose checksum the kernel fills in and verifies (RFC 3542 §3.1).

use crate::ndp::checksum;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// Length of the messages we send: the header and an 8-byte payload (the sequence's send
/// counter, so a reply can be told from an echo of someone else's request).
pub const LEN: usize = 16;

/// An echo request. `identifier` tells our replies from other programs' on the same host;
/// `v6` leaves the checksum to the kernel.
pub fn request(v6: bool, identifier: u16, sequence: u16) -> [u8; LEN] {
    let mut message = [0u8; LEN];
    message[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    message[4..6].copy_from_slice(&identifier.to_be_bytes());
    message[6..8].copy_from_slice(&sequence.to_be_bytes());
    message[8..16].copy_from_slice(b"ferrolb\0");
    if !v6 {
        let sum = checksum::internet(&message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    message
}

/// The sequence number of an echo reply to one of our requests (`identifier`), or `None` for
/// anything else the raw socket delivers: other ICMP types, other programs' replies, truncated
/// or (IPv4) corrupt packets.
pub fn reply(v6: bool, identifier: u16, packet: &[u8]) -> Option<u16> {
    let message = if v6 {
        packet
    } else {
        let header = usize::from(*packet.first()? & 0x0f) * 4;
        if header < 20 || packet.first()? >> 4 != 4 {
            return None;
        }
        let message = packet.get(header..)?;
        if checksum::internet(message) != 0 {
            return None;
        }
        message
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if message.len() < 8 || message[0] != want || message[1] != 0 {
        return None;
    }
    if u16::from_be_bytes([message[4], message[5]]) != identifier {
        return None;
    }
    Some(u16::from_be_bytes([message[6], message[7]]))
}

/// One classic BPF instruction (`struct sock_filter`): code, jump if true, jump if false, k.
pub type BpfInstruction = (u16, u8, u8, u32);

const BPF_LD_B_ABS: u16 = 0x30;
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_B_IND: u16 = 0x50;
const BPF_LD_H_IND: u16 = 0x48;
const BPF_LDX_B_MSH: u16 = 0xb1;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

/// A socket filter that lets through only what [`reply`] could accept: echo replies carrying
/// `identifier`. A raw ICMP socket otherwise gets a copy of every ICMP message the node
/// receives (the echo requests other speakers send it, its neighbour discovery, anyone's
/// pings), and the thread would wake for each. The kernel runs it before queueing, on the same
/// bytes the socket would read: from the IP header for IPv4, from the ICMPv6 header for IPv6.
pub fn reply_filter(v6: bool, identifier: u16) -> Vec<BpfInstruction> {
    let id = u32::from(identifier);
    if v6 {
        vec![
            (BPF_LD_B_ABS, 0, 0, 0),
            (BPF_JEQ_K, 0, 3, u32::from(ECHO_REPLY_V6)),
            (BPF_LD_H_ABS, 0, 0, 4),
            (BPF_JEQ_K, 0, 1, id),
            (BPF_RET_K, 0, 0, 0xffff),
            (BPF_RET_K, 0, 0, 0),
        ]
    } else {
        vec![
            // X = the IP header's length, from its low nibble.
            (BPF_LDX_B_MSH, 0, 0, 0),
            (BPF_LD_B_IND, 0, 0, 0),
            (BPF_JEQ_K, 0, 3, u32::from(ECHO_REPLY_V4)),
            (BPF_LD_H_IND, 0, 0, 4),
            (BPF_JEQ_K, 0, 1, id),
            (BPF_RET_K, 0, 0, 0xffff),
            (BPF_RET_K, 0, 0, 0),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the few classic BPF instructions [`reply_filter`] uses over `packet`, as the kernel
    /// would: a load past the end rejects the packet.
    fn run_filter(program: &[BpfInstruction], packet: &[u8]) -> bool {
        let (mut a, mut x, mut pc) = (0u32, 0usize, 0usize);
        let byte = |at: usize| packet.get(at).map(|b| u32::from(*b));
        let half = |at: usize| Some(byte(at)? << 8 | byte(at + 1)?);
        loop {
            let (code, jt, jf, k) = program[pc];
            pc += 1;
            let loaded = match code {
                BPF_LD_B_ABS => byte(k as usize),
                BPF_LD_H_ABS => half(k as usize),
                BPF_LD_B_IND => byte(x + k as usize),
                BPF_LD_H_IND => half(x + k as usize),
                BPF_LDX_B_MSH => {
                    x = usize::from(packet[k as usize] & 0x0f) * 4;
                    continue;
                }
                BPF_JEQ_K => {
                    pc += usize::from(if a == k { jt } else { jf });
                    continue;
                }
                BPF_RET_K => return k != 0,
                other => panic!("instruction {other:#x} not modelled"),
            };
            match loaded {
                Some(value) => a = value,
                None => return false,
            }
        }
    }

    fn ipv4_packet(message: &[u8]) -> Vec<u8> {
        let mut packet = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 51, 100, 12, 198, 51, 100, 11,
        ];
        packet.extend_from_slice(message);
        packet
    }

    #[test]
    fn the_filter_passes_exactly_the_replies_reply_accepts() {
        for v6 in [false, true] {
            let program = reply_filter(v6, 0xfe11);
            let wrap = |message: &[u8]| {
                if v6 {
                    message.to_vec()
                } else {
                    ipv4_packet(message)
                }
            };
            let mut ours = request(v6, 0xfe11, 7);
            ours[0] = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
            if !v6 {
                ours[2..4].fill(0);
                let sum = checksum::internet(&ours);
                ours[2..4].copy_from_slice(&sum.to_be_bytes());
            }
            let packet = wrap(&ours);
            assert!(run_filter(&program, &packet), "v6 {v6}: our reply");
            assert_eq!(reply(v6, 0xfe11, &packet), Some(7));
            // Someone's echo request to this node, another program's reply, a truncated one.
            let theirs = wrap(&request(v6, 0xfe11, 7));
            assert!(!run_filter(&program, &theirs), "v6 {v6}: a request");
            let mut other = ours;
            other[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            assert!(!run_filter(&program, &wrap(&other)), "v6 {v6}: another id");
            assert!(
                !run_filter(&program, &wrap(&ours[..5])),
                "v6 {v6}: truncated"
            );
        }
        // An IPv4 header with options: the filter finds the message after it.
        let program = reply_filter(false, 0xfe11);
        let mut reply_v4 = request(false, 0xfe11, 9);
        reply_v4[0] = ECHO_REPLY_V4;
        let mut packet = ipv4_packet(&reply_v4);
        packet[0] = 0x46;
        packet.splice(20..20, [1, 1, 1, 0]);
        assert!(run_filter(&program, &packet));
    }

    /// What the kernel sends back for our request: type 0, the checksum adjusted, behind an
    /// IPv4 header of `ihl` words.
    fn v4_reply_to(request: &[u8], ihl: u8) -> Vec<u8> {
        let mut message = request.to_vec();
        message[0] = ECHO_REPLY_V4;
        message[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum::internet(&message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut packet = vec![0u8; usize::from(ihl) * 4];
        packet[0] = 0x40 | ihl;
        packet.extend(message);
        packet
    }

    #[test]
    fn an_ipv4_request_verifies_and_its_reply_is_ours() {
        let request = request(false, 0xbeef, 7);
        assert_eq!(request[0], ECHO_REQUEST_V4);
        assert_eq!(checksum::internet(&request), 0, "checksum verifies");
        for ihl in [5, 6, 15] {
            assert_eq!(reply(false, 0xbeef, &v4_reply_to(&request, ihl)), Some(7));
        }
    }

    #[test]
    fn ipv4_replies_that_are_not_ours_are_ignored() {
        let request = request(false, 0xbeef, 7);
        let good = v4_reply_to(&request, 5);
        assert_eq!(reply(false, 0xbeee, &good), None, "another identifier");
        let mut corrupt = good.clone();
        corrupt[30] ^= 1;
        assert_eq!(reply(false, 0xbeef, &corrupt), None, "bad checksum");
        let mut echoed_request = good.clone();
        echoed_request[20] = ECHO_REQUEST_V4;
        assert_eq!(reply(false, 0xbeef, &echoed_request), None, "a request");
        for cut in 0..28 {
            assert_eq!(reply(false, 0xbeef, &good[..cut]), None, "cut at {cut}");
        }
        let mut short_header = good.clone();
        short_header[0] = 0x44;
        assert_eq!(reply(false, 0xbeef, &short_header), None, "IHL below 5");
        let mut v6_header = good;
        v6_header[0] = 0x65;
        assert_eq!(reply(false, 0xbeef, &v6_header), None, "not IPv4");
    }

    #[test]
    fn ipv6_replies_are_read_without_an_ip_header() {
        let request = request(true, 0x1234, 65535);
        assert_eq!(request[0], ECHO_REQUEST_V6);
        assert_eq!(&request[2..4], &[0, 0], "the kernel fills the checksum in");
        let mut answer = request;
        answer[0] = ECHO_REPLY_V6;
        assert_eq!(reply(true, 0x1234, &answer), Some(65535));
        assert_eq!(reply(true, 0x1235, &answer), None);
        assert_eq!(reply(true, 0x1234, &request), None, "our own request");
        assert_eq!(reply(true, 0x1234, &answer[..7]), None);
        answer[1] = 1;
        assert_eq!(reply(true, 0x1234, &answer), None, "code must be 0");
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(v6: bool, id: u16, packet: Vec<u8>) {
            let _ = reply(v6, id, &packet);
        }
    }
}
