//! The speaker in the lab: started in a node's namespace as the DaemonSet runs it, under its own
//! ServiceAccount. Runs with FERROLB_LAB=1 as root (the README's test command).

use std::path::Path;
use std::time::{Duration, Instant};

use lab::{Lab, LabConfig};

const SPEAKER: &str = env!("CARGO_BIN_EXE_ferrolb-speaker");

/// Today's speaker only connects: this checks the lab's plumbing (its identity, its kubeconfig,
/// the path from a node's namespace to the API server) and that it says plainly that it does
/// not announce yet.
#[tokio::test]
async fn the_speaker_reaches_the_api_server_from_its_node_as_itself() {
    lab::require_lab!();
    let mut lab = Lab::start(LabConfig::with_nodes(1)).await.unwrap();
    lab.start_speaker(Path::new(SPEAKER), 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.speaker_exited(1).is_none() {
        assert!(
            Instant::now() < deadline,
            "the speaker neither exited nor announced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(lab.log_path("speaker-node-1")).unwrap();
    assert!(log.contains("connected to the API server"), "{log}");
    assert!(log.contains("announcing is not implemented"), "{log}");
    let secret = lab
        .kubectl(&[
            "-n",
            "ferrolb-system",
            "get",
            "secret",
            "ferrolb-gossip",
            "-o",
            "name",
        ])
        .await
        .unwrap();
    assert_eq!(secret.trim(), "secret/ferrolb-gossip");
}
