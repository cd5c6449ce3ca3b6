//! ferrolb-speaker: announces the external addresses its node owns with ARP and NDP.
//!
//! The binary wires flags, the API client, the gossip, the announcer and the metrics endpoint
//! to the speaker's loop in the library.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::health::Liveness;
use common::http::Readiness;
use prometheus_client::registry::Registry;
use speaker::announce::{self, Announcer};
use speaker::membership::{GossipKey, MemberId, Membership, MembershipConfig, Overrides, Timing};
use speaker::report::Reports;
use speaker::run::{self, Speaker};
use speaker::view::Stores;
use speaker_core::election::NodeName;

#[derive(Debug, Parser)]
#[command(name = "ferrolb-speaker", version, about)]
struct Args {
    /// The Node this speaker runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// Address of the /metrics and /healthz endpoints.
    #[arg(long, default_value = "[::]:9651")]
    metrics_addr: std::net::SocketAddr,

    /// UDP port of the speakers' gossip (the same on every node).
    #[arg(long, default_value_t = 9652)]
    gossip_port: u16,

    /// File holding the key that authenticates and encrypts gossip.
    #[arg(long, default_value = "/etc/ferrolb/gossip/key")]
    gossip_key_file: std::path::PathBuf,

    /// Also announce Services without spec.loadBalancerClass (Services of class ferrolb.io/l2
    /// always are); set it as the controller's.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    handle_unclassed: bool,

    /// Interfaces this speaker may ever announce on (comma-separated); empty: chosen per
    /// address.
    #[arg(long, value_delimiter = ',')]
    interfaces: Vec<String>,

    /// Re-send gratuitous ARP / unsolicited NA for owned addresses this often (seconds); 0: only
    /// the burst at takeover.
    #[arg(long, default_value_t = 0)]
    refresh_seconds: u64,

    /// How often each speaker probes another (ms); default 100.
    #[arg(long)]
    gossip_probe_period_ms: Option<u64>,

    /// How long a direct probe may take before peers are asked to relay it (ms); default 40.
    #[arg(long)]
    gossip_probe_timeout_ms: Option<u64>,

    /// How long a member that failed its probes stays suspect before it is declared down
    /// (ms); default 150, growing with log10 of the number of nodes above ten.
    #[arg(long)]
    gossip_suspicion_ms: Option<u64>,

    /// Local health: a speaker that finds itself slow (late timers, failed probes, suspicions
    /// it had to refute) probes less often and gives its suspects up to this many times longer
    /// before declaring them down, so a starved node does not fail over live ones; 1: off.
    #[arg(long)]
    gossip_local_health_max: Option<u32>,

    /// Watch the owners of the addresses this node would take over with ICMP echo requests,
    /// and take over as soon as one stops answering (~100 ms), ahead of the gossip's verdict.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fast_failover: bool,

    /// At most this many echo requests a second for the fast failover, in all. Past ten
    /// watched owners each is asked less often and judged later (at 1000 and 40 owners: every
    /// 40 ms, after 400 ms of silence).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    fast_failover_max_echo_rate: u32,

    /// ferrolb's namespace, where BGPPeers' password Secrets are.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferrolb-system")]
    namespace: String,

    /// On SIGTERM, how long BGP sessions stay open after the routes other nodes serve are
    /// withdrawn, so the routers move new connections before this node goes (ms).
    #[arg(long, default_value_t = 2000)]
    bgp_stop_wait_ms: u64,

    /// Tests only: on SIGUSR2, make the loop this file names panic or stall.
    #[arg(long, hide = true)]
    test_fault_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    log: common::LogArgs,
}

/// Two workers whatever the node's size: the speaker's tasks need no more.
const WORKERS: usize = 2;

/// One malloc arena for every thread (workers, the announcer, the blocking pool): a burst
/// freed by one thread is then reusable by all, instead of each arena keeping its own
/// leftovers resident. The threads' caches (tcache) keep small allocations off the arena's
/// lock.
const ARENAS: u16 = 1;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    common::memory::runtime(WORKERS, ARENAS)?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    args.log.init()?;
    common::health::abort_on_panic();
    common::memory::keep_trimmed();
    speaker::fault::install(args.test_fault_file.clone());
    tracing::debug!(?args, "starting");
    let key = GossipKey::from_file(&args.gossip_key_file)?;
    let client = common::connect().await?;

    let mut registry = Registry::default();
    let membership_metrics = speaker::membership::Metrics::register(&mut registry);
    let announcer_metrics = announce::Metrics::register(&mut registry);
    let metrics = run::Metrics::register(&mut registry);
    let reach_metrics = speaker::reach::Metrics::register(&mut registry);
    let bgp_metrics = speaker::bgp_mode::Metrics::register(&mut registry);
    let ready = Readiness::default();
    let live = Liveness::default();
    // Generous against the 100 ms beats: a busy machine is not a dead loop. The announcer has
    // a thread of its own, so its waits for a CPU are not counted against it.
    let membership_heartbeat = live.register("membership", Duration::from_secs(3));
    let announcer_heartbeat = live.register_thread("announcer", Duration::from_secs(3));
    let heartbeat = live.register("election", Duration::from_secs(10));
    // This speaker's whole election, one line per address, for an operator (and the lab) to
    // compare across speakers: the metrics carry only what this node owns.
    let election = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let page: common::http::Pages = vec![("/election", {
        let election = election.clone();
        Arc::new(move || run::render_election(&election.lock().expect("not poisoned")))
    })];
    let _http = common::http::serve(
        args.metrics_addr,
        Arc::new(registry),
        ready.clone(),
        live,
        page,
    )
    .await?;

    let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
    let (changes, bgp_wake) = speaker::bgp_mode::tee(changes);
    // Which Services are ferrolb's; the controller's `--handle-unclassed` must say the same.
    let classes = model::ClassPolicy {
        handle_unclassed: args.handle_unclassed,
    };
    let stores = Stores::start(&client, classes, changes_tx);
    stores.wait_ready().await;
    let gossip_addr = run::gossip_addr(&stores, &args.node_name, args.gossip_port)?;
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    let nodes = stores.gossip_seeds(args.gossip_port).len();
    let timing = Timing::for_members(
        nodes,
        Overrides {
            probe_period: ms(args.gossip_probe_period_ms),
            probe_rtt: ms(args.gossip_probe_timeout_ms),
            suspect_to_down_after: ms(args.gossip_suspicion_ms),
            max_health_multiplier: args.gossip_local_health_max,
        },
    );
    tracing::info!(nodes, probe_period = ?timing.probe_period, probe_timeout = ?timing.probe_rtt, suspicion = ?timing.suspect_to_down_after, local_health_max = timing.max_health_multiplier, "gossip timing");

    // Before the announcer and the loop, which both follow it.
    let links = announce::watch_links()?;
    // A restarted speaker is a new member (a newer generation), not the ghost of the old one.
    let me = MemberId::new(args.node_name.clone(), gossip_addr);
    let macs = announce::announce_macs(&links.borrow(), &args.interfaces)
        .into_iter()
        .map(|mac| mac.0)
        .collect();
    let (membership, members) = Membership::start(
        MembershipConfig {
            me,
            macs,
            bind: speaker::membership::bind_addr(gossip_addr),
            key,
            timing,
            heartbeat: membership_heartbeat.clone(),
        },
        membership_metrics,
    )
    .await?;
    let (announcer, announcer_events) = Announcer::start(
        announce::Config {
            refresh: (args.refresh_seconds > 0).then(|| Duration::from_secs(args.refresh_seconds)),
            ..announce::Config::default()
        },
        announcer_metrics,
        announcer_heartbeat.clone(),
        links.clone(),
    );
    let (watcher, unreachable) = speaker::reach::start(
        speaker_core::reach::Config {
            max_requests_per_second: args.fast_failover_max_echo_rate,
            ..Default::default()
        },
        reach_metrics,
    );
    let (bgp_advertised_tx, bgp_advertised) = tokio::sync::watch::channel(Default::default());
    let speaker = Speaker {
        me: NodeName::new(args.node_name.clone()),
        reports: Reports::start(
            client.clone(),
            stores.clone(),
            &args.node_name,
            metrics.events_dropped.clone(),
        ),
        stores,
        changes,
        membership,
        members,
        announcer,
        announcer_events,
        links,
        metrics,
        allowed_interfaces: args.interfaces,
        gossip_addr,
        gossip_port: args.gossip_port,
        heartbeat,
        membership_heartbeat,
        announcer_heartbeat,
        election,
        bgp_advertised,
        reach: args.fast_failover.then_some(watcher),
        unreachable,
    };
    // Ready once it knows the membership: a speaker that has not heard from its peers yet
    // announces nothing.
    tokio::spawn({
        let mut members = speaker.members.clone();
        async move {
            loop {
                ready.set(members.borrow_and_update().joined);
                if members.changed().await.is_err() {
                    return;
                }
            }
        }
    });
    let stop = common::Shutdown::listen().receiver();
    let bgp = tokio::spawn(speaker::bgp_mode::run(speaker::bgp_mode::Config {
        me: speaker.me.clone(),
        namespace: args.namespace,
        client,
        stores: speaker.stores.clone(),
        members: speaker.members.clone(),
        wake: bgp_wake,
        stop: stop.clone(),
        stop_wait: Duration::from_millis(args.bgp_stop_wait_ms),
        metrics: bgp_metrics,
        advertised: bgp_advertised_tx,
    }));
    // Layer 2 hands over and BGP withdraws at the same time; the process ends when both did.
    let mut l2_stop = stop;
    let (_, bgp) = tokio::join!(
        speaker.run(async move {
            let _ = l2_stop.wait_for(|stopped| *stopped).await;
        }),
        bgp
    );
    if let Err(e) = bgp {
        tracing::error!("BGP mode ended abnormally: {e}");
    }
    Ok(())
}
