//! What measuring tests report: failover gaps as percentiles, the figures file the test
//! command prints at the end, and metric values read from Prometheus text.

use std::io::Write;
use std::path::Path;

/// Gaps measured over trials, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub gaps_ms: Vec<f64>,
}

impl Figures {
    /// The nearest-rank percentile `p` (0 to 100) of the gaps; 0 when there are none.
    pub fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.gaps_ms.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// One line for the figures file: `FIGURES <what>: …` with p50, p99, max and every gap.
    pub fn summary(&self, what: &str) -> String {
        format!(
            "FIGURES {what}: {} trials, gap p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; every gap (ms): {:?}",
            self.gaps_ms.len(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(100.0),
            self.gaps_ms.iter().map(|g| g.round()).collect::<Vec<_>>()
        )
    }
}

/// Prints `text` and appends it to `figures.txt` in `tmpdir` (a test's
/// `CARGO_TARGET_TMPDIR`), which the test command shows at the end: test output is otherwise
/// captured.
pub fn report(tmpdir: &Path, text: &str) {
    println!("{text}");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmpdir.join("figures.txt"))
    {
        let _ = writeln!(file, "{text}");
    }
}

/// The value of the first sample of `name` (with any labels) in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of every sample of `name` whose labels contain `labels` (a family's series).
pub fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let f = Figures {
            gaps_ms: (1..=100).rev().map(f64::from).collect(),
        };
        assert_eq!(
            (f.percentile(50.0), f.percentile(99.0), f.percentile(100.0)),
            (50.0, 99.0, 100.0)
        );
        assert_eq!(Figures::default().percentile(99.0), 0.0);
    }

    #[test]
    fn a_metric_is_read_by_its_exact_name() {
        let text = "# HELP m_total x\nm_total_other 5\nm_total{a=\"b\"} 3\nm 7\n";
        assert_eq!(metric(text, "m_total"), Some(3.0));
        assert_eq!(metric(text, "m"), Some(7.0));
        assert_eq!(metric(text, "absent"), None);
    }
}
