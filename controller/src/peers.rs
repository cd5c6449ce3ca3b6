//! The BGPPeer reconciler: each peer's `selected` and `established` node counts and its
//! `Ready` condition, from the Nodes its `nodeSelectors` select and the session entries the
//! speakers write into its status (each node its own, `speaker/src/bgp_mode.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crds::{BGPPeer, BGPPeerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use model::bgp::{ReportedSession, peer_readiness};

use crate::run::{Context, Error};
use crate::state::cond;
use crate::write;

pub async fn reconcile(peer: Arc<BGPPeer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = status_of(&peer, &ctx);
    let current = peer.status.clone().unwrap_or_default();
    let unchanged = current.selected == status.selected
        && current.established == status.established
        && current.observed_generation == status.observed_generation
        && current.conditions == status.conditions;
    if !unchanged {
        write::peer_status(&ctx, &peer.name_any(), &status).await?;
    }
    Ok(Action::await_change())
}

pub fn error_policy(peer: Arc<BGPPeer>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(peer = %peer.name_any(), kind = error.metric_label(), "cannot update the peer's status: {error}");
    Action::requeue(Duration::from_secs(1))
}

/// The controller's part of the status (`sessions` is the speakers').
fn status_of(peer: &BGPPeer, ctx: &Context) -> BGPPeerStatus {
    let condition = |ready, reason: &str, message| cond("Ready", ready, reason, message);
    let previous = peer.status.clone().unwrap_or_default();
    let (selected, established, condition) = match crds::read::bgp_peer(peer) {
        Err(e) => (0, 0, condition(false, "Invalid", e)),
        Ok(model) => {
            let selected: BTreeSet<String> = ctx
                .nodes
                .state()
                .iter()
                .filter(|node| model.nodes.selects_node(node.labels()))
                .map(|node| node.name_any())
                .collect();
            let sessions: BTreeMap<String, ReportedSession> = previous
                .sessions
                .iter()
                .map(|s| {
                    (
                        s.node.clone(),
                        ReportedSession {
                            state: s.state.clone(),
                            message: s.message.clone(),
                        },
                    )
                })
                .collect();
            let r = peer_readiness(&selected, &sessions);
            (
                r.selected,
                r.established,
                condition(r.ready, r.reason, r.message),
            )
        }
    };
    let mut condition = condition;
    condition.observed_generation = peer.metadata.generation;
    condition.last_transition_time = match previous.conditions.iter().find(|c| c.type_ == "Ready") {
        Some(before) if before.status == condition.status => before.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let count = |n: usize| Some(i32::try_from(n).unwrap_or(i32::MAX));
    BGPPeerStatus {
        established: count(established),
        selected: count(selected),
        sessions: Vec::new(),
        conditions: vec![condition],
        observed_generation: peer.metadata.generation,
    }
}
