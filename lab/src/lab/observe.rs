//! What tests observe: Service ingress, requests and failover probes from the client,
//! kube-proxy's rules, and the speakers' and controllers' metrics.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};

use super::Lab;
use crate::probe::{self, Answer, ProbeConfig, ProbeReport};

impl Lab {
    /// Waits until node `i`'s Lease shows a renewal after `since` (its kubelet, or the lab's
    /// heartbeat, reached the API server again), for at most `within`. After an API server
    /// outage this keeps the node lifecycle controller from counting two outages in a row as
    /// one long silence: it marks a node NotReady, and its pods unready, after 50 s without a
    /// renewal it has seen.
    pub async fn lease_renewed_since(
        &self,
        i: usize,
        since: k8s_openapi::jiff::Timestamp,
        within: Duration,
    ) -> Result<()> {
        let leases = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            self.client.clone(),
            "kube-node-lease",
        );
        let name = &self.node(i).name;
        let deadline = std::time::Instant::now() + within;
        loop {
            let renewed = leases
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.renew_time)
                .map(|t| t.0);
            if renewed.is_some_and(|t| t > since) {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "node {name}'s Lease was not renewed within {within:?} (last renewal {renewed:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The addresses in a Service's `status.loadBalancer.ingress`, in order.
    pub async fn ingress(&self, namespace: &str, name: &str) -> Result<Vec<IpAddr>> {
        let svc = kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(
            self.client.clone(),
            namespace,
        )
        .get(name)
        .await?;
        Ok(crds::read::service(&svc).ingress)
    }

    /// One HTTP GET from the client to `ip:port` on a new connection: who answered (and,
    /// if it says, which client address it saw).
    pub async fn get(&self, ip: IpAddr, port: u16) -> Result<Answer> {
        self.get_within(ip, port, Duration::from_secs(2)).await
    }

    /// [`Lab::get`] with its own time limit.
    pub async fn get_within(&self, ip: IpAddr, port: u16, timeout: Duration) -> Result<Answer> {
        let ns = self.client_ns.clone();
        let target = SocketAddr::new(ip, port);
        tokio::task::spawn_blocking(move || ns.enter(|| probe::request(target, timeout)))
            .await??
            .map_err(|e| anyhow::anyhow!("GET http://{target}/hostname from the client: {e}"))
    }

    /// One HTTP GET from the client to `ip:port` on a new connection: the client address the
    /// answering server saw (the client's own, or a node's that masqueraded it).
    pub async fn client_seen(&self, ip: IpAddr, port: u16) -> Result<IpAddr> {
        let ns = self.client_ns.clone();
        let target = SocketAddr::new(ip, port);
        tokio::task::spawn_blocking(move || {
            ns.enter(|| probe::client_seen(target, Duration::from_secs(2)))
        })
        .await??
        .map_err(|e| anyhow::anyhow!("GET http://{target}/clientip from the client: {e}"))
    }

    /// The nodes (1-based) whose MAC answers ARP / NDP for `ip` from the client right now
    /// (within 300 ms), in order of answer; 0 for a host that is not a node.
    pub fn answering_nodes(&self, ip: IpAddr) -> Result<Vec<usize>> {
        let macs =
            crate::l2query::who_has(&self.client_ns, "eth0", ip, Duration::from_millis(300))?;

        Ok(macs
            .iter()
            .map(|mac| {
                let mac = mac.to_string();
                self.nodes
                    .iter()
                    .position(|n| n.mac() == mac)
                    .map_or(0, |k| k + 1)
            })
            .collect())
    }

    /// The single node answering ARP / NDP for `ip`, once exactly one does; fails after
    /// `within`, saying who answered last.
    pub async fn sole_answerer(&self, ip: IpAddr, within: Duration) -> Result<usize> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let nodes = self.answering_nodes(ip)?;
            if let [one] = nodes[..]
                && one != 0
            {
                return Ok(one);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{ip} is answered by {nodes:?} (0: not a node), not by exactly one node"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node answering ARP / NDP for `ip` once every speaker's `/election` names it too (a
    /// restarted speaker may take its addresses back a moment after it rejoins); fails after
    /// `within`.
    pub async fn agreed_owner(&self, ip: IpAddr, within: Duration) -> Result<usize> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let owner = self.sole_answerer(ip, within).await?;
            let line = format!("{ip} {}", self.node(owner).name);
            let mut agreed = true;
            for i in 1..=self.nodes.len() {
                let election = self.speaker_page(i, "/election").await.unwrap_or_default();
                agreed &= election.lines().any(|l| l == line);
            }
            if agreed {
                return Ok(owner);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the speakers never agreed that node {owner} owns {ip}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Probes `ip:80` for a second at a time until no connection fails (at most 20 rounds), so
    /// that a measurement starts from a quiet path rather than from kube-proxy still
    /// programming a new Service; how many rounds that took.
    pub async fn settle(&self, ip: IpAddr) -> Result<usize> {
        for round in 1..=20 {
            let report = self
                .probe(ProbeConfig::failover(ip, Duration::from_secs(1)))
                .await?;
            if report.failures() == 0 {
                return Ok(round);
            }
        }
        anyhow::bail!("{ip} never answered every connection for a whole second")
    }

    /// Runs the failover probe from the client namespace.
    pub async fn probe(&self, config: ProbeConfig) -> Result<ProbeReport> {
        let ns = self.client_ns.clone();
        tokio::task::spawn_blocking(move || probe::run(&ns, &config)).await?
    }

    /// Whether node `i`'s kube-proxy has programmed rules for traffic to `ip` (its NAT table
    /// matches the address): only then can that node serve it.
    pub fn proxy_programs(&self, i: usize, ip: IpAddr) -> Result<bool> {
        let (save, host) = match ip {
            IpAddr::V4(_) => ("iptables-save", format!("-d {ip}/32 ")),
            IpAddr::V6(_) => ("ip6tables-save", format!("-d {ip}/128 ")),
        };
        let rules = self.node(i).ns.exec(save, &["-t", "nat"])?;
        Ok(rules.contains(&host))
    }

    /// Node `i`'s speaker's `/metrics` (it listens on the node's address, port 9651).
    pub async fn speaker_metrics(&self, i: usize) -> Result<String> {
        let node = self.node(i);
        let (ns, target) = (node.ns.clone(), SocketAddr::new(node.ipv4, 9651));
        tokio::task::spawn_blocking(move || ns.enter(|| http_get(target, "/metrics"))).await??
    }

    /// The body of `path` served by node `i`'s speaker (its `/election`, say), when it
    /// answers 200.
    pub async fn speaker_page(&self, i: usize, path: &'static str) -> Result<String> {
        match self.speaker_get(i, path).await? {
            (200, body) => Ok(body),
            (status, _) => anyhow::bail!("{path}: HTTP {status}"),
        }
    }

    /// The status and body of node `i`'s speaker's `/healthz`.
    pub async fn speaker_health(&self, i: usize) -> Result<(u16, String)> {
        self.speaker_get(i, "/healthz").await
    }

    /// The status and body of `GET path` at node `i`'s speaker.
    async fn speaker_get(&self, i: usize, path: &'static str) -> Result<(u16, String)> {
        let node = self.node(i);
        let (ns, target) = (node.ns.clone(), SocketAddr::new(node.ipv4, 9651));
        let reply =
            tokio::task::spawn_blocking(move || ns.enter(|| http_get(target, path))).await???;
        let status = status_of(&reply).with_context(|| format!("no HTTP status from {target}"))?;
        let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, body.to_string()))
    }

    /// kube-apiserver's `/metrics` text (read as the admin).
    pub async fn apiserver_metrics(&self) -> Result<String> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        Ok(self.client().request_text(request).await?)
    }

    /// The `/metrics` text of controller replica `replica`.
    pub async fn controller_metrics(&self, replica: usize) -> Result<String> {
        let ns = self
            .controller_ns
            .get(&replica)
            .cloned()
            .unwrap_or_else(|| self.cp.clone());
        let target = SocketAddr::new("127.0.0.1".parse()?, 9650 + replica as u16);
        tokio::task::spawn_blocking(move || ns.enter(|| http_get(target, "/metrics"))).await??
    }
}

/// The whole reply to `GET path` at `target` (plain HTTP).
pub(crate) fn http_get(target: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The status code of `GET path` at `target` (plain HTTP).
pub(super) fn http_status(target: SocketAddr, path: &str) -> Result<u16> {
    status_of(&http_get(target, path)?).with_context(|| format!("no HTTP status from {target}"))
}

/// The status code on a reply's first line.
fn status_of(reply: &str) -> Option<u16> {
    reply.split_whitespace().nth(1)?.parse().ok()
}
