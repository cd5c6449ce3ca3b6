//! Reads what `status`, `services` and `explain` need from the API server, once.

use std::time::Duration;

use anyhow::Context as _;
use crds::{BGPPeer, IPAddressPool};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use kubectl_ferrolb::cluster::Snapshot;
use serde::de::DeserializeOwned;

/// The speakers' label, as in deploy/base/speaker.yaml and the chart.
const SPEAKER_SELECTOR: &str = "app.kubernetes.io/name=ferrolb,app.kubernetes.io/component=speaker";
/// The controller's leader Lease (its `--lease-name`).
const LEASE: &str = "ferrolb-controller";
/// How long to wait for one speaker's metrics through the API server's proxy.
const METRICS_TIMEOUT: Duration = Duration::from_secs(3);

async fn list<K>(api: Api<K>, params: &ListParams) -> anyhow::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api.list(params).await?.items)
}

/// A kind that may not be installed (BGPPeer on an older CRD set) reads as none.
async fn list_optional<K>(api: Api<K>) -> anyhow::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

pub async fn snapshot(client: &Client, namespace: &str) -> anyhow::Result<Snapshot> {
    let all = ListParams::default();
    let pools = list(Api::<IPAddressPool>::all(client.clone()), &all)
        .await
        .context("listing IPAddressPools (are ferrolb's CRDs installed?)")?;
    let peers = list_optional(Api::<BGPPeer>::all(client.clone())).await?;
    let services = list(Api::<Service>::all(client.clone()), &all).await?;
    let events = list(
        Api::<Event>::all(client.clone()),
        &ListParams::default().fields("involvedObject.kind=Service"),
    )
    .await?;
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(LEASE)
        .await?;
    let daemonset = Api::<DaemonSet>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(SPEAKER_SELECTOR))
        .await?
        .items
        .into_iter()
        .next();
    let speaker_pods = list(
        Api::<Pod>::namespaced(client.clone(), namespace),
        &ListParams::default().labels(SPEAKER_SELECTOR),
    )
    .await?;
    let members = futures::future::join_all(
        speaker_pods
            .iter()
            .map(|pod| members(client, namespace, pod)),
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    Ok(Snapshot {
        now: Some(Timestamp::now()),
        namespace: namespace.to_string(),
        lease,
        daemonset,
        speaker_pods,
        members,
        pools,
        peers,
        services,
        events,
    })
}

/// The gossip members a speaker sees, from its metrics through the API server's pod proxy;
/// `None` when they cannot be read (no proxy permission, pod not running).
async fn members(client: &Client, namespace: &str, pod: &Pod) -> Option<(String, u64)> {
    let name = pod.metadata.name.clone()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("metrics"))?
        .container_port;
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/metrics"
    ))
    .body(Vec::new())
    .ok()?;
    let text = tokio::time::timeout(METRICS_TIMEOUT, client.request_text(request))
        .await
        .ok()?
        .ok()?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("ferrolb_speaker_members "))?;
    Some((name, value.trim().parse::<f64>().ok()? as u64))
}

/// MetalLB's kinds, at the version each is stored at (BGPPeer: v1beta2).
const METALLB_KINDS: [(&str, &str, &str); 6] = [
    ("v1beta1", "IPAddressPool", "ipaddresspools"),
    ("v1beta1", "L2Advertisement", "l2advertisements"),
    ("v1beta2", "BGPPeer", "bgppeers"),
    ("v1beta1", "BGPAdvertisement", "bgpadvertisements"),
    ("v1beta1", "BFDProfile", "bfdprofiles"),
    ("v1beta1", "Community", "communities"),
];

/// MetalLB's objects of every kind installed, and the Services with a MetalLB annotation, as
/// `(source, JSON)` pairs for the conversion (JSON is YAML). A kind not installed is skipped.
pub async fn metallb_objects(client: &Client) -> anyhow::Result<Vec<(String, String)>> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let mut texts = vec![];
    for (version, kind, plural) in METALLB_KINDS {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("metallb.io", version, kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let objects = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e).with_context(|| format!("listing MetalLB's {kind}s")),
        };
        for mut object in objects {
            object.types = Some(kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: kind.to_string(),
            });
            object.metadata.managed_fields = None;
            texts.push((
                format!(
                    "cluster:{kind}/{}",
                    object.metadata.name.clone().unwrap_or_default()
                ),
                serde_json::to_string(&object)?,
            ));
        }
    }
    let services = list(Api::<Service>::all(client.clone()), &ListParams::default()).await?;
    for mut svc in services {
        let annotated = svc.metadata.annotations.iter().flatten().any(|(key, _)| {
            model::service::METALLB_PREFIXES
                .iter()
                .any(|prefix| key.starts_with(prefix))
        });
        if !annotated {
            continue;
        }
        svc.metadata.managed_fields = None;
        texts.push((
            format!(
                "cluster:Service/{}/{}",
                svc.metadata.namespace.clone().unwrap_or_default(),
                svc.metadata.name.clone().unwrap_or_default()
            ),
            serde_json::to_string(&svc)?,
        ));
    }
    Ok(texts)
}
