//! The three install forms come from one source: the kustomize base in deploy/. The all-in-one
//! YAML and the chart's generated files are its rendering byte for byte, and the chart's default
//! rendering has the same objects. The monitoring objects likewise: deploy/monitoring's
//! PrometheusRule and dashboard ConfigMap are their sources' rendering, and the chart renders,
//! when asked, exactly deploy/monitoring's objects. Needs the lab's kubectl and helm
//! (FERROLB_LAB=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Objects by (kind, namespace, name).
fn objects(yaml: &str) -> BTreeMap<(String, String, String), Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .map(|v| {
            let field = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (
                (
                    field("/kind"),
                    field("/metadata/namespace"),
                    field("/metadata/name"),
                ),
                v,
            )
        })
        .collect()
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn generated_install_files_match_the_kustomize_base() {
    lab::require_lab!();
    let bins = lab::binaries::ensure().unwrap();
    let scratch = std::env::temp_dir().join(format!("ferrolb-render-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&scratch));
    run(Command::new(scratch.join("deploy/render.sh")).env("KUBECTL", &bins.kubectl));
    let mut drifted = vec![];
    for file in [
        "ferrolb.yaml",
        "helm/ferrolb/crds/ipaddresspools.yaml",
        "helm/ferrolb/crds/l2advertisements.yaml",
        "helm/ferrolb/templates/rbac.yaml",
        "helm/ferrolb/templates/admission-policy.yaml",
        "monitoring/prometheusrule.yaml",
        "monitoring/dashboard-configmap.yaml",
        "helm/ferrolb/files/monitoring/podmonitors.yaml",
        "helm/ferrolb/files/monitoring/prometheusrule.yaml",
        "helm/ferrolb/files/monitoring/dashboard-configmap.yaml",
    ] {
        let fresh = std::fs::read_to_string(scratch.join("deploy").join(file)).unwrap();
        let committed = std::fs::read_to_string(repo().join("deploy").join(file)).unwrap();
        if fresh != committed {
            drifted.push(file);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        drifted.is_empty(),
        "deploy/{drifted:?} differ from their sources: run deploy/render.sh and commit"
    );
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn helm_default_rendering_is_the_kustomize_base() {
    lab::require_lab!();
    let bins = lab::binaries::ensure().unwrap();
    let deploy = repo().join("deploy");
    let kustomize = objects(&run(Command::new(&bins.kubectl)
        .arg("kustomize")
        .arg(&deploy)));
    let helm = objects(&run(Command::new(&bins.helm)
        .args(["template", "ferrolb"])
        .arg(deploy.join("helm/ferrolb"))
        .args([
            "-n",
            "ferrolb-system",
            "--include-crds",
            "--kube-version",
            "1.36.3",
        ])));

    let only = |a: &BTreeMap<_, Value>, b: &BTreeMap<_, Value>| -> Vec<(String, String, String)> {
        a.keys().filter(|k| !b.contains_key(*k)).cloned().collect()
    };
    let key = |k: &str, ns: &str, n: &str| (k.to_string(), ns.to_string(), n.to_string());
    // Helm installs into a namespace it is given (labelled by the operator, see NOTES.txt) and
    // creates the gossip key itself; everything else is the same object.
    assert_eq!(
        only(&kustomize, &helm),
        vec![key("Namespace", "", "ferrolb-system")]
    );
    assert_eq!(
        only(&helm, &kustomize),
        vec![key("Secret", "ferrolb-system", "ferrolb-gossip")]
    );
    for (k, object) in &kustomize {
        if let Some(other) = helm.get(k) {
            assert_eq!(object, other, "{k:?} differs between kustomize and Helm");
        }
    }
    assert_eq!(
        kustomize.len(),
        22,
        "{:?}",
        kustomize.keys().collect::<Vec<_>>()
    );
}

fn helm_template(helm: &Path, args: &[&str]) -> BTreeMap<(String, String, String), Value> {
    objects(&run(Command::new(helm)
        .args(["template", "ferrolb"])
        .arg(repo().join("deploy/helm/ferrolb"))
        .args(["-n", "ferrolb-system", "--kube-version", "1.36.3"])
        .args(args)))
}

#[test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
fn helm_monitoring_rendering_is_deploy_monitoring() {
    lab::require_lab!();
    let bins = lab::binaries::ensure().unwrap();
    let all = [
        "--set",
        "monitoring.podMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true",
    ];
    let chart = repo().join("deploy/helm/ferrolb");
    for args in [&[][..], &all[..]] {
        run(Command::new(&bins.helm)
            .args(["lint", "--strict"])
            .arg(&chart)
            .args(args));
    }

    let plain: BTreeMap<_, _> = [
        "podmonitors.yaml",
        "prometheusrule.yaml",
        "dashboard-configmap.yaml",
    ]
    .iter()
    .flat_map(|file| {
        objects(&std::fs::read_to_string(repo().join("deploy/monitoring").join(file)).unwrap())
    })
    .collect();
    let kinds: Vec<_> = plain
        .keys()
        .map(|(kind, ns, name)| format!("{kind} {ns}/{name}"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap ferrolb-system/ferrolb-dashboard",
            "PodMonitor ferrolb-system/ferrolb-controller",
            "PodMonitor ferrolb-system/ferrolb-speaker",
            "PrometheusRule ferrolb-system/ferrolb",
        ]
    );
    let default = helm_template(&bins.helm, &[]);
    let enabled = helm_template(&bins.helm, &all);
    let added: BTreeMap<_, _> = enabled
        .into_iter()
        .filter(|(k, _)| !default.contains_key(k))
        .collect();
    assert_eq!(
        added.keys().collect::<Vec<_>>(),
        plain.keys().collect::<Vec<_>>(),
        "what enabling monitoring adds to the chart's objects"
    );
    for (k, object) in &plain {
        assert_eq!(
            object, &added[k],
            "{k:?} differs between deploy/monitoring and Helm"
        );
    }

    // The extra labels and the dashboard's namespace.
    let placed = helm_template(
        &bins.helm,
        &[
            &all[..],
            &[
                "--set",
                "monitoring.prometheusRule.labels.release=kube-prometheus-stack",
                "--set",
                "monitoring.podMonitor.labels.release=kube-prometheus-stack",
                "--set",
                "monitoring.dashboard.namespace=grafana",
            ],
        ]
        .concat(),
    );
    let key = |k: &str, ns: &str, n: &str| (k.to_string(), ns.to_string(), n.to_string());
    for k in [
        key("PrometheusRule", "ferrolb-system", "ferrolb"),
        key("PodMonitor", "ferrolb-system", "ferrolb-speaker"),
    ] {
        let labels = &placed[&k]["metadata"]["labels"];
        assert_eq!(labels["release"], "kube-prometheus-stack", "{k:?}");
        assert_eq!(labels["app.kubernetes.io/part-of"], "ferrolb", "{k:?}");
    }
    let dashboard = &placed[&key("ConfigMap", "grafana", "ferrolb-dashboard")];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
}
