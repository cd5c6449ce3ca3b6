//! ferrolb installed as users install it, on a lab whose nodes run real kubelets and
//! containerd: the speaker DaemonSet's and the controller Deployment's pods from the image the
//! lab built, the examples of deploy/examples applied unmodified. Needs root and the binaries;
//! runs with FERROLB_LAB=1 like the other lab tests.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use lab::{FERROLB_NAMESPACE, Install, Lab, LabConfig};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
        .display()
        .to_string()
}

/// Pods of `namespace` matching `selector`.
async fn pods(lab: &Lab, namespace: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(lab.client(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

/// A lab whose nodes run kubelets, with ferrolb's pods Ready (`Lab::start` waits for them)
/// and no pods of the lab's own; `config` says the rest (how ferrolb is installed).
async fn cluster(config: LabConfig) -> Lab {
    assert_ne!(
        config.install,
        Install::Processes,
        "these tests install ferrolb"
    );
    let lab = Lab::start(LabConfig {
        pods: vec![],
        kubelets: true,
        ..config
    })
    .await
    .unwrap();
    println!(
        "{}",
        lab.kubectl(&["get", "pods", "-A", "-o", "wide"])
            .await
            .unwrap()
    );
    // A node's pods start in any order: a speaker that starts before kube-proxy has the
    // `kubernetes` Service's rules must wait for them, not crash.
    for pod in pods(&lab, FERROLB_NAMESPACE, "app.kubernetes.io/name=ferrolb").await {
        let restarts: i32 = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .iter()
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(
            restarts,
            0,
            "{} restarted at start:\n{}",
            pod.metadata.name.unwrap_or_default(),
            lab.ferrolb_pods_summary().await.unwrap_or_default()
        );
    }
    lab
}

/// Applies deploy/examples/`name` as an operator would.
async fn apply_example(lab: &Lab, name: &str) {
    lab.kubectl(&["apply", "-f", &example(name)]).await.unwrap();
}

/// The names of the pods of `namespace` matching `selector`.
async fn pod_names(lab: &Lab, namespace: &str, selector: &str) -> BTreeSet<String> {
    pods(lab, namespace, selector)
        .await
        .into_iter()
        .map(|p| p.metadata.name.unwrap_or_default())
        .collect()
}

/// The Service's first ingress address, once the controller has written one.
async fn address_of(lab: &Lab, namespace: &str, name: &str) -> IpAddr {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(ip) = lab.ingress(namespace, name).await.unwrap().first() {
            return *ip;
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}/{name} got no address; its Events:\n{}\nferrolb's pods:\n{}",
            lab.events(namespace, name).await.unwrap_or_default(),
            lab.ferrolb_pods_summary().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The single node answering ARP / NDP for `ip` once exactly one does.
async fn owner_of(lab: &Lab, ip: IpAddr) -> usize {
    match lab.sole_answerer(ip, Duration::from_secs(30)).await {
        Ok(owner) => owner,
        Err(e) => panic!(
            "{e:#}; ferrolb's pods:\n{}",
            lab.ferrolb_pods_summary().await.unwrap_or_default()
        ),
    }
}

/// GETs through `ip:80` from the client until each of `pods` has answered (kube-proxy takes a
/// moment to add an endpoint that just turned ready); fails after 60 s, or when a pod not in
/// `pods` answers.
async fn all_answer(lab: &Lab, ip: IpAddr, pods: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = BTreeSet::new();
    while &answered != pods {
        match lab.get(ip, 80).await {
            Ok(a) => {
                assert!(pods.contains(&a.pod), "{} answered through {ip}", a.pod);
                answered.insert(a.pod);
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "GET through {ip}: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {answered:?} of {pods:?} answered through {ip}"
        );
    }
}

/// Waits until a Deployment has all its replicas ready.
async fn deployment_ready(lab: &Lab, namespace: &str, name: &str) {
    lab.kubectl(&[
        "-n",
        namespace,
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=120s",
    ])
    .await
    .unwrap_or_else(|e| {
        panic!("deployment {namespace}/{name} not ready: {e:#}");
    });
}

/// A field of `/proc/PID/status` (`Uid`, `CapEff`, …).
fn proc_status(pid: i32, field: &str) -> String {
    let pid = u32::try_from(pid).expect("a process id");
    lab::process::proc_status(pid, field).unwrap()
}

/// Options of the mount at `/` as the process sees it.
fn root_mount_options(pid: i32) -> String {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    info.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .map(|f| f[5].to_string())
        .unwrap_or_default()
}

/// The speaker runs in its pod as the DaemonSet declares and the kernel enforces: root with
/// only NET_RAW, no privilege escalation, a seccomp filter, a read-only root, its node's name
/// from the downward API and the gossip key from the Secret's volume.
fn assert_speaker_runs_as_declared(lab: &Lab, i: usize, gossip_key: &[u8]) {
    let pid = lab.speaker_process(i).unwrap();
    let uids: Vec<String> = proc_status(pid, "Uid")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(uids, ["0"; 4], "node {i}: the speaker's uids");
    // CAP_NET_RAW is bit 13.
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            proc_status(pid, set),
            "0000000000002000",
            "node {i}: the speaker's {set} holds NET_RAW alone"
        );
    }
    assert_eq!(proc_status(pid, "CapAmb"), "0000000000000000");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1", "node {i}");
    assert_eq!(
        proc_status(pid, "Seccomp"),
        "2",
        "node {i}: a seccomp filter"
    );
    let root = root_mount_options(pid);
    assert!(
        root.split(',').any(|o| o == "ro"),
        "node {i}: the speaker's root is mounted {root}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let node_name = format!("NODE_NAME={}", lab.node(i).name);
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == node_name.as_bytes()),
        "node {i}: the speaker's environment lacks {node_name}"
    );
    let key = std::fs::read(format!("/proc/{pid}/root/etc/ferrolb/gossip/key")).unwrap();
    assert_eq!(key, gossip_key, "node {i}: the mounted gossip key");
}

/// `helm install` of the chart: one speaker pod per node, owned by the DaemonSet and running
/// as declared; two controller pods, one holding the Lease; then the classic example of
/// deploy/examples, unmodified, answers from both hello pods through its external address.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn helm_installs_ferrolb_and_the_classic_example_works() {
    lab::require_lab!();
    let mut lab = cluster(LabConfig {
        nodes: 3,
        install: Install::Helm,
        ..Default::default()
    })
    .await;

    // The NOTES say what to run next.
    let notes = lab.helm_install_output.clone().unwrap_or_default();
    for next in [
        "kubectl label namespace ferrolb-system pod-security.kubernetes.io/enforce=privileged",
        "kubectl -n ferrolb-system get pods -l app.kubernetes.io/name=ferrolb -o wide",
        "kubectl apply -f pool.yaml",
        "kubectl describe service NAME",
    ] {
        assert!(notes.contains(next), "NOTES lack {next:?}:\n{notes}");
    }

    // Speakers: the DaemonSet's, one per node.
    let speakers = pods(
        &lab,
        FERROLB_NAMESPACE,
        "app.kubernetes.io/component=speaker",
    )
    .await;
    let mut nodes: Vec<String> = speakers
        .iter()
        .map(|p| {
            let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("DaemonSet", lab::SPEAKER_DAEMONSET)
            );
            p.spec.as_ref().unwrap().node_name.clone().unwrap()
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-1", "node-2", "node-3"]);
    let secret = Api::<Secret>::namespaced(lab.client(), FERROLB_NAMESPACE)
        .get("ferrolb-gossip")
        .await
        .unwrap();
    let key = secret.data.unwrap().remove("key").unwrap().0;
    for i in 1..=3 {
        assert_speaker_runs_as_declared(&lab, i, &key);
    }

    // Controllers: two pods, one of them the leader.
    let names = pod_names(
        &lab,
        FERROLB_NAMESPACE,
        "app.kubernetes.io/component=controller",
    )
    .await;
    assert_eq!(names.len(), 2, "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holder = Api::<Lease>::namespaced(lab.client(), FERROLB_NAMESPACE)
            .get_opt("ferrolb-controller")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_ref().is_some_and(|h| names.contains(h)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no controller pod holds the Lease (holder {holder:?}, pods {names:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let hello = the_classic_example_answers(&lab).await;

    // The standby stops at once when its pod is deleted (a drain, a rolling update): as PID 1
    // without a SIGTERM handler it ignored the signal until the kubelet's SIGKILL 30 s later,
    // and `kubectl drain --timeout=30s` of its node failed in CI.
    let leader = Api::<Lease>::namespaced(lab.client(), FERROLB_NAMESPACE)
        .get("ferrolb-controller")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap();
    let standby = names.iter().find(|n| **n != leader).unwrap();
    lab.kubectl(&[
        "-n",
        FERROLB_NAMESPACE,
        "delete",
        "pod",
        standby,
        "--timeout=20s",
    ])
    .await
    .unwrap();

    // And a selectorless Service in front of a host outside the cluster: kube-controller-
    // manager's mirroring controller turns its hand-written Endpoints into the EndpointSlice
    // kube-proxy and the speakers read.
    let backend = lab.add_external_backend("outside").unwrap();
    lab.expose_external("default", "external", backend.ipv4)
        .await
        .unwrap();
    let address = address_of(&lab, "default", "external").await;
    owner_of(&lab, address).await;
    all_answer(&lab, address, &BTreeSet::from(["outside".to_string()])).await;

    the_plugin_reads_the_cluster(&lab, hello).await;
}

/// `kubectl ferrolb status` and `services` as JSON on a healthy cluster serving the example
/// Service at `hello`: no problem, a leader, every node's speaker ready and seeing every node
/// (read from its metrics through the API server), the pool's use of `hello`'s family, and the
/// node that answers for `hello` named as its announcer, with its interface; that node's name.
async fn the_plugin_sees_all_well(lab: &Lab, hello: IpAddr) -> String {
    let owner = format!("node-{}", owner_of(lab, hello).await);
    let n = lab.nodes().len();
    let (code, out, err) = plugin(lab, &["status", "-o", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!("status -o json: {e}: {out}\n{err}");
    });
    assert_eq!(code, 0, "{status:#}\n{err}");
    assert_eq!(status["problems"], serde_json::json!([]), "{status:#}");
    assert!(status["controller"]["leader"].is_string(), "{status:#}");
    assert_eq!(status["speakers"]["ready"], n, "{status:#}");
    let nodes = status["speakers"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), n, "{status:#}");
    assert!(
        nodes
            .iter()
            .all(|s| s["ready"] == true && s["members"] == n),
        "each speaker sees the {n} members: {status:#}"
    );
    let family = if hello.is_ipv6() { "ipv6" } else { "ipv4" };
    assert!(
        status["pools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["ready"] == "True" && p[family]["assigned"].as_i64() >= Some(1)),
        "{status:#}"
    );

    let (code, out, err) = plugin(lab, &["services", "-n", "default", "-o", "json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "hello")
        .unwrap_or_else(|| panic!("no hello in {rows:#}"));
    assert_eq!(row["addresses"], serde_json::json!([hello.to_string()]));
    assert_eq!(row["state"], "Announced", "{row:#}");
    assert_eq!(row["announced_by"], serde_json::json!([owner]), "{row:#}");
    assert_eq!(row["interfaces"], serde_json::json!(["eth0"]), "{row:#}");
    owner
}

/// `kubectl ferrolb …` through kubectl; exit code, stdout and stderr.
async fn plugin(lab: &Lab, args: &[&str]) -> (i32, String, String) {
    let controller = lab::binaries::FerrolbBinaries::find().unwrap().controller;
    let dir = controller.parent().unwrap();
    assert!(
        dir.join("kubectl-ferrolb").is_file(),
        "no kubectl-ferrolb beside {} (cargo build -p kubectl-ferrolb)",
        controller.display()
    );
    let mut all = vec!["ferrolb"];
    all.extend(args);
    let out = lab.kubectl_plugin(dir, &all).await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The plugin against the real API server, the Helm-installed pods and the example Service at
/// `hello`: status, services and explain, as tables and as JSON.
async fn the_plugin_reads_the_cluster(lab: &Lab, hello: IpAddr) {
    let owner = the_plugin_sees_all_well(lab, hello).await;
    let (_, table, _) = plugin(lab, &["status"]).await;
    println!("$ kubectl ferrolb status\n{table}");
    assert!(table.starts_with("No problems found."), "{table}");
    assert!(table.contains("SPEAKERS  3 of 3 ready"), "{table}");

    let (_, table, _) = plugin(lab, &["services", "-A"]).await;
    println!("$ kubectl ferrolb services -A\n{table}");
    let line = table
        .lines()
        .find(|l| l.contains(" hello "))
        .unwrap_or_default();
    assert!(
        line.starts_with("default") && line.contains(&hello.to_string()) && line.contains(&owner),
        "{table}"
    );

    // Explain: the served Service, then one asking for an address outside every pool.
    let (code, out, _) = plugin(lab, &["explain", "svc/hello", "-n", "default"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("Service default/hello: it has {hello}"))
            && out.contains(&format!("announced from node {owner}")),
        "{out}"
    );
    lab.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: stray\n  namespace: default\n  \
         annotations:\n    ferrolb.io/load-balancer-ips: 203.0.113.77\nspec:\n  type: \
         LoadBalancer\n  selector:\n    app: hello\n  ports:\n    - port: 80\n",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = plugin(lab, &["explain", "stray", "-n", "default"]).await;
        if out.contains("NotInAnyPool") {
            println!("$ kubectl ferrolb explain stray -n default\n{out}");
            assert_eq!(code, 2, "{out}");
            assert!(
                out.contains("\nFix: ask for an address inside a pool"),
                "{out}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no NotInAnyPool in:\n{out}\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, out, _) = plugin(lab, &["status"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("PROBLEMS\n")
            && out.contains("1 Service(s) have no address: default/stray"),
        "{out}"
    );
    let (code, _, err) = plugin(lab, &["explain", "svc/nothing", "-n", "default"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no Service nothing in namespace default"),
        "{err}"
    );

    migrate_from_the_cluster(lab).await;
}

/// MetalLB objects as MetalLB's own CRDs (from its Go module) store them, read back with
/// `migrate-from-metallb --from-cluster`: the same conversion as from a file of them, and one
/// the API server accepts under ferrolb's CRDs. (No BGPPeer: this API server refuses every
/// v1beta2 BGPPeer under MetalLB v0.15.3's CRD, whose ASN fields put a maximum of 2^32 - 1 on an
/// int32; the conversion of BGPPeers is tested from files.)
async fn migrate_from_the_cluster(lab: &Lab) {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/metallb-crds.sh"),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crds = String::from_utf8(out.stdout).unwrap();
    lab.kubectl(&["apply", "--server-side", "-f", crds.trim()])
        .await
        .unwrap();
    lab.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/ipaddresspools.metallb.io",
        "crd/l2advertisements.metallb.io",
    ])
    .await
    .unwrap();
    let metallb = r#"apiVersion: v1
kind: Namespace
metadata:
  name: metallb-system
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: docs
  namespace: metallb-system
spec:
  addresses:
    - 203.0.113.0/28
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: docs
  namespace: metallb-system
spec:
  ipAddressPools:
    - docs
  interfaces:
    - eth0
---
apiVersion: v1
kind: Service
metadata:
  name: legacy
  namespace: default
  annotations:
    metallb.io/address-pool: docs
spec:
  type: ClusterIP
  ports:
    - port: 80
"#;
    lab.apply(metallb).await.unwrap();

    let (code, from_cluster, err) = plugin(lab, &["migrate-from-metallb", "--from-cluster"]).await;
    assert!(code == 0 || code == 2, "{from_cluster}\n{err}");
    for needle in [
        "kind: IPAddressPool",
        "kind: L2Advertisement",
        "203.0.113.0/28",
        "ferrolb.io/address-pool: docs",
    ] {
        assert!(
            from_cluster.contains(needle),
            "{needle} in\n{from_cluster}\n{err}"
        );
    }

    // The same objects from a file give the same documents.
    let file = std::env::temp_dir().join(format!("ferrolb-metallb-{}.yaml", std::process::id()));
    std::fs::write(&file, metallb).unwrap();
    let (_, from_file, _) =
        plugin(lab, &["migrate-from-metallb", "-f", file.to_str().unwrap()]).await;
    std::fs::remove_file(&file).unwrap();
    let documents = |text: &str| {
        let mut docs: Vec<String> = text
            .split("\n---\n")
            .map(|d| d.trim().trim_start_matches("---").trim().to_string())
            .filter(|d| !d.is_empty())
            .collect();
        docs.sort();
        docs
    };
    assert_eq!(documents(&from_cluster), documents(&from_file));

    // ferrolb's CRDs and CEL rules accept the result, applied as its README says (server-side:
    // the partial Service sets its annotations and leaves the rest).
    lab.kubectl_as(
        &lab.lan_kubeconfig,
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&from_cluster),
    )
    .await
    .unwrap();
}

/// deploy/examples applied as an operator would: the Service gets an address, one node
/// answers for it, and both hello pods answer through it. The address.
async fn the_classic_example_answers(lab: &Lab) -> IpAddr {
    apply_example(lab, "pool.yaml").await;
    apply_example(lab, "service.yaml").await;
    deployment_ready(lab, "default", "hello").await;
    let address = address_of(lab, "default", "hello").await;
    owner_of(lab, address).await;
    let hello = pod_names(lab, "default", "app=hello").await;
    assert_eq!(hello.len(), 2, "{hello:?}");
    all_answer(lab, address, &hello).await;
    address
}

/// `kubectl apply -k deploy` on an IPv6-only cluster: the pods have IPv6 addresses only, so
/// the kubelets probe the speakers and controllers over IPv6, and the example Service gets an
/// IPv6 address that answers.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn kustomize_installs_ferrolb_on_an_ipv6_only_cluster() {
    lab::require_lab!();
    // Ready only when the kubelets' probes over IPv6 answer (they did not: issue 11).
    let lab = cluster(LabConfig {
        nodes: 2,
        ipv6_only: true,
        install: Install::Kustomize,
        ..Default::default()
    })
    .await;
    let address = the_classic_example_answers(&lab).await;
    assert!(address.is_ipv6(), "{address}");
    // The plugin on an IPv6-only cluster: the speakers' metrics through the API server's pod
    // proxy at their nodes' IPv6 addresses, the pool's IPv6 use, the announcer of the address.
    the_plugin_sees_all_well(&lab, address).await;
}

const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Two agnhost pods on node-1, which is excluded from announcing: a node that dies or hands
/// over takes no backend with it, so what is timed is ferrolb's part.
const HELLO_ON_NODE_1: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-1}
      containers:
        - name: hello
          image: registry.k8s.io/e2e-test-images/agnhost:2.53
          args: [serve-hostname, --http, --port=8080]
          ports: [{containerPort: 8080}]
          readinessProbe:
            httpGet: {path: /, port: 8080}
            periodSeconds: 2
"#;

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: LoadBalancer\n  selector: {{app: hello}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// A 4-node lab with kubelets, node-1 excluded and holding the hello pods, the example pool.
async fn failover_lab() -> Lab {
    let lab = cluster(LabConfig {
        nodes: 4,
        install: Install::Kustomize,
        ..Default::default()
    })
    .await;
    lab.label_node(1, EXCLUDE, Some("true")).await.unwrap();
    apply_example(&lab, "pool.yaml").await;
    lab.apply(HELLO_ON_NODE_1).await.unwrap();
    deployment_ready(&lab, "default", "hello").await;
    lab
}

/// Waits until node `i`'s speaker counts `n` live members.
async fn members_become(lab: &Lab, i: usize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = lab.speaker_metrics(i).await.unwrap_or_default();
        if lab::figures::metric(&metrics, "ferrolb_speaker_members") == Some(n as f64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "speaker {i} never saw {n} members; ferrolb's pods:\n{}",
            lab.ferrolb_pods_summary().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every kube-proxy has rules for `ip` and every speaker elects the node that
/// answers for it; that node.
async fn settled_owner(lab: &Lab, ip: IpAddr) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 1..=lab.nodes().len() {
        while !lab.proxy_programs(i, ip).unwrap() {
            assert!(
                Instant::now() < deadline,
                "kube-proxy on node {i} never programmed {ip}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    match lab.agreed_owner(ip, Duration::from_secs(30)).await {
        Ok(owner) => owner,
        Err(e) => panic!(
            "{e:#}; ferrolb's pods:\n{}",
            lab.ferrolb_pods_summary().await.unwrap_or_default()
        ),
    }
}

fn kubelet_trials() -> usize {
    std::env::var("FERROLB_KUBELET_FAILOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// Hard node death in a cluster of kubelets: the owner's kubelet, containerd, every pod
/// process (the speaker's among them) and its link go at once, while the client opens a new
/// connection every 5 ms; the gap is from the last success before to the first after. The
/// first trial also waits for the node lifecycle controller to mark the dead node NotReady and
/// checks that the address stays where it went meanwhile. Each node comes back as after a
/// reboot (containerd and the kubelet restart and bring the speaker's pod back).
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_node_dies_with_its_kubelet_and_its_addresses_move() {
    lab::require_lab!();
    let mut lab = failover_lab().await;
    let nodes = lab.nodes().len();
    let mut figures = lab::figures::Figures::default();
    for trial in 0..kubelet_trials() {
        let name = format!("trial-{trial}");
        lab.apply(&service(&name)).await.unwrap();
        let vip = address_of(&lab, "default", &name).await;
        let victim = settled_owner(&lab, vip).await;
        assert_ne!(victim, 1, "node-1 is excluded");
        lab.settle(vip).await.unwrap();
        let gap = lab
            .time_hard_death(victim, vip)
            .await
            .unwrap_or_else(|e| panic!("trial {trial}: {e:#}"));
        figures.gaps_ms.push(gap.as_secs_f64() * 1000.0);
        let successor = owner_of(&lab, vip).await;
        assert_ne!(successor, victim);

        if trial == 0 {
            // The node lifecycle controller notices the silent kubelet only after its grace
            // period; the address must not move when it does.
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut seen = vec![];
            loop {
                let ready = lab
                    .kubectl(&[
                        "get",
                        "node",
                        &lab.node(victim).name,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])
                    .await
                    .unwrap();
                seen.push(lab.answering_nodes(vip).unwrap());
                if ready.trim() == "Unknown" || ready.trim() == "False" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {victim} was never marked NotReady"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // A few seconds more for the speakers to read the new condition.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                seen.push(lab.answering_nodes(vip).unwrap());
            }
            assert!(
                seen.iter().all(|answering| answering == &vec![successor]),
                "{vip} moved while node {victim} went NotReady: {seen:?}"
            );
        }

        lab.revive_node(victim).await.unwrap();
        lab.wait_for_ferrolb(Duration::from_secs(180))
            .await
            .unwrap();
        for i in 1..=nodes {
            members_become(&lab, i, nodes).await;
        }
        lab.kubectl(&["delete", "service", &name, "--wait=false"])
            .await
            .unwrap();
    }
    lab::figures::report(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &figures.summary("hard node death, kubelets and containerd on 4 nodes"),
    );
}

/// What the readiness probe and the handover are for: `kubectl rollout restart` of the
/// speakers, then `kubectl drain` of the owner's node, each while the client opens a new
/// connection every 5 ms. Reports the failed connections (target 0) beside the figures.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn rollout_restart_and_drain_of_the_speakers() {
    lab::require_lab!();
    let mut lab = failover_lab().await;
    lab.apply(&service("web")).await.unwrap();
    let vip = address_of(&lab, "default", "web").await;
    settled_owner(&lab, vip).await;
    lab.settle(vip).await.unwrap();
    let before = pod_names(
        &lab,
        FERROLB_NAMESPACE,
        "app.kubernetes.io/component=speaker",
    )
    .await;

    let mut lines = vec![];
    // The rollout replaces four pods one at a time, each after the last is Ready (seconds);
    // the probe covers it and quiet time after, which shows the noise floor.
    let run = lab::probe::Background::start(
        &lab.client_ns,
        lab::ProbeConfig::failover(vip, Duration::from_secs(50)),
    );
    let started = Instant::now();
    rollout_restart_speakers(&lab, "35s").await;
    let took = started.elapsed();
    let report = run.finish_after(QUIET_AFTER).await.unwrap();
    let after = pod_names(
        &lab,
        FERROLB_NAMESPACE,
        "app.kubernetes.io/component=speaker",
    )
    .await;
    assert!(
        before.is_disjoint(&after),
        "every speaker pod was replaced: {before:?} -> {after:?}"
    );
    lines.push(format!(
        "rollout restart of 4 speakers (done {:.1} s in, probed {:?} more): {} of {} new connections failed, longest gap {:?} ({})",
        took.as_secs_f64(),
        QUIET_AFTER,
        report.failures(),
        report.samples.len(),
        report.longest_gap(),
        report.failure_summary()
    ));

    let owner = settled_owner(&lab, vip).await;
    lab.settle(vip).await.unwrap();
    let run = lab::probe::Background::start(
        &lab.client_ns,
        lab::ProbeConfig::failover(vip, Duration::from_secs(80)),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.kubectl(&[
        "drain",
        &lab.node(owner).name,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ])
    .await
    .unwrap();
    let report = run.finish_after(QUIET_AFTER).await.unwrap();
    let successor = owner_of(&lab, vip).await;
    assert_ne!(successor, owner, "a drained node stops announcing");
    lines.push(format!(
        "drain of the owner (node {owner} -> node {successor}): {} of {} new connections failed, longest gap {:?} ({})",
        report.failures(),
        report.samples.len(),
        report.longest_gap(),
        report.failure_summary()
    ));
    lab.kubectl(&["uncordon", &lab.node(owner).name])
        .await
        .unwrap();
    lines.push(bgp_rollout_restart_and_drain(&mut lab).await);
    lab::figures::report(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &format!("FIGURES speakers as pods:\n{}", lines.join("\n")),
    );
}

/// How long a probe runs on after the change it watches is over: a late failure (a second
/// owner, a withdrawal that comes late) shows there.
const QUIET_AFTER: Duration = Duration::from_secs(8);

/// `kubectl rollout restart` of the speakers' DaemonSet, returning once it is rolled out.
async fn rollout_restart_speakers(lab: &Lab, timeout: &str) {
    let daemonset = format!("daemonset/{}", lab::SPEAKER_DAEMONSET);
    lab.kubectl(&["-n", FERROLB_NAMESPACE, "rollout", "restart", &daemonset])
        .await
        .unwrap();
    lab.kubectl(&[
        "-n",
        FERROLB_NAMESPACE,
        "rollout",
        "status",
        &daemonset,
        &format!("--timeout={timeout}"),
    ])
    .await
    .unwrap();
}

/// The same in BGP mode: FRR on the LAN with ECMP over the advertising nodes (2 to 4; node 1
/// is excluded), a client behind it opening a new connection every 5 ms while the speakers'
/// DaemonSet is restarted and then a node the client goes through is drained. A stopping
/// speaker withdraws what the others serve and keeps its session until the router has moved;
/// a cordoned node withdraws. Each change of the router's ECMP group may cost the connections
/// in flight that it rehashes (see bench/RESULTS.md); new connections must keep opening
/// ([`lab::bgp::GRACEFUL_UNOPENED_MAX`]).
async fn bgp_rollout_restart_and_drain(lab: &mut Lab) -> String {
    let bgp = lab::bgp::BgpRouter::start(lab).await;
    lab.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web6\n  namespace: default\nspec:\n  type: LoadBalancer\n  ipFamilyPolicy: RequireDualStack\n  selector: {app: hello}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let vip = loop {
        let ingress = lab.ingress("default", "web6").await.unwrap();
        if let Some(v6) = ingress.into_iter().find(IpAddr::is_ipv6) {
            break v6;
        }
        assert!(Instant::now() < deadline, "web6 got no IPv6 address");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let advertisers = [2, 3, 4];
    bgp.converged(lab, vip, &advertisers).await;

    let window = Duration::from_secs(100);
    let run = lab::probe::Background::start(&bgp.client, lab::ProbeConfig::failover(vip, window));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rollout_restart_speakers(lab, "50s").await;
    let restarted = started.elapsed();
    bgp.converged(lab, vip, &advertisers).await;
    let through = bgp.client_path(lab, vip);
    lab.kubectl(&[
        "drain",
        &lab.node(through).name,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=30s",
    ])
    .await
    .unwrap();
    let rest: Vec<usize> = advertisers
        .iter()
        .copied()
        .filter(|i| *i != through)
        .collect();
    bgp.converged(lab, vip, &rest).await;
    assert!(
        started.elapsed() + QUIET_AFTER < window,
        "the rollout and drain outlasted the probe ({:?})",
        started.elapsed()
    );
    let report = run.finish_after(QUIET_AFTER).await.unwrap();
    assert!(
        report.unopened() <= lab::bgp::GRACEFUL_UNOPENED_MAX,
        "{} new connections could not open, as if a node went without withdrawing: {}",
        report.unopened(),
        report.failure_summary()
    );
    format!(
        "BGP mode through FRR: rollout restart of 4 speaker pods (done {:.1} s in), then a drain of node {through}: {} of {} new connections failed, longest gap {:?} ({})",
        restarted.as_secs_f64(),
        report.failures(),
        report.samples.len(),
        report.longest_gap(),
        report.failure_summary()
    )
}

/// Agnhost pods on one node, as many as the busy-node tests of the speaker issue need.
const BUSY_PODS: usize = 150;

/// [`BUSY_PODS`] agnhost pods pinned to node-1, each Ready once its HTTP answers.
fn busy_deployment() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: busy
  namespace: default
spec:
  replicas: {BUSY_PODS}
  selector:
    matchLabels: {{app: busy}}
  template:
    metadata:
      labels: {{app: busy}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: node-1}}
      terminationGracePeriodSeconds: 1
      containers:
        - name: busy
          image: {image}
          imagePullPolicy: Never
          args: [serve-hostname, --http, --port=8080]
          ports: [{{containerPort: 8080}}]
          readinessProbe:
            httpGet: {{path: /, port: 8080}}
            periodSeconds: 5
"#,
        image = lab::AGNHOST_IMAGE
    )
}

/// A Cluster-policy Service in front of the busy pods that asks for `address`.
fn busy_service(name: &str, address: IpAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{{ips}: \"{address}\"}}\nspec:\n  type: LoadBalancer\n  selector: {{app: busy}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n",
        ips = model::service::ANNOTATION_IPS
    )
}

/// The first address of the example pool's IPv6 range whose election ranks `nodes` in that
/// order ahead of every other node of the lab: the speakers' rule
/// (`speaker_core::election::owner`), so a test can choose who owns and who takes over.
fn address_ranking(lab: &Lab, nodes: &[usize]) -> IpAddr {
    let names: Vec<speaker_core::NodeName> = lab
        .nodes()
        .iter()
        .map(|n| speaker_core::NodeName::new(n.name.clone()))
        .collect();
    (0xc8..=0xfa)
        .map(|low| IpAddr::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, low)))
        .find(|ip| {
            let key = speaker_core::ElectionKey::new(*ip);
            let mut left: Vec<&speaker_core::NodeName> = names.iter().collect();
            nodes.iter().all(|want| {
                let owner = speaker_core::election::owner(&key, left.iter().copied());
                let wanted = &names[want - 1];
                left.retain(|n| *n != wanted);
                owner == Some(wanted)
            })
        })
        .unwrap_or_else(|| panic!("no pool address ranks nodes {nodes:?} first"))
}

/// Waits until every pod matching `selector` (there are `n`) runs Ready on node `i`; says
/// how many are in which state if that does not happen `within`.
async fn all_ready_on(lab: &Lab, selector: &str, n: usize, i: usize, within: Duration) {
    let node = lab.node(i).name.clone();
    let deadline = Instant::now() + within;
    loop {
        let pods = pods(lab, "default", selector).await;
        let ready = pods
            .iter()
            .filter(|p| {
                let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node);
                let status = p.status.as_ref();
                on_node
                    && status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == n && pods.len() == n {
            return;
        }
        if Instant::now() > deadline {
            let mut states = std::collections::BTreeMap::<String, usize>::new();
            for p in &pods {
                let status = p.status.clone().unwrap_or_default();
                let waiting = status
                    .container_statuses
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|c| c.state?.waiting?.reason);
                let state = format!(
                    "{} on {} {}",
                    status.phase.unwrap_or_default(),
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    waiting.unwrap_or_default()
                );
                *states.entry(state).or_default() += 1;
            }
            panic!(
                "{ready} of {n} pods ({selector}) Ready on {node} after {within:?}: {states:?}; \
                 the kubelet's log ends with:\n{}",
                lab.log_tail(&format!("kubelet-{node}"), 20)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `count` GETs through `ip:80` on new connections, each answered by one of `pods` (retried
/// while kube-proxy catches up, for at most 60 s in all); how many distinct pods answered.
async fn answered_by(lab: &Lab, ip: IpAddr, pods: &BTreeSet<String>, count: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = BTreeSet::new();
    let mut ok = 0;
    while ok < count {
        match lab.get(ip, 80).await {
            Ok(a) => {
                assert!(pods.contains(&a.pod), "{} answered through {ip}", a.pod);
                answered.insert(a.pod);
                ok += 1;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "GET through {ip}: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    answered.len()
}

/// A node carrying 150 real pods (150 veths on its CNI bridge) in an IPv6-only cluster: the
/// pods all become Ready; the busy node owns and announces an address whose election it wins;
/// another Service's owner (node-2, with the busy node ranked next) dies hard and the busy node
/// takes its address over, while new connections reach the busy node's pods throughout.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_node_with_150_pods_announces_and_fails_over() {
    lab::require_lab!();
    let started = Instant::now();
    let mut lab = cluster(LabConfig {
        nodes: 3,
        ipv6_only: true,
        install: Install::Kustomize,
        ..Default::default()
    })
    .await;
    apply_example(&lab, "pool.yaml").await;
    // The kubelet's default of 110 would leave 40 of them Pending ("Too many pods").
    let node = Api::<Node>::all(lab.client())
        .get(&lab.node(1).name)
        .await
        .unwrap();
    let room = node.status.and_then(|s| s.allocatable?.remove("pods"));
    assert_eq!(
        room.map(|q| q.0),
        Some(lab::plan::max_pods_per_kubelet(true).to_string()),
        "node-1's allocatable pods"
    );

    let pods_started = Instant::now();
    lab.apply(&busy_deployment()).await.unwrap();
    all_ready_on(&lab, "app=busy", BUSY_PODS, 1, Duration::from_secs(600)).await;
    let pods_ready = pods_started.elapsed();
    let busy = pod_names(&lab, "default", "app=busy").await;

    // The busy node wins this address's election: its speaker, among 150 veths, answers NDP.
    let own = address_ranking(&lab, &[1]);
    lab.apply(&busy_service("own", own)).await.unwrap();
    assert_eq!(address_of(&lab, "default", "own").await, own);
    assert_eq!(settled_owner(&lab, own).await, 1, "node-1 wins {own}");
    let spread = answered_by(&lab, own, &busy, 20).await;
    assert!(
        spread > 1,
        "20 connections through {own} reached {spread} pod"
    );
    let rss_busy = proc_status(lab.speaker_process(1).unwrap(), "VmRSS");
    let rss_idle = proc_status(lab.speaker_process(3).unwrap(), "VmRSS");

    // Node-2 owns this one and the busy node is next: node-2 dies with its kubelet.
    let moving = address_ranking(&lab, &[2, 1]);
    lab.apply(&busy_service("moving", moving)).await.unwrap();
    assert_eq!(address_of(&lab, "default", "moving").await, moving);
    assert_eq!(settled_owner(&lab, moving).await, 2, "node-2 wins {moving}");
    answered_by(&lab, moving, &busy, 20).await;
    lab.settle(moving).await.unwrap();
    let gap = lab
        .time_hard_death(2, moving)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        owner_of(&lab, moving).await,
        1,
        "the busy node takes {moving} over"
    );
    answered_by(&lab, moving, &busy, 20).await;

    lab::figures::report(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &format!(
            "FIGURES busy node (IPv6-only, 3 nodes, {BUSY_PODS} agnhost pods on node-1): pods \
             Ready {:.0} s after the Deployment; speaker VmRSS on the busy node {rss_busy}, on \
             an idle node {rss_idle}; hard death of node-2, the busy node taking over: gap {:.0} \
             ms; test {:.0} s",
            pods_ready.as_secs_f64(),
            gap.as_secs_f64() * 1000.0,
            started.elapsed().as_secs_f64()
        ),
    );
}
