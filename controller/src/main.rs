//! ferrolb-controller: allocates external addresses from IPAddressPools to LoadBalancer
//! Services.
//!
//! The binary wires flags, the API client, the metrics endpoint and the leader Lease to the
//! controller in the library.

use std::sync::Arc;

use clap::Parser;
use common::http::Readiness;
use controller::lease::{Elector, Fence, Timing};
use controller::metrics::Metrics;
use controller::run::{self, Config};
use prometheus_client::registry::Registry;

#[derive(Debug, Parser)]
#[command(name = "ferrolb-controller", version, about)]
struct Args {
    /// Run for the leadership Lease; only the leader writes. Without it, this replica writes
    /// unconditionally: run exactly one.
    #[arg(long)]
    leader_elect: bool,

    /// Name of the leadership Lease.
    #[arg(long, default_value = "ferrolb-controller")]
    lease_name: String,

    /// Namespace of the leadership Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferrolb-system")]
    lease_namespace: String,

    /// How long a Lease is held without renewal before another replica may take it (3 to
    /// 3600). The leader stops writing, and exits, after 2/3 of it without a renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "[::]:9650")]
    metrics_addr: std::net::SocketAddr,

    /// Also handle Services without spec.loadBalancerClass (Services of class ferrolb.io/l2
    /// are always handled).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    handle_unclassed: bool,

    #[command(flatten)]
    log: common::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    common::health::abort_on_panic();
    common::memory::keep_trimmed();
    tracing::debug!(?args, "starting");
    // From here on a SIGTERM is kept until the step that can act on it: one that came while
    // the leader was still starting (its stores not yet listed) was lost, and it ran on.
    let shutdown = common::Shutdown::listen();
    let client = common::connect().await?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Readiness::default();
    let _http = common::http::serve(
        args.metrics_addr,
        Arc::new(registry),
        ready.clone(),
        common::health::Liveness::default(),
        vec![],
    )
    .await?;

    let timing =
        Timing::from_duration_seconds(args.lease_duration_seconds).map_err(anyhow::Error::msg)?;
    let config = |fence| Config {
        handle_unclassed: args.handle_unclassed,
        identity: args.identity.clone(),
        fence,
    };
    if !args.leader_elect {
        return Ok(
            run::run(client, config(Fence::open()), metrics, shutdown, || {
                ready.set(true)
            })
            .await?,
        );
    }

    // Only the leader writes, and only until its renew deadline passes without a renewal;
    // then it exits, so that it never writes from a stale view and restarts clean. A standby
    // is ready (it is healthy and waiting).
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("ferrolb-controller-{}", std::process::id()));
    // The Lease has a client of its own (its own connections), so that its renewals never wait
    // behind the reconciles' requests.
    let mut elector = Elector::new(
        common::connect().await?,
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        timing,
    );
    ready.set(true);
    tracing::info!(%identity, lease = %args.lease_name, "waiting to lead");
    // A standby stops at once on SIGTERM: it holds nothing (it used to wait for the Lease
    // through the pod's whole grace period, and `kubectl drain` timed out on it).
    let fence = tokio::select! {
        fence = elector.acquire() => fence,
        () = shutdown.requested() => {
            tracing::info!(%identity, "stopped while waiting to lead");
            return Ok(());
        }
    };
    tracing::info!(%identity, "leading");
    metrics.is_leader.set(1);
    let stopped = tokio::select! {
        result = run::run(client, config(fence.clone()), metrics, shutdown, || {}) => result,
        () = elector.keep(&fence) => anyhow::bail!(
            "the Lease's renew deadline passed without a renewal: stopped writing; exiting so that a fresh start rebuilds the state"
        ),
    };
    // Stopped by a signal: write nothing more, and hand the Lease over at once.
    fence.close();
    elector.release().await;
    Ok(stopped?)
}
