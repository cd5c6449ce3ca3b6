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

#[cfg(test)]
mod tests {
    use super::*;

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
