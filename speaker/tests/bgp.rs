//! BGP mode's sessions against a real router: FRR's bgpd in one namespace, the speaker's
//! session task in another, a veth between them on documentation prefixes. What the router
//! received is read from the router itself (`vtysh ... json`). Runs with FERROLB_LAB=1 as root.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use lab::netns::{NetNs, Scratch};
use lab::router::{Bird, Frr, GoBgp, RoutePath};
use model::bgp::Community;
use speaker::bgp::{Peer, Status};
use speaker_core::bfd::{Config as BfdConfig, State as BfdState};
use speaker_core::bgp::rib::Routes;
use speaker_core::bgp::{Families, PeerConfig, State};
use speaker_core::decide::bgp::Attributes;
use tokio::sync::watch;

const ROUTER_V4: &str = "192.0.2.1";
const NODE_V4: &str = "192.0.2.11";
const ROUTER_V6: &str = "2001:db8::1";
const NODE_V6: &str = "2001:db8::11";

/// A node namespace and a router namespace joined by a veth.
struct Link {
    node: Scratch,
    router: Scratch,
}

/// A veth pair: `inner` in `ns`, `outer` in `other`.
fn veth(ns: &NetNs, inner: &str, other: &NetNs, outer: &str) {
    ns.ip(&[
        "link",
        "add",
        inner,
        "type",
        "veth",
        "peer",
        "name",
        outer,
        "netns",
        other.name(),
    ])
    .unwrap();
}

fn link(tag: &str) -> Link {
    let node = Scratch::new(&format!("{tag}n")).unwrap();
    let router = Scratch::new(&format!("{tag}r")).unwrap();
    veth(&node, "n0", &router, "r0");
    for (ns, dev, v4, v6) in [
        (&node, "n0", NODE_V4, NODE_V6),
        (&router, "r0", ROUTER_V4, ROUTER_V6),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])
            .unwrap();
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])
            .unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
        ns.ip(&["link", "set", "lo", "up"]).unwrap();
    }
    Link { node, router }
}

/// bgpd as AS `router_asn` with the node as a neighbour in AS `node_asn`, `extra` lines in
/// the neighbour's and the address family's configuration.
fn frr_config(router_asn: u32, node: &str, node_asn: u32, neighbor_extra: &str) -> String {
    let afi = if node.contains(':') { "ipv6" } else { "ipv4" };
    format!(
        "frr defaults datacenter\n\
         log stdout debugging\n\
         router bgp {router_asn}\n \
         bgp router-id 192.0.2.1\n \
         no bgp ebgp-requires-policy\n \
         neighbor {node} remote-as {node_asn}\n \
         {neighbor_extra}\n \
         address-family {afi} unicast\n  \
         neighbor {node} activate\n \
         exit-address-family\n!\n"
    )
}

/// The session task, run in the node's namespace on its own thread and runtime.
struct Session {
    routes: watch::Sender<Routes>,
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    fn start(ns: &NetNs, peer: Peer, routes: Routes) -> Session {
        Session::start_with_bfd(ns, peer, routes, None)
    }

    /// With a BFD session to the peer (the speaker's BFD task, in the same namespace).
    fn start_with_bfd(ns: &NetNs, peer: Peer, routes: Routes, bfd: Option<BfdConfig>) -> Session {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (status_tx, status_rx) = watch::channel(Status::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let ns = ns.clone();
        let thread = std::thread::spawn(move || {
            ns.enter_for_thread().unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let bfd_state = match bfd {
                        Some(config) => {
                            let hub = speaker::bfd::Bfd::start().await.unwrap();
                            let state = hub.add(peer.address.ip(), None, config);
                            // The hub lives as long as the session.
                            std::mem::forget(hub);
                            Some(state)
                        }
                        None => None,
                    };
                    speaker::bgp::run(peer, routes_rx, status_tx, stop_rx, bfd_state).await
                });
        });
        Session {
            routes: routes_tx,
            status: status_rx,
            stop: stop_tx,
            thread: Some(thread),
        }
    }

    fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Stops it and waits for the task to end.
    fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.thread.is_some() && !std::thread::panicking() {
            self.stop();
        }
    }
}

fn peer(router: &str, local_asn: u32, peer_asn: u32, password: Option<&str>) -> Peer {
    Peer {
        name: "tor".into(),
        address: SocketAddr::new(router.parse().unwrap(), 179),
        source: None,
        password: password.map(|p| p.as_bytes().to_vec()),
        // What bgp_mode sets: 1 for eBGP on the link, 255 for iBGP.
        ttl: if local_asn == peer_asn { 255 } else { 1 },
        config: PeerConfig {
            local_asn,
            peer_asn,
            router_id: Ipv4Addr::new(192, 0, 2, 11),
            hold_time: Duration::from_secs(9),
            keepalive_time: None,
            connect_retry: Duration::from_secs(1),
            families: Families::default(),
        },
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Polls `check` every 100 ms until it returns `Some`, or fails with `what` and `context()`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = check() {
            return t;
        }
        if Instant::now() > deadline {
            panic!("{what} not within {timeout:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn context(frr: &Frr, session: &Session) -> String {
    format!(
        "session: {:?}\nbgpd's log:\n{}",
        session.status(),
        frr.log_tail(20)
    )
}

/// The one path bgpd holds for `prefix`, once it holds one.
fn path_of(frr: &Frr, session: &Session, prefix: &str) -> serde_json::Value {
    wait_for(
        &format!("a path for {prefix} at the router"),
        Duration::from_secs(20),
        || frr.paths(prefix).ok().and_then(|p| p.into_iter().next()),
        || context(frr, session),
    )
}

fn next_hops(path: &serde_json::Value) -> Vec<String> {
    path["nexthops"]
        .as_array()
        .map(|hops| {
            hops.iter()
                .filter_map(|h| h["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Counts, in the router's kernel, the BGP segments arriving with `field` (`ip ttl`, `ip6
/// hoplimit`) equal to `value` and with any other value; the closure says whether each count
/// is above zero.
fn ttl_counters(router: &NetNs, field: &str, value: u8) -> impl Fn() -> (bool, bool) {
    let nft = |args: &str| {
        router
            .exec("nft", &args.split(' ').collect::<Vec<_>>())
            .unwrap()
    };
    nft("add table inet ttl");
    nft("add chain inet ttl input { type filter hook input priority 0 ; }");
    nft(&format!(
        "add rule inet ttl input tcp dport 179 {field} {value} counter"
    ));
    nft(&format!(
        "add rule inet ttl input tcp dport 179 {field} != {value} counter"
    ));
    let router = router.clone();
    move || {
        let rules = router
            .exec("nft", &["list", "chain", "inet", "ttl", "input"])
            .unwrap();
        let counted: Vec<bool> = rules
            .lines()
            .filter(|l| l.contains("counter packets"))
            .map(|l| !l.contains("counter packets 0 "))
            .collect();
        assert_eq!(counted.len(), 2, "{rules}");
        (counted[0], counted[1])
    }
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn ebgp_over_ipv4_routes_arrive_with_their_attributes_and_are_withdrawn() {
    lab::require_lab!();
    let link = link("bgp4");
    let frr = Frr::start(&link.router, &frr_config(64512, NODE_V4, 64513, "")).unwrap();
    let attributes = Attributes {
        local_pref: Some(300),
        communities: [
            Community::parse("64513:7").unwrap(),
            Community::parse("large:64513:1:2").unwrap(),
        ]
        .into(),
    };
    let routes: Routes = [
        (net("203.0.113.10/32"), attributes.clone()),
        (net("198.51.100.0/24"), Attributes::default()),
        // Another family: not on this IPv4 session.
        (net("2001:db8:ff::10/128"), Attributes::default()),
    ]
    .into();
    let counting = ttl_counters(&link.router, "ip ttl", 1);
    let mut session = Session::start(&link.node, peer(ROUTER_V4, 64513, 64512, None), routes);

    let path = path_of(&frr, &session, "203.0.113.10/32");
    // eBGP to a neighbour on the link: TTL 1, so it cannot come up through another router.
    assert_eq!(
        counting(),
        (true, false),
        "BGP segments from the node with TTL 1, other"
    );
    let shown = path.to_string();
    assert_eq!(next_hops(&path), [NODE_V4], "{shown}");
    assert_eq!(path["aspath"]["string"], "64513", "{shown}");
    assert_eq!(path["community"]["string"], "64513:7", "{shown}");
    assert_eq!(path["largeCommunity"]["string"], "64513:1:2", "{shown}");
    // LOCAL_PREF (300 above) is not sent over eBGP (RFC 4271 §5.1.5): checked on the wire by
    // `bgp::wire`'s unit tests, not here, because a router ignores it from an eBGP peer anyway.
    path_of(&frr, &session, "198.51.100.0/24");
    assert_eq!(session.status().state, State::Established);
    assert_eq!(session.status().advertised, 2, "{:?}", session.status());

    // One prefix withdrawn, one kept.
    session
        .routes
        .send_modify(|r| drop(r.remove(&net("203.0.113.10/32"))));
    wait_for(
        "the withdrawal at the router",
        Duration::from_secs(20),
        || frr.paths("203.0.113.10/32").ok().filter(|p| p.is_empty()),
        || context(&frr, &session),
    );
    assert_eq!(frr.paths("198.51.100.0/24").unwrap().len(), 1);

    // A stop closes the session with a Cease; the router drops what it received.
    session.stop();
    assert_eq!(session.status().state, State::Idle);
    wait_for(
        "the router dropping the node's routes",
        Duration::from_secs(20),
        || frr.paths("198.51.100.0/24").ok().filter(|p| p.is_empty()),
        || frr.log_tail(20),
    );
    let neighbor = frr.json(&format!("show bgp neighbors {NODE_V4}")).unwrap();
    // Cease (6), Administrative Shutdown (2): RFC 4486.
    assert_eq!(
        neighbor[NODE_V4]["lastErrorCodeSubcode"], "0602",
        "{}",
        neighbor[NODE_V4]
    );
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn ibgp_over_ipv6_carries_local_pref_and_the_ipv6_next_hop() {
    lab::require_lab!();
    let link = link("bgp6");
    let frr = Frr::start(&link.router, &frr_config(64512, NODE_V6, 64512, "")).unwrap();
    let routes: Routes = [
        (
            net("2001:db8:ff::10/128"),
            Attributes {
                local_pref: Some(150),
                communities: [Community::parse("no-export").unwrap()].into(),
            },
        ),
        (net("203.0.113.10/32"), Attributes::default()),
    ]
    .into();
    let counting = ttl_counters(&link.router, "ip6 hoplimit", 255);
    let session = Session::start(&link.node, peer(ROUTER_V6, 64512, 64512, None), routes);
    let path = path_of(&frr, &session, "2001:db8:ff::10/128");
    assert_eq!(
        counting(),
        (true, false),
        "BGP segments with hop limit 255, other"
    );
    let shown = path.to_string();
    assert!(next_hops(&path).contains(&NODE_V6.to_string()), "{shown}");
    assert_eq!(path["locPrf"], 150, "{shown}");
    assert_eq!(path["community"]["string"], "no-export", "{shown}");
    // iBGP: an empty AS path.
    assert_eq!(path["aspath"]["length"], 0, "{shown}");
    assert!(frr.paths("203.0.113.10/32").unwrap_or_default().is_empty());
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn an_md5_password_signs_the_session_and_a_wrong_one_gets_none() {
    lab::require_lab!();
    let link = link("bgpm");
    let frr = Frr::start(
        &link.router,
        &frr_config(
            64512,
            NODE_V4,
            64513,
            &format!("neighbor {NODE_V4} password s3cret"),
        ),
    )
    .unwrap();
    let routes: Routes = [(net("203.0.113.20/32"), Attributes::default())].into();

    let mut wrong = Session::start(
        &link.node,
        peer(ROUTER_V4, 64513, 64512, Some("guess")),
        routes.clone(),
    );
    // The router's kernel drops segments with a wrong signature: no connection, ever.
    std::thread::sleep(Duration::from_secs(5));
    let status = wrong.status();
    assert_eq!(status.established, 0, "{status:?}");
    assert_ne!(frr.neighbor_state(NODE_V4).unwrap(), "Established");
    wrong.stop();

    let right = Session::start(
        &link.node,
        peer(ROUTER_V4, 64513, 64512, Some("s3cret")),
        routes,
    );
    path_of(&frr, &right, "203.0.113.20/32");
    assert_eq!(frr.neighbor_state(NODE_V4).unwrap(), "Established");
    // And without a password the router refuses the same way.
    drop(right);
    let unsigned = Session::start(
        &link.node,
        peer(ROUTER_V4, 64513, 64512, None),
        Routes::new(),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(unsigned.status().established, 0, "{:?}", unsigned.status());
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn a_bfd_down_takes_the_session_down_before_the_hold_time_and_it_comes_back() {
    lab::require_lab!();
    let link = link("bgpb");
    let frr = Frr::start_router(
        &link.router,
        &frr_config(
            64512,
            NODE_V4,
            64513,
            &format!("neighbor {NODE_V4} bfd\n neighbor {NODE_V4} timers 30 90"),
        ),
    )
    .unwrap();
    let routes: Routes = [(net("203.0.113.30/32"), Attributes::default())].into();
    let mut config = peer(ROUTER_V4, 64513, 64512, None);
    // A hold time only BFD can beat (the router's side says 90 s too: the smaller counts).
    config.config.hold_time = Duration::from_secs(90);
    let session = Session::start_with_bfd(&link.node, config, routes, Some(BfdConfig::default()));
    path_of(&frr, &session, "203.0.113.30/32");
    wait_for(
        "BFD Up at both ends",
        Duration::from_secs(20),
        || {
            let router_up = frr
                .json("show bfd peers")
                .ok()?
                .as_array()?
                .iter()
                .any(|p| p["peer"] == NODE_V4 && p["status"] == "up");
            (router_up && session.status().bfd == Some(BfdState::Up)).then_some(())
        },
        || context(&frr, &session),
    );

    // The path dies for the node: nothing from the router arrives any more.
    let nft = |rule: &str| {
        link.node
            .exec("nft", &rule.split(' ').collect::<Vec<_>>())
            .unwrap()
    };
    // Each trial cuts the path, times the session's fall, and heals it.
    let trials: usize = std::env::var("FERROLB_BFD_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut figures = lab::figures::Figures::default();
    for trial in 1..=trials {
        nft("add table inet cut");
        nft("add chain inet cut input { type filter hook input priority 0 ; }");
        nft(&format!(
            "add rule inet cut input ip saddr {ROUTER_V4} drop"
        ));
        let cut = Instant::now();
        // Polled every millisecond (at most 30 s), for the figure's resolution.
        while session.status().state == State::Established
            && cut.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        figures.gaps_ms.push(cut.elapsed().as_secs_f64() * 1000.0);
        let down = session.status();
        assert_eq!(
            down.last_down.as_deref(),
            Some("BFD declared the path to the router down"),
            "trial {trial}: {down:?}"
        );

        // The path heals: BFD comes Up again, the session re-establishes, the route is back.
        nft("delete table inet cut");
        wait_for(
            "the session established again",
            Duration::from_secs(30),
            || (session.status().established > trial as u64).then_some(()),
            || context(&frr, &session),
        );
        path_of(&frr, &session, "203.0.113.30/32");
    }
    lab::figures::report(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &figures
            .summary("BFD 300 ms x 3 against FRR's bfdd, path cut at the node -> BGP session down"),
    );
}

/// One session of the interop matrix, the router in AS 64512.
struct Case {
    router: &'static str,
    node: &'static str,
    node_asn: u32,
    password: Option<&'static str>,
    prefix: &'static str,
}

/// eBGP over IPv4, signed with TCP MD5.
const EBGP_V4_MD5: Case = Case {
    router: ROUTER_V4,
    node: NODE_V4,
    node_asn: 64513,
    password: Some("s3cret"),
    prefix: "203.0.113.40/32",
};

/// iBGP over IPv6 (MP-BGP), no password.
const IBGP_V6: Case = Case {
    router: ROUTER_V6,
    node: NODE_V6,
    node_asn: 64512,
    password: None,
    prefix: "2001:db8:ff::40/128",
};

impl Case {
    fn ibgp(&self) -> bool {
        self.node_asn == 64512
    }
}

/// A route with LOCAL_PREF and standard and large communities arrives at another router
/// implementation with the node as next hop, the node's AS as the path (none over iBGP) and
/// the LOCAL_PREF over iBGP only, and is withdrawn; the router sees the session close.
fn interop(
    link: &Link,
    case: &Case,
    paths: impl Fn(&str) -> anyhow::Result<Vec<RoutePath>>,
    established: impl Fn() -> anyhow::Result<bool>,
    log: impl Fn() -> String,
) {
    let routes: Routes = [(
        net(case.prefix),
        Attributes {
            local_pref: Some(150),
            communities: [
                Community::parse("64513:7").unwrap(),
                Community::parse("large:64513:1:2").unwrap(),
            ]
            .into(),
        },
    )]
    .into();
    let mut session = Session::start(
        &link.node,
        peer(case.router, case.node_asn, 64512, case.password),
        routes,
    );
    let describe = |session: &Session| format!("session: {:?}\n{}", session.status(), log());
    let path = wait_for(
        "the route at the router",
        Duration::from_secs(30),
        || paths(case.prefix).ok()?.into_iter().next(),
        || describe(&session),
    );
    let (as_path, local_pref) = if case.ibgp() {
        (vec![], Some(150))
    } else {
        // An eBGP route's LOCAL_PREF is the router's own default, if it shows one.
        (vec![case.node_asn], path.local_pref.filter(|p| *p != 150))
    };
    assert_eq!(
        path,
        RoutePath {
            next_hop: case.node.into(),
            as_path,
            communities: vec!["64513:7".into()],
            large_communities: vec!["64513:1:2".into()],
            local_pref,
        },
        "{}",
        describe(&session)
    );
    assert!(established().unwrap(), "{}", describe(&session));
    session.routes.send_modify(|r| r.clear());
    wait_for(
        "the withdrawal at the router",
        Duration::from_secs(30),
        || paths(case.prefix).ok().filter(|p| p.is_empty()),
        || describe(&session),
    );
    session.stop();
    wait_for(
        "the router seeing the session close",
        Duration::from_secs(30),
        || (!established().ok()?).then_some(()),
        &log,
    );
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn bird2_takes_and_drops_the_routes() {
    lab::require_lab!();
    let link = link("bgpi");
    let bird = Bird::start(
        &link.router,
        &format!(
            "router id {ROUTER_V4};\n\
             protocol device {{ }}\n\
             protocol bgp ebgp4 {{\n  \
             local {ROUTER_V4} as 64512;\n  \
             neighbor {NODE_V4} as {};\n  \
             password \"{}\";\n  \
             passive on;\n  \
             ipv4 {{ import all; export none; }};\n}}\n\
             protocol bgp ibgp6 {{\n  \
             local {ROUTER_V6} as 64512;\n  \
             neighbor {NODE_V6} as 64512;\n  \
             passive on;\n  \
             direct;\n  \
             ipv6 {{ import all; export none; }};\n}}\n",
            EBGP_V4_MD5.node_asn,
            EBGP_V4_MD5.password.unwrap(),
        ),
    )
    .unwrap();
    for (case, protocol) in [(&EBGP_V4_MD5, "ebgp4"), (&IBGP_V6, "ibgp6")] {
        interop(
            &link,
            case,
            |p| bird.paths(p),
            || bird.established(protocol),
            || bird.log_tail(20),
        );
    }
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn gobgp_takes_and_drops_the_routes() {
    lab::require_lab!();
    let link = link("bgpg");
    let gobgp = GoBgp::start(
        &link.router,
        &format!(
            "[global.config]\n  as = 64512\n  router-id = \"{ROUTER_V4}\"\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{NODE_V4}\"\n    peer-as = {}\n    auth-password = \"{}\"\n  \
             [neighbors.transport.config]\n    passive-mode = true\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{NODE_V6}\"\n    peer-as = 64512\n  \
             [neighbors.transport.config]\n    passive-mode = true\n",
            EBGP_V4_MD5.node_asn,
            EBGP_V4_MD5.password.unwrap(),
        ),
    )
    .unwrap();
    for case in [&EBGP_V4_MD5, &IBGP_V6] {
        interop(
            &link,
            case,
            |p| gobgp.paths(p),
            || gobgp.established(case.node),
            || gobgp.log_tail(20),
        );
    }
}

/// BFD takes only packets sent with TTL 255 (RFC 5881 §5): a peer's packets with TTL 254
/// (one router farther, or a forger off the link) leave the session Down; the same packets
/// with 255 move it on (to Init: the peer says Down, so it is heard).
#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn bfd_takes_only_packets_sent_with_ttl_255() {
    lab::require_lab!();
    only_ttl_255_is_taken("bfdt", ROUTER_V4, NODE_V4);
}

/// The same for IPv6, where the hop limit is read from another control message.
#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn bfd_over_ipv6_takes_only_packets_sent_with_hop_limit_255() {
    lab::require_lab!();
    only_ttl_255_is_taken("bfd6", ROUTER_V6, NODE_V6);
}

/// A BFD session at the node for `router`, whose packets come from the router's namespace
/// first with TTL (hop limit) 254, then 255.
fn only_ttl_255_is_taken(tag: &str, router: &'static str, node: &'static str) {
    let link = link(tag);
    let (state_tx, state_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let node_ns = link.node.clone();
    let hub = std::thread::spawn(move || {
        node_ns.enter_for_thread().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let bfd = speaker::bfd::Bfd::start().await.unwrap();
                let state = bfd.add(router.parse().unwrap(), None, BfdConfig::default());
                state_tx.send(state).unwrap();
                let _ = stop_rx.await;
            });
    });
    let state = state_rx.recv().unwrap();

    let router_ns = link.router.clone();
    let send_for = move |ttl: u32, duration: Duration| {
        let router_ns = router_ns.clone();
        std::thread::spawn(move || {
            router_ns.enter_for_thread().unwrap();
            let from: SocketAddr = SocketAddr::new(router.parse().unwrap(), 49200);
            let to: SocketAddr = SocketAddr::new(node.parse().unwrap(), 3784);
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(from),
                socket2::Type::DGRAM,
                None,
            )
            .unwrap();
            socket.bind(&from.into()).unwrap();
            if from.is_ipv6() {
                socket.set_unicast_hops_v6(ttl).unwrap();
            } else {
                socket.set_ttl_v4(ttl).unwrap();
            }
            let peer = speaker_core::bfd::Session::new(BfdConfig::default(), 7, Instant::now());
            let packet = peer.packet(false).encode();
            let end = Instant::now() + duration;
            // Bounded: one packet every 100 ms for `duration`.
            while Instant::now() < end {
                socket.send_to(&packet, &to.into()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .join()
        .unwrap();
    };

    send_for(254, Duration::from_millis(1500));
    assert_eq!(
        *state.borrow(),
        BfdState::Down,
        "a packet with TTL 254 was taken ({router})"
    );
    send_for(255, Duration::from_millis(500));
    assert_eq!(
        *state.borrow(),
        BfdState::Init,
        "a packet with TTL 255 was not taken ({router})"
    );
    let _ = stop_tx.send(());
    hub.join().unwrap();
}

/// Two nodes advertise one address; the router (FRR with zebra, `maximum-paths`, L4 hashing)
/// installs both as next hops in its kernel, and connections from a client behind the router
/// are served by both nodes. (Each node serves the address itself here, as kube-proxy's rules
/// would deliver it on a real node.)
#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn the_router_spreads_connections_over_every_advertising_node() {
    lab::require_lab!();
    const SERVICE: &str = "203.0.113.50";
    const CLIENT: &str = "198.51.100.2";
    let router = Scratch::new("ecmpr").unwrap();
    let client = Scratch::new("ecmpc").unwrap();
    let nodes = [
        Scratch::new("ecmp1").unwrap(),
        Scratch::new("ecmp2").unwrap(),
    ];
    router
        .ip(&["link", "add", "br0", "type", "bridge"])
        .unwrap();
    router
        .ip(&["addr", "add", &format!("{ROUTER_V4}/24"), "dev", "br0"])
        .unwrap();
    router.ip(&["link", "set", "br0", "up"]).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let outer = format!("r{}", i + 1);
        veth(node, "n0", &router, &outer);
        router
            .ip(&["link", "set", &outer, "master", "br0"])
            .unwrap();
        router.ip(&["link", "set", &outer, "up"]).unwrap();
        node.ip(&[
            "addr",
            "add",
            &format!("192.0.2.{}/24", 11 + i),
            "dev",
            "n0",
        ])
        .unwrap();
        node.ip(&["link", "set", "n0", "up"]).unwrap();
        node.ip(&["link", "set", "lo", "up"]).unwrap();
        node.ip(&["addr", "add", &format!("{SERVICE}/32"), "dev", "lo"])
            .unwrap();
        node.ip(&["route", "add", "198.51.100.0/24", "via", ROUTER_V4])
            .unwrap();
    }
    veth(&client, "c0", &router, "rc");
    router
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "rc"])
        .unwrap();
    router.ip(&["link", "set", "rc", "up"]).unwrap();
    client
        .ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "c0"])
        .unwrap();
    client.ip(&["link", "set", "c0", "up"]).unwrap();
    client
        .ip(&["route", "add", "default", "via", "198.51.100.1"])
        .unwrap();
    router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    // Hash on ports too, so that one client's connections spread.
    router
        .sysctl("net.ipv4.fib_multipath_hash_policy", "1")
        .unwrap();

    let frr = Frr::start_router(
        &router,
        "frr defaults datacenter\n\
         router bgp 64512\n \
         bgp router-id 192.0.2.1\n \
         no bgp ebgp-requires-policy\n \
         neighbor 192.0.2.11 remote-as 64513\n \
         neighbor 192.0.2.12 remote-as 64513\n \
         address-family ipv4 unicast\n  \
         maximum-paths 4\n \
         exit-address-family\n!\n",
    )
    .unwrap();
    let routes: Routes = [(net(&format!("{SERVICE}/32")), Attributes::default())].into();
    let _sessions: Vec<Session> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut peer = peer(ROUTER_V4, 64513, 64512, None);
            peer.config.router_id = Ipv4Addr::new(192, 0, 2, 11 + i as u8);
            Session::start(node, peer, routes.clone())
        })
        .collect();
    let installed = wait_for(
        "two next hops for the address in the router's kernel",
        Duration::from_secs(30),
        || {
            let route = router.ip(&["route", "show", SERVICE]).ok()?;
            (route.contains("192.0.2.11") && route.contains("192.0.2.12")).then_some(route)
        },
        || frr.log_tail(20),
    );
    println!("the router's route: {installed}");

    // Each node answers with its own name, until the client is done (20 s at most).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let servers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let node = NetNs::clone(node);
            let done = done.clone();
            std::thread::spawn(move || {
                node.enter_for_thread().unwrap();
                let listener = std::net::TcpListener::bind(format!("{SERVICE}:8080")).unwrap();
                listener.set_nonblocking(true).unwrap();
                let end = Instant::now() + Duration::from_secs(20);
                while Instant::now() < end && !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            use std::io::Write;
                            let _ = stream.write_all(format!("node-{}", i + 1).as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let client_ns = NetNs::clone(&client);
    let served: BTreeMap<String, usize> = std::thread::spawn(move || {
        client_ns.enter_for_thread().unwrap();
        let mut served = BTreeMap::new();
        // Bounded: 40 connections, each with a 2 s timeout.
        for _ in 0..40 {
            use std::io::Read;
            let address: SocketAddr = format!("{SERVICE}:8080").parse().unwrap();
            let Ok(mut stream) =
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
            else {
                *served.entry("failed".to_string()).or_insert(0) += 1;
                continue;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut name = String::new();
            let _ = stream.read_to_string(&mut name);
            *served.entry(name).or_insert(0) += 1;
        }
        served
    })
    .join()
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("40 connections through the router: {served:?}");
    assert!(!served.contains_key("failed"), "{served:?}");
    assert!(
        served.get("node-1").is_some_and(|n| *n > 0)
            && served.get("node-2").is_some_and(|n| *n > 0),
        "every connection went to one node: {served:?}"
    );
    for server in servers {
        server.join().unwrap();
    }
}
