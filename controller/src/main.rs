//! ferrolb-controller: allocates external addresses from IPAddressPools to LoadBalancer
//! Services.
//!
//! This build parses its flags, sets up logging and connects to the API server; address
//! allocation is not implemented yet, so it says so and exits rather than look healthy.

use clap::Parser;

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
    let _client = common::connect().await?;
    anyhow::bail!("address allocation is not implemented in this build of ferrolb-controller")
}
