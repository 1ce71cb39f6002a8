//! A managed Secret's metadata as the leader caches it: one per token, so
//! its size is most of what a token costs the operator.
//!
//! Annotations, owners and the data ownership (see [`data_ownership`]) are
//! kept compressed together instead of as the `BTreeMap`s, structs and
//! `ManagedFieldsEntry`s of an `ObjectMeta`: a map node costs over 500 bytes
//! however few entries it holds, and even as lists of strings they were
//! about 0.75 KiB a token Secret (compressed: about 0.15). Readers get them
//! back as an `ObjectMeta` with [`CachedSecret::to_meta`], or one kind at a
//! time; each read decodes them all. Labels, which scans over many Secrets
//! read, stay a plain list (token Secrets keep none: see
//! `leave_out_of_cache`).
//!
//! [`data_ownership`]: super::data_ownership

use std::{fmt, sync::LazyLock};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference},
};
use kube::core::PartialObjectMeta;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{compressed::Dictionary, data_ownership::keep_data_ownership};

type Pairs = Vec<(String, String)>;

/// The metadata of a Secret the operator manages. [`Resource::meta`] holds
/// its identity and version, not its labels, annotations or owners: those
/// are read with [`CachedSecret::label`], [`CachedSecret::annotation`],
/// [`CachedSecret::owners`] or [`CachedSecret::to_meta`].
#[derive(Clone, PartialEq)]
pub struct CachedSecret {
    metadata: ObjectMeta,
    labels: Box<[(Box<str>, Box<str>)]>,
    /// [`Fields`] as JSON, compressed with [`DICTIONARY`].
    fields: Box<[u8]>,
}

/// What is kept compressed.
#[derive(Default, Serialize, Deserialize)]
struct Fields {
    annotations: Pairs,
    /// (manager, its data keys comma-separated), in the compact form of
    /// [`super::data_ownership::keep_data_ownership`].
    data_writers: Pairs,
    owners: Vec<OwnerReference>,
}

/// What the fields of most managed Secrets have in common. Nothing
/// compressed outlives the process, so it may change at any time.
const DICTIONARY: &[u8] = br#"{"annotations":[["tokensmith.dev/template-hash","sha256:"],["tokensmith.dev/token-hash","sha256:"],["tokensmith.dev/token-id",""],["tokensmith.dev/expires-at","2026-01-01T00:00:00Z"]],"data_writers":[["tokensmith","expires-at,issuer,token,token-id,token-type"]],"owners":[{"apiVersion":"tokensmith.dev/v1alpha1","blockOwnerDeletion":true,"controller":true,"kind":"AccessToken","name":"","uid":""}]}"#;

static COMPRESSION: LazyLock<Dictionary> = LazyLock::new(|| Dictionary::new(DICTIONARY));

impl CachedSecret {
    /// Caches `meta`, its `managedFields` reduced to who wrote which data
    /// keys (and `kubectl apply`'s copy of the object dropped).
    pub fn new(mut meta: ObjectMeta) -> Self {
        keep_data_ownership(&mut meta);
        let labels = meta
            .labels
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect();
        let fields = Fields {
            annotations: meta
                .annotations
                .take()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            data_writers: meta
                .managed_fields
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|entry| {
                    let keys = match entry.fields_v1?.0 {
                        Value::String(keys) => keys,
                        _ => return None,
                    };
                    Some((entry.manager?, keys))
                })
                .collect(),
            owners: meta.owner_references.take().unwrap_or_default(),
        };
        let json = serde_json::to_vec(&fields).expect("strings encode");
        Self {
            metadata: meta,
            labels,
            fields: COMPRESSION.compress(&json),
        }
    }

    fn fields(&self) -> Fields {
        serde_json::from_slice(&COMPRESSION.decompress(&self.fields))
            .expect("fields decode as they were encoded")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }

    pub fn annotation(&self, key: &str) -> Option<String> {
        self.fields()
            .annotations
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn owners(&self) -> Vec<OwnerReference> {
        self.fields().owners
    }

    /// The metadata as it was cached: labels, annotations and the compact
    /// data ownership back in their places.
    pub fn to_meta(&self) -> ObjectMeta {
        let Fields {
            annotations,
            data_writers,
            owners,
        } = self.fields();
        let labels: Pairs = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let map = |pairs: Pairs| (!pairs.is_empty()).then(|| pairs.into_iter().collect());
        let managed_fields = data_writers
            .into_iter()
            .map(|(manager, keys)| ManagedFieldsEntry {
                manager: Some(manager),
                fields_v1: Some(FieldsV1(Value::String(keys))),
                ..ManagedFieldsEntry::default()
            })
            .collect();
        ObjectMeta {
            labels: map(labels),
            annotations: map(annotations),
            managed_fields: Some(managed_fields),
            owner_references: (!owners.is_empty()).then_some(owners),
            ..self.metadata.clone()
        }
    }
}

/// Its identity and labels: the compressed bytes say nothing to a reader.
impl fmt::Debug for CachedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedSecret")
            .field("metadata", &self.metadata)
            .field("labels", &self.labels)
            .field("fields_bytes", &self.fields.len())
            .finish()
    }
}

/// Decoded as a Secret's metadata, then cached (kube's controller asks that
/// what triggers it can be decoded).
impl<'de> Deserialize<'de> for CachedSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let secret = PartialObjectMeta::<Secret>::deserialize(deserializer)?;
        Ok(Self::new(secret.metadata))
    }
}

super::resource_as!(CachedSecret, Secret);

#[cfg(test)]
mod tests {
    use kube::Resource;
    use serde_json::json;

    use super::*;
    use crate::cluster::data_ownership::data_keys;

    fn meta() -> ObjectMeta {
        serde_json::from_value(json!({
            "name": "s", "namespace": "team", "uid": "u1", "resourceVersion": "7",
            "labels": {"app.kubernetes.io/managed-by": "tokensmith", "x": "1"},
            "annotations": {"tokensmith.dev/token-id": "t1", "note": "a,b=c"},
            "ownerReferences": [{"apiVersion": "tokensmith.dev/v1alpha1",
                "kind": "AccessToken", "name": "ci", "uid": "o1", "controller": true}],
            "managedFields": [
                {"manager": "tokensmith", "operation": "Update",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:token": {}, "f:token-id": {}}}},
                {"manager": "kubectl-edit", "operation": "Update",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:token": {}}}},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn reads_back_what_was_cached() {
        let cached = CachedSecret::new(meta());
        let mut original = meta();
        keep_data_ownership(&mut original);
        assert_eq!(cached.to_meta(), original);
        assert_eq!(cached.label("x"), Some("1"));
        assert_eq!(cached.annotation("note").as_deref(), Some("a,b=c"));
        assert_eq!(cached.annotation("absent"), None);
        let writers: Vec<(String, Vec<&str>)> = original
            .managed_fields
            .iter()
            .flatten()
            .map(|e| (e.manager.clone().unwrap(), data_keys(e)))
            .collect();
        assert_eq!(
            writers,
            [
                ("tokensmith".to_string(), vec!["token", "token-id"]),
                ("kubectl-edit".to_string(), vec!["token"])
            ]
        );
    }

    #[test]
    fn identity_stays_in_meta_and_the_rest_is_read_back() {
        let cached = CachedSecret::new(meta());
        let meta = cached.meta();
        assert_eq!(meta.uid.as_deref(), Some("u1"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(
            (
                meta.labels.as_ref(),
                meta.annotations.as_ref(),
                meta.owner_references.as_ref()
            ),
            (None, None, None)
        );
        assert_eq!(meta.managed_fields, None);
        let owners: Vec<OwnerReference> = cached.owners();
        assert_eq!(
            owners
                .iter()
                .map(|o| (o.kind.as_str(), o.uid.as_str()))
                .collect::<Vec<_>>(),
            [("AccessToken", "o1")]
        );
    }

    #[test]
    fn a_secret_without_labels_or_annotations_reads_back_as_none() {
        let cached = CachedSecret::new(ObjectMeta {
            name: Some("bare".into()),
            ..ObjectMeta::default()
        });
        let meta = cached.to_meta();
        assert_eq!(
            (meta.labels, meta.annotations, meta.owner_references),
            (None, None, None)
        );
        assert_eq!(meta.managed_fields, Some(Vec::new()));
    }
}
