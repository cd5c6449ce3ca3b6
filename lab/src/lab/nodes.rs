//! Nodes: a namespace on the LAN, a Node object with its heartbeat, and kube-proxy.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::network::{attach, link_mac, pod_routes, service_routes};
use super::observe::http_status;
use super::{Lab, LabConfig, LabNode, args};
use crate::binaries::NodeAgents;
use crate::cluster;
use crate::netns::NetNs;
use crate::plan;
use crate::process::Proc;

impl Lab {
    pub(super) async fn add_node(
        &mut self,
        i: usize,
        config: &LabConfig,
        proxy_kubeconfig: &Path,
        agents: Option<&NodeAgents>,
    ) -> Result<LabNode> {
        let name = format!("node-{i}");
        let ns = NetNs::create(&format!("{}-n{i}", self.prefix))?;
        let (ipv4, ipv6): (IpAddr, IpAddr) = (plan::node_v4(i).into(), plan::node_v6(i).into());
        attach(&self.lan, &self.prefix, &format!("n{i}"), &ns, ipv4, ipv6)?;
        let mac = link_mac(&ns, "eth0")?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            // A link flap keeps the node's IPv6 address, as its network configuration would.
            ("net.ipv6.conf.eth0.keep_addr_on_down", "1"),
        ] {
            ns.sysctl(key, value)?;
        }
        pod_routes(&ns, i, config.nodes)?;
        if agents.is_some() {
            service_routes(&ns)?;
        }
        let published = if config.ipv6_only {
            vec![ipv6]
        } else {
            vec![ipv4, ipv6]
        };
        let pod_cidrs = match (plan::has_pods(i), config.ipv6_only) {
            (false, _) => vec![],
            (true, true) => vec![plan::pod_cidr_v6(i)],
            (true, false) => vec![plan::pod_cidr_v4(i), plan::pod_cidr_v6(i)],
        };
        // A kubelet registers its Node (with --node-ip the same addresses) and renews its Lease.
        let (heartbeat, kubelet) = match agents {
            Some(agents) => (None, Some(self.start_node_agent(agents, &ns, i, &name)?)),
            None => {
                cluster::create_node(&self.client, &name, &published, &pod_cidrs).await?;
                (
                    Some(cluster::heartbeat(&self.client, &name, config.heartbeat)),
                    None,
                )
            }
        };
        let proxied = config.kube_proxies.is_none_or(|n| i <= n);
        let kube_proxy = match proxied {
            true => Some(self.start_kube_proxy(&ns, &name, proxy_kubeconfig)?),
            false => None,
        };
        Ok(LabNode {
            index: i,
            name,
            ns,
            ipv4,
            ipv6,
            kube_proxy,
            proxied,
            speaker: None,
            heartbeat,
            kubelet,
            mac,
        })
    }

    /// kube-proxy in iptables mode: the default of kubeadm, k3s and most bare-metal clusters.
    /// The conntrack flags at 0 leave the read-only conntrack sysctls of a namespace alone.
    pub(super) fn start_kube_proxy(
        &self,
        ns: &NetNs,
        node: &str,
        kubeconfig: &Path,
    ) -> Result<Proc> {
        Proc::spawn(
            ns,
            &format!("kube-proxy-{node}"),
            &self.bins.kube_proxy,
            &args(&[
                &format!("--kubeconfig={}", kubeconfig.display()),
                &format!("--hostname-override={node}"),
                "--proxy-mode=iptables",
                &format!("--cluster-cidr={}", plan::CLUSTER_CIDRS),
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0s",
                "--conntrack-tcp-timeout-close-wait=0s",
                "--healthz-bind-address=0.0.0.0:10256",
                "--metrics-bind-address=127.0.0.1:10249",
                "--v=1",
            ]),
            &self.log_path(&format!("kube-proxy-{node}")),
        )
    }

    pub(super) async fn wait_for_kube_proxies(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for node in self.nodes.iter_mut().filter(|n| n.proxied) {
            let ns = node.ns.clone();
            let target = SocketAddr::new(node.ipv4, 10256);
            loop {
                let ns = ns.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    ns.enter(|| http_status(target, "/healthz"))
                })
                .await??
                .is_ok_and(|code| code == 200);
                if ok {
                    break;
                }
                let proxy = node.kube_proxy.as_mut().expect("kube-proxy started");
                if !proxy.running() || Instant::now() > deadline {
                    bail!(
                        "kube-proxy on {} is not healthy; its log ends with:\n{}",
                        node.name,
                        proxy.log_tail(15)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Restarts every running kube-proxy. After an API server restart client-go's watches back
    /// off for up to 30 s (resetting only after 2 quiet minutes); a fresh kube-proxy lists at
    /// once, so tests that restart the API server repeatedly use this between measurements.
    pub fn restart_kube_proxies(&mut self) -> Result<()> {
        let kubeconfig = self.dir.join("kube-proxy.kubeconfig");
        for i in 0..self.nodes.len() {
            if let Some(mut old) = self.nodes[i].kube_proxy.take() {
                old.kill();
                let node = &self.nodes[i];
                let fresh = self.start_kube_proxy(&node.ns, &node.name, &kubeconfig)?;
                self.nodes[i].kube_proxy = Some(fresh);
            }
        }
        Ok(())
    }
}
