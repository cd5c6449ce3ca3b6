//! One interface's sockets: a pnet datalink channel (`AF_PACKET`) whose receive thread answers
//! requests for the addresses it is told to, and reports what others claim; and the IPv6
//! solicited-node memberships that make Neighbor Solicitations for those addresses arrive.
//!
//! Everything here is created on the thread that calls [`Port::open`] or on threads it spawns,
//! so it all lives in that thread's network namespace.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv6Addr, UdpSocket};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pnet::datalink::{self, Channel, DataLinkReceiver, DataLinkSender, NetworkInterface};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use speaker_core::arp::{self, Arp};
use speaker_core::ethernet::EthernetHeader;
use speaker_core::ndp::{self, Ndp, solicited_node_multicast};
use speaker_core::{Frame, MacAddr, parse_frame};
use tracing::{debug, warn};

use super::links::Link;
use super::metrics::{ARP, Metrics, NDP, ReasonLabels};
use speaker_core::announce::machine::{Claim, ClaimKind};

/// How long a receive thread blocks before looking at its stop flag: the delay of closing a
/// port, not of answering (a frame wakes it at once).
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// A transmit queue that stays full this long is reported as an error instead of blocking.
const WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Pause after a receive error (the link is down, say) before trying again.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Classic BPF run by the kernel on every frame of the interface: keep untagged ARP and ICMPv6
/// Neighbor Solicitations and Advertisements (no extension headers, as Neighbor Discovery uses
/// none), drop the rest before it is copied to us. Without it an `ETH_P_ALL` socket receives
/// every frame of a busy node interface.
///
/// A frame of another VLAN that reaches this interface (a trunk) arrives with its 802.1Q tag
/// already taken off into the packet's metadata: it would read as this LAN's ARP and make a
/// false conflict. The first test drops any frame that carried a tag (the kernel's
/// `vlan_tag_present`); a VLAN the operator wants is its own interface (`eth0.42`), whose
/// frames carry none.
fn filter() -> [SockFilter; 12] {
    const LDW_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const LDH_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDB_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    // SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT: an ancillary load, 1 when the frame had a tag.
    const VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 48;
    // Jump offsets count instructions after the next one; ACCEPT is 10 and DROP 11.
    [
        SockFilter::new(LDW_ABS, 0, 0, VLAN_TAG_PRESENT), // 0: tagged?
        SockFilter::new(JEQ_K, 0, 9, 0),                  // 1: tagged -> 11
        SockFilter::new(LDH_ABS, 0, 0, 12),               // 2: ethertype
        SockFilter::new(JEQ_K, 6, 0, 0x0806),             // 3: ARP -> 10
        SockFilter::new(JEQ_K, 0, 6, 0x86dd),             // 4: not IPv6 -> 11
        SockFilter::new(LDB_ABS, 0, 0, 14 + 6),           // 5: next header
        SockFilter::new(JEQ_K, 0, 4, 58),                 // 6: not ICMPv6 -> 11
        SockFilter::new(LDB_ABS, 0, 0, 14 + 40),          // 7: ICMPv6 type
        SockFilter::new(JEQ_K, 1, 0, 135),                // 8: solicitation -> 10
        SockFilter::new(JEQ_K, 0, 1, 136),                // 9: advertisement -> 10, else 11
        SockFilter::new(RET_K, 0, 0, 0xffff),             // 10: accept (whole frame)
        SockFilter::new(RET_K, 0, 0, 0),                  // 11: drop
    ]
}

/// What a receive thread reads and shares with the control thread.
struct Shared {
    name: String,
    mac: MacAddr,
    /// The source of our Neighbor Advertisements (the link-local address), if the interface
    /// has an IPv6 address at all.
    ndp_source: Option<Ipv6Addr>,
    /// Addresses to answer requests for on this interface.
    answer: RwLock<BTreeSet<IpAddr>>,
    /// Addresses whose claims by others are reported.
    watch: RwLock<BTreeSet<IpAddr>>,
    tx: Mutex<Box<dyn DataLinkSender>>,
    stop: AtomicBool,
    /// The announcer's: answer nothing while it is set.
    muted: Arc<AtomicBool>,
    metrics: Metrics,
    report: Box<dyn Fn(Claim) + Send + Sync>,
}

/// An open interface. Dropping it stops answering and leaves its multicast groups.
pub(crate) struct Port {
    shared: Arc<Shared>,
    pub index: u32,
    thread: Option<JoinHandle<()>>,
    /// Holds the solicited-node memberships; created with the first IPv6 address.
    multicast: Option<UdpSocket>,
    joined: BTreeSet<Ipv6Addr>,
}

impl Port {
    /// Opens `link` and starts its receive thread, which calls `report` with every claim on a
    /// watched address.
    pub fn open(
        link: &Link,
        metrics: Metrics,
        report: Box<dyn Fn(Claim) + Send + Sync>,
        muted: Arc<AtomicBool>,
    ) -> io::Result<Port> {
        let [a, b, c, d, e, f] = link.mac.octets();
        let interface = NetworkInterface {
            name: link.name.clone(),
            description: String::new(),
            index: link.index,
            mac: Some(pnet::util::MacAddr(a, b, c, d, e, f)),
            ips: Vec::new(),
            flags: 0,
        };
        // Protocol 0: the socket receives nothing until pnet binds it to this interface with
        // ETH_P_ALL, so no frame of another interface slips in before the bind.
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        socket.attach_filter(&filter())?;
        let config = datalink::Config {
            read_timeout: Some(READ_TIMEOUT),
            write_timeout: Some(WRITE_TIMEOUT),
            // pnet's default would put the NIC in promiscuous mode; requests are broadcast
            // or multicast, answers to us unicast, so nothing else is needed.
            promiscuous: false,
            // pnet owns the descriptor from here and closes it.
            socket_fd: Some(socket.into_raw_fd()),
            ..datalink::Config::default()
        };
        let (tx, rx) = match datalink::channel(&interface, config)? {
            Channel::Ethernet(tx, rx) => (tx, rx),
            _ => return Err(io::Error::other("pnet returned a non-Ethernet channel")),
        };
        let shared = Arc::new(Shared {
            name: link.name.clone(),
            mac: link.mac,
            ndp_source: link.ndp_source(),
            answer: RwLock::default(),
            watch: RwLock::default(),
            tx: Mutex::new(tx),
            stop: AtomicBool::new(false),
            muted,
            metrics,
            report,
        });
        let thread = std::thread::Builder::new()
            .name(format!("announce-{}", link.name))
            .spawn({
                let shared = shared.clone();
                move || receive(&shared, rx)
            })?;
        Ok(Port {
            shared,
            index: link.index,
            thread: Some(thread),
            multicast: None,
            joined: BTreeSet::new(),
        })
    }

    pub fn mac(&self) -> MacAddr {
        self.shared.mac
    }

    /// Where this interface's Neighbor Advertisements for `target` come from: its link-local
    /// address, or `target` itself on an interface without IPv6 (which cannot carry an IPv6
    /// address's traffic anyway).
    pub fn ndp_source(&self, target: Ipv6Addr) -> Ipv6Addr {
        self.shared.ndp_source.unwrap_or(target)
    }

    /// Sets what to answer and what to watch, joining and leaving solicited-node groups so
    /// that exactly the answered IPv6 addresses' groups are joined.
    pub fn set(&mut self, answer: BTreeSet<IpAddr>, watch: BTreeSet<IpAddr>) {
        let groups: BTreeSet<Ipv6Addr> = answer
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(solicited_node_multicast(*v6)),
                IpAddr::V4(_) => None,
            })
            .collect();
        *self
            .shared
            .answer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = answer;
        *self
            .shared
            .watch
            .write()
            .unwrap_or_else(PoisonError::into_inner) = watch;
        self.set_groups(groups);
    }

    /// A group that cannot be joined is reported once and not retried until the set of
    /// groups changes: this runs after every step of the control thread.
    fn set_groups(&mut self, groups: BTreeSet<Ipv6Addr>) {
        if groups == self.joined {
            return;
        }
        let name = &self.shared.name;
        if self.multicast.is_none() {
            match UdpSocket::bind("[::]:0") {
                Ok(socket) => self.multicast = Some(socket),
                Err(error) => {
                    warn!(interface = %name, %error, "cannot open a socket to join IPv6 groups");
                }
            }
        }
        if let Some(socket) = &self.multicast {
            for group in self.joined.difference(&groups) {
                if let Err(error) = socket.leave_multicast_v6(group, self.index) {
                    debug!(interface = %name, %group, %error, "cannot leave group");
                }
            }
            for group in groups.difference(&self.joined) {
                if let Err(error) = socket.join_multicast_v6(group, self.index) {
                    warn!(interface = %name, %group, %error, "cannot join group");
                }
            }
        }
        self.joined = groups;
    }

    /// Sends one frame; errors are returned for the caller to log.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.shared.send(frame)
    }
}

impl Port {
    /// Closes the port and waits for its thread (at most about `READ_TIMEOUT`).
    pub fn close(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Stops answering at once; the thread notices the stop flag within `READ_TIMEOUT` and closes
/// the socket as it exits, without holding up the control thread. The multicast socket, and
/// with it the memberships, closes here.
impl Drop for Port {
    fn drop(&mut self) {
        self.shared
            .answer
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn receive(shared: &Shared, mut rx: Box<dyn DataLinkReceiver>) {
    debug!(interface = %shared.name, "listening");
    while !shared.stop.load(Ordering::Relaxed) {
        match rx.next() {
            Ok(frame) => shared.handle(frame),
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {}
            Err(error) => {
                debug!(interface = %shared.name, %error, "receive failed");
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    }
    debug!(interface = %shared.name, "stopped listening");
}

impl Shared {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        tx.send_to(frame, None)
            .unwrap_or_else(|| Err(io::Error::other("frame larger than the send buffer")))
    }

    fn answers(&self, ip: IpAddr) -> bool {
        !self.muted.load(Ordering::Relaxed)
            && self
                .answer
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&ip)
    }

    fn claim(&self, ip: IpAddr, mac: MacAddr, kind: ClaimKind) {
        let watched = self
            .watch
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&ip);
        if watched {
            debug!(interface = %self.name, %ip, %mac, ?kind, "claim overheard");
            (self.report)(Claim {
                interface: self.name.clone(),
                ip,
                mac,
                kind,
            });
        }
    }

    fn reply(&self, protocol: &'static str, ip: IpAddr, to: MacAddr, frame: &[u8]) {
        match self.send(frame) {
            Ok(()) => {
                let labels = if protocol == "arp" { &ARP } else { &NDP };
                self.metrics.requests_answered.get_or_create(labels).inc();
                debug!(interface = %self.name, %ip, %to, protocol, "answered");
            }
            Err(error) => warn!(interface = %self.name, %ip, %error, "cannot send answer"),
        }
    }

    fn handle(&self, frame: &[u8]) {
        // An ETH_P_ALL socket also sees what leaves the interface: our own answers and
        // announcements, and the kernel's own ARP and NDP. None of it is for us.
        if EthernetHeader::parse(frame).is_none_or(|(eth, _)| eth.src == self.mac) {
            return;
        }
        match parse_frame(frame) {
            Err(drop) => {
                let reason = drop.reason();
                self.metrics
                    .frames_dropped
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
                debug!(interface = %self.name, reason, "frame dropped");
            }
            Ok(Frame::Arp(message)) => {
                if let Some(question) = message.question() {
                    self.metrics.requests_received.get_or_create(&ARP).inc();
                    let ip = IpAddr::V4(question.target_ip);
                    if self.answers(ip) {
                        let reply = arp::build_reply(question, self.mac);
                        self.reply("arp", ip, question.sender_mac, &reply);
                    }
                }
                if let Some((mac, ip)) = message.sender_claim() {
                    let kind = match message {
                        Arp::Request(_) | Arp::Probe(_) => ClaimKind::ArpRequest,
                        Arp::Reply(_) => ClaimKind::ArpReply,
                        Arp::Gratuitous { .. } => ClaimKind::Gratuitous,
                    };
                    self.claim(IpAddr::V4(ip), mac, kind);
                }
            }
            Ok(Frame::Ndp(Ndp::Solicitation(solicitation))) => {
                self.metrics.requests_received.get_or_create(&NDP).inc();
                let ip = IpAddr::V6(solicitation.target);
                if self.answers(ip) {
                    let source = self.ndp_source.unwrap_or(solicitation.target);
                    let reply = ndp::build_advertisement_reply(&solicitation, self.mac, source);
                    self.reply("ndp", ip, solicitation.reply_mac(), &reply);
                }
            }
            Ok(Frame::Ndp(Ndp::Advertisement(advertisement))) => {
                self.claim(
                    IpAddr::V6(advertisement.target),
                    advertisement.claimed_mac(),
                    ClaimKind::Advertisement,
                );
            }
        }
    }
}
