//! ferrolb-speaker: announces the external addresses its node owns with ARP and NDP.
//!
//! This build parses its flags, sets up logging and connects to the API server; announcing is
//! not implemented yet, so it says so and exits rather than look healthy.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "ferrolb-speaker", version, about)]
struct Args {
    /// The Node this speaker runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// Address of the /metrics and /healthz endpoints.
    #[arg(long, default_value = "0.0.0.0:9651")]
    metrics_addr: std::net::SocketAddr,

    /// UDP port of the speakers' gossip.
    #[arg(long, default_value_t = 9652)]
    gossip_port: u16,

    /// File holding the key that authenticates and encrypts gossip.
    #[arg(long, default_value = "/etc/ferrolb/gossip/key")]
    gossip_key_file: std::path::PathBuf,

    /// Interfaces this speaker may ever announce on (comma-separated); empty: chosen per
    /// address.
    #[arg(long, value_delimiter = ',')]
    interfaces: Vec<String>,

    #[command(flatten)]
    log: common::LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    tracing::debug!(?args, "starting");
    let _client = common::connect().await?;
    anyhow::bail!("announcing is not implemented in this build of ferrolb-speaker")
}
