//! The lab's address plan: documentation prefixes only, inside the lab's own namespaces.
//!
//! | role                 | IPv4                          | IPv6                          |
//! |----------------------|-------------------------------|-------------------------------|
//! | LAN                  | 198.51.100.0/24               | 2001:db8::/64                 |
//! | API server           | 198.51.100.1                  | 2001:db8::1                   |
//! | client               | 198.51.100.10                 | 2001:db8::10                  |
//! | node i (1-based)     | 198.51.100.(10+i), i ≤ 150    | 2001:db8::(10+i)              |
//! | foreign hosts        | 198.51.100.(170+k), k ≤ 25    | 2001:db8::(100+k)             |
//! | example pool         | 198.51.100.200-198.51.100.250 | 2001:db8::c8-2001:db8::fa     |
//! | pods of node i ≤ 15  | 203.0.113.(16i)/28            | 2001:db8:1:i::/64             |
//! | - CNI bridge (gw)    | 203.0.113.(16i+1)             | 2001:db8:1:i::1               |
//! | - CNI pods           | 203.0.113.(16i+2)-(16i+14)    | 2001:db8:1:i::2-100           |
//! | Service cluster IPs  | 192.0.2.0/24                  | 2001:db8:2::/112              |
//! | `kubernetes` Service | 192.0.2.1                     | 2001:db8:2::1                 |
//!
//! Every pod gets its addresses from its node's CNI (lab/src/lab/kubelet.rs): a dual-stack
//! node's can address 13 pods (its IPv4 /28 bounds it), an IPv6-only node's 255; the kubelet's
//! `maxPods` follows ([`max_pods_per_kubelet`]).

use std::net::{Ipv4Addr, Ipv6Addr};

pub const LAN_PREFIX_V4: u8 = 24;
pub const LAN_PREFIX_V6: u8 = 64;
pub const SERVICE_CIDRS: &str = "192.0.2.0/24,2001:db8:2::/112";
/// The Service range of the IPv6-only mode.
pub const SERVICE_CIDR_V6: &str = "2001:db8:2::/112";
pub const CLUSTER_CIDRS: &str = "203.0.113.0/24,2001:db8:1::/48";
pub const EXAMPLE_POOL_V4: &str = "198.51.100.200-198.51.100.250";
pub const EXAMPLE_POOL_V6: &str = "2001:db8::c8-2001:db8::fa";
/// At most this many nodes fit the plan: light nodes (no kubelet, no pods), for the scale
/// bench. Their addresses end below the foreign hosts'.
pub const MAX_NODES: usize = 150;
/// At most this many nodes have pod ranges (a /28 each in 203.0.113.0/24), and so run kubelets.
pub const MAX_NODES_WITH_PODS: usize = 15;
/// At most this many foreign hosts fit between the nodes and the example pool.
pub const MAX_FOREIGN_HOSTS: usize = 25;
/// Pods on the host's network take no CNI address: the speaker's, and the few the kubelet
/// tests bind to a node.
pub const HOST_NETWORK_PODS_PER_NODE: usize = 4;

pub fn apiserver_v4() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 1)
}

pub fn apiserver_v6() -> Ipv6Addr {
    lan_v6(1)
}

pub fn client_v4() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10)
}

pub fn client_v6() -> Ipv6Addr {
    lan_v6(0x10)
}

pub fn node_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + i as u8)
}

pub fn node_v6(i: usize) -> Ipv6Addr {
    lan_v6(0x10 + i as u16)
}

pub fn foreign_v4(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 170 + k as u8)
}

pub fn foreign_v6(k: usize) -> Ipv6Addr {
    lan_v6(0x100 + k as u16)
}

/// Whether node `node` has a pod range (and may run pods).
pub fn has_pods(node: usize) -> bool {
    (1..=MAX_NODES_WITH_PODS).contains(&node)
}

pub fn pod_cidr_v4(node: usize) -> String {
    format!("203.0.113.{}/28", 16 * node)
}

pub fn pod_cidr_v6(node: usize) -> String {
    format!("2001:db8:1:{node:x}::/64")
}

/// Address `k` of node `node`'s pod range.
fn pod_v4(node: usize, k: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, (16 * node + k) as u8)
}

fn pod_v6(node: usize, k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, node as u16, 0, 0, 0, k as u16)
}

/// The address of node `node`'s CNI bridge, its pods' gateway; the CNI's pods follow it.
pub fn cni_gateway_v4(node: usize) -> Ipv4Addr {
    pod_v4(node, 1)
}

pub fn cni_gateway_v6(node: usize) -> Ipv6Addr {
    pod_v6(node, 1)
}

/// The last address node `node`'s CNI gives a pod.
pub fn cni_last_v4(node: usize) -> Ipv4Addr {
    pod_v4(node, 14)
}

pub fn cni_last_v6(node: usize) -> Ipv6Addr {
    pod_v6(node, 0x100)
}

/// How many pods a node's CNI can give an address: every family's range must have one left,
/// so dual-stack nodes are bound by the IPv4 range (13) and IPv6-only nodes have 255.
pub fn cni_addresses(ipv6_only: bool) -> usize {
    let v6 = u128::from(cni_last_v6(1)) - u128::from(cni_gateway_v6(1));
    let v4 = u32::from(cni_last_v4(1)) - u32::from(cni_gateway_v4(1));
    if ipv6_only {
        v6 as usize
    } else {
        v4.min(v6 as u32) as usize
    }
}

/// The kubelet's `maxPods`: what the CNI can address plus the host-network allowance, so a
/// node that is full is refused by the scheduler ("Too many pods") rather than by the CNI
/// failing a sandbox for want of an address. With fewer host-network pods than the allowance,
/// the CNI can still run out first.
pub fn max_pods_per_kubelet(ipv6_only: bool) -> usize {
    cni_addresses(ipv6_only) + HOST_NETWORK_PODS_PER_NODE
}

/// The `kubernetes` Service's ClusterIP: the first address of the Service range.
pub fn kubernetes_service_v4() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1)
}

pub fn kubernetes_service_v6() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1)
}

fn lan_v6(low: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_foreign_hosts_and_the_example_pool_never_share_an_address() {
        let pool_start: Ipv4Addr = EXAMPLE_POOL_V4.split('-').next().unwrap().parse().unwrap();
        let mut seen = std::collections::BTreeSet::from([apiserver_v4(), client_v4()]);
        for i in 1..=MAX_NODES {
            assert!(seen.insert(node_v4(i)), "node {i}");
        }
        for k in 1..=MAX_FOREIGN_HOSTS {
            assert!(seen.insert(foreign_v4(k)), "foreign host {k}");
        }
        assert!(seen.iter().all(|a| *a < pool_start), "{seen:?}");
        let v6: std::collections::BTreeSet<Ipv6Addr> = (1..=MAX_NODES)
            .map(node_v6)
            .chain((1..=MAX_FOREIGN_HOSTS).map(foreign_v6))
            .chain([apiserver_v6(), client_v6()])
            .collect();
        assert_eq!(v6.len(), MAX_NODES + MAX_FOREIGN_HOSTS + 2);
        let (first, last) = EXAMPLE_POOL_V6.split_once('-').unwrap();
        let (first, last): (Ipv6Addr, Ipv6Addr) = (first.parse().unwrap(), last.parse().unwrap());
        assert!(v6.iter().all(|a| *a < first || *a > last), "{v6:?}");
    }

    #[test]
    fn an_ipv6_only_node_has_room_for_150_pods_and_a_dual_stack_node_for_13() {
        assert_eq!(cni_addresses(true), 255);
        assert_eq!(cni_addresses(false), 13);
        assert!(max_pods_per_kubelet(true) >= 150 + HOST_NETWORK_PODS_PER_NODE);
        // Past the kubelet's default of 110, which would otherwise cap a busy node.
        assert!(max_pods_per_kubelet(true) > 110);
    }

    #[test]
    fn each_cni_range_is_inside_its_node_range_past_the_network_short_of_broadcast() {
        for node in 1..=MAX_NODES_WITH_PODS {
            let network = u32::from(pod_v4(node, 0));
            assert!(u32::from(cni_gateway_v4(node)) > network);
            assert!(cni_gateway_v4(node) < cni_last_v4(node));
            assert_eq!(u32::from(cni_last_v4(node)), network + 14);
            assert!(cni_gateway_v6(node) > pod_v6(node, 0));
            assert_eq!(
                cni_last_v6(node).segments()[..4],
                pod_v6(node, 0).segments()[..4]
            );
        }
    }
}
