//! The Service reconciler: gives each LoadBalancer Service of ours its addresses, frees them
//! when it goes, and says what happened in Events. The mappers here tell the runtime which
//! Services a namespace, advertisement or pool change concerns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocator::{Labels, ServiceKey};
use common::events::EventType;
use crds::IPAddressPool;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use model::service::ANNOTATION_ALLOCATED_FROM;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::metrics::ReasonLabels;
use crate::run::{Context, Error};
use crate::write::{self, join, publish};

pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", service = %format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any()));
    reconcile_service(svc, ctx).instrument(span).await
}

pub fn error_policy(_svc: Arc<Service>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = error.metric_label(), "reconcile failed: {error}");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile_service(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let view = crds::read::service(&svc);
    let reference = svc.object_ref(&());
    let action = if view.is_ours(ctx.classes) {
        assign(&ctx, &svc, &view, &reference).await?
    } else {
        let released = {
            let mut state = ctx.state().await;
            let released = state.release(&view.key);
            if !released.is_empty() {
                ctx.metrics.service_holds(&view.key, &[]);
                ctx.requeue_pending(&state);
            }
            released
        };
        // Our annotation still there means an earlier release write failed: retry it.
        if !released.is_empty() || svc.annotations().contains_key(ANNOTATION_ALLOCATED_FROM) {
            write::addresses(&ctx, &view.key, &[], None).await?;
        }
        if !released.is_empty() {
            let text = join(&released);
            publish(
                &ctx,
                &reference,
                EventType::Normal,
                "IPReleased",
                format!("Released {text}: the Service no longer asks ferrolb for an address"),
            )
            .await;
            ctx.pools_changed();
        }
        Action::await_change()
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(action)
}

async fn assign(
    ctx: &Context,
    svc: &Service,
    view: &model::Service,
    reference: &ObjectReference,
) -> Result<Action, Error> {
    tell_about_metallb(ctx, view, reference).await;
    let request = match view.request(namespace_labels(ctx, &view.key.namespace)) {
        Ok(r) => r,
        Err(e) => {
            fail(ctx, reference, "InvalidRequest", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let (outcome, taken_from) = {
        let mut state = ctx.state().await;
        // A Service met for the first time that already shows addresses (created while no
        // controller ran, or missed by a restart) keeps them when no one else holds them: adopt
        // before allocating anything new. A refusal leaves it to allocate, which names the holder.
        if state.assignment(&request.key).is_none()
            && !view.ingress.is_empty()
            && let Err(e) = state.restore(&request, &view.ingress)
        {
            tracing::info!("cannot adopt {}: {e}", join(&view.ingress));
        }
        let outcome = state.allocate(&request);
        if let Ok(a) = &outcome {
            ctx.metrics.service_holds(&request.key, &a.addresses);
        }
        // On a dispute at start-up the older Service kept the address; name it.
        let taken_from = view
            .ingress
            .iter()
            .filter(|ip| outcome.as_ref().is_ok_and(|a| !a.ips().contains(ip)))
            .filter_map(|ip| {
                state
                    .holders(*ip)
                    .into_iter()
                    .find(|h| *h != request.key)
                    .map(|h| (*ip, h))
            })
            .collect::<Vec<_>>();
        (outcome, taken_from)
    };
    let assignment = match outcome {
        Ok(a) => a,
        Err(e) => {
            fail(ctx, reference, e.reason(), e.to_string()).await;
            // Pool changes and releases requeue pending Services; this is a safety net.
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };
    let ips = assignment.ips();
    let pool = assignment.addresses.iter().find_map(|a| a.pool.clone());
    if ips != view.ingress || svc.annotations().get(ANNOTATION_ALLOCATED_FROM) != pool.as_ref() {
        write::addresses(ctx, &view.key, &ips, pool.as_deref()).await?;
    }
    if ips != view.ingress {
        let from = pool
            .as_deref()
            .map(|p| format!(" from pool {p}"))
            .unwrap_or_default();
        publish(
            ctx,
            reference,
            EventType::Normal,
            "IPAllocated",
            format!("Assigned {}{from}", join(&ips)),
        )
        .await;
        for (ip, holder) in taken_from {
            publish(ctx, reference, EventType::Warning, "AddressTaken", format!("{ip} is held by the older Service {holder}, which may not share it; this Service got {} instead", join(&ips))).await;
        }
        ctx.pools_changed();
    }
    if let Some(pool) = &pool
        && !advertised(ctx, pool)
    {
        publish(ctx, reference, EventType::Warning, "NotAdvertised", format!("pool {pool} is covered by no L2Advertisement or BGPAdvertisement, so no node announces {}; create one that selects the pool", join(&ips))).await;
    }
    if let Some(orphan) = assignment.addresses.iter().find(|a| a.pool.is_none()) {
        publish(ctx, reference, EventType::Warning, "AddressOutsidePools", format!("{} is no longer in any pool; the Service keeps it until it is deleted or asks for another address", orphan.ip)).await;
    }
    Ok(Action::await_change())
}

async fn fail(ctx: &Context, reference: &ObjectReference, reason: &str, message: String) {
    tracing::info!(reason, "allocation failed: {message}");
    ctx.metrics
        .allocation_failures
        .get_or_create(&ReasonLabels {
            reason: reason.into(),
        })
        .inc();
    publish(
        ctx,
        reference,
        EventType::Warning,
        "AllocationFailed",
        format!("{reason}: {message}"),
    )
    .await;
}

async fn tell_about_metallb(ctx: &Context, view: &model::Service, reference: &ObjectReference) {
    if view.foreign_annotations.is_empty()
        || !ctx
            .told_about_metallb
            .lock()
            .expect("not poisoned")
            .insert(view.key.clone())
    {
        return;
    }
    let text: Vec<String> = view
        .foreign_annotations
        .iter()
        .map(|f| format!("{} (ferrolb reads it as {})", f.found, f.ours))
        .collect();
    publish(
        ctx,
        reference,
        EventType::Normal,
        "MetalLBAnnotation",
        format!(
            "Using MetalLB annotations {}; consider renaming them",
            text.join(", ")
        ),
    )
    .await;
}

/// Whether some L2Advertisement or BGPAdvertisement covers the pool.
fn advertised(ctx: &Context, pool: &str) -> bool {
    let labels = ctx
        .pools
        .get(&ObjectRef::new(pool))
        .and_then(|p| p.metadata.labels.clone())
        .unwrap_or_default();
    ctx.advertisements
        .state()
        .iter()
        .any(|ad| crds::read::advertisement(ad).covers_pool(pool, &labels))
        || ctx.bgp_advertisements.state().iter().any(|ad| {
            crds::read::bgp_advertisement(ad).is_ok_and(|ad| ad.scope.covers_pool(pool, &labels))
        })
}

pub fn namespace_labels(ctx: &Context, namespace: &str) -> Labels {
    ctx.namespaces
        .get(&ObjectRef::new(namespace))
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default()
}

/// Frees what each deleted Service held.
pub async fn release_deleted(ctx: Arc<Context>, mut deleted: mpsc::UnboundedReceiver<ServiceKey>) {
    while let Some(key) = deleted.recv().await {
        forget(&ctx, &key).await;
    }
}

async fn forget(ctx: &Context, key: &ServiceKey) {
    let mut state = ctx.state().await;
    let released = state.release(key);
    if !released.is_empty() {
        ctx.metrics.service_holds(key, &[]);
        tracing::info!(service = %key, released = %join(&released), "Service deleted; addresses released");
        ctx.requeue_pending(&state);
        ctx.pools_changed();
    }
}

/// A watch that had to start over does not report what was deleted meanwhile: now and then,
/// forget Services that are no longer there. Only once the Service store has had its first
/// complete list: an empty store before that would look like every Service gone. (A re-list
/// swaps the store whole, so it never looks empty later.)
pub async fn collect_vanished(ctx: Arc<Context>) {
    if ctx.services.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let present: HashSet<ServiceKey> = ctx
            .services
            .state()
            .iter()
            .map(|s| crds::read::service_key(s))
            .collect();
        let vanished = ctx.state().await.known_not_in(&present);
        for key in vanished {
            forget(&ctx, &key).await;
        }
    }
}

/// Services of ours, from the store, in `namespace` (all when `None`) that `keep` selects.
fn ours_where(
    ctx: &Context,
    namespace: Option<&str>,
    keep: impl Fn(&model::Service) -> bool,
) -> Vec<ObjectRef<Service>> {
    ctx.services
        .state()
        .iter()
        .filter(|svc| namespace.is_none_or(|ns| svc.metadata.namespace.as_deref() == Some(ns)))
        .filter(|svc| {
            let view = crds::read::service(svc);
            view.is_ours(ctx.classes) && keep(&view)
        })
        .map(|svc| ObjectRef::from_obj(&**svc))
        .collect()
}

/// A namespace's labels can change which pools its Services may use.
pub fn namespace_mapper(
    ctx: &Arc<Context>,
) -> impl Fn(Namespace) -> Vec<ObjectRef<Service>> + Send + Sync + 'static {
    let ctx = Arc::downgrade(ctx);
    move |ns| {
        let Some(ctx) = ctx.upgrade() else {
            return vec![];
        };
        ours_where(&ctx, Some(&ns.name_any()), |_| true)
    }
}

/// Advertisements decide whether an address will be announced: the Services holding
/// addresses say again whether theirs is.
pub fn advertisement_mapper<K>(
    ctx: &Arc<Context>,
) -> impl Fn(K) -> Vec<ObjectRef<Service>> + Send + Sync + 'static {
    let ctx = Arc::downgrade(ctx);
    move |_| {
        let Some(ctx) = ctx.upgrade() else {
            return vec![];
        };
        ours_where(&ctx, None, |svc| !svc.ingress.is_empty())
    }
}

/// What of a pool can change allocations: its spec (generation), its deletion, its labels.
type PoolReading = (
    Option<i64>,
    bool,
    Option<std::collections::BTreeMap<String, String>>,
);

/// A pool edit concerns the Services without an address, those asking for a pool by name, and
/// those holding an address of that pool (or of none recorded). The pool's own status writes
/// change nothing here and requeue nothing.
pub fn pool_mapper(
    ctx: &Arc<Context>,
) -> impl Fn(IPAddressPool) -> Vec<ObjectRef<Service>> + Send + Sync + 'static {
    let ctx = Arc::downgrade(ctx);
    let seen: std::sync::Mutex<HashMap<String, PoolReading>> = Default::default();
    move |pool| {
        let Some(ctx) = ctx.upgrade() else {
            return vec![];
        };
        let name = pool.name_any();
        let reading = (
            pool.metadata.generation,
            pool.metadata.deletion_timestamp.is_some(),
            pool.metadata.labels.clone(),
        );
        if seen
            .lock()
            .expect("not poisoned")
            .insert(name.clone(), reading.clone())
            == Some(reading)
        {
            return vec![];
        }
        ours_where(&ctx, None, |svc| {
            svc.ingress.is_empty()
                || svc.pool.is_some()
                || svc.allocated_from.as_deref().is_none_or(|p| p == name)
        })
    }
}
