//! What the allocator answers about a Service: the checks on its request and the addresses it
//! holds. The Service itself is the model's (`model::service`).

use std::net::IpAddr;

use model::address::Family;
use model::service::{FamilyPolicy, ServiceRequest};

use crate::error::{Error, Result};

/// Whether the requested addresses fit the family policy: at most one per family, only
/// families the Service has, and one of each when dual-stack is required. The controller may
/// call this to refuse bad annotations early; [`crate::Allocator::allocate`] calls it too.
pub fn check_request(request: &ServiceRequest) -> Result<()> {
    check_one_per_family(&request.requested)?;
    if let Some(ip) = request
        .requested
        .iter()
        .find(|ip| !request.families.allows(Family::of(**ip)))
    {
        return Err(Error::FamilyMismatch {
            ip: *ip,
            policy: request.families,
        });
    }
    if let FamilyPolicy::RequireDualStack(_) = request.families
        && !request.requested.is_empty()
        && let Some(missing) = [Family::V4, Family::V6].into_iter().find(|family| {
            !request
                .requested
                .iter()
                .any(|ip| Family::of(*ip) == *family)
        })
    {
        return Err(Error::RequestMissingFamily { missing });
    }
    Ok(())
}

/// At most one address per family.
pub(crate) fn check_one_per_family(ips: &[IpAddr]) -> Result<()> {
    for (i, a) in ips.iter().enumerate() {
        if let Some(b) = ips[i + 1..]
            .iter()
            .find(|b| Family::of(**b) == Family::of(*a))
        {
            return Err(Error::TooManyAddresses {
                family: Family::of(*a),
                ips: [*a, *b],
            });
        }
    }
    Ok(())
}

/// One address a Service holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AssignedAddress {
    pub ip: IpAddr,
    /// The pool the address belongs to; `None` when no pool contains it any more (an orphan,
    /// kept because addresses are never taken away from a live Service).
    pub pool: Option<String>,
}

/// The addresses a Service holds, the family it asked for first coming first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub addresses: Vec<AssignedAddress>,
}

impl Assignment {
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| a.ip).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}
