//! The ICMPv6 checksum: the Internet checksum (RFC 1071) over the IPv6 pseudo-header and the
//! ICMPv6 message (RFC 8200 §8.1, RFC 4443 §2.3).

use std::net::Ipv6Addr;

use super::wire::NEXT_HEADER_ICMPV6;

/// The checksum of `message` with its checksum field taken as whatever it holds: writing the
/// result into a zeroed field makes a message whose checksum verifies to 0.
pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum = 0u32;
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    for chunk in [src.octets(), dst.octets()] {
        sum = add_words(sum, &chunk);
    }
    sum = add_words(sum, &length.to_be_bytes());
    sum = add_words(sum, &[0, 0, 0, NEXT_HEADER_ICMPV6]);
    sum = add_words(sum, message);
    !fold(sum)
}

/// The plain Internet checksum of `bytes` (ICMPv4 has no pseudo-header).
pub fn internet(bytes: &[u8]) -> u16 {
    !fold(add_words(0, bytes))
}

/// Adds `bytes` as big-endian 16-bit words, a lone last byte padded with zero, folding carries
/// as it goes so the sum cannot overflow.
fn add_words(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum = u32::from(fold(sum + u32::from(word)));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}
