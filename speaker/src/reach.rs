//! The failover's fast path (see `speaker_core::reach`): a thread that sends ICMP echo requests
//! to the nodes whose addresses this one would take over, reads the replies, and publishes the
//! nodes that fell silent. The loop elects without them until the membership agrees or they
//! answer again.
//!
//! Raw ICMP sockets need `CAP_NET_RAW`, which the speaker has for ARP already. Without it (or
//! without a family's socket) the fast path is off and the membership alone decides, as before.
//! The sockets are created on the thread [`start`] spawns, in the caller's network namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use socket2::{Domain, Protocol, Socket, Type};
use speaker_core::election::NodeName;
use speaker_core::reach::{Config, Reach, echo};
use tokio::sync::watch;
use tracing::{info, warn};

/// The longest the thread sleeps with nothing due: how soon it sees a new watch list.
const IDLE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Nodes watched now.
    pub watched: Gauge,
    /// Times a watched node was judged unreachable.
    pub verdicts: Counter,
    /// Echo requests sent: the fast path's cost to the network.
    pub requests: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("ferrolb");
        r.register(
            "speaker_fast_path_watched_nodes",
            "Nodes this speaker sends echo requests to, being the successor of some of their addresses",
            m.watched.clone(),
        );
        r.register(
            "speaker_fast_path_verdicts",
            "Times a watched node answered no echo request for the silence and its addresses were taken over before the membership's verdict",
            m.verdicts.clone(),
        );
        r.register(
            "speaker_fast_path_echo_requests",
            "ICMP echo requests sent to watched nodes (capped by --fast-failover-max-echo-rate)",
            m.requests.clone(),
        );
        m
    }
}

/// Steers the thread; it stops when this is dropped.
pub struct Watcher {
    nodes: Sender<BTreeMap<NodeName, IpAddr>>,
}

impl Watcher {
    /// The complete set of nodes to watch, with their node addresses. Idempotent.
    pub fn watch(&self, nodes: BTreeMap<NodeName, IpAddr>) {
        let _ = self.nodes.send(nodes);
    }
}

/// Starts the thread. The watch carries the watched nodes that are unreachable now.
///
/// # Panics
///
/// If the operating system refuses a new thread.
pub fn start(config: Config, metrics: Metrics) -> (Watcher, watch::Receiver<BTreeSet<NodeName>>) {
    let (nodes, inputs) = std::sync::mpsc::channel();
    let (verdict, verdicts) = watch::channel(BTreeSet::new());
    std::thread::Builder::new()
        .name("reach".to_string())
        .spawn(move || run(config, metrics, &inputs, &verdict))
        .expect("cannot start the reach thread");
    (Watcher { nodes }, verdicts)
}

/// One family's raw socket, opened when a node of that family is first watched. Held as a
/// `UdpSocket`, whose `send_to` and `recv_from` are plain `sendto` and `recvfrom`: what a raw
/// socket needs, without unsafe code.
struct Family {
    v6: bool,
    /// Our requests' identifier: the socket lets through only replies carrying it.
    identifier: u16,
    socket: Option<UdpSocket>,
    failed: bool,
}

impl Family {
    fn new(v6: bool, identifier: u16) -> Family {
        Family {
            v6,
            identifier,
            socket: None,
            failed: false,
        }
    }

    fn open(&mut self) -> Option<&UdpSocket> {
        if self.socket.is_none() && !self.failed {
            let (domain, protocol) = if self.v6 {
                (Domain::IPV6, Protocol::ICMPV6)
            } else {
                (Domain::IPV4, Protocol::ICMPV4)
            };
            let filter: Vec<socket2::SockFilter> = echo::reply_filter(self.v6, self.identifier)
                .into_iter()
                .map(|(code, jt, jf, k)| socket2::SockFilter::new(code, jt, jf, k))
                .collect();
            match Socket::new(domain, Type::RAW, Some(protocol)).and_then(|s| {
                s.set_nonblocking(true)?;
                s.attach_filter(&filter)?;
                Ok(s)
            }) {
                Ok(socket) => self.socket = Some(socket.into()),
                Err(e) => {
                    self.failed = true;
                    warn!(
                        v6 = self.v6,
                        "no raw ICMP socket ({e}): failover waits for the membership alone"
                    );
                }
            }
        }
        self.socket.as_ref()
    }

    /// Every queued echo reply to us: the address it came from.
    fn drain(&self, identifier: u16, mut each: impl FnMut(IpAddr)) {
        let Some(socket) = &self.socket else { return };
        let mut buffer = [0u8; 1500];
        loop {
            match socket.recv_from(&mut buffer) {
                Ok((len, from)) => {
                    if echo::reply(self.v6, identifier, &buffer[..len]).is_some() {
                        each(from.ip());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

fn run(
    config: Config,
    metrics: Metrics,
    inputs: &Receiver<BTreeMap<NodeName, IpAddr>>,
    verdict: &watch::Sender<BTreeSet<NodeName>>,
) {
    let mut reach: Reach<NodeName> = Reach::new(config);
    // Tells our replies from other programs' on the node (ping uses its PID the same way).
    let identifier = (std::process::id() as u16) ^ 0xfe11;
    let mut families = [
        Family::new(false, identifier),
        Family::new(true, identifier),
    ];
    let mut unreachable = BTreeSet::new();
    loop {
        // The latest list only.
        let mut latest = None;
        loop {
            match inputs.try_recv() {
                Ok(nodes) => latest = Some(nodes),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Some(nodes) = latest {
            metrics.watched.set(nodes.len() as i64);
            reach.watch(Instant::now(), nodes);
        }
        // Replies first, then requests, then the verdict: a reply that waited in the socket
        // while this thread was not running still counts.
        for family in &families {
            family.drain(identifier, |from| reach.on_reply(from));
        }
        let now = Instant::now();
        for probe in reach.poll(now) {
            let family = &mut families[usize::from(probe.addr.is_ipv6())];
            let v6 = family.v6;
            if let Some(socket) = family.open() {
                let request = echo::request(v6, identifier, probe.sequence);
                // A failed send (no route: the node's link is gone) is a lost request.
                let _ = socket.send_to(&request, SocketAddr::new(probe.addr, 0));
                metrics.requests.inc();
            }
        }
        let now_unreachable = reach.unreachable(now);
        if now_unreachable != unreachable {
            for node in now_unreachable.difference(&unreachable) {
                metrics.verdicts.inc();
                info!(
                    node = node.as_str(),
                    "answers no echo request: taking over its addresses ahead of the membership"
                );
            }
            unreachable = now_unreachable;
            verdict.send_replace(unreachable.clone());
        }
        let wait = reach
            .next_due()
            .map_or(IDLE, |due| due.saturating_duration_since(Instant::now()))
            .min(IDLE);
        let mut fds: Vec<PollFd> = families
            .iter()
            .filter_map(|f| f.socket.as_ref())
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        let timeout =
            PollTimeout::try_from(wait.as_millis().max(1) as u64).unwrap_or(PollTimeout::MAX);
        if fds.is_empty() {
            std::thread::sleep(wait);
        } else {
            let _ = poll(&mut fds, timeout);
        }
    }
}

#[cfg(test)]
mod lab_tests;
