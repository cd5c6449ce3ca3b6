//! The name a node is elected under.

use std::fmt;
use std::sync::Arc;

/// A Kubernetes Node name, exactly as the API server spells it.
///
/// The bytes are hashed as they are, so every speaker must build it from the same source
/// (the Node object's `metadata.name`), never from a hostname that may differ in case or domain.
///
/// Shared by its clones: every address's decision names two nodes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(Arc<str>);

impl NodeName {
    pub fn new(name: impl Into<String>) -> Self {
        Self(Arc::from(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for NodeName {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}
