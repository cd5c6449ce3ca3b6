//! The lab against the real components: kube-apiserver with etcd, kube-proxy, the kernel.
//! These need root and the Kubernetes binaries; they run with FERROLB_LAB=1 (the README's test
//! command) and otherwise say that they were skipped.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use lab::{Lab, LabConfig, ProbeConfig, ServiceSpec};
use model::address_cases::{CASES, Expect};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Retries `f` until it succeeds or `within` passes; kube-proxy applies changes within a second
/// or so, and these tests wait for it instead of sleeping a fixed time.
async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The pods that answer `n` new connections to `ip:80`, and the client addresses seen on `n`
/// more.
async fn answers(
    lab: &Lab,
    ip: IpAddr,
    n: usize,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let (mut pods, mut clients) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..n {
        pods.insert(lab.get(ip, 80).await?.pod);
        clients.insert(lab.client_seen(ip, 80).await?.to_string());
    }
    Ok((pods, clients))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn schema_manifests_and_rbac_against_the_real_api_server() {
    lab::require_lab!();
    let lab = Lab::start(LabConfig::bare(1)).await.unwrap();

    // The parser's table, applied to the real API server: the CEL rules agree.
    let mut disagreements = vec![];
    for (i, case) in CASES.iter().enumerate() {
        let pool = format!(
            "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: case-{i}\nspec:\n  addresses: [{:?}]\n",
            case.input
        );
        let applied = lab
            .kubectl_as(
                &lab.lan_kubeconfig,
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&pool),
            )
            .await;
        let schema_rejects = matches!(case.expect, Expect::Reject { schema: true });
        match (&applied, schema_rejects) {
            (Ok(_), false) => {}
            (Err(e), true) if e.to_string().contains("Invalid value") => {}
            _ => disagreements.push(format!(
                "{:?}: schema_rejects={schema_rejects}, server said {applied:?}",
                case.input
            )),
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));

    // A readable message where the user looks.
    let bad = "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: bad\nspec:\n  addresses: [198.51.100.5/24]\n";
    let err = lab
        .kubectl_as(&lab.lan_kubeconfig, &["apply", "-f", "-"], Some(bad))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'198.51.100.5/24' has host bits set"), "{err}");

    // BGP mode's kinds: the API server compiles their rules (durations, IPs, communities) and
    // enforces the ranges the client-side evaluator leaves out.
    let bgp = "apiVersion: ferrolb.io/v1alpha1\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  myASN: 4200000001\n  peerASN: 64500\n  peerAddress: 2001:db8::1\n  holdTime: 9s\n  keepaliveTime: 3s\n  bfdProfile: fast\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata:\n  name: lan\nspec:\n  ipAddressPools: [lan]\n  communities: [65535:65281, large:4200000001:1:2, no-export]\n  localPref: 200\n---\napiVersion: ferrolb.io/v1alpha1\nkind: BFDProfile\nmetadata:\n  name: fast\nspec:\n  receiveInterval: 300\n  transmitInterval: 300\n  detectMultiplier: 3\n";
    lab.kubectl_as(
        &lab.lan_kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(bgp),
    )
    .await
    .unwrap();
    for (object, message) in [
        (
            "kind: BGPPeer\nmetadata:\n  name: p\nspec:\n  myASN: 64512\n  peerASN: 64500\n  peerAddress: 198.51.100.1\n  holdTime: 90s\n  keepaliveTime: 2m",
            "keepaliveTime must be shorter than holdTime",
        ),
        (
            "kind: BGPPeer\nmetadata:\n  name: p\nspec:\n  myASN: 4294967295\n  peerASN: 64500\n  peerAddress: 198.51.100.1",
            "spec.myASN: Invalid value",
        ),
        (
            "kind: BGPPeer\nmetadata:\n  name: p\nspec:\n  myASN: 64512\n  peerASN: 64500\n  peerAddress: fe80::1",
            "'fe80::1' is not a unicast address of a host",
        ),
        (
            "kind: BGPAdvertisement\nmetadata:\n  name: a\nspec:\n  communities: [65536:1]\n  aggregationLength: 33",
            "'65536:1' is not a community",
        ),
        (
            "kind: BFDProfile\nmetadata:\n  name: f\nspec:\n  detectMultiplier: 1",
            "spec.detectMultiplier: Invalid value",
        ),
    ] {
        let err = lab
            .kubectl_as(
                &lab.lan_kubeconfig,
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&format!("apiVersion: ferrolb.io/v1alpha1\n{object}\n")),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{object}: {err}");
    }

    // The install forms: the all-in-one YAML and the Helm chart's rendering are accepted.
    lab.kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        &repo("deploy/ferrolb.yaml"),
    ])
    .await
    .unwrap();
    let rendered = helm_template(&lab, &[]).await;
    lab.kubectl_as(
        &lab.lan_kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    )
    .await
    .unwrap();
    let custom = helm_template(
        &lab,
        &[
            "--set",
            "speaker.interfaces={eth0,eth1}",
            "--set",
            "controller.replicas=3",
            "--set",
            "handleUnclassed=false",
            "--set",
            "speaker.gossip.suspicionMs=400",
            "--set",
            "speaker.gossip.localHealthMax=4",
        ],
    )
    .await;
    assert!(
        custom.contains("--interfaces=eth0,eth1") && custom.contains("replicas: 3"),
        "{custom}"
    );
    // Both components read the class the same way: the value reaches both, or neither.
    assert_eq!(
        custom.matches("- --handle-unclassed=false").count(),
        2,
        "{custom}"
    );
    assert!(!rendered.contains("--handle-unclassed"), "{rendered}");
    assert!(
        custom.contains("- --gossip-suspicion-ms=400") && !rendered.contains("--gossip-suspicion"),
        "{custom}"
    );
    assert!(
        custom.contains("- --gossip-local-health-max=4") && !rendered.contains("--gossip-local"),
        "{custom}"
    );
    lab.kubectl_as(
        &lab.lan_kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&custom),
    )
    .await
    .unwrap();

    // Chart hygiene: lint-clean, and wrong values refused by its schema with where and why
    // (its NOTES: `helm_installs_ferrolb_...`).
    let lint = std::process::Command::new(&lab.bins.helm)
        .args(["lint", &repo("deploy/helm/ferrolb")])
        .output()
        .unwrap();
    let lint_text = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && !lint_text.contains("[WARNING]") && !lint_text.contains("[ERROR]"),
        "{lint_text}"
    );
    for (value, why) in [
        (
            "controller.replicas=two",
            "at '/controller/replicas': got string, want integer",
        ),
        ("logLevel=loud", "at '/logLevel': value must be one of"),
        (
            "speaker.metricsPort=70000",
            "at '/speaker/metricsPort': maximum",
        ),
        (
            "speaker.interface=eth0",
            "additional properties 'interface' not allowed",
        ),
        (
            "speaker.gossip.suspicionMs=0",
            "at '/speaker/gossip/suspicionMs': minimum",
        ),
    ] {
        let out = std::process::Command::new(&lab.bins.helm)
            .args([
                "template",
                "ferrolb",
                &repo("deploy/helm/ferrolb"),
                "--set",
                value,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "--set {value}: {err}"
        );
    }

    // The example pool is accepted and shows in `kubectl get`.
    lab.kubectl(&["apply", "-f", &repo("deploy/examples/pool.yaml")])
        .await
        .unwrap();
    let table = lab.kubectl(&["get", "ipaddresspools"]).await.unwrap();
    assert!(
        table.contains("AUTO ASSIGN") && table.contains("198.51.100.200-198.51.100.250"),
        "{table}"
    );

    // RBAC for real: each component's ServiceAccount token can do its job and no more.
    let controller = lab
        .service_account_kubeconfig("ferrolb-system", "ferrolb-controller")
        .await
        .unwrap();
    let speaker = lab
        .service_account_kubeconfig("ferrolb-system", "ferrolb-speaker")
        .await
        .unwrap();
    let as_user = |kc: &std::path::PathBuf, args: &'static [&'static str]| {
        let kc = kc.clone();
        let lab = &lab;
        async move { lab.kubectl_as(&kc, args, None).await }
    };
    for args in [
        &["get", "services", "-A"][..],
        &["get", "ipaddresspools"],
        &["get", "namespaces"],
        &["get", "l2advertisements"],
        &[
            "get",
            "lease",
            "ferrolb-controller",
            "-n",
            "ferrolb-system",
            "--ignore-not-found",
        ],
    ] {
        as_user(&controller, args)
            .await
            .unwrap_or_else(|e| panic!("controller: {args:?}: {e}"));
    }
    for args in [
        &["get", "services", "-A"][..],
        &["get", "endpointslices", "-A"],
        &["get", "nodes"],
        &["get", "ipaddresspools"],
        &["get", "l2advertisements"],
        &["get", "bgppeers"],
        &["get", "bgpadvertisements"],
        &["get", "bfdprofiles"],
        &[
            "auth",
            "can-i",
            "patch",
            "services",
            "--subresource=status",
            "-A",
        ],
        // A BGPPeer's password Secret, by name.
        &["auth", "can-i", "get", "secret/md5", "-n", "ferrolb-system"],
    ] {
        as_user(&speaker, args)
            .await
            .unwrap_or_else(|e| panic!("speaker: {args:?}: {e}"));
    }
    for (who, kc, args) in [
        ("controller", &controller, &["get", "secrets", "-A"][..]),
        (
            "controller",
            &controller,
            &["delete", "service", "kubernetes"],
        ),
        ("controller", &controller, &["get", "pods", "-A"]),
        (
            "speaker",
            &speaker,
            &["get", "secrets", "-n", "ferrolb-system"],
        ),
        (
            "speaker",
            &speaker,
            &["get", "secret", "md5", "-n", "default"],
        ),
        ("speaker", &speaker, &["delete", "ipaddresspool", "lan"]),
        ("speaker", &speaker, &["get", "pods", "-n", "default"]),
        (
            "speaker",
            &speaker,
            &["get", "pods", "-n", "ferrolb-system"],
        ),
        (
            "speaker",
            &speaker,
            &["annotate", "service", "kubernetes", "x=y"],
        ),
    ] {
        let err = as_user(kc, args)
            .await
            .expect_err(&format!("{who} may not {args:?}"))
            .to_string();
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{who} {args:?}: {err}"
        );
    }
}

async fn helm_template(lab: &Lab, extra: &[&str]) -> String {
    let out = std::process::Command::new(&lab.bins.helm)
        .args([
            "template",
            "ferrolb",
            &repo("deploy/helm/ferrolb"),
            "-n",
            "ferrolb-system",
            "--include-crds",
            "--kube-version",
            "1.36.3",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_load_balancer_address_reaches_the_pods_through_kube_proxy_on_every_node() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig::default()).await.unwrap();
    let (cluster_ip, local_ip) = (ip("198.51.100.200"), ip("198.51.100.201"));

    lab.expose(&ServiceSpec::new("default", "hello"))
        .await
        .unwrap();
    lab.set_ingress("default", "hello", &[cluster_ip])
        .await
        .unwrap();
    let mut local = ServiceSpec::new("default", "hello-local");
    local.external_traffic_policy = "Local".into();
    lab.expose(&local).await.unwrap();
    lab.set_ingress("default", "hello-local", &[local_ip])
        .await
        .unwrap();

    for i in 1..=3 {
        let node_ip = lab.node(i).ipv4.to_string();
        lab.point_client_at(cluster_ip, i).unwrap();
        lab.point_client_at(local_ip, i).unwrap();
        // Cluster: both pods through any node, the client's address masqueraded to the node's
        // address on the path to the pod (the LAN's, or its pod bridge's for its own pod).
        let (pods, clients) = eventually(Duration::from_secs(15), || answers(&lab, cluster_ip, 20))
            .await
            .unwrap();
        assert_eq!(pods, set(&["hello-1", "hello-2"]), "Cluster via node {i}");
        let node_addresses = set(&[&node_ip, &lab::plan::cni_gateway_v4(i).to_string()]);
        assert!(
            clients.is_subset(&node_addresses),
            "Cluster via node {i} masquerades: {clients:?}"
        );
        // Local: only the node's own pod, the client's address kept; no local pod, no answer.
        match i {
            3 => {
                let err = lab
                    .get_within(local_ip, 80, Duration::from_millis(500))
                    .await;
                assert!(
                    err.is_err(),
                    "Local via node 3 (no endpoint) answered: {err:?}"
                );
            }
            _ => {
                let (pods, clients) =
                    eventually(Duration::from_secs(15), || answers(&lab, local_ip, 10))
                        .await
                        .unwrap();
                assert_eq!(pods, set(&[&format!("hello-{i}")]), "Local via node {i}");
                assert_eq!(
                    clients,
                    set(&["198.51.100.10"]),
                    "Local via node {i} keeps the source"
                );
            }
        }
    }

    // IPv6: a dual-stack Service's IPv6 address, through NDP's neighbour entry.
    let mut dual = ServiceSpec::new("default", "hello-dual");
    dual.ip_family_policy = "RequireDualStack".into();
    lab.expose(&dual).await.unwrap();
    let v6 = ip("2001:db8::c8");
    lab.set_ingress("default", "hello-dual", &[ip("198.51.100.202"), v6])
        .await
        .unwrap();
    lab.point_client_at(v6, 2).unwrap();
    let (pods, _) = eventually(Duration::from_secs(15), || answers(&lab, v6, 20))
        .await
        .unwrap();
    assert_eq!(pods, set(&["hello-1", "hello-2"]), "IPv6 via node 2");

    // Readiness follows the pods: an unready pod leaves the rotation.
    lab.set_pod_ready("hello-2", false).await.unwrap();
    lab.point_client_at(cluster_ip, 1).unwrap();
    eventually(Duration::from_secs(15), || async {
        let (pods, _) = answers(&lab, cluster_ip, 10).await?;
        anyhow::ensure!(pods == set(&["hello-1"]), "still {pods:?}");
        Ok(())
    })
    .await
    .unwrap();

    // The probe: new connections every 10 ms for a second, all answered.
    let report = lab
        .probe(ProbeConfig::new(
            (cluster_ip, 80).into(),
            Duration::from_secs(1),
        ))
        .await
        .unwrap();
    assert!(
        report.samples.len() > 20,
        "{} samples",
        report.samples.len()
    );
    assert_eq!(
        report.failures(),
        0,
        "{:?}",
        report.samples.iter().find(|s| s.outcome.is_err())
    );
    assert_eq!(report.pods(), vec!["hello-1".to_string()]);
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn every_fault_works_and_teardown_leaves_nothing() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig {
        heartbeat: Duration::from_millis(500),
        ..Default::default()
    })
    .await
    .unwrap();
    let lb = ip("198.51.100.200");
    lab.expose(&ServiceSpec::new("default", "hello"))
        .await
        .unwrap();
    lab.set_ingress("default", "hello", &[lb]).await.unwrap();
    lab.point_client_at(lb, 1).unwrap();
    eventually(Duration::from_secs(15), || lab.get(lb, 80))
        .await
        .unwrap();

    // A stopped heartbeat: node-3's Lease stops moving, node-2's goes on. (Node 3 has no pod,
    // so its NotReady, 50 s later, changes no endpoint.)
    let leases: Api<Lease> = Api::namespaced(lab.client(), "kube-node-lease");
    let renewed = |name: &'static str| {
        let leases = leases.clone();
        async move {
            leases
                .get(name)
                .await
                .unwrap()
                .spec
                .unwrap()
                .renew_time
                .unwrap()
                .0
        }
    };
    lab.stop_heartbeat(3).unwrap();
    let (n3, n2) = (renewed("node-3").await, renewed("node-2").await);
    // Two of node-2's heartbeats (500 ms apart) are proof that node-3 had time for one.
    let mut beats = 0;
    let mut last = n2;
    let deadline = Instant::now() + Duration::from_secs(10);
    while beats < 2 {
        assert!(Instant::now() < deadline, "node-2's heartbeat stopped too");
        let now = renewed("node-2").await;
        if now > last {
            beats += 1;
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(renewed("node-3").await, n3, "node-3's heartbeat stopped");

    // Cordon.
    lab.cordon(3, true).await.unwrap();
    let node3 = Api::<Node>::all(lab.client()).get("node-3").await.unwrap();
    assert_eq!(node3.spec.unwrap().unschedulable, Some(true));

    // Link down and up again.
    lab.set_link(1, false).unwrap();
    assert!(
        lab.get_within(lb, 80, Duration::from_millis(500))
            .await
            .is_err(),
        "node 1's link is down"
    );
    lab.set_link(1, true).unwrap();
    // Back to both pods, the one behind node 2 included (routes restored with the link).
    eventually(Duration::from_secs(10), || async {
        let (pods, _) = answers(&lab, lb, 20).await?;
        anyhow::ensure!(pods == set(&["hello-1", "hello-2"]), "only {pods:?}");
        Ok(())
    })
    .await
    .unwrap();

    // The API server stops: the data path does not care; it comes back.
    lab.stop_apiserver();
    assert!(
        lab.client().apiserver_version().await.is_err(),
        "the API server is stopped"
    );
    lab.get(lb, 80).await.unwrap();
    lab.start_apiserver().await.unwrap();
    lab.client().apiserver_version().await.unwrap();

    // A foreign host claims an address: the client's ARP finds the foreign host's MAC.
    let claimed = ip("198.51.100.240");
    let capture = lab.capture_neighbour_traffic("foreign").unwrap();
    let foreign = lab.add_foreign_host(&[claimed]).unwrap();
    let foreign_mac = foreign.ip(&["link", "show", "eth0"]).unwrap();
    let foreign_mac = foreign_mac
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string();
    let refused = lab
        .get_within(claimed, 80, Duration::from_millis(500))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("refused"),
        "the foreign host answers (with a RST): {refused}"
    );
    let neighbour = lab.client_neighbour(claimed).unwrap();
    assert!(
        neighbour.contains(&foreign_mac),
        "client's entry {neighbour:?} is the foreign {foreign_mac}"
    );
    let captured = capture.finish();
    assert!(
        captured
            .lines()
            .any(|l| l.contains(&foreign_mac) && l.contains("is-at")),
        "ARP reply from {foreign_mac} in the capture:\n{captured}"
    );

    // Node 1 dies: nothing answers through it; node 2 still serves.
    lab.kill_node(1).unwrap();
    assert!(
        lab.get_within(lb, 80, Duration::from_millis(500))
            .await
            .is_err(),
        "node 1 is dead"
    );
    // Node 2 still serves from hello-2 (hello-1 died with node 1, but stays an endpoint until
    // the node lifecycle controller's grace period ends: some connections go to it and fail).
    lab.point_client_at(lb, 2).unwrap();
    eventually(Duration::from_secs(10), || async {
        let answer = lab.get_within(lb, 80, Duration::from_millis(500)).await?;
        anyhow::ensure!(answer.pod == "hello-2", "answer from {}", answer.pod);
        Ok(())
    })
    .await
    .unwrap();

    // Teardown: no namespace, process or directory is left.
    let (prefix, dir, etcd) = (lab.prefix.clone(), lab.dir.clone(), lab.etcd_pid().unwrap());
    drop(lab);
    let left = lab::netns::list(|n| n.starts_with(&format!("{prefix}-"))).unwrap();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!dir.exists(), "{} left", dir.display());
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(etcd as i32), None).is_ok();
    assert!(!alive, "etcd ({etcd}) still runs");
    assert!(!lab::running_prefixes().unwrap().contains(&prefix));
}

/// A bench stopped with Ctrl-C (SIGINT) takes its lab with it: no process, namespace or
/// directory of it is left for `lab down --all` to find.
#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn a_bench_stopped_with_sigint_tears_its_lab_down() {
    lab::require_lab!();
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader};
    let mut bench = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args([
            "bench-soak",
            "--seconds",
            "120",
            "--nodes",
            "2",
            "--addresses",
            "2",
        ])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut prefix = None;
    let mut lines = BufReader::new(bench.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("lab is up")
            && let Some((_, rest)) = line.split_once("prefix=")
        {
            prefix = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let prefix = prefix.expect("the bench logged its lab's prefix");
    let dir = std::env::temp_dir().join(format!("ferrolb-lab-{prefix}"));
    let started = Instant::now();
    while lab::process::mentioning(&dir.display().to_string()).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lab runs nothing"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the lab's speakers start, so there is something to tear down.
    std::thread::sleep(Duration::from_secs(3));
    kill(Pid::from_raw(bench.id() as i32), Signal::SIGINT).unwrap();
    // Read the rest so the bench never blocks on a full pipe while it tears down.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = bench.wait().unwrap();
    assert!(!status.success(), "an interrupted bench says so: {rest:?}");

    let left = lab::process::mentioning(&dir.display().to_string());
    let namespaces = lab::netns::list(|n| n.starts_with(&format!("{prefix}-"))).unwrap();
    // Whatever the assertions find, nothing stays behind for the next test.
    lab::down(&prefix).unwrap();
    assert!(left.is_empty(), "{left:#?}");
    assert!(namespaces.is_empty(), "{namespaces:?}");
    assert!(!dir.exists(), "{} is left", dir.display());
}
