//! A soak: the speakers of a running lab left alone for a while under stress, and what moved
//! meanwhile. Every address's owner stays alive throughout, so any change of ownership, any
//! member declared down and any fast-path verdict is a false alarm. Stress: threads spinning
//! on every CPU of the machine (at the speakers' own priority), and random loss of the IP
//! packets every node sends (gossip, echo replies, API calls), by an nftables rule: this
//! machine's kernel has no `netem` qdisc. ARP and NDP answers leave through packet sockets,
//! which nftables does not see.
//! Prints figures; the caller decides what fails.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::figures::{metric, metric_sum};
use crate::{Lab, LabConfig, ServiceSpec};

#[derive(Debug, Clone, Default)]
pub struct Stress {
    /// Threads spinning for the whole soak (0: none).
    pub hogs: usize,
    /// Percent of the IP packets each node sends that are dropped (`None`: none).
    pub loss_percent: Option<f64>,
}

/// The counters a false alarm moves, summed over every speaker, from the soak's start to its
/// end, and what the speakers cost meanwhile.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub seconds: f64,
    pub speakers: usize,
    /// Members declared down, as each speaker saw it.
    pub member_downs: f64,
    /// Members seen coming back as a new generation (nobody restarts in a soak: each is a
    /// speaker told it was down), and speakers that heard they were declared down.
    pub member_restarts: f64,
    pub rejoins: f64,
    /// Fast-path verdicts (a watched node answered no echo request for the silence).
    pub fast_path_verdicts: f64,
    /// Addresses acquired or released.
    pub ownership_changes: f64,
    /// Times a second answering speaker was found.
    pub contests: f64,
    /// Gossip verdicts a starved speaker put off by a round trip (local health at work; not
    /// a false alarm).
    pub deferred_verdicts: f64,
    /// CPU seconds each speaker used, and its resident set at the end (KiB).
    pub cpu_seconds: Vec<f64>,
    pub rss_kib: Vec<u64>,
}

impl SoakReport {
    pub fn false_alarms(&self) -> f64 {
        self.member_downs
            + self.member_restarts
            + self.rejoins
            + self.fast_path_verdicts
            + self.ownership_changes
            + self.contests
    }

    /// One line for the figures file.
    pub fn summary(&self, what: &str) -> String {
        let hours = self.seconds / 3600.0 * self.speakers as f64;
        format!(
            "FIGURES soak, {what}: {:.0} s x {} speakers; member downs {} ({:.2} per speaker-hour), members restarted {}, speakers rejoined {}, fast-path verdicts {}, ownership changes {}, contests {}, verdicts deferred by starved speakers {}; speaker CPU seconds per hour {:?}; speaker RSS KiB {:?}",
            self.seconds,
            self.speakers,
            self.member_downs,
            self.member_downs / hours,
            self.member_restarts,
            self.rejoins,
            self.fast_path_verdicts,
            self.ownership_changes,
            self.contests,
            self.deferred_verdicts,
            self.cpu_seconds
                .iter()
                .map(|s| (s * 3600.0 / self.seconds).round())
                .collect::<Vec<_>>(),
            self.rss_kib
        )
    }
}

/// The summed counters of every speaker.
pub(crate) async fn counters(lab: &Lab) -> Result<BTreeMap<&'static str, f64>> {
    let mut texts = vec![];
    for i in 1..=lab.nodes().len() {
        texts.push(lab.speaker_metrics(i).await?);
    }
    summed(&texts)
}

/// The false-alarm counters summed over the speakers' metrics pages. A renamed metric would
/// read as zero false alarms, so every family must be exported, but only by one speaker at
/// least: a labelled family with no series yet (ownership changes on a node that never owned
/// an address) has no `# TYPE` line.
fn summed(texts: &[String]) -> Result<BTreeMap<&'static str, f64>> {
    for family in [
        "ferrolb_speaker_member_changes",
        "ferrolb_speaker_fast_path_verdicts",
        "ferrolb_speaker_ownership_changes",
        "ferrolb_speaker_contests",
        "ferrolb_speaker_gossip_deferred_verdicts",
    ] {
        anyhow::ensure!(
            texts
                .iter()
                .any(|text| text.contains(&format!("# TYPE {family} counter"))),
            "no speaker exports {family}"
        );
    }
    let mut sums = BTreeMap::new();
    for text in texts {
        let changes = |change: &str| {
            metric_sum(
                text,
                "ferrolb_speaker_member_changes_total",
                &format!("change=\"{change}\""),
            )
        };
        for (key, value) in [
            ("downs", changes("down")),
            ("restarts", changes("restarted")),
            ("rejoins", changes("rejoined")),
            (
                "verdicts",
                metric(text, "ferrolb_speaker_fast_path_verdicts_total").unwrap_or(0.0),
            ),
            (
                "ownership",
                metric_sum(text, "ferrolb_speaker_ownership_changes_total", ""),
            ),
            (
                "contests",
                metric(text, "ferrolb_speaker_contests_total").unwrap_or(0.0),
            ),
            (
                "deferred",
                metric(text, "ferrolb_speaker_gossip_deferred_verdicts_total").unwrap_or(0.0),
            ),
        ] {
            *sums.entry(key).or_insert(0.0) += value;
        }
    }
    Ok(sums)
}

/// User and system CPU seconds of a process, from `/proc/PID/stat` (clock ticks of 1/100 s,
/// the kernel's USER_HZ on every Linux architecture that matters here).
pub fn cpu_seconds(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ) in /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

const LOSS_TABLE: &str = "ferrolb_soak_loss";

/// Removes the loss from every node when dropped, also on failure.
struct Loss<'a> {
    lab: &'a Lab,
}

impl Drop for Loss<'_> {
    fn drop(&mut self) {
        for i in 1..=self.lab.nodes().len() {
            let _ = self
                .lab
                .node(i)
                .ns
                .exec("nft", &["delete", "table", "inet", LOSS_TABLE]);
        }
    }
}

/// A lab for soaking: `nodes` light nodes (no kubelets, no pods), a speaker on each, the example
/// pool and `addresses` Services with one address each, every address answered by one node.
/// kube-proxy runs on the first four nodes only: a hundred would take the two cores the soak
/// is about.
pub async fn speakers_lab(speaker: &Path, nodes: usize, addresses: usize) -> Result<Lab> {
    let mut lab = Lab::start(LabConfig::light(nodes, nodes.min(4))).await?;
    lab.apply(&format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: lan\nspec:\n  addresses: [{}]\n---\napiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata:\n  name: lan\nspec: {{}}\n",
        crate::plan::EXAMPLE_POOL_V4
    ))
    .await?;
    for i in 1..=nodes {
        lab.start_speaker(speaker, i).await?;
    }
    let mut ips = vec![];
    for n in 0..addresses.min(50) {
        let name = format!("soak-{n}");
        lab.expose(&ServiceSpec::new("default", &name)).await?;
        let ip: IpAddr = format!("198.51.100.{}", 200 + n).parse()?;
        lab.set_ingress("default", &name, &[ip]).await?;
        ips.push(ip);
    }
    for ip in ips {
        lab.agreed_owner(ip, Duration::from_secs(60)).await?;
    }
    Ok(lab)
}

/// Leaves the lab's speakers alone for `duration` under `stress`, and reports what moved.
pub async fn soak(lab: &Lab, duration: Duration, stress: &Stress) -> Result<SoakReport> {
    let nodes = lab.nodes().len();
    let pids: Vec<i32> = (1..=nodes)
        .map(|i| lab.speaker_process(i))
        .collect::<Result<_>>()?;
    let _loss = match stress.loss_percent {
        Some(percent) => {
            let loss = Loss { lab };
            // Per ten thousand, so that fractions of a percent work.
            let below = ((percent * 100.0).round() as u32).to_string();
            for i in 1..=nodes {
                let ns = &lab.node(i).ns;
                ns.exec("nft", &["add", "table", "inet", LOSS_TABLE])?;
                ns.exec(
                    "nft",
                    &[&format!(
                        "add chain inet {LOSS_TABLE} output {{ type filter hook output priority 0 ; }}"
                    )],
                )?;
                ns.exec(
                    "nft",
                    &[
                        "add", "rule", "inet", LOSS_TABLE, "output", "numgen", "random", "mod",
                        "10000", "<", &below, "drop",
                    ],
                )?;
            }
            Some(loss)
        }
        None => None,
    };
    let _hogs = crate::hogs::Hogs::spin(stress.hogs, None);
    // Read through the stress, with retries: a lossy link loses metric scrapes too.
    let before = retried(|| counters(lab)).await?;
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    let after = retried(|| counters(lab)).await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_after: Vec<f64> = pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_>>()?;
    let delta = |key: &str| after.get(key).unwrap_or(&0.0) - before.get(key).unwrap_or(&0.0);
    let rss_kib = pids
        .iter()
        .map(|pid| crate::process::rss_kib(*pid as u32))
        .collect::<Result<_>>()?;
    Ok(SoakReport {
        seconds,
        speakers: nodes,
        member_downs: delta("downs"),
        member_restarts: delta("restarts"),
        rejoins: delta("rejoins"),
        fast_path_verdicts: delta("verdicts"),
        ownership_changes: delta("ownership"),
        contests: delta("contests"),
        deferred_verdicts: delta("deferred"),
        cpu_seconds: cpu_after
            .iter()
            .zip(&cpu_before)
            .map(|(a, b)| a - b)
            .collect(),
        rss_kib,
    })
}

/// `read` until it succeeds, at most ten times 200 ms apart; the last error otherwise.
pub(crate) async fn retried<T, F: std::future::Future<Output = Result<T>>>(
    mut read: impl FnMut() -> F,
) -> Result<T> {
    let mut last = None;
    for _ in 0..10 {
        match read().await {
            Ok(value) => return Ok(value),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.expect("ten tries"))
}

#[cfg(test)]
mod tests {
    use super::{cpu_seconds, summed};

    const COUNTERS: &str = "# TYPE ferrolb_speaker_member_changes counter
ferrolb_speaker_member_changes_total{change=\"up\"} 99
ferrolb_speaker_member_changes_total{change=\"down\"} 2
ferrolb_speaker_member_changes_total{change=\"restarted\"} 1
ferrolb_speaker_member_changes_total{change=\"rejoined\"} 0
# TYPE ferrolb_speaker_fast_path_verdicts counter
ferrolb_speaker_fast_path_verdicts_total 3
# TYPE ferrolb_speaker_contests counter
ferrolb_speaker_contests_total 0
# TYPE ferrolb_speaker_gossip_deferred_verdicts counter
ferrolb_speaker_gossip_deferred_verdicts_total 4
";

    #[test]
    fn counters_are_summed_when_some_speaker_exports_each_family() {
        // Speaker 1 owned an address once; speaker 2 never owned one, so its page has no
        // ownership family at all (as at 100 nodes with 20 addresses).
        let owner = format!(
            "{COUNTERS}# TYPE ferrolb_speaker_ownership_changes counter\nferrolb_speaker_ownership_changes_total{{change=\"acquired\"}} 1\n"
        );
        let sums = summed(&[owner, COUNTERS.to_string()]).unwrap();
        assert_eq!(sums["downs"], 4.0);
        assert_eq!(sums["restarts"], 2.0);
        assert_eq!(sums["rejoins"], 0.0);
        assert_eq!(sums["verdicts"], 6.0);
        assert_eq!(sums["ownership"], 1.0);
        assert_eq!(sums["deferred"], 8.0);
    }

    #[test]
    fn a_family_no_speaker_exports_is_an_error() {
        let error = summed(&[COUNTERS.to_string(), COUNTERS.to_string()]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("ferrolb_speaker_ownership_changes"),
            "{error}"
        );
    }

    #[test]
    fn cpu_seconds_grow_with_work() {
        let me = std::process::id() as i32;
        let before = cpu_seconds(me).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = cpu_seconds(me).unwrap();
        assert!(after - before >= 0.1, "{before} -> {after}");
    }
}
