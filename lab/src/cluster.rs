//! The Kubernetes objects the lab writes itself: without kubelets, the Nodes with their
//! addresses and their Lease heartbeats; Services, and their status as the controller would.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::JoinHandle;

const MANAGER: &str = "lab.ferrolb.io";

/// Creates a Ready Node with its InternalIPs (kube-proxy waits for it).
pub async fn create_node(
    client: &Client,
    name: &str,
    ips: &[IpAddr],
    pod_cidrs: &[String],
) -> Result<()> {
    let addresses: Vec<_> = ips
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
        .chain([json!({"type": "Hostname", "address": name})])
        .collect();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": match pod_cidrs.first() {
            Some(first) => json!({"podCIDR": first, "podCIDRs": pod_cidrs}),
            None => json!({}),
        },
        "status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "lab node", "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        },
    }))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    Ok(())
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Renews the node's Lease in `kube-node-lease` every `every`, as a kubelet does, until the
/// returned task is aborted. A failed renewal is retried after half a second, not a whole
/// interval later, so that after an API server outage every node reports in at once and a
/// test need not wait up to an interval for it (the tests time the speakers, not this).
pub fn heartbeat(client: &Client, node: &str, every: Duration) -> JoinHandle<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let node = node.to_string();
    tokio::spawn(async move {
        loop {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node},
                "spec": {
                    "holderIdentity": node,
                    "leaseDurationSeconds": 40,
                    "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
                },
            });
            let next = match leases
                .patch(
                    &node,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&lease),
                )
                .await
            {
                Ok(_) => every,
                Err(e) => {
                    tracing::warn!(%node, "lease renewal failed: {e}");
                    every.min(Duration::from_millis(500))
                }
            };
            tokio::time::sleep(next).await;
        }
    })
}

/// What `Lab::expose` creates.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    /// `Cluster` or `Local`.
    pub external_traffic_policy: String,
    /// `SingleStack`, `PreferDualStack` or `RequireDualStack`.
    pub ip_family_policy: String,
    pub annotations: BTreeMap<String, String>,
    pub load_balancer_class: Option<String>,
}

impl ServiceSpec {
    pub fn new(namespace: &str, name: &str) -> ServiceSpec {
        ServiceSpec {
            namespace: namespace.into(),
            name: name.into(),
            external_traffic_policy: "Cluster".into(),
            ip_family_policy: "SingleStack".into(),
            annotations: BTreeMap::new(),
            load_balancer_class: None,
        }
    }
}

/// Creates a LoadBalancer Service on port 80 selecting the lab's hello pods (`app: hello`).
pub async fn create_service(client: &Client, spec: &ServiceSpec) -> Result<Service> {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "annotations": spec.annotations},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "hello"},
            "externalTrafficPolicy": spec.external_traffic_policy,
            "ipFamilyPolicy": spec.ip_family_policy,
            "ports": [{"name": "http", "port": 80, "targetPort": crate::hello::POD_PORT, "protocol": "TCP"}],
        },
    });
    if let Some(class) = &spec.load_balancer_class {
        svc["spec"]["loadBalancerClass"] = json!(class);
    }
    let svc: Service = serde_json::from_value(svc)?;
    Ok(Api::<Service>::namespaced(client.clone(), &spec.namespace)
        .create(&PostParams::default(), &svc)
        .await?)
}

/// Sets `status.loadBalancer.ingress` by hand (what the controller will do).
pub async fn set_ingress(
    client: &Client,
    namespace: &str,
    name: &str,
    ips: &[IpAddr],
) -> Result<()> {
    let ingress: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
