//! ferrolb's monitoring files in `deploy/monitoring`: the alert rules and their promtool unit
//! tests, and the Grafana dashboard with its queries, which the tests parse with promtool and a
//! lab Prometheus can run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// The alerts, as a Prometheus rule file (the source of the PrometheusRule).
pub fn rules() -> PathBuf {
    dir().join("rules/ferrolb.rules.yaml")
}

/// Their unit tests, for `promtool test rules`.
pub fn rule_tests() -> PathBuf {
    dir().join("rules/ferrolb.rules.test.yaml")
}

/// The Grafana dashboard (the source of its ConfigMap).
pub fn dashboard() -> PathBuf {
    dir().join("dashboards/ferrolb.json")
}

/// One query of a dashboard panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelQuery {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

/// Every query of the dashboard, panel by panel (a collapsed row's panels included).
pub fn dashboard_queries() -> Result<Vec<PanelQuery>> {
    let path = dashboard();
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let dashboard: Value = serde_json::from_str(&text).context("the dashboard is not JSON")?;
    queries(&dashboard)
}

/// The queries of a dashboard's panels; a target without an `expr` is an error.
pub fn queries(dashboard: &Value) -> Result<Vec<PanelQuery>> {
    let mut out = vec![];
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                bail!("a query of panel {title:?} has no expr");
            };
            out.push(PanelQuery {
                panel: title.into(),
                ref_id: target["refId"].as_str().unwrap_or_default().into(),
                expr: expr.into(),
            });
        }
    }
    Ok(out)
}

/// The dashboard's panels other than rows, with those inside rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

/// A dashboard query as Prometheus itself takes it: Grafana's interval variables replaced by
/// what Grafana would use with a 30 s scrape interval over a 1-hour range.
pub fn as_prometheus_query(expr: &str) -> String {
    expr.replace("$__rate_interval", "2m")
        .replace("$__interval", "30s")
        .replace("$__range", "1h")
}

/// A real Prometheus in the lab's control-plane namespace: it scrapes the controller (replica 1,
/// as job `ferrolb-controller`) and every node's speaker (job `ferrolb-speaker`, with its `node`)
/// each second, as deploy/monitoring/podmonitors.yaml labels them, and evaluates ferrolb's alert
/// rules each second with every `for:` cut to 3 s (0 s stays 0 s): here the question is whether
/// each alert's expression fires on the real processes' metrics, and the `for`s are promtool's
/// unit tests'. (Not to 0 s: one scrape that times out on the loaded lab would fire
/// FerrolbSpeakerDown, as it did once.)
pub struct Prometheus {
    ns: crate::netns::NetNs,
    _proc: crate::process::Proc,
    listen: std::net::SocketAddr,
}

/// Where the lab's Prometheus listens, in the control-plane namespace.
const PROMETHEUS_LISTEN: &str = "127.0.0.1:9099";

impl Prometheus {
    pub async fn start(lab: &crate::Lab) -> Result<Prometheus> {
        let bins = crate::binaries::ensure_prometheus()?;
        let dir = lab.dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data"))?;
        let rules = std::fs::read_to_string(rules())?;
        let rules: String = rules
            .lines()
            .map(|line| {
                if let Some(period) = line.trim_start().strip_prefix("for: ") {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    let cut = if period.trim() == "0m" { "0s" } else { "3s" };
                    format!("{indent}for: {cut}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(dir.join("rules.yaml"), rules)?;
        let speakers: String = (1..=lab.nodes().len())
            .map(|i| {
                format!(
                    "      - targets: ['{}']\n        labels: {{node: node-{i}}}\n",
                    std::net::SocketAddr::new(crate::plan::node_v4(i).into(), 9651)
                )
            })
            .collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 rule_files: [{}]\n\
                 scrape_configs:\n\
                 \x20 - job_name: ferrolb-controller\n    static_configs:\n      - targets: ['127.0.0.1:9651']\n        labels: {{pod: controller-1}}\n\
                 \x20 - job_name: ferrolb-speaker\n    static_configs:\n{speakers}",
                dir.join("rules.yaml").display()
            ),
        )?;
        let proc = crate::process::Proc::spawn(
            &lab.cp,
            "prometheus",
            &bins.prometheus,
            &[
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={PROMETHEUS_LISTEN}"),
                "--log.level=warn".into(),
            ],
            &lab.log_path("prometheus"),
        )?;
        let prometheus = Prometheus {
            ns: lab.cp.clone(),
            _proc: proc,
            listen: PROMETHEUS_LISTEN.parse()?,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while prometheus.get("/-/ready").await.is_err() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "Prometheus is not ready after 30 s; see {}",
                    lab.log_path("prometheus").display()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok(prometheus)
    }

    /// The body of a 200 reply to `GET path`.
    async fn get(&self, path: &str) -> Result<String> {
        let (ns, target, request) = (self.ns.clone(), self.listen, path.to_string());
        let reply = tokio::task::spawn_blocking(move || {
            ns.enter(|| crate::lab::observe::http_get(target, &request))
        })
        .await???;
        let (head, body) = reply.split_once("\r\n\r\n").context("no HTTP reply")?;
        if head.split_whitespace().nth(1) != Some("200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
        }
        Ok(body.to_string())
    }

    /// The result vector of an instant query (empty: no data).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let result = self
            .api(&format!("/api/v1/query?query={}", url_encoded(expr)), expr)
            .await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }

    /// The `data.result` of a successful API reply to `GET path` (about query `expr`).
    async fn api(&self, path: &str, expr: &str) -> Result<Value> {
        let mut reply: Value = serde_json::from_str(&self.get(path).await?)?;
        if reply["status"] != "success" {
            bail!("query {expr}: {reply}");
        }
        Ok(reply["data"]["result"].take())
    }

    /// A range query from `start` to `end` (Unix seconds) each `step` seconds: each series'
    /// labels and its (time, value) points.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<(serde_json::Map<String, Value>, Vec<(f64, f64)>)>> {
        let result = self
            .api(
                &format!(
                    "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
                    url_encoded(expr)
                ),
                expr,
            )
            .await?;
        Ok(result
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| {
                let labels = series["metric"].as_object().cloned().unwrap_or_default();
                let points = series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let t = p[0].as_f64()?;
                        let v = p[1].as_str()?.parse::<f64>().ok()?;
                        Some((t, v))
                    })
                    .collect();
                (labels, points)
            })
            .collect())
    }

    /// The dashboard's panels from `start` to `end` (Unix seconds), each query's series by their
    /// labels: what [`crate::figures::dashboard_svg`] draws.
    pub async fn dashboard_series(
        &self,
        start: f64,
        end: f64,
    ) -> Result<Vec<crate::figures::PanelSeries>> {
        let mut panels: Vec<crate::figures::PanelSeries> = vec![];
        for q in dashboard_queries()? {
            let expr = as_prometheus_query(&q.expr);
            let series = self.query_range(&expr, start, end, 1.0).await?;
            if panels.last().is_none_or(|p| p.title != q.panel) {
                panels.push(crate::figures::PanelSeries {
                    title: q.panel.clone(),
                    series: vec![],
                });
            }
            let panel = panels.last_mut().expect("pushed");
            for (labels, points) in series {
                let label: Vec<String> = labels
                    .iter()
                    .map(|(_, v)| v.as_str().unwrap_or_default().to_string())
                    .collect();
                let label = if label.is_empty() {
                    q.ref_id.clone()
                } else {
                    label.join(" ")
                };
                panel.series.push((label, points));
            }
        }
        Ok(panels)
    }

    /// The alerts firing now, with their labels.
    pub async fn firing(&self) -> Result<Vec<Value>> {
        let reply: Value = serde_json::from_str(&self.get("/api/v1/alerts").await?)?;
        Ok(reply["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .cloned()
            .collect())
    }

    /// Waits (up to `within`) until alert `name` fires with labels that `matches` accepts;
    /// those labels. Fails naming what fires instead.
    pub async fn fires(
        &self,
        name: &str,
        within: std::time::Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let firing = self.firing().await?;
            if let Some(alert) = firing
                .iter()
                .find(|a| a["labels"]["alertname"] == name && matches(&a["labels"]))
            {
                return Ok(alert["labels"].clone());
            }
            if std::time::Instant::now() > deadline {
                let names: Vec<String> = firing.iter().map(|a| a["labels"].to_string()).collect();
                bail!("{name} did not fire within {within:?}; firing: {names:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

/// `text` percent-encoded for a URL's query string.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
