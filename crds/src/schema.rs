//! String types of the API whose validation lives in the CRD schema as CEL rules.
//!
//! Each type serializes as a plain string; its `JsonSchema` carries the length bounds (which
//! also keep the rules' estimated cost under the API server's limit) and the
//! `x-kubernetes-validations` that make `kubectl apply` refuse a bad value with a readable message.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use model::address::{
    AddressError, AddressRange, Family, NEVER_ANNOUNCED, never_announced_ranges, parse_block,
};
use model::bgp::{AS_TRANS, WELL_KNOWN_COMMUNITIES};

/// The `JsonSchema` of a string or number type whose schema is written out whole: inlined
/// where it is used, never a `$ref`.
macro_rules! written_schema {
    ($name:ident, $schema:expr) => {
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

/// One entry of `IPAddressPool.spec.addresses`: a CIDR, a range or a single address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AddressBlock(pub String);

impl AddressBlock {
    pub fn parse(&self) -> Result<AddressRange, AddressError> {
        parse_block(&self.0)
    }
}

impl From<&str> for AddressBlock {
    fn from(s: &str) -> Self {
        AddressBlock(s.to_string())
    }
}

/// The longest valid entry is a range of two IPv6 addresses in IPv4-embedded form (2 × 45 + 1).
pub const ADDRESS_BLOCK_MAX_LEN: u32 = 91;

/// `ip` written as the CEL integer value of a dotted IPv4 string, for ordering range ends:
/// CEL's IP type has no ordering, and only IPv4 is short enough to compute in a rule.
fn cel_ipv4_value(ip: &str) -> String {
    (0..4)
        .map(|i| format!("int({ip}.split('.')[{i}]) * {}", 1u64 << (8 * (3 - i))))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The never-announced blocks as CEL string literals, of one family.
fn never_announced_blocks(v4: bool) -> Vec<String> {
    NEVER_ANNOUNCED
        .iter()
        .filter(|(block, _)| block.contains(':') != v4)
        .map(|(block, _)| format!("'{block}'"))
        .collect()
}

/// What the never-announced blocks are, for the message.
fn never_announced_list() -> String {
    NEVER_ANNOUNCED
        .iter()
        .map(|(block, what)| format!("{block} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The entry shares no address with a never-announced block. CIDRs are nested or disjoint, so a
/// CIDR entry overlaps a block when one contains the other; an IPv4 range is compared as
/// integers; an IPv6 range only by its ends (CEL has no IPv6 arithmetic; the parser catches a
/// range that spans a block and the controller reports it).
fn never_announced_rule(is_range: &str, is_v4_range: &str) -> String {
    let all: Vec<String> = [true, false]
        .into_iter()
        .flat_map(never_announced_blocks)
        .collect();
    let all = all.join(", ");
    let v4_bounds: Vec<String> = never_announced_ranges()
        .filter(|(range, _, _)| range.family() == Family::V4)
        .map(|(range, _, _)| format!("[{}, {}]", range.first(), range.last()))
        .collect();
    let v6 = never_announced_blocks(false).join(", ");
    let (first, last) = ("self.split('-')[0]", "self.split('-')[1]");
    let cidr = format!(
        "!(!self.contains('-') && self.contains('/') && isCIDR(self)) || [{all}].all(b, !cidr(self).containsCIDR(cidr(b)) && !cidr(b).containsCIDR(cidr(self)))"
    );
    let single = format!(
        "!(!self.contains('-') && !self.contains('/') && isIP(self)) || [{all}].all(b, !cidr(b).containsIP(ip(self)))"
    );
    let v4_range = format!(
        "!({is_v4_range}) || [{}].all(r, {} > r[1] || {} < r[0])",
        v4_bounds.join(", "),
        cel_ipv4_value(first),
        cel_ipv4_value(last)
    );
    let v6_range = format!(
        "!({is_range} && ip({first}).family() == 6 && ip({last}).family() == 6) || [{v6}].all(b, !cidr(b).containsIP(ip({first})) && !cidr(b).containsIP(ip({last})))"
    );
    format!("({cidr}) && ({single}) && ({v4_range}) && ({v6_range})")
}

written_schema!(AddressBlock, {
    let first = "self.split('-')[0]";
    let last = "self.split('-')[1]";
    let is_range = format!(
        "self.contains('-') && size(self.split('-')) == 2 && isIP({first}) && isIP({last})"
    );
    let is_v4_range =
        format!("{is_range} && ip({first}).family() == 4 && ip({last}).family() == 4");
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": ADDRESS_BLOCK_MAX_LEN,
        "description": "A CIDR (198.51.100.0/28, 2001:db8::/120), an inclusive range of two addresses of one family (198.51.100.10-198.51.100.20), or one address (198.51.100.7).",
        "x-kubernetes-validations": [
            {
                "rule": format!("self.contains('-') ? ({is_range}) : (self.contains('/') ? isCIDR(self) : isIP(self))"),
                "messageExpression": "\"'\" + self + \"' is not an address: write an address (198.51.100.7), a CIDR (198.51.100.0/28, 2001:db8::/120) or a range (198.51.100.10-198.51.100.20), without spaces\"",
            },
            {
                "rule": "self.contains('-') || !self.contains('/') || !isCIDR(self) || cidr(self) == cidr(self).masked()",
                // Static text: printing the masked CIDR costs more than the API server allows.
                "messageExpression": "\"'\" + self + \"' has host bits set: a CIDR starts at its network address (198.51.100.0/24, not 198.51.100.5/24)\"",
            },
            {
                "rule": format!("!({is_range}) || ip({first}).family() == ip({last}).family()"),
                "messageExpression": "\"'\" + self + \"' mixes an IPv4 and an IPv6 address in one range\"",
            },
            {
                "rule": format!("!({is_v4_range}) || {} <= {}", cel_ipv4_value(first), cel_ipv4_value(last)),
                "messageExpression": "\"'\" + self + \"' is reversed: its first address is above its last\"",
            },
            {
                "rule": never_announced_rule(&is_range, &is_v4_range),
                "messageExpression": format!("\"'\" + self + \"' includes addresses that are never handed out or announced ({})\"", never_announced_list()),
            },
        ],
    })
});

/// A network interface name as Linux accepts it (`dev_valid_name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InterfaceName(pub String);

written_schema!(InterfaceName, {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 15,
        "x-kubernetes-validations": [{
            "rule": "self.matches('^[^/:\\\\s]+$') && self != '.' && self != '..'",
            "messageExpression": "\"'\" + self + \"' is not an interface name: at most 15 characters, without '/', ':' or spaces\"",
        }],
    })
});

/// The name of an object named by a DNS-1123 subdomain (pools) or label (namespaces).
macro_rules! dns_name {
    ($name:ident, $max:expr, $pattern:expr, $what:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        written_schema!($name, {
            json_schema!({
                "type": "string",
                "minLength": 1,
                "maxLength": $max,
                "x-kubernetes-validations": [{
                    "rule": format!("self.matches('{}')", $pattern),
                    "messageExpression": format!("\"'\" + self + \"' is not {}\"", $what),
                }],
            })
        });
    };
}

dns_name!(
    PoolName,
    253,
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "a valid IPAddressPool name (lower-case letters, digits, '-' and '.')"
);
dns_name!(
    NamespaceName,
    63,
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "a valid namespace name (lower-case letters, digits and '-')"
);
dns_name!(
    PeerName,
    253,
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "a valid BGPPeer name (lower-case letters, digits, '-' and '.')"
);
dns_name!(
    BfdProfileName,
    253,
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "a valid BFDProfile name (lower-case letters, digits, '-' and '.')"
);
dns_name!(
    SecretName,
    253,
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "a valid Secret name (lower-case letters, digits, '-' and '.')"
);

/// A unicast address of a host on the network: a BGP peer's, or the node's own to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IpAddress(pub String);

written_schema!(IpAddress, {
    json_schema!({
        "type": "string",
        "minLength": 2,
        "maxLength": 45,
        "x-kubernetes-validations": [{
            // Go's notion, as the API server's: not unspecified, loopback, link-local or
            // multicast (a link-local peer would need an interface to reach it).
            "rule": "isIP(self) && ip(self).isGlobalUnicast()",
            "messageExpression": "\"'\" + self + \"' is not a unicast address of a host (198.51.100.1, 2001:db8::1): unspecified, loopback, link-local and multicast addresses are refused\"",
        }],
    })
});

/// An autonomous system number, 4 bytes (RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Asn(pub u32);

written_schema!(Asn, {
    json_schema!({
        "type": "integer",
        "format": "int64",
        // 0 and 4294967295 are reserved (RFC 7607, RFC 7300).
        "minimum": 1,
        "maximum": 4294967294_u32,
        "x-kubernetes-validations": [{
            "rule": format!("self != {AS_TRANS} && self != 65535"),
            // Static: printing the number costs more than the API server allows.
            "message": "23456 (AS_TRANS, RFC 6793) and 65535 (reserved, RFC 7300) are not AS numbers a router may own",
        }],
    })
});

/// A whole number of seconds written as a Go duration: `90s`, `3m`, `1h30m`, `0s`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BgpDuration(pub String);

/// The shape of a [`BgpDuration`]; each part at most 5 digits, so every rule's arithmetic fits.
pub const BGP_DURATION_PATTERN: &str = "^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?$";

impl BgpDuration {
    /// The seconds it stands for; `None` when it is not of [`BGP_DURATION_PATTERN`]'s shape.
    pub fn seconds(&self) -> Option<u64> {
        let mut rest = self.0.as_str();
        if rest.is_empty() {
            return None;
        }
        let mut total = 0u64;
        for (unit, scale) in [('h', 3600), ('m', 60), ('s', 1)] {
            if let Some((digits, after)) = rest.split_once(unit) {
                if digits.is_empty()
                    || digits.len() > 5
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                total += digits.parse::<u64>().ok()? * scale;
                rest = after;
            }
        }
        rest.is_empty().then_some(total)
    }
}

written_schema!(BgpDuration, {
    json_schema!({
        "type": "string",
        "minLength": 2,
        "maxLength": 20,
        "x-kubernetes-validations": [{
            "rule": format!("size(self) > 0 && self.matches('{BGP_DURATION_PATTERN}')"),
            "messageExpression": "\"'\" + self + \"' is not a duration in whole seconds: write 90s, 3m or 1h30m\"",
        }],
    })
});

/// A BGP community: standard `ASN:value` (RFC 1997), large `large:global:local1:local2` (RFC
/// 8092), or a well-known name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Community(pub String);

written_schema!(Community, {
    let names: Vec<String> = WELL_KNOWN_COMMUNITIES
        .iter()
        .map(|(name, _)| format!("'{name}'"))
        .collect();
    let part = |i: usize| format!("int(self.split(':')[{i}])");
    let standard = format!(
        "(self.matches('^[0-9]{{1,5}}:[0-9]{{1,5}}$') && {} <= 65535 && {} <= 65535)",
        part(0),
        part(1)
    );
    let large = format!(
        "(self.matches('^large:[0-9]{{1,10}}:[0-9]{{1,10}}:[0-9]{{1,10}}$') && {} <= 4294967295 && {} <= 4294967295 && {} <= 4294967295)",
        part(1),
        part(2),
        part(3)
    );
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 40,
        "x-kubernetes-validations": [{
            "rule": format!("self in [{}] || {standard} || {large}", names.join(", ")),
            "messageExpression": format!("\"'\" + self + \"' is not a community: write 65535:65281 (two numbers up to 65535), large:64512:1:2 (three up to 4294967295) or one of {}\"", WELL_KNOWN_COMMUNITIES.map(|(n, _)| n).join(", ")),
        }],
    })
});

#[cfg(test)]
mod tests {
    use super::BgpDuration;

    #[test]
    fn durations_are_read_in_whole_seconds() {
        for (text, seconds) in [
            ("0s", Some(0)),
            ("90s", Some(90)),
            ("3m", Some(180)),
            ("1h30m", Some(5400)),
            ("1h1m1s", Some(3661)),
            ("99999h", Some(359_996_400)),
            ("", None),
            ("90", None),
            ("s", None),
            ("1.5s", None),
            ("1s30m", None),
            ("-1s", None),
            ("100000s", None),
            ("1d", None),
        ] {
            assert_eq!(BgpDuration(text.into()).seconds(), seconds, "{text:?}");
        }
    }
}
