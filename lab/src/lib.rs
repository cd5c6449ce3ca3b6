//! The ferrolb lab: a real Kubernetes cluster in Linux network namespaces on one bridge:
//! kube-apiserver (with etcd, TLS and RBAC), kube-controller-manager and kube-scheduler, and
//! per node a kubelet with containerd and kube-proxy; and a client and foreign hosts.
//! Tests and the demo drive it through [`Lab`]; `lab down --all` removes what a killed run
//! left behind. Everything stays inside namespaces the lab creates, on documentation prefixes
//! (see [`plan`]).

pub mod bgp;
pub mod binaries;
pub mod cluster;
pub mod figures;
pub mod forward;
pub mod hello;
pub mod hogs;
pub mod images;
pub mod l2query;
pub mod lab;
pub mod monitoring;
pub mod netns;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod process;
pub mod router;
pub mod scale;
pub mod soak;

pub use cluster::ServiceSpec;
pub use images::{AGNHOST_IMAGE, PAUSE_IMAGE};
pub use lab::{
    CONTROLLER_DEPLOYMENT, ControllerOptions, ExternalHost, FERROLB_NAMESPACE, Install, Lab,
    LabConfig, SPEAKER_DAEMONSET, down, down_all, running_prefixes,
};
pub use probe::{Answer, ProbeConfig, ProbeReport};

/// Whether the lab tests may run: they need root and the Kubernetes binaries, so they are
/// `#[ignore]`d (the runner counts them as ignored) and the test command runs them with
/// `FERROLB_LAB=1` and `--include-ignored`.
pub fn lab_tests_enabled() -> bool {
    std::env::var("FERROLB_LAB").is_ok_and(|v| v == "1")
}

/// Fails the calling lab test, saying how to run it, unless the lab tests are enabled: a lab
/// test is ignored unless asked for, and one asked for must run, not pass without running.
#[macro_export]
macro_rules! require_lab {
    () => {
        assert!(
            $crate::lab_tests_enabled(),
            "lab tests run with FERROLB_LAB=1 as root (the README's test command)"
        );
    };
}
