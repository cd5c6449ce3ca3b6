//! ferrolb-controller: allocates external addresses from IPAddressPools to LoadBalancer
//! Services.
//!
//! The binary wires flags, the API client, the metrics endpoint and the leader Lease to the
//! controller in the library.

use std::sync::Arc;

use clap::Parser;
use common::http::Readiness;
use controller::metrics::Metrics;
use controller::reconcile::{self, Config};
use kube_lease_manager::LeaseManagerBuilder;
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

    /// How long a Lease is held without renewal before another replica may take it.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:9650")]
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
    tracing::debug!(?args, "starting");
    let client = common::connect().await?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Readiness::default();
    let _http = common::http::serve(args.metrics_addr, Arc::new(registry), ready.clone()).await?;

    let config = Config {
        handle_unclassed: args.handle_unclassed,
        identity: args.identity.clone(),
    };
    if !args.leader_elect {
        return Ok(reconcile::run(client, config, metrics, || ready.set(true)).await?);
    }

    // Only the leader writes. A standby is ready (it is healthy and waiting); a leader that
    // loses the Lease exits, so that it never writes from a stale view and restarts clean.
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("ferrolb-controller-{}", std::process::id()));
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration_seconds)
        .with_grace((args.lease_duration_seconds / 3).max(1))
        .with_field_manager(reconcile::MANAGER)
        .build()
        .await?;
    let (mut leader, _lease_task) = manager.watch().await;
    ready.set(true);
    tracing::info!(%identity, lease = %args.lease_name, "waiting to lead");
    while !*leader.borrow_and_update() {
        leader.changed().await?;
    }
    tracing::info!(%identity, "leading");
    metrics.is_leader.set(1);
    tokio::select! {
        result = reconcile::run(client, config, metrics, || {}) => Ok(result?),
        _ = async {
            while *leader.borrow_and_update() {
                if leader.changed().await.is_err() {
                    break;
                }
            }
        } => anyhow::bail!("lost the leader Lease; exiting so that a fresh start rebuilds the state"),
    }
}
