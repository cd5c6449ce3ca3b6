//! The announcer against real kernels: speakers, clients and foreign hosts are network
//! namespaces on a bridge of their own (with MLD snooping, as a switch), so every frame stays
//! inside the test's namespaces. Documentation addresses only: the LAN is 198.51.100.0/24 and
//! 2001:db8::/64, the VIPs come from 192.0.2.0/24 and 2001:db8::/64. Each speaker's
//! announcer is started on a thread that entered its namespace, as the binary will be. Run
//! with FERROLB_LAB=1 as root.
//!
//! What they show, each for IPv4 and IPv6:
//! - a client's kernel resolves a VIP to the speaker's MAC, a question gets exactly one
//!   answer, addresses never desired are never answered, and a released one no longer is;
//! - a takeover burst moves a client's existing entry from A's MAC to B's while A answers
//!   until B's announcement, then reports B as its successor;
//! - a foreign host holding the VIP makes the probe fail with a Conflict and stays the only
//!   one to answer; a foreign announcement of an announced VIP is a Conflict, defended.

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::Once;
use std::time::{Duration, Instant};

use lab::l2query::who_has;
use lab::netns::{self, NetNs};
use prometheus_client::registry::Registry;
use speaker_core::MacAddr;
use speaker_core::arp::{self, ArpOp};
use speaker_core::ndp;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{
    Announcer, Config, Desired, Event, Metrics, choose_interfaces, scan_links, watch_links,
};

const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8::10";
/// Never desired by any test.
const IDLE4: &str = "192.0.2.99";
const IDLE6: &str = "2001:db8::99";
const WAIT: Duration = Duration::from_secs(8);
const QUERY: Duration = Duration::from_millis(500);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A host's MAC: locally administered, its last octet the host's number.
fn mac(host: u8) -> MacAddr {
    MacAddr([0x02, 0xfb, 0, 0, 0, host])
}

/// The namespaces of one test: a bridge and the hosts on it, deleted when dropped (also when
/// the test panics). Names start with `flbt<pid>-`; namespaces of runs that died are removed
/// by the next run.
pub(crate) struct Net {
    prefix: String,
    bridge: NetNs,
    hosts: Vec<NetNs>,
}

impl Net {
    pub(crate) fn new(tag: &str) -> Net {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(netns::remove_scratch_of_dead_runs);
        let prefix = format!("{}-{tag}", netns::scratch_prefix());
        let bridge = NetNs::create(&format!("{prefix}-br")).unwrap();
        // The bridge's own MLD querier makes it forward solicited-node multicast only to
        // ports that joined the group, as a switch with MLD snooping does, so the tests show
        // that the announcer joins. Snooping starts once the querier has been on for the
        // query response interval (1 s here; the value in force when the querier is switched
        // on, hence a command of its own), and the querier needs a link-local address on the
        // bridge, which needs carrier, which a port on a spare veth gives it (this kernel has
        // no dummy interfaces).
        bridge
            .ip(&[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "1",
                "mcast_query_response_interval",
                "100",
            ])
            .unwrap();
        bridge
            .ip(&[
                "link", "add", "anchor", "type", "veth", "peer", "name", "anchor1",
            ])
            .unwrap();
        bridge.ip(&["link", "set", "anchor1", "up"]).unwrap();
        bridge
            .ip(&["link", "set", "anchor", "master", "br0", "up"])
            .unwrap();
        bridge.ip(&["link", "set", "br0", "up"]).unwrap();
        let deadline = Instant::now() + WAIT;
        while !bridge
            .ip(&["-6", "addr", "show", "dev", "br0"])
            .unwrap()
            .contains("fe80::")
        {
            assert!(
                Instant::now() < deadline,
                "the bridge has no link-local address"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bridge
            .ip(&["link", "set", "br0", "type", "bridge", "mcast_querier", "1"])
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        Net {
            prefix,
            bridge,
            hosts: Vec::new(),
        }
    }

    /// A host `name` numbered `n`: `eth0` on the bridge with MAC `mac(n)`, 198.51.100.n/24 and
    /// 2001:db8::n/64.
    pub(crate) fn host(&mut self, name: &str, n: u8) -> NetNs {
        let ns = NetNs::create(&format!("{}-{name}", self.prefix)).unwrap();
        self.hosts.push(ns.clone());
        // No duplicate address detection: addresses are usable at once.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0").unwrap();
        let port = format!("p{n}");
        self.bridge
            .ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])
            .unwrap();
        self.bridge
            .ip(&["link", "set", &port, "master", "br0", "up"])
            .unwrap();
        let m = mac(n).to_string();
        ns.ip(&["link", "set", "eth0", "address", &m]).unwrap();
        let v4 = format!("198.51.100.{n}/24");
        let v6 = format!("2001:db8::{n:x}/64");
        ns.ip(&["addr", "add", &v4, "dev", "eth0"]).unwrap();
        ns.ip(&["addr", "add", &v6, "dev", "eth0", "nodad"])
            .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ns
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.bridge]) {
            if let Err(error) = netns::destroy(ns.name()) {
                eprintln!("cannot delete namespace {}: {error:#}", ns.name());
            }
        }
    }
}

/// A speaker's announcer, started on a thread inside `ns`.
struct Speaker {
    announcer: Announcer,
    events: UnboundedReceiver<Event>,
    registry: Registry,
    ns: NetNs,
}

impl Speaker {
    fn start(ns: &NetNs, config: Config) -> Speaker {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let heartbeat = common::health::Liveness::default()
            .register_thread("announcer", Duration::from_secs(1));
        let (announcer, events) = ns
            .enter(move || Announcer::start(config, metrics, heartbeat, watch_links().unwrap()))
            .unwrap();
        Speaker {
            announcer,
            events,
            registry,
            ns: ns.clone(),
        }
    }

    /// Desires `vips` on the interfaces `choose_interfaces` picks from the namespace's links.
    fn desire(&self, vips: &[&str], probe: bool) {
        let links = self.ns.enter(scan_links).unwrap().unwrap();
        let desired: BTreeMap<IpAddr, Desired> = vips
            .iter()
            .map(|v| {
                let interfaces = choose_interfaces(ip(v), None, &[], &links);
                assert_eq!(interfaces, ["eth0"], "interfaces for {v}");
                (
                    ip(v),
                    Desired {
                        interfaces,
                        probe,
                        fence: false,
                    },
                )
            })
            .collect();
        self.announcer.set_desired(desired);
    }

    async fn next_event(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no event in time")
            .expect("the announcer stopped")
    }

    /// The next events until one of each of `ips` has matched `want`, in any order.
    async fn events_for(&mut self, ips: &[&str], want: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        while seen.len() < ips.len() {
            let event = self.next_event().await;
            assert!(want(&event), "unexpected {event:?}");
            seen.push(event);
        }
        seen
    }

    /// The value of one sample of the text exposition, 0 when absent.
    fn metric(&self, sample: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

fn event_ip(event: &Event) -> IpAddr {
    match event {
        Event::Announced { ip, .. }
        | Event::Conflict { ip, .. }
        | Event::Released { ip, .. }
        | Event::PeerAnswers { ip, .. }
        | Event::Fenced { ip, .. } => *ip,
    }
}

/// A client whose kernel reaches the VIPs on its LAN: IPv4 needs an on-link route to
/// 192.0.2.0/24; the IPv6 VIPs lie in the LAN's /64 already.
fn client(net: &mut Net) -> NetNs {
    let ns = net.host("client", 100);
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", "eth0"])
        .unwrap();
    ns
}

/// What the client's kernel has cached for `ip`.
fn neighbour(ns: &NetNs, ip: IpAddr) -> Option<MacAddr> {
    let out = ns
        .ip(&["neigh", "show", &ip.to_string(), "dev", "eth0"])
        .ok()?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next()?.parse().ok()
}

/// Sends a datagram to `ip` from inside `ns`, which makes its kernel resolve the address.
fn poke(ns: &NetNs, ip: IpAddr) {
    ns.enter(move || {
        let any = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(any).unwrap();
        let _ = socket.send_to(b"ferrolb", (ip, 9));
    })
    .unwrap();
}

/// Waits until the client's kernel maps `ip` to `expected`, poking it into resolving if `poking`.
fn wait_for_neighbour(ns: &NetNs, ip: IpAddr, expected: MacAddr, poking: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if poking {
            poke(ns, ip);
        }
        std::thread::sleep(Duration::from_millis(200));
        let cached = neighbour(ns, ip);
        if cached == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client resolves {ip} to {cached:?}, expected {expected}"
        );
    }
}

/// Sends one raw frame out of `eth0` in `ns` (spoofed: `frame` names its own MAC).
fn send_raw(ns: &NetNs, frame: Vec<u8>) {
    lab::l2query::send_frame(ns, "eth0", |_| frame).unwrap();
}

/// (1) The client's kernel resolves both VIPs to the speaker; (2) a question gets exactly one
/// answer; (5) addresses not desired are never answered, and no longer after a release.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn answers_for_its_addresses_and_no_others() {
    lab::require_lab!();
    let mut net = Net::new("ans");
    let speaker_ns = net.host("speaker", 1);
    let client = client(&mut net);
    let mut speaker = Speaker::start(
        &speaker_ns,
        Config {
            release_grace: Duration::from_millis(500),
            ..Config::default()
        },
    );
    speaker.desire(&[VIP4, VIP6], true);
    let announced = speaker
        .events_for(&[VIP4, VIP6], |e| matches!(e, Event::Announced { .. }))
        .await;
    let mut ips: Vec<IpAddr> = announced.iter().map(event_ip).collect();
    ips.sort();
    assert_eq!(ips, [ip(VIP4), ip(VIP6)]);
    assert_eq!(speaker.announcer.answering(), [ip(VIP4), ip(VIP6)].into());

    for vip in [VIP4, VIP6] {
        wait_for_neighbour(&client, ip(vip), mac(1), true);
        assert_eq!(
            who_has(&client, "eth0", ip(vip), QUERY).unwrap(),
            [mac(1)],
            "{vip}"
        );
    }
    for idle in [IDLE4, IDLE6] {
        poke(&client, ip(idle));
        assert_eq!(
            who_has(&client, "eth0", ip(idle), QUERY).unwrap(),
            [],
            "{idle}"
        );
        assert_eq!(neighbour(&client, ip(idle)), None, "{idle}");
    }

    for protocol in ["arp", "ndp"] {
        let answered =
            format!("ferrolb_speaker_requests_answered_total{{protocol=\"{protocol}\"}}");
        let received =
            format!("ferrolb_speaker_requests_received_total{{protocol=\"{protocol}\"}}");
        let gratuitous =
            format!("ferrolb_speaker_gratuitous_sent_total{{protocol=\"{protocol}\"}}");
        assert!(speaker.metric(&answered) >= 2.0, "{protocol} answered");
        assert!(
            speaker.metric(&received) > speaker.metric(&answered),
            "{protocol}: the questions for idle addresses were seen too"
        );
        assert!(speaker.metric(&gratuitous) >= 1.0, "{protocol} gratuitous");
    }
    assert_eq!(speaker.metric("ferrolb_speaker_announced_addresses"), 2.0);
    // The datagrams the client sent to the VIPs reached the speaker's interface; the kernel
    // filter kept them from the socket, so they were not even counted as dropped.
    let text = speaker.metrics_text();
    assert!(!text.contains("reason=\"other_ethertype\""), "{text}");
    assert!(!text.contains("reason=\"not_icmpv6\""), "{text}");

    // No successor on this LAN: released when the grace runs out, then silent.
    let started = Instant::now();
    speaker.announcer.release_all(WAIT).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(speaker.announcer.answering().is_empty());
    speaker
        .events_for(&[VIP4, VIP6], |e| {
            matches!(
                e,
                Event::Released {
                    successor: None,
                    ..
                }
            )
        })
        .await;
    for vip in [VIP4, VIP6] {
        assert_eq!(
            who_has(&client, "eth0", ip(vip), QUERY).unwrap(),
            [],
            "{vip}"
        );
    }
    assert_eq!(speaker.metric("ferrolb_speaker_announced_addresses"), 0.0);
}

/// (3) Handover: A stops owning the VIPs, B takes them. A answers until B's announcements,
/// which move the client's existing entries from A's MAC to B's without the client asking.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_takeover_burst_moves_the_clients_entry_and_releases_the_predecessor() {
    lab::require_lab!();
    let mut net = Net::new("ho");
    let a_ns = net.host("a", 1);
    let b_ns = net.host("b", 2);
    let client = client(&mut net);
    let mut a = Speaker::start(&a_ns, Config::default());
    let mut b = Speaker::start(&b_ns, Config::default());
    a.announcer.set_peer_macs([mac(2)].into());
    b.announcer.set_peer_macs([mac(1)].into());

    a.desire(&[VIP4, VIP6], true);
    a.events_for(&[VIP4, VIP6], |e| matches!(e, Event::Announced { .. }))
        .await;
    for vip in [VIP4, VIP6] {
        wait_for_neighbour(&client, ip(vip), mac(1), true);
    }

    a.announcer.set_desired(BTreeMap::new());
    // B probes first; A, still answering, replies, and being a peer that is no conflict.
    b.desire(&[VIP4, VIP6], true);
    b.events_for(&[VIP4, VIP6], |e| matches!(e, Event::Announced { .. }))
        .await;
    let released = a
        .events_for(&[VIP4, VIP6], |e| matches!(e, Event::Released { .. }))
        .await;
    for event in released {
        assert!(
            matches!(event, Event::Released { successor: Some(m), .. } if m == mac(2)),
            "{event:?}"
        );
    }
    assert!(a.announcer.answering().is_empty());
    for vip in [VIP4, VIP6] {
        wait_for_neighbour(&client, ip(vip), mac(2), false);
        assert_eq!(
            who_has(&client, "eth0", ip(vip), QUERY).unwrap(),
            [mac(2)],
            "{vip}"
        );
    }
    assert_eq!(a.metric("ferrolb_speaker_conflicts_total"), 0.0);
    assert_eq!(b.metric("ferrolb_speaker_conflicts_total"), 0.0);
}

/// The addresses the speaker reports in conflict with the foreign host (MAC `mac(50)`) on
/// eth0, once both VIPs are, sorted.
async fn conflicts_with_host_50(speaker: &mut Speaker) -> Vec<IpAddr> {
    let conflicts = speaker
        .events_for(&[VIP4, VIP6], |e| {
            matches!(e, Event::Conflict { interface, mac: m, .. } if interface == "eth0" && *m == mac(50))
        })
        .await;
    let mut ips: Vec<IpAddr> = conflicts.iter().map(event_ip).collect();
    ips.sort();
    ips
}

/// (4) A foreign host already using the VIPs answers the probes: Conflict, and the speaker
/// stays silent, leaving the foreign host the only one to answer.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_foreign_owner_is_a_conflict_and_is_not_answered_over() {
    lab::require_lab!();
    let mut net = Net::new("cf");
    let speaker_ns = net.host("speaker", 1);
    let foreign = net.host("foreign", 50);
    let client = client(&mut net);
    foreign
        .ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "eth0"])
        .unwrap();
    foreign
        .ip(&[
            "addr",
            "add",
            &format!("{VIP6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    let mut speaker = Speaker::start(&speaker_ns, Config::default());
    speaker.desire(&[VIP4, VIP6], true);
    assert_eq!(
        conflicts_with_host_50(&mut speaker).await,
        [ip(VIP4), ip(VIP6)]
    );
    assert!(speaker.announcer.answering().is_empty());
    for vip in [VIP4, VIP6] {
        assert_eq!(
            who_has(&client, "eth0", ip(vip), QUERY).unwrap(),
            [mac(50)],
            "{vip}"
        );
    }
    assert_eq!(speaker.metric("ferrolb_speaker_conflicts_total"), 2.0);
    assert_eq!(speaker.metric("ferrolb_speaker_announced_addresses"), 0.0);
}

/// (4, continued) A foreign host announcing addresses the speaker already answers for: a
/// Conflict each, and the speaker defends them with one announcement and keeps answering.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_foreign_announcement_is_a_conflict_and_the_address_is_defended() {
    lab::require_lab!();
    let mut net = Net::new("df");
    let speaker_ns = net.host("speaker", 1);
    let foreign = net.host("foreign", 50);
    let client = client(&mut net);
    let mut speaker = Speaker::start(&speaker_ns, Config::default());
    speaker.desire(&[VIP4, VIP6], false);
    speaker
        .events_for(&[VIP4, VIP6], |e| matches!(e, Event::Announced { .. }))
        .await;
    let arp_sent = "ferrolb_speaker_gratuitous_sent_total{protocol=\"arp\"}";
    let ndp_sent = "ferrolb_speaker_gratuitous_sent_total{protocol=\"ndp\"}";
    // Wait for the whole takeover burst (an ARP request and reply, and an NA, per round), so
    // that any later announcement is the defence.
    let rounds = Config::default().garp_schedule.len() as f64;
    let deadline = Instant::now() + WAIT;
    while (speaker.metric(arp_sent), speaker.metric(ndp_sent)) != (2.0 * rounds, rounds) {
        assert!(
            Instant::now() < deadline,
            "the burst did not finish:\n{}",
            speaker.metrics_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = (speaker.metric(arp_sent), speaker.metric(ndp_sent));
    let (IpAddr::V4(vip4), IpAddr::V6(vip6)) = (ip(VIP4), ip(VIP6)) else {
        unreachable!()
    };
    send_raw(
        &foreign,
        arp::build_gratuitous(mac(50), vip4, ArpOp::Request),
    );
    send_raw(
        &foreign,
        ndp::build_unsolicited_advertisement(mac(50), "fe80::50".parse().unwrap(), vip6),
    );
    assert_eq!(
        conflicts_with_host_50(&mut speaker).await,
        [ip(VIP4), ip(VIP6)]
    );
    assert_eq!(speaker.announcer.answering(), [ip(VIP4), ip(VIP6)].into());
    for vip in [VIP4, VIP6] {
        assert_eq!(
            who_has(&client, "eth0", ip(vip), QUERY).unwrap(),
            [mac(1)],
            "{vip}"
        );
    }
    let after = (speaker.metric(arp_sent), speaker.metric(ndp_sent));
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2.0, 1.0),
        "one announcement each: ARP in request and reply form, one NA"
    );
    assert_eq!(speaker.metric("ferrolb_speaker_conflicts_total"), 2.0);
}

/// `frame` as a switch trunk delivers it from VLAN `vlan`: an 802.1Q tag after the MACs.
fn tagged(mut frame: Vec<u8>, vlan: u16) -> Vec<u8> {
    let tci = vlan.to_be_bytes();
    frame.splice(12..12, [0x81, 0x00, tci[0], tci[1]]);
    frame
}

/// Issue 10, bug 9: a frame of another VLAN on a trunk is not this LAN's. The kernel takes the
/// 802.1Q tag off before a packet socket sees the frame, so a host of VLAN 42 announcing the
/// same addresses (MAC `mac(60)`) read as a conflict here. Its tagged announcements are
/// dropped; the untagged ones of `mac(50)` that follow are still conflicts, and come first.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_tagged_frame_of_another_vlan_is_no_conflict() {
    lab::require_lab!();
    let mut net = Net::new("vl");
    let speaker_ns = net.host("speaker", 1);
    let foreign = net.host("foreign", 50);
    let mut speaker = Speaker::start(&speaker_ns, Config::default());
    speaker.desire(&[VIP4, VIP6], false);
    speaker
        .events_for(&[VIP4, VIP6], |e| matches!(e, Event::Announced { .. }))
        .await;
    let (IpAddr::V4(vip4), IpAddr::V6(vip6)) = (ip(VIP4), ip(VIP6)) else {
        unreachable!()
    };
    for from in [mac(60), mac(50)] {
        let arp = arp::build_gratuitous(from, vip4, ArpOp::Request);
        let na = ndp::build_unsolicited_advertisement(from, "fe80::60".parse().unwrap(), vip6);
        let vlan = (from == mac(60)).then_some(42);
        for frame in [arp, na] {
            send_raw(&foreign, vlan.map_or(frame.clone(), |v| tagged(frame, v)));
        }
    }
    assert_eq!(
        conflicts_with_host_50(&mut speaker).await,
        [ip(VIP4), ip(VIP6)]
    );
    assert_eq!(speaker.metric("ferrolb_speaker_conflicts_total"), 2.0);
}

/// Issue 10, bug 9: a port's packet sockets are bound to ARP (0x0806) and IPv6 (0x86dd), as
/// the kernel's own table of packet sockets shows, not to every protocol (`ETH_P_ALL`, 0x0003),
/// which also hands them a copy of every frame the node sends.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn the_packet_sockets_receive_only_arp_and_ipv6() {
    lab::require_lab!();
    let mut net = Net::new("pk");
    let speaker_ns = net.host("speaker", 1);
    let mut speaker = Speaker::start(&speaker_ns, Config::default());
    speaker.desire(&[VIP4, VIP6], false);
    speaker
        .events_for(&[VIP4, VIP6], |e| matches!(e, Event::Announced { .. }))
        .await;
    let links = speaker_ns.enter(scan_links).unwrap().unwrap();
    let index = links.iter().find(|l| l.name == "eth0").unwrap().index;
    // This thread's namespace's table (`/proc/net` would be the process's).
    let table = speaker_ns
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/packet"))
        .unwrap()
        .unwrap();
    // Columns: sk RefCnt Type Proto Iface ...
    let mut protocols: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            (columns.get(4)?.parse::<u32>().ok()? == index).then_some(columns[3])
        })
        .collect();
    protocols.sort_unstable();
    assert_eq!(protocols, ["0806", "86dd"], "{table}");
}

/// Issue 10, bug 9: addresses added to an interface reach the link watch by the kernel's
/// notifications (one for IPv4, one for IPv6), well before its safety rescan (10 s after the
/// first read) could find them.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn the_link_watch_hears_of_new_addresses() {
    lab::require_lab!();
    let mut net = Net::new("lw");
    let ns = net.host("speaker", 1);
    let mut links = ns.enter(watch_links).unwrap().unwrap();
    for address in ["203.0.113.1/24", "2001:db8:1::1/64"] {
        ns.ip(&["addr", "add", address, "dev", "eth0", "nodad"])
            .unwrap();
        let on_eth0 = |links: &Vec<super::Link>| {
            links
                .iter()
                .any(|l| l.name == "eth0" && l.addrs.iter().any(|a| a.to_string() == address))
        };
        tokio::time::timeout(Duration::from_secs(5), links.wait_for(on_eth0))
            .await
            .unwrap_or_else(|_| panic!("{address} not seen in 5 s"))
            .unwrap();
    }
}

/// A node answering for more IPv6 addresses than one socket holds memberships for (2,340
/// here, `net.core.optmem_max` at 128 KiB) still joins every address's solicited-node
/// group: the interface's groups, as the kernel lists them, are what its NIC filter lets in
/// and what it reports to a switch that snoops MLD. (With one socket the kernel held the first
/// 2,340 of 3,000, and a NIC filtering multicast would drop the other addresses'
/// Neighbor Solicitations.) Each address is then resolved through a bridge that snoops MLD.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn thousands_of_ipv6_addresses_are_all_solicited() {
    const COUNT: u16 = 3000;
    lab::require_lab!();
    let mut net = Net::new("grp");
    let speaker_ns = net.host("speaker", 1);
    let client = client(&mut net);
    net.bridge
        .ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_hash_max",
            "16384",
        ])
        .unwrap();
    net.bridge
        .ip(&[
            "link",
            "set",
            "p1",
            "type",
            "bridge_slave",
            "mcast_flood",
            "off",
        ])
        .unwrap();
    let vips: Vec<String> = (0..COUNT).map(|i| format!("2001:db8::1:{i:x}")).collect();
    let vip_refs: Vec<&str> = vips.iter().map(String::as_str).collect();
    let speaker = Speaker::start(&speaker_ns, Config::default());
    speaker.desire(&vip_refs, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while speaker.announcer.answering().len() < usize::from(COUNT) {
        assert!(
            Instant::now() < deadline,
            "answering for {} of {COUNT} addresses after 60 s",
            speaker.announcer.answering().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The kernel's own list of the interface's groups.
    let joined = |ns: &NetNs| {
        ns.ip(&["-6", "maddr", "show", "dev", "eth0"])
            .unwrap()
            .lines()
            .filter(|l| l.contains("ff02::1:ff01:"))
            .count()
    };
    assert_eq!(
        joined(&speaker_ns),
        usize::from(COUNT),
        "solicited-node groups joined"
    );
    // The first, one in the middle, and the last: past what one socket holds.
    for i in [0, COUNT / 2, COUNT - 1] {
        let vip = ip(&vips[usize::from(i)]);
        // The kernel reports a new membership within a second or so, repeated.
        let deadline = Instant::now() + WAIT;
        loop {
            let answers = who_has(&client, "eth0", vip, QUERY).unwrap();
            if answers == [mac(1)] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{vip} (address {} of {COUNT}): answered by {answers:?}",
                i + 1
            );
        }
    }
}
