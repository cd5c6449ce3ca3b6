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
