//! The lab's wiring: veths onto the LAN bridge, host-gw routes between nodes, the client's
//! neighbour table, and packet captures on the bridge.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Lab, args};
use crate::netns::NetNs;
use crate::plan;
use crate::process::Proc;

impl Lab {
    /// Points the client's neighbour entry for `ip` at node `i`, as if that node had answered
    /// ARP/NDP for it (until the speaker does it for real).
    pub fn point_client_at(&self, ip: IpAddr, i: usize) -> Result<()> {
        let mac = self.node(i).mac();
        self.client_ns.ip(&[
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// The client's neighbour entry for `ip` (`ip neigh show`), for evidence.
    pub fn client_neighbour(&self, ip: IpAddr) -> Result<String> {
        Ok(self
            .client_ns
            .ip(&["neigh", "show", &ip.to_string()])?
            .trim()
            .to_string())
    }

    /// Starts capturing ARP and NDP on the LAN bridge (tcpdump, with link-level headers and
    /// timestamps): what is broadcast or multicast on the LAN (a bridge's own interface does
    /// not see unicast between its ports). Stop it with [`Capture::finish`].
    pub fn capture_neighbour_traffic(&self, name: &str) -> Result<Capture> {
        self.capture_neighbour_traffic_on(&self.lan, "br0", name)
    }

    /// [`Lab::capture_neighbour_traffic`] on `interface` in `ns`: the client's `eth0` also sees
    /// the answers sent to it.
    pub fn capture_neighbour_traffic_on(
        &self,
        ns: &NetNs,
        interface: &str,
        name: &str,
    ) -> Result<Capture> {
        let log = self.dir.join(format!("capture-{name}.txt"));
        // A capture of the same name before this one must not count as this one's start.
        let _ = std::fs::remove_file(&log);
        let proc = Proc::spawn(
            ns,
            &format!("tcpdump-{name}"),
            Path::new("tcpdump"),
            &args(&[
                "-i",
                interface,
                "-tt",
                "-e",
                "-n",
                "-l",
                "arp or (icmp6 and (ip6[40] == 135 or ip6[40] == 136))",
            ]),
            &log,
        )?;
        // tcpdump says "listening on" once its filter is in place; a fixed pause was too short
        // on a loaded machine, and the capture missed the packets it was started for.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on")) {
            if std::time::Instant::now() > deadline {
                bail!("tcpdump on {interface} did not start within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Capture { proc, log })
    }
}

/// A running packet capture.
pub struct Capture {
    proc: Proc,
    log: PathBuf,
}

impl Capture {
    /// Stops the capture; the captured lines (tcpdump's own messages left out).
    pub fn finish(mut self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        self.proc.stop(Duration::from_secs(2));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// host-gw routing in node `i`: every other node's pods through that node (`replace`, so that
/// it can run again after a link flap).
pub(super) fn pod_routes(ns: &NetNs, i: usize, nodes: usize) -> Result<()> {
    routes_to_pods(ns, (1..=nodes).filter(|j| *j != i && plan::has_pods(*j)))
}

/// The control plane's way back to pods (with kubelets): every node's pods through that node,
/// so the API server answers pods that reach it by their own addresses through the
/// `kubernetes` Service. The client gets no such routes: it is outside the cluster.
pub(super) fn control_plane_pod_routes(cp: &NetNs, nodes: usize) -> Result<()> {
    routes_to_pods(cp, 1..=nodes)
}

/// A route for the Service ranges in a node with kubelets, so the node's own processes (and
/// host-network pods: ferrolb's speaker) can open connections to ClusterIPs such as the
/// `kubernetes` Service's; kube-proxy's DNAT then sends them on. Nodes have no default route,
/// and without a route a connection fails before kube-proxy's rules see it.
pub(super) fn service_routes(ns: &NetNs) -> Result<()> {
    for range in plan::SERVICE_CIDRS.split(',') {
        ns.ip(&["route", "replace", range, "dev", "eth0"])?;
    }
    Ok(())
}

fn routes_to_pods(ns: &NetNs, nodes: impl Iterator<Item = usize>) -> Result<()> {
    for j in nodes {
        ns.ip(&[
            "route",
            "replace",
            &plan::pod_cidr_v4(j),
            "via",
            &plan::node_v4(j).to_string(),
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "replace",
            &plan::pod_cidr_v6(j),
            "via",
            &plan::node_v6(j).to_string(),
        ])?;
    }
    Ok(())
}

/// A veth pair: `outer_name` in `outer`, `eth0` in `inner`.
fn veth(outer: &NetNs, outer_name: &str, inner: &NetNs) -> Result<()> {
    let args = [
        "link",
        "add",
        outer_name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        inner.name(),
    ];
    outer.ip(&args)?;
    Ok(())
}

/// Makes room in the kernel's neighbour tables for a lab of `nodes` nodes. The tables are one
/// per machine, shared by every namespace, and each node keeps an entry for every node it
/// gossips with: 100 nodes need ~10,000 entries where 100 real machines need ~100 each. Past
/// `gc_thresh3` (1024 by default) the kernel refuses new entries ("neighbor table overflow")
/// and connections fail. Only raises the limits, never lowers them.
pub(super) fn room_for_neighbours(nodes: usize) -> Result<()> {
    let needed = (nodes + 8) * (nodes + 8) * 2;
    for family in ["ipv4", "ipv6"] {
        for (knob, value) in [
            ("gc_thresh3", needed),
            ("gc_thresh2", needed / 2),
            ("gc_thresh1", needed / 8),
        ] {
            let path = format!("/proc/sys/net/{family}/neigh/default/{knob}");
            let now: usize = std::fs::read_to_string(&path)?.trim().parse()?;
            if now < value {
                std::fs::write(&path, value.to_string())?;
                tracing::info!(%path, from = now, to = value, "raised for the lab's nodes");
            }
        }
    }
    Ok(())
}

/// Connects `ns` to the LAN bridge with a veth (`<prefix>-<tag>` on the bridge, `eth0` inside).
pub(super) fn attach(
    lan: &NetNs,
    prefix: &str,
    tag: &str,
    ns: &NetNs,
    v4: IpAddr,
    v6: IpAddr,
) -> Result<()> {
    let outer = format!("{prefix}-{tag}");
    veth(lan, &outer, ns)?;
    lan.ip(&["link", "set", &outer, "master", "br0", "up"])?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{v4}/{}", plan::LAN_PREFIX_V4),
        "dev",
        "eth0",
    ])?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{v6}/{}", plan::LAN_PREFIX_V6),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

pub(super) fn link_mac(ns: &NetNs, link: &str) -> Result<String> {
    let out = ns.ip(&["link", "show", link])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no MAC on {link} in {}", ns.name()))
}
