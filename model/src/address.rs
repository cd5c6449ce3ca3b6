//! The one parser of pool addresses.
//!
//! An `IPAddressPool` lists its addresses as strings in three forms: a CIDR (`198.51.100.0/28`,
//! `2001:db8::/120`), an inclusive range of two addresses of one family
//! (`198.51.100.10-198.51.100.20`), or a single address (`198.51.100.7`). Everything else in
//! ferrolb works on the parsed [`AddressRange`]: a family and an inclusive interval over `u128`,
//! so a `/64` is as cheap as a `/30`.
//!
//! The accepted syntax is exactly what the CRD's CEL rules accept (see [`crate::cel`]), so a
//! string that `kubectl apply` let through parses here, and an error here is one the API server
//! would have given:
//! - IPv4 octets without leading zeros, IPv6 without zones or IPv4-mapped forms (`::ffff:a.b.c.d`),
//!   as Kubernetes' `isIP` / `isCIDR` define them;
//! - no whitespace anywhere;
//! - a CIDR must not have host bits set: `198.51.100.5/24` is rejected with the suggestion
//!   `198.51.100.0/24`, because a user who wrote it usually meant one of two different things and
//!   guessing either silently hands out addresses they did not intend;
//! - a range's ends are of one family, the first not above the last.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The number of bits in an address of this family.
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The address of this family with the numeric value `value`. Panics if `value` does not fit,
    /// which only a bug in ferrolb can cause: values come from ranges of this family.
    pub fn addr(self, value: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(
                u32::try_from(value).expect("IPv4 value fits in 32 bits"),
            )),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The numeric value of an address, the same scale for both families.
pub fn ip_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// An inclusive interval of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    family: Family,
    first: u128,
    last: u128,
}

impl AddressRange {
    /// A range from `first` to `last` inclusive; `None` when the families differ or
    /// `first > last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<AddressRange> {
        let family = Family::of(first);
        if family != Family::of(last) || ip_value(first) > ip_value(last) {
            return None;
        }
        Some(AddressRange {
            family,
            first: ip_value(first),
            last: ip_value(last),
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The numeric value of the first address.
    pub fn first(&self) -> u128 {
        self.first
    }

    /// The numeric value of the last address.
    pub fn last(&self) -> u128 {
        self.last
    }

    pub fn first_addr(&self) -> IpAddr {
        self.family.addr(self.first)
    }

    pub fn last_addr(&self) -> IpAddr {
        self.family.addr(self.last)
    }

    /// How many addresses the range holds, saturating at `u128::MAX` for `::/0`.
    pub fn len(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// Never true: a range holds at least one address. Here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&ip_value(ip))
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first_addr())
        } else {
            write!(f, "{}-{}", self.first_addr(), self.last_addr())
        }
    }
}

impl FromStr for AddressRange {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_block(s)
    }
}

/// Why a pool address string was refused. The `Display` text is what users read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("an address block must not be empty")]
    Empty,
    #[error("{input:?} contains whitespace; write addresses without spaces")]
    Whitespace { input: String },
    #[error(
        "{input:?} is not an IP address; expected an address (198.51.100.7), a CIDR (198.51.100.0/28, 2001:db8::/120) or a range (198.51.100.10-198.51.100.20)"
    )]
    NotAnAddress { input: String },
    #[error("{input:?} is an IPv4-mapped IPv6 address; write the IPv4 address itself")]
    Ipv4Mapped { input: String },
    #[error("{input:?} has an invalid prefix length; IPv4 allows /0 to /32, IPv6 /0 to /128")]
    BadPrefix { input: String },
    #[error("{input:?} has host bits set; did you mean {suggestion}?")]
    HostBitsSet { input: String, suggestion: String },
    #[error("{input:?} mixes an IPv4 and an IPv6 address in one range")]
    MixedFamilies { input: String },
    #[error(
        "{input:?} is reversed: its first address is above its last; did you mean {suggestion}?"
    )]
    Reversed { input: String, suggestion: String },
    #[error(
        "{input:?} includes {block}, {what} addresses, which are never handed out or announced"
    )]
    NeverAnnounced {
        input: String,
        block: &'static str,
        what: &'static str,
    },
}

/// Parses one entry of `IPAddressPool.spec.addresses`, refusing one that includes an address
/// that must never be handed out or answered for on a LAN ([`NEVER_ANNOUNCED`]).
pub fn parse_block(input: &str) -> Result<AddressRange, AddressError> {
    let range = parse_syntax(input)?;
    match never_announced_in(&range) {
        None => Ok(range),
        Some((block, what)) => Err(AddressError::NeverAnnounced {
            input: input.to_string(),
            block,
            what,
        }),
    }
}

/// Blocks no pool may hand out, so no speaker ever claims them on a LAN: a client that asks
/// for one of these is not asking a host of the segment. Kept to what the kernel and every
/// stack treat as special; the documentation prefixes and private ranges stay allowed. The CRD's
/// CEL rules are built from this list.
pub const NEVER_ANNOUNCED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified (this-network)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The never-announced blocks as ranges, with their CIDR and what they are.
pub fn never_announced_ranges() -> impl Iterator<Item = (AddressRange, &'static str, &'static str)>
{
    NEVER_ANNOUNCED.iter().map(|(block, what)| {
        let range = parse_syntax(block).expect("the never-announced blocks are valid CIDRs");
        (range, *block, *what)
    })
}

/// The first never-announced block `range` shares an address with, and what it is.
pub fn never_announced_in(range: &AddressRange) -> Option<(&'static str, &'static str)> {
    never_announced_ranges()
        .find(|(block, _, _)| block.overlaps(range))
        .map(|(_, block, what)| (block, what))
}

/// The syntax of one entry, without the never-announced check.
fn parse_syntax(input: &str) -> Result<AddressRange, AddressError> {
    let owned = || input.to_string();
    if input.is_empty() {
        return Err(AddressError::Empty);
    }
    if input.chars().any(char::is_whitespace) {
        return Err(AddressError::Whitespace { input: owned() });
    }
    if let Some((first, last)) = input.split_once('-') {
        let first = parse_ip(first, input)?;
        let last = parse_ip(last, input)?;
        if Family::of(first) != Family::of(last) {
            return Err(AddressError::MixedFamilies { input: owned() });
        }
        return AddressRange::new(first, last).ok_or_else(|| AddressError::Reversed {
            input: owned(),
            suggestion: format!("{last}-{first}"),
        });
    }
    if let Some((addr, prefix)) = input.split_once('/') {
        let ip = parse_ip(addr, input)?;
        let bits = Family::of(ip).bits();
        let prefix =
            parse_prefix(prefix, bits).ok_or_else(|| AddressError::BadPrefix { input: owned() })?;
        let host_bits = bits - prefix;
        let host_mask = if host_bits == 0 {
            0
        } else {
            u128::MAX >> (128 - host_bits)
        };
        let value = ip_value(ip);
        let network = value & !host_mask;
        if network != value {
            return Err(AddressError::HostBitsSet {
                input: owned(),
                suggestion: format!("{}/{prefix}", Family::of(ip).addr(network)),
            });
        }
        return Ok(AddressRange {
            family: Family::of(ip),
            first: network,
            last: network | host_mask,
        });
    }
    let ip = parse_ip(input, input)?;
    Ok(AddressRange {
        family: Family::of(ip),
        first: ip_value(ip),
        last: ip_value(ip),
    })
}

/// Parses a whole address list; the first bad entry decides the error.
pub fn parse_blocks<'a>(
    inputs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<AddressRange>, AddressError> {
    inputs.into_iter().map(parse_block).collect()
}

/// One address as Kubernetes' `isIP` accepts it. Rust's parsers already refuse leading zeros in
/// IPv4 octets and zones in IPv6; the IPv4-mapped form is refused here.
fn parse_ip(text: &str, input: &str) -> Result<IpAddr, AddressError> {
    let ip: IpAddr = text.parse().map_err(|_| AddressError::NotAnAddress {
        input: input.to_string(),
    })?;
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(AddressError::Ipv4Mapped {
            input: input.to_string(),
        });
    }
    Ok(ip)
}

/// A prefix length in plain decimal (no sign, no leading zero), at most `bits`.
fn parse_prefix(text: &str, bits: u32) -> Option<u32> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
        && text.len() <= 3;
    let prefix: u32 = if plain { text.parse().ok()? } else { None? };
    (prefix <= bits).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address_cases::{CASES, Expect};

    #[test]
    fn every_case_of_the_shared_table() {
        for case in CASES {
            let parsed = parse_block(case.input);
            match (&case.expect, &parsed) {
                (Expect::Accept { first, last }, Ok(range)) => {
                    assert_eq!(
                        (range.first_addr(), range.last_addr()),
                        (first.parse().unwrap(), last.parse().unwrap()),
                        "{:?}",
                        case.input
                    );
                }
                (Expect::Reject { .. }, Err(_)) => {}
                _ => panic!(
                    "{:?}: expected {:?}, parsed {:?}",
                    case.input, case.expect, parsed
                ),
            }
        }
    }

    #[test]
    fn messages_name_the_input_and_suggest_a_fix() {
        let err = parse_block("198.51.100.5/24").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"198.51.100.5/24\" has host bits set; did you mean 198.51.100.0/24?"
        );
        let err = parse_block("198.51.100.20-198.51.100.10").unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean 198.51.100.10-198.51.100.20"),
            "{err}"
        );
        let err = parse_block("2001:db8::1-198.51.100.1").unwrap_err();
        assert!(matches!(err, AddressError::MixedFamilies { .. }), "{err}");
        let err = parse_block("2001:db8::ff/120").unwrap_err();
        assert!(err.to_string().contains("2001:db8::/120"), "{err}");
    }

    #[test]
    fn never_announced_addresses_are_refused_with_what_they_are() {
        let err = parse_block("0.0.0.0/0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"0.0.0.0/0\" includes 0.0.0.0/8, unspecified (this-network) addresses, which are never handed out or announced"
        );
        for (input, block) in [
            ("127.0.0.1", "127.0.0.0/8"),
            ("169.254.0.0/24", "169.254.0.0/16"),
            ("198.51.100.0-224.0.0.0", "224.0.0.0/4"),
            ("255.255.255.255", "255.255.255.255/32"),
            ("::1", "::1/128"),
            ("fe00::-fec0::", "fe80::/10"),
            ("ff02::1", "ff00::/8"),
            ("::/0", "::/128"),
        ] {
            match parse_block(input) {
                Err(AddressError::NeverAnnounced { block: b, .. }) => {
                    assert_eq!(b, block, "{input}")
                }
                other => panic!("{input}: {other:?}"),
            }
        }
        // Right next to them is fine.
        for input in [
            "1.0.0.0",
            "126.255.255.255",
            "128.0.0.0/8",
            "223.255.255.255",
            "fe7f::1",
            "fec0::1",
        ] {
            assert!(parse_block(input).is_ok(), "{input}");
        }
    }

    #[test]
    fn sizes_do_not_depend_on_enumeration() {
        assert_eq!(parse_block("198.51.100.0/28").unwrap().len(), 16);
        assert_eq!(parse_block("2001:db8::/64").unwrap().len(), 1 << 64);
        assert_eq!(parse_syntax("::/0").unwrap().len(), u128::MAX);
        assert_eq!(parse_syntax("0.0.0.0/0").unwrap().len(), 1 << 32);
        assert_eq!(parse_block("198.51.100.7").unwrap().len(), 1);
    }

    #[test]
    fn overlap_and_containment() {
        let a = parse_block("198.51.100.0/28").unwrap();
        let b = parse_block("198.51.100.15-198.51.100.20").unwrap();
        let c = parse_block("198.51.100.16/28").unwrap();
        let v6 = parse_block("2001:db8::/120").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(!a.overlaps(&v6));
        assert!(a.contains("198.51.100.15".parse().unwrap()));
        assert!(!a.contains("198.51.100.16".parse().unwrap()));
        assert!(!v6.contains("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "198.51.100.7",
            "198.51.100.10-198.51.100.20",
            "2001:db8::1-2001:db8::5",
        ] {
            assert_eq!(parse_block(text).unwrap().to_string(), text);
        }
        assert_eq!(
            parse_block("203.0.113.0/30").unwrap().to_string(),
            "203.0.113.0-203.0.113.3"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_cidr_parses_to_its_block(value: u32, prefix in 0u32..=32) {
            let network = if prefix == 0 { 0 } else { value & (u32::MAX << (32 - prefix)) };
            let text = format!("{}/{prefix}", Ipv4Addr::from(network));
            let range = parse_syntax(&text).unwrap();
            proptest::prop_assert_eq!(range.first(), u128::from(network));
            proptest::prop_assert_eq!(range.len(), 1u128 << (32 - prefix));
            // The entry is refused exactly when it shares an address with a never-announced
            // block, checked here address by address at the range's ends and inside.
            let special = |ip: Ipv4Addr| {
                ip.is_unspecified() || ip.octets()[0] == 0 || ip.is_loopback()
                    || ip.is_link_local() || ip.is_multicast() || ip.is_broadcast()
            };
            let last = Ipv4Addr::from(u32::try_from(range.last()).unwrap());
            let touches = special(Ipv4Addr::from(network)) || special(last)
                || NEVER_ANNOUNCED.iter().any(|(b, _)| {
                    let b = parse_syntax(b).unwrap();
                    b.family() == Family::V4 && range.first() <= b.first() && b.first() <= range.last()
                });
            proptest::prop_assert_eq!(parse_block(&text).is_err(), touches, "{}", text);
        }

        #[test]
        fn any_v6_range_parses_in_order(a: u128, b: u128) {
            let (lo, hi) = (a.min(b), a.max(b));
            let text = format!("{}-{}", Ipv6Addr::from(lo), Ipv6Addr::from(hi));
            let parsed = parse_syntax(&text);
            // IPv4-mapped ends are refused on purpose; everything else parses exactly.
            let mapped = [lo, hi].iter().any(|v| Ipv6Addr::from(*v).to_ipv4_mapped().is_some());
            proptest::prop_assert_eq!(parsed.is_err(), mapped);
            if let Ok(range) = parsed {
                proptest::prop_assert_eq!((range.first(), range.last()), (lo, hi));
            }
        }

        #[test]
        fn never_panics(input in "\\PC{0,40}") {
            let _ = parse_block(&input);
        }
    }
}
