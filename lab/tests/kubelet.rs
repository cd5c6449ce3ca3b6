//! The lab with real kubelets and containerd ([`LabConfig::kubelets`]). Needs root and the
//! binaries; runs with FERROLB_LAB=1 like the other lab tests.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, LogParams, PostParams};
use lab::images::OciImage;
use lab::{Lab, LabConfig, plan};
use pnet::ipnetwork::IpNetwork;

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
        ns.enter(|| lab::probe::get(target, "/", Duration::from_secs(5)))
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

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_deployment_spreads_over_the_nodes_on_the_pod_network() {
    lab::require_lab!();
    pod_network(false).await;
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_deployment_spreads_over_the_nodes_on_the_pod_network_ipv6_only() {
    lab::require_lab!();
    pod_network(true).await;
}

/// Real workloads on two kubelet nodes: a Deployment whose two replicas the scheduler puts on
/// both nodes, on the CNI network, in the EndpointSlices of a Service, reachable from the
/// control plane and the other node, and reaching the API server through the `kubernetes`
/// Service with their own credentials; and a host-network DaemonSet with a pod per node.
async fn pod_network(ipv6_only: bool) {
    let lab = Lab::start(LabConfig {
        nodes: 2,
        pods: vec![],
        ipv6_only,
        ..Default::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    lab.apply(&workloads(ipv6_only)).await.unwrap();

    // Both replicas Running and Ready, one per node, with addresses from their node's ranges.
    let pods: Api<Pod> = Api::namespaced(lab.client(), "default");
    let spread = ListParams::default().labels("app=spread");
    let deadline = Instant::now() + Duration::from_secs(120);
    let running = loop {
        let list = pods.list(&spread).await.unwrap().items;
        if list.len() == 2 && list.iter().all(pod_ready) {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "the Deployment's pods are not Ready: {:?}\nkube-scheduler's log ends with:\n{}",
            list.iter()
                .map(|p| (p.metadata.name.clone(), p.status.clone()))
                .collect::<Vec<_>>(),
            lab.log_tail("kube-scheduler", 20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "the Deployment's 2 pods Ready after {:?}",
        started.elapsed()
    );
    let mut placed = vec![];
    for pod in &running {
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        let node = lab.nodes().iter().find(|n| n.name == node_name).unwrap();
        let ips = pod_ips(pod);
        let mut ranges = vec![plan::pod_cidr_v6(node.index)];
        if !ipv6_only {
            ranges.insert(0, plan::pod_cidr_v4(node.index));
        }
        assert_eq!(ips.len(), ranges.len(), "{node_name}: {ips:?}");
        for (ip, range) in ips.iter().zip(&ranges) {
            let range: IpNetwork = range.parse().unwrap();
            assert!(range.contains(*ip), "{ip} is not in {node_name}'s {range}");
        }
        placed.push((node.index, pod.metadata.uid.clone().unwrap(), ips));
    }
    placed.sort();
    assert_eq!(
        placed.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![1, 2],
        "one replica per node"
    );

    // The EndpointSlice controller lists both pods' addresses for the Service.
    let slices: Api<EndpointSlice> = Api::namespaced(lab.client(), "default");
    let of_service = ListParams::default().labels(
        "kubernetes.io/service-name=spread,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
    );
    let mut expected: Vec<IpAddr> = placed.iter().flat_map(|p| p.2.clone()).collect();
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut listed: Vec<IpAddr> = slices
            .list(&of_service)
            .await
            .unwrap()
            .items
            .into_iter()
            .flat_map(|s| s.endpoints.into_iter().flatten())
            .flat_map(|e| e.addresses)
            .map(|a| a.parse().unwrap())
            .collect();
        listed.sort();
        if listed == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Service's EndpointSlices list {listed:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Each pod answers the control plane, the other node and the other pod; the client,
    // outside the cluster, has no route to pods.
    let in_pod = |uid: &str, node: usize| -> Vec<String> {
        let pid = *lab.pod_processes(node, uid).first().expect("the pod runs");
        vec!["nsenter".into(), format!("--net=/proc/{pid}/ns/net")]
    };
    for (node, _, ips) in &placed {
        let other = lab.node(3 - node);
        let (_, other_pod, _) = &placed[2 - node];
        for ip in ips {
            for (from, prefix) in [
                ("the control plane", in_ns(&lab.cp)),
                (other.name.as_str(), in_ns(&other.ns)),
                ("the pod on the other node", in_pod(other_pod, other.index)),
            ] {
                let answer = ping(&prefix, *ip);
                assert!(
                    answer.is_ok(),
                    "{ip} (on node-{node}) from {from}: {answer:?}"
                );
            }
            let route = lab.client_ns.ip(&["route", "get", &ip.to_string()]);
            assert!(route.is_err(), "the client has a route to {ip}: {route:?}");
        }
    }

    // The `kubernetes` Service has the API server's address, of the cluster's family.
    let kubernetes = slices.get("kubernetes").await.unwrap();
    let advertised: Vec<String> = kubernetes
        .endpoints
        .into_iter()
        .flatten()
        .flat_map(|e| e.addresses)
        .collect();
    let apiserver = if ipv6_only {
        plan::apiserver_v6().to_string()
    } else {
        plan::apiserver_v4().to_string()
    };
    assert_eq!(advertised, vec![apiserver]);
    let service_ip: IpAddr = if ipv6_only {
        plan::kubernetes_service_v6().into()
    } else {
        plan::kubernetes_service_v4().into()
    };
    let url = match service_ip {
        IpAddr::V4(ip) => format!("https://{ip}"),
        IpAddr::V6(ip) => format!("https://[{ip}]"),
    };
    // A pod, as client-go's in-cluster config does: the Service's address, the mounted CA
    // and token. Discovery is for authenticated users only: 200 proves the token was taken.
    let (_, uid, _) = &placed[0];
    let pids = lab.pod_processes(1, uid);
    let token_dir = "var/run/secrets/kubernetes.io/serviceaccount";
    let container = pids
        .iter()
        .find(|pid| Path::new(&format!("/proc/{pid}/root/{token_dir}/token")).exists())
        .unwrap_or_else(|| panic!("no process of the pod on node-1 has a token: {pids:?}"));
    let secrets = format!("/proc/{container}/root/{token_dir}");
    let token = std::fs::read_to_string(format!("{secrets}/token")).unwrap();
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{container}/ns/net"))
        .args(["curl", "-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--cacert"])
        .arg(format!("{secrets}/ca.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{url}/api"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "GET {url}/api from the pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And from a node (where host-network pods run), through kube-proxy; /version is public.
    let code = lab
        .node(2)
        .ns
        .exec(
            "curl",
            &[
                "-ksS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{url}/version"),
            ],
        )
        .unwrap();
    assert_eq!(code, "200", "GET {url}/version from node-2");

    // The host-network DaemonSet: a pod per node, Running.
    let host = ListParams::default().labels("app=host-pause");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = pods.list(&host).await.unwrap().items;
        let mut nodes: Vec<String> = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        nodes.sort();
        if nodes == ["node-1", "node-2"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the DaemonSet runs on {nodes:?} of {} pods",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Deployment of two pause pods that may not share a node, a Service selecting them (both
/// families when the cluster has both) and a host-network DaemonSet.
fn workloads(ipv6_only: bool) -> String {
    let family_policy = if ipv6_only {
        "SingleStack"
    } else {
        "RequireDualStack"
    };
    let pause = lab::PAUSE_IMAGE;
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {{matchLabels: {{app: spread}}}}
            topologyKey: kubernetes.io/hostname
      containers:
      - {{name: pause, image: "{pause}", imagePullPolicy: Never}}
---
apiVersion: v1
kind: Service
metadata: {{name: spread, namespace: default}}
spec:
  selector: {{app: spread}}
  ipFamilyPolicy: {family_policy}
  ports:
  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: host-pause, namespace: default}}
spec:
  selector: {{matchLabels: {{app: host-pause}}}}
  template:
    metadata: {{labels: {{app: host-pause}}}}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: pause, image: "{pause}", imagePullPolicy: Never}}
"#
    )
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|p| p.ip.parse().unwrap()).collect())
        .unwrap_or_default()
}

/// `ip netns exec NS`, as a command prefix.
fn in_ns(ns: &lab::netns::NetNs) -> Vec<String> {
    vec!["ip".into(), "netns".into(), "exec".into(), ns.name().into()]
}

/// One ping after `prefix` (which enters a namespace), retried a few times (a pod's IPv6
/// address may still be settling): bounded to about 10 s.
fn ping(prefix: &[String], ip: IpAddr) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..5 {
        let out = Command::new(&prefix[0])
            .args(&prefix[1..])
            .args(["ping", "-c", "1", "-W", "2", &ip.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Err(last)
}

/// The kubelet sysctls teardown restores, as `key=value` lines.
fn kubelet_sysctls() -> Vec<String> {
    [
        "vm/overcommit_memory",
        "vm/panic_on_oom",
        "kernel/panic",
        "kernel/panic_on_oops",
    ]
    .iter()
    .map(|k| {
        let v = std::fs::read_to_string(Path::new("/proc/sys").join(k)).unwrap();
        format!("{k}={}", v.trim())
    })
    .collect()
}

/// A `lab up` killed with SIGKILL leaves its kubelets, containerds, pods and everything they
/// touched behind; `lab down --all` removes it all: namespaces, processes, cgroups, the host
/// directories, and the machine's sysctls as they were.
#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn down_all_removes_a_killed_kubelet_cluster() {
    lab::require_lab!();
    use std::io::{BufRead, BufReader};
    let sysctls = kubelet_sysctls();
    let mut up = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["up", "--nodes", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut client = None;
    for line in BufReader::new(up.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(ns) = line.strip_prefix("CLIENT=") {
            client = Some(ns.to_string());
            break;
        }
    }
    let client = client.expect("lab up printed CLIENT= before it ended");
    let prefix = client.strip_suffix("-client").unwrap().to_string();
    // The cluster runs pods: the speakers, the controllers.
    assert!(!lab::process::mentioning("ferrolb-speaker").is_empty());
    up.kill().unwrap();
    up.wait().unwrap();
    let dir = std::env::temp_dir().join(format!("ferrolb-lab-{prefix}"));
    assert!(
        !lab::process::mentioning(&dir.display().to_string()).is_empty(),
        "the kubelets outlive the killed lab"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["down", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let namespaces = lab::netns::list(|n| n.starts_with(&prefix)).unwrap();
    assert!(namespaces.is_empty(), "{namespaces:?}");
    let left = lab::process::mentioning(&dir.display().to_string());
    assert!(left.is_empty(), "{left:#?}");
    assert!(!dir.exists(), "{} is left", dir.display());
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .filter_map(|h| std::fs::read_dir(h.path()).ok())
        .flatten()
        .flatten()
        .filter(|c| c.file_name().to_string_lossy().starts_with(&prefix))
        .map(|c| c.path())
        .collect();
    assert!(cgroups.is_empty(), "{cgroups:?}");
    for host_path in ["/var/lib/kubelet", "/run/containerd"] {
        assert!(!Path::new(host_path).exists(), "{host_path} is left");
    }
    assert_eq!(kubelet_sysctls(), sysctls);
}
