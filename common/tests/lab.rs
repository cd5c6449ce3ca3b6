//! `common::events` against the lab's real API server. Runs with FERROLB_LAB=1 as root.

use common::events::{EventType, Note, Recorder};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use lab::{Lab, LabConfig};

/// A different note about the same object, for the same reason, is a new Event that says it;
/// the same note again counts up its Event's series. (kube's recorder folded the second note
/// into the first Event, so an operator read the first cause twice.)
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_new_note_is_a_new_event_and_a_repeat_counts_up() {
    lab::require_lab!();
    let lab = Lab::start(LabConfig::with_nodes(1)).await.unwrap();
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some("default".into()),
        name: Some("web".into()),
        ..ObjectReference::default()
    };
    let recorder = Recorder::new(lab.client(), "ferrolb-test", "node-1");
    for note in ["no eligible node", "no eligible node", "no ready endpoint"] {
        let note = Note {
            type_: EventType::Warning,
            reason: "NotAnnounced".into(),
            action: "Announce".into(),
            note: note.into(),
        };
        recorder.publish(&note, &regarding).await.unwrap();
    }
    let events = Api::<Event>::namespaced(lab.client(), "default")
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let mut seen: Vec<(String, i32)> = events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("ferrolb-test"))
        .map(|e| {
            (
                e.note.clone().unwrap_or_default(),
                e.series.as_ref().map_or(1, |s| s.count),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("no eligible node".to_string(), 2),
            ("no ready endpoint".to_string(), 1)
        ]
    );
}

/// A watch's first state comes streamed from an API server that streams it (the WatchList
/// feature, Kubernetes 1.32 and 1.34 on), and listed from one that refuses the
/// request (1.33, or the feature turned off): every object arrives either way. (Streamed
/// only, a watch against a server without the feature retried its refused request forever
/// and never saw an object.)
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_watch_gets_every_object_streamed_or_listed() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::watcher;

    lab::require_lab!();
    for (gates, streams) in [(vec![], true), (vec!["WatchList=false".to_string()], false)] {
        let lab = lab_with_namespace(gates.clone()).await;
        let names = ["a", "b", "c"];
        for name in names {
            lab.kubectl(&[
                "-n",
                "watched",
                "create",
                "service",
                "clusterip",
                name,
                "--tcp=80:80",
            ])
            .await
            .unwrap();
        }
        let lists = || namespaced_lists(&lab, "services");
        let lists_before = lists().await;

        let api = kube::Api::<Service>::namespaced(lab.client(), "watched");
        let mut events = std::pin::pin!(common::watch(api, watcher::Config::default()));
        let mut seen = vec![];
        let listed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitApply(svc)) => seen.push(svc.metadata.name.unwrap()),
                    Ok(watcher::Event::InitDone) => return,
                    _ => {}
                }
            }
        })
        .await;
        assert!(
            listed.is_ok(),
            "no complete first state within 30 s (feature gates {gates:?}); seen {seen:?}"
        );
        seen.sort();
        assert_eq!(seen, names, "feature gates {gates:?}");
        let listed = lists().await - lists_before;
        assert_eq!(
            listed > 0.0,
            !streams,
            "LIST requests for the namespace's Services: {listed} (feature gates {gates:?})"
        );
    }
}

/// A watch whose streamed first state is cut each time it is under way (a loaded API server
/// closes the watch of a client that reads slower than the cluster changes; a restart or a
/// load balancer resets it) lists it and gets it whole. (Streamed only, it started
/// again from nothing each time: 7 of 100 speakers starting into 10,000 Services had no first
/// state after 25 minutes.)
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_first_state_cut_each_time_is_listed() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher;
    use std::time::Duration;

    lab::require_lab!();
    const OBJECTS: usize = 2000;
    const CUT_AT: usize = 200;
    let lab = lab_with_namespace(vec![]).await;
    let api = Api::<ConfigMap>::namespaced(lab.client(), "watched");
    // 32 MB of first state: far more than the sockets between server and client hold, so
    // the stream is still under way when the client has read CUT_AT objects.
    let filler = "x".repeat(16 * 1024);
    create_objects(&api, OBJECTS, |i| {
        serde_json::json!({"metadata": {"name": format!("cm-{i}")}, "data": {"filler": filler}})
    })
    .await;
    let lists = || namespaced_lists(&lab, "configmaps");
    let lists_before = lists().await;

    let mut events = std::pin::pin!(common::watch(api.clone(), watcher::Config::default()));
    let (mut starts, mut seen) = (0, 0);
    let whole = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => {
                    starts += 1;
                    seen = 0;
                }
                Ok(watcher::Event::InitApply(_)) => {
                    seen += 1;
                    if seen == CUT_AT {
                        lab.forget_client_connections().unwrap();
                    }
                    // A client slower than the server: a node agent on a busy node.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(watcher::Event::InitDone) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        whole.is_ok(),
        "no whole first state within 60 s: {starts} starts, the last with {seen} objects"
    );
    assert_eq!(seen, OBJECTS, "objects in the first state");
    let listed = lists().await - lists_before;
    assert!(
        listed > 0.0,
        "listed: {listed} LIST requests ({starts} starts)"
    );
}

/// A listed first state whose next page fails (here the API server restarts between two
/// pages) goes on from that page once the server answers: one first state, every object in
/// it, and the restarted server asked only for the pages not yet read. (kube's watcher
/// started the list again from its first page on any failure: on a starved server, where
/// pages fail by the hundred, lists of 10,000 Services never ended.)
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_listed_first_state_goes_on_from_the_page_that_failed() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::PodTemplate;
    use kube::runtime::watcher;
    use std::time::Duration;

    lab::require_lab!();
    // Three pages of the watch's 100 objects.
    const OBJECTS: usize = 250;
    // Listed, not streamed: the server does not stream first states.
    let mut lab = lab_with_namespace(vec!["WatchList=false".into()]).await;
    // PodTemplates: a kind the API server itself does not list (it lists ConfigMaps), so its
    // LIST requests are all the watch's.
    let api = Api::<PodTemplate>::namespaced(lab.client(), "watched");
    create_objects(&api, OBJECTS, |i| pod_template(&format!("t-{i}"))).await;

    let mut events = std::pin::pin!(common::watch(api.clone(), watcher::Config::default()));
    let (mut starts, mut seen, mut failures) = (0, Vec::new(), 0);
    let mut restarted = false;
    let whole = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => {
                    starts += 1;
                    seen.clear();
                }
                Ok(watcher::Event::InitApply(template)) => {
                    seen.push(template.metadata.name.unwrap());
                    // The first page handed out: the next poll asks for the second.
                    if seen.len() == 100 && !restarted {
                        lab.stop_apiserver();
                    }
                }
                Ok(watcher::Event::InitDone) => return,
                Ok(_) => {}
                Err(error) => {
                    println!("page failed: {error}");
                    failures += 1;
                    if !restarted {
                        lab.start_apiserver().await.unwrap();
                        restarted = true;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        whole.is_ok(),
        "no whole first state within 120 s: {starts} starts, {failures} failed pages, the last with {} objects",
        seen.len()
    );
    assert!(
        restarted,
        "no page failed while the API server was down (a first page of {} objects?)",
        seen.len()
    );
    assert_eq!(starts, 1, "first states started ({failures} failed pages)");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), OBJECTS, "distinct objects in the first state");
    let lists = namespaced_lists(&lab, "podtemplates").await;
    assert_eq!(
        lists, 2.0,
        "LIST requests the restarted API server served (the second and third pages)"
    );
}

/// A listed first state whose continue token etcd's compaction expired between two pages
/// (a starved server compacts every 5 minutes, while a list of 10,000 Services is under way)
/// starts again from its first page and ends whole: the server's 410 is recognised, and the
/// expired page is not asked again forever.
#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_listed_first_state_whose_token_expired_starts_again_and_ends_whole() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::PodTemplate;
    use kube::api::ListParams;
    use kube::runtime::watcher;
    use std::time::{Duration, Instant};

    lab::require_lab!();
    const OBJECTS: usize = 250;
    // Listed, not streamed; pages read from etcd, as a loaded server reads them once its
    // watch cache no longer holds the list's revision (its snapshots would answer the next
    // page whatever etcd compacted behind their back).
    let lab = lab_with_namespace(vec![
        "WatchList=false".into(),
        "ListFromCacheSnapshot=false".into(),
    ])
    .await;
    let api = Api::<PodTemplate>::namespaced(lab.client(), "watched");
    create_objects(&api, OBJECTS, |i| pod_template(&format!("t-{i}"))).await;

    let mut events = std::pin::pin!(common::watch(api.clone(), watcher::Config::default()));
    let (mut starts, mut seen, mut failures) = (0, Vec::new(), Vec::new());
    let mut compacted = false;
    let whole = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => {
                    starts += 1;
                    seen.clear();
                }
                Ok(watcher::Event::InitApply(t)) => {
                    seen.push(t.metadata.name.unwrap());
                    // The first page handed out: the next poll asks for the second.
                    if seen.len() == 100 && !compacted {
                        compact_until_a_page_expires(&lab, &api).await;
                        compacted = true;
                    }
                }
                Ok(watcher::Event::InitDone) => return,
                Ok(_) => {}
                Err(error) => failures.push(error.to_string()),
            }
        }
    })
    .await;
    assert!(
        whole.is_ok(),
        "no whole first state within 120 s: {starts} starts, {} failed pages (the first: {:?}), the last with {} objects",
        failures.len(),
        failures.first(),
        seen.len()
    );
    assert!(compacted, "a first page of {} objects", seen.len());
    assert_eq!(starts, 2, "first states started (failures {failures:?})");
    assert!(
        failures.len() == 1 && failures[0].contains("too old"),
        "failed pages: {failures:?}"
    );
    seen.sort();
    seen.dedup();
    // With the one written before the compaction.
    assert_eq!(
        seen.len(),
        OBJECTS + 1,
        "distinct objects in the last first state"
    );

    /// Writes, compacts etcd up to the write, and waits until the API server answers a list
    /// begun before it 410 Expired: it serves a page from its watch cache until it learns of
    /// the compaction.
    async fn compact_until_a_page_expires(lab: &Lab, api: &Api<PodTemplate>) {
        let probe = api.list(&ListParams::default().limit(1)).await.unwrap();
        let token = probe.metadata.continue_.expect("a continue token");
        let later = api
            .create(
                &Default::default(),
                &serde_json::from_value(pod_template("later")).unwrap(),
            )
            .await
            .unwrap();
        let revision = later.metadata.resource_version.unwrap();
        lab.cp
            .exec(
                "curl",
                &[
                    "-sS",
                    "--fail",
                    "-X",
                    "POST",
                    "http://127.0.0.1:2379/v3/kv/compaction",
                    "-d",
                    &format!(r#"{{"revision": "{revision}", "physical": true}}"#),
                ],
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match api
                .list(&ListParams::default().limit(1).continue_token(&token))
                .await
            {
                Err(error) if common::continue_expired(&error) => return,
                Err(error) => panic!("the probe's next page: {error}"),
                Ok(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "the continue token never expired"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// A PodTemplate named `name`: a kind the API server itself does not list (it lists
/// ConfigMaps), so the LIST requests it serves for it are the test's.
fn pod_template(name: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": name},
        "template": {"spec": {"containers": [{"name": "c", "image": "none"}]}},
    })
}

/// A lab of one node without kube-proxy, its API server run with `feature_gates`, and a
/// namespace `watched`.
async fn lab_with_namespace(feature_gates: Vec<String>) -> Lab {
    let lab = Lab::start(LabConfig {
        apiserver_feature_gates: feature_gates,
        kube_proxies: Some(0),
        ..LabConfig::bare(1)
    })
    .await
    .unwrap();
    lab.kubectl(&["create", "namespace", "watched"])
        .await
        .unwrap();
    lab
}

/// Creates `count` objects, the `i`th `object(i)`, 16 at a time.
async fn create_objects<K>(api: &Api<K>, count: usize, object: impl Fn(usize) -> serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(0..count)
        .map(|i| {
            let object: K = serde_json::from_value(object(i)).unwrap();
            async move { api.create(&kube::api::PostParams::default(), &object).await }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await
        .unwrap();
}

/// The LIST requests the API server has served for namespaced `resource` so far.
async fn namespaced_lists(lab: &Lab, resource: &str) -> f64 {
    let text = lab.apiserver_metrics().await.unwrap();
    lab::figures::metric_sum(
        &text,
        "apiserver_request_total{",
        &format!(r#"resource="{resource}",scope="namespace",subresource="",verb="LIST""#),
    )
}
