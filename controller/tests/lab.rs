//! The controller against the lab's real API server, under its own RBAC from deploy/.
//! Runs with FERROLB_LAB=1 as root (the README's test command).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crds::IPAddressPool;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::DeleteParams;
use lab::{ControllerOptions, Lab, LabConfig, ServiceSpec};

/// The controller under test; `FERROLB_CONTROLLER_BINARY` runs these tests against another
/// build (how a fix is checked to fail on the code before it).
fn controller() -> std::path::PathBuf {
    std::env::var_os("FERROLB_CONTROLLER_BINARY")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ferrolb-controller").into())
}

/// A controller on `config`'s lab.
async fn lab_with_controller(config: LabConfig) -> Lab {
    let mut lab = Lab::start(config).await.unwrap();
    lab.start_controller(&controller(), 1).await.unwrap();
    lab
}

async fn apply(lab: &Lab, yaml: &str) {
    lab.apply(yaml).await.unwrap();
}

fn pool_yaml(name: &str, addresses: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: {name}\nspec:\n  addresses: {addresses:?}\n{extra}"
    )
}

/// The Service's ingress addresses once they are `want` (or what they are after 20 s).
async fn ingress_becomes(lab: &Lab, namespace: &str, name: &str, want: &[&str]) -> Vec<IpAddr> {
    let want: Vec<IpAddr> = want.iter().map(|s| s.parse().unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = lab.ingress(namespace, name).await.unwrap();
        if got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pool's status once `done` holds (or as it is after 10 s).
async fn pool_status_when(
    lab: &Lab,
    pool: &str,
    done: impl Fn(&crds::IPAddressPoolStatus) -> bool,
) -> crds::IPAddressPoolStatus {
    let pools: Api<IPAddressPool> = Api::all(lab.client());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = pools.get(pool).await.unwrap().status.unwrap_or_default();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller's metrics once `done` holds of them, or after 15 s.
async fn metrics_when(lab: &Lab, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = lab.controller_metrics(1).await.unwrap();
        if done(&m) || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eventually_events(lab: &Lab, namespace: &str, name: &str, needle: &str) -> String {
    lab.eventually_events(namespace, name, needle)
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_service_gets_an_address_that_answers_and_the_pool_says_so() {
    lab::require_lab!();
    let mut lab = lab_with_controller(LabConfig::with_nodes(2)).await;
    apply(
        &lab,
        &pool_yaml("lan", &["198.51.100.200-198.51.100.250"], ""),
    )
    .await;
    lab.expose(&ServiceSpec::new("default", "hello"))
        .await
        .unwrap();
    let got = ingress_becomes(&lab, "default", "hello", &["198.51.100.200"]).await;
    assert_eq!(
        got,
        vec!["198.51.100.200".parse::<IpAddr>().unwrap()],
        "controller log:\n{:?}",
        lab.controller_exited(1)
    );

    // The annotation, the Event, the pool's status and the metrics say what happened.
    let svc = Api::<Service>::namespaced(lab.client(), "default")
        .get("hello")
        .await
        .unwrap();
    assert_eq!(
        svc.metadata
            .annotations
            .unwrap()
            .get("ferrolb.io/ip-allocated-from-pool")
            .map(String::as_str),
        Some("lan")
    );
    let ev = eventually_events(&lab, "default", "hello", "IPAllocated").await;
    assert!(ev.contains("Assigned 198.51.100.200 from pool lan"), "{ev}");
    let status = pool_status_when(&lab, "lan", |s| s.ipv4.is_some_and(|u| u.assigned == 1)).await;
    assert_eq!(
        status.ipv4.map(|u| (u.capacity, u.assigned, u.available)),
        Some((51, 1, 50)),
        "{status:?}"
    );
    let table = lab.kubectl(&["get", "ipaddresspools"]).await.unwrap();
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(" 1 ") && l.contains(" 50 ") && l.contains("True")),
        "{table}"
    );
    let held = r#"ferrolb_service_address{service_namespace="default",service_name="hello",pool="lan",address="198.51.100.200",family="ipv4"} 1"#;
    let metrics = metrics_when(&lab, |m| {
        m.contains(r#"ferrolb_object_ready{kind="IPAddressPool",name="lan"} 1"#)
    })
    .await;
    for line in [
        r#"ferrolb_allocator_addresses_in_use{pool="lan",family="ipv4"} 1"#,
        held,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // Through kube-proxy, as a client would (the lab stands in for the speaker's ARP answer).
    let ip: IpAddr = "198.51.100.200".parse().unwrap();
    lab.point_client_at(ip, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab.get(ip, 80).await.is_err() && Instant::now() < deadline {}
    lab.get(ip, 80).await.unwrap();

    // Deleting the Service frees the address for the next one.
    Api::<Service>::namespaced(lab.client(), "default")
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    pool_status_when(&lab, "lan", |s| s.ipv4.is_some_and(|u| u.assigned == 0)).await;
    let metrics = lab.controller_metrics(1).await.unwrap();
    assert!(!metrics.contains(r#"service_name="hello""#), "{metrics}");
    lab.expose(&ServiceSpec::new("default", "second"))
        .await
        .unwrap();
    assert_eq!(
        ingress_becomes(&lab, "default", "second", &["198.51.100.200"]).await,
        vec![ip]
    );

    // An advertisement deleted is a change too: the Service hears its address is no longer
    // announced (a deletion used to requeue nobody).
    apply(
        &lab,
        "apiVersion: ferrolb.io/v1alpha1\nkind: L2Advertisement\nmetadata:\n  name: lan\nspec: {}\n",
    )
    .await;
    lab.expose(&ServiceSpec::new("default", "third"))
        .await
        .unwrap();
    ingress_becomes(&lab, "default", "third", &["198.51.100.201"]).await;
    eventually_events(&lab, "default", "third", "IPAllocated").await;
    let before = lab.events("default", "third").await.unwrap();
    assert!(!before.contains("NotAdvertised"), "{before}");
    lab.kubectl(&["delete", "l2advertisement", "lan"])
        .await
        .unwrap();
    let after = eventually_events(&lab, "default", "third", "NotAdvertised").await;
    assert!(
        after.contains("no L2Advertisement or BGPAdvertisement"),
        "{after}"
    );
    // A pool advertised over BGP alone is advertised.
    apply(
        &lab,
        "apiVersion: ferrolb.io/v1alpha1\nkind: BGPAdvertisement\nmetadata:\n  name: lan\nspec: {}\n",
    )
    .await;
    lab.kubectl(&["delete", "service", "third", "-n", "default"])
        .await
        .unwrap();
    lab.expose(&ServiceSpec::new("default", "fourth"))
        .await
        .unwrap();
    eventually_events(&lab, "default", "fourth", "IPAllocated").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bgp_only = lab.events("default", "fourth").await.unwrap();
    assert!(!bgp_only.contains("NotAdvertised"), "{bgp_only}");
    assert!(lab.controller_exited(1).is_none());
}

type Annotations<'a> = Vec<(&'a str, &'a str)>;

fn svc_yaml(namespace: &str, name: &str, annotations: &[(&str, &str)], spec: &str) -> String {
    let ann: String = annotations
        .iter()
        .map(|(k, v)| format!("\n    {k}: {v:?}"))
        .collect();
    let ann = if ann.is_empty() {
        " {}".to_string()
    } else {
        ann
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  annotations:{ann}\nspec:\n  type: LoadBalancer\n  selector: {{app: hello}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n{spec}"
    )
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn every_allocation_rule_against_the_real_api_server() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig::bare(1)).await.unwrap();
    lab.start_controller(&controller(), 1).await.unwrap();
    lab.kubectl(&["create", "namespace", "vip"]).await.unwrap();
    lab.kubectl(&["create", "namespace", "prod"]).await.unwrap();
    lab.kubectl(&["label", "namespace", "prod", "env=prod"])
        .await
        .unwrap();
    let team = "  serviceAllocation:\n    priority: 0\n    serviceSelectors: [{matchLabels: {team: blue}}]\n";
    let prod = "  serviceAllocation:\n    priority: 0\n    namespaceSelectors:\n      [{matchExpressions: [{key: env, operator: In, values: [prod]}]}]\n";
    for pool in [
        pool_yaml("team", &["198.51.100.240"], team),
        pool_yaml("prod", &["198.51.100.241"], prod),
        pool_yaml("lan", &["198.51.100.200-198.51.100.203"], ""),
        pool_yaml("manual", &["198.51.100.210/31"], "  autoAssign: false\n"),
        pool_yaml(
            "vip",
            &["198.51.100.220-198.51.100.221"],
            "  serviceAllocation:\n    priority: 1\n    namespaces: [vip]\n",
        ),
        pool_yaml(
            "dual",
            &[
                "198.51.100.230",
                "198.51.100.233",
                "2001:db8::c8-2001:db8::ca",
            ],
            "  autoAssign: false\n",
        ),
        pool_yaml(
            "buggy",
            &["198.51.100.255-198.51.101.1"],
            "  autoAssign: false\n  avoidBuggyIPs: true\n",
        ),
    ] {
        apply(&lab, &pool).await;
    }
    let p = "ferrolb.io/address-pool";
    let want = "ferrolb.io/load-balancer-ips";
    let share = "ferrolb.io/allow-shared-ip";
    let cases: Vec<(&str, &str, Annotations, &str)> = vec![
        ("default", "auto", vec![], ""),
        ("vip", "by-priority", vec![], ""),
        ("default", "named", vec![(p, "manual")], ""),
        ("default", "requested", vec![(want, "198.51.100.211")], ""),
        (
            "default",
            "by-spec",
            vec![],
            "  loadBalancerIP: 198.51.100.202\n",
        ),
        ("default", "buggy", vec![(p, "buggy")], ""),
        (
            "default",
            "dual",
            vec![(p, "dual")],
            "  ipFamilyPolicy: RequireDualStack\n",
        ),
        (
            "default",
            "metallb",
            vec![("metallb.universe.tf/address-pool", "lan")],
            "",
        ),
        (
            "default",
            "other-class",
            vec![],
            "  loadBalancerClass: example.com/other\n",
        ),
        (
            "default",
            "our-class",
            vec![],
            "  loadBalancerClass: ferrolb.io/l2\n",
        ),
        (
            "default",
            "prefer-dual",
            vec![(p, "dual")],
            "  ipFamilyPolicy: PreferDualStack\n",
        ),
        (
            "vip",
            "prefer-v4-only",
            vec![],
            "  ipFamilyPolicy: PreferDualStack\n",
        ),
        ("prod", "by-namespace-label", vec![], ""),
    ];
    for (ns, name, ann, spec) in &cases {
        apply(&lab, &svc_yaml(ns, name, ann, spec)).await;
    }
    let labelled = svc_yaml("default", "by-service-label", &[], "").replace(
        "  annotations: {}\n",
        "  annotations: {}\n  labels: {team: blue}\n",
    );
    apply(&lab, &labelled).await;
    let expect: Vec<(&str, &str, Vec<&str>)> = vec![
        ("default", "auto", vec!["198.51.100.200"]),
        ("vip", "by-priority", vec!["198.51.100.220"]),
        ("default", "named", vec!["198.51.100.210"]),
        ("default", "requested", vec!["198.51.100.211"]),
        ("default", "by-spec", vec!["198.51.100.202"]),
        ("default", "buggy", vec!["198.51.101.1"]),
        ("default", "dual", vec!["198.51.100.230", "2001:db8::c8"]),
        ("default", "metallb", vec!["198.51.100.201"]),
        ("default", "our-class", vec!["198.51.100.203"]),
        (
            "default",
            "prefer-dual",
            vec!["198.51.100.233", "2001:db8::c9"],
        ),
        ("vip", "prefer-v4-only", vec!["198.51.100.221"]),
        ("prod", "by-namespace-label", vec!["198.51.100.241"]),
        ("default", "by-service-label", vec!["198.51.100.240"]),
    ];
    for (ns, name, addresses) in &expect {
        assert_eq!(
            ingress_becomes(&lab, ns, name, addresses).await,
            ips(addresses),
            "{ns}/{name}"
        );
    }
    assert_eq!(
        ingress_becomes(&lab, "default", "other-class", &[]).await,
        ips(&[]),
        "another class is left alone"
    );
    let ev = eventually_events(&lab, "default", "our-class", "NotAdvertised").await;
    assert!(
        ev.contains("pool lan is covered by no L2Advertisement or BGPAdvertisement"),
        "{ev}"
    );
    let ev = eventually_events(&lab, "default", "metallb", "MetalLBAnnotation").await;
    assert!(
        ev.contains(
            "metallb.universe.tf/address-pool (ferrolb reads it as ferrolb.io/address-pool)"
        ),
        "{ev}"
    );

    // Bad requests: each gets an Event that names the conflict, and stays pending.
    let bad: Vec<(&str, Annotations, &str, &str)> = vec![
        (
            "taken",
            vec![(want, "198.51.100.211")],
            "",
            "198.51.100.211 is already used by Service default/requested",
        ),
        (
            "outside",
            vec![(want, "203.0.113.99")],
            "",
            "203.0.113.99 is not in any address pool",
        ),
        (
            "unknown-pool",
            vec![(p, "nope")],
            "",
            "there is no address pool named nope",
        ),
        (
            "both-forms",
            vec![(want, "198.51.100.200")],
            "  loadBalancerIP: 198.51.100.201\n",
            "both spec.loadBalancerIP and the ferrolb.io/load-balancer-ips annotation are set",
        ),
        (
            "wrong-family",
            vec![(want, "2001:db8::c9")],
            "",
            "2001:db8::c9 is an IPv6 address, but the Service is IPv4 single-stack",
        ),
        (
            "not-allowed",
            vec![(p, "vip")],
            "",
            "pool vip does not serve this Service",
        ),
        ("exhausted", vec![], "", "has no free IPv4 address left"),
    ];
    for (name, ann, spec, _) in &bad {
        apply(&lab, &svc_yaml("default", name, ann, spec)).await;
    }
    for (name, _, _, message) in &bad {
        let ev = eventually_events(&lab, "default", name, message).await;
        assert!(
            ev.contains("AllocationFailed") && ev.contains(message),
            "{name}: {ev}"
        );
        assert_eq!(
            ingress_becomes(&lab, "default", name, &[]).await,
            ips(&[]),
            "{name} stays pending"
        );
    }

    // Sharing: same key, different ports share; a port clash or another key is refused.
    apply(
        &lab,
        &svc_yaml(
            "default",
            "dns-tcp",
            &[(want, "198.51.100.231"), (share, "dns"), (p, "share")],
            "",
        ),
    )
    .await;
    apply(
        &lab,
        &pool_yaml(
            "share",
            &["198.51.100.231-198.51.100.232"],
            "  autoAssign: false\n",
        ),
    )
    .await;
    let udp = "  ports: [{name: dns, port: 53, protocol: UDP}]\n";
    let clash = "  ports: [{name: http, port: 80, protocol: TCP}]\n";
    for (name, ann, spec) in [
        (
            "dns-udp",
            vec![(want, "198.51.100.231"), (share, "dns")],
            udp,
        ),
        (
            "dns-clash",
            vec![(want, "198.51.100.231"), (share, "dns")],
            clash,
        ),
        (
            "other-key",
            vec![(want, "198.51.100.231"), (share, "web")],
            udp,
        ),
    ] {
        let yaml = svc_yaml("default", name, &ann, "").replace(
            "  ports: [{name: http, port: 80, targetPort: 8080}]\n",
            spec,
        );
        apply(&lab, &yaml).await;
    }
    assert_eq!(
        ingress_becomes(&lab, "default", "dns-tcp", &["198.51.100.231"]).await,
        ips(&["198.51.100.231"])
    );
    assert_eq!(
        ingress_becomes(&lab, "default", "dns-udp", &["198.51.100.231"]).await,
        ips(&["198.51.100.231"])
    );
    for name in ["dns-clash", "other-key"] {
        let ev = eventually_events(&lab, "default", name, "AllocationFailed").await;
        assert!(ev.contains("198.51.100.231"), "{name}: {ev}");
        assert_eq!(
            ingress_becomes(&lab, "default", name, &[]).await,
            ips(&[]),
            "{name}"
        );
    }

    // A type change releases the address; the pending Service that wanted one gets it.
    lab.kubectl(&[
        "patch",
        "svc",
        "auto",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])
    .await
    .unwrap();
    // The API server itself clears the status of a Service that stops being a
    // LoadBalancer, so an empty status does not yet say the controller acted.
    assert_eq!(
        ingress_becomes(&lab, "default", "auto", &[]).await,
        ips(&[]),
        "status cleared"
    );
    let ev = eventually_events(&lab, "default", "auto", "IPReleased").await;
    assert!(
        ev.contains("Released 198.51.100.200: the Service no longer asks ferrolb for an address"),
        "{ev}"
    );
    // The recorded pool goes with the address (the controller's release write removes it).
    let services = Api::<Service>::namespaced(lab.client(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    let annotations = loop {
        let annotations = services
            .get("auto")
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default();
        if !annotations.contains_key("ferrolb.io/ip-allocated-from-pool")
            || Instant::now() > deadline
        {
            break annotations;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !annotations.contains_key("ferrolb.io/ip-allocated-from-pool"),
        "{annotations:?}"
    );
    assert_eq!(
        ingress_becomes(&lab, "default", "exhausted", &["198.51.100.200"]).await,
        ips(&["198.51.100.200"])
    );

    // Overlapping pools: an Event and a condition on both, naming each other.
    apply(
        &lab,
        &pool_yaml("dup", &["198.51.100.203-198.51.100.205"], ""),
    )
    .await;
    let ev = eventually_events(&lab, "default", "dup", "PoolOverlap").await;
    assert!(
        ev.contains("pools dup and lan both contain 198.51.100.203"),
        "{ev}"
    );
    for (pool, other) in [("lan", "dup"), ("dup", "lan")] {
        let s = pool_status_when(&lab, pool, |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Overlap" && c.status == "True")
        })
        .await;
        let c = s.conditions.iter().find(|c| c.type_ == "Overlap").unwrap();
        assert!(
            c.status == "True" && c.message.contains(other) && c.message.contains("198.51.100.203"),
            "{pool}: {c:?}"
        );
    }

    // Deleting a pool in use: the finalizer keeps it and says why; its Services keep their
    // addresses; once they are gone, so is the pool.
    lab.kubectl(&["delete", "ipaddresspool", "manual", "--wait=false"])
        .await
        .unwrap();
    let s = pool_status_when(&lab, "manual", |s| {
        s.conditions.iter().any(|c| c.reason == "Deleting")
    })
    .await;
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(
        ready.reason == "Deleting" && ready.message.contains("2 Service(s)"),
        "{ready:?}"
    );
    assert_eq!(
        ingress_becomes(&lab, "default", "named", &["198.51.100.210"]).await,
        ips(&["198.51.100.210"])
    );
    lab.kubectl(&["delete", "svc", "named", "requested"])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while lab
        .kubectl(&["get", "ipaddresspool", "manual"])
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "pool manual still there after its Services left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Shrinking a pool under a live address leaves it in place and says so.
    apply(
        &lab,
        &pool_yaml(
            "vip",
            &["198.51.100.221"],
            "  serviceAllocation:\n    priority: 1\n    namespaces: [vip]\n",
        ),
    )
    .await;
    let ev = eventually_events(&lab, "vip", "by-priority", "AddressOutsidePools").await;
    assert!(
        ev.contains("198.51.100.220 is no longer in any pool"),
        "{ev}"
    );
    assert_eq!(
        ingress_becomes(&lab, "vip", "by-priority", &["198.51.100.220"]).await,
        ips(&["198.51.100.220"])
    );
    assert!(
        lab.controller_exited(1).is_none(),
        "the controller is still running"
    );
}

/// Every Service's ingress addresses, by `name@uid`: a Service re-created under the same name is
/// another Service.
async fn snapshot(lab: &Lab, namespace: &str) -> std::collections::BTreeMap<String, Vec<IpAddr>> {
    Api::<Service>::namespaced(lab.client(), namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            let read = crds::read::service(&s);
            (format!("{}@{}", read.key.name, read.key.uid), read.ingress)
        })
        .collect()
}

async fn create_services(lab: &Lab, namespace: &str, names: impl Iterator<Item = String>) {
    use futures::StreamExt;
    let api: Api<Service> = Api::namespaced(lab.client(), namespace);
    futures::stream::iter(names)
        .for_each_concurrent(16, |name| {
            let api = api.clone();
            async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                             "ports": [{"port": 80}]},
                }))
                .unwrap();
                api.create(&Default::default(), &svc).await.unwrap();
            }
        })
        .await;
}

async fn delete_services(lab: &Lab, namespace: &str, names: impl Iterator<Item = String>) {
    use futures::StreamExt;
    let api: Api<Service> = Api::namespaced(lab.client(), namespace);
    futures::stream::iter(names)
        .for_each_concurrent(16, |name| {
            let api = api.clone();
            async move {
                api.delete(&name, &DeleteParams::default()).await.unwrap();
            }
        })
        .await;
}

/// Tracks every address each Service was ever seen with, across snapshots.
#[derive(Default)]
struct History(std::collections::BTreeMap<String, std::collections::BTreeSet<IpAddr>>);

impl History {
    fn record(&mut self, snap: &std::collections::BTreeMap<String, Vec<IpAddr>>) {
        for (name, ips) in snap {
            self.0.entry(name.clone()).or_default().extend(ips);
        }
    }

    /// Waits until every Service in `namespace` has an address, checks that no two hold one,
    /// and records the snapshot.
    async fn settled(&mut self, lab: &Lab, namespace: &str) {
        let snap = all_allocated(lab, namespace, Duration::from_secs(60)).await;
        assert_no_duplicates(&snap);
        self.record(&snap);
    }

    fn assert_none_moved(&self) {
        assert!(
            self.moved().is_empty(),
            "Services whose address changed: {:?}",
            self.moved()
        );
    }

    /// Services seen with more than one address.
    fn moved(&self) -> Vec<(&String, &std::collections::BTreeSet<IpAddr>)> {
        self.0.iter().filter(|(_, ips)| ips.len() > 1).collect()
    }
}

/// Waits until every Service in the namespace has an address; the snapshot then.
async fn all_allocated(
    lab: &Lab,
    namespace: &str,
    within: Duration,
) -> std::collections::BTreeMap<String, Vec<IpAddr>> {
    let deadline = Instant::now() + within;
    loop {
        let snap = snapshot(lab, namespace).await;
        let pending = snap.values().filter(|ips| ips.is_empty()).count();
        if pending == 0 || Instant::now() > deadline {
            assert_eq!(
                pending,
                0,
                "Services still pending with a /112 of free addresses\n{}",
                controller_logs(lab)
            );
            return snap;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The last lines of every controller replica's log, for failure messages.
fn controller_logs(lab: &Lab) -> String {
    (1..=2)
        .filter_map(|r| {
            let log = std::fs::read_to_string(lab.log_path(&format!("controller-{r}"))).ok()?;
            // Backtrace frames (RUST_BACKTRACE is set here) would push the messages out.
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.starts_with(' ') && !l.starts_with("stack backtrace"))
                .collect();
            Some(format!(
                "--- controller-{r}\n{}",
                lines[lines.len().saturating_sub(25)..].join("\n")
            ))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_duplicates(snap: &std::collections::BTreeMap<String, Vec<IpAddr>>) {
    let mut seen = std::collections::BTreeMap::new();
    for (name, ips) in snap {
        for ip in ips {
            if let Some(other) = seen.insert(*ip, name) {
                panic!("{ip} held by both {other} and {name}, which set no sharing key");
            }
        }
    }
}

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A one-node lab with pool `big` of `pool`, `n` IPv6 Services `s0…` in `namespace` and one
/// controller replica, once every Service has an address; the history holds that snapshot.
async fn controller_with_services(pool: &str, namespace: &str, n: usize) -> (Lab, History) {
    let mut lab = Lab::start(LabConfig::bare(1)).await.unwrap();
    apply(&lab, &pool_yaml("big", &[pool], "")).await;
    lab.kubectl(&["create", "namespace", namespace])
        .await
        .unwrap();
    create_services(&lab, namespace, (0..n).map(|i| format!("s{i}"))).await;
    lab.start_controller(&controller(), 1).await.unwrap();
    let mut history = History::default();
    let snap = all_allocated(&lab, namespace, Duration::from_secs(120)).await;
    assert_no_duplicates(&snap);
    history.record(&snap);
    (lab, history)
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn restarts_never_move_or_duplicate_an_address() {
    lab::require_lab!();
    let (mut lab, mut history) = controller_with_services("2001:db8:5::/112", "many", 500).await;

    let mut rng = Lcg(0x5eed);
    let mut next = 500;
    let mut alive: Vec<usize> = (0..500).collect();
    for round in 0..5 {
        // Create and delete while the controller works; kill it at a random point.
        let create: Vec<String> = (next..next + 20).map(|i| format!("s{i}")).collect();
        next += 20;
        let mut delete = vec![];
        for _ in 0..20 {
            let i = rng.below(alive.len() as u64) as usize;
            delete.push(format!("s{}", alive.swap_remove(i)));
        }
        let kill_after = Duration::from_millis(rng.below(600));
        let churn = async {
            create_services(&lab, "many", create.clone().into_iter()).await;
            delete_services(&lab, "many", delete.clone().into_iter()).await;
        };
        let ((), ()) = tokio::join!(churn, async {
            tokio::time::sleep(kill_after).await;
            lab.signal_controller(1, nix::sys::signal::Signal::SIGKILL)
                .unwrap();
        });
        lab.kill_controller(1);
        history.record(&snapshot(&lab, "many").await);
        lab.start_controller(&controller(), 1).await.unwrap();
        if let Some(log) = lab.controller_exited(1) {
            panic!("round {round}: the controller exited:\n{log}");
        }
        history.settled(&lab, "many").await;
        alive.extend((next - 20)..next);
        eprintln!("round {round}: killed after {kill_after:?}");
    }
    history.assert_none_moved();
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn two_replicas_one_writer_and_the_standby_takes_over() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig::bare(1)).await.unwrap();
    apply(&lab, &pool_yaml("big", &["2001:db8:5::/112"], "")).await;
    lab.kubectl(&["create", "namespace", "many"]).await.unwrap();
    lab.start_controller(&controller(), 1).await.unwrap();
    lab.start_controller(&controller(), 2).await.unwrap();

    // Exactly one replica leads.
    let leader = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut leading = vec![];
            for r in [1, 2] {
                if lab.controller_metrics(r).await.is_ok_and(|m| leads(&m)) {
                    leading.push(r);
                }
            }
            if leading.len() == 1 || Instant::now() > deadline {
                assert_eq!(leading.len(), 1, "replicas leading: {leading:?}");
                return leading[0];
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    let standby = 3 - leader;

    create_services(&lab, "many", (0..100).map(|i| format!("s{i}"))).await;
    let mut history = History::default();
    history.record(&all_allocated(&lab, "many", Duration::from_secs(60)).await);

    // The leader dies mid-stream; the standby takes over and finishes the work.
    let churn = create_services(&lab, "many", (100..200).map(|i| format!("s{i}")));
    let ((), ()) = tokio::join!(churn, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        lab.signal_controller(leader, nix::sys::signal::Signal::SIGKILL)
            .unwrap();
    });
    lab.kill_controller(leader);
    history.record(&snapshot(&lab, "many").await);
    delete_services(&lab, "many", (0..100).step_by(3).map(|i| format!("s{i}"))).await;
    create_services(&lab, "many", (200..220).map(|i| format!("s{i}"))).await;
    history.settled(&lab, "many").await;
    history.assert_none_moved();
    assert!(leads(&lab.controller_metrics(standby).await.unwrap()));
    assert!(lab.controller_exited(standby).is_none());
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn two_services_claiming_one_address_the_older_keeps_it() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig::bare(1)).await.unwrap();
    apply(
        &lab,
        &pool_yaml("lan", &["198.51.100.200-198.51.100.201"], ""),
    )
    .await;
    // Before the controller runs, both Services claim .200 in their status (a restore from a
    // backup, or a hand edit), without a sharing key.
    for name in ["older", "younger"] {
        apply(&lab, &svc_yaml("default", name, &[], "")).await;
        tokio::time::sleep(Duration::from_millis(1100)).await; // creation times differ by seconds
    }
    for name in ["older", "younger"] {
        lab.set_ingress("default", name, &ips(&["198.51.100.200"]))
            .await
            .unwrap();
    }
    lab.start_controller(&controller(), 1).await.unwrap();
    assert_eq!(
        ingress_becomes(&lab, "default", "younger", &["198.51.100.201"]).await,
        ips(&["198.51.100.201"])
    );
    assert_eq!(
        ingress_becomes(&lab, "default", "older", &["198.51.100.200"]).await,
        ips(&["198.51.100.200"])
    );
    let ev = eventually_events(&lab, "default", "younger", "AddressTaken").await;
    assert!(
        ev.contains("198.51.100.200 is held by the older Service default/older"),
        "{ev}"
    );
}

/// Issue 9, bug 1: an IPv6 range written backwards (the one mistake CEL cannot catch) used to
/// take the whole pool out of allocation. The good entries go on allocating; the bad one is
/// named on the pool's Ready condition and in a Warning Event.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_bad_pool_entry_is_named_and_the_rest_of_the_pool_allocates() {
    lab::require_lab!();
    let lab = lab_with_controller(LabConfig::bare(2)).await;
    apply(
        &lab,
        &pool_yaml(
            "mixed",
            &["198.51.100.230-198.51.100.231", "2001:db8::20-2001:db8::10"],
            "",
        ),
    )
    .await;
    apply(&lab, &svc_yaml("default", "web", &[], "")).await;
    assert_eq!(
        ingress_becomes(&lab, "default", "web", &["198.51.100.230"]).await,
        ips(&["198.51.100.230"])
    );
    let status = pool_status_when(&lab, "mixed", |s| {
        s.conditions.iter().any(|c| c.type_ == "Ready")
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidAddresses"),
        "{ready:?}"
    );
    assert!(
        ready
            .message
            .contains("\"2001:db8::20-2001:db8::10\" is ignored"),
        "{}",
        ready.message
    );
    assert_eq!(status.ipv4.map(|u| u.capacity), Some(2));
    let events = eventually_events(&lab, "default", "mixed", "InvalidPoolEntry").await;
    assert!(
        events.contains("InvalidPoolEntry") && events.contains("2001:db8::20-2001:db8::10"),
        "{events}"
    );
}

/// Issue 9, bug 7: a pool of `0.0.0.0/0` used to be accepted, and the controller handed out
/// unspecified, loopback, link-local or multicast addresses that a speaker would then claim on
/// the LAN. `kubectl apply` refuses what CEL can see; an IPv6 range CEL can only check by its
/// ends (here one that runs into fe80::/10) is refused by the controller, and no Service ever
/// gets such an address.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn never_announced_addresses_are_never_handed_out() {
    lab::require_lab!();
    let lab = lab_with_controller(LabConfig::bare(2)).await;
    let refused = lab
        .apply(&pool_yaml("everything", &["0.0.0.0/0"], ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("never handed out or announced"),
        "{refused}"
    );

    apply(
        &lab,
        &pool_yaml(
            "v6",
            &[
                "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff-fec0::",
                "2001:db8::5",
            ],
            "",
        ),
    )
    .await;
    let v6 = "  ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack\n";
    apply(&lab, &svc_yaml("default", "first", &[], v6)).await;
    assert_eq!(
        ingress_becomes(&lab, "default", "first", &["2001:db8::5"]).await,
        ips(&["2001:db8::5"])
    );
    // The pool has nothing else to give: the next Service waits with a reason rather than
    // getting an address of the refused entry.
    apply(&lab, &svc_yaml("default", "second", &[], v6)).await;
    let events = eventually_events(&lab, "default", "second", "AllocationFailed").await;
    assert!(events.contains("AllocationFailed"), "{events}");
    assert_eq!(
        ingress_becomes(&lab, "default", "second", &[]).await,
        Vec::<IpAddr>::new()
    );
    let status = pool_status_when(&lab, "v6", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.message.contains("fe80::/10"))
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready
            .message
            .contains("includes fe80::/10, link-local addresses"),
        "{}",
        ready.message
    );
}

/// Issue 9, bug 4: deletions were released by name, so a Service deleted and re-created under
/// the same name could keep its predecessor's address in status while the late deletion freed
/// it for another Service. Keyed by UID, and adopting what a Service already shows before
/// allocating, no address is ever held by two Services and no surviving Service's address
/// moves, through same-name churn and a controller restart in the middle of it.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn recreated_services_of_the_same_name_never_share_an_address() {
    lab::require_lab!();
    let (mut lab, mut history) = controller_with_services("2001:db8:6::/112", "same", 60).await;

    for round in 0..6 {
        let names: Vec<String> = (0..30)
            .map(|i| format!("s{}", (round * 11 + i) % 60))
            .collect();
        let newcomers: Vec<String> = (0..10).map(|i| format!("t{round}-{i}")).collect();
        delete_services(&lab, "same", names.clone().into_iter()).await;
        let recreate = async {
            create_services(&lab, "same", names.clone().into_iter()).await;
            create_services(&lab, "same", newcomers.clone().into_iter()).await;
        };
        if round == 3 {
            // A restart in the middle of the churn.
            let ((), ()) = tokio::join!(recreate, async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                lab.signal_controller(1, nix::sys::signal::Signal::SIGKILL)
                    .unwrap();
            });
            lab.kill_controller(1);
            lab.start_controller(&controller(), 1).await.unwrap();
        } else {
            recreate.await;
        }
        history.settled(&lab, "same").await;
    }
    history.assert_none_moved();
}

/// Issue 9, bug 4: a controller restarted while the API server answers slowly must not
/// forget addresses. Its start-up reads every Service's address, then its Service watch lists
/// again; when that listing fails for longer than the 60 s sweep (here: the node's path is
/// slowed to a crawl, and cut just after the start-up's read, for 65 s), the sweep used to
/// compare against the still-empty store and release every address, and the Services then
/// got whatever was lowest and free. Every address must stay where it is, and a Service
/// created after the path returns gets a free one. The API server's side also forgets the
/// controller's connections during the cut, so they die silently: its requests and watches
/// must give up on them (they waited five minutes, or for ever for a request in flight).
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_controller_restarted_while_the_api_server_is_slow_forgets_no_address() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig::bare(1)).await.unwrap();
    // The Lease outlasts the cut, so the leader stays the leader through it.
    let options = || ControllerOptions {
        node: Some(1),
        lease_duration: Duration::from_secs(300),
    };
    lab.start_controller_with(&controller(), 1, options())
        .await
        .unwrap();
    apply(
        &lab,
        &pool_yaml("lan", &["198.51.100.200-198.51.100.219"], ""),
    )
    .await;
    lab.kubectl(&["create", "namespace", "slow"]).await.unwrap();
    let v4 = |name: &str| svc_yaml("slow", name, &[], "");
    for i in 0..6 {
        apply(&lab, &v4(&format!("s{i}"))).await;
        let want = format!("198.51.100.{}", 200 + i);
        assert_eq!(
            ingress_becomes(&lab, "slow", &format!("s{i}"), &[&want]).await,
            ips(&[&want])
        );
    }
    // Holes at the low end: a Service that lost its address would get another.
    delete_services(
        &lab,
        "slow",
        ["s0".to_string(), "s2".to_string()].into_iter(),
    )
    .await;
    let mut history = History::default();
    history.settled(&lab, "slow").await;

    let log = lab.log_path("controller-1");
    let restored = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("allocations restored from Service status")
            .count()
    };
    let before = restored();
    lab.kill_controller(1);
    lab.slow_api_path(1, Some(64)).unwrap();
    lab.start_controller_with(&controller(), 1, options())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while restored() == before {
        assert!(
            Instant::now() < deadline,
            "the controller did not start\n{}",
            controller_logs(&lab)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lab.cut_api_path(1, true).unwrap();
    let healed = Instant::now() + Duration::from_secs(65);
    // The API server's host forgets the controller's connections during the cut (a reboot,
    // or its address moving to another host): the resets are lost, so the connections die
    // without a word and only a timeout of the controller's own can tell.
    tokio::time::sleep(Duration::from_secs(5)).await;
    lab.forget_api_connections(1).unwrap();
    tokio::time::sleep_until(healed.into()).await;
    lab.cut_api_path(1, false).unwrap();
    lab.slow_api_path(1, None).unwrap();
    assert!(
        lab.controller_exited(1).is_none(),
        "{}",
        controller_logs(&lab)
    );

    apply(&lab, &v4("late")).await;
    // Requests sent into the cut come back only when TCP retransmits them: up to two minutes.
    let deadline = Instant::now() + Duration::from_secs(180);
    while lab.ingress("slow", "late").await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the controller did not come back\n{}",
            controller_logs(&lab)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its reconciles have run: the kept addresses would have moved by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    history.settled(&lab, "slow").await;
    history.assert_none_moved();
}

/// Whether a replica's metrics say it leads: the sample line, not the text, whose HELP line
/// contains "ferrolb_controller_leader 1" too (so a bare `contains` said every replica led).
fn leads(metrics: &str) -> bool {
    metrics.lines().any(|l| l == "ferrolb_controller_leader 1")
}

/// The replica whose metrics say it leads, once exactly one of `replicas` does.
async fn the_leader(lab: &Lab, replicas: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leading = vec![];
        for &r in replicas {
            if lab.controller_metrics(r).await.is_ok_and(|m| leads(&m)) {
                leading.push(r);
            }
        }
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(
            Instant::now() < deadline,
            "replicas leading: {leading:?}\n{}",
            controller_logs(lab)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 9, bug 3: a leader cut off from the API server (not killed) for longer than the Lease
/// must stop writing and exit by its own clock, at the renew deadline (2/3 of the 4 s Lease),
/// before the standby may take over; it used to go on running and, once the path came back,
/// write from its stale view. Services are created and deleted during the cut; when the path
/// returns, no address is held by two Services and none moved.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_leader_cut_off_from_the_api_server_stops_writing_and_exits() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig::bare(1)).await.unwrap();
    apply(&lab, &pool_yaml("big", &["2001:db8:7::/112"], "")).await;
    lab.kubectl(&["create", "namespace", "cut"]).await.unwrap();
    // Replica 1 on node 1, whose path can be cut; it leads before replica 2 starts.
    lab.start_controller_on(&controller(), 1, Some(1))
        .await
        .unwrap();
    assert_eq!(the_leader(&lab, &[1]).await, 1);
    lab.start_controller(&controller(), 2).await.unwrap();
    create_services(&lab, "cut", (0..40).map(|i| format!("s{i}"))).await;
    let mut history = History::default();
    history.record(&all_allocated(&lab, "cut", Duration::from_secs(60)).await);

    lab.cut_api_path(1, true).unwrap();
    let cut_at = Instant::now();
    delete_services(&lab, "cut", (0..40).step_by(4).map(|i| format!("s{i}"))).await;
    create_services(&lab, "cut", (40..80).map(|i| format!("s{i}"))).await;
    // The standby takes over and allocates what was created during the cut.
    history.settled(&lab, "cut").await;
    assert_eq!(the_leader(&lab, &[2]).await, 2);

    // The cut-off leader has exited by its own clock while still cut off. (The whole log is
    // read: with RUST_BACKTRACE set, a backtrace follows the message.)
    let exited = loop {
        if lab.controller_exited(1).is_some() {
            break std::fs::read_to_string(lab.log_path("controller-1")).unwrap();
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(20),
            "the cut-off leader is still running {:?} after the cut",
            cut_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exited.contains("renew deadline passed"), "{exited}");

    lab.cut_api_path(1, false).unwrap();
    create_services(&lab, "cut", (80..90).map(|i| format!("s{i}"))).await;
    history.settled(&lab, "cut").await;
    history.assert_none_moved();
}

/// Issue 9, bug 6: three places where ferrolb surprised a user coming from MetalLB.
/// - A change of `allow-shared-ip` the other holder cannot accept is refused: the Service keeps
///   its address and an Event says why (it used to move to a new address).
/// - A pool whose every address is in another pool says it is overlapped, not exhausted.
/// - A dual-stack Service requesting addresses of two pools is refused with both named (the
///   pair could end up with no node allowed to announce both).
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn metallb_users_keep_their_address_and_read_the_real_reason() {
    lab::require_lab!();
    let lab = lab_with_controller(LabConfig::bare(2)).await;
    apply(
        &lab,
        &pool_yaml("lan", &["198.51.100.200-198.51.100.209"], ""),
    )
    .await;
    let share = "ferrolb.io/allow-shared-ip";
    let port = |p: u16| format!("  ports: [{{name: p, port: {p}, targetPort: 8080}}]\n");
    let sharer = |name: &str, key: &str, p: u16| {
        svc_yaml("default", name, &[(share, key)], "").replace(
            "  ports: [{name: http, port: 80, targetPort: 8080}]\n",
            &port(p),
        )
    };
    apply(&lab, &sharer("dns-tcp", "dns", 53)).await;
    apply(&lab, &sharer("dns-web", "dns", 80)).await;
    for name in ["dns-tcp", "dns-web"] {
        assert_eq!(
            ingress_becomes(&lab, "default", name, &["198.51.100.200"]).await,
            ips(&["198.51.100.200"])
        );
    }
    apply(&lab, &sharer("dns-web", "typo", 80)).await;
    let events = eventually_events(&lab, "default", "dns-web", "SharingChangeRefused").await;
    assert!(
        events.contains("SharingChangeRefused") && events.contains("keeps 198.51.100.200"),
        "{events}"
    );
    assert_eq!(
        ingress_becomes(&lab, "default", "dns-web", &["198.51.100.200"]).await,
        ips(&["198.51.100.200"])
    );

    apply(
        &lab,
        &pool_yaml("inner", &["198.51.100.205-198.51.100.206"], ""),
    )
    .await;
    apply(
        &lab,
        &svc_yaml(
            "default",
            "in-inner",
            &[("ferrolb.io/address-pool", "inner")],
            "",
        ),
    )
    .await;
    let events = eventually_events(&lab, "default", "in-inner", "PoolOverlapped").await;
    assert!(
        events.contains("PoolOverlapped") && events.contains("also in pool(s) lan"),
        "{events}"
    );

    apply(&lab, &pool_yaml("v6", &["2001:db8::c8-2001:db8::c9"], "")).await;
    apply(
        &lab,
        &svc_yaml(
            "default",
            "two-pools",
            &[(
                "ferrolb.io/load-balancer-ips",
                "198.51.100.208,2001:db8::c8",
            )],
            "  ipFamilyPolicy: RequireDualStack\n",
        ),
    )
    .await;
    let events = eventually_events(&lab, "default", "two-pools", "RequestedFromTwoPools").await;
    assert!(events.contains("in two pools, lan and v6"), "{events}");
    assert_eq!(
        ingress_becomes(&lab, "default", "two-pools", &[]).await,
        Vec::<IpAddr>::new()
    );

    // A pool moved from MetalLB with its metadata hears once how its priority 0 reads here.
    apply(
        &lab,
        &pool_yaml(
            "moved",
            &["203.0.113.40/30"],
            "  serviceAllocation:\n    priority: 0\n",
        )
        .replace(
            "  name: moved\n",
            "  name: moved\n  annotations: {metallb.io/migrated-from: metallb-system.default}\n",
        ),
    )
    .await;
    let events = eventually_events(&lab, "default", "moved", "MigratedFromMetalLB").await;
    assert!(
        events.contains("MetalLB's metallb.io/migrated-from")
            && events.contains("tries it before every pool with a higher number"),
        "{events}"
    );
    // A pool without MetalLB's metadata hears nothing: its Events come before its status.
    apply(&lab, &pool_yaml("plain", &["203.0.113.48/30"], "")).await;
    let status = pool_status_when(&lab, "plain", |s| !s.conditions.is_empty()).await;
    assert!(!status.conditions.is_empty(), "{status:?}");
    let events = lab.events("default", "plain").await.unwrap();
    assert!(!events.contains("MigratedFromMetalLB"), "{events}");
}

/// A one-node lab where replica 1 leads and replica 2 stands by.
async fn leader_and_standby() -> Lab {
    let mut lab = Lab::start(LabConfig::bare(1)).await.unwrap();
    lab.start_controller(&controller(), 1).await.unwrap();
    assert_eq!(the_leader(&lab, &[1]).await, 1);
    lab.start_controller(&controller(), 2).await.unwrap();
    lab
}

/// A leader stopped by SIGTERM (a rolling update) gives the Lease up on its way out, so the
/// standby takes over at once rather than after the Lease's whole duration.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_leader_stopped_gracefully_releases_the_lease() {
    lab::require_lab!();
    let mut lab = leader_and_standby().await;
    lab.signal_controller(1, nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.controller_exited(1).is_none() {
        assert!(Instant::now() < deadline, "the leader did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(lab.client(), "ferrolb-system");
    let holder = leases
        .get("ferrolb-controller")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_ne!(
        holder.as_deref(),
        Some("controller-1"),
        "the stopped leader still holds the Lease"
    );
    assert_eq!(the_leader(&lab, &[2]).await, 2);
}

/// A leader whose renewal meets someone else's write to the Lease (409 Conflict) tries again
/// at its next round, as client-go does, until its renew deadline; it used to read the
/// conflict as "held by another replica" and exit. Another writer annotates the Lease as fast
/// as it can until the leader's log shows two conflicts; the leader neither exits nor hands
/// over.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_leader_keeps_the_lease_through_write_conflicts() {
    lab::require_lab!();
    let mut lab = leader_and_standby().await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(lab.client(), "ferrolb-system");
    let conflicts = |lab: &Lab| {
        std::fs::read_to_string(lab.log_path("controller-1"))
            .unwrap_or_default()
            .matches("the Lease changed while being renewed")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut writes = 0;
    while conflicts(&lab) < 2 && lab.controller_exited(1).is_none() {
        assert!(
            Instant::now() < deadline && writes < 20_000,
            "no renewal met a conflict in {writes} writes: the test tested nothing"
        );
        let patch = serde_json::json!({"metadata": {"annotations": {"lab.ferrolb.io/touched": writes.to_string()}}});
        leases
            .patch(
                "ferrolb-controller",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
        writes += 1;
    }
    // Two more rounds of renewal after the conflicts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(status) = lab.controller_exited(1) {
        panic!(
            "the leader exited ({status}) after {writes} writes to its Lease:\n{}",
            controller_logs(&lab)
        );
    }
    assert_eq!(the_leader(&lab, &[1, 2]).await, 1);
}
