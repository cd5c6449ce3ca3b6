//! The scale run: many light nodes with a speaker each, many Services through the real API
//! server and controller, and what that costs and how fast it is. Measures:
//! - how long the gossip takes to converge (every speaker counting every node);
//! - how evenly the addresses of one pool spread over the nodes;
//! - Service created → the first ARP / NDP answer for its address on the LAN;
//! - idle cost per speaker: CPU, gossip bytes, resident memory;
//! - hard node death failover with every speaker in the membership (traffic goes through the
//!   first few nodes, the only ones with kube-proxy, selected by their own advertisement).
//!
//! Prints nothing and asserts nothing about time: it returns a [`ScaleReport`], and the bench
//! command prints it, the test checks what must hold whatever the machine's speed.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::figures::{Figures, metric, metric_sum};
use crate::{Lab, LabConfig, plan};

/// The label of the nodes traffic goes through (the ones running kube-proxy).
const TRAFFIC_LABEL: &str = "bench.ferrolb.io/traffic";
/// The spread pool: inside the LAN's /64, far from every node's and the example pool's.
const SCALE_POOL: &str = "2001:db8::1:0/112";
/// Addresses the first-answer samples ask for, out of the scale pool's top (IPv6) and the
/// traffic pool (IPv4), so they never collide with the automatically assigned ones.
fn sample_v6(k: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        1,
        0xf000 + k as u16,
    ))
}
fn sample_v4(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 210 + k as u8))
}
/// The failover Service's addresses, one per trial in turn.
fn trial_v4(trial: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 200 + (trial % 10) as u8))
}
const MAX_V4_SAMPLES: usize = 40;

#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Light nodes, each with a speaker.
    pub nodes: usize,
    /// Nodes with kube-proxy, through which the failover trials' traffic goes (at least 2).
    pub kube_proxies: usize,
    /// Services with one IPv6 address each from the spread pool.
    pub services: usize,
    /// Services created one at a time for the first-answer latency, per family (IPv4 at most
    /// 40).
    pub answer_samples: usize,
    /// How the spread Services are created. On two cores, 100 speakers and the API server
    /// cannot take 1000 at once: the speakers' gossip starves and flaps.
    pub pace: Pace,
    /// How long the idle cost is measured.
    pub idle: Duration,
    /// Hard node death trials.
    pub trials: usize,
    /// Start the speakers once every Service has its address, rather than before the first.
    pub speakers_last: bool,
    /// How long convergence and single ownership may take before the run fails.
    pub settle: Duration,
    pub speaker: PathBuf,
    /// Extra flags for every speaker.
    pub speaker_flags: Vec<String>,
    pub controller: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    pub nodes: usize,
    pub services: usize,
    /// From the first speaker's start to every speaker counting every node.
    pub converged: Duration,
    /// From the first Service's creation to every one having an address in status.
    pub addressed: Duration,
    /// From the first Service's creation to every address owned by exactly one speaker.
    pub announced: Duration,
    /// From the first Service's creation to every one's `Announced` condition written True:
    /// the speakers' writes, which the samples and the idle figures wait for.
    pub reported: Duration,
    /// Services whose condition said so then (all, unless the wait gave up).
    pub reported_services: usize,
    /// Addresses of the spread pool owned per node, node 1 first.
    pub owned_per_node: Vec<usize>,
    /// Service created → first ARP answer (IPv4) / NDP answer (IPv6), in ms.
    pub first_answer_v4: Figures,
    pub first_answer_v6: Figures,
    /// The speakers' cost with every spread address in place, and again with none.
    pub idle_with_addresses: Idle,
    pub idle_without: Idle,
    pub controller_rss_kib: u64,
    /// Every speaker's memory once every condition was written (the settled state), read and
    /// logged at once so that a later failure of the run does not lose it.
    pub settled_memory: SettledMemory,
    /// Times the controller exited while the Services were created, and was started again.
    pub controller_restarts: usize,
    /// False alarms from convergence to the first failover trial, summed over the speakers
    /// (every speaker stays alive meanwhile, so each counts).
    pub false_alarms: FalseAlarms,
    /// Hard node death gaps, ms.
    pub failover: Figures,
}

/// Each speaker's `VmRSS`, `RssAnon` and `RssFile` in KiB, node 1 first.
#[derive(Debug, Clone, Default)]
pub struct SettledMemory {
    pub vm_rss_kib: Vec<u64>,
    pub rss_anon_kib: Vec<u64>,
    pub rss_file_kib: Vec<u64>,
}

/// The limit the issue sets a speaker at 100 nodes and 10,000 Services.
const SPEAKER_RSS_TARGET_KIB: u64 = 30 * 1024;

impl SettledMemory {
    fn read(lab: &Lab) -> Result<SettledMemory> {
        let mut memory = SettledMemory::default();
        for i in 1..=lab.nodes().len() {
            let pid = lab.speaker_process(i)? as u32;
            let kib = |field| crate::process::proc_status_kib(pid, field);
            memory.vm_rss_kib.push(kib("VmRSS")?);
            memory.rss_anon_kib.push(kib("RssAnon")?);
            memory.rss_file_kib.push(kib("RssFile")?);
        }
        Ok(memory)
    }

    fn line(&self, what: &str) -> String {
        let mib = |v: &[u64]| -> Vec<f64> { v.iter().map(|k| *k as f64 / 1024.0).collect() };
        let mut heaviest: Vec<(u64, usize)> = self.vm_rss_kib.iter().copied().zip(1..).collect();
        heaviest.sort_unstable_by(|a, b| b.cmp(a));
        let heaviest: Vec<String> = heaviest
            .iter()
            .take(5)
            .map(|(kib, node)| format!("node-{node} {:.1}", *kib as f64 / 1024.0))
            .collect();
        format!(
            "FIGURES scale, {what}, settled: speaker VmRSS MiB {} (median {:.1}; {} of {} over 30 MiB; heaviest: {}); RssAnon {} (median {:.1}); RssFile {}",
            stats(&mib(&self.vm_rss_kib)),
            median(&mib(&self.vm_rss_kib)),
            self.vm_rss_kib
                .iter()
                .filter(|k| **k > SPEAKER_RSS_TARGET_KIB)
                .count(),
            self.vm_rss_kib.len(),
            heaviest.join(", "),
            stats(&mib(&self.rss_anon_kib)),
            median(&mib(&self.rss_anon_kib)),
            stats(&mib(&self.rss_file_kib)),
        )
    }
}

/// The nearest-rank median, as every other figure of the lab is read.
fn median(v: &[f64]) -> f64 {
    crate::figures::percentile(v, 50.0)
}

/// What the speakers counted between two readings while none of them died.
#[derive(Debug, Clone, Default)]
pub struct FalseAlarms {
    pub seconds: f64,
    /// Members declared down, as each speaker saw it.
    pub downs: f64,
    /// Members seen back as a new generation, and speakers told they had been declared down.
    pub restarts: f64,
    pub rejoins: f64,
    /// Fast-path verdicts: a watched node answered no echo request for the silence.
    pub fast_path_verdicts: f64,
}

impl FalseAlarms {
    async fn since(
        lab: &Lab,
        before: &BTreeMap<&'static str, f64>,
        start: Instant,
    ) -> Result<FalseAlarms> {
        let after = crate::soak::retried(|| crate::soak::counters(lab)).await?;
        let delta = |key: &str| after.get(key).unwrap_or(&0.0) - before.get(key).unwrap_or(&0.0);
        Ok(FalseAlarms {
            seconds: start.elapsed().as_secs_f64(),
            downs: delta("downs"),
            restarts: delta("restarts"),
            rejoins: delta("rejoins"),
            fast_path_verdicts: delta("verdicts"),
        })
    }
}

/// Per speaker, over a window in which nothing changes.
#[derive(Debug, Clone, Default)]
pub struct Idle {
    pub seconds: f64,
    pub cpu_seconds_per_hour: Vec<f64>,
    /// Gossip UDP payload bytes per second, in and out.
    pub gossip_in_per_second: Vec<f64>,
    pub gossip_out_per_second: Vec<f64>,
    /// The fast path's echo requests per second, and the nodes it watches at the end.
    pub echo_per_second: Vec<f64>,
    pub watched_nodes: Vec<f64>,
    /// Resident set at the end, KiB.
    pub rss_kib: Vec<u64>,
}

impl Idle {
    fn line(&self, what: &str) -> String {
        let rss: Vec<f64> = self.rss_kib.iter().map(|k| *k as f64 / 1024.0).collect();
        format!(
            "FIGURES scale, {what}, idle for {:.0} s: per speaker CPU s per hour {}; gossip bytes/s in {}, out {}; echo requests/s {} to watched nodes {}; RSS MiB {}",
            self.seconds,
            stats(&self.cpu_seconds_per_hour),
            stats(&self.gossip_in_per_second),
            stats(&self.gossip_out_per_second),
            stats(&self.echo_per_second),
            stats(&self.watched_nodes),
            stats(&rss),
        )
    }
}

/// Min, mean and max.
fn stats(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
    format!(
        "min {:.1}, mean {:.1}, max {:.1}",
        s.first().copied().unwrap_or(0.0),
        mean,
        s.last().copied().unwrap_or(0.0)
    )
}

impl ScaleReport {
    /// The report as lines of text, for the bench's output and the figures file.
    pub fn lines(&self) -> Vec<String> {
        let owned: Vec<f64> = self.owned_per_node.iter().map(|n| *n as f64).collect();
        let what = format!("{} nodes", self.nodes);
        vec![
            format!(
                "FIGURES scale, {what}: gossip converged (every speaker counts {} members) {:.2} s after the first speaker started",
                self.nodes,
                self.converged.as_secs_f64()
            ),
            format!(
                "FIGURES scale, {what}: {} Services all addressed after {:.2} s, every address owned by exactly one speaker after {:.2} s; the controller restarted {} times meanwhile",
                self.services,
                self.addressed.as_secs_f64(),
                self.announced.as_secs_f64(),
                self.controller_restarts
            ),
            format!(
                "FIGURES scale, {what}: from convergence to the first failover trial ({:.0} s, no speaker died), summed over the speakers: members declared down {}, members restarted {}, speakers rejoined {}, fast-path verdicts {} ({:.2} downs per speaker-hour)",
                self.false_alarms.seconds,
                self.false_alarms.downs,
                self.false_alarms.restarts,
                self.false_alarms.rejoins,
                self.false_alarms.fast_path_verdicts,
                self.false_alarms.downs
                    / (self.false_alarms.seconds / 3600.0 * self.nodes as f64)
                        .max(f64::MIN_POSITIVE)
            ),
            format!(
                "FIGURES scale, {what}: Announced condition True on {} of {} Services {:.2} s after the first creation",
                self.reported_services,
                self.services,
                self.reported.as_secs_f64()
            ),
            format!(
                "FIGURES scale, {what}: addresses owned per node, {} addresses: {} (every node: {:?})",
                self.services,
                stats(&owned),
                self.owned_per_node
            ),
            self.first_answer_v4.summary(&format!(
                "scale, {what}: Service created -> first ARP answer"
            )),
            self.first_answer_v6.summary(&format!(
                "scale, {what}: Service created -> first NDP answer"
            )),
            self.settled_memory
                .line(&format!("{what}, {} Services", self.services)),
            self.idle_with_addresses
                .line(&format!("{what}, {} Services", self.services)),
            self.idle_without.line(&format!("{what}, no Service")),
            format!(
                "FIGURES scale, {what}: controller RSS with {} Services {:.1} MiB",
                self.services,
                self.controller_rss_kib as f64 / 1024.0
            ),
            self.failover.summary(&format!(
                "scale, {what}: hard node death, {} speakers in the membership",
                self.nodes
            )),
        ]
    }
}

/// Runs the whole scale run; the lab is torn down on return, also on failure.
pub async fn run(config: &ScaleConfig) -> Result<ScaleReport> {
    // Without trials (a run for memory and spread) no traffic flows, and kube-proxy, which
    // rewrites its rules for every Service, may be left out.
    if config.kube_proxies > config.nodes || (config.trials > 0 && config.kube_proxies < 2) {
        bail!(
            "the failover trials need 2 to {} nodes with kube-proxy",
            config.nodes
        );
    }
    let mut lab = Lab::start(LabConfig {
        // The failover Service's backend is outside the cluster: its Endpoints are mirrored.
        controller_manager: true,
        ..LabConfig::light(config.nodes, config.kube_proxies)
    })
    .await?;
    let mut report = ScaleReport {
        nodes: config.nodes,
        services: config.services,
        ..Default::default()
    };
    lab.apply(&format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: traffic\nspec:\n  addresses: [{}]\n  autoAssign: false\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata:\n  name: traffic\nspec:\n  ipAddressPools: [traffic]\n  nodeSelectors: [{{matchLabels: {{{TRAFFIC_LABEL}: \"true\"}}}}]\n---\napiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: scale\nspec:\n  addresses: [{SCALE_POOL}]\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata:\n  name: scale\nspec:\n  ipAddressPools: [scale]\n",
        plan::EXAMPLE_POOL_V4
    ))
    .await?;
    for i in 1..=config.kube_proxies {
        lab.label_node(i, TRAFFIC_LABEL, Some("true")).await?;
    }

    // The speakers' false-alarm counters from when they all count each other on.
    let mut quiet = None;
    if !config.speakers_last {
        quiet = Some(start_speakers(&mut lab, config, &mut report).await?);
    }

    // With the Deployment's 15 s Lease: the lab's default 4 s (for quick takeover tests) is
    // lost when the API server answers slower than 2.7 s, as it does here while it creates
    // Services for 100 watching speakers on two cores.
    let options = crate::ControllerOptions {
        lease_duration: Duration::from_secs(15),
        ..Default::default()
    };
    lab.start_controller_with(&config.controller, 1, options.clone())
        .await?;
    lab.kubectl(&["create", "namespace", "scale"]).await?;
    let api: Api<Service> = Api::namespaced(lab.client(), "scale");
    let start = Instant::now();
    let creating = create_services(&api, config.services, config.pace, |i| {
        serde_json::json!({
            "metadata": {"name": format!("s{i}"), "annotations": {model::service::ANNOTATION_POOL: "scale"}},
            "spec": single_stack("IPv6"),
        })
    });
    tokio::pin!(creating);
    // The controller exits when it cannot renew its Lease in time (the API server starved of
    // CPU); its Deployment would start it again, and so does the bench, counting.
    let created = loop {
        tokio::select! {
            created = &mut creating => break created?,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                restart_exited_controller(&mut lab, config, &options, &mut report).await?;
            }
        }
    };
    report.addressed = created.all_addressed;
    let (counted, quiet_since) = match quiet {
        Some(quiet) => quiet,
        None => start_speakers(&mut lab, config, &mut report).await?,
    };
    let owners = every_address_owned_once(&lab, config.services, config.settle * 2).await?;
    // From when the owners last changed.
    report.announced = start.elapsed().saturating_sub(SETTLED_FOR);
    report.owned_per_node = (1..=config.nodes)
        .map(|i| owners.values().filter(|n| **n == i).count())
        .collect();
    tracing::info!(
        addressed_s = report.addressed.as_secs_f64(),
        announced_s = report.announced.as_secs_f64(),
        "every Service addressed and announced"
    );

    report.reported_services =
        every_condition_written(&api, config.services, config.settle).await?;
    report.reported = start.elapsed();
    report.settled_memory = SettledMemory::read(&lab)?;
    tracing::info!(
        "{}",
        report.settled_memory.line(&format!(
            "{} nodes, {} Services",
            config.nodes, config.services
        ))
    );
    // The speakers' start starves the API server too (a 100 × 10,000 run lost its controller
    // there and then waited for an address nobody allocated); the samples below need it.
    if restart_exited_controller(&mut lab, config, &options, &mut report).await? {
        controller_restored(&lab, config.services, config.settle).await?;
    }

    for k in 0..config.answer_samples {
        let ms = first_answer_v6_ms(&mut lab, config, &options, &mut report, &api, k).await?;
        report.first_answer_v6.gaps_ms.push(ms);
    }
    // The IPv4 samples come from the traffic pool, advertised only by nodes with kube-proxy.
    let v4_samples = if config.kube_proxies == 0 {
        0
    } else {
        config.answer_samples.min(MAX_V4_SAMPLES)
    };
    for k in 0..v4_samples {
        let ms = first_answer_ms(&lab, &api, &format!("first-v4-{k}"), sample_v4(k)).await?;
        report.first_answer_v4.gaps_ms.push(ms);
    }

    tracing::info!(
        v4 = ?report.first_answer_v4.gaps_ms,
        v6 = ?report.first_answer_v6.gaps_ms,
        "first answers (ms)"
    );
    report.idle_with_addresses = idle_cost(&lab, config.idle).await?;
    // Logged at once, as the settled memory: a 100-node run has failed past this point.
    tracing::info!(
        "{}",
        report.idle_with_addresses.line(&format!(
            "{} nodes, {} Services",
            config.nodes, config.services
        ))
    );
    restart_exited_controller(&mut lab, config, &options, &mut report).await?;
    let pid = lab
        .controller_pid(1)
        .context("the controller is not running")?;
    report.controller_rss_kib = crate::process::rss_kib(pid)?;
    // The failover trials run without the spread addresses: on two cores, 100 nodes' fast
    // paths watching ten owners each (100,000 echo requests a second in all) starve the API
    // server, which real nodes, each with its own CPUs, would not.
    // Retried: after the idle measurement its pooled connection may be gone ("connection
    // closed before message completed" ended a 100-node run here), and the delete is
    // idempotent.
    crate::soak::retried(|| async {
        Ok(api
            .delete_collection(&Default::default(), &Default::default())
            .await?)
    })
    .await?;
    every_address_owned_once(&lab, 0, config.settle).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    report.idle_without = idle_cost(&lab, config.idle).await?;
    report.false_alarms = FalseAlarms::since(&lab, &counted, quiet_since).await?;

    if config.trials > 0 {
        report.failover = failover_trials(&mut lab, config).await?;
    }
    Ok(report)
}

/// Starts the controller again if it exited (it does when it cannot renew its Lease in time,
/// the API server starved of CPU), as its Deployment would; counts it. Whether it did.
async fn restart_exited_controller(
    lab: &mut Lab,
    config: &ScaleConfig,
    options: &crate::ControllerOptions,
    report: &mut ScaleReport,
) -> Result<bool> {
    let Some(exit) = lab.controller_exited(1) else {
        return Ok(false);
    };
    report.controller_restarts += 1;
    tracing::warn!(%exit, "the controller exited; starting it again");
    lab.start_controller_with(&config.controller, 1, options.clone())
        .await?;
    Ok(true)
}

/// Waits until the controller holds its Lease and has read back the `services` addresses in
/// use from the pool "scale": leading alone is not enough, as a restarted controller takes
/// seconds to restore 10,000 allocations before it allocates anew (a 100 × 10,000 run's
/// first-answer sample timed out behind an 11 s restore).
async fn controller_restored(lab: &Lab, services: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let restored = lab.controller_metrics(1).await.is_ok_and(|text| {
            metric(&text, "ferrolb_controller_leader") == Some(1.0)
                && metric_sum(
                    &text,
                    "ferrolb_allocator_addresses_in_use",
                    "pool=\"scale\"",
                ) >= services as f64
        });
        if restored {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the restarted controller did not lead with {services} addresses in use within {within:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts a speaker on every node and waits until each counts every node; returns their
/// summed counters then, and when they were read.
async fn start_speakers(
    lab: &mut Lab,
    config: &ScaleConfig,
    report: &mut ScaleReport,
) -> Result<(BTreeMap<&'static str, f64>, Instant)> {
    let start = Instant::now();
    let flags: Vec<&str> = config.speaker_flags.iter().map(String::as_str).collect();
    for i in 1..=config.nodes {
        lab.start_speaker_with(&config.speaker, i, &flags).await?;
    }
    every_speaker_counts(lab, config.nodes, config.settle).await?;
    report.converged = start.elapsed();
    tracing::info!(
        converged_s = report.converged.as_secs_f64(),
        "every speaker counts every node"
    );
    let counted = crate::soak::retried(|| crate::soak::counters(lab)).await?;
    Ok((counted, Instant::now()))
}

/// A single-stack LoadBalancer Service's spec on port 80, asking for no NodePorts (their
/// default range holds 2768; L2 traffic takes kube-proxy's rules for the address itself).
fn single_stack(family: &str) -> serde_json::Value {
    serde_json::json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ipFamilies": [family], "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80}]})
}

/// Waits until every speaker's gossip counts `n` live members.
async fn every_speaker_counts(lab: &Lab, n: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    for i in 1..=lab.nodes().len() {
        loop {
            let text = lab.speaker_metrics(i).await.unwrap_or_default();
            if metric(&text, "ferrolb_speaker_members") == Some(n as f64) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "speaker {i} counts {:?} members, not {n}",
                    metric(&text, "ferrolb_speaker_members")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The owner (node) of every address of the spread pool, once `n` of them are each owned by
/// exactly one speaker, from the speakers' `ferrolb_speaker_owned_address` series.
async fn every_address_owned_once(
    lab: &Lab,
    n: usize,
    within: Duration,
) -> Result<BTreeMap<String, usize>> {
    let deadline = Instant::now() + within;
    // The owners as first seen complete and unchanged since: a speaker still reading its
    // first list owns nothing yet, and the others may cover its share for a moment (a spread
    // read then gave one node of four no address at all).
    let mut settled: Option<(Instant, BTreeMap<String, usize>)> = None;
    loop {
        let mut owners: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in 1..=lab.nodes().len() {
            let text = lab.speaker_metrics(i).await.unwrap_or_default();
            for address in owned_addresses(&text) {
                if address.starts_with("2001:db8::1:") {
                    owners.entry(address).or_default().push(i);
                }
            }
        }
        let twice: Vec<_> = owners.iter().filter(|(_, o)| o.len() > 1).collect();
        if owners.len() == n && twice.is_empty() {
            let owners: BTreeMap<String, usize> =
                owners.into_iter().map(|(a, o)| (a, o[0])).collect();
            match &settled {
                Some((since, seen)) if *seen == owners => {
                    if since.elapsed() >= SETTLED_FOR {
                        return Ok(owners);
                    }
                }
                _ => settled = Some((Instant::now(), owners)),
            }
            if Instant::now() > deadline {
                bail!(
                    "every address owned once, but the owners did not stay put for {SETTLED_FOR:?}"
                );
            }
        } else {
            if Instant::now() > deadline {
                bail!(
                    "{} of {n} addresses owned; owned by several nodes: {twice:?}",
                    owners.len()
                );
            }
            settled = None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until each of the `n` Services says it is announced: until then the speakers are
/// still writing conditions (and Events), every one of which each speaker and the controller
/// read back, which is not the idle cost or a new Service's wait. Gives up when no more
/// Service says so for [`STALLED_AFTER`], or after `within`; returns how many do.
async fn every_condition_written(api: &Api<Service>, n: usize, within: Duration) -> Result<usize> {
    let deadline = Instant::now() + within;
    let mut best = (0, Instant::now());
    loop {
        // From the API server's watch cache (any version): not a read of 10,000 Services
        // from etcd every turn, on the server the speakers are waiting for.
        let announced = api
            .list(&kube::api::ListParams::default().match_any())
            .await?
            .items
            .iter()
            .filter(|svc| {
                svc.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == model::service::ANNOUNCED_CONDITION && c.status == "True"
                        })
                    })
            })
            .count();
        if announced > best.0 {
            best = (announced, Instant::now());
        }
        if announced >= n || best.1.elapsed() > STALLED_AFTER || Instant::now() > deadline {
            return Ok(announced);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How long no further Service saying it is announced ends the wait for the rest.
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// How long the owners must stay the same to count as settled.
const SETTLED_FOR: Duration = Duration::from_secs(5);

/// The addresses a speaker's metrics say it owns.
fn owned_addresses(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("ferrolb_speaker_owned_address{address=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter(|(_, value)| value.trim() == "1")
        .map(|(address, _)| address.to_string())
        .collect()
}

/// The `k`th IPv6 first-answer sample. When it fails because the controller exited meanwhile
/// (the API server starved: a 100 × 10,000 run lost it again 26 s after restarting it), the
/// controller is started again and the sample taken anew with another Service and address,
/// at most twice (`k` below 1024: the scale pool's top 4096 addresses are the samples').
async fn first_answer_v6_ms(
    lab: &mut Lab,
    config: &ScaleConfig,
    options: &crate::ControllerOptions,
    report: &mut ScaleReport,
    api: &Api<Service>,
    k: usize,
) -> Result<f64> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 0;
    loop {
        let name = format!("first-v6-{k}-{attempt}");
        // Each attempt's address is new: the failed attempt's Service still holds its own.
        let ip = sample_v6(k + 0x400 * attempt);
        let error = match first_answer_ms(lab, api, &name, ip).await {
            Ok(ms) => return Ok(ms),
            Err(error) => error,
        };
        attempt += 1;
        if attempt == ATTEMPTS || !restart_exited_controller(lab, config, options, report).await? {
            return Err(error);
        }
        tracing::warn!("{error:#}; the controller had exited: sampling again");
        controller_restored(lab, config.services, config.settle).await?;
    }
}

/// Creates Service `name` asking for `ip` while the client asks the LAN who has `ip` every
/// 5 ms; the time from the creation call to the first answer, in ms.
async fn first_answer_ms(lab: &Lab, api: &Api<Service>, name: &str, ip: IpAddr) -> Result<f64> {
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": {model::service::ANNOTATION_IPS: ip.to_string()}},
        "spec": single_stack(family),
    }))?;
    let ns = lab.client_ns.clone();
    let asking = tokio::task::spawn_blocking(move || {
        crate::l2query::first_answer(
            &ns,
            "eth0",
            ip,
            Duration::from_millis(5),
            Duration::from_secs(20),
        )
    });
    // The question is on the wire before the Service exists.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let created = Instant::now();
    api.create(&Default::default(), &svc).await?;
    let answered = asking
        .await??
        .with_context(|| format!("nobody answered for {ip} within 20 s of creating {name}"))?;
    Ok(answered.saturating_duration_since(created).as_secs_f64() * 1e3)
}

/// CPU, gossip bytes, echo requests and resident memory of every speaker over `idle`.
async fn idle_cost(lab: &Lab, idle: Duration) -> Result<Idle> {
    let nodes = lab.nodes().len();
    let pids: Vec<i32> = (1..=nodes)
        .map(|i| lab.speaker_process(i))
        .collect::<Result<_>>()?;
    let counters = |text: &str| {
        let bytes = |direction: &str| {
            metric_sum(
                text,
                "ferrolb_speaker_gossip_bytes_total",
                &format!("direction=\"{direction}\""),
            )
        };
        let echo = metric(text, "ferrolb_speaker_fast_path_echo_requests_total").unwrap_or(0.0);
        [bytes("in"), bytes("out"), echo]
    };
    let mut before = vec![];
    for (i, pid) in (1..=nodes).zip(&pids) {
        let text = lab.speaker_metrics(i).await?;
        before.push((crate::soak::cpu_seconds(*pid)?, counters(&text)));
    }
    let start = Instant::now();
    tokio::time::sleep(idle).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut out = Idle {
        seconds,
        ..Default::default()
    };
    for (i, pid) in (1..=nodes).zip(&pids) {
        let text = lab.speaker_metrics(i).await?;
        let (cpu, [bytes_in, bytes_out, echo]) = before[i - 1];
        let [now_in, now_out, now_echo] = counters(&text);
        out.cpu_seconds_per_hour
            .push((crate::soak::cpu_seconds(*pid)? - cpu) * 3600.0 / seconds);
        out.gossip_in_per_second.push((now_in - bytes_in) / seconds);
        out.gossip_out_per_second
            .push((now_out - bytes_out) / seconds);
        out.echo_per_second.push((now_echo - echo) / seconds);
        out.watched_nodes
            .push(metric(&text, "ferrolb_speaker_fast_path_watched_nodes").unwrap_or(0.0));
        out.rss_kib.push(crate::process::rss_kib(*pid as u32)?);
    }
    Ok(out)
}

/// Hard node death trials on Service `hello` (a selectorless Service in front of a host
/// outside the cluster), each on the next address of the traffic pool, so the owner varies.
async fn failover_trials(lab: &mut Lab, config: &ScaleConfig) -> Result<Figures> {
    let backend = lab.add_external_backend("outside")?;
    lab.expose_external("default", "hello", backend.ipv4)
        .await?;
    let mut figures = Figures::default();
    for trial in 0..config.trials {
        let vip = trial_v4(trial);
        lab.kubectl(&[
            "annotate",
            "--overwrite",
            "service",
            "hello",
            &format!("{}={vip}", model::service::ANNOTATION_IPS),
        ])
        .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while lab.ingress("default", "hello").await? != [vip] {
            if Instant::now() > deadline {
                bail!("trial {trial}: hello never got {vip}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 1..=config.kube_proxies {
            while !lab.proxy_programs(i, vip)? {
                if Instant::now() > deadline {
                    bail!("trial {trial}: kube-proxy on node {i} never programmed {vip}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let victim = lab.agreed_owner(vip, Duration::from_secs(60)).await?;
        lab.settle(vip).await?;
        let gap = lab
            .time_hard_death(victim, vip)
            .await
            .with_context(|| format!("trial {trial}"))?;
        figures.gaps_ms.push(gap.as_secs_f64() * 1e3);
        tracing::info!(trial, victim, gap_ms = gap.as_secs_f64() * 1e3, "node died");
        lab.revive_node(victim).await?;
        let flags: Vec<&str> = config.speaker_flags.iter().map(String::as_str).collect();
        lab.start_speaker_with(&config.speaker, victim, &flags)
            .await?;
        every_speaker_counts(lab, config.nodes, Duration::from_secs(120)).await?;
    }
    drop(backend);
    Ok(figures)
}

/// What [`create_services`] measured.
pub struct Created {
    /// Until the API server had answered the last creation.
    pub all_created: Duration,
    /// Until every Service had an address in its status.
    pub all_addressed: Duration,
    /// Each Service's time from its creation call to its first status with an address.
    pub latencies: Vec<Duration>,
}

/// How [`create_services`] paces its creations.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the API server takes them, 32 at a time.
    AtOnce,
    /// One at a time, at most this many a second.
    PerSecond(u32),
}

/// Creates `n` Services (`service(i)` is the i-th, a JSON object) at `pace`, while a watch
/// records when each first shows an address in `status.loadBalancer.ingress`.
pub async fn create_services(
    api: &Api<Service>,
    n: usize,
    pace: Pace,
    service: impl Fn(usize) -> serde_json::Value,
) -> Result<Created> {
    const LIMIT: Duration = Duration::from_secs(900);
    let created: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
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
                    if latencies.len() == n {
                        break;
                    }
                }
            }
            latencies
        })
    };
    let services: Vec<Service> = (0..n)
        .map(|i| serde_json::from_value(service(i)))
        .collect::<Result<_, _>>()?;
    let failed = Mutex::new(Vec::<String>::new());
    let start = Instant::now();
    let (concurrency, gap) = match pace {
        Pace::AtOnce => (32, Duration::ZERO),
        Pace::PerSecond(rate) => (1, Duration::from_secs(1) / rate.max(1)),
    };
    futures::stream::iter(services)
        .for_each_concurrent(concurrency, |svc| {
            let (api, created, failed) = (api.clone(), created.clone(), &failed);
            async move {
                let name = svc.metadata.name.clone().unwrap_or_default();
                created
                    .lock()
                    .expect("not poisoned")
                    .insert(name.clone(), Instant::now());
                if let Err(e) = api.create(&Default::default(), &svc).await {
                    failed
                        .lock()
                        .expect("not poisoned")
                        .push(format!("{name}: {e}"));
                }
                tokio::time::sleep(gap).await;
            }
        })
        .await;
    let all_created = start.elapsed();
    let failed = failed.into_inner().expect("not poisoned");
    if let Some(first) = failed.first() {
        watch.abort();
        bail!(
            "{} of {n} creations failed; the first: {first}",
            failed.len()
        );
    }
    let latencies = tokio::time::timeout(LIMIT, watch)
        .await
        .context("not every Service got an address")??;
    Ok(Created {
        all_created,
        all_addressed: start.elapsed(),
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_addresses_are_read_from_the_speakers_series() {
        let text = "# TYPE ferrolb_speaker_owned_address gauge\nferrolb_speaker_owned_address{address=\"2001:db8::1:5\"} 1\nferrolb_speaker_owned_address{address=\"198.51.100.200\"} 1\nferrolb_speaker_owned_address{address=\"2001:db8::1:6\"} 0\nferrolb_speaker_members 3\n";
        assert_eq!(owned_addresses(text), ["2001:db8::1:5", "198.51.100.200"]);
    }

    #[test]
    fn sample_and_trial_addresses_stay_in_their_pools_and_apart() {
        let v4: std::collections::BTreeSet<_> = (0..MAX_V4_SAMPLES)
            .map(sample_v4)
            .chain((0..10).map(trial_v4))
            .collect();
        assert_eq!(v4.len(), MAX_V4_SAMPLES + 10);
        let last: IpAddr = "198.51.100.250".parse().unwrap();
        assert!(v4.iter().all(|a| *a <= last));
        // Inside 2001:db8::1:0/112, above the lowest 10,000 the Services get.
        // The third attempt of the 1000th sample included.
        for k in [0, 999, 999 + 0x400 * 2] {
            let IpAddr::V6(a) = sample_v6(k) else {
                panic!("an IPv6 sample")
            };
            let s = a.segments();
            assert_eq!(s[..7], [0x2001, 0xdb8, 0, 0, 0, 0, 1]);
            assert!(s[7] >= 10_000);
        }
        assert_eq!(SCALE_POOL, "2001:db8::1:0/112");
    }

    #[test]
    fn the_settled_memory_line_counts_the_speakers_over_target_and_names_the_heaviest() {
        let memory = SettledMemory {
            vm_rss_kib: vec![28 * 1024, 31 * 1024, 27 * 1024, 30 * 1024 + 1],
            rss_anon_kib: vec![20 * 1024, 24 * 1024, 19 * 1024, 21 * 1024],
            rss_file_kib: vec![8 * 1024; 4],
        };
        let line = memory.line("4 nodes");
        assert!(line.contains("median 28.0; 2 of 4 over 30 MiB"), "{line}");
        assert!(
            line.contains("heaviest: node-2 31.0, node-4 30.0, node-1 28.0, node-3 27.0"),
            "{line}"
        );
        assert!(
            line.contains("RssAnon min 19.0, mean 21.0, max 24.0 (median 20.0)"),
            "{line}"
        );
    }
}
