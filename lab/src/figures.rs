//! What measuring tests report: failover gaps as percentiles, the figures file the test
//! command prints at the end, and metric values read from Prometheus text.

use std::io::Write;
use std::path::Path;

/// Gaps measured over trials, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub gaps_ms: Vec<f64>,
}

/// The nearest-rank percentile `p` (0 to 100) of `values`, the lab's one reading of a
/// distribution; 0 when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Figures {
    /// The nearest-rank percentile `p` (0 to 100) of the gaps; 0 when there are none.
    pub fn percentile(&self, p: f64) -> f64 {
        percentile(&self.gaps_ms, p)
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

/// The gaps' distribution as an SVG chart: each trial's gap as a point of the empirical CDF
/// (gap on x, share of trials with a gap at most that on y), with p50 and p99 marked.
pub fn gap_plot_svg(figures: &Figures, title: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    let mut gaps = figures.gaps_ms.clone();
    gaps.sort_by(f64::total_cmp);
    let max = gaps.last().copied().unwrap_or(0.0);
    // The x axis ends at the next 50 ms past the largest gap.
    let x_end = ((max / 50.0).floor() + 1.0) * 50.0;
    let x = |ms: f64| LEFT + ms / x_end * (W - LEFT - RIGHT);
    let y = |share: f64| H - BOTTOM - share * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
    // Axes, grid and ticks.
    let step = if x_end > 1000.0 {
        250.0
    } else if x_end > 400.0 {
        100.0
    } else {
        50.0
    };
    let mut tick = 0.0;
    while tick <= x_end {
        svg += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
            x(tick),
            TOP,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            tick
        );
        tick += step;
    }
    for share in [0.0, 0.25, 0.5, 0.75, 1.0] {
        svg += &format!(
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}%</text>\n",
            y(share),
            W - RIGHT,
            LEFT - 6.0,
            y(share) + 4.0,
            share * 100.0
        );
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">gap between successful new connections (ms)</text>\n<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">trials with a gap at most x</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - 18.0,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0
    );
    // The empirical CDF as steps, and each trial as a point.
    let n = gaps.len() as f64;
    let mut path = format!("M{:.1},{:.1}", x(0.0), y(0.0));
    for (k, gap) in gaps.iter().enumerate() {
        path += &format!(" H{:.1} V{:.1}", x(*gap), y((k + 1) as f64 / n));
    }
    svg += &format!("<path d=\"{path}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n");
    for (k, gap) in gaps.iter().enumerate() {
        svg += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f77b4\"/>\n",
            x(*gap),
            y((k + 1) as f64 / n)
        );
    }
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        let v = figures.percentile(p);
        svg += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/><text x=\"{3:.1}\" y=\"{4}\" fill=\"#d62728\">{label} {v:.0} ms</text>\n",
            x(v),
            TOP,
            H - BOTTOM,
            x(v) + 4.0,
            if label == "p50" {
                TOP + 14.0
            } else {
                TOP + 30.0
            }
        );
    }
    svg + "</svg>\n"
}

/// One dashboard panel's data over time: each series a label and its (seconds, value) points.
#[derive(Debug, Clone, Default)]
pub struct PanelSeries {
    pub title: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// The dashboard's panels as small line charts, three a row, over the same time axis (seconds
/// from `start`): what the Grafana dashboard shows, drawn from the same queries.
pub fn dashboard_svg(title: &str, panels: &[PanelSeries], start: f64, end: f64) -> String {
    const COLUMNS: usize = 3;
    const PW: f64 = 400.0;
    const PH: f64 = 210.0;
    const PAD: f64 = 36.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let rows = panels.len().div_ceil(COLUMNS);
    let (w, h) = (PW * COLUMNS as f64, 40.0 + PH * rows as f64);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"10\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    let span = (end - start).max(1.0);
    for (k, panel) in panels.iter().enumerate() {
        let (x0, y0) = (PW * (k % COLUMNS) as f64, 40.0 + PH * (k / COLUMNS) as f64);
        let (left, top, right, bottom) = (x0 + PAD, y0 + 22.0, x0 + PW - 12.0, y0 + PH - 28.0);
        let values = panel
            .series
            .iter()
            .flat_map(|(_, points)| points.iter().map(|(_, v)| *v))
            .filter(|v| v.is_finite());
        let (lo, hi) = values.fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let hi = if hi - lo < 1e-9 { lo + 1.0 } else { hi };
        let x = |t: f64| left + (t - start) / span * (right - left);
        let y = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);
        svg += &format!(
            "<text x=\"{left}\" y=\"{}\" font-size=\"11\" font-weight=\"bold\">{}</text>\n<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<text x=\"{right}\" y=\"{}\" text-anchor=\"end\" fill=\"#888\">{:.0} s</text>\n",
            y0 + 14.0,
            escape(&panel.title),
            right - left,
            bottom - top,
            left - 3.0,
            top + 8.0,
            short(hi),
            left - 3.0,
            bottom,
            short(lo),
            y0 + 14.0,
            span
        );
        for (i, (_, points)) in panel.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = points
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            if !path.is_empty() {
                svg += &format!(
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>\n",
                    path.join(" ")
                );
            }
        }
        let legend: Vec<String> = panel
            .series
            .iter()
            .take(4)
            .enumerate()
            .map(|(i, (label, _))| {
                format!(
                    "<tspan fill=\"{}\">{}</tspan>",
                    COLORS[i % COLORS.len()],
                    escape(label)
                )
            })
            .collect();
        let more = panel.series.len().saturating_sub(4);
        svg += &format!(
            "<text x=\"{left}\" y=\"{}\">{}{}</text>\n",
            bottom + 12.0,
            legend.join(" "),
            if more > 0 {
                format!(" +{more}")
            } else {
                String::new()
            }
        );
    }
    svg + "</svg>\n"
}

/// A value for an axis label: 1.5k, 0.25, 12.
fn short(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_plot_has_a_point_per_trial_and_marks_p50_and_p99() {
        let f = Figures {
            gaps_ms: vec![120.0, 110.0, 130.0, 400.0],
        };
        let svg = gap_plot_svg(&f, "a <test>");
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(
            svg.contains("p50 120 ms") && svg.contains("p99 400 ms"),
            "{svg}"
        );
        assert!(svg.contains("a &lt;test&gt;"));
        // The axis ends just past the largest gap.
        assert!(
            svg.contains(">400</text>") && !svg.contains(">500</text>"),
            "{svg}"
        );
    }

    #[test]
    fn the_dashboard_plot_draws_each_series_of_each_panel() {
        let panels = vec![
            PanelSeries {
                title: "Pool <small>".into(),
                series: vec![
                    ("ipv4".into(), vec![(0.0, 1.0), (10.0, 2.0)]),
                    ("ipv6".into(), vec![(0.0, 0.0), (10.0, f64::NAN)]),
                ],
            },
            PanelSeries {
                title: "Leader".into(),
                series: vec![("controller-1".into(), vec![(5.0, 1.0)])],
            },
        ];
        let svg = dashboard_svg("lab", &panels, 0.0, 10.0);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("Pool &lt;small&gt;") && svg.contains(">ipv6</tspan>"));
        // NaN points are left out, not drawn at NaN.
        assert!(!svg.contains("NaN"), "{svg}");
    }

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
