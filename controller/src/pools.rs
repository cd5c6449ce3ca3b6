//! The pool reconciler: each pool's status (usage per family, `Ready`, `Overlap`, `InUse`),
//! its gauges, its protection finalizer, and an Event when a problem is new.

use std::sync::Arc;
use std::time::Duration;

use common::events::EventType;
use crds::IPAddressPool;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::metrics::PoolLabels;
use crate::run::{Context, Error, POOL_FINALIZER};
use crate::write::{self, publish};

/// What a pool's Events last said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reported {
    problems: Vec<String>,
    overlaps: Vec<String>,
    metallb: Option<String>,
}

pub async fn reconcile(pool: Arc<IPAddressPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = pool.name_any();
    let (status, users, now_reported) = {
        let state = ctx.state().await;
        let Some(read) = state.pool(&name) else {
            // Not in the store any more: gone.
            return Ok(Action::await_change());
        };
        let users = state.users_within(&read.ranges);
        let reported = Reported {
            problems: read.problems(),
            overlaps: state
                .overlaps()
                .iter()
                .filter(|o| o.pools.contains(&name))
                .map(ToString::to_string)
                .collect(),
            metallb: read.metallb_differences(),
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = state.pool_status(&name, users, pool.status.as_ref(), now);
        (status, users, reported)
    };
    report(&ctx, &pool, now_reported).await;
    let Some(status) = status else {
        return Ok(Action::await_change());
    };
    for (family, usage) in [("ipv4", status.ipv4), ("ipv6", status.ipv6)] {
        let labels = PoolLabels {
            pool: name.clone(),
            family: family.into(),
        };
        let u = usage.unwrap_or_default();
        ctx.metrics
            .addresses_total
            .get_or_create(&labels)
            .set(u.capacity);
        ctx.metrics
            .addresses_in_use
            .get_or_create(&labels)
            .set(u.assigned);
    }
    if pool.status.as_ref() != Some(&status) {
        write::pool_status(&ctx, &name, &status).await?;
    }
    let deleting = pool.metadata.deletion_timestamp.is_some();
    let has = pool.finalizers().iter().any(|f| f == POOL_FINALIZER);
    let want = !deleting || users > 0;
    if has != want {
        write::pool_finalizer(&ctx, &name, want).await?;
        if deleting && !want {
            for family in ["ipv4", "ipv6"] {
                let labels = PoolLabels {
                    pool: name.clone(),
                    family: family.into(),
                };
                ctx.metrics.addresses_total.remove(&labels);
                ctx.metrics.addresses_in_use.remove(&labels);
            }
        }
    }
    Ok(Action::await_change())
}

pub fn error_policy(pool: Arc<IPAddressPool>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pool = %pool.name_any(), kind = error.metric_label(), "cannot update pool: {error}");
    Action::requeue(Duration::from_secs(1))
}

/// A Warning Event for each problem of the pool (entries or selectors left out, overlaps)
/// that its last Events did not already name.
async fn report(ctx: &Context, pool: &IPAddressPool, now: Reported) {
    let name = pool.name_any();
    let before = match ctx.reported.lock().expect("not poisoned").get(&name) {
        Some(before) if *before == now => return,
        before => before.cloned().unwrap_or_default(),
    };
    let reference = pool.object_ref(&());
    for overlap in now
        .overlaps
        .iter()
        .filter(|o| !before.overlaps.contains(*o))
    {
        tracing::warn!(pool = %name, "{overlap}");
        let note = format!("{overlap}; no address of the overlap is handed out until it is fixed");
        publish(ctx, &reference, EventType::Warning, "PoolOverlap", note).await;
    }
    if !now.problems.is_empty() && now.problems != before.problems {
        tracing::warn!(pool = %name, "{}", now.problems.join("; "));
        let note = format!(
            "{}; the pool's other entries go on working",
            now.problems.join("; ")
        );
        publish(
            ctx,
            &reference,
            EventType::Warning,
            "InvalidPoolEntry",
            note,
        )
        .await;
    }
    if let Some(note) = now
        .metallb
        .as_ref()
        .filter(|n| before.metallb.as_ref() != Some(*n))
    {
        publish(
            ctx,
            &reference,
            EventType::Normal,
            "MigratedFromMetalLB",
            note.clone(),
        )
        .await;
    }
    ctx.reported.lock().expect("not poisoned").insert(name, now);
}
