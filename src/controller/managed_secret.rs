//! Facts about a Secret the operator writes, read from its metadata alone so
//! that no Secret data has to be fetched or cached to know it is intact.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

use super::MANAGER;

/// Whether the object is controlled by the owner with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.controller == Some(true))
}

/// The owner reference that makes `owner` the controller of what it creates.
pub fn controller_reference<K: kube::Resource<DynamicType = ()>>(
    owner: &K,
) -> Option<OwnerReference> {
    owner.controller_owner_ref(&())
}

/// Whether the Secret still holds exactly what the operator wrote: its
/// field manager (by create or by apply) owns every key in `keys` under
/// `data`, and no other manager has written any data since (a hand edit, or
/// a deletion of a key, shows up in `managedFields` without the data itself).
pub fn data_is_intact(meta: &ObjectMeta, keys: &[&str]) -> bool {
    let Some(entries) = meta.managed_fields.as_ref() else {
        return false;
    };
    let data_fields =
        |entry: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|f| match &f.0 {
                    Value::Object(fields) => Some(
                        ["f:data", "f:stringData"]
                            .iter()
                            .filter_map(|k| fields.get(*k))
                            .cloned()
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .unwrap_or_default()
        };
    let mut ours: Vec<Value> = Vec::new();
    for entry in entries {
        let data = data_fields(entry);
        if entry.manager.as_deref() == Some(MANAGER) {
            ours.extend(data);
        } else if !data.is_empty() {
            return false;
        }
    }
    keys.iter()
        .all(|k| ours.iter().any(|d| d.get(format!("f:{k}")).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn meta(entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(entries),
            ..ObjectMeta::default()
        }
    }

    const KEYS: &[&str] = &["token", "token-id"];

    fn ours() -> ManagedFieldsEntry {
        entry(
            MANAGER,
            "Apply",
            json!({"f:data": {"f:token": {}, "f:token-id": {}}, "f:metadata": {"f:labels": {}}}),
        )
    }

    #[test]
    fn intact_when_only_we_wrote_data() {
        let labelled = entry(
            "kubectl-label",
            "Update",
            json!({"f:metadata": {"f:labels": {"f:x": {}}}}),
        );
        assert!(data_is_intact(&meta(vec![ours(), labelled]), KEYS));
    }

    #[test]
    fn not_intact_after_a_hand_edit_of_data() {
        let edited = entry("kubectl-edit", "Update", json!({"f:data": {"f:token": {}}}));
        assert!(!data_is_intact(&meta(vec![ours(), edited]), KEYS));
    }

    #[test]
    fn not_intact_when_a_key_was_removed() {
        let partial = entry(MANAGER, "Apply", json!({"f:data": {"f:token": {}}}));
        assert!(!data_is_intact(&meta(vec![partial]), KEYS));
    }

    #[test]
    fn intact_when_created_and_later_applied_by_us() {
        let created = entry(MANAGER, "Update", json!({"f:data": {"f:token": {}}}));
        let applied = entry(MANAGER, "Apply", json!({"f:data": {"f:token-id": {}}}));
        assert!(data_is_intact(&meta(vec![created, applied]), KEYS));
    }

    #[test]
    fn not_intact_without_managed_fields() {
        assert!(!data_is_intact(&ObjectMeta::default(), KEYS));
    }
}
