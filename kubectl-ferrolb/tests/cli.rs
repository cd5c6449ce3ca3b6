//! The built binary's exit codes and streams (the cluster commands against a real API server:
//! lab/tests/installed.rs).

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ferrolb");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metallb");

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_0_when_nothing_differs() {
    let out = run(
        &["migrate-from-metallb", "-f", &format!("{DIR}/l2.yaml")],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kind: IPAddressPool"));
    assert!(text(&out.stdout).contains("apiVersion: ferrolb.io/v1alpha1"));
    assert!(
        text(&out.stderr).starts_with("note: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn stdin_and_several_files() {
    let l2 = std::fs::read_to_string(format!("{DIR}/l2.yaml")).unwrap();
    let out = run(
        &[
            "migrate-from-metallb",
            "-f",
            "-",
            "-f",
            &format!("{DIR}/priority.yaml"),
        ],
        &l2,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("kind: IPAddressPool").count(), 3, "{stdout}");
    assert!(stdout.contains("name: example"));
}

#[test]
fn exit_2_with_differences_on_stderr_only() {
    let out = run(
        &["migrate-from-metallb", "-f", &format!("{DIR}/bgp.yaml")],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DIFFERENCE: BGPPeer/secret-peer: copy Secret"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("DIFFERENCE"));

    let quiet = run(
        &[
            "migrate-from-metallb",
            "-q",
            "-f",
            &format!("{DIR}/bgp.yaml"),
        ],
        "",
    );
    assert_eq!(quiet.status.code(), Some(2));
    assert!(
        text(&quiet.stderr)
            .lines()
            .all(|l| l.starts_with("DIFFERENCE: "))
    );
}

#[test]
fn exit_1_on_errors() {
    let out = run(&["migrate-from-metallb", "-f", "-"], "a: [unclosed\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("<stdin>: invalid YAML"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let out = run(
        &["migrate-from-metallb", "-f", "/nonexistent/metallb.yaml"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/metallb.yaml"));
}

#[test]
fn help_lists_every_command() {
    let out = run(&["--help"], "");
    assert!(out.status.success());
    for command in ["status", "services", "explain", "migrate-from-metallb"] {
        assert!(text(&out.stdout).contains(command), "{command}");
    }
}

#[test]
fn a_cluster_command_without_a_cluster_says_so_and_exits_1() {
    let out = Command::new(BIN)
        .arg("status")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).starts_with("error: "),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["status", "-o", "xml"], "");
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown format");
}
