//! What the allocator reports about pools for their status and Events: overlaps, orphans and
//! usage counts.

use std::fmt;
use std::net::IpAddr;

use model::address::AddressRange;

use crate::space::Usage;
use model::service::ServiceKey;

/// Two pools that share addresses. Neither allocates from the shared part until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// In name order.
    pub pools: [String; 2],
    pub ranges: Vec<AddressRange>,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self.ranges.iter().map(ToString::to_string).collect();
        write!(
            f,
            "pools {} and {} both contain {}",
            self.pools[0],
            self.pools[1],
            ranges.join(", ")
        )
    }
}

/// A Service holding an address that no pool contains any more. It keeps the address (nothing is
/// taken from a live Service) and nobody else can get it; the controller says so.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Orphan {
    pub service: ServiceKey,
    pub ip: IpAddr,
}

/// A pool's counts per family; `None` for a family the pool has no addresses of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub ipv4: Option<Usage>,
    pub ipv6: Option<Usage>,
}
