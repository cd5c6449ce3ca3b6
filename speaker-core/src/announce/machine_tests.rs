//! The announcer's decisions, driven with plain values and instants: no sockets, no sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::MacAddr;

use super::machine::{Claim, ClaimKind, Machine, Output, Packet, Send};
use super::{Config, Desired, Event};

const OURS: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const FOREIGN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x99]);

fn vip() -> IpAddr {
    "192.0.2.10".parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Clock(Instant);

impl Clock {
    fn at(&self, millis: u64) -> Instant {
        self.0 + ms(millis)
    }
}

fn machine() -> (Machine, Clock) {
    let mut m = Machine::new(Config::default());
    m.set_own_macs([OURS].into());
    let clock = Clock(Instant::now());
    m.set_peer_macs(clock.at(0), [PEER].into());
    (m, clock)
}

fn desired(interfaces: &[&str], probe: bool) -> BTreeMap<IpAddr, Desired> {
    let desired = Desired {
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
        probe,
        fence: false,
    };
    [(vip(), desired)].into()
}

/// A takeover from an owner the gossip alone declared down.
fn fenced(interfaces: &[&str], fence: bool) -> BTreeMap<IpAddr, Desired> {
    let desired = Desired {
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
        probe: false,
        fence,
    };
    [(vip(), desired)].into()
}

fn defended_on(m: &Machine, interface: &str) -> bool {
    m.views()
        .defended_on
        .get(interface)
        .is_some_and(|s| s.contains(&vip()))
}

#[test]
fn a_fence_nobody_answers_takes_over_after_a_short_probe() {
    let (mut m, t) = machine();
    let out = m.set_desired(t.at(0), &fenced(&["eth0"], true));
    assert_eq!(out.sends, sends(Packet::Probe, &["eth0"]));
    assert!(!answered_on(&m, "eth0"), "not answered while fencing");
    assert_eq!(m.tick(t.at(50)).sends, sends(Packet::Probe, &["eth0"]));
    // Second probe + fence_wait (50 ms), not + probe_wait (200 ms).
    assert_eq!(m.next_deadline(), Some(t.at(100)));
    let out = m.tick(t.at(100));
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0"]));
    assert_eq!(out.events, vec![announced(&["eth0"])]);
    assert!(answered_on(&m, "eth0") && defended_on(&m, "eth0"));
}

#[test]
fn a_peer_defending_a_fenced_address_keeps_it_until_it_stops() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &fenced(&["eth0"], true));
    let out = m.claim(t.at(1), &claim("eth0", PEER, ClaimKind::ArpReply));
    assert_eq!(
        out.events,
        vec![Event::Fenced {
            ip: vip(),
            interface: "eth0".into(),
            mac: PEER
        }]
    );
    assert!(out.sends.is_empty());
    assert_eq!(
        m.next_deadline(),
        Some(t.at(501)),
        "asks again after fence_retry"
    );
    for at in [50, 100, 300, 500] {
        assert_eq!(m.tick(t.at(at)), nothing(), "fenced: silent at {at} ms");
        assert!(!answered_on(&m, "eth0"));
    }
    // Asked again; the peer defends again.
    assert_eq!(m.tick(t.at(501)).sends, sends(Packet::Probe, &["eth0"]));
    let out = m.claim(t.at(502), &claim("eth0", PEER, ClaimKind::Advertisement));
    assert!(matches!(out.events[..], [Event::Fenced { .. }]));
    // Asked again; the peer handed it over meanwhile and says nothing: taken over.
    assert_eq!(m.tick(t.at(1002)).sends, sends(Packet::Probe, &["eth0"]));
    m.tick(t.at(1052));
    let out = m.tick(t.at(1102));
    assert_eq!(out.events, vec![announced(&["eth0"])]);
}

#[test]
fn a_request_from_the_peer_or_a_foreign_answer_is_no_fence() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &fenced(&["eth0"], true));
    // A peer asking from the address shows it uses it, not that it announces it.
    let out = m.claim(t.at(1), &claim("eth0", PEER, ClaimKind::ArpRequest));
    assert!(out.events.is_empty());
    // A foreign host answering is a conflict, as for any probe.
    let out = m.claim(t.at(2), &claim("eth0", FOREIGN, ClaimKind::ArpReply));
    assert!(
        matches!(out.events[..], [Event::Conflict { .. }]),
        "{out:?}"
    );
}

#[test]
fn a_fenced_address_whose_owner_falls_silent_is_taken_over_at_once() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &fenced(&["eth0"], true));
    m.claim(t.at(1), &claim("eth0", PEER, ClaimKind::ArpReply));
    // The fast path now finds the owner's node silent: no fence any more.
    let out = m.set_desired(t.at(20), &fenced(&["eth0"], false));
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0"]));
    assert_eq!(out.events, vec![announced(&["eth0"])]);
}

#[test]
fn an_address_being_handed_over_is_answered_but_not_defended() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], false));
    assert!(answered_on(&m, "eth0") && defended_on(&m, "eth0"));
    m.set_desired(t.at(10), &BTreeMap::new());
    assert!(
        answered_on(&m, "eth0"),
        "still answered until a successor announces"
    );
    assert!(
        !defended_on(&m, "eth0"),
        "a successor's fence must not mistake a handover for a live owner"
    );
}

fn sends(packet: Packet, interfaces: &[&str]) -> Vec<Send> {
    interfaces
        .iter()
        .map(|i| Send {
            interface: i.to_string(),
            ip: vip(),
            packet,
        })
        .collect()
}

fn announced(interfaces: &[&str]) -> Event {
    Event::Announced {
        ip: vip(),
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
    }
}

fn claim(interface: &str, mac: MacAddr, kind: ClaimKind) -> Claim {
    Claim {
        interface: interface.to_string(),
        ip: vip(),
        mac,
        kind,
    }
}

fn nothing() -> Output {
    Output::default()
}

fn answered_on(m: &Machine, interface: &str) -> bool {
    m.views()
        .answered_on
        .get(interface)
        .is_some_and(|s| s.contains(&vip()))
}

#[test]
fn probes_twice_then_answers_and_announces_on_the_schedule() {
    let (mut m, t) = machine();
    let out = m.set_desired(t.at(0), &desired(&["eth0"], true));
    assert_eq!(out.sends, sends(Packet::Probe, &["eth0"]));
    assert!(m.views().answering.is_empty() && !answered_on(&m, "eth0"));
    assert!(
        m.views().watched_on["eth0"].contains(&vip()),
        "probing needs a socket"
    );
    assert_eq!(m.next_deadline(), Some(t.at(50)));
    assert_eq!(m.tick(t.at(50)).sends, sends(Packet::Probe, &["eth0"]));
    assert_eq!(m.next_deadline(), Some(t.at(250)));
    assert_eq!(m.tick(t.at(249)), nothing());

    let out = m.tick(t.at(250));
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0"]));
    assert_eq!(out.events, vec![announced(&["eth0"])]);
    assert!(answered_on(&m, "eth0"));
    assert_eq!(m.views().answering, BTreeSet::from([vip()]));

    // The rest of the default schedule, 250 ms .. 4.4 s after the first, then silence.
    for offset in [250, 1100, 2200, 4400] {
        assert_eq!(m.next_deadline(), Some(t.at(250 + offset)));
        let out = m.tick(t.at(250 + offset));
        assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0"]));
        assert!(out.events.is_empty(), "Announced is reported once");
    }
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn without_probing_the_burst_starts_at_once_on_every_interface() {
    let (mut m, t) = machine();
    let out = m.set_desired(t.at(0), &desired(&["eth1", "eth0"], false));
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0", "eth1"]));
    assert_eq!(out.events, vec![announced(&["eth0", "eth1"])]);
    // Asking again changes nothing.
    assert_eq!(
        m.set_desired(t.at(10), &desired(&["eth0", "eth1"], false)),
        nothing()
    );
}

#[test]
fn a_foreign_answer_to_the_probe_is_a_conflict_and_the_address_is_not_taken() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], true));
    let out = m.claim(t.at(20), &claim("eth0", FOREIGN, ClaimKind::ArpReply));
    assert_eq!(
        out.events,
        vec![Event::Conflict {
            ip: vip(),
            interface: "eth0".into(),
            mac: FOREIGN
        }]
    );
    assert_eq!(m.tick(t.at(5000)), nothing(), "no probe, no announcement");
    assert!(m.views().answering.is_empty());

    // Probed again after conflict_retry; this time nobody answers.
    assert_eq!(m.next_deadline(), Some(t.at(30_020)));
    assert_eq!(m.tick(t.at(30_020)).sends, sends(Packet::Probe, &["eth0"]));
    m.tick(t.at(30_070));
    let out = m.tick(t.at(30_270));
    assert_eq!(out.events, vec![announced(&["eth0"])]);
}

/// A restarted speaker probes before gossip has told it every peer: the previous owner's answer
/// looks foreign. Once that MAC turns out to be a peer's, the address is taken over at once
/// (the old owner then releases it on hearing the announcement) instead of nobody answering
/// until the conflict retry.
#[test]
fn a_probe_answered_by_a_peer_learned_late_is_taken_over_at_once() {
    let (mut m, t) = machine();
    let late = MacAddr([2, 0, 0, 0, 0, 3]);
    m.set_desired(t.at(0), &desired(&["eth0"], true));
    let out = m.claim(t.at(20), &claim("eth0", late, ClaimKind::ArpReply));
    assert!(
        matches!(out.events[..], [Event::Conflict { .. }]),
        "{out:?}"
    );
    assert!(m.views().answering.is_empty());
    // An unrelated peer set leaves the conflict alone.
    assert_eq!(m.set_peer_macs(t.at(100), [PEER].into()), nothing());
    let out = m.set_peer_macs(t.at(200), [PEER, late].into());
    assert_eq!(out.events, vec![announced(&["eth0"])]);
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0"]));
    assert_eq!(m.views().answering, [vip()].into());
}

#[test]
fn peers_ourselves_and_other_interfaces_are_not_conflicts_while_probing() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], true));
    for c in [
        claim("eth0", PEER, ClaimKind::ArpReply),
        claim("eth0", OURS, ClaimKind::Gratuitous),
        claim("eth1", FOREIGN, ClaimKind::ArpReply),
    ] {
        assert_eq!(m.claim(t.at(20), &c), nothing(), "{c:?}");
    }
    m.tick(t.at(50));
    assert_eq!(m.tick(t.at(250)).events, vec![announced(&["eth0"])]);
}

#[test]
fn a_foreign_claim_on_an_announced_address_is_reported_and_defended_once_per_retry() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], false));
    let c = claim("eth0", FOREIGN, ClaimKind::Gratuitous);
    let out = m.claim(t.at(100), &c);
    assert_eq!(out.events.len(), 1);
    assert!(matches!(
        out.events[0],
        Event::Conflict { mac: FOREIGN, .. }
    ));
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0"]));
    assert!(answered_on(&m, "eth0"), "still answering");

    m.tick(t.at(5000));
    let quiet = m.claim(t.at(10_000), &c);
    assert!(quiet.events.is_empty() && quiet.sends.is_empty());
    assert_eq!(m.claim(t.at(30_100), &c).events.len(), 1);
    // A peer announcing the same address (an election in flux) is not a conflict, nor
    // defended against: the shell decides, by its election, whether two nodes answer.
    let out = m.claim(t.at(60_200), &claim("eth0", PEER, ClaimKind::Gratuitous));
    assert_eq!(out.sends, vec![]);
    assert_eq!(out.events, vec![peer_answers("eth0")]);
}

fn peer_answers(interface: &str) -> Event {
    Event::PeerAnswers {
        ip: vip(),
        interface: interface.to_string(),
        mac: PEER,
    }
}

/// While answering, a peer's announcement or answer is reported (the shell tells a handover
/// from two owners), and an audit asks the LAN who else answers; a request only uses the
/// address and says nothing.
#[test]
fn a_peer_answering_too_is_reported_and_an_audit_asks_who_else_answers() {
    let (mut m, t) = machine();
    assert_eq!(m.audit(vip()), nothing(), "not ours: nothing to ask");
    m.set_desired(t.at(0), &desired(&["eth0", "eth1"], false));
    assert_eq!(
        m.claim(t.at(100), &claim("eth0", PEER, ClaimKind::ArpRequest)),
        nothing()
    );
    for kind in [
        ClaimKind::ArpReply,
        ClaimKind::Gratuitous,
        ClaimKind::Advertisement,
    ] {
        let out = m.claim(t.at(200), &claim("eth1", PEER, kind));
        assert_eq!(out.events, vec![peer_answers("eth1")], "{kind:?}");
    }
    assert_eq!(
        m.audit(vip()).sends,
        sends(Packet::Probe, &["eth0", "eth1"])
    );
    m.set_desired(t.at(300), &BTreeMap::new());
    assert_eq!(m.audit(vip()), nothing(), "released: nothing to ask");
}

#[test]
fn a_released_address_is_answered_until_its_successor_announces() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], false));
    let out = m.set_desired(t.at(1000), &BTreeMap::new());
    assert!(out.sends.is_empty(), "no announcement while releasing");
    assert!(out.events.is_empty());
    assert!(answered_on(&m, "eth0"));
    assert_eq!(m.views().answering, BTreeSet::from([vip()]));
    assert_eq!(m.tick(t.at(1100)).sends, vec![], "the burst stopped");

    // A request from the successor's address, or our own echo, is not an announcement.
    assert_eq!(
        m.claim(t.at(1200), &claim("eth0", PEER, ClaimKind::ArpRequest)),
        nothing()
    );
    assert_eq!(
        m.claim(t.at(1200), &claim("eth0", OURS, ClaimKind::Gratuitous)),
        nothing()
    );
    let out = m.claim(t.at(1300), &claim("eth0", PEER, ClaimKind::Gratuitous));
    assert_eq!(
        out.events,
        vec![Event::Released {
            ip: vip(),
            successor: Some(PEER)
        }]
    );
    assert!(m.views().answering.is_empty() && m.views().watched_on.is_empty());
}

#[test]
fn a_successor_that_announced_before_the_release_ends_it_at_once() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0", "eth1"], false));
    m.tick(t.at(4999));
    // The successor saw the change first and announced on eth0 only, just before we let go.
    let out = m.claim(t.at(5000), &claim("eth0", PEER, ClaimKind::Gratuitous));
    assert_eq!(
        out.events,
        vec![peer_answers("eth0")],
        "a peer's announcement is neither a conflict nor, yet, a release"
    );
    assert!(answered_on(&m, "eth0"));
    let out = m.set_desired(t.at(5010), &BTreeMap::new());
    assert!(out.events.is_empty(), "eth1 still waits for its successor");
    assert!(!answered_on(&m, "eth0") && answered_on(&m, "eth1"));
    let out = m.claim(t.at(5020), &claim("eth1", PEER, ClaimKind::Gratuitous));
    assert_eq!(
        out.events,
        vec![Event::Released {
            ip: vip(),
            successor: Some(PEER)
        }]
    );

    // An announcement older than the grace is history, not a successor.
    m.set_desired(t.at(6000), &desired(&["eth0"], false));
    m.tick(t.at(6050));
    m.claim(t.at(6100), &claim("eth0", PEER, ClaimKind::Gratuitous));
    m.set_desired(t.at(9200), &BTreeMap::new());
    assert!(answered_on(&m, "eth0"));
}

#[test]
fn without_a_successor_the_release_ends_after_the_grace() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], false));
    m.set_desired(t.at(1000), &BTreeMap::new());
    assert_eq!(m.next_deadline(), Some(t.at(4000)));
    assert_eq!(m.tick(t.at(3999)), nothing());
    assert_eq!(
        m.tick(t.at(4000)).events,
        vec![Event::Released {
            ip: vip(),
            successor: None
        }]
    );
    assert!(m.views().answering.is_empty());
}

#[test]
fn each_interface_is_released_when_the_successor_announces_there() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0", "eth1"], false));
    m.set_desired(t.at(1000), &BTreeMap::new());
    let out = m.claim(t.at(1100), &claim("eth0", PEER, ClaimKind::Advertisement));
    assert!(out.events.is_empty());
    assert!(!answered_on(&m, "eth0") && answered_on(&m, "eth1"));
    let out = m.claim(t.at(1200), &claim("eth1", FOREIGN, ClaimKind::ArpReply));
    assert_eq!(
        out.events,
        vec![Event::Released {
            ip: vip(),
            successor: Some(PEER)
        }]
    );
}

#[test]
fn an_address_back_while_releasing_is_announced_anew() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], true));
    m.tick(t.at(50));
    m.tick(t.at(250));
    m.set_desired(t.at(1000), &BTreeMap::new());
    // Back, even asking for a probe: it was answered all along, so it is announced at once.
    let out = m.set_desired(t.at(1500), &desired(&["eth0"], true));
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth0"]));
    assert_eq!(out.events, vec![announced(&["eth0"])]);
    assert_eq!(m.next_deadline(), Some(t.at(1750)));
}

#[test]
fn a_probing_address_leaves_at_once_and_empty_interfaces_mean_absent() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], true));
    assert_eq!(m.set_desired(t.at(10), &BTreeMap::new()), nothing());
    assert!(m.views().watched_on.is_empty() && m.next_deadline().is_none());

    assert_eq!(m.set_desired(t.at(20), &desired(&[], false)), nothing());
    m.set_desired(t.at(30), &desired(&["eth0"], false));
    m.set_desired(t.at(40), &desired(&[], false));
    assert!(
        answered_on(&m, "eth0"),
        "released like any other leaving address"
    );
}

#[test]
fn moving_an_announced_address_restarts_its_burst_on_the_new_interfaces() {
    let (mut m, t) = machine();
    m.set_desired(t.at(0), &desired(&["eth0"], false));
    let out = m.set_desired(t.at(500), &desired(&["eth1"], false));
    assert_eq!(out.sends, sends(Packet::Gratuitous, &["eth1"]));
    assert_eq!(out.events, vec![announced(&["eth1"])]);
    assert!(!answered_on(&m, "eth0") && answered_on(&m, "eth1"));
}

#[test]
fn a_late_tick_sends_overdue_steps_once_and_refresh_follows_the_burst() {
    let mut m = Machine::new(Config {
        refresh: Some(ms(10_000)),
        ..Config::default()
    });
    let t = Clock(Instant::now());
    m.set_desired(t.at(0), &desired(&["eth0"], false));
    // 250 ms and 1.1 s both overdue at 1.5 s: one send.
    assert_eq!(
        m.tick(t.at(1500)).sends,
        sends(Packet::Gratuitous, &["eth0"])
    );
    assert_eq!(m.next_deadline(), Some(t.at(2200)));
    m.tick(t.at(2200));
    m.tick(t.at(4400));
    assert_eq!(m.next_deadline(), Some(t.at(14_400)));
    assert_eq!(
        m.tick(t.at(14_400)).sends,
        sends(Packet::Gratuitous, &["eth0"])
    );
    assert_eq!(m.next_deadline(), Some(t.at(24_400)));
}

#[test]
fn an_update_moves_only_the_addresses_it_names() {
    let (mut m, t) = machine();
    let other: IpAddr = "192.0.2.11".parse().unwrap();
    let want = |interface: &str| Desired {
        interfaces: vec![interface.to_string()],
        probe: false,
        fence: false,
    };
    m.update(
        t.at(0),
        [(vip(), Some(&want("eth0"))), (other, Some(&want("eth0")))],
    );
    m.tick(t.at(5_000));
    assert!(answered_on(&m, "eth0"));
    // Only `other` goes; `vip` is not named, so it is kept as it is (no new burst).
    let out = m.update(t.at(5_001), [(other, None)]);
    assert!(out.sends.is_empty(), "{out:?}");
    assert_eq!(
        m.views().answering,
        [vip(), other].into(),
        "other is being released"
    );
    m.tick(t.at(10_000));
    assert_eq!(m.views().answering, [vip()].into());
    // With no interface an address is as good as absent.
    m.update(t.at(10_001), [(vip(), Some(&EMPTY))]);
    m.tick(t.at(20_000));
    assert!(m.views().answering.is_empty());
}

static EMPTY: Desired = Desired {
    interfaces: Vec::new(),
    probe: false,
    fence: false,
};

#[derive(Debug, Clone)]
enum Step {
    Want {
        ip: u8,
        interfaces: u8,
        probe: bool,
        fence: bool,
    },
    Unwant {
        ip: u8,
    },
    Claim {
        ip: u8,
        interface: u8,
        who: u8,
        kind: u8,
    },
    Peers {
        with_foreign: bool,
    },
    Tick,
}

fn step() -> impl proptest::strategy::Strategy<Value = (Step, u64)> {
    use proptest::prelude::*;
    let step = prop_oneof![
        (0..4u8, 0..4u8, any::<bool>(), any::<bool>()).prop_map(
            |(ip, interfaces, probe, fence)| {
                Step::Want {
                    ip,
                    interfaces,
                    probe,
                    fence,
                }
            }
        ),
        (0..4u8).prop_map(|ip| Step::Unwant { ip }),
        (0..4u8, 0..2u8, 0..3u8, 0..4u8).prop_map(|(ip, interface, who, kind)| Step::Claim {
            ip,
            interface,
            who,
            kind
        }),
        any::<bool>().prop_map(|with_foreign| Step::Peers { with_foreign }),
        Just(Step::Tick),
    ];
    (step, 0..3_000u64)
}

proptest::proptest! {
    /// The shell skips working the views out when the machine says they did not change: that
    /// must never hide a change, whatever the inputs and their timing.
    #[test]
    fn the_views_never_change_unannounced(steps in proptest::collection::vec(step(), 1..60)) {
        let (mut m, t) = machine();
        let mut now = 0;
        let mut seen = m.views();
        m.take_views_changed();
        let ip = |n: u8| IpAddr::from([192, 0, 2, 20 + n]);
        let interface = |n: u8| ["eth0", "eth1"][usize::from(n % 2)].to_string();
        for (step, wait) in steps {
            now += wait;
            let at = t.at(now);
            match step {
                Step::Want { ip: n, interfaces, probe, fence } => {
                    let want = Desired {
                        interfaces: (0..2).filter(|i| interfaces & (1 << i) != 0).map(interface).collect(),
                        probe,
                        fence,
                    };
                    m.update(at, [(ip(n), Some(&want))]);
                }
                Step::Unwant { ip: n } => {
                    m.update(at, [(ip(n), None)]);
                }
                Step::Claim { ip: n, interface: i, who, kind } => {
                    let claim = Claim {
                        interface: interface(i),
                        ip: ip(n),
                        mac: [OURS, PEER, FOREIGN][usize::from(who)],
                        kind: [ClaimKind::ArpRequest, ClaimKind::ArpReply, ClaimKind::Gratuitous, ClaimKind::Advertisement][usize::from(kind)],
                    };
                    m.claim(at, &claim);
                }
                Step::Peers { with_foreign } => {
                    let peers = if with_foreign { [PEER, FOREIGN].into() } else { [PEER].into() };
                    m.set_peer_macs(at, peers);
                }
                Step::Tick => {
                    m.tick(at);
                }
            }
            let now_views = m.views();
            if !m.take_views_changed() {
                proptest::prop_assert_eq!(&now_views, &seen);
            }
            seen = now_views;
        }
    }
}
