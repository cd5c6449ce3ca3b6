//! Workloads: hello pods routed behind their nodes, and the LoadBalancer Services in front of
//! them with EndpointSlices that follow the pods' readiness.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};

use super::network::{link_local, veth};
use super::{Lab, LabPod};
use crate::cluster::{self, Endpoint, ServiceSpec};
use crate::hello::HelloServer;
use crate::netns::NetNs;
use crate::plan;

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

    pub(super) fn add_pod(&self, name: &str, node: usize, k: usize) -> Result<LabPod> {
        if k > plan::MAX_PODS_PER_NODE {
            bail!("at most {} pods fit on one node", plan::MAX_PODS_PER_NODE);
        }
        let host = &self.nodes[node - 1].ns;
        let ns = NetNs::create(&format!("{}-n{node}p{k}", self.prefix))?;
        let (ipv4, ipv6) = (plan::pod_v4(node, k), plan::pod_v6(node, k));
        let link = format!("pod{k}");
        veth(host, &link, &ns)?;
        host.ip(&["link", "set", &link, "up"])?;
        // Routed like Calico: the node answers every ARP of the pod (proxy ARP), so the pod
        // needs only an on-link default route; IPv6 goes via the node's link-local address.
        host.sysctl(&format!("net.ipv4.conf.{link}.proxy_arp"), "1")?;
        // And at once, as Calico sets it: the kernel's default delays each proxy ARP reply by
        // up to 0.8 s, which stalls a pod's first reply to every new (masqueraded) peer.
        host.sysctl(&format!("net.ipv4.neigh.{link}.proxy_delay"), "0")?;
        host.ip(&["route", "add", &format!("{ipv4}/32"), "dev", &link])?;
        host.ip(&["-6", "route", "add", &format!("{ipv6}/128"), "dev", &link])?;
        ns.ip(&["addr", "add", &format!("{ipv4}/32"), "dev", "eth0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ipv6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "dev", "eth0"])?;
        let host_ll = link_local(host, &link)?;
        ns.ip(&[
            "-6", "route", "add", "default", "via", &host_ll, "dev", "eth0",
        ])?;
        let server = HelloServer::start(&ns, name)?;
        Ok(LabPod {
            name: name.to_string(),
            node,
            ns,
            ipv4: ipv4.into(),
            ipv6: ipv6.into(),
            ready: true,
            _server: server,
        })
    }

    /// Creates a LoadBalancer Service in front of the lab's hello pods, with EndpointSlices
    /// that follow the pods' readiness.
    pub async fn expose(
        &mut self,
        spec: &ServiceSpec,
    ) -> Result<k8s_openapi::api::core::v1::Service> {
        let svc = cluster::create_service(&self.client, spec).await?;
        self.services
            .push((spec.namespace.clone(), spec.name.clone()));
        self.write_slices(&spec.namespace, &spec.name).await?;
        Ok(svc)
    }

    async fn write_slices(&self, namespace: &str, service: &str) -> Result<()> {
        let endpoints: Vec<Endpoint> = self
            .pods
            .iter()
            .flat_map(|p| {
                [p.ipv4, p.ipv6].map(|ip| Endpoint {
                    pod: p.name.clone(),
                    node: format!("node-{}", p.node),
                    ip,
                    ready: p.ready,
                })
            })
            .collect();
        cluster::write_endpoint_slices(&self.client, namespace, service, &endpoints).await
    }

    /// Marks a pod ready or not in the EndpointSlices of every exposed Service.
    pub async fn set_pod_ready(&mut self, pod: &str, ready: bool) -> Result<()> {
        let p = self
            .pods
            .iter_mut()
            .find(|p| p.name == pod)
            .with_context(|| format!("no pod {pod}"))?;
        p.ready = ready;
        for (ns, name) in self.services.clone() {
            self.write_slices(&ns, &name).await?;
        }
        Ok(())
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
