//! The monitoring files of deploy/monitoring. The alerts pass `promtool check rules` and their
//! unit tests (`promtool test rules`), every alert has a test where it fires and one where it
//! must not, and a rule broken on purpose fails those tests. The Grafana dashboard decodes
//! strictly with Grafana's schema (the Foundation SDK's types, lab/tools/dashboard-check),
//! every panel is placed and queries the `${datasource}` variable, and every query parses.
//! The tests that run promtool or the checker are lab tests (FERROLB_LAB=1): they need the
//! cached binaries, and fail, not skip, when those cannot be built.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use lab::monitoring;
use serde_json::{Value, json};

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(monitoring::dashboard()).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The alerting rules of the rule file (not its recording rules, if it gets some).
fn alerts() -> Vec<Value> {
    let rules = yaml(&monitoring::rules());
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn every_alert_is_named_graded_explained_and_tested_both_ways() {
    let alerts = alerts();
    assert!(alerts.len() >= 13, "{} alerts", alerts.len());
    // Per alert: (test cases where it must fire, where it must not).
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in yaml(&monitoring::rule_tests())["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fires {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    let mut names = BTreeSet::new();
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        assert!(name.starts_with("Ferrolb"), "{name}");
        assert!(names.insert(name), "{name} twice");
        assert!(
            matches!(
                alert["labels"]["severity"].as_str(),
                Some("info" | "warning" | "critical")
            ),
            "{name}: severity"
        );
        assert!(alert["for"].is_string(), "{name}: no for");
        for annotation in ["summary", "description"] {
            let text = alert["annotations"][annotation]
                .as_str()
                .unwrap_or_default();
            assert!(text.len() > 20, "{name}: {annotation}");
        }
        let description = alert["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains("`kubectl "),
            "{name}: the description says no command to run"
        );
        let (fires, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(
            fires > 0 && quiet > 0,
            "{name}: {fires} test cases where it fires and {quiet} where it must not (want both)"
        );
    }
    let unknown: Vec<_> = cases
        .keys()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(unknown.is_empty(), "tests of no alert: {unknown:?}");
    // A failover must be seen however short it was.
    let failover = alerts.iter().find(|a| a["alert"] == "FerrolbFailover");
    assert_eq!(failover.unwrap()["for"], "0m");
}

#[test]
#[ignore = "lab test: needs the lab's promtool; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    lab::require_lab!();
    let promtool = lab::binaries::ensure_prometheus().unwrap().promtool;
    let check = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(monitoring::rules()));
    assert!(check.status.success(), "{}", text(&check));
    let test = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(monitoring::rule_tests()));
    assert!(test.status.success(), "{}", text(&test));
}

/// The unit tests can fail: with the warning threshold moved from 80 % to 78 %, the pool at
/// 79 % raises an alert its test says must not be there.
#[test]
#[ignore = "lab test: needs the lab's promtool; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn a_broken_rule_fails_the_unit_tests() {
    lab::require_lab!();
    let promtool = lab::binaries::ensure_prometheus().unwrap().promtool;
    let dir = scratch("broken-rules");
    let rules = std::fs::read_to_string(monitoring::rules()).unwrap();
    let broken = rules.replacen("> 0.80", "> 0.78", 1);
    assert_ne!(broken, rules);
    std::fs::write(dir.join("ferrolb.rules.yaml"), broken).unwrap();
    std::fs::copy(
        monitoring::rule_tests(),
        dir.join("ferrolb.rules.test.yaml"),
    )
    .unwrap();
    let test = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(dir.join("ferrolb.rules.test.yaml")));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!test.status.success(), "{}", text(&test));
    assert!(
        text(&test).contains("lan-79"),
        "the failure names the pool at 79 %: {}",
        text(&test)
    );
}

#[test]
fn dashboard_panels_are_placed_and_query_the_datasource_variable() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable named datasource"
    );
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().expect("a numeric id")),
            "{title}: id {} twice",
            panel["id"]
        );
        let grid = &panel["gridPos"];
        for field in ["x", "y", "w", "h"] {
            assert!(grid[field].is_u64(), "{title}: gridPos.{field}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the grid"
        );
    }
    let panels = monitoring::panels(&dashboard);
    assert!(panels.len() >= 15, "{} panels", panels.len());
    let variable = json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert_eq!(panel["datasource"], variable, "{title}: datasource");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(
                target["datasource"], variable,
                "{title}: a query's datasource"
            );
            assert!(
                refs.insert(target["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
        }
    }
    let queries = monitoring::dashboard_queries().unwrap();
    for metric in [
        "ferrolb_allocator_addresses_in_use",
        "ferrolb_speaker_owned_address",
        "ferrolb_speaker_bgp_advertised_address",
        "ferrolb_speaker_members",
        "ferrolb_speaker_takeover_seconds_bucket",
        "ferrolb_speaker_conflicts_total",
        "ferrolb_allocation_failures_total",
        "ferrolb_speaker_bgp_session_up",
        "ferrolb_speaker_gossip_bytes_total",
        "ferrolb_controller_leader",
    ] {
        assert!(
            queries.iter().any(|q| q.expr.contains(metric)),
            "no panel shows {metric}"
        );
    }
}

#[test]
#[ignore = "lab test: needs the lab's dashboard-check and promtool; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn dashboard_fits_grafanas_schema_and_its_queries_parse() {
    lab::require_lab!();
    let check = lab::binaries::ensure_dashboard_check().unwrap();
    let out = run(Command::new(&check).arg(monitoring::dashboard()));
    assert!(out.status.success(), "{}", text(&out));

    // The checker refuses what does not fit: a misspelt option, a query without expr.
    let dir = scratch("dashboard-check");
    let mut broken = dashboard();
    let panel = broken["panels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["type"] == "stat")
        .unwrap();
    panel["options"]["colourMode"] = json!("value");
    panel["targets"][0]
        .as_object_mut()
        .unwrap()
        .remove("expr")
        .unwrap();
    std::fs::write(dir.join("broken.json"), broken.to_string()).unwrap();
    let out = run(Command::new(&check).arg(dir.join("broken.json")));
    assert!(!out.status.success(), "{}", text(&out));
    for refusal in [
        "unexpected field 'colourMode'",
        "expr: required field is missing",
    ] {
        assert!(text(&out).contains(refusal), "{refusal}: {}", text(&out));
    }

    // promtool parses every query, as recording rules of a throwaway rule file.
    let queries = monitoring::dashboard_queries().unwrap();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            json!({
                "record": format!("ferrolb_dashboard:query_{i}"),
                "expr": monitoring::as_prometheus_query(&q.expr),
            })
        })
        .collect();
    let file = dir.join("dashboard-queries.rules.yaml");
    let doc = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let promtool = lab::binaries::ensure_prometheus().unwrap().promtool;
    let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&file));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}\n(queries in order: {:?})",
        text(&out),
        queries
            .iter()
            .map(|q| (&q.panel, &q.ref_id))
            .collect::<Vec<_>>()
    );
}
