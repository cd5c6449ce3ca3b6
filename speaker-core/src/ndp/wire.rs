//! Field values and offsets of IPv6 Neighbor Discovery on the wire, shared by parse and build.

pub const IPV6_HEADER_LEN: usize = 40;
pub const NEXT_HEADER_ICMPV6: u8 = 58;
pub const TYPE_NEIGHBOR_SOLICITATION: u8 = 135;
pub const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;
pub const OPTION_SOURCE_LINK_ADDR: u8 = 1;
pub const OPTION_TARGET_LINK_ADDR: u8 = 2;
/// Type, code, checksum, 4 bytes of flags or reserved, 16 bytes of target.
pub const MESSAGE_LEN: usize = 24;
pub const FLAG_ROUTER: u8 = 0x80;
pub const FLAG_SOLICITED: u8 = 0x40;
pub const FLAG_OVERRIDE: u8 = 0x20;
