//! `lab demo`: the README's demo. It runs what exists for real and says plainly what the lab
//! does by hand because ferrolb's controller or speaker cannot do it yet.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use lab::{Lab, LabConfig, ProbeConfig, ServiceSpec};

fn step(text: &str) {
    println!("\n==> {text}");
}

fn stand_in(text: &str) {
    println!("    [stand-in] {text}");
}

pub async fn run() -> Result<()> {
    step("Starting a lab: etcd, kube-apiserver, 3 nodes with kube-proxy, 2 hello pods, a client");
    let mut lab = Lab::start(LabConfig::default()).await?;
    println!("{}", lab.kubectl(&["get", "nodes", "-o", "wide"]).await?);

    step("Applying deploy/examples/pool.yaml");
    let pool = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/pool.yaml");
    print!("{}", lab.kubectl(&["apply", "-f", pool]).await?);
    println!("{}", lab.kubectl(&["get", "ipaddresspools"]).await?);

    step("Starting ferrolb-controller (as its ServiceAccount, with leader election)");
    let controller = std::env::current_exe()?.with_file_name("ferrolb-controller");
    lab.start_controller(&controller, 1).await?;

    step("Creating the Service hello (type LoadBalancer, port 80 -> the pods' 8080)");
    lab.expose(&ServiceSpec::new("default", "hello")).await?;
    let address = wait_for_ingress(&lab).await?;
    println!("{}", lab.kubectl(&["get", "svc", "hello"]).await?);
    println!("{}", lab.kubectl(&["get", "ipaddresspools"]).await?);
    let events = lab
        .kubectl(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "regarding.name=hello",
            "-o",
            "custom-columns=REASON:.reason,NOTE:.note",
        ])
        .await?;
    println!("{events}");

    stand_in("ferrolb-speaker does not answer ARP yet (issue 5): the lab points the client's");
    stand_in("neighbour entry for the address at node-1, as node-1's ARP answer would.");
    lab.point_client_at(address, 1)?;
    println!("    client: {}", lab.client_neighbour(address)?);

    step(&format!(
        "curl http://{address}/ from the client, six times (through kube-proxy on node-1)"
    ));
    wait_for_answer(&lab, address).await;
    for _ in 0..6 {
        match lab.get(address, 80).await {
            Ok(a) => println!(
                "    Hello from {} (it saw the client as {})",
                a.pod, a.client
            ),
            Err(e) => println!("    failed: {e:#}"),
        }
    }

    step(
        "Killing node-1 (kube-proxy killed, LAN link down) while the client opens a new connection every 10 ms",
    );
    let probe = ProbeConfig::new((address, 80).into(), Duration::from_secs(4));
    let probing = {
        let ns = lab.client_ns.clone();
        tokio::task::spawn_blocking(move || lab::probe::run(&ns, &probe))
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.kill_node(1)?;
    let report = probing.await??;
    let first_failure = report
        .samples
        .iter()
        .find(|s| s.outcome.is_err())
        .map(|s| s.at);
    println!(
        "    {} new connections: {} answered, {} failed{}",
        report.samples.len(),
        report.successes(),
        report.failures(),
        first_failure
            .map(|t| format!(" (from {:.2} s on)", t.as_secs_f64()))
            .unwrap_or_default()
    );
    println!(
        "    No speaker takes the address over yet, so it stays dead: there is no failover time to show."
    );
    println!("    The speaker (issue 5) will move it to another node in well under a second.");

    step(
        "What a takeover will do: point the client at node-2 by hand, and the address answers again",
    );
    stand_in("hello-1 died with node-1. A real cluster drops it from the endpoints after the node");
    stand_in("monitor's grace period (40 s by default); the lab marks it not ready at once.");
    lab.set_pod_ready("hello-1", false).await?;
    lab.point_client_at(address, 2)?;
    wait_for_answer(&lab, address).await;
    for _ in 0..3 {
        match lab.get(address, 80).await {
            Ok(a) => println!("    Hello from {} through node-2", a.pod),
            Err(e) => println!("    failed: {e:#}"),
        }
    }

    step("Tearing the lab down");
    drop(lab);
    println!("    done: no namespace, process or file of the lab is left.");
    Ok(())
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
