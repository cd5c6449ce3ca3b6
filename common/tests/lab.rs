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
