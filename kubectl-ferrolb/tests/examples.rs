//! Golden-style tests on MetalLB's documented examples (in `tests/metallb/`): the converted
//! objects, each expected finding, and that every ferrolb object is admitted by ferrolb's CRD
//! schema (typed deserialization into the `crds` types and the schema's CEL rules).

use crds::{BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use kubectl_ferrolb::migrate::{Conversion, Severity, convert_inputs};
use serde_json::{Value, json};

const L2: &str = include_str!("metallb/l2.yaml");
const PRIORITY: &str = include_str!("metallb/priority.yaml");
const BGP: &str = include_str!("metallb/bgp.yaml");
const SERVICE: &str = include_str!("metallb/service.yaml");

fn convert(text: &str) -> Conversion {
    convert_inputs(&[("test", text)]).expect("converts")
}

/// The findings of one severity for one object, as text.
fn findings(c: &Conversion, severity: Severity, object: &str) -> Vec<String> {
    c.findings
        .iter()
        .filter(|f| f.severity == severity && f.object == object)
        .map(|f| f.message.clone())
        .collect()
}

/// Asserts that some finding of `severity` on `object` contains every fragment.
#[track_caller]
fn assert_finding(c: &Conversion, severity: Severity, object: &str, fragments: &[&str]) {
    let all = findings(c, severity, object);
    assert!(
        all.iter().any(|m| fragments.iter().all(|f| m.contains(f))),
        "no {severity:?} on {object} containing {fragments:?}; all findings: {:#?}",
        c.findings
    );
}

fn schema_of(crd: CustomResourceDefinition) -> Value {
    crds::schema_json(&crd)
}

/// Every ferrolb object of the output, read back from the YAML the command prints, deserializes
/// into its `crds` type and passes the CRD's CEL rules. Returns how many were checked.
fn assert_accepted_by_crds(c: &Conversion) -> usize {
    let yaml = c.to_yaml();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("output is YAML");
    assert_eq!(docs, c.objects, "the YAML holds exactly the objects");
    let mut checked = 0;
    for doc in &docs {
        if doc["apiVersion"] != "ferrolb.io/v1alpha1" {
            continue;
        }
        assert!(
            doc["metadata"].get("namespace").is_none(),
            "cluster-scoped: {doc}"
        );
        let kind = doc["kind"].as_str().unwrap();
        let crd = match kind {
            "IPAddressPool" => {
                serde_json::from_value::<IPAddressPool>(doc.clone()).expect(kind);
                IPAddressPool::crd()
            }
            "L2Advertisement" => {
                serde_json::from_value::<L2Advertisement>(doc.clone()).expect(kind);
                L2Advertisement::crd()
            }
            "BGPPeer" => {
                serde_json::from_value::<BGPPeer>(doc.clone()).expect(kind);
                BGPPeer::crd()
            }
            "BGPAdvertisement" => {
                serde_json::from_value::<BGPAdvertisement>(doc.clone()).expect(kind);
                BGPAdvertisement::crd()
            }
            "BFDProfile" => {
                serde_json::from_value::<BFDProfile>(doc.clone()).expect(kind);
                BFDProfile::crd()
            }
            other => panic!("unexpected ferrolb kind {other}"),
        };
        if let Err(errors) = Validator::new().validate(&schema_of(crd), doc, None) {
            let errors: Vec<String> = errors
                .into_vec()
                .into_iter()
                .map(|e| e.to_string())
                .collect();
            panic!("{kind} refused by its CEL rules: {errors:?}\n{doc}");
        }
        checked += 1;
    }
    checked
}

#[test]
fn l2_example_converts_without_differences() {
    let c = convert(L2);
    assert_eq!(c.objects.len(), 2, "{:#?}", c.objects);
    assert_eq!(
        c.get("IPAddressPool", "first-pool").unwrap(),
        &json!({
            "apiVersion": "ferrolb.io/v1alpha1",
            "kind": "IPAddressPool",
            "metadata": {"name": "first-pool"},
            "spec": {"addresses": ["192.168.1.240-192.168.1.250", "192.168.10.0/24", "fc00:f853:0ccd:e799::/124"]},
        })
    );
    assert_eq!(
        c.get("L2Advertisement", "example").unwrap()["spec"],
        json!({
            "ipAddressPools": ["first-pool"],
            "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "NodeA"}}],
            "interfaces": ["eth0"],
        })
    );
    assert!(!c.has_differences(), "{:#?}", c.findings);
    assert_finding(
        &c,
        Severity::Note,
        "input",
        &["namespace dropped (metallb-system)", "cluster-scoped"],
    );
    // Reported once, not per object.
    assert_eq!(c.findings.len(), 1, "{:#?}", c.findings);
    assert_eq!(assert_accepted_by_crds(&c), 2);
}

#[test]
fn priority_zero_is_dropped_and_other_priorities_kept() {
    let c = convert(PRIORITY);
    let zero = c.get("IPAddressPool", "zero").unwrap();
    assert_eq!(zero["spec"], json!({"addresses": ["172.20.0.100/30"]}));
    assert_finding(
        &c,
        Severity::Note,
        "IPAddressPool/zero",
        &[
            "priority 0 dropped",
            "MetalLB reads 0 as \"no priority\"",
            "ferrolb as the highest",
        ],
    );
    let pool = c.get("IPAddressPool", "ipaddresspool1").unwrap();
    assert_eq!(
        pool["spec"],
        json!({
            "addresses": ["172.20.0.200-172.20.0.210"],
            "autoAssign": false,
            "avoidBuggyIPs": true,
            "serviceAllocation": {
                "priority": 50,
                "namespaces": ["namespace-a", "namespace-b"],
                "namespaceSelectors": [{"matchLabels": {"foo": "bar"}}],
                "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["bar"]}]}],
            },
        })
    );
    assert_finding(
        &c,
        Severity::Note,
        "IPAddressPool/ipaddresspool1",
        &["priority 50 kept", "ties by pool name"],
    );
    assert_finding(
        &c,
        Severity::Note,
        "IPAddressPool/ipaddresspool1",
        &["without spaces"],
    );
    assert!(!c.has_differences(), "{:#?}", c.findings);
    assert_eq!(assert_accepted_by_crds(&c), 2);
}

#[test]
fn bgp_example_converts_with_its_differences() {
    let c = convert(BGP);
    let sample = c.get("BGPPeer", "sample").unwrap();
    assert_eq!(
        sample["spec"],
        json!({
            "myASN": 64500, "peerASN": 64501, "peerAddress": "10.0.0.1",
            "holdTime": "90s", "keepaliveTime": "2s", "bfdProfile": "testbfdprofile",
        })
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/sample",
        &["keepaliveTime \"1.5s\" rounded up to 2s", "whole seconds"],
    );

    let secret_peer = c.get("BGPPeer", "secret-peer").unwrap();
    assert_eq!(
        secret_peer["spec"]["passwordSecret"],
        json!({"name": "bgp-secret"})
    );
    assert_eq!(
        secret_peer["spec"]["nodeSelectors"],
        json!([{"matchLabels": {"rack": "frontend"}}])
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/secret-peer",
        &[
            "copy Secret metallb-system/bgp-secret to namespace ferrolb-system",
            "kubernetes.io/basic-auth",
            "\"password\"",
        ],
    );

    let clear = c.get("BGPPeer", "clear-peer").unwrap();
    assert_eq!(
        clear["spec"]["passwordSecret"],
        json!({"name": "clear-peer-bgp-password"})
    );
    assert_eq!(clear["spec"]["ebgpMultiHop"], json!(true));
    assert!(clear["spec"].get("password").is_none() && clear["spec"].get("vrf").is_none());
    let secret = c.get("Secret", "clear-peer-bgp-password").unwrap();
    assert_eq!(
        secret,
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "clear-peer-bgp-password", "namespace": "ferrolb-system"},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"password": "s3cret"},
        })
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/clear-peer",
        &[
            "spec.password (in clear)",
            "ferrolb-system/clear-peer-bgp-password",
        ],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/clear-peer",
        &["spec.vrf has no ferrolb equivalent", "red"],
    );

    let bfd = c.get("BFDProfile", "testbfdprofile").unwrap();
    assert_eq!(
        bfd["spec"],
        json!({"receiveInterval": 380, "transmitInterval": 270, "detectMultiplier": 5, "minimumTtl": 254})
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BFDProfile/testbfdprofile",
        &["echoMode dropped"],
    );
    assert_finding(
        &c,
        Severity::Note,
        "BFDProfile/testbfdprofile",
        &["echoInterval 62 dropped"],
    );
    assert_finding(
        &c,
        Severity::Note,
        "BFDProfile/testbfdprofile",
        &["minimumTtl 254 kept but has no effect"],
    );

    let ad = c.get("BGPAdvertisement", "local").unwrap();
    assert_eq!(
        ad["spec"],
        json!({
            "ipAddressPoolSelectors": [{"matchLabels": {"zone": "east"}}],
            "aggregationLength": 32,
            "localPref": 100,
            "communities": ["1234:1", "65535:65282", "large:64512:1:2"],
            "peers": ["sample"],
        })
    );
    assert_finding(
        &c,
        Severity::Note,
        "BGPAdvertisement/local",
        &["alias \"vpn-only\" replaced by its value \"1234:1\""],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BGPAdvertisement/local",
        &["\"undefined-alias\" dropped"],
    );
    assert_finding(
        &c,
        Severity::Note,
        "BGPAdvertisement/local",
        &["localPref is sent to iBGP peers only"],
    );

    // The Community object itself is not output.
    assert!(c.of_kind("Community").next().is_none());
    assert_finding(
        &c,
        Severity::Note,
        "Community/communities",
        &["no Community objects"],
    );
    // The pool keeps its label, which the advertisement selects it by.
    assert_eq!(
        c.get("IPAddressPool", "bgp-pool").unwrap()["metadata"]["labels"],
        json!({"zone": "east"})
    );

    assert!(c.has_differences());
    assert_eq!(assert_accepted_by_crds(&c), 6);
}

#[test]
fn bgp_rules_ferrolb_enforces_are_respected() {
    let c = convert(
        r#"
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: multihop-bfd, namespace: metallb-system}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 10.0.0.9, ebgpMultiHop: true, bfdProfile: fast, enableGracefulRestart: false, disableMP: true}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: ibgp, namespace: metallb-system}
spec: {myASN: 64500, peerASN: 64500, peerAddress: 10.0.0.10, ebgpMultiHop: true, holdTime: 500ms}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: dynamic, namespace: metallb-system}
spec: {myASN: 64500, dynamicASN: external, peerAddress: 10.0.0.11}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: dual, namespace: metallb-system}
spec: {addresses: [192.168.20.0/24, "2001:db8:20::/120"]}
"#,
    );
    let multihop = c.get("BGPPeer", "multihop-bfd").unwrap();
    assert_eq!(multihop["spec"]["ebgpMultiHop"], json!(true));
    assert!(multihop["spec"].get("bfdProfile").is_none());
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/multihop-bfd",
        &["bfdProfile \"fast\" dropped", "single-hop"],
    );
    assert_finding(
        &c,
        Severity::Note,
        "BGPPeer/multihop-bfd",
        &["disableMP dropped"],
    );
    // A Go zero value is not a difference.
    assert!(
        findings(&c, Severity::Difference, "BGPPeer/multihop-bfd")
            .iter()
            .all(|m| !m.contains("enableGracefulRestart"))
    );

    let ibgp = c.get("BGPPeer", "ibgp").unwrap();
    assert!(ibgp["spec"].get("ebgpMultiHop").is_none());
    assert_eq!(ibgp["spec"]["holdTime"], json!("3s"));
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/ibgp",
        &["holdTime \"500ms\" raised to 3s"],
    );
    assert_finding(
        &c,
        Severity::Note,
        "BGPPeer/ibgp",
        &["ebgpMultiHop dropped", "iBGP"],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/ibgp",
        &["holdTime \"500ms\" rounded up to 1s"],
    );

    assert!(c.get("BGPPeer", "dynamic").is_none());
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/dynamic",
        &["skipped: spec.peerASN is missing"],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "BGPPeer/dynamic",
        &["spec.dynamicASN has no ferrolb equivalent"],
    );

    assert_finding(
        &c,
        Severity::Difference,
        "input",
        &["IPv6 addresses but no BGPPeer has an IPv6 peerAddress"],
    );
    assert_eq!(assert_accepted_by_crds(&c), 3);
}

#[test]
fn services_get_ferrolb_annotations() {
    let c = convert(SERVICE);
    assert_eq!(c.objects.len(), 2, "{:#?}", c.objects);
    assert_eq!(
        c.objects[0],
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "dns-service-tcp", "namespace": "default",
                "annotations": {
                    "ferrolb.io/load-balancer-ips": "192.168.1.240",
                    "ferrolb.io/allow-shared-ip": "key-to-share-1.2.3.4",
                },
            },
        })
    );
    assert_eq!(
        c.objects[1]["metadata"]["annotations"],
        json!({
            "ferrolb.io/load-balancer-ips": "192.168.1.240",
            "ferrolb.io/allow-shared-ip": "key-to-share-1.2.3.4",
            "ferrolb.io/address-pool": "first-pool",
        })
    );
    assert_finding(
        &c,
        Severity::Note,
        "Service/default/dns-service-tcp",
        &["ip-allocated-from-pool not carried over"],
    );
    assert_finding(
        &c,
        Severity::Note,
        "Service/default/dns-service-tcp",
        &["allow-shared-ip", "never share"],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "Service/default/dns-service-udp",
        &["metallb.universe.tf/unknown-thing has no ferrolb equivalent"],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "input",
        &["skipped kind ConfigMap (v1)"],
    );
    assert!(findings(&c, Severity::Difference, "Service/default/dns-service-tcp").is_empty());
    assert_eq!(assert_accepted_by_crds(&c), 0);
}

#[test]
fn service_conflicts_are_reported() {
    let c = convert(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: s
  namespace: apps
  annotations:
    metallb.io/loadBalancerIPs: 192.168.1.5
    metallb.universe.tf/loadBalancerIPs: 192.168.1.6
spec:
  type: LoadBalancer
  loadBalancerIP: 192.168.1.5
  loadBalancerClass: metallb.io/metallb
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: apps}
spec: {type: LoadBalancer}
"#,
    );
    assert_eq!(c.objects.len(), 1);
    assert_eq!(
        c.objects[0]["metadata"]["annotations"],
        json!({"ferrolb.io/load-balancer-ips": "192.168.1.5"})
    );
    assert_finding(
        &c,
        Severity::Difference,
        "Service/apps/s",
        &["conflicts with another MetalLB annotation"],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "Service/apps/s",
        &["spec.loadBalancerIP and loadBalancerIPs are both set"],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "Service/apps/s",
        &["loadBalancerClass is \"metallb.io/metallb\""],
    );
    assert!(c.findings.iter().all(|f| f.object != "Service/apps/plain"));
}

#[test]
fn bad_addresses_and_unknown_fields_are_reported() {
    let c = convert(
        r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bad, namespace: metallb-system}
spec:
  addresses: [192.168.1.5/24]
  serviceAllocation: {priority: 0}
  somethingNew: 3
"#,
    );
    assert_finding(
        &c,
        Severity::Difference,
        "IPAddressPool/bad",
        &[
            "\"192.168.1.5/24\" is refused by ferrolb's schema",
            "host bits",
        ],
    );
    assert_finding(
        &c,
        Severity::Difference,
        "IPAddressPool/bad",
        &["spec.somethingNew has no ferrolb equivalent"],
    );
    let bad = c.get("IPAddressPool", "bad").unwrap();
    assert!(bad["spec"].get("serviceAllocation").is_none());
    // The CEL rules agree: the check above runs the validator, which refuses this pool.
    let errors = Validator::new()
        .validate(&schema_of(IPAddressPool::crd()), bad, None)
        .expect_err("CEL refuses a CIDR with host bits set");
    assert!(format!("{errors:?}").contains("host bits"), "{errors:?}");
}

#[test]
fn invalid_input_is_an_error() {
    assert!(convert_inputs(&[("bad", "a: [unclosed")]).is_err());
    assert!(convert_inputs(&[("scalar", "just a string")]).is_err());
    // Empty documents and a kind: List are fine.
    let c = convert_inputs(&[(
        "list",
        "---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: metallb.io/v1beta1\n  kind: L2Advertisement\n  metadata: {name: all}\n",
    )])
    .unwrap();
    assert_eq!(c.objects.len(), 1);
    assert_eq!(c.objects[0]["spec"], json!({}));
    assert!(c.findings.is_empty(), "{:#?}", c.findings);
}

/// MetalLB's API server stores `autoAssign: true` and `avoidBuggyIPs: false` in every pool: a
/// pool read from the cluster converts as the same pool read from its file, carrying only what
/// differs from the defaults (which ferrolb shares).
#[test]
fn pool_defaults_are_not_carried_over() {
    let pool = |spec: &str| {
        convert(&format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: p\nspec:\n  addresses: [198.51.100.0/24]\n{spec}"
        ))
        .objects[0]["spec"]
            .clone()
    };
    let bare = pool("");
    assert_eq!(bare, json!({"addresses": ["198.51.100.0/24"]}));
    assert_eq!(pool("  autoAssign: true\n  avoidBuggyIPs: false\n"), bare);
    assert_eq!(
        pool("  autoAssign: false\n  avoidBuggyIPs: true\n"),
        json!({"addresses": ["198.51.100.0/24"], "autoAssign": false, "avoidBuggyIPs": true})
    );
}
