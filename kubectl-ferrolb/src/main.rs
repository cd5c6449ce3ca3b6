//! `kubectl-ferrolb`: found by kubectl on PATH as `kubectl ferrolb`.
//!
//! `status`, `services` and `explain` read the cluster through the kubeconfig kubectl uses
//! (`KUBECONFIG`, `--kubeconfig`, `--context`) and print a table, or `-o json|yaml`. Exit codes:
//! 0 all is well; 1 error (no cluster, no such Service); 2 `status` found problems, or
//! `explain` found the Service without an address or not announced.
//!
//! `kubectl ferrolb migrate-from-metallb -f FILE...` writes the ferrolb YAML to stdout and every
//! finding to stderr, one per line (`DIFFERENCE: Kind/name: …` or `note: Kind/name: …`), so that
//! stdout can be piped into `kubectl apply -f -`. Exit codes: 0 converted, nothing to read;
//! 1 error (unreadable file, invalid YAML, a document that is not an object); 2 converted, with
//! differences the operator must read.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod fetch;
use k8s_openapi::jiff::Timestamp;
use kubectl_ferrolb::cluster::{self, Snapshot};
use kubectl_ferrolb::migrate::{Severity, convert_inputs};

#[derive(Parser)]
#[command(
    name = "kubectl-ferrolb",
    bin_name = "kubectl ferrolb",
    version,
    about = "ferrolb's kubectl plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which cluster, as kubectl's flags say it.
#[derive(clap::Args)]
struct KubeconfigArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
}

/// The flags kubectl users expect, shared by the commands that read the cluster.
#[derive(clap::Args)]
struct ClusterArgs {
    #[command(flatten)]
    kubeconfig: KubeconfigArgs,
    /// The namespace ferrolb runs in.
    #[arg(long, default_value = "ferrolb-system", global = true)]
    ferrolb_namespace: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// The controller's leader, the speakers per node, the pools' usage and conditions, BGP
    /// peers, and anything wrong, first.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Each LoadBalancer Service: addresses, pool, announcing nodes and interface, since when,
    /// and the last takeover.
    Services {
        /// Only this namespace (default: the kubeconfig context's, else "default").
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Why a Service has no address, or why its address is not announced, and what to do.
    Explain {
        /// svc/NAME, service/NAME or NAME.
        service: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Convert MetalLB manifests (metallb.io kinds, Services with MetalLB annotations) into
    /// ferrolb manifests.
    ///
    /// The ferrolb YAML goes to stdout; each finding goes to stderr, one a line:
    /// "DIFFERENCE: ..." (not carried over, behaves differently, or needs an action by hand) or
    /// "note: ..." (rewritten, same behaviour). Exit code 0: converted, no difference;
    /// 1: error (unreadable input, invalid YAML); 2: converted, with differences to read.
    #[command(name = "migrate-from-metallb")]
    MigrateFromMetallb {
        /// A file of MetalLB manifests (multi-document YAML, or a kind: List); `-` for stdin.
        /// May be repeated.
        #[arg(
            short = 'f',
            long = "filename",
            required_unless_present = "from_cluster"
        )]
        files: Vec<String>,
        /// Read MetalLB's objects (every metallb.io kind installed) and the Services with MetalLB
        /// annotations from the cluster instead.
        #[arg(long, conflicts_with = "files")]
        from_cluster: bool,
        /// Print only the differences on stderr, not the notes.
        #[arg(short = 'q', long)]
        quiet: bool,
        #[command(flatten)]
        kubeconfig: KubeconfigArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::MigrateFromMetallb {
            files,
            from_cluster: false,
            quiet,
            ..
        } => migrate(&files, quiet),
        Command::MigrateFromMetallb {
            from_cluster: true,
            quiet,
            kubeconfig,
            ..
        } => {
            let read = runtime().and_then(|runtime| {
                runtime.block_on(async {
                    let (client, _) = client(&kubeconfig).await?;
                    fetch::metallb_objects(&client).await
                })
            });
            match read {
                Ok(texts) => convert(&texts, quiet),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Status { cluster } => read_cluster(cluster, None, |snapshot, output| {
            let status = cluster::status(&snapshot.cluster);
            print(output, &status, || cluster::render_status(&status))?;
            Ok(if status.problems.is_empty() { 0 } else { 2 })
        }),
        Command::Services {
            namespace,
            all_namespaces,
            cluster,
        } => read_cluster(cluster, namespace, move |snapshot, output| {
            let ns = (!all_namespaces).then_some(snapshot.namespace_asked.as_str());
            let rows = cluster::services(&snapshot.cluster, ns);
            print(output, &rows, || {
                cluster::render_services(&rows, all_namespaces, Timestamp::now())
            })?;
            Ok(0)
        }),
        Command::Explain {
            service,
            namespace,
            cluster,
        } => read_cluster(cluster, namespace, move |snapshot, output| {
            let name = service
                .strip_prefix("svc/")
                .or_else(|| service.strip_prefix("service/"))
                .or_else(|| service.strip_prefix("services/"))
                .unwrap_or(&service);
            let ns = &snapshot.namespace_asked;
            let Some(e) = cluster::explain(&snapshot.cluster, ns, name) else {
                anyhow::bail!("no Service {name} in namespace {ns}");
            };
            print(output, &e, || cluster::render_explanation(&e))?;
            Ok(if e.served { 0 } else { 2 })
        }),
    }
}

/// The snapshot, and the namespace the command was asked about (`-n`, else the context's).
struct Asked {
    cluster: Snapshot,
    namespace_asked: String,
}

/// Reads the cluster, then runs `answer`, whose number is the exit code.
fn read_cluster(
    args: ClusterArgs,
    namespace: Option<String>,
    answer: impl FnOnce(&Asked, Output) -> anyhow::Result<u8>,
) -> ExitCode {
    let output = args.output;
    let read = runtime().and_then(|runtime| {
        runtime.block_on(async {
            let (client, default_namespace) = client(&args.kubeconfig).await?;
            let cluster = fetch::snapshot(&client, &args.ferrolb_namespace).await?;
            anyhow::Ok(Asked {
                cluster,
                namespace_asked: namespace.unwrap_or(default_namespace),
            })
        })
    });
    match read.and_then(|read| answer(&read, output)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A client for the kubeconfig and context asked for, and that context's namespace.
async fn client(args: &KubeconfigArgs) -> anyhow::Result<(kube::Client, String)> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .context("no kubeconfig (set KUBECONFIG or pass --kubeconfig)")?,
    };
    let namespace = config.default_namespace.clone();
    Ok((kube::Client::try_from(config)?, namespace))
}

fn print<T: serde::Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Table => print!("{}", table()),
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(value)?),
    }
    Ok(())
}

fn migrate(files: &[String], quiet: bool) -> ExitCode {
    let mut texts = vec![];
    for file in files {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(file)
        };
        match text {
            Ok(text) => texts.push((
                if file == "-" {
                    "<stdin>"
                } else {
                    file.as_str()
                },
                text,
            )),
            Err(e) => {
                eprintln!("error: {file}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let texts: Vec<(String, String)> = texts.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    convert(&texts, quiet)
}

/// Converts `(source, YAML)` pairs, prints the YAML and the findings; the exit code.
fn convert(texts: &[(String, String)], quiet: bool) -> ExitCode {
    let inputs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let conversion = match convert_inputs(&inputs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", conversion.to_yaml());
    for finding in &conversion.findings {
        if !quiet || finding.severity == Severity::Difference {
            eprintln!("{finding}");
        }
    }
    if conversion.has_differences() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
