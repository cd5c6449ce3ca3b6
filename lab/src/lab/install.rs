//! ferrolb as users install it, in a lab with kubelets ([`LabConfig::kubelets`]): the speaker
//! DaemonSet's and the controller Deployment's pods, run by the kubelets from the image the lab
//! imported into every node. With [`Install::Kustomize`], `kubectl apply -k deploy` with the
//! gossip Secret made beside it, as the README asks; with [`Install::Helm`], `helm install` of
//! the chart.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use super::Lab;
#[cfg(doc)]
use super::{Install, LabConfig};

/// Where both install forms put ferrolb.
pub const NAMESPACE: &str = "ferrolb-system";
pub const SPEAKER_DAEMONSET: &str = "ferrolb-speaker";
pub const CONTROLLER_DEPLOYMENT: &str = "ferrolb-controller";
/// The Helm release.
pub const RELEASE: &str = "ferrolb";

impl Lab {
    /// `helm install` of deploy/helm/ferrolb into [`NAMESPACE`] with `values` (`--set` pairs),
    /// as the lab's admin from inside the control plane's namespace.
    /// Returns its output, the NOTES among it.
    pub async fn helm_install(&self, values: &[&str]) -> Result<String> {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/ferrolb");
        let mut cmd = self.cp.command(&self.bins.helm);
        cmd.arg(format!("--kubeconfig={}", self.lan_kubeconfig.display()))
            .args(["install", RELEASE])
            .arg(chart.canonicalize()?)
            .args(["--namespace", NAMESPACE, "--create-namespace"]);
        for v in values {
            cmd.args(["--set", v]);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        if !out.status.success() {
            bail!(
                "helm install: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the speaker DaemonSet runs one ready, current pod on every node and the
    /// controller Deployment has all its replicas ready; says which pods are not, and why, if
    /// that does not happen `within`.
    pub async fn wait_for_ferrolb(&self, within: Duration) -> Result<()> {
        let daemonsets: Api<DaemonSet> = Api::namespaced(self.client.clone(), NAMESPACE);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        let deadline = Instant::now() + within;
        loop {
            let speakers = daemonsets
                .get_opt(SPEAKER_DAEMONSET)
                .await?
                .and_then(|d| d.status)
                .is_some_and(|s| {
                    let nodes = self.nodes.len() as i32;
                    s.desired_number_scheduled == nodes
                        && s.number_ready == nodes
                        && s.updated_number_scheduled == Some(nodes)
                });
            let controllers = deployments
                .get_opt(CONTROLLER_DEPLOYMENT)
                .await?
                .is_some_and(|d| {
                    let wanted = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                    let status = d.status.unwrap_or_default();
                    status.ready_replicas == Some(wanted)
                        && status.updated_replicas == Some(wanted)
                        && status.replicas == Some(wanted)
                });
            if speakers && controllers {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "ferrolb is not ready after {within:?} (speakers ready on every node: \
                     {speakers}, controllers ready: {controllers}); its pods:\n{}",
                    self.ferrolb_pods_summary().await?
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The process id of the speaker a kubelet runs on node `i` (in the node's network
    /// namespace, as a host-network pod's is), to read what the kernel says it runs with.
    pub fn speaker_process(&self, i: usize) -> Result<i32> {
        let ns = &self.node(i).ns;
        crate::netns::pids(ns.name())
            .into_iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "ferrolb-speaker")
            })
            .with_context(|| format!("no ferrolb-speaker process runs in {}", ns.name()))
    }

    /// One line per ferrolb pod: name, node, phase, and each container's state, for failure
    /// messages.
    pub async fn ferrolb_pods_summary(&self) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let mut lines = vec![];
        for pod in pods.list(&ListParams::default()).await? {
            let name = pod.metadata.name.unwrap_or_default();
            let node = pod
                .spec
                .and_then(|s| s.node_name)
                .unwrap_or_else(|| "(unscheduled)".into());
            let status = pod.status.unwrap_or_default();
            let containers: Vec<String> = status
                .container_statuses
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let state = c.state.unwrap_or_default();
                    let how = if let Some(w) = state.waiting {
                        format!(
                            "waiting: {} {}",
                            w.reason.unwrap_or_default(),
                            w.message.unwrap_or_default()
                        )
                    } else if let Some(t) = state.terminated {
                        format!(
                            "terminated: {} (exit {}) {}",
                            t.reason.unwrap_or_default(),
                            t.exit_code,
                            t.message.unwrap_or_default()
                        )
                    } else {
                        "running".into()
                    };
                    format!(
                        "{} ready={} restarts={} {how}",
                        c.name, c.ready, c.restart_count
                    )
                })
                .collect();
            let conditions: Vec<String> = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.status != "True")
                .map(|c| format!("{}={} {}", c.type_, c.status, c.message.unwrap_or_default()))
                .collect();
            lines.push(format!(
                "  {name} on {node}: {} [{}] {}",
                status.phase.unwrap_or_default(),
                containers.join("; "),
                conditions.join("; ")
            ));
        }
        Ok(lines.join("\n"))
    }
}
