//! The IPv6 multicast groups Neighbor Discovery sends to.

use std::net::Ipv6Addr;

/// All-nodes on the link, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// `ff02::1:ffXX:XXXX`, the group that solicitations for `address` go to: its last 24 bits
/// behind a fixed prefix (RFC 4291 §2.7.1).
pub fn solicited_node_multicast(address: Ipv6Addr) -> Ipv6Addr {
    let o = address.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

pub fn is_solicited_node_multicast(address: Ipv6Addr) -> bool {
    address.octets()[..13] == solicited_node_multicast(Ipv6Addr::UNSPECIFIED).octets()[..13]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicited_node_group_keeps_the_last_24_bits() {
        let address: Ipv6Addr = "2001:db8::1:2a3b:4c5d".parse().unwrap();
        let group = solicited_node_multicast(address);
        assert_eq!(group, "ff02::1:ff3b:4c5d".parse::<Ipv6Addr>().unwrap());
        assert!(is_solicited_node_multicast(group));
        assert!(!is_solicited_node_multicast(ALL_NODES));
        assert!(!is_solicited_node_multicast(address));
    }
}
