//! The Ethernet II header every frame of this crate starts with.
//!
//! Frames are untagged: an `AF_PACKET` socket hands VLAN-tagged traffic over with the tag
//! already stripped. Builders do not pad to the 60-byte minimum, as Linux's own ARP does not:
//! the driver pads on transmit. Parsers accept and ignore trailing padding.

use crate::MacAddr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const HEADER_LEN: usize = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
}

impl EthernetHeader {
    /// The header and the payload after it, or `None` when the frame is shorter than a header.
    pub fn parse(frame: &[u8]) -> Option<(EthernetHeader, &[u8])> {
        if frame.len() < HEADER_LEN {
            return None;
        }
        let header = EthernetHeader {
            dst: MacAddr::from_slice(&frame[0..6]),
            src: MacAddr::from_slice(&frame[6..12]),
            ethertype: u16::from_be_bytes([frame[12], frame[13]]),
        };
        Some((header, &frame[HEADER_LEN..]))
    }

    /// Appends the header's 14 bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dst.octets());
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.ethertype.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let header = EthernetHeader {
            dst: MacAddr::BROADCAST,
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            ethertype: ETHERTYPE_ARP,
        };
        let mut frame = Vec::new();
        header.write(&mut frame);
        frame.extend_from_slice(b"payload");
        assert_eq!(
            &frame[..HEADER_LEN],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06
            ]
        );
        assert_eq!(
            EthernetHeader::parse(&frame),
            Some((header, &b"payload"[..]))
        );
    }

    #[test]
    fn short_frame_has_no_header() {
        assert_eq!(EthernetHeader::parse(&[0; 13]), None);
    }
}
