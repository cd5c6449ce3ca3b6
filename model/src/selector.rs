//! Label selectors with Kubernetes' matching rules.
//!
//! `crds` reads `metav1.LabelSelector` into this type once (refusing unknown operators); after
//! that a selector only answers whether a set of labels matches. The allocator, the controller
//! and the speaker all match with this one type, and a property test in `crds` checks it against
//! kube's own `Selector` on generated cases.

use std::collections::BTreeMap;

/// Why a Kubernetes label selector cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector: unknown operator {0:?} (In, NotIn, Exists or DoesNotExist)")]
pub struct SelectorError(pub String);

/// Labels of an object, sorted so that everything built from them is deterministic.
pub type Labels = BTreeMap<String, String>;

/// `matchLabels` and `matchExpressions`; an object matches when it satisfies all of them, so the
/// empty selector matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// The values for `In` and `NotIn`; ignored by `Exists` and `DoesNotExist`.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or present with a value not in `values`.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl Operator {
    /// The operator of a `matchExpressions` entry, as Kubernetes spells it.
    pub fn parse(text: &str) -> Result<Operator, SelectorError> {
        match text {
            "In" => Ok(Operator::In),
            "NotIn" => Ok(Operator::NotIn),
            "Exists" => Ok(Operator::Exists),
            "DoesNotExist" => Ok(Operator::DoesNotExist),
            other => Err(SelectorError(other.to_string())),
        }
    }
}

impl LabelSelector {
    /// Whether `labels` satisfy every `matchLabels` pair and every expression.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self
                .match_expressions
                .iter()
                .all(|requirement| requirement.matches(labels))
    }

    /// A selector of `matchLabels` only.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> LabelSelector {
        LabelSelector {
            match_labels: labels_of(pairs),
            match_expressions: Vec::new(),
        }
    }
}

impl Requirement {
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        let listed = || value.is_some_and(|v| self.values.contains(v));
        match self.operator {
            Operator::In => listed(),
            Operator::NotIn => !listed(),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// Labels from pairs.
pub fn labels_of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_semantics() {
        use Operator::*;
        let web = labels_of([("app", "web"), ("tier", "front")]);
        let none = Labels::new();
        let expr = |key, op, values: &[&str]| LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![Requirement::new(key, op, values)],
        };
        let cases: Vec<(&str, LabelSelector, &Labels, bool)> = vec![
            ("empty matches labels", LabelSelector::default(), &web, true),
            (
                "empty matches no labels",
                LabelSelector::default(),
                &none,
                true,
            ),
            (
                "matchLabels equal",
                LabelSelector::labels([("app", "web")]),
                &web,
                true,
            ),
            (
                "matchLabels other value",
                LabelSelector::labels([("app", "db")]),
                &web,
                false,
            ),
            (
                "matchLabels absent",
                LabelSelector::labels([("app", "web")]),
                &none,
                false,
            ),
            (
                "matchLabels all pairs",
                LabelSelector::labels([("app", "web"), ("tier", "back")]),
                &web,
                false,
            ),
            ("In listed", expr("app", In, &["db", "web"]), &web, true),
            ("In unlisted", expr("app", In, &["db"]), &web, false),
            ("In absent", expr("app", In, &["web"]), &none, false),
            ("In no values", expr("app", In, &[]), &web, false),
            ("NotIn listed", expr("app", NotIn, &["web"]), &web, false),
            ("NotIn unlisted", expr("app", NotIn, &["db"]), &web, true),
            ("NotIn absent", expr("app", NotIn, &["web"]), &none, true),
            ("Exists present", expr("tier", Exists, &[]), &web, true),
            ("Exists absent", expr("tier", Exists, &[]), &none, false),
            (
                "DoesNotExist present",
                expr("tier", DoesNotExist, &[]),
                &web,
                false,
            ),
            (
                "DoesNotExist absent",
                expr("tier", DoesNotExist, &[]),
                &none,
                true,
            ),
            (
                "labels and expressions both apply",
                LabelSelector {
                    match_labels: labels_of([("app", "web")]),
                    match_expressions: vec![Requirement::new("tier", NotIn, &["front"])],
                },
                &web,
                false,
            ),
        ];
        for (name, selector, labels, expected) in cases {
            assert_eq!(selector.matches(labels), expected, "{name}");
        }
    }
}
