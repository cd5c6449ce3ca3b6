//! The lab with real kubelets and containerd ([`LabConfig::kubelets`]). Needs root and the
//! binaries; runs with FERROLB_LAB=1 like the other lab tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use kube::Api;
use kube::api::{LogParams, PostParams};
use lab::images::OciImage;
use lab::{Lab, LabConfig};

/// Waits until pod `name` is in `phase`; its status then.
async fn phase_reached(lab: &Lab, pods: &Api<Pod>, name: &str, phase: &str) -> PodStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pod = pods.get(name).await.unwrap();
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        if status.phase.as_deref() == Some(phase) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is not {phase}: {status:?}\n{node}'s kubelet log ends with:\n{}",
            lab.log_tail(&format!("kubelet-{node}"), 20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A pod bound to `node` (no scheduler runs), on the host's network.
fn host_pod(name: &str, node: &str, containers: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "dnsPolicy": "Default",
            "restartPolicy": "Never",
            "containers": containers,
        },
    }))
    .unwrap()
}

/// The body of one HTTP GET of `/` at `target`, from the lab's client namespace.
async fn get_body(lab: &Lab, target: SocketAddr) -> Result<String, String> {
    let ns = lab.client_ns.clone();
    let reply = tokio::task::spawn_blocking(move || {
        ns.enter(|| lab::probe::get(target, Duration::from_secs(5)))
    })
    .await
    .unwrap()
    .map_err(|e| e.to_string())??;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_string()),
        _ => Err(format!("unexpected answer {reply:?}")),
    }
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_kubelet_registers_its_node_and_runs_pods_from_the_lab_images() {
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
    let pod = host_pod(
        "host-pause",
        "node-2",
        serde_json::json!([{
            "name": "pause",
            "image": lab::PAUSE_IMAGE,
            "imagePullPolicy": "Never",
        }]),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = phase_reached(&lab, &pods, "host-pause", "Running").await;
    assert_eq!(
        status.pod_ip.as_deref(),
        Some(lab.node(2).ipv4.to_string().as_str()),
        "a host-network pod has its node's address"
    );
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

    // The real agnhost from the imported image, run as deploy/examples runs it, answers on
    // node 1's address from the client. A host-network pod shares the machine's UTS
    // namespace, so it answers with the machine's hostname rather than its pod's name.
    let agnhost = host_pod(
        "agnhost",
        "node-1",
        serde_json::json!([{
            "name": "agnhost",
            "image": lab::AGNHOST_IMAGE,
            "imagePullPolicy": "Never",
            "args": ["serve-hostname", "--http", "--port=8080"],
        }]),
    );
    pods.create(&PostParams::default(), &agnhost).await.unwrap();
    phase_reached(&lab, &pods, "agnhost", "Running").await;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let target = SocketAddr::new(lab.node(1).ipv4, 8080);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get_body(&lab, target).await {
            Ok(body) => {
                assert_eq!(body, hostname.trim());
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "GET http://{target}/: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // ferrolb's image runs: its entrypoint, as its user, with the libraries it carries. Each
    // container prints its version and exits 0, or the pod does not succeed.
    let agents = lab.agents.as_ref().expect("a kubelet lab has node agents");
    let image = OciImage::read(&agents.ferrolb_image).unwrap().name;
    let ferrolb = host_pod(
        "ferrolb",
        "node-2",
        serde_json::json!([
            {
                "name": "controller",
                "image": image,
                "imagePullPolicy": "Never",
                "args": ["--version"],
            },
            {
                "name": "speaker",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["/ferrolb-speaker", "--version"],
            },
        ]),
    );
    pods.create(&PostParams::default(), &ferrolb).await.unwrap();
    phase_reached(&lab, &pods, "ferrolb", "Succeeded").await;
    for container in ["controller", "speaker"] {
        let params = LogParams {
            container: Some(container.into()),
            ..Default::default()
        };
        let logs = pods.logs("ferrolb", &params).await.unwrap();
        assert!(
            logs.starts_with(&format!("ferrolb-{container} ")),
            "{container}: {logs:?}"
        );
    }
}
