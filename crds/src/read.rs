//! The one place API objects become the model: Services, pools, advertisements (L2 and BGP),
//! BGP peers, BFD profiles and label selectors, each read once here and handed to the controller and the speaker as `model`
//! values.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::bgp::{self, BfdProfile, BgpAdvertisement, BgpPeer};
use model::service::{
    ANNOTATION_ALLOCATED_FROM, ANNOTATION_IPS, ANNOTATION_POOL, ANNOTATION_SHARING,
    ANNOUNCED_CONDITION, CONFLICT_REASON, METALLB_IPS, METALLB_POOL, METALLB_PREFIXES,
    METALLB_SHARING,
};
use model::{
    Advertisement, Family, FamilyPolicy, ForeignAnnotation, LabelSelector, Operator, Pool,
    Protocol, RequestError, Requirement, SelectorError, ServiceAllocation, ServiceKey,
    TrafficPolicy,
};

use crate::schema::{BgpDuration, IpAddress, PoolName};
use crate::{BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};

/// A request annotation, under its ferrolb name and its MetalLB names.
struct Equivalent {
    ours: &'static str,
    /// The MetalLB suffix (after the prefix).
    metallb: &'static str,
}

const IPS: Equivalent = Equivalent {
    ours: ANNOTATION_IPS,
    metallb: METALLB_IPS,
};
const POOL: Equivalent = Equivalent {
    ours: ANNOTATION_POOL,
    metallb: METALLB_POOL,
};
const SHARING: Equivalent = Equivalent {
    ours: ANNOTATION_SHARING,
    metallb: METALLB_SHARING,
};

/// A Service's identity: namespace, name and UID.
pub fn service_key(svc: &Service) -> ServiceKey {
    let meta = &svc.metadata;
    ServiceKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
        meta.uid.clone().unwrap_or_default(),
    )
}

/// A Service in the model's terms.
pub fn service(svc: &Service) -> model::Service {
    let meta = &svc.metadata;
    let spec = svc.spec.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let mut foreign = vec![];
    let mut lookup = |eq: &Equivalent| lookup(&annotations, eq, &mut foreign);

    let first_family = spec
        .ip_families
        .as_ref()
        .and_then(|f| f.first())
        .map(|f| if f == "IPv6" { Family::V6 } else { Family::V4 })
        .or_else(|| {
            spec.cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .map(Family::of)
        })
        .unwrap_or(Family::V4);
    let families = match spec.ip_family_policy.as_deref() {
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack(first_family),
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack(first_family),
        _ => FamilyPolicy::SingleStack(first_family),
    };

    let requested = requested_addresses(lookup(&IPS), spec.load_balancer_ip.as_deref());
    let pool = lookup(&POOL)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let sharing_key = lookup(&SHARING)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    let backend_key = (traffic_policy == TrafficPolicy::Local).then(|| {
        // The selector, in a canonical order, stands for "the same pods".
        spec.selector
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let ports = spec
        .ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            };
            (protocol, u16::try_from(p.port).unwrap_or(0))
        })
        .collect();
    let status = svc.status.as_ref();
    let ingress = status
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let conflict_reported = status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
        c.iter()
            .any(|c| c.type_ == ANNOUNCED_CONDITION && c.reason == CONFLICT_REASON)
    });
    model::Service {
        key: service_key(svc),
        load_balancer: spec.type_.as_deref() == Some("LoadBalancer"),
        class: spec.load_balancer_class.clone(),
        labels: meta.labels.clone().unwrap_or_default(),
        families,
        requested,
        pool,
        allocated_from: annotations
            .get(ANNOTATION_ALLOCATED_FROM)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty()),
        sharing_key,
        traffic_policy,
        backend_key,
        ports,
        ingress,
        created: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        foreign_annotations: foreign,
        conflict_reported,
    }
}

/// Keeps of a Service only what [`service`] and [`service_key`] read, and what an Event's
/// reference names (its resource version), for a cache that holds every Service of the
/// cluster: not the other writers' conditions (a speaker's `Announced` message is a hundred
/// bytes a Service), the ports' names and node ports, the cluster addresses, or
/// `kubectl apply`'s copy of the whole object in an annotation. The slim Service reads the
/// same as the whole one (tested).
pub fn slim_service(svc: &mut Service) {
    let meta = std::mem::take(&mut svc.metadata);
    let read_annotation = |key: &str| {
        key.starts_with("ferrolb.io/") || METALLB_PREFIXES.iter().any(|p| key.starts_with(p))
    };
    svc.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        labels: meta.labels,
        annotations: meta.annotations.map(|mut a| {
            a.retain(|key, _| read_annotation(key));
            a
        }),
        ..ObjectMeta::default()
    };
    svc.spec = svc.spec.take().map(|spec| ServiceSpec {
        type_: spec.type_,
        load_balancer_class: spec.load_balancer_class,
        load_balancer_ip: spec.load_balancer_ip,
        ip_families: spec.ip_families,
        ip_family_policy: spec.ip_family_policy,
        // The family of a Service without ipFamilies (an API server before dual-stack).
        cluster_ip: spec.cluster_ip,
        external_traffic_policy: spec.external_traffic_policy,
        selector: spec.selector,
        ports: spec.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| ServicePort {
                    port: p.port,
                    protocol: p.protocol,
                    ..ServicePort::default()
                })
                .collect()
        }),
        ..ServiceSpec::default()
    });
    svc.status = svc.status.take().map(|status| ServiceStatus {
        load_balancer: status.load_balancer.map(|lb| LoadBalancerStatus {
            ingress: lb.ingress.map(|ingress| {
                ingress
                    .into_iter()
                    .map(|i| LoadBalancerIngress {
                        ip: i.ip,
                        ..LoadBalancerIngress::default()
                    })
                    .collect()
            }),
        }),
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == ANNOUNCED_CONDITION && c.reason == CONFLICT_REASON)
                .map(|c| meta::Condition {
                    message: String::new(),
                    ..c
                })
                .collect()
        }),
    });
}

/// A pool in the model's terms: each address entry parsed on its own, unreadable selectors
/// listed (and matching nothing).
pub fn pool(pool: &IPAddressPool) -> Pool {
    let spec = &pool.spec;
    let name = pool.metadata.name.clone().unwrap_or_default();
    let mut invalid_selectors = Vec::new();
    let allocation = spec.service_allocation.as_ref().map(|a| ServiceAllocation {
        priority: a.priority,
        namespaces: a.namespaces.iter().map(|n| n.0.clone()).collect(),
        namespace_selectors: selectors(&a.namespace_selectors, &mut invalid_selectors),
        service_selectors: selectors(&a.service_selectors, &mut invalid_selectors),
    });
    let mut read = Pool::parse(&name, spec.addresses.iter().map(|a| a.0.as_str()));
    read.labels = pool.metadata.labels.clone().unwrap_or_default();
    read.auto_assign = spec.auto_assign;
    read.avoid_buggy_ips = spec.avoid_buggy_ips;
    read.allocation = allocation;
    read.invalid_selectors = invalid_selectors;
    read.deleting = pool.metadata.deletion_timestamp.is_some();
    read.from_metallb = [&pool.metadata.labels, &pool.metadata.annotations]
        .into_iter()
        .flatten()
        .flat_map(|map| map.keys())
        .find(|key| key.starts_with(model::pool::METALLB_PREFIX))
        .cloned();
    read
}

/// An advertisement in the model's terms.
pub fn advertisement(ad: &L2Advertisement) -> Advertisement {
    let spec = &ad.spec;
    Advertisement {
        interfaces: spec.interfaces.iter().map(|i| i.0.clone()).collect(),
        ..scope(
            &ad.metadata,
            &spec.ip_address_pools,
            &spec.ip_address_pool_selectors,
            &spec.node_selectors,
        )
    }
}

/// Which pools an advertisement (or, with none, a peer) covers and which nodes it selects:
/// one reading for L2 and BGP alike.
fn scope(
    metadata: &ObjectMeta,
    pools: &[PoolName],
    pool_selectors: &[meta::LabelSelector],
    node_selectors: &[meta::LabelSelector],
) -> Advertisement {
    let mut invalid_selectors = Vec::new();
    Advertisement {
        name: metadata.name.clone().unwrap_or_default(),
        pools: pools.iter().map(|p| p.0.clone()).collect(),
        pool_selectors: selectors(pool_selectors, &mut invalid_selectors),
        node_selectors: selectors(node_selectors, &mut invalid_selectors),
        selects_some_pools: !pool_selectors.is_empty(),
        selects_some_nodes: !node_selectors.is_empty(),
        interfaces: vec![],
        invalid_selectors,
    }
}

/// A `BGPPeer` in the model's terms, defaults applied. The schema admits only readable
/// values; one that still cannot be read (an object older than a rule) is an error to report.
pub fn bgp_peer(peer: &BGPPeer) -> Result<BgpPeer, String> {
    let spec = &peer.spec;
    let address = |a: &IpAddress| {
        a.0.parse::<IpAddr>()
            .map_err(|_| format!("'{}' is not an address", a.0))
    };
    let duration = |d: &Option<BgpDuration>, default: Option<Duration>| match d {
        None => Ok(default),
        Some(d) => d
            .seconds()
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(|| format!("'{}' is not a duration in whole seconds", d.0)),
    };
    Ok(BgpPeer {
        name: peer.metadata.name.clone().unwrap_or_default(),
        local_asn: spec.my_asn.0,
        peer_asn: spec.peer_asn.0,
        address: address(&spec.peer_address)?,
        port: u16::try_from(spec.peer_port)
            .map_err(|_| format!("port {} is out of range", spec.peer_port))?,
        source: spec.source_address.as_ref().map(address).transpose()?,
        hold_time: duration(&spec.hold_time, Some(bgp::DEFAULT_HOLD_TIME))?
            .unwrap_or(bgp::DEFAULT_HOLD_TIME),
        keepalive_time: duration(&spec.keepalive_time, None)?,
        connect_time: duration(&spec.connect_time, Some(bgp::DEFAULT_CONNECT_TIME))?
            .unwrap_or(bgp::DEFAULT_CONNECT_TIME),
        ebgp_multi_hop: spec.ebgp_multi_hop,
        password_secret: spec.password_secret.as_ref().map(|s| s.name.0.clone()),
        nodes: scope(&peer.metadata, &[], &[], &spec.node_selectors),
        bfd_profile: spec.bfd_profile.as_ref().map(|p| p.0.clone()),
    })
}

/// A `BGPAdvertisement` in the model's terms, defaults applied.
pub fn bgp_advertisement(ad: &BGPAdvertisement) -> Result<BgpAdvertisement, String> {
    let spec = &ad.spec;
    let length = |value: Option<i32>, max: u8| match value {
        None => Ok(max),
        Some(v) => u8::try_from(v)
            .ok()
            .filter(|v| *v <= max)
            .ok_or_else(|| format!("aggregation length {v} is out of 0-{max}")),
    };
    Ok(BgpAdvertisement {
        scope: scope(
            &ad.metadata,
            &spec.ip_address_pools,
            &spec.ip_address_pool_selectors,
            &spec.node_selectors,
        ),
        aggregation_length: length(spec.aggregation_length, 32)?,
        aggregation_length_v6: length(spec.aggregation_length_v6, 128)?,
        local_pref: spec
            .local_pref
            .map(|p| u32::try_from(p).map_err(|_| format!("localPref {p} is out of range")))
            .transpose()?,
        communities: spec
            .communities
            .iter()
            .map(|c| bgp::Community::parse(&c.0).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
        peers: spec.peers.iter().map(|p| p.0.clone()).collect(),
    })
}

/// A `BFDProfile` in the model's terms, defaults applied (out-of-range values, which the
/// schema refuses, are clamped).
pub fn bfd_profile(profile: &BFDProfile) -> BfdProfile {
    let spec = &profile.spec;
    let name = profile.metadata.name.clone().unwrap_or_default();
    let defaults = BfdProfile::defaults(&name);
    let ms = |v: Option<i32>, default: Duration| {
        v.map_or(default, |v| {
            Duration::from_millis(u64::try_from(v.clamp(10, 60_000)).unwrap_or(300))
        })
    };
    let byte = |v: Option<i32>, default: u8, min: i32, max: i32| {
        v.map_or(default, |v| {
            u8::try_from(v.clamp(min, max)).unwrap_or(default)
        })
    };
    BfdProfile {
        receive_interval: ms(spec.receive_interval, defaults.receive_interval),
        transmit_interval: ms(spec.transmit_interval, defaults.transmit_interval),
        detect_multiplier: byte(spec.detect_multiplier, defaults.detect_multiplier, 2, 255),
        passive: spec.passive_mode,
        minimum_ttl: byte(spec.minimum_ttl, defaults.minimum_ttl, 1, 254),
        name,
    }
}

/// A Kubernetes label selector in the model's terms.
pub fn selector(s: &meta::LabelSelector) -> Result<LabelSelector, SelectorError> {
    let match_expressions = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            Ok(Requirement {
                key: e.key.clone(),
                operator: Operator::parse(&e.operator)?,
                values: e.values.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

/// The selectors of a list that can be read; the others go to `invalid`.
fn selectors(list: &[meta::LabelSelector], invalid: &mut Vec<SelectorError>) -> Vec<LabelSelector> {
    list.iter()
        .filter_map(|s| selector(s).map_err(|e| invalid.push(e)).ok())
        .collect()
}

/// The value of an annotation under its ferrolb name, else its MetalLB names (noted in
/// `foreign`). Returns (the name found, the value).
fn lookup(
    annotations: &BTreeMap<String, String>,
    eq: &Equivalent,
    foreign: &mut Vec<ForeignAnnotation>,
) -> Option<(String, String)> {
    if let Some(v) = annotations.get(eq.ours) {
        return Some((eq.ours.to_string(), v.clone()));
    }
    METALLB_PREFIXES.iter().find_map(|prefix| {
        let name = format!("{prefix}{}", eq.metallb);
        let value = annotations.get(&name)?.clone();
        foreign.push(ForeignAnnotation {
            found: name.clone(),
            ours: eq.ours,
        });
        Some((name, value))
    })
}

fn requested_addresses(
    annotation: Option<(String, String)>,
    spec_ip: Option<&str>,
) -> Result<Vec<IpAddr>, RequestError> {
    let spec_ip = spec_ip.map(str::trim).filter(|s| !s.is_empty());
    match (annotation, spec_ip) {
        (Some((annotation, _)), Some(_)) => Err(RequestError::BothRequestForms { annotation }),
        (None, Some(value)) => {
            value
                .parse()
                .map(|ip| vec![ip])
                .map_err(|_| RequestError::BadLoadBalancerIp {
                    value: value.into(),
                })
        }
        (None, None) => Ok(vec![]),
        // One address per family is the allocator's rule, checked (and worded) there.
        (Some((annotation, value)), None) => value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| RequestError::BadAddressList {
                annotation,
                value: value.clone(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value, annotations: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations,
                         "creationTimestamp": "2026-11-25T10:00:00Z"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn lb(extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({"type": "LoadBalancer", "clusterIP": "192.0.2.7",
                              "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    }

    #[test]
    fn class_and_type_decide_whether_it_is_ours() {
        let read = |spec, handle_unclassed| {
            service(&svc(spec, json!({}))).is_ours(model::ClassPolicy { handle_unclassed })
        };
        assert!(read(lb(json!({})), true));
        assert!(!read(lb(json!({})), false));
        assert!(read(
            lb(json!({"loadBalancerClass": "ferrolb.io/l2"})),
            false
        ));
        assert!(!read(
            lb(json!({"loadBalancerClass": "other.example/lb"})),
            true
        ));
        assert!(!read(json!({"type": "ClusterIP"}), true));
        assert!(!read(json!({"type": "NodePort"}), true));
    }

    #[test]
    fn requested_addresses_in_every_form() {
        let read = |spec, ann| service(&svc(spec, ann));
        let v = read(
            lb(json!({})),
            json!({ANNOTATION_IPS: "198.51.100.5, 2001:db8::5"}),
        );
        assert_eq!(
            v.requested,
            Ok(vec![
                "198.51.100.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap()
            ])
        );
        let v = read(lb(json!({"loadBalancerIP": "198.51.100.6"})), json!({}));
        assert_eq!(v.requested, Ok(vec!["198.51.100.6".parse().unwrap()]));
        let v = read(
            lb(json!({"loadBalancerIP": "198.51.100.6"})),
            json!({ANNOTATION_IPS: "198.51.100.5"}),
        );
        assert!(matches!(
            v.requested,
            Err(RequestError::BothRequestForms { .. })
        ));
        let v = read(lb(json!({})), json!({ANNOTATION_IPS: "198.51.100.x"}));
        assert!(matches!(
            v.requested,
            Err(RequestError::BadAddressList { .. })
        ));
        let v = read(lb(json!({"loadBalancerIP": "nope"})), json!({}));
        assert!(matches!(
            v.requested,
            Err(RequestError::BadLoadBalancerIp { .. })
        ));
        assert_eq!(read(lb(json!({})), json!({})).requested, Ok(vec![]));
    }

    #[test]
    fn metallb_annotations_are_read_as_equivalents_and_noted() {
        let v = service(&svc(
            lb(json!({})),
            json!({
                "metallb.io/loadBalancerIPs": "198.51.100.9",
                "metallb.universe.tf/address-pool": "lan",
                "metallb.io/allow-shared-ip": "dns",
            }),
        ));
        assert_eq!(v.requested, Ok(vec!["198.51.100.9".parse().unwrap()]));
        assert_eq!(v.pool.as_deref(), Some("lan"));
        assert_eq!(v.sharing_key.as_deref(), Some("dns"));
        let found: Vec<_> = v
            .foreign_annotations
            .iter()
            .map(|f| (f.found.as_str(), f.ours))
            .collect();
        assert_eq!(
            found,
            vec![
                ("metallb.io/loadBalancerIPs", ANNOTATION_IPS),
                ("metallb.universe.tf/address-pool", ANNOTATION_POOL),
                ("metallb.io/allow-shared-ip", ANNOTATION_SHARING),
            ]
        );
        // Ours wins over MetalLB's, and then nothing foreign is noted.
        let v = service(&svc(
            lb(json!({})),
            json!({ANNOTATION_POOL: "ours", "metallb.io/address-pool": "theirs"}),
        ));
        assert_eq!(v.pool.as_deref(), Some("ours"));
        assert!(v.foreign_annotations.is_empty());
    }

    #[test]
    fn families_ports_backend_and_ingress() {
        let v = service(&svc(
            lb(
                json!({"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack",
                          "externalTrafficPolicy": "Local", "selector": {"b": "2", "a": "1"}}),
            ),
            json!({}),
        ));
        assert_eq!(v.families, FamilyPolicy::PreferDualStack(Family::V6));
        assert_eq!(v.backend_key.as_deref(), Some("a=1,b=2"));
        assert_eq!(v.ports, vec![(Protocol::Tcp, 80), (Protocol::Udp, 53)]);
        let v = service(&svc(lb(json!({})), json!({})));
        assert_eq!(v.families, FamilyPolicy::SingleStack(Family::V4));
        assert_eq!(v.backend_key, None);

        let mut with_status = svc(lb(json!({})), json!({}));
        with_status.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.200"}, {"hostname": "x"}]}}),
        )
        .unwrap();
        assert_eq!(
            service(&with_status).ingress,
            vec!["198.51.100.200".parse::<IpAddr>().unwrap()]
        );
    }
    fn pool_object(spec: serde_json::Value) -> IPAddressPool {
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "lan", "labels": {"zone": "a"}}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn reads_a_pool_with_allocation_rules() {
        let p = pool(&pool_object(json!({
            "addresses": ["198.51.100.0/30", "2001:db8::1"],
            "avoidBuggyIPs": true,
            "serviceAllocation": {"priority": 5, "namespaces": ["shop"],
                "serviceSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}]},
        })));
        assert_eq!(p.name, "lan");
        assert_eq!(p.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(p.ranges.len(), 2);
        assert!(p.auto_assign && p.avoid_buggy_ips && !p.deleting);
        assert!(p.problems().is_empty());
        let a = p.allocation.unwrap();
        assert_eq!(
            (a.priority, a.namespaces),
            (Some(5), vec!["shop".to_string()])
        );
        assert_eq!(
            a.service_selectors[0].match_expressions[0].operator,
            Operator::In
        );
    }

    #[test]
    fn a_pool_keeps_its_good_parts_and_names_the_bad() {
        let p = pool(&pool_object(json!({
            "addresses": ["198.51.100.200-198.51.100.210", "2001:db8::20-2001:db8::10"],
            "serviceAllocation": {"serviceSelectors":
                [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]},
        })));
        assert!(p.contains("198.51.100.201".parse().unwrap()));
        let problems = p.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("2001:db8::20-2001:db8::10"),
            "{problems:?}"
        );
        assert!(problems[1].contains("\"Near\""), "{problems:?}");
        // The unreadable selector admits no Service rather than every one.
        let request = model::ServiceRequest::new(
            ServiceKey::new("shop", "web", "u"),
            FamilyPolicy::SingleStack(Family::V4),
        );
        assert!(!p.admits(&request));
        let mut deleting = pool_object(json!({"addresses": ["198.51.100.1"]}));
        deleting.metadata.deletion_timestamp =
            Some(meta::Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(pool(&deleting).deleting);
    }

    #[test]
    fn reads_an_advertisement() {
        let ad: L2Advertisement = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "rack1"},
            "spec": {"ipAddressPools": ["lan"], "interfaces": ["eth0"],
                     "nodeSelectors": [{"matchLabels": {"rack": "1"}},
                                       {"matchExpressions": [{"key": "rack", "operator": "Near"}]}]},
        }))
        .unwrap();
        let ad = advertisement(&ad);
        assert_eq!(ad.name, "rack1");
        assert!(ad.covers_pool("lan", &model::Labels::new()));
        assert!(!ad.covers_pool("other", &model::Labels::new()));
        assert!(ad.selects_node(&model::labels_of([("rack", "1")])));
        assert!(!ad.selects_node(&model::labels_of([("rack", "2")])));
        assert_eq!(ad.interfaces, vec!["eth0".to_string()]);
        assert_eq!(ad.invalid_selectors, vec![SelectorError("Near".into())]);
    }

    #[test]
    fn identity_recorded_pool_and_reported_conflict() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "1234",
                         "annotations": {ANNOTATION_ALLOCATED_FROM: "lan"}},
            "spec": {"type": "LoadBalancer"},
            "status": {"conditions": [{"type": ANNOUNCED_CONDITION, "status": "False",
                "reason": CONFLICT_REASON, "message": "", "lastTransitionTime": "2026-11-25T10:00:00Z"}]},
        }))
        .unwrap();
        let read = service(&s);
        assert_eq!(read.key, ServiceKey::new("shop", "web", "1234"));
        assert_eq!(read.allocated_from.as_deref(), Some("lan"));
        assert!(read.conflict_reported);
        s.status = None;
        assert!(!service(&s).conflict_reported);
    }

    #[test]
    fn bgp_objects_are_read_with_their_defaults() {
        let peer: BGPPeer = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"myASN": 4200000001u32, "peerASN": 64500, "peerAddress": "2001:db8::1"},
        }))
        .unwrap();
        let read = bgp_peer(&peer).unwrap();
        assert_eq!(
            (read.name.as_str(), read.local_asn, read.peer_asn, read.port),
            ("tor", 4_200_000_001, 64500, 179)
        );
        assert_eq!(read.address, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (read.hold_time, read.keepalive_time, read.connect_time),
            (Duration::from_secs(90), None, Duration::from_secs(5))
        );
        assert!(!read.ibgp() && !read.nodes.selects_some_nodes && read.bfd_profile.is_none());

        let peer: BGPPeer = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"myASN": 64500, "peerASN": 64500, "peerAddress": "198.51.100.1",
                     "sourceAddress": "198.51.100.11", "peerPort": 1179,
                     "holdTime": "1h30m", "keepaliveTime": "3m", "connectTime": "10s",
                     "passwordSecret": {"name": "tor-md5"}, "bfdProfile": "fast",
                     "nodeSelectors": [{"matchLabels": {"rack": "1"}}]},
        }))
        .unwrap();
        let read = bgp_peer(&peer).unwrap();
        assert_eq!(read.hold_time, Duration::from_secs(5400));
        assert_eq!(read.keepalive_time, Some(Duration::from_secs(180)));
        assert_eq!(read.connect_time, Duration::from_secs(10));
        assert_eq!(read.port, 1179);
        assert_eq!(read.password_secret.as_deref(), Some("tor-md5"));
        assert!(read.ibgp() && read.nodes.selects_some_nodes);
        assert!(read.nodes.selects_node(&model::labels_of([("rack", "1")])));
        assert!(!read.nodes.selects_node(&model::labels_of([("rack", "2")])));

        let ad: BGPAdvertisement = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPAdvertisement",
            "metadata": {"name": "lan"},
            "spec": {"ipAddressPools": ["lan"], "communities": ["no-export", "large:1:2:3"],
                     "localPref": 200, "aggregationLength": 24},
        }))
        .unwrap();
        let read = bgp_advertisement(&ad).unwrap();
        assert_eq!(
            read.communities,
            [
                bgp::Community::Standard(0xFFFF_FF01),
                bgp::Community::Large(1, 2, 3)
            ]
        );
        assert_eq!(
            (read.aggregation_length, read.aggregation_length_v6),
            (24, 128)
        );
        assert_eq!(read.local_pref, Some(200));
        assert!(read.scope.covers_pool("lan", &model::Labels::new()));
        assert!(!read.scope.covers_pool("wan", &model::Labels::new()));
        assert!(read.to_peer("any"));

        let profile: BFDProfile = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BFDProfile",
            "metadata": {"name": "fast"}, "spec": {"receiveInterval": 100},
        }))
        .unwrap();
        let read = bfd_profile(&profile);
        assert_eq!(read.receive_interval, Duration::from_millis(100));
        assert_eq!(read.transmit_interval, Duration::from_millis(300));
        assert_eq!((read.detect_multiplier, read.minimum_ttl), (3, 254));
    }

    #[test]
    fn unreadable_bgp_values_are_errors_not_defaults() {
        // Admitted by no schema, but an object older than a rule may hold them.
        let peer: BGPPeer = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"myASN": 64512, "peerASN": 64500, "peerAddress": "198.51.100.1", "holdTime": "90"},
        }))
        .unwrap();
        assert_eq!(
            bgp_peer(&peer).unwrap_err(),
            "'90' is not a duration in whole seconds"
        );
        let ad: BGPAdvertisement = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1alpha1", "kind": "BGPAdvertisement",
            "metadata": {"name": "lan"}, "spec": {"communities": ["65536:1"]},
        }))
        .unwrap();
        assert!(
            bgp_advertisement(&ad)
                .unwrap_err()
                .contains("'65536:1' is not a community")
        );
    }

    /// Every field a controller's or speaker's cache could keep, as a cluster writes them.
    fn busy_service(announced_reason: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-11-25T10:00:00Z",
                "labels": {"tier": "web"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\"}",
                    "ferrolb.io/address-pool": "lan",
                    "metallb.universe.tf/allow-shared-ip": "k",
                    "ferrolb.io/ip-allocated-from-pool": "lan",
                    "example.com/owner": "team-a"
                },
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "o"}],
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"]
            },
            "spec": {
                "type": "LoadBalancer", "loadBalancerClass": "ferrolb.io/l2",
                "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack",
                "clusterIP": "2001:db8::a", "clusterIPs": ["2001:db8::a", "192.0.2.10"],
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
                "healthCheckNodePort": 31000, "sessionAffinity": "None",
                "allocateLoadBalancerNodePorts": true, "selector": {"app": "web", "v": "2"},
                "loadBalancerSourceRanges": ["198.51.100.0/24"],
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"},
                    {"name": "dns", "port": 53, "targetPort": "dns", "nodePort": 30053, "protocol": "UDP", "appProtocol": "dns"}
                ]
            },
            "status": {
                "loadBalancer": {"ingress": [
                    {"ip": "2001:db8::1:5", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]},
                    {"ip": "198.51.100.5", "ipMode": "VIP"}
                ]},
                "conditions": [
                    {"type": "ferrolb.io/Announced", "status": "True", "reason": announced_reason,
                     "message": "198.51.100.5 and 2001:db8::1:5 are announced by ARP and NDP from node node-2",
                     "lastTransitionTime": "2026-11-25T10:00:01Z", "observedGeneration": 3},
                    {"type": "example.com/Other", "status": "True", "reason": "Fine", "message": "m",
                     "lastTransitionTime": "2026-11-25T10:00:01Z"}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_slim_service_reads_as_the_whole_one_and_keeps_little_else() {
        for reason in ["Announced", CONFLICT_REASON] {
            let whole = busy_service(reason);
            let mut slim = whole.clone();
            slim_service(&mut slim);
            assert_eq!(service(&slim), service(&whole), "{reason}");
            assert_eq!(service_key(&slim), service_key(&whole));
            assert_eq!(
                slim.metadata.resource_version.as_deref(),
                Some("42"),
                "an Event's reference names it"
            );
            let kept = serde_json::to_string(&slim).unwrap();
            for gone in [
                "last-applied-configuration",
                "example.com/owner",
                "ownerReferences",
                "nodePort",
                "targetPort",
                "clusterIPs",
                "ipMode",
                "example.com/Other",
                "are announced by",
            ] {
                assert!(!kept.contains(gone), "{gone} kept: {kept}");
            }
        }
        assert!(service(&busy_service(CONFLICT_REASON)).conflict_reported);
    }
}
