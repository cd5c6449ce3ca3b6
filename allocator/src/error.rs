//! Every way an allocation can fail, worded for the user who reads the Service's Events.

use std::net::IpAddr;

use model::address::Family;

use crate::sharing::SharingConflict;
use model::service::{FamilyPolicy, ServiceKey};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the allocator refused. [`Error::reason`] is the Event reason and metric label; the
/// `Display` text is the Event message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("pool {pool} has no free {family} address left")]
    PoolExhausted { pool: String, family: Family },

    #[error(
        "every {family} address of pool {pool} is also in pool(s) {}, and no address of an overlap is handed out; make the pools disjoint",
        others.join(", ")
    )]
    PoolOverlapped {
        pool: String,
        family: Family,
        others: Vec<String>,
    },

    #[error(
        "the requested {} and {} are in two pools, {} and {}; a dual-stack Service's addresses are announced together by one node, so request both from one pool",
        ips[0], ips[1], pools[0], pools[1]
    )]
    RequestedFromTwoPools {
        ips: [IpAddr; 2],
        pools: [String; 2],
    },

    #[error(
        "the Service's new sharing terms cannot be honoured: {ip} is also held by Service {with}, and {reason}; it keeps {ip} under its previous terms until the conflict is resolved"
    )]
    SharingChangeRefused {
        ip: IpAddr,
        /// Boxed: the variant would otherwise make every allocator result large.
        with: Box<ServiceKey>,
        reason: SharingConflict,
    },

    #[error(
        "no free {family} address is left in any pool this Service may use ({})",
        pools.join(", ")
    )]
    PoolsExhausted { pools: Vec<String>, family: Family },

    #[error("no address pool that this Service may use has {family} addresses")]
    NoPoolAvailable { family: Family },

    #[error("pool {pool} has no {family} addresses")]
    FamilyNotInPool { pool: String, family: Family },

    #[error("{}", dual_stack_text(pools))]
    DualStackUnavailable { pools: Vec<String> },

    #[error(
        "{ip} is already used by Service {by}; an address is shared only by Services that set the same allow-shared-ip key"
    )]
    AddressTaken { ip: IpAddr, by: ServiceKey },

    #[error("{ip} is used by Service {with} and cannot be shared with this Service: {reason}")]
    SharingRefused {
        ip: IpAddr,
        /// Boxed: the variant would otherwise make every allocator result large.
        with: Box<ServiceKey>,
        reason: SharingConflict,
    },

    #[error("{ip} is not in any address pool")]
    NotInAnyPool { ip: IpAddr },

    #[error("{ip} is not in pool {pool}")]
    NotInPool { ip: IpAddr, pool: String },

    #[error(
        "{ip} is in both pools {} and {}, which overlap; no address of the overlap is handed out until the pools are fixed",
        pools[0], pools[1]
    )]
    InOverlap { ip: IpAddr, pools: [String; 2] },

    #[error("{ip} ends in .0 or .255, and pool {pool} has avoidBuggyIPs set")]
    AvoidedAddress { ip: IpAddr, pool: String },

    #[error("there is no address pool named {pool}")]
    UnknownPool { pool: String },

    #[error(
        "pool {pool} does not serve this Service: its serviceAllocation does not match the Service's namespace or labels"
    )]
    PoolNotAllowed { pool: String },

    #[error("{ip} is an {} address, but the Service is {policy}", Family::of(*ip))]
    FamilyMismatch { ip: IpAddr, policy: FamilyPolicy },

    #[error("the Service requests two {family} addresses ({}, {}); at most one per family", ips[0], ips[1])]
    TooManyAddresses { family: Family, ips: [IpAddr; 2] },

    #[error(
        "the Service requires dual-stack but requests no {missing} address; request one address of each family, or none"
    )]
    RequestMissingFamily { missing: Family },

    #[error("two pools are named {pool}; pool names must be unique")]
    DuplicatePool { pool: String },
}

fn dual_stack_text(pools: &[String]) -> String {
    if pools.is_empty() {
        "no single pool that this Service may use has both IPv4 and IPv6 addresses".to_string()
    } else {
        format!(
            "no single pool has both a free IPv4 and a free IPv6 address for this Service (tried {})",
            pools.join(", ")
        )
    }
}

impl Error {
    /// A short CamelCase code for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::PoolExhausted { .. } => "PoolExhausted",
            Error::PoolOverlapped { .. } => "PoolOverlapped",
            Error::RequestedFromTwoPools { .. } => "RequestedFromTwoPools",
            Error::SharingChangeRefused { .. } => "SharingChangeRefused",
            Error::PoolsExhausted { .. } => "PoolsExhausted",
            Error::NoPoolAvailable { .. } => "NoPoolAvailable",
            Error::FamilyNotInPool { .. } => "FamilyNotInPool",
            Error::DualStackUnavailable { .. } => "DualStackUnavailable",
            Error::AddressTaken { .. } => "AddressTaken",
            Error::SharingRefused { .. } => "SharingRefused",
            Error::NotInAnyPool { .. } => "NotInAnyPool",
            Error::NotInPool { .. } => "NotInPool",
            Error::InOverlap { .. } => "InOverlap",
            Error::AvoidedAddress { .. } => "AvoidedAddress",
            Error::UnknownPool { .. } => "UnknownPool",
            Error::PoolNotAllowed { .. } => "PoolNotAllowed",
            Error::FamilyMismatch { .. } => "FamilyMismatch",
            Error::TooManyAddresses { .. } => "TooManyAddresses",
            Error::RequestMissingFamily { .. } => "RequestMissingFamily",
            Error::DuplicatePool { .. } => "DuplicatePool",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::service::Protocol;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn messages_name_the_conflict() {
        let cases = [
            (
                Error::AddressTaken {
                    ip: ip("198.51.100.5"),
                    by: ServiceKey::new("shop", "web", "uid"),
                },
                "198.51.100.5 is already used by Service shop/web; an address is shared only by Services that set the same allow-shared-ip key",
            ),
            (
                Error::SharingRefused {
                    ip: ip("198.51.100.5"),
                    with: Box::new(ServiceKey::new("dns", "tcp", "uid")),
                    reason: SharingConflict::PortClash {
                        protocol: Protocol::Tcp,
                        port: 53,
                    },
                },
                "198.51.100.5 is used by Service dns/tcp and cannot be shared with this Service: both use port 53/TCP",
            ),
            (
                Error::PoolsExhausted {
                    pools: vec!["a".into(), "b".into()],
                    family: Family::V6,
                },
                "no free IPv6 address is left in any pool this Service may use (a, b)",
            ),
            (
                Error::FamilyMismatch {
                    ip: ip("2001:db8::1"),
                    policy: FamilyPolicy::SingleStack(Family::V4),
                },
                "2001:db8::1 is an IPv6 address, but the Service is IPv4 single-stack",
            ),
            (
                Error::InOverlap {
                    ip: ip("198.51.100.5"),
                    pools: ["a".into(), "b".into()],
                },
                "198.51.100.5 is in both pools a and b, which overlap; no address of the overlap is handed out until the pools are fixed",
            ),
            (
                Error::DualStackUnavailable { pools: vec![] },
                "no single pool that this Service may use has both IPv4 and IPv6 addresses",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text, "{}", error.reason());
        }
    }

    #[test]
    fn reasons_are_camel_case_codes() {
        let errors = [
            Error::UnknownPool { pool: "x".into() },
            Error::NotInAnyPool {
                ip: ip("192.0.2.1"),
            },
            Error::RequestMissingFamily {
                missing: Family::V6,
            },
        ];
        for error in errors {
            let reason = error.reason();
            assert!(
                reason.chars().next().unwrap().is_ascii_uppercase(),
                "{reason}"
            );
            assert!(
                reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{reason}"
            );
        }
    }
}
