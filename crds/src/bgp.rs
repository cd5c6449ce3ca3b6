//! BGP mode: `BGPPeer` (a router each selected node opens a session to), `BGPAdvertisement`
//! (which pools are advertised to which peers, with which attributes) and `BFDProfile` (fast
//! failure detection for a peer). Field names and defaults follow MetalLB's `metallb.io` kinds
//! where they make sense, so that a migration is mechanical; the README says where they differ.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::schema::{
    Asn, BGP_DURATION_PATTERN, BfdProfileName, BgpDuration, Community, IpAddress, PeerName,
    PoolName, SecretName,
};

/// A BGP router that the selected nodes each open a session to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    doc = "A BGP router that every selected node opens a session to.",
    plural = "bgppeers",
    shortname = "bgppeer",
    category = "ferrolb",
    status = "BGPPeerStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"My ASN","type":"integer","jsonPath":".spec.myASN"}"#,
    printcolumn = r#"{"name":"Peer ASN","type":"integer","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"BFD","type":"string","jsonPath":".spec.bfdProfile"}"#,
    printcolumn = r#"{"name":"Established","type":"integer","jsonPath":".status.established"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.selected"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = peer_rules)]
pub struct BGPPeerSpec {
    /// The AS number the nodes speak as (4-byte ASNs are supported).
    #[serde(rename = "myASN")]
    pub my_asn: Asn,

    /// The router's AS number; equal to `myASN` for iBGP.
    #[serde(rename = "peerASN")]
    pub peer_asn: Asn,

    /// The router's address; IPv4 or IPv6. A session carries the addresses of its own family.
    pub peer_address: IpAddress,

    /// The router's TCP port.
    #[serde(default = "default_peer_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: i32,

    /// The node-side address the session is opened from; the node must have it. None: the
    /// kernel's choice for the route to `peerAddress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddress>,

    /// The BGP hold time proposed in OPEN; the session uses the smaller of both sides'. 0s:
    /// no keepalives. Default 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<BgpDuration>,

    /// Time between keepalives. Default a third of the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<BgpDuration>,

    /// Time between connection attempts while the session is down. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<BgpDuration>,

    /// The router is more than one hop away (eBGP only): the session's packets leave with TTL
    /// 255 instead of 1.
    #[serde(default)]
    pub ebgp_multi_hop: bool,

    /// TCP MD5 signatures (RFC 2385) with the password in this Secret of ferrolb's namespace
    /// (type `kubernetes.io/basic-auth`, key `password`, as MetalLB's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,

    /// Nodes that open a session to this router, matching any one selector. None: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub node_selectors: Vec<LabelSelector>,

    /// The `BFDProfile` that watches this session. None: no BFD, only the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<BfdProfileName>,
}

fn default_peer_port() -> i32 {
    179
}

/// The rules between a peer's fields. A duration of the wrong shape has its own message, so
/// each rule here holds for it (and never errors on it).
fn peer_rules(schema: &mut Schema) {
    let seconds = |field: &str| {
        format!(
            "!has(self.{field}) || !self.{field}.matches('{BGP_DURATION_PATTERN}') || size(self.{field}) == 0"
        )
    };
    let of = |field: &str| format!("duration(self.{field}).getSeconds()");
    let rules = json!([
        {
            "rule": format!("{} || {} == 0 || ({} >= 3 && {} <= 65535)", seconds("holdTime"), of("holdTime"), of("holdTime"), of("holdTime")),
            "message": "holdTime must be 0s (no keepalives) or from 3s to 65535s (RFC 4271)",
        },
        {
            "rule": format!("{} || ({} >= 1 && {} <= 65535)", seconds("connectTime"), of("connectTime"), of("connectTime")),
            "message": "connectTime must be from 1s to 65535s",
        },
        {
            "rule": format!("{} || {} || {} == 0 || {} < {}", seconds("holdTime"), seconds("keepaliveTime"), of("holdTime"), of("keepaliveTime"), of("holdTime")),
            "message": "keepaliveTime must be shorter than holdTime (a third of it is usual)",
        },
        {
            "rule": format!("{} || {} || {} != 0 || {} == 0", seconds("holdTime"), seconds("keepaliveTime"), of("holdTime"), of("keepaliveTime")),
            "message": "with holdTime 0s (no keepalives expected) keepaliveTime must be 0s too",
        },
        {
            "rule": "!has(self.sourceAddress) || !isIP(self.sourceAddress) || !isIP(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",
            "message": "sourceAddress and peerAddress must be of one address family",
        },
        {
            "rule": "!has(self.ebgpMultiHop) || !self.ebgpMultiHop || self.myASN != self.peerASN",
            "message": "ebgpMultiHop is for eBGP sessions only (myASN equals peerASN here: iBGP)",
        },
        {
            "rule": "!has(self.ebgpMultiHop) || !self.ebgpMultiHop || !has(self.bfdProfile)",
            "message": "bfdProfile needs the router on the link: ferrolb runs single-hop BFD only (RFC 5881, TTL 255), which an ebgpMultiHop peer's packets cannot keep",
        },
    ]);
    schema.insert("x-kubernetes-validations".into(), rules);
}

/// A Secret in ferrolb's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    pub name: SecretName,
}

/// The sessions of a peer as the nodes report them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerStatus {
    /// Nodes whose session is Established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established: Option<i32>,

    /// Nodes selected to open a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<i32>,

    /// Each selected node's session, written by that node's speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub sessions: Vec<BGPSessionStatus>,

    /// `Ready`: every selected node's session is Established (the message names the others and
    /// why, e.g. a wrong password or a refused connection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One node's session to the peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatus {
    pub node: String,
    /// RFC 4271's state: Idle, Connect, Active, OpenSent, OpenConfirm or Established.
    pub state: String,
    /// When the session entered this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The hold time both sides agreed on, in seconds (Established only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_seconds: Option<i32>,
    /// BFD's state for the session, when it has a profile: Up, Down, Init or AdminDown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
    /// Why the session is not Established, in words (the last error or NOTIFICATION).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Advertise the addresses of some pools over BGP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    doc = "Advertises the addresses of some pools to BGP peers.",
    plural = "bgpadvertisements",
    shortname = "bgpadv",
    category = "ferrolb",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Communities","type":"string","jsonPath":".spec.communities","priority":1}"#,
    printcolumn = r#"{"name":"Local Pref","type":"integer","jsonPath":".spec.localPref","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Pools advertised by name. With neither this nor `ipAddressPoolSelectors`, every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ip_address_pools: Vec<PoolName>,

    /// Pools advertised by label; added to `ipAddressPools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Advertise each IPv4 address as the prefix of this length that holds it (32: the address
    /// alone). A shorter prefix is advertised while any of its addresses is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 32))]
    pub aggregation_length: Option<i32>,

    /// The same for IPv6 addresses (128: the address alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "aggregationLengthV6")]
    #[schemars(range(min = 0, max = 128))]
    pub aggregation_length_v6: Option<i32>,

    /// LOCAL_PREF sent to iBGP peers (eBGP peers never receive it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295_u32))]
    pub local_pref: Option<i64>,

    /// Communities attached to the routes: `65535:65281` (standard), `large:64512:1:2` (RFC
    /// 8092), or a well-known name (`no-export`, `no-advertise`, `no-export-subconfed`,
    /// `no-peer`, `blackhole`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub communities: Vec<Community>,

    /// Peers advertised to, by name. None: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub peers: Vec<PeerName>,

    /// Nodes that advertise, matching any one selector. None: every node with a session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub node_selectors: Vec<LabelSelector>,
}

/// Timers of the BFD sessions (RFC 5880, asynchronous mode) that watch BGP sessions.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1alpha1",
    kind = "BFDProfile",
    doc = "Timers of the BFD sessions that watch BGP sessions.",
    plural = "bfdprofiles",
    shortname = "bfdprofile",
    category = "ferrolb",
    printcolumn = r#"{"name":"Receive","type":"integer","jsonPath":".spec.receiveInterval"}"#,
    printcolumn = r#"{"name":"Transmit","type":"integer","jsonPath":".spec.transmitInterval"}"#,
    printcolumn = r#"{"name":"Multiplier","type":"integer","jsonPath":".spec.detectMultiplier"}"#,
    printcolumn = r#"{"name":"Passive","type":"boolean","jsonPath":".spec.passiveMode"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// The slowest rate, in milliseconds, at which this node wants control packets. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<i32>,

    /// The fastest rate, in milliseconds, at which this node sends them. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<i32>,

    /// Packets missed in a row before the session is declared down. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<i32>,

    /// Wait for the router to send first.
    #[serde(default)]
    pub passive_mode: bool,

    /// The lowest TTL accepted from a multi-hop peer, kept so that MetalLB's profiles apply
    /// as they are: ferrolb runs single-hop BFD only, which accepts TTL 255 alone (RFC 5881),
    /// so this has no effect. Default 254.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<i32>,
}
