//! The lab with real kubelets and containerd ([`LabConfig::kubelets`]). Needs root and the
//! binaries; runs with FERROLB_LAB=1 like the other lab tests.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use lab::{Lab, LabConfig};

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_kubelet_registers_its_node_and_runs_a_host_network_pod() {
    lab::require_lab!();
    let lab = Lab::start(LabConfig {
        nodes: 2,
        pods: vec![],
        kubelets: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(lab.client());

    // Both Nodes Ready, registered by their kubelets with the lab's addresses.
    let deadline = Instant::now() + Duration::from_secs(90);
    for n in lab.nodes() {
        loop {
            let node = nodes.get(&n.name).await.unwrap();
            if ready(&node) {
                let status = node.status.unwrap_or_default();
                let addresses: Vec<String> = status
                    .addresses
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .map(|a| a.address)
                    .collect();
                assert_eq!(
                    addresses,
                    vec![n.ipv4.to_string(), n.ipv6.to_string()],
                    "{}",
                    n.name
                );
                let agent = status.node_info.unwrap_or_default();
                assert!(
                    agent.kubelet_version == "v1.36.3"
                        && agent
                            .container_runtime_version
                            .starts_with("containerd://2."),
                    "{agent:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} is not Ready: {:?}\nits kubelet's log ends with:\n{}",
                n.name,
                node.status.and_then(|s| s.conditions),
                lab.log_tail(&format!("kubelet-{}", n.name), 20)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // A host-network pod bound to node 2 (no scheduler) is run by its kubelet.
    let pods: Api<Pod> = Api::namespaced(lab.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "host-pause"},
        "spec": {
            "nodeName": "node-2",
            "hostNetwork": true,
            "dnsPolicy": "Default",
            "containers": [{
                "name": "pause",
                "image": lab::PAUSE_IMAGE,
                "imagePullPolicy": "Never",
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get("host-pause").await.unwrap();
        let status = pod.status.unwrap_or_default();
        if status.phase.as_deref() == Some("Running") {
            assert_eq!(
                status.pod_ip.as_deref(),
                Some(lab.node(2).ipv4.to_string().as_str()),
                "a host-network pod has its node's address"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pod never ran: {status:?}\nnode-2's kubelet log ends with:\n{}",
            lab.log_tail("kubelet-node-2", 20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Its ServiceAccount's token, as every pod gets one: the admission plugin added the
    // volume, and the kubelet mounted it (token and the root CA ConfigMap) or it would not run.
    let spec = pods
        .get("host-pause")
        .await
        .unwrap()
        .spec
        .unwrap_or_default();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let token_volume = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name.starts_with("kube-api-access-"));
    assert!(
        token_volume.is_some_and(|v| v.projected.is_some()),
        "no projected ServiceAccount token volume"
    );
    // The API server reaches the kubelet for logs (by InternalIP, with its client certificate).
    let logs = pods.logs("host-pause", &Default::default()).await;
    assert!(logs.is_ok(), "logs through the kubelet: {logs:?}");
}
