//! How many revocation entries each namespace holds, kept from the watch of
//! the revocation record: what the per-namespace quota is judged on.

use std::collections::HashMap;

use k8s_openapi::{api::core::v1::ConfigMap, jiff::Timestamp};

/// The expiry and namespace an entry's value holds.
pub fn parse_entry(value: &str) -> (Option<Timestamp>, Option<&str>) {
    let (expiry, namespace) = match value.split_once(' ') {
        Some((expiry, namespace)) => (expiry, Some(namespace)),
        None => (value, None),
    };
    (expiry.parse().ok(), namespace)
}

/// Live revocation entries per namespace, kept from the watch of the
/// record's ConfigMaps: what the per-namespace quota is judged on.
#[derive(Clone, Default)]
pub struct RevocationCounts {
    by_shard: std::sync::Arc<std::sync::RwLock<HashMap<String, HashMap<String, usize>>>>,
}

impl RevocationCounts {
    /// Follows one watch event of a record ConfigMap.
    pub fn apply(&self, event: &kube::runtime::watcher::Event<ConfigMap>) {
        use kube::runtime::watcher::Event;
        let mut shards = self
            .by_shard
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            Event::Apply(cm) | Event::InitApply(cm) => {
                let name = cm.metadata.name.clone().unwrap_or_default();
                shards.insert(name, count_by_namespace(cm));
            }
            Event::Delete(cm) => {
                shards.remove(cm.metadata.name.as_deref().unwrap_or_default());
            }
            Event::Init => shards.clear(),
            Event::InitDone => {}
        }
    }

    /// Entries recorded for `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> usize {
        self.by_shard
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .filter_map(|counts| counts.get(namespace))
            .sum()
    }
}

fn count_by_namespace(cm: &ConfigMap) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for value in cm.data.iter().flatten().map(|(_, v)| v) {
        if let (_, Some(namespace)) = parse_entry(value) {
            *counts.entry(namespace.to_string()).or_insert(0) += 1;
        }
    }
    counts
}
