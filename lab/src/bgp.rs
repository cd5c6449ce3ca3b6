//! BGP mode's data path in the lab: FRR on the LAN peering with every node, and a client
//! behind it that reaches the Services' addresses only through the router. Test helpers:
//! they panic with what they saw when the lab does not get there.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::Lab;

/// The most new connections (one opened every 5 ms) that may fail to open during a rolling
/// restart or a drain in the lab's BGP tests. The router hashes by addresses, so all of the
/// client's connections take one node (the tests check which); if that node went without
/// withdrawing, every new connection would go unanswered until BFD drops it (300 ms × 3:
/// 600–900 ms), 120–180 of them. A graceful change leaves none, beyond the loaded machine's
/// noise floor (one in 13,000–14,700 seen). Connections opened and then reset are not counted
/// here: each change of the router's ECMP group can move the client's path, and with it the
/// connections in flight, to a node without their conntrack entry; how many are in flight
/// grows with the machine's load (4–6 in a whole rollout on an idle machine, 33 with the CPUs
/// saturated).
pub const GRACEFUL_UNOPENED_MAX: usize = 10;

/// The client's subnet behind the BGP router (IPv6: the lab's IPv4 documentation prefixes
/// are the LAN, the ClusterIPs and the pods).
pub const BEHIND_ROUTER: &str = "2001:db8:ff::";

/// BGP mode's data path: FRR (zebra, bfdd, bgpd) on the LAN with every node as an eBGP
/// neighbour over IPv6 with BFD (300 ms × 3), ECMP over them hashed on addresses only (one
/// client's connections take one node, so a client sees when the router gave up on a dead
/// one), and a client on a subnet of its own behind it that reaches the Services' addresses
/// only through the router.
pub struct BgpRouter {
    pub frr: crate::router::Frr,
    pub router: crate::netns::NetNs,
    pub client: crate::netns::Scratch,
}

impl BgpRouter {
    pub fn client_ip() -> String {
        format!("{BEHIND_ROUTER}2")
    }

    pub async fn start(lab: &mut Lab) -> BgpRouter {
        let router = lab.add_foreign_host(&[]).unwrap();
        let client = crate::netns::Scratch::new("bgpc").unwrap();
        client
            .ip(&[
                "link",
                "add",
                "c0",
                "type",
                "veth",
                "peer",
                "name",
                "rc",
                "netns",
                router.name(),
            ])
            .unwrap();
        router
            .ip(&[
                "addr",
                "add",
                &format!("{BEHIND_ROUTER}1/64"),
                "dev",
                "rc",
                "nodad",
            ])
            .unwrap();
        router.ip(&["link", "set", "rc", "up"]).unwrap();
        client
            .ip(&[
                "addr",
                "add",
                &format!("{}/64", Self::client_ip()),
                "dev",
                "c0",
                "nodad",
            ])
            .unwrap();
        client.ip(&["link", "set", "c0", "up"]).unwrap();
        client.ip(&["link", "set", "lo", "up"]).unwrap();
        client
            .ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("{BEHIND_ROUTER}1"),
            ])
            .unwrap();
        router.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        // Policy 3: only the fields below, source and destination address.
        router
            .sysctl("net.ipv6.fib_multipath_hash_policy", "3")
            .unwrap();
        router
            .sysctl("net.ipv6.fib_multipath_hash_fields", "0x0003")
            .unwrap();
        let neighbours: String = (1..=lab.nodes().len())
            .map(|i| {
                let node = crate::plan::node_v6(i);
                format!(" neighbor {node} remote-as 64513\n neighbor {node} bfd\n")
            })
            .collect();
        let activate: String = (1..=lab.nodes().len())
            .map(|i| format!("  neighbor {} activate\n", crate::plan::node_v6(i)))
            .collect();
        let frr = crate::router::Frr::start_router(
            &router,
            &format!(
                "frr defaults datacenter\nlog stdout debugging\nrouter bgp 64512\n bgp router-id {}\n no bgp ebgp-requires-policy\n{neighbours} address-family ipv6 unicast\n{activate}  maximum-paths 8\n exit-address-family\n!\n",
                crate::plan::foreign_v4(1)
            ),
        )
        .unwrap();
        let bgp = BgpRouter {
            frr,
            router,
            client,
        };
        for i in 1..=lab.nodes().len() {
            bgp.route_client_subnet(lab, i);
        }
        lab.apply(&format!(
            "apiVersion: ferrolb.io/v1alpha1\nkind: BFDProfile\nmetadata:\n  name: fast\nspec:\n  receiveInterval: 300\n  transmitInterval: 300\n  detectMultiplier: 3\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  myASN: 64513\n  peerASN: 64512\n  peerAddress: \"{}\"\n  connectTime: 1s\n  bfdProfile: fast\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata:\n  name: all\nspec: {{}}\n",
            crate::plan::foreign_v6(1)
        ))
        .await
        .unwrap();
        bgp
    }

    /// Node `i` reaches the client's subnet through the router (again after a revival: the
    /// kernel drops IPv6 routes of a link that went down).
    pub fn route_client_subnet(&self, lab: &Lab, i: usize) {
        lab.node(i)
            .ns
            .ip(&[
                "-6",
                "route",
                "replace",
                &format!("{BEHIND_ROUTER}/64"),
                "via",
                &crate::plan::foreign_v6(1).to_string(),
            ])
            .unwrap();
    }

    /// The next hops the router's kernel uses for `vip`.
    pub fn kernel_next_hops(&self, vip: IpAddr) -> String {
        self.router
            .ip(&["-6", "route", "show", &vip.to_string()])
            .unwrap_or_default()
    }

    /// Waits until the router's kernel sends `vip` to exactly `nodes` and every node's BFD
    /// session is Up.
    pub async fn converged(&self, lab: &Lab, vip: IpAddr, nodes: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let hops = self.kernel_next_hops(vip);
            let routed = (1..=lab.nodes().len()).all(|i| {
                hops.contains(&format!("via {} ", crate::plan::node_v6(i))) == nodes.contains(&i)
            });
            let bfd = self.frr.vtysh("show bfd peers brief").unwrap_or_default();
            let bfd_up = bfd.matches(" up ").count() == lab.nodes().len();
            if routed && bfd_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the router sends {vip} via {hops:?}, not nodes {nodes:?}; BFD: {bfd}\n{}",
                self.frr.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the router no longer sends `vip` via node `dead` (its BFD session down).
    pub async fn converged_without(&self, vip: IpAddr, dead: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .kernel_next_hops(vip)
            .contains(&format!("via {} ", crate::plan::node_v6(dead)))
        {
            assert!(
                Instant::now() < deadline,
                "the router still sends {vip} to the dead node {dead}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node the router sends the client's connections to `vip` through: the one whose
    /// conntrack holds a connection the client opens now (held open while every node is
    /// asked, by its source port). Not `ip route get` on the router: for hash policy 3 the
    /// kernel hashes a forwarded packet's outer and inner headers together and a route
    /// lookup's flow alone, so the two can name different nodes of one group.
    ///
    /// The source port is bound below the ephemeral range and never reused in this process:
    /// a probe beside it cycles through the ephemeral ports, and one of its earlier
    /// connections from the same port, sent through another node before the group changed,
    /// stays in that node's conntrack (seen in CI: one port in the conntrack of two nodes).
    pub fn client_path(&self, lab: &Lab, vip: IpAddr) -> usize {
        let port = next_probe_source_port();
        let connection = self
            .client
            .enter(|| connect_from_port(port, std::net::SocketAddr::new(vip, 80)))
            .unwrap()
            .unwrap_or_else(|e| panic!("{vip} through the router from port {port}: {e}"));
        let all: Vec<usize> = (1..=lab.nodes().len()).collect();
        let holding = self.nodes_holding_client(lab, &all, port);
        drop(connection);
        match holding[..] {
            [node] => node,
            _ => panic!(
                "the client's connection from port {port} is in the conntrack of nodes {holding:?}"
            ),
        }
    }

    /// The nodes among `nodes` whose conntrack holds the client's connection to port 80 from
    /// source `port`: where the router sent it.
    fn nodes_holding_client(&self, lab: &Lab, nodes: &[usize], port: u16) -> Vec<usize> {
        let client = Self::client_ip();
        let port = port.to_string();
        let filter = [
            "-L",
            "-f",
            "ipv6",
            "-p",
            "tcp",
            "-s",
            client.as_str(),
            "--dport",
            "80",
            "--sport",
            port.as_str(),
        ];
        nodes
            .iter()
            .copied()
            .filter(|i| {
                lab.node(*i)
                    .ns
                    .exec("conntrack", &filter)
                    .unwrap_or_default()
                    .contains("dport=80")
            })
            .collect()
    }
}

/// A source port below Linux's ephemeral range (32768–60999 by default), a new one on each
/// call: no other connection of the lab's uses it, in this lab or an earlier one.
fn next_probe_source_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    20_000 + n % 10_000
}

/// A TCP connection to `target` from source port `port`, opened in the calling thread's
/// namespace.
fn connect_from_port(
    port: u16,
    target: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    let local: std::net::SocketAddr = match target {
        std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
    };
    socket.bind(&local.into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}
