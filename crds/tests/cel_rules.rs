//! The CRD's CEL rules, evaluated client-side, agree with the Rust parser on the shared table.
//! (The lab repeats this against a real API server with `kubectl apply --dry-run=server`.)

use crds::{BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use model::address_cases::{CASES, Expect};
use serde_json::{Value, json};

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    crds::schema_json(&crd)
}

fn pool(addresses: &[&str]) -> Value {
    json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": "IPAddressPool",
        "metadata": {"name": "p"},
        "spec": {"addresses": addresses},
    })
}

/// The messages of every rule the object breaks; empty when the schema admits it.
fn cel_errors(schema: &Value, object: &Value) -> Vec<String> {
    match Validator::new().validate(schema, object, None) {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

#[test]
fn cel_and_parser_agree_on_the_table() {
    let schema = schema_of(IPAddressPool::crd());
    let mut disagreements = vec![];
    for case in CASES {
        let errors = cel_errors(&schema, &pool(&[case.input]));
        let schema_rejects = match case.expect {
            Expect::Accept { .. } => false,
            Expect::Reject { schema } => schema,
        };
        // The empty string is refused by minLength, which the CEL evaluator does not check.
        if case.input.is_empty() {
            continue;
        }
        if errors.is_empty() == schema_rejects {
            disagreements.push(format!(
                "{:?}: schema_rejects={schema_rejects}, CEL said {errors:?}",
                case.input
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn cel_messages_are_readable() {
    let schema = schema_of(IPAddressPool::crd());
    let errors = cel_errors(&schema, &pool(&["198.51.100.5/24"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .contains("'198.51.100.5/24' has host bits set: a CIDR starts at its network address"),
        "{errors:?}"
    );

    let errors = cel_errors(&schema, &pool(&["198.51.100.20-198.51.100.10"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("is reversed"), "{errors:?}");

    let errors = cel_errors(&schema, &pool(&["0.0.0.0/0"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("'0.0.0.0/0' includes addresses that are never handed out or announced")
            && errors[0].contains("127.0.0.0/8 loopback"),
        "{errors:?}"
    );

    let errors = cel_errors(&schema, &pool(&["garbage"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("'garbage' is not an address"),
        "{errors:?}"
    );
}

#[test]
fn names_in_advertisements_are_checked() {
    let schema = schema_of(L2Advertisement::crd());
    let ad = |pools: &[&str], interfaces: &[&str]| {
        json!({
            "apiVersion": "ferrolb.io/v1alpha1",
            "kind": "L2Advertisement",
            "metadata": {"name": "a"},
            "spec": {"ipAddressPools": pools, "interfaces": interfaces},
        })
    };
    assert!(
        cel_errors(
            &schema,
            &ad(&["lan", "pool.v2"], &["eth0", "enp3s0f1", "br-lan"])
        )
        .is_empty()
    );
    for bad_pool in ["Lan", "-lan", "lan_1", "lan."] {
        assert_eq!(
            cel_errors(&schema, &ad(&[bad_pool], &[])).len(),
            1,
            "{bad_pool}"
        );
    }
    for bad_if in ["eth0:1", "a/b", "a b", ".", ".."] {
        assert_eq!(
            cel_errors(&schema, &ad(&[], &[bad_if])).len(),
            1,
            "{bad_if}"
        );
    }
}

fn object(kind: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ferrolb.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": spec,
    })
}

/// `spec` with `changes` merged into it (a null removes a field).
fn with(spec: &Value, changes: Value) -> Value {
    let mut spec = spec.clone();
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            spec.as_object_mut().unwrap().remove(key);
        } else {
            spec[key] = value.clone();
        }
    }
    spec
}

/// Each case: changes to a valid object's spec, and a piece of the one message they must give
/// (`None`: accepted).
fn check(kind: &str, crd: Value, valid: Value, cases: &[(Value, Option<&str>)]) {
    assert_eq!(
        cel_errors(&crd, &object(kind, valid.clone())),
        Vec::<String>::new()
    );
    let mut wrong = vec![];
    for (changes, message) in cases {
        let errors = cel_errors(&crd, &object(kind, with(&valid, changes.clone())));
        let ok = match message {
            None => errors.is_empty(),
            Some(m) => errors.len() == 1 && errors[0].contains(m),
        };
        if !ok {
            wrong.push(format!("{changes}: expected {message:?}, got {errors:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn bgp_peers_are_checked() {
    let valid = json!({
        "myASN": 64512, "peerASN": 4200000000u32, "peerAddress": "198.51.100.1",
        "holdTime": "90s", "keepaliveTime": "30s", "bfdProfile": "fast",
        "passwordSecret": {"name": "router-password"},
    });
    check(
        "BGPPeer",
        schema_of(BGPPeer::crd()),
        valid,
        &[
            (json!({"peerAddress": "2001:db8::1"}), None),
            (
                json!({"peerAddress": "2001:db8::1", "sourceAddress": "2001:db8::11"}),
                None,
            ),
            (json!({"sourceAddress": "198.51.100.11"}), None),
            (json!({"holdTime": "0s", "keepaliveTime": "0s"}), None),
            (json!({"holdTime": "1h30m", "keepaliveTime": "30m"}), None),
            (json!({"holdTime": null, "keepaliveTime": "5m"}), None),
            (json!({"connectTime": "5s"}), None),
            (
                json!({"myASN": 64512, "peerASN": 64513, "ebgpMultiHop": true, "bfdProfile": null}),
                None,
            ),
            (
                json!({"peerAddress": "198.51.100.300"}),
                Some("'198.51.100.300' is not a unicast address"),
            ),
            (
                json!({"peerAddress": "0.0.0.0"}),
                Some("'0.0.0.0' is not a unicast address"),
            ),
            (
                json!({"peerAddress": "127.0.0.1"}),
                Some("is not a unicast address"),
            ),
            (
                json!({"peerAddress": "fe80::1"}),
                Some("is not a unicast address"),
            ),
            (
                json!({"peerAddress": "ff02::1"}),
                Some("is not a unicast address"),
            ),
            (
                json!({"peerAddress": "router.lan"}),
                Some("is not a unicast address"),
            ),
            (
                json!({"sourceAddress": "2001:db8::11"}),
                Some("must be of one address family"),
            ),
            (
                json!({"myASN": 23456}),
                Some(
                    "23456 (AS_TRANS, RFC 6793) and 65535 (reserved, RFC 7300) are not AS numbers",
                ),
            ),
            (
                json!({"peerASN": 65535}),
                Some(
                    "23456 (AS_TRANS, RFC 6793) and 65535 (reserved, RFC 7300) are not AS numbers",
                ),
            ),
            (
                json!({"holdTime": "2s", "keepaliveTime": "1s"}),
                Some("holdTime must be 0s (no keepalives) or from 3s to 65535s"),
            ),
            (
                json!({"holdTime": "20h", "keepaliveTime": "1s"}),
                Some("holdTime must be 0s (no keepalives) or from 3s to 65535s"),
            ),
            (
                json!({"holdTime": "90"}),
                Some("'90' is not a duration in whole seconds"),
            ),
            (
                json!({"holdTime": "1.5s"}),
                Some("is not a duration in whole seconds"),
            ),
            (
                json!({"keepaliveTime": "90s"}),
                Some("keepaliveTime must be shorter than holdTime"),
            ),
            (
                json!({"holdTime": "0s"}),
                Some("with holdTime 0s (no keepalives expected) keepaliveTime must be 0s too"),
            ),
            (
                json!({"connectTime": "0s"}),
                Some("connectTime must be from 1s to 65535s"),
            ),
            (
                json!({"myASN": 64512, "peerASN": 64512, "ebgpMultiHop": true, "bfdProfile": null}),
                Some("ebgpMultiHop is for eBGP sessions only"),
            ),
            (
                json!({"ebgpMultiHop": true, "bfdProfile": "fast"}),
                Some("bfdProfile needs the router on the link"),
            ),
            (
                json!({"bfdProfile": "Fast"}),
                Some("'Fast' is not a valid BFDProfile name"),
            ),
            (
                json!({"passwordSecret": {"name": "a_b"}}),
                Some("'a_b' is not a valid Secret name"),
            ),
        ],
    );
}

#[test]
fn bgp_advertisements_are_checked() {
    let valid = json!({
        "ipAddressPools": ["lan"], "peers": ["tor-a", "tor-b"], "localPref": 100,
        "aggregationLength": 32, "aggregationLengthV6": 128,
        "communities": ["65535:65281", "large:4200000000:1:2", "no-export"],
    });
    check(
        "BGPAdvertisement",
        schema_of(BGPAdvertisement::crd()),
        valid,
        &[
            (
                json!({"communities": ["0:0", "65535:65535", "large:0:0:0", "large:4294967295:4294967295:4294967295", "blackhole", "no-peer"]}),
                None,
            ),
            (
                json!({"communities": ["65536:1"]}),
                Some("'65536:1' is not a community"),
            ),
            (
                json!({"communities": ["1:65536"]}),
                Some("'1:65536' is not a community"),
            ),
            (
                json!({"communities": ["large:4294967296:1:2"]}),
                Some("is not a community"),
            ),
            (
                json!({"communities": ["large:1:2"]}),
                Some("is not a community"),
            ),
            (
                json!({"communities": ["NO_EXPORT"]}),
                Some("is not a community"),
            ),
            (
                json!({"communities": ["1:2:3"]}),
                Some("is not a community"),
            ),
            (json!({"communities": [" 1:2"]}), Some("is not a community")),
            (
                json!({"peers": ["Tor"]}),
                Some("'Tor' is not a valid BGPPeer name"),
            ),
            (
                json!({"ipAddressPools": ["a_b"]}),
                Some("'a_b' is not a valid IPAddressPool name"),
            ),
        ],
    );
}

#[test]
fn bfd_profiles_have_no_rules_beyond_their_ranges() {
    // The ranges are OpenAPI bounds, enforced by the API server (the lab checks them); the
    // client-side evaluator runs CEL rules only, and a profile has none.
    let crd = schema_of(BFDProfile::crd());
    let profile = object(
        "BFDProfile",
        json!({"receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3, "passiveMode": false, "minimumTtl": 254}),
    );
    assert_eq!(cel_errors(&crd, &profile), Vec::<String>::new());
    assert_eq!(
        crd["properties"]["spec"]["properties"]["detectMultiplier"]["minimum"],
        json!(2.0)
    );
}
