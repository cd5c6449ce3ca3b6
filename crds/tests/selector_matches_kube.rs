//! The model's label-selector matcher and kube's `Selector` give the same answer on the same
//! generated selectors and labels, so the Kubernetes-free copy can never drift from the
//! library's semantics. Unknown operators are refused by both.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::{Selector, SelectorExt};
use proptest::prelude::*;

/// Few keys and values, so that generated selectors and labels meet often.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["app", "tier", "zone", "example.com/rack"]).prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["web", "db", "a", "b", ""]).prop_map(String::from)
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), value(), 0..4)
}

fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    (
        key(),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::collection::vec(value(), 0..3),
    )
        .prop_map(|(key, operator, values)| {
            // Kubernetes requires values for In/NotIn and none for Exists/DoesNotExist.
            let values = match operator {
                "In" | "NotIn" if values.is_empty() => vec!["web".to_string()],
                "In" | "NotIn" => values,
                _ => vec![],
            };
            LabelSelectorRequirement {
                key,
                operator: operator.to_string(),
                values: Some(values),
            }
        })
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    (
        prop::option::of(labels()),
        prop::option::of(prop::collection::vec(requirement(), 0..3)),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn ours_matches_exactly_when_kubes_does(s in selector(), on in labels()) {
        let ours = crds::read::selector(&s).expect("generated operators are known");
        let theirs = Selector::try_from(s.clone()).expect("kube reads generated selectors");
        prop_assert_eq!(ours.matches(&on), theirs.matches(&on), "selector {:?} on {:?}", s, on);
    }
}

#[test]
fn both_refuse_an_unknown_operator() {
    let s = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "Near".into(),
            values: Some(vec!["web".into()]),
        }]),
        ..Default::default()
    };
    assert!(crds::read::selector(&s).is_err());
    assert!(Selector::try_from(s).is_err());
}
