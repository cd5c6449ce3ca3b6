//! Workloads: the hello pods, real pods run by the nodes' kubelets, and the LoadBalancer
//! Services in front of them; the EndpointSlice controller follows the pods' readiness.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

use super::{Lab, LabPod};
use crate::cluster::{self, ServiceSpec};
use crate::hello::POD_PORT;

/// Where the hello pods run.
const POD_NAMESPACE: &str = "default";

impl Lab {
    /// Gives node `i` the `n` veth pairs a busy node's pods would (both ends in the node's
    /// namespace, up, each with its MAC and the kernel's link-local address): what a CNI adds
    /// per pod on the node's side, without the pods. Cheap: one `ip -batch`.
    pub fn add_pod_links(&self, i: usize, n: usize) -> Result<()> {
        let batch = self.dir.join(format!("pod-links-{i}.batch"));
        let mut lines = String::new();
        for k in 0..n {
            lines.push_str(&format!(
                "link add name pv{k} type veth peer name pvp{k}\nlink set pv{k} up\nlink set pvp{k} up\n"
            ));
        }
        std::fs::write(&batch, lines)?;
        self.node(i)
            .ns
            .ip(&["-batch", &batch.to_string_lossy()])
            .with_context(|| format!("adding {n} pod links to node {i}"))?;
        Ok(())
    }

    /// Starts the hello pods, pod `hello-k` on node `nodes[k-1]`, and waits until each is
    /// ready. Each is a real Pod pinned to its node (`nodeName`): agnhost's `netexec` on port
    /// 8080, labelled `app: hello`, ready while it answers its probe.
    pub(super) async fn start_pods(&mut self, nodes: &[usize], within: Duration) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), POD_NAMESPACE);
        for (k, node) in nodes.iter().enumerate() {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": format!("hello-{}", k + 1), "labels": {"app": "hello"}},
                "spec": {
                    "nodeName": format!("node-{node}"),
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "hello",
                        "image": crate::images::AGNHOST_IMAGE,
                        "args": ["netexec", format!("--http-port={POD_PORT}"), "--udp-port=-1"],
                        "ports": [{"containerPort": POD_PORT}],
                        // Every second, and one miss makes it unready: the lab's tests turn
                        // readiness off and on through it.
                        "readinessProbe": {
                            "httpGet": {"path": "/hostname", "port": POD_PORT},
                            "periodSeconds": 1,
                            "failureThreshold": 1,
                            "timeoutSeconds": 1,
                        },
                    }],
                },
            }))?;
            pods.create(&PostParams::default(), &pod).await?;
        }
        for (k, &node) in nodes.iter().enumerate() {
            let name = format!("hello-{}", k + 1);
            let pod = self.pod_becomes(&name, true, within).await?;
            let ips = pod
                .status
                .and_then(|s| s.pod_ips)
                .unwrap_or_default()
                .iter()
                .map(|ip| ip.ip.parse())
                .collect::<Result<Vec<IpAddr>, _>>()?;
            self.pods.push(LabPod { name, node, ips });
        }
        Ok(())
    }

    /// Waits until pod `name` is ready (or not), as its kubelet reports; returns it then.
    async fn pod_becomes(&self, name: &str, ready: bool, within: Duration) -> Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), POD_NAMESPACE);
        let deadline = Instant::now() + within;
        loop {
            let pod = pods.get(name).await?;
            let is_ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if is_ready == ready {
                return Ok(pod);
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {name} is not {} after {within:?}; its status: {:?}",
                    if ready { "ready" } else { "unready" },
                    pod.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a LoadBalancer Service in front of the lab's hello pods (`app: hello`); the
    /// EndpointSlice controller gives it their endpoints.
    pub async fn expose(
        &mut self,
        spec: &ServiceSpec,
    ) -> Result<k8s_openapi::api::core::v1::Service> {
        cluster::create_service(&self.client, spec).await
    }

    /// Makes pod `pod` fail its readiness probe (or pass it again) and waits until its
    /// kubelet says so: its node's kubelet can no longer reach it on the probe's port (a
    /// reset in the node's OUTPUT chain), while traffic forwarded to it still flows.
    pub async fn set_pod_ready(&mut self, pod: &str, ready: bool) -> Result<()> {
        let p = self
            .pods
            .iter()
            .find(|p| p.name == pod)
            .with_context(|| format!("no pod {pod}"))?;
        let node = &self.node(p.node).ns;
        let op = if ready { "-D" } else { "-I" };
        for ip in &p.ips {
            let tool = if ip.is_ipv4() {
                "iptables"
            } else {
                "ip6tables"
            };
            node.exec(
                tool,
                &[
                    "-w",
                    op,
                    "OUTPUT",
                    "-d",
                    &ip.to_string(),
                    "-p",
                    "tcp",
                    "--dport",
                    &POD_PORT.to_string(),
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            )?;
        }
        self.pod_becomes(pod, ready, Duration::from_secs(30))
            .await
            .map(drop)
    }

    /// Writes `status.loadBalancer.ingress` by hand, as the controller would.
    pub async fn set_ingress(&self, namespace: &str, name: &str, ips: &[IpAddr]) -> Result<()> {
        cluster::set_ingress(&self.client, namespace, name, ips).await
    }

    /// A selectorless LoadBalancer Service `name` (port 80) with a hand-written Endpoints
    /// object pointing at `backend:8080`, the classic way to put a Service in front of a host
    /// outside the cluster; only an EndpointSlice mirroring controller makes it reachable.
    pub async fn expose_external(
        &self,
        namespace: &str,
        name: &str,
        backend: IpAddr,
    ) -> Result<()> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  type: LoadBalancer\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: {name}\n  namespace: {namespace}\nsubsets:\n- addresses: [{{ip: \"{backend}\"}}]\n  ports: [{{name: http, port: 8080}}]\n"
        ))
        .await
    }
}
