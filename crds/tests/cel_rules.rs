//! The CRD's CEL rules, evaluated client-side, agree with the Rust parser on the shared table.
//! (The lab repeats this against a real API server with `kubectl apply --dry-run=server`.)

use crds::{IPAddressPool, L2Advertisement};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use model::address_cases::{CASES, Expect};
use serde_json::{Value, json};

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
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
