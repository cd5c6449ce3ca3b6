//! One interface's sockets: two pnet datalink channels (`AF_PACKET`), one bound to ARP and one
//! to IPv6, whose receive threads answer requests for the addresses they are told to and report
//! what others claim; and the IPv6 solicited-node memberships that make Neighbor Solicitations
//! for those addresses arrive.
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

use pnet::datalink::{
    self, Channel, ChannelType, DataLinkReceiver, DataLinkSender, NetworkInterface,
};
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

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// Classic BPF run by the kernel on every frame of the socket's protocol: keep untagged ARP
/// and ICMPv6 Neighbor Solicitations and Advertisements (no extension headers, as Neighbor
/// Discovery uses none), drop the rest before it is copied to us. The ARP socket needs only
/// the first tests; the IPv6 socket would otherwise get every IPv6 packet of the interface.
///
/// A frame of another VLAN that reaches this interface (a trunk) would read as this LAN's ARP
/// and make a false conflict. A socket bound to one protocol gets it with its 802.1Q tag
/// already cleared and, when no VLAN interface claims it, marked `PACKET_OTHERHOST` (seen in
/// the lab: the tagged-frame test fails without that test). So frames for another host are
/// dropped: they reach us only from a promiscuous NIC or a flooding switch, and were never
/// ours to answer. A frame whose tag the kernel left in place (`vlan_tag_present`) is dropped
/// too. A VLAN the operator wants is its own interface (`eth0.42`), whose frames carry
/// neither.
fn filter() -> [SockFilter; 14] {
    const LDW_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const LDH_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDB_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    // Ancillary loads (SKF_AD_OFF + ...): 1 when the frame still has a tag; skb->pkt_type.
    const VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 48;
    const PKTTYPE: u32 = 0xffff_f000 + 4;
    const PACKET_OTHERHOST: u32 = 3;
    // Jump offsets count instructions after the next one; ACCEPT is 12 and DROP 13.
    [
        SockFilter::new(LDW_ABS, 0, 0, VLAN_TAG_PRESENT), // 0: tagged?
        SockFilter::new(JEQ_K, 0, 11, 0),                 // 1: tagged -> 13
        SockFilter::new(LDW_ABS, 0, 0, PKTTYPE),          // 2: whose?
        SockFilter::new(JEQ_K, 9, 0, PACKET_OTHERHOST),   // 3: another host's -> 13
        SockFilter::new(LDH_ABS, 0, 0, 12),               // 4: ethertype
        SockFilter::new(JEQ_K, 6, 0, u32::from(ETH_P_ARP)), // 5: ARP -> 12
        SockFilter::new(JEQ_K, 0, 6, u32::from(ETH_P_IPV6)), // 6: not IPv6 -> 13
        SockFilter::new(LDB_ABS, 0, 0, 14 + 6),           // 7: next header
        SockFilter::new(JEQ_K, 0, 4, 58),                 // 8: not ICMPv6 -> 13
        SockFilter::new(LDB_ABS, 0, 0, 14 + 40),          // 9: ICMPv6 type
        SockFilter::new(JEQ_K, 1, 0, 135),                // 10: solicitation -> 12
        SockFilter::new(JEQ_K, 0, 1, 136),                // 11: advertisement -> 12, else 13
        SockFilter::new(RET_K, 0, 0, 0xffff),             // 12: accept (whole frame)
        SockFilter::new(RET_K, 0, 0, 0),                  // 13: drop
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
    /// Those of them whose probes are answered too (announced, not being handed over).
    defend: RwLock<BTreeSet<IpAddr>>,
    /// Addresses whose claims by others are reported.
    watch: RwLock<BTreeSet<IpAddr>>,
    /// Each protocol's frames leave through the socket bound to it.
    arp_tx: Mutex<Box<dyn DataLinkSender>>,
    nd_tx: Mutex<Box<dyn DataLinkSender>>,
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
    /// The ARP and the IPv6 socket's receive threads.
    threads: Vec<JoinHandle<()>>,
    /// The solicited-node memberships, on as many sockets as they take.
    memberships: Memberships,
}

impl Port {
    /// Opens `link` and starts its receive threads, which call `report` with every claim on a
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
        // The IPv6 socket is opened even on an interface without IPv6 yet: a link-local
        // address appears only after the link comes up, and a port is not reopened for it.
        let (arp_tx, arp_rx) = channel(&interface, ETH_P_ARP)?;
        let (nd_tx, nd_rx) = channel(&interface, ETH_P_IPV6)?;
        let shared = Arc::new(Shared {
            name: link.name.clone(),
            mac: link.mac,
            ndp_source: link.ndp_source(),
            answer: RwLock::default(),
            defend: RwLock::default(),
            watch: RwLock::default(),
            arp_tx: Mutex::new(arp_tx),
            nd_tx: Mutex::new(nd_tx),
            stop: AtomicBool::new(false),
            muted,
            metrics,
            report,
        });
        let mut threads = Vec::new();
        for (kind, rx) in [("arp", arp_rx), ("nd", nd_rx)] {
            let spawned = std::thread::Builder::new()
                .name(format!("{kind}-{}", link.name))
                .spawn({
                    let shared = shared.clone();
                    move || receive(&shared, rx)
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    // Stops the thread already started.
                    shared.stop.store(true, Ordering::Relaxed);
                    return Err(error);
                }
            }
        }
        Ok(Port {
            shared,
            index: link.index,
            threads,
            memberships: Memberships::default(),
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
    pub fn set(
        &mut self,
        answer: BTreeSet<IpAddr>,
        defend: BTreeSet<IpAddr>,
        watch: BTreeSet<IpAddr>,
    ) {
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
            .defend
            .write()
            .unwrap_or_else(PoisonError::into_inner) = defend;
        *self
            .shared
            .watch
            .write()
            .unwrap_or_else(PoisonError::into_inner) = watch;
        self.set_groups(groups);
    }

    fn set_groups(&mut self, groups: BTreeSet<Ipv6Addr>) {
        self.memberships.set(&self.shared.name, self.index, groups);
    }

    /// Sends one frame; errors are returned for the caller to log.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.shared.send(frame)
    }
}

/// Solicited-node multicast memberships of one interface. A socket holds as many as the
/// kernel's `net.core.optmem_max` lets it (about 2,300 with the usual 128 KiB): a node
/// answering for more IPv6 addresses holds the rest on further sockets. A group not joined
/// is an address whose Neighbor Solicitations a switch with MLD snooping, or the NIC's
/// filter, never lets through.
#[derive(Default)]
struct Memberships {
    /// The groups wanted at the last [`Memberships::set`].
    wanted: BTreeSet<Ipv6Addr>,
    holders: Vec<Holder>,
}

struct Holder {
    socket: UdpSocket,
    groups: BTreeSet<Ipv6Addr>,
}

impl Memberships {
    /// Joins exactly `groups` on interface `index`. A group that cannot be joined is
    /// reported once and not retried until the set of groups changes: this runs after every
    /// step of the control thread.
    fn set(&mut self, name: &str, index: u32, groups: BTreeSet<Ipv6Addr>) {
        if groups == self.wanted {
            return;
        }
        for holder in &mut self.holders {
            holder.groups.retain(|group| {
                let keep = groups.contains(group);
                if !keep && let Err(error) = holder.socket.leave_multicast_v6(group, index) {
                    debug!(interface = %name, %group, %error, "cannot leave group");
                }
                keep
            });
        }
        // A socket that holds nothing closes; the first holder with room takes new groups.
        self.holders.retain(|holder| !holder.groups.is_empty());
        let joined: BTreeSet<Ipv6Addr> = self
            .holders
            .iter()
            .flat_map(|holder| holder.groups.iter().copied())
            .collect();
        let mut full = 0;
        let mut failed = 0;
        for group in groups.difference(&joined) {
            loop {
                if full == self.holders.len() {
                    match UdpSocket::bind("[::]:0") {
                        Ok(socket) => self.holders.push(Holder {
                            socket,
                            groups: BTreeSet::new(),
                        }),
                        Err(error) => {
                            warn!(interface = %name, %error, "cannot open a socket to join IPv6 groups");
                            failed += 1;
                            break;
                        }
                    }
                }
                let holder = &mut self.holders[full];
                match holder.socket.join_multicast_v6(group, index) {
                    Ok(()) => {
                        holder.groups.insert(*group);
                        break;
                    }
                    // This socket is full: the next one, or a new one, takes it.
                    Err(error) if is_out_of_room(&error) && !holder.groups.is_empty() => {
                        full += 1;
                    }
                    Err(error) => {
                        warn!(interface = %name, %group, %error, "cannot join group");
                        failed += 1;
                        break;
                    }
                }
            }
        }
        if self.holders.len() > 1 || failed > 0 {
            debug!(
                interface = %name,
                groups = groups.len(),
                sockets = self.holders.len(),
                failed,
                "solicited-node memberships"
            );
        }
        self.wanted = groups;
    }
}

/// A socket's memberships have used up the memory the kernel lets one socket have.
fn is_out_of_room(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(nix::errno::Errno::ENOMEM | nix::errno::Errno::ENOBUFS)
    )
}

impl Port {
    /// Closes the port and waits for its threads (at most about `READ_TIMEOUT`).
    pub fn close(mut self) {
        let threads = std::mem::take(&mut self.threads);
        drop(self);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Stops answering at once; the threads notice the stop flag within `READ_TIMEOUT` and close
/// the sockets as they exit, without holding up the control thread. The multicast socket, and
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

/// A datalink channel on `interface` that receives only `protocol`'s frames, through
/// [`filter`], and sends whole Ethernet frames.
fn channel(
    interface: &NetworkInterface,
    protocol: u16,
) -> io::Result<(Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>)> {
    // Protocol 0: the socket receives nothing until pnet binds it to this interface and
    // `protocol`, so no frame of another interface slips in before the bind.
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
    socket.attach_filter(&filter())?;
    let config = datalink::Config {
        // pnet binds the socket with the protocol of `Layer3`; on this `SOCK_RAW` socket
        // frames still come and go whole, headers included (pnet reads and writes the
        // descriptor the same way for both channel types).
        channel_type: ChannelType::Layer3(protocol),
        read_timeout: Some(READ_TIMEOUT),
        write_timeout: Some(WRITE_TIMEOUT),
        // pnet's default would put the NIC in promiscuous mode; requests are broadcast
        // or multicast, answers to us unicast, so nothing else is needed.
        promiscuous: false,
        // pnet owns the descriptor from here and closes it.
        socket_fd: Some(socket.into_raw_fd()),
        ..datalink::Config::default()
    };
    match datalink::channel(interface, config)? {
        Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
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
        let tx = if frame.get(12..14) == Some(&ETH_P_ARP.to_be_bytes()[..]) {
            &self.arp_tx
        } else {
            &self.nd_tx
        };
        let mut tx = tx.lock().unwrap_or_else(PoisonError::into_inner);
        tx.send_to(frame, None)
            .unwrap_or_else(|| Err(io::Error::other("frame larger than the send buffer")))
    }

    /// Whether a request for `ip` is answered; a probe (`probe`) only for a defended address.
    fn answers(&self, ip: IpAddr, probe: bool) -> bool {
        let set = if probe { &self.defend } else { &self.answer };
        !self.muted.load(Ordering::Relaxed)
            && set
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
        // Sockets bound to one protocol do not see what leaves the interface, but a frame of
        // ours can come back (a loop, a hairpin port): it is no question and no claim.
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
                    if self.answers(ip, matches!(message, Arp::Probe(_))) {
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
                if self.answers(ip, solicitation.is_dad()) {
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
