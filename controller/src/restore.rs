//! Start-up: the allocator learns every address the Services already show before the first
//! new assignment, so a restart never moves or duplicates an address.

use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::run::{Context, Error};
use crate::services::namespace_labels;

/// Loads pools and every Service's current addresses, oldest Service first. A Service whose
/// address an older one holds is left to its reconcile, which gives it a new address and an
/// Event.
pub async fn restore(ctx: &Context, services: &Api<Service>) -> Result<(), Error> {
    let started = Instant::now();
    let mut state = ctx.state().await;
    let mut all = services.list(&ListParams::default()).await?.items;
    all.sort_by(|a, b| {
        let age = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        age(a)
            .cmp(&age(b))
            .then_with(|| (a.namespace(), a.name_any()).cmp(&(b.namespace(), b.name_any())))
    });
    let (mut restored, mut disputed) = (0, 0);
    for svc in &all {
        let view = crds::read::service(svc);
        if !view.is_ours(ctx.classes) || view.ingress.is_empty() {
            continue;
        }
        let request = match view.request(namespace_labels(ctx, &view.key.namespace)) {
            Ok(r) => r,
            // Keep what it holds under the plainest terms; its reconcile reports the problem.
            Err(_) => allocator::ServiceRequest::new(view.key.clone(), view.families),
        };
        match state.restore(&request, &view.ingress) {
            Ok(_) => restored += 1,
            Err(e) => {
                disputed += 1;
                tracing::warn!(service = %view.key, "at start-up: {e}");
            }
        }
    }
    tracing::info!(restored, disputed, services = all.len(), elapsed = ?started.elapsed(), "allocations restored from Service status");
    Ok(())
}
