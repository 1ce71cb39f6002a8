//! Who wrote which data keys of a Secret: all the reconcilers need of its
//! `managedFields`, to tell whether anyone else edited data the operator
//! wrote without ever reading the data.
//!
//! The cache of managed Secrets keeps it in a compact form: one entry per
//! manager that wrote data (and the operator's own, always), each holding
//! only the manager's name and its data keys as one comma-separated string
//! in place of the field set. A field set is a JSON object per level, and
//! each object costs a map node of over 500 bytes: for a token Secret that
//! was more than a kibibyte per Secret, most of what caching one costs.
//! Secret data keys cannot contain commas (`[-._a-zA-Z0-9]+`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use serde_json::Value;

use super::{labels::MANAGER, watch::drop_last_applied};

const DATA_FIELDS: [&str; 2] = ["f:data", "f:stringData"];

/// Reduces `managedFields` to the compact form, and drops `kubectl apply`'s
/// copy of the object.
pub fn keep_data_ownership(meta: &mut ObjectMeta) {
    drop_last_applied(meta);
    let Some(entries) = meta.managed_fields.take() else {
        return;
    };
    let compact: Vec<ManagedFieldsEntry> = entries
        .into_iter()
        .filter_map(|entry| {
            let keys = data_keys(&entry).join(",");
            let ours = entry.manager.as_deref() == Some(MANAGER);
            (ours || !keys.is_empty()).then(|| ManagedFieldsEntry {
                manager: entry.manager,
                fields_v1: Some(FieldsV1(Value::String(keys))),
                ..ManagedFieldsEntry::default()
            })
        })
        .collect();
    meta.managed_fields = Some(compact);
}

/// The data keys (`data` and `stringData`; `.` for the map itself) an entry
/// owns, read from a full field set or from the compact form.
pub fn data_keys(entry: &ManagedFieldsEntry) -> Vec<&str> {
    match entry.fields_v1.as_ref().map(|f| &f.0) {
        Some(Value::String(compact)) => compact.split(',').filter(|k| !k.is_empty()).collect(),
        Some(Value::Object(fields)) => DATA_FIELDS
            .iter()
            .filter_map(|field| fields.get(*field)?.as_object())
            .flat_map(|keys| keys.keys())
            .map(|key| key.strip_prefix("f:").unwrap_or(key))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(manager: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn only_who_wrote_which_data_key_is_kept() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(
                    MANAGER,
                    json!({
                        "f:data": {".": {}, "f:token": {}, "f:token-id": {}},
                        "f:metadata": {"f:labels": {"f:a": {}}, "f:annotations": {"f:b": {}}},
                    }),
                ),
                entry(
                    "kubectl-label",
                    json!({"f:metadata": {"f:labels": {"f:x": {}}}}),
                ),
                entry("kubectl-edit", json!({"f:stringData": {"f:token": {}}})),
            ]),
            ..ObjectMeta::default()
        };
        keep_data_ownership(&mut meta);
        let entries = meta.managed_fields.unwrap();
        let kept: Vec<(&str, Vec<&str>)> = entries
            .iter()
            .map(|e| (e.manager.as_deref().unwrap(), data_keys(e)))
            .collect();
        assert_eq!(
            kept,
            [
                (MANAGER, vec![".", "token", "token-id"]),
                ("kubectl-edit", vec!["token"]),
            ],
            "who wrote no data is left out"
        );
        assert!(
            entries
                .iter()
                .all(|e| e.operation.is_none() && e.api_version.is_none() && e.time.is_none()),
            "nothing but the manager and its keys"
        );
    }

    #[test]
    fn the_operator_is_kept_even_without_data() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![entry(
                MANAGER,
                json!({"f:metadata": {"f:labels": {}}}),
            )]),
            ..ObjectMeta::default()
        };
        keep_data_ownership(&mut meta);
        let entries = meta.managed_fields.unwrap();
        assert_eq!(entries.len(), 1);
        assert!(data_keys(&entries[0]).is_empty());
    }

    #[test]
    fn both_forms_tell_the_same_keys() {
        let full = entry(
            "someone",
            json!({"f:data": {"f:a": {}, "f:b.c": {}}, "f:stringData": {"f:d-e": {}}}),
        );
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![full.clone()]),
            ..ObjectMeta::default()
        };
        keep_data_ownership(&mut meta);
        assert_eq!(data_keys(&full), ["a", "b.c", "d-e"]);
        assert_eq!(
            data_keys(&meta.managed_fields.unwrap()[0]),
            ["a", "b.c", "d-e"]
        );
    }

    #[test]
    fn the_last_applied_copy_is_dropped() {
        let mut meta = ObjectMeta {
            annotations: Some(
                [
                    (
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        "{}".to_string(),
                    ),
                    ("kept".to_string(), "yes".to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        };
        keep_data_ownership(&mut meta);
        assert_eq!(
            meta.annotations.unwrap().keys().collect::<Vec<_>>(),
            ["kept"]
        );
    }
}
