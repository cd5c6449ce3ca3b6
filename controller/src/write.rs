//! Everything the controller writes to the API server, each write behind the Lease's fence:
//! Services' addresses with their pool, pools' status and finalizer, and Events.

use std::net::IpAddr;

use common::events::{EventType, Note};
use crds::{BGPPeer, BGPPeerStatus, IPAddressPool, IPAddressPoolStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use model::service::ANNOTATION_ALLOCATED_FROM;
use serde_json::json;

use crate::run::{Context, Error, MANAGER, POOL_FINALIZER};

/// Writes a Service's addresses (`status.loadBalancer.ingress`) and the pool they came from
/// (an annotation) in one server-side apply on the status subresource, which for a Service
/// keeps metadata: one request per allocation, and nobody ever sees an address without its
/// pool. No addresses and no pool remove ours.
pub async fn addresses(
    ctx: &Context,
    key: &model::ServiceKey,
    ips: &[IpAddr],
    pool: Option<&str>,
) -> Result<(), Error> {
    ctx.fence.check()?;
    let ingress: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    let annotations = match pool {
        Some(p) => json!({ANNOTATION_ALLOCATED_FROM: p}),
        None => json!({}),
    };
    let patch = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": key.name, "namespace": key.namespace, "annotations": annotations},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    Api::<Service>::namespaced(ctx.client.clone(), &key.namespace)
        .patch_status(&key.name, &apply(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

pub async fn pool_status(
    ctx: &Context,
    name: &str,
    status: &IPAddressPoolStatus,
) -> Result<(), Error> {
    ctx.fence.check()?;
    let patch = json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool", "metadata": {"name": name}, "status": status});
    Api::<IPAddressPool>::all(ctx.client.clone())
        .patch_status(name, &apply(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// A BGPPeer's counts, `Ready` and observed generation; `sessions` belong to the speakers
/// (each node applies its own entry), so they are left out of this apply.
pub async fn peer_status(ctx: &Context, name: &str, status: &BGPPeerStatus) -> Result<(), Error> {
    ctx.fence.check()?;
    let patch = json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": name}, "status": {
        "established": status.established,
        "selected": status.selected,
        "conditions": status.conditions,
        "observedGeneration": status.observed_generation,
    }});
    Api::<BGPPeer>::all(ctx.client.clone())
        .patch_status(name, &apply(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Sets or removes the pool's protection finalizer.
pub async fn pool_finalizer(ctx: &Context, name: &str, keep: bool) -> Result<(), Error> {
    ctx.fence.check()?;
    let finalizers: Vec<&str> = if keep { vec![POOL_FINALIZER] } else { vec![] };
    let patch = json!({"apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool", "metadata": {"name": name, "finalizers": finalizers}});
    Api::<IPAddressPool>::all(ctx.client.clone())
        .patch(name, &apply(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

fn apply() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// An Event about an allocation, unless the fence is closed (now, or when its turn to be
/// published comes).
pub async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    if ctx.fence.check().is_err() {
        return;
    }
    let note = Note {
        type_,
        reason: reason.into(),
        action: "Allocate".into(),
        note,
    };
    ctx.events.publish(note, reference.clone()).await;
}

pub fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
