//! Whether another manager's server-side apply could take the operator's
//! finalizer off an object.
//!
//! A finalizer added by admission (the chart's MutatingAdmissionPolicy
//! gives every new AccessToken the revocation finalizer) is held by no field
//! manager. Server-side apply keeps it through any apply that never names
//! finalizers, but a manager that applied finalizers of its own and then
//! applies none drops the whole list, the unheld one with it (Kubernetes
//! 1.36). Held by the operator's own manager, it stays. So the operator
//! takes hold of its finalizer, with one apply, on exactly the objects where
//! another applier holds finalizers and the operator does not hold its own;
//! every other object costs no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

/// True when `finalizer` is on the object, some manager other than
/// `manager` holds finalizers there by server-side apply, and `manager`
/// does not hold `finalizer`.
pub fn exposed(meta: &ObjectMeta, finalizer: &str, manager: &str) -> bool {
    let present = meta.finalizers.iter().flatten().any(|f| f == finalizer);
    let entries = || meta.managed_fields.iter().flatten();
    present
        && entries().any(|entry| {
            entry.manager.as_deref() != Some(manager)
                && entry.operation.as_deref() == Some("Apply")
                && holds(entry, None)
        })
        && !entries()
            .any(|entry| entry.manager.as_deref() == Some(manager) && holds(entry, Some(finalizer)))
}

/// Whether `entry` holds `finalizer`, or any finalizer when `None`.
fn holds(entry: &ManagedFieldsEntry, finalizer: Option<&str>) -> bool {
    let Some(fields) = entry.fields_v1.as_ref() else {
        return false;
    };
    let Some(items) = fields.0["f:metadata"]["f:finalizers"].as_object() else {
        return false;
    };
    match finalizer {
        Some(name) => items.contains_key(&format!("v:{}", serde_json::Value::from(name))),
        None => items.keys().any(|key| key.starts_with("v:")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    const OURS: &str = "tokensmith.dev/revoke";

    fn entry(manager: &str, operation: &str, finalizers: &[&str]) -> ManagedFieldsEntry {
        let items: serde_json::Map<String, serde_json::Value> = finalizers
            .iter()
            .map(|f| (format!("v:{}", json!(f)), json!({})))
            .collect();
        let fields = if finalizers.is_empty() {
            json!({ "f:spec": { "f:lifetime": {} } })
        } else {
            json!({ "f:metadata": { "f:finalizers": items } })
        };
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    struct Case {
        what: &'static str,
        finalizers: &'static [&'static str],
        managed_fields: Option<Vec<ManagedFieldsEntry>>,
        exposed: bool,
    }

    #[test]
    fn only_an_unheld_finalizer_beside_another_applier_s_is_exposed() {
        let other = "example.com/other";
        let cases = [
            Case {
                what: "no bookkeeping (stripped)",
                finalizers: &[OURS],
                managed_fields: None,
                exposed: false,
            },
            Case {
                what: "added by admission, the creator applied no finalizers",
                finalizers: &[OURS],
                managed_fields: Some(vec![entry("kubectl", "Apply", &[])]),
                exposed: false,
            },
            Case {
                what: "added by admission beside the applier's own finalizer",
                finalizers: &[OURS, "example.com/other"],
                managed_fields: Some(vec![entry("kubectl", "Apply", &[other])]),
                exposed: true,
            },
            Case {
                what: "an applier holds ours, the operator does not",
                finalizers: &[OURS],
                managed_fields: Some(vec![entry("argocd", "Apply", &[OURS])]),
                exposed: true,
            },
            Case {
                what: "held by the operator as well",
                finalizers: &[OURS, "example.com/other"],
                managed_fields: Some(vec![
                    entry("kubectl", "Apply", &[other]),
                    entry("tokensmith", "Apply", &[OURS]),
                ]),
                exposed: false,
            },
            Case {
                what: "the other finalizer written by update, not apply",
                finalizers: &[OURS, "example.com/other"],
                managed_fields: Some(vec![entry("kubectl-edit", "Update", &[other])]),
                exposed: false,
            },
            Case {
                what: "ours is not there (the operator adds it anyway)",
                finalizers: &["example.com/other"],
                managed_fields: Some(vec![entry("kubectl", "Apply", &[other])]),
                exposed: false,
            },
            Case {
                what: "the operator holds some other finalizer only",
                finalizers: &[OURS, "example.com/other"],
                managed_fields: Some(vec![
                    entry("kubectl", "Apply", &[other]),
                    entry("tokensmith", "Apply", &["tokensmith.dev/keys"]),
                ]),
                exposed: true,
            },
        ];
        for case in cases {
            let meta = ObjectMeta {
                finalizers: Some(case.finalizers.iter().map(|f| f.to_string()).collect()),
                managed_fields: case.managed_fields,
                ..Default::default()
            };
            assert_eq!(
                exposed(&meta, OURS, "tokensmith"),
                case.exposed,
                "{}",
                case.what
            );
        }
    }
}
