//! `lab bench-controller`: time from Service creation to its address in status, through the
//! real API server, for many Services at once. Prints figures; asserts nothing about time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use lab::{Lab, LabConfig};

pub async fn controller(services: usize) -> Result<()> {
    let mut lab = Lab::start(LabConfig::bare(1)).await?;
    // A pool and, as in any real set-up, an advertisement for it.
    let pool = "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: bench\nspec:\n  addresses: [2001:db8:5::/112]\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata:\n  name: bench\nspec: {}\n";
    lab.kubectl_as(&lab.lan_kubeconfig, &["apply", "-f", "-"], Some(pool))
        .await?;
    lab.kubectl(&["create", "namespace", "bench"]).await?;
    let controller = std::env::current_exe()?.with_file_name("ferrolb-controller");
    lab.start_controller(&controller, 1).await?;
    // Let it take the Lease and sync before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let api: Api<Service> = Api::namespaced(lab.client(), "bench");
    let created: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let watch = {
        let (api, created) = (api.clone(), created.clone());
        tokio::spawn(async move {
            let mut latencies = vec![];
            let mut stream = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(svc)) = stream.next().await {
                let has_ip = svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|l| l.ingress)
                    .is_some_and(|i| !i.is_empty());
                let name = svc.metadata.name.unwrap_or_default();
                if has_ip && let Some(t) = created.lock().expect("not poisoned").remove(&name) {
                    latencies.push(t.elapsed());
                    if latencies.len() == services {
                        break;
                    }
                }
            }
            latencies
        })
    };
    let start = Instant::now();
    futures::stream::iter(0..services)
        .for_each_concurrent(32, |i| {
            let (api, created) = (api.clone(), created.clone());
            async move {
                let name = format!("s{i}");
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80}]},
                }))
                .expect("valid Service");
                created.lock().expect("not poisoned").insert(name, Instant::now());
                if let Err(e) = api.create(&Default::default(), &svc).await {
                    eprintln!("create s{i}: {e}");
                }
            }
        })
        .await;
    let mut latencies = tokio::time::timeout(Duration::from_secs(300), watch).await??;
    let total = start.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!("services: {}", latencies.len());
    println!(
        "all addressed after: {:.2} s ({:.0} Services/s)",
        total.as_secs_f64(),
        latencies.len() as f64 / total.as_secs_f64()
    );
    println!(
        "creation -> status: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    Ok(())
}
