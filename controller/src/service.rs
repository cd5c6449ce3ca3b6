//! What the controller reads from a Service: whether it is ours, what it asks for (addresses,
//! pool, sharing, families) and what it holds now. Parsed once here, at the edge, into plain
//! values; the allocator never sees a Kubernetes type.

use std::collections::BTreeMap;
use std::net::IpAddr;

use allocator::{FamilyPolicy, Labels, Protocol, ServiceKey, ServiceRequest};
use crds::Family;
use k8s_openapi::api::core::v1::Service;

/// The MetalLB annotation prefixes, read as equivalents of ours.
const METALLB_PREFIXES: [&str; 2] = ["metallb.io/", "metallb.universe.tf/"];

pub const ANNOTATION_IPS: &str = "ferrolb.io/load-balancer-ips";
pub const ANNOTATION_POOL: &str = "ferrolb.io/address-pool";
pub const ANNOTATION_SHARING: &str = "ferrolb.io/allow-shared-ip";
pub const ANNOTATION_ALLOCATED_FROM: &str = "ferrolb.io/ip-allocated-from-pool";

pub use crds::LOAD_BALANCER_CLASS;

/// A request annotation, under its ferrolb name and its MetalLB names.
struct Equivalent {
    ours: &'static str,
    /// The MetalLB suffix (after the prefix).
    metallb: &'static str,
}

const IPS: Equivalent = Equivalent {
    ours: ANNOTATION_IPS,
    metallb: "loadBalancerIPs",
};
const POOL: Equivalent = Equivalent {
    ours: ANNOTATION_POOL,
    metallb: "address-pool",
};
const SHARING: Equivalent = Equivalent {
    ours: ANNOTATION_SHARING,
    metallb: "allow-shared-ip",
};

/// A MetalLB annotation that was read in place of ours: worth a one-time Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignAnnotation {
    pub found: String,
    pub ours: &'static str,
}

/// Why a Service's request cannot be understood. Each becomes an `AllocationFailed` Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "both spec.loadBalancerIP and the {annotation} annotation are set; use only the annotation"
    )]
    BothRequestForms { annotation: String },
    #[error("{annotation}: {value:?} is not a comma-separated list of IP addresses")]
    BadAddressList { annotation: String, value: String },
    #[error("spec.loadBalancerIP {value:?} is not an IP address")]
    BadLoadBalancerIp { value: String },
}

/// Everything the controller needs of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// `type: LoadBalancer` and a class that is ours.
    pub wants_address: bool,
    pub labels: BTreeMap<String, String>,
    pub families: FamilyPolicy,
    pub requested: Result<Vec<IpAddr>, RequestError>,
    pub pool: Option<String>,
    pub sharing_key: Option<String>,
    /// For `externalTrafficPolicy: Local`, the selector the sharing rule compares; `None` for
    /// `Cluster`.
    pub backend_key: Option<String>,
    pub ports: Vec<(Protocol, u16)>,
    /// The addresses in `status.loadBalancer.ingress`.
    pub ingress: Vec<IpAddr>,
    /// RFC 3339 creation time; older Services keep a disputed address.
    pub created: String,
    pub foreign_annotations: Vec<ForeignAnnotation>,
}

impl ServiceView {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.namespace, &self.name)
    }

    /// The allocator's request, given the labels of the Service's namespace; the request error
    /// when the Service's annotations cannot be read.
    pub fn request(&self, namespace_labels: Labels) -> Result<ServiceRequest, RequestError> {
        Ok(ServiceRequest {
            key: self.key(),
            namespace_labels,
            labels: self.labels.clone(),
            families: self.families,
            requested: self.requested.clone()?,
            pool: self.pool.clone(),
            sharing_key: self.sharing_key.clone(),
            backend_key: self.backend_key.clone(),
            ports: self.ports.clone(),
        })
    }

    /// Reads a Service. `handle_unclassed`: whether Services without a class are ours.
    pub fn read(svc: &Service, handle_unclassed: bool) -> ServiceView {
        let meta = &svc.metadata;
        let spec = svc.spec.clone().unwrap_or_default();
        let annotations = meta.annotations.clone().unwrap_or_default();
        let mut foreign = vec![];
        let mut lookup = |eq: &Equivalent| lookup(&annotations, eq, &mut foreign);

        let ours_by_class = match spec.load_balancer_class.as_deref() {
            None => handle_unclassed,
            Some(class) => class == LOAD_BALANCER_CLASS,
        };
        let wants_address = spec.type_.as_deref() == Some("LoadBalancer") && ours_by_class;

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
        let backend_key = (spec.external_traffic_policy.as_deref() == Some("Local")).then(|| {
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
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ing| {
                ing.iter()
                    .filter_map(|i| i.ip.as_deref()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        ServiceView {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            wants_address,
            labels: meta.labels.clone().unwrap_or_default(),
            families,
            requested,
            pool,
            sharing_key,
            backend_key,
            ports,
            ingress,
            created: meta
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            foreign_annotations: foreign,
        }
    }
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
        let read =
            |spec, unclassed| ServiceView::read(&svc(spec, json!({})), unclassed).wants_address;
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
        let read = |spec, ann| ServiceView::read(&svc(spec, ann), true);
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
        let v = ServiceView::read(
            &svc(
                lb(json!({})),
                json!({
                    "metallb.io/loadBalancerIPs": "198.51.100.9",
                    "metallb.universe.tf/address-pool": "lan",
                    "metallb.io/allow-shared-ip": "dns",
                }),
            ),
            true,
        );
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
        let v = ServiceView::read(
            &svc(
                lb(json!({})),
                json!({ANNOTATION_POOL: "ours", "metallb.io/address-pool": "theirs"}),
            ),
            true,
        );
        assert_eq!(v.pool.as_deref(), Some("ours"));
        assert!(v.foreign_annotations.is_empty());
    }

    #[test]
    fn families_ports_backend_and_ingress() {
        let v = ServiceView::read(
            &svc(
                lb(
                    json!({"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack",
                          "externalTrafficPolicy": "Local", "selector": {"b": "2", "a": "1"}}),
                ),
                json!({}),
            ),
            true,
        );
        assert_eq!(v.families, FamilyPolicy::PreferDualStack(Family::V6));
        assert_eq!(v.backend_key.as_deref(), Some("a=1,b=2"));
        assert_eq!(v.ports, vec![(Protocol::Tcp, 80), (Protocol::Udp, 53)]);
        let v = ServiceView::read(&svc(lb(json!({})), json!({})), true);
        assert_eq!(v.families, FamilyPolicy::SingleStack(Family::V4));
        assert_eq!(v.backend_key, None);

        let mut with_status = svc(lb(json!({})), json!({}));
        with_status.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.200"}, {"hostname": "x"}]}}),
        )
        .unwrap();
        assert_eq!(
            ServiceView::read(&with_status, true).ingress,
            vec!["198.51.100.200".parse::<IpAddr>().unwrap()]
        );
    }
}
