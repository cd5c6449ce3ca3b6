//! `kubectl-ferrolb`: found by kubectl on PATH as `kubectl ferrolb`.
//!
//! `kubectl ferrolb migrate-from-metallb -f FILE...` writes the ferrolb YAML to stdout and every
//! finding to stderr, one per line (`DIFFERENCE: Kind/name: …` or `note: Kind/name: …`), so that
//! stdout can be piped into `kubectl apply -f -`. Exit codes: 0 converted, nothing to read;
//! 1 error (unreadable file, invalid YAML, a document that is not an object); 2 converted, with
//! differences the operator must read.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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

#[derive(Subcommand)]
enum Command {
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
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Print only the differences on stderr, not the notes.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::MigrateFromMetallb { files, quiet } => migrate(&files, quiet),
    }
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
    let inputs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
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
