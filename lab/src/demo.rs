//! `lab demo`: the README's demo on a real cluster: kubelets and containerd on every node,
//! ferrolb installed with `kubectl apply -k deploy` (its speaker and controller pods run from
//! the image the lab built), the examples of deploy/examples applied.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use lab::{Install, Lab, LabConfig, ProbeConfig};

fn step(text: &str) {
    println!("\n==> {text}");
}

const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

pub async fn run() -> Result<()> {
    step(
        "Starting a cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler; 3 nodes \
         with a kubelet, containerd and kube-proxy; ferrolb installed with kubectl apply -k deploy",
    );
    let mut lab = Lab::start(LabConfig {
        nodes: 3,
        pods: vec![],
        install: Install::Kustomize,
        ..LabConfig::default()
    })
    .await?;
    println!(
        "{}",
        lab.kubectl(&["get", "pods", "-A", "-o", "wide"]).await?
    );

    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    step("Applying deploy/examples/pool.yaml (a pool and its L2Advertisement)");
    print!(
        "{}",
        lab.kubectl(&["apply", "-f", &format!("{examples}/pool.yaml")])
            .await?
    );
    step(
        "Applying deploy/examples/service.yaml (Deployment hello, Service hello of type LoadBalancer)",
    );
    print!(
        "{}",
        lab.kubectl(&["apply", "-f", &format!("{examples}/service.yaml")])
            .await?
    );
    // The node killed below must take no hello pod with it: what is timed is then ferrolb's
    // failover, not the endpoint controller noticing dead pods (40 s and more).
    step(
        "Keeping the hello pods on node-1, which does not announce (label exclude-from-external-load-balancers)",
    );
    lab.label_node(1, EXCLUDE, Some("true")).await?;
    lab.kubectl(&[
        "patch",
        "deployment",
        "hello",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":"node-1"}}}}}"#,
    ])
    .await?;
    lab.kubectl(&["rollout", "status", "deployment/hello", "--timeout=120s"])
        .await?;
    // The old pods take a moment to go; the curls below should see only the new ones.
    for _ in 0..150 {
        let nodes = lab
            .kubectl(&[
                "get",
                "pods",
                "-l",
                "app=hello",
                "-o",
                "jsonpath={.items[*].spec.nodeName}",
            ])
            .await?;
        if nodes.split_whitespace().eq(["node-1", "node-1"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{}", lab.kubectl(&["get", "pods", "-o", "wide"]).await?);

    let address = wait_for_ingress(&lab).await?;
    println!("{}", lab.kubectl(&["get", "svc", "hello"]).await?);
    println!("{}", lab.kubectl(&["get", "ipaddresspools"]).await?);
    let owner = wait_for_owner(&lab, address, None).await?;
    println!(
        "    the client's ARP request for {address} is answered by node-{owner} ({}) alone",
        lab.node(owner).mac()
    );
    println!("    condition: {}", announced_condition(&lab).await?);
    println!("{}", lab.events("default", "hello").await?);

    step(&format!(
        "curl http://{address}/ from the client, six times (through kube-proxy on node-{owner})"
    ));
    wait_for_answer(&lab, address).await;
    for _ in 0..6 {
        match lab.get(address, 80).await {
            Ok(a) => println!("    {}", a.pod),
            Err(e) => println!("    failed: {e:#}"),
        }
    }

    step(&format!(
        "Killing node-{owner} (kubelet, containerd, the speaker's pod, kube-proxy and the LAN link at once) while the client opens a new connection every 10 ms"
    ));
    let probe = ProbeConfig::new((address, 80).into(), Duration::from_secs(4));
    let probing = {
        let ns = lab.client_ns.clone();
        tokio::task::spawn_blocking(move || lab::probe::run(&ns, &probe))
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.kill_node(owner)?;
    let report = probing.await??;
    println!(
        "    {} new connections: {} answered, {} failed; longest time without an answer: {}",
        report.samples.len(),
        report.successes(),
        report.failures(),
        report
            .longest_gap()
            .map(|g| format!("{} ms", g.as_millis()))
            .unwrap_or_else(|| "no answer after the kill".into())
    );
    let successor = wait_for_owner(&lab, address, Some(owner)).await?;
    println!(
        "    node-{successor} took {address} over: {}",
        lab.client_neighbour(address)?
    );
    for _ in 0..3 {
        match lab.get(address, 80).await {
            Ok(a) => println!("    {} through node-{successor}", a.pod),
            Err(e) => println!("    failed: {e:#}"),
        }
    }
    println!("    condition: {}", announced_condition(&lab).await?);

    step("Tearing the lab down");
    drop(lab);
    println!("    done: no namespace, process or file of the lab is left.");
    Ok(())
}

/// The one node answering ARP for `address` (other than `not`), within 15 s.
async fn wait_for_owner(lab: &Lab, address: IpAddr, not: Option<usize>) -> Result<usize> {
    for _ in 0..50 {
        if let [owner] = lab.answering_nodes(address)?[..]
            && owner != 0
            && Some(owner) != not
        {
            return Ok(owner);
        }
    }
    anyhow::bail!("no single node answers ARP for {address}")
}

/// The Service's `ferrolb.io/Announced` condition, as `status: message`.
async fn announced_condition(lab: &Lab) -> Result<String> {
    for _ in 0..50 {
        let text = lab
            .kubectl(&[
                "get",
                "svc",
                "hello",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"ferrolb.io/Announced\")].message}",
            ])
            .await?;
        if !text.trim().is_empty() {
            return Ok(text.trim().to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok("(not written yet)".into())
}

/// Waits (at most 15 s) until kube-proxy has programmed the address, so that the curls below
/// show the steady state.
async fn wait_for_answer(lab: &Lab, address: IpAddr) {
    for _ in 0..75 {
        if lab
            .get_within(address, 80, Duration::from_millis(200))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Service's first ingress address, once the controller has written it (at most 30 s).
async fn wait_for_ingress(lab: &Lab) -> Result<IpAddr> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(lab.client(), "default");
    for _ in 0..150 {
        let svc = api.get("hello").await?;
        let ip = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.first().and_then(|i| i.ip.clone()));
        if let Some(ip) = ip {
            return Ok(ip.parse()?);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "the controller gave the Service no address in 30 s; its Events:\n{}",
        lab.events("default", "hello").await?
    )
}
