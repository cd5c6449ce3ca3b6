//! The ferrolb lab: a real kube-apiserver (with etcd, TLS and RBAC), a real kube-proxy in each
//! simulated node, and nodes, pods and a client as Linux network namespaces on one bridge.
//! Tests and the demo drive it through [`Lab`]; `lab down --all` removes what a killed run
//! left behind. Everything stays inside namespaces the lab creates, on documentation prefixes
//! (see [`plan`]).

pub mod binaries;
pub mod cluster;
pub mod forward;
pub mod hello;
pub mod l2query;
pub mod lab;
pub mod netns;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod process;

pub use cluster::ServiceSpec;
pub use lab::{Lab, LabConfig, down, down_all, running_prefixes};
pub use probe::{Answer, ProbeConfig, ProbeReport};

/// Whether the lab tests should run: they need root and build Kubernetes binaries, so they
/// run when `FERROLB_LAB=1` (the README's test command sets it) and are skipped otherwise,
/// saying so.
pub fn lab_tests_enabled() -> bool {
    std::env::var("FERROLB_LAB").is_ok_and(|v| v == "1")
}

/// Returns from the calling test, saying so, unless the lab tests are enabled.
#[macro_export]
macro_rules! require_lab {
    () => {
        if !$crate::lab_tests_enabled() {
            eprintln!(
                "skipped: lab tests run with FERROLB_LAB=1 as root (the README's test command)"
            );
            return;
        }
    };
}
