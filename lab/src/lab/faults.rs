//! Faults: dead and revived nodes, stopped heartbeats, link flaps, partitions and slow paths to
//! the API server, cordons and labels, and foreign hosts that claim an address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Lab;
use super::network::{attach, pod_routes};
use crate::cluster;
use crate::hello::HelloServer;
use crate::hogs::Starved;
use crate::netns::NetNs;
use crate::plan;

impl Lab {
    /// Node `i` dies as a machine would: its speaker and kube-proxy killed, heartbeat stopped,
    /// LAN link down; with kubelets, the kubelet, containerd and every pod process too.
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        // The link first: a dead machine says nothing, but a killed process's kernel would
        // still close its TCP connections (a BGP session's FIN tells the router at once).
        self.lan
            .ip(&["link", "set", &format!("{}-n{i}", self.prefix), "down"])?;
        if self.agents.is_some() {
            self.kill_node_agent(i);
        }
        let node = &mut self.nodes[i - 1];
        for mut p in [node.speaker.take(), node.kube_proxy.take()]
            .into_iter()
            .flatten()
        {
            p.kill();
        }
        if let Some(h) = node.heartbeat.take() {
            h.abort();
        }
        Ok(())
    }

    /// Node `victim` dies ([`Lab::kill_node`]) half a second into 2.5 s of new connections
    /// from the client to `ip:80`, one every 5 ms, each allowed 150 ms to connect and 1 s more
    /// for the answer: the failover measurement. Returns the longest time without an answer
    /// (from the last success before to the first after); fails if `ip` never answers again, or
    /// if most connections of the last half second fail (nobody took it over).
    pub async fn time_hard_death(&mut self, victim: usize, ip: IpAddr) -> Result<Duration> {
        let config = crate::ProbeConfig::failover(ip, Duration::from_millis(2500));
        let ns = self.client_ns.clone();
        let run = tokio::task::spawn_blocking(move || crate::probe::run(&ns, &config));
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.kill_node(victim)?;
        let report = run.await??;
        let gap = report
            .longest_gap()
            .with_context(|| format!("{ip} never answered after node {victim} died"))?;
        let (ok, all) = report.answered_from(Duration::from_millis(2000));
        if ok * 2 <= all {
            bail!(
                "{ip} after node {victim} died: {ok} of {all} answered at the end; {}",
                report.failure_summary()
            );
        }
        Ok(gap)
    }

    /// Brings node `i` back after [`Lab::kill_node`], as a rebooted machine: LAN link up,
    /// kube-proxy and the heartbeat running again. Its speaker is the caller's to start, unless
    /// the lab runs kubelets: then containerd and the kubelet start again (no heartbeat of the
    /// lab's), and the kubelet restarts the speaker's pod.
    pub async fn revive_node(&mut self, i: usize) -> Result<()> {
        self.lan
            .ip(&["link", "set", &format!("{}-n{i}", self.prefix), "up"])?;
        if self.agents.is_some() && self.node(i).kubelet.is_none() {
            self.restart_node_agent(i)?;
        }
        let node = &self.nodes[i - 1];
        let kube_proxy = if node.proxied && node.kube_proxy.is_none() {
            Some(self.start_kube_proxy(
                &node.ns,
                &node.name,
                &self.dir.join("kube-proxy.kubeconfig"),
            )?)
        } else {
            None
        };
        let heartbeat = (node.heartbeat.is_none() && node.kubelet.is_none())
            .then(|| cluster::heartbeat(&self.client, &node.name, self.heartbeat));
        let node = &mut self.nodes[i - 1];
        if kube_proxy.is_some() {
            node.kube_proxy = kube_proxy;
        }
        if heartbeat.is_some() {
            node.heartbeat = heartbeat;
        }
        Ok(())
    }

    /// Stops node `i`'s Lease heartbeat, as a dead kubelet would; with kubelets, its kubelet
    /// hangs (SIGSTOP) while containerd and the pods run on.
    pub fn stop_heartbeat(&mut self, i: usize) -> Result<()> {
        if let Some(h) = self.nodes[i - 1].heartbeat.take() {
            h.abort();
        }
        if self.agents.is_some() {
            let kubelets: Vec<i32> = crate::netns::pids(self.node(i).ns.name())
                .into_iter()
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == "kubelet")
                })
                .collect();
            if kubelets.is_empty() {
                bail!("node {i} runs no kubelet to stop");
            }
            for pid in kubelets {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGSTOP,
                )?;
            }
        }
        Ok(())
    }

    /// Starves the thread named `thread` of node `i`'s speaker for `duration`, as a saturated
    /// machine would ([`Starved`]); the rest of the lab keeps the other CPUs. Returns how long
    /// the thread waited for a CPU meanwhile (its schedstat).
    pub async fn starve_speaker_thread(
        &self,
        i: usize,
        thread: &str,
        duration: Duration,
    ) -> Result<Duration> {
        let pid = self
            .speaker_pid(i)
            .with_context(|| format!("no speaker runs on node {i}"))?;
        let tid = std::fs::read_dir(format!("/proc/{pid}/task"))?
            .filter_map(|t| t.ok()?.file_name().into_string().ok())
            .find(|tid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .is_ok_and(|c| c.trim() == thread)
            })
            .with_context(|| format!("node {i}'s speaker has no thread named {thread}"))?;
        // The second field of schedstat: nanoseconds spent runnable, waiting for a CPU.
        let waited = || -> Result<Duration> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))?;
            let ns = stat.split_whitespace().nth(1).context("schedstat")?;
            Ok(Duration::from_nanos(ns.parse()?))
        };
        let starved = Starved::start(tid.parse()?)?;
        let before = waited()?;
        tokio::time::sleep(duration).await;
        let after = waited()?;
        drop(starved);
        Ok(after.saturating_sub(before))
    }

    /// Sets node `i`'s LAN interface (`eth0` inside the node) down or up.
    /// Routes through a link go with it; coming back up, the node's routes to the other
    /// nodes' pods are restored, as a host's network configuration would.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        let ns = &self.node(i).ns;
        ns.ip(&["link", "set", "eth0", if up { "up" } else { "down" }])?;
        if up {
            // The connected routes come back a moment after the link does.
            let deadline = Instant::now() + Duration::from_secs(3);
            while let Err(e) = pod_routes(ns, i, self.nodes.len()) {
                if Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Cuts (or restores) node `i`'s path to the API server, both ways, without touching its
    /// link: a partition, not a death. Everything in the node's namespace is cut off.
    pub fn cut_api_path(&self, i: usize, cut: bool) -> Result<()> {
        let op = if cut { "-I" } else { "-D" };
        let ns = &self.node(i).ns;
        let server = plan::apiserver_v4().to_string();
        for (chain, peer, port) in [("OUTPUT", "-d", "--dport"), ("INPUT", "-s", "--sport")] {
            ns.exec(
                "iptables",
                &[
                    "-w", op, chain, peer, &server, "-p", "tcp", port, "6443", "-j", "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// The API server's side forgets node `i`'s connections: their sockets are destroyed in
    /// the control plane's namespace, as a reboot of its host or a move of its address to
    /// another host would. The resets sent then reach the node only if its path is up; with
    /// [`Self::cut_api_path`] on, the node's connections die without a word.
    pub fn forget_api_connections(&self, i: usize) -> Result<()> {
        let node = self.node(i);
        // ss reads an IPv6 address only in brackets.
        for peer in [node.ipv4.to_string(), format!("[{}]", node.ipv6)] {
            self.cp
                .exec("ss", &["-K", "state", "established", "dst", &peer])?;
        }
        Ok(())
    }

    /// The API server forgets the connections of the lab's own client ([`Self::client`],
    /// through the forwarder on the control plane's loopback): each request or watch under
    /// way ends with a reset.
    pub fn forget_client_connections(&self) -> Result<()> {
        // The API server listens on both families: a loopback IPv4 peer shows as IPv4-mapped.
        for peer in ["127.0.0.1", "[::ffff:127.0.0.1]"] {
            self.cp.exec(
                "ss",
                &[
                    "-K",
                    "state",
                    "established",
                    "sport",
                    "=",
                    ":6443",
                    "dst",
                    peer,
                ],
            )?;
        }
        Ok(())
    }

    /// Cuts (or restores) the speakers' gossip between nodes `i` and `j` (UDP 9652, both
    /// families, both ways, in node `i`'s namespace) and nothing else: a gossip partition
    /// between two live nodes, whose ARP, NDP and API server stay reachable.
    pub fn cut_gossip(&self, i: usize, j: usize, cut: bool) -> Result<()> {
        let op = if cut { "-I" } else { "-D" };
        let ns = &self.node(i).ns;
        let other = self.node(j);
        for (tool, peer) in [("iptables", other.ipv4), ("ip6tables", other.ipv6)] {
            let peer = peer.to_string();
            for (chain, side, port) in [("OUTPUT", "-d", "--dport"), ("INPUT", "-s", "--sport")] {
                ns.exec(
                    tool,
                    &[
                        "-w", op, chain, side, &peer, "-p", "udp", port, "9652", "-j", "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// An API server that answers slowly, as seen from this node: node `i`'s LAN link is
    /// limited to `rate_kbit` both ways, by a token bucket on each of its ends (`eth0` in the
    /// node for what it sends, the bridge's end for what it receives); `None` removes both.
    /// The link carries all of the node's traffic, not only its API calls: gossip, ARP/NDP
    /// answers and Service traffic through the node are slowed as well.
    pub fn slow_api_path(&self, i: usize, rate_kbit: Option<u32>) -> Result<()> {
        let ends = [
            (&self.node(i).ns, "eth0".to_string()),
            (&self.lan, format!("{}-n{i}", self.prefix)),
        ];
        for (ns, link) in ends {
            match rate_kbit {
                Some(rate) => {
                    // A burst of one full frame, or tbf drops every full-sized packet; a
                    // latency of 30 s queues rather than drops, so the path is slow, not lossy.
                    ns.exec(
                        "tc",
                        &[
                            "qdisc",
                            "replace",
                            "dev",
                            &link,
                            "root",
                            "tbf",
                            "rate",
                            &format!("{rate}kbit"),
                            "burst",
                            "1600",
                            "latency",
                            "30s",
                        ],
                    )?;
                }
                None => {
                    // Only a tbf of ours: deleting the kernel's default root qdisc fails.
                    let root = ns.exec("tc", &["qdisc", "show", "dev", &link, "root"])?;
                    if root.contains("qdisc tbf") {
                        ns.exec("tc", &["qdisc", "del", "dev", &link, "root"])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a label on node `i`'s Node object.
    pub async fn label_node(&self, i: usize, key: &str, value: Option<&str>) -> Result<()> {
        let label = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        self.kubectl(&["label", "--overwrite", "node", &self.node(i).name, &label])
            .await?;
        Ok(())
    }

    /// Marks node `i` unschedulable, or schedulable again.
    pub async fn cordon(&self, i: usize, cordoned: bool) -> Result<()> {
        let verb = if cordoned { "cordon" } else { "uncordon" };
        self.kubectl(&[verb, &self.node(i).name]).await?;
        Ok(())
    }

    /// A host on the LAN that is not a node and owns `ips` (the kernel answers ARP/NDP for
    /// them): a foreign claim on an address.
    pub fn add_foreign_host(&mut self, ips: &[IpAddr]) -> Result<NetNs> {
        if self.foreign == plan::MAX_FOREIGN_HOSTS {
            bail!(
                "the address plan has room for {} foreign hosts",
                plan::MAX_FOREIGN_HOSTS
            );
        }
        self.foreign += 1;
        let k = self.foreign;
        let ns = NetNs::create(&format!("{}-f{k}", self.prefix))?;
        attach(
            &self.lan,
            &self.prefix,
            &format!("f{k}"),
            &ns,
            plan::foreign_v4(k).into(),
            plan::foreign_v6(k).into(),
        )?;
        for ip in ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            ns.ip(&[
                "addr",
                "add",
                &format!("{ip}/{len}"),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        Ok(ns)
    }

    /// A host on the LAN, outside the cluster, serving the hello page as `name`: the
    /// backend of a selectorless Service.
    pub fn add_external_backend(&mut self, name: &str) -> Result<ExternalHost> {
        let ns = self.add_foreign_host(&[])?;
        let server = HelloServer::start(&ns, name)?;
        Ok(ExternalHost {
            _server: server,
            ns,
            ipv4: plan::foreign_v4(self.foreign).into(),
            ipv6: plan::foreign_v6(self.foreign).into(),
        })
    }
}

/// A host outside the cluster; dropping it stops its server and removes it.
pub struct ExternalHost {
    // Field order is drop order: the server before its namespace.
    _server: HelloServer,
    pub ns: NetNs,
    pub ipv4: IpAddr,
    pub ipv6: IpAddr,
}
