//! `lab`: the ferrolb test bed from the command line.
//!
//!   lab up [--nodes N] [--kubelets]  start a lab and keep it until Ctrl-C
//!   lab down [--all|PREFIX] remove a lab (or every lab, also those of killed runs)
//!   lab status             list the labs on this machine
//!   lab demo               the README's demo
//!   lab bench-controller   Service creation to address, through the real API server

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod demo;

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    about = "The ferrolb test bed: real control plane, real kube-proxy, nodes in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a lab and keep it running until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Run a real kubelet and containerd in every node (they register the Nodes).
        #[arg(long)]
        kubelets: bool,
    },
    /// Remove a lab by prefix, or every lab with --all.
    Down {
        #[arg(long)]
        all: bool,
        prefix: Option<String>,
    },
    /// List the labs on this machine and their processes.
    Status,
    /// Start a 3-node lab and show a LoadBalancer Service working, then a node failing.
    Demo,
    /// Time from Service creation to its address in status, for many Services at once.
    BenchController {
        #[arg(long, default_value_t = 1000)]
        services: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client logs every refused connection while the API server starts,
                // which the lab waits for anyway.
                .unwrap_or_else(|_| "info,kube=warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up { nodes, kubelets } => up(nodes, kubelets).await,
        Command::Down { all: true, .. } => {
            let removed = lab::down_all()?;
            println!(
                "removed {} lab(s){}",
                removed.len(),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", removed.join(" "))
                }
            );
            Ok(())
        }
        Command::Down {
            prefix: Some(p), ..
        } => lab::down(&p),
        Command::Down { .. } => anyhow::bail!("say which lab (`lab status` lists them) or --all"),
        Command::Status => status(),
        Command::Demo => demo::run().await,
        Command::BenchController { services } => bench::controller(services).await,
    }
}

async fn up(nodes: usize, kubelets: bool) -> Result<()> {
    let lab = lab::Lab::start(lab::LabConfig {
        kubelets,
        ..lab::LabConfig::with_nodes(nodes)
    })
    .await?;
    println!(
        "lab {} is up ({} nodes). While this runs:",
        lab.prefix,
        lab.nodes().len()
    );
    println!(
        "  kubectl --kubeconfig {} get nodes",
        lab.kubeconfig.display()
    );
    println!(
        "  ip netns exec {} curl http://<external-ip>/",
        lab.client_ns.name()
    );
    println!("  logs in {}", lab.dir.display());
    println!("Ctrl-C tears it down.");
    tokio::signal::ctrl_c().await?;
    drop(lab);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

fn status() -> Result<()> {
    let prefixes = lab::running_prefixes()?;
    if prefixes.is_empty() {
        println!("no lab is running");
    }
    for p in prefixes {
        let spaces = lab::netns::list(|n| n.starts_with(&format!("{p}-")))?;
        println!("{p}: {} namespaces ({})", spaces.len(), spaces.join(" "));
    }
    Ok(())
}
