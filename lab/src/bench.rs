//! `lab bench-soak`: speakers left alone under stress (see `lab::soak`); prints what moved.
//!
//! `lab bench-controller`: time from Service creation to its address in status, through the
//! real API server, for many Services at once; then every Service deleted at once and the time
//! until the pool shows them released. Prints figures (and the API writes each phase cost, from
//! the API server's own counters); asserts nothing about time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use crds::IPAddressPool;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use lab::process::proc_status;
use lab::{Lab, LabConfig};

/// How long either phase may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

pub async fn controller(services: usize) -> Result<()> {
    let mut lab = Lab::start(LabConfig::bare(1)).await?;
    // A pool and, as in any real set-up, an advertisement for it.
    let pool = "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: bench\nspec:\n  addresses: [2001:db8:5::/112]\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata:\n  name: bench\nspec: {}\n";
    lab.kubectl_as(&lab.lan_kubeconfig, &["apply", "-f", "-"], Some(pool))
        .await?;
    lab.kubectl(&["create", "namespace", "bench"]).await?;
    let controller = lab::binaries::FerrolbBinaries::find()?.controller;
    lab.start_controller(&controller, 1).await?;
    // Let it take the Lease and sync before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = lab
        .controller_pid(1)
        .context("the controller is not running")?;
    println!("controller before: {}", memory(pid)?);

    let api: Api<Service> = Api::namespaced(lab.client(), "bench");
    let writes_before = api_writes(&lab).await?;
    let lab::scale::Created {
        all_created: created,
        all_addressed: total,
        mut latencies,
    } = lab::scale::create_services(&api, services, lab::scale::Pace::AtOnce, |i| {
        serde_json::json!({
            "metadata": {"name": format!("s{i}")},
            // No NodePorts: their default range holds 2768, and traffic to an L2 address
            // takes kube-proxy's rules for the address itself.
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80}]},
        })
    })
    .await?;
    let created_writes = api_writes(&lab).await? - writes_before;
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!("services: {}", latencies.len());
    println!(
        "all created after: {:.2} s (the API server's own pace, 32 creations at a time)",
        created.as_secs_f64()
    );
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
    println!("API writes while creating (the bench's own creates included): {created_writes}");
    println!("controller with every Service addressed: {}", memory(pid)?);

    // Events go out after the addresses; settle before counting the release's writes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes_before = api_writes(&lab).await?;
    let start = Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let pools: Api<IPAddressPool> = Api::all(lab.client());
    loop {
        let assigned = pools
            .get("bench")
            .await?
            .status
            .and_then(|s| s.ipv6)
            .map_or(-1, |u| u.assigned);
        if assigned == 0 {
            break;
        }
        if start.elapsed() > PHASE_LIMIT {
            bail!("the pool still shows {assigned} addresses assigned");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let released = start.elapsed();
    let release_writes = api_writes(&lab).await? - writes_before;
    println!(
        "all deleted at once -> pool shows none assigned: {:.2} s",
        released.as_secs_f64()
    );
    println!("API writes while releasing (the bench's one delete included): {release_writes}");
    println!("controller after the release: {}", memory(pid)?);
    Ok(())
}

/// Writes the API server has served so far, by resource (and subresource), from its
/// `apiserver_request_total` (server-side apply counts as its own verb, APPLY).
async fn api_writes(lab: &Lab) -> Result<Writes> {
    Ok(Writes::parse(&lab.apiserver_metrics().await?))
}

#[derive(Debug, Default, PartialEq)]
struct Writes(BTreeMap<String, u64>);

impl Writes {
    fn parse(metrics: &str) -> Writes {
        let mut writes = BTreeMap::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_default()
                    .to_string()
            };
            if !matches!(
                label("verb").as_str(),
                "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
            ) {
                continue;
            }
            let mut resource = label("resource");
            let subresource = label("subresource");
            if !subresource.is_empty() {
                resource = format!("{resource}/{subresource}");
            }
            let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
            *writes.entry(resource).or_insert(0) += n;
        }
        Writes(writes)
    }
}

impl std::ops::Sub for Writes {
    type Output = Writes;
    fn sub(self, before: Writes) -> Writes {
        Writes(
            self.0
                .into_iter()
                .map(|(k, n)| {
                    let d = n.saturating_sub(before.0.get(&k).copied().unwrap_or(0));
                    (k, d)
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

impl std::fmt::Display for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: u64 = self.0.values().sum();
        let each: Vec<String> = self.0.iter().map(|(k, n)| format!("{k} {n}")).collect();
        write!(f, "{total} ({})", each.join(", "))
    }
}

/// A process's resident memory now and at its peak, from `/proc`.
fn memory(pid: u32) -> Result<String> {
    Ok(format!(
        "VmRSS {}, VmHWM {}",
        proc_status(pid, "VmRSS")?,
        proc_status(pid, "VmHWM")?
    ))
}

/// `lab bench-scale`: see `lab::scale`. Prints the report's lines, and plots the failover gaps
/// when asked.
pub async fn scale(
    config: lab::scale::ScaleConfig,
    plot: Option<std::path::PathBuf>,
) -> Result<()> {
    println!("scale run: {config:?}");
    let report = lab::scale::run(&config).await?;
    for line in report.lines() {
        println!("{line}");
    }
    if let Some(path) = plot {
        let title = format!(
            "Hard node death, {} speakers in the membership: gap between new connections ({} trials)",
            config.nodes, config.trials
        );
        std::fs::write(&path, lab::figures::gap_plot_svg(&report.failover, &title))?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

pub async fn soak(
    seconds: u64,
    nodes: usize,
    addresses: usize,
    hogs: usize,
    loss: Option<f64>,
) -> Result<()> {
    let speaker = lab::binaries::FerrolbBinaries::find()?.speaker;
    let lab = lab::soak::speakers_lab(&speaker, nodes, addresses).await?;
    let stress = lab::soak::Stress {
        hogs,
        loss_percent: loss,
    };
    let what = format!(
        "{nodes} nodes, {addresses} addresses, {hogs} spinning threads on {} CPUs, {}% loss",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loss.unwrap_or(0.0)
    );
    println!("soaking for {seconds} s: {what}");
    let report = lab::soak::soak(&lab, Duration::from_secs(seconds), &stress).await?;
    println!("{}", report.summary(&what));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Writes;

    #[test]
    fn writes_are_counted_by_resource_and_reads_are_not() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1"} 1000
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="status",verb="APPLY",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="status",verb="PATCH",version="v1"} 995
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="status",verb="PATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="services",scope="namespace",subresource="",verb="LIST",version="v1"} 7
"#;
        let w = Writes::parse(text);
        assert_eq!(w.0.get("services"), Some(&1000));
        // Server-side apply is counted as APPLY.
        assert_eq!(w.0.get("services/status"), Some(&1000));
        assert_eq!(w.0.len(), 2, "{w:?}");
        assert_eq!(
            (Writes::parse(text) - Writes::default()).to_string(),
            "2000 (services 1000, services/status 1000)"
        );
    }
}
