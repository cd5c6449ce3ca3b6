//! `lab`: the ferrolb test bed from the command line.
//!
//!   lab up [--nodes N] [--helm] [--no-kubelets]  start a cluster with ferrolb installed, until
//!                          SIGINT or SIGTERM
//!   lab down [--all|PREFIX] remove a lab (or every lab, also those of killed runs)
//!   lab status             list the labs on this machine
//!   lab demo               the README's demo
//!   lab bench-controller   Service creation to address, through the real API server
//!   lab bench-soak         speakers left alone under CPU load or packet loss: false alarms
//!   lab bench-scale        100 light nodes: gossip, spread, first answer, idle cost, failover

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
    /// Start a cluster (kubelets and containerd on every node) with ferrolb installed and the
    /// example pool applied, and keep it until SIGINT or SIGTERM.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Install ferrolb with `helm install` of the chart instead of `kubectl apply -k`.
        #[arg(long)]
        helm: bool,
        /// No kubelets: the lab registers the Nodes itself, and only ferrolb's API is applied
        /// (the lab of the tests that start ferrolb as processes).
        #[arg(long)]
        no_kubelets: bool,
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
    /// Many light nodes with a speaker each, many Services: gossip convergence, spread,
    /// Service → first ARP/NDP answer, idle cost, failover with every speaker a member.
    BenchScale {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Nodes with kube-proxy, which the failover trials' traffic goes through (0 is
        /// allowed with `--trials 0`: a run for memory and spread).
        #[arg(long, default_value_t = 6)]
        kube_proxies: usize,
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Spread Services created per second, one at a time (0: 32 at a time, at once).
        #[arg(long, default_value_t = 20)]
        create_rate: u32,
        /// Services created one at a time to time their first answer, per family.
        #[arg(long, default_value_t = 40)]
        answer_samples: usize,
        #[arg(long, default_value_t = 60)]
        idle_seconds: u64,
        #[arg(long, default_value_t = 30)]
        trials: usize,
        /// Start the speakers only once every Service has its address: each then reads the
        /// Services in one list instead of following every creation (on two cores, 100
        /// speakers following 10,000 creations starve the API server).
        #[arg(long)]
        speakers_last: bool,
        /// How long the gossip may take to converge, and the addresses to be owned once,
        /// before the run fails (100 speakers each listing 10,000 Services on two cores
        /// take longer than the default).
        #[arg(long, default_value_t = 300)]
        settle_seconds: u64,
        /// A flag for every speaker (repeat for several), e.g.
        /// `--speaker-flag=--fast-failover-max-echo-rate=200`.
        #[arg(long, allow_hyphen_values = true)]
        speaker_flag: Vec<String>,
        /// Write an SVG plot of the failover gaps here.
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
    },
    /// Speakers left alone under stress; counts what moved although every owner lived.
    BenchSoak {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Services, one address each (at most 50).
        #[arg(long, default_value_t = 20)]
        addresses: usize,
        /// Threads spinning meanwhile (twice the CPUs saturates the machine).
        #[arg(long, default_value_t = 0)]
        hogs: usize,
        /// Percent of the IP packets each node sends dropped (an nftables rule).
        #[arg(long)]
        loss: Option<f64>,
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
        Command::Up {
            nodes,
            helm,
            no_kubelets,
        } => up(nodes, helm, !no_kubelets).await,
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
        Command::Demo => or_signal(demo::run()).await,
        Command::BenchController { services } => or_signal(bench::controller(services)).await,
        Command::BenchSoak {
            seconds,
            nodes,
            addresses,
            hogs,
            loss,
        } => or_signal(bench::soak(seconds, nodes, addresses, hogs, loss)).await,
        Command::BenchScale {
            nodes,
            kube_proxies,
            services,
            create_rate,
            answer_samples,
            idle_seconds,
            trials,
            speakers_last,
            settle_seconds,
            speaker_flag,
            plot,
        } => {
            let binaries = lab::binaries::FerrolbBinaries::find()?;
            let config = lab::scale::ScaleConfig {
                nodes,
                kube_proxies,
                services,
                pace: match create_rate {
                    0 => lab::scale::Pace::AtOnce,
                    rate => lab::scale::Pace::PerSecond(rate),
                },
                answer_samples,
                idle: Duration::from_secs(idle_seconds),
                trials,
                speakers_last,
                settle: Duration::from_secs(settle_seconds),
                speaker: binaries.speaker,
                speaker_flags: speaker_flag,
                controller: binaries.controller,
            };
            or_signal(bench::scale(config, plot)).await
        }
    }
}

/// Runs a command that starts a lab until it ends or SIGINT or SIGTERM comes: the command is
/// then dropped, which tears its lab down (the signals' default would leave the lab's
/// processes and namespaces behind).
async fn or_signal(work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = work => result,
        r = tokio::signal::ctrl_c() => {
            r?;
            anyhow::bail!("interrupted (SIGINT); the lab is torn down")
        }
        _ = term.recv() => anyhow::bail!("terminated (SIGTERM); the lab is torn down"),
    }
}

async fn up(nodes: usize, helm: bool, kubelets: bool) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let lab = lab::Lab::start(lab::LabConfig {
        kubelets,
        install: match (kubelets, helm) {
            (false, _) => lab::Install::Processes,
            (true, false) => lab::Install::Kustomize,
            (true, true) => lab::Install::Helm,
        },
        // The hello pods are the example's Deployment, not the lab's own.
        pods: vec![],
        ..lab::LabConfig::with_nodes(nodes)
    })
    .await?;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    eprint!(
        "{}",
        lab.kubectl(&["apply", "-f", &format!("{examples}/pool.yaml")])
            .await?
    );
    // With kubelets, the classic example too: its pods run, its Service gets an address.
    let mut target = "<external-ip>".to_string();
    if kubelets {
        eprint!(
            "{}",
            lab.kubectl(&["apply", "-f", &format!("{examples}/service.yaml")])
                .await?
        );
        for _ in 0..120 {
            if let Some(ip) = lab.ingress("default", "hello").await?.first() {
                target = match ip {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                };
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    // Machine-readable first, for scripts (the demo reads them).
    println!("KUBECONFIG={}", lab.kubeconfig.display());
    println!("CLIENT={}", lab.client_ns.name());
    eprintln!(
        "lab {} is up ({} nodes), logs in {}. For example:\n  \
         kubectl --kubeconfig {} get pods -A -o wide\n  \
         kubectl --kubeconfig {} get svc hello\n  \
         ip netns exec {} curl http://{target}/\n\
         SIGINT (Ctrl-C) or SIGTERM tears it down.",
        lab.prefix,
        lab.nodes().len(),
        lab.dir.display(),
        lab.kubeconfig.display(),
        lab.kubeconfig.display(),
        lab.client_ns.name()
    );
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
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
