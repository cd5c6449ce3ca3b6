//! `IPAddressPool`: a cluster-scoped set of addresses that LoadBalancer Services draw from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{AddressBlock, NamespaceName};

/// The addresses a pool hands out, and to which Services.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "IPAddressPool",
    doc = "A cluster-wide set of addresses that LoadBalancer Services draw from.",
    plural = "ipaddresspools",
    shortname = "ippool",
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Assigned v4","type":"integer","jsonPath":".status.ipv4.assigned"}"#,
    printcolumn = r#"{"name":"Available v4","type":"integer","jsonPath":".status.ipv4.available"}"#,
    printcolumn = r#"{"name":"Assigned v6","type":"integer","jsonPath":".status.ipv6.assigned"}"#,
    printcolumn = r#"{"name":"Available v6","type":"integer","jsonPath":".status.ipv6.available"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs, ranges and single addresses; IPv4 and IPv6 may mix in one pool. Overlap with
    /// another pool is reported on both pools' `Overlap` condition, and the shared part is not
    /// allocated from until it is fixed.
    #[schemars(length(min = 1, max = 128))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub addresses: Vec<AddressBlock>,

    /// When false, only Services that name this pool (`ferrolb.io/address-pool`) or request one
    /// of its addresses get an address from it.
    #[serde(default = "default_true")]
    pub auto_assign: bool,

    /// Never hand out addresses ending in `.0` or `.255`, which some old clients and routers
    /// treat as network or broadcast addresses.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Which Services may use this pool, and how it ranks against other pools. A pool with
    /// `serviceAllocation` is used only by the Services it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

/// Which Services may draw from a pool, and its rank among the pools that match a Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are tried first; pools without a priority come after every pool with one.
    /// Ties are broken by pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,

    /// The Service must live in one of these namespaces (none: any namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub namespaces: Vec<NamespaceName>,

    /// The Service's namespace must match one of these selectors (none: any namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub namespace_selectors: Vec<LabelSelector>,

    /// The Service must match one of these selectors (none: any Service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller observed of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses of the pool; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<FamilyUsage>,

    /// IPv6 addresses of the pool; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<FamilyUsage>,

    /// `Ready`: the pool can allocate. `Overlap`: it shares addresses with another pool (named in
    /// the message). `InUse`: Services hold addresses of it (and so it cannot be deleted yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Address counts of one family. Counts saturate at 9223372036854775807 (a /64 has more).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyUsage {
    /// Addresses the pool can hand out (after `avoidBuggyIPs` and overlaps).
    pub capacity: i64,
    /// Addresses held by Services.
    pub assigned: i64,
    /// `capacity - assigned`.
    pub available: i64,
}
