//! `lab demo`: the README's demo, with ferrolb's controller and speakers for real. The one
//! thing the lab does by hand is what no ferrolb component does in a cluster either: it places
//! the pods.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use lab::{Lab, LabConfig, ProbeConfig, ServiceSpec};

fn step(text: &str) {
    println!("\n==> {text}");
}

const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

pub async fn run() -> Result<()> {
    step("Starting a lab: etcd, kube-apiserver, 3 nodes with kube-proxy, 2 hello pods, a client");
    // Both pods on node-1, which does not announce: the node killed below takes no pod with it,
    // so what is timed is ferrolb's failover, not the endpoint controller's.
    let mut lab = Lab::start(LabConfig {
        nodes: 3,
        pods: vec![1, 1],
        ..LabConfig::default()
    })
    .await?;
    lab.label_node(1, EXCLUDE, Some("true")).await?;
    println!("{}", lab.kubectl(&["get", "nodes", "-o", "wide"]).await?);

    step("Applying deploy/examples/pool.yaml (a pool and its L2Advertisement)");
    let pool = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/pool.yaml");
    print!("{}", lab.kubectl(&["apply", "-f", pool]).await?);

    step(
        "Starting ferrolb-controller and a ferrolb-speaker on every node, as their ServiceAccounts",
    );
    let bin = |name: &str| -> Result<std::path::PathBuf> {
        Ok(std::env::current_exe()?.with_file_name(name))
    };
    lab.start_controller(&bin("ferrolb-controller")?, 1).await?;
    for i in 1..=3 {
        lab.start_speaker(&bin("ferrolb-speaker")?, i).await?;
    }

    step("Creating the Service hello (type LoadBalancer, port 80 -> the pods' 8080)");
    lab.expose(&ServiceSpec::new("default", "hello")).await?;
    let address = wait_for_ingress(&lab).await?;
    println!("{}", lab.kubectl(&["get", "svc", "hello"]).await?);
    println!("{}", lab.kubectl(&["get", "ipaddresspools"]).await?);
    let owner = wait_for_owner(&lab, address, None).await?;
    println!(
        "    the client's ARP request for {address} is answered by node-{owner} ({}) alone",
        lab.node(owner).mac()?
    );
    println!("    condition: {}", announced_condition(&lab).await?);
    println!("{}", lab.events("default", "hello").await?);

    step(&format!(
        "curl http://{address}/ from the client, six times (through kube-proxy on node-{owner})"
    ));
    wait_for_answer(&lab, address).await;
    for _ in 0..6 {
        match lab.get(address, 80).await {
            Ok(a) => println!(
                "    Hello from {} (it saw the client as {})",
                a.pod,
                a.client.as_deref().unwrap_or("?")
            ),
            Err(e) => println!("    failed: {e:#}"),
        }
    }

    step(&format!(
        "Killing node-{owner} (speaker and kube-proxy killed, LAN link down) while the client opens a new connection every 10 ms"
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
            Ok(a) => println!("    Hello from {} through node-{successor}", a.pod),
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
        let macs =
            lab::l2query::who_has(&lab.client_ns, "eth0", address, Duration::from_millis(300))?;
        if let [mac] = &macs[..] {
            let mac = mac.to_string();
            for i in 1..=lab.nodes().len() {
                if Some(i) != not && lab.node(i).mac()? == mac {
                    return Ok(i);
                }
            }
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
        "the controller gave the Service no address in 30 s; see {}",
        lab.log_path("controller-1").display()
    )
}
