//! A managed Secret's metadata as the leader caches it: one per token, so
//! its size is most of what a token costs the operator.
//!
//! Labels, annotations and the data ownership (see [`data_ownership`]) are
//! kept as one compressed list instead of the `BTreeMap`s and
//! `ManagedFieldsEntry`s of an `ObjectMeta`: a map node costs over 500 bytes
//! however few entries it holds, and as lists of strings they were still
//! about 0.5 KiB a token Secret (compressed: about 0.1). Readers get them
//! back as an `ObjectMeta` with [`CachedSecret::to_meta`], or one at a time.
//!
//! [`data_ownership`]: super::data_ownership

use std::{borrow::Cow, collections::BTreeMap, sync::LazyLock};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference},
};
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{compressed::Dictionary, data_ownership::keep_data_ownership};

type Pairs = Vec<(String, String)>;

/// The metadata of a Secret the operator manages. [`Resource::meta`] holds
/// its identity and version, not its labels, annotations or owners: those
/// are read with [`CachedSecret::label`], [`CachedSecret::annotation`],
/// [`CachedSecret::owners`] or [`CachedSecret::to_meta`].
#[derive(Clone, Debug, PartialEq)]
pub struct CachedSecret {
    metadata: ObjectMeta,
    /// [`Fields`] as JSON, compressed with [`DICTIONARY`].
    fields: Box<[u8]>,
}

/// What is kept of the labels, annotations and data ownership.
#[derive(Default, Serialize, Deserialize)]
struct Fields {
    labels: Pairs,
    annotations: Pairs,
    /// (manager, its data keys comma-separated), in the compact form of
    /// [`super::data_ownership::keep_data_ownership`].
    data_writers: Pairs,
    owners: Vec<OwnerReference>,
}

/// What the fields of most managed Secrets have in common.
const DICTIONARY: &[u8] = br#"{"labels":[["app.kubernetes.io/managed-by","tokensmith"],["tokensmith.dev/access-token",""],["tokensmith.dev/app-registration",""],["tokensmith.dev/refresh-chain-of",""]],"annotations":[["tokensmith.dev/template-hash","sha256:"],["tokensmith.dev/token-hash","sha256:"],["tokensmith.dev/token-id",""],["tokensmith.dev/expires-at","2026-01-01T00:00:00Z"]],"data_writers":[["tokensmith","expires-at,issuer,token,token-id,token-type"]],"owners":[{"apiVersion":"tokensmith.dev/v1alpha1","blockOwnerDeletion":true,"controller":true,"kind":"AccessToken","name":"","uid":""}]}"#;

static COMPRESSION: LazyLock<Dictionary> = LazyLock::new(|| Dictionary::new(DICTIONARY));

impl CachedSecret {
    /// Caches `meta`, its `managedFields` reduced to who wrote which data
    /// keys (and `kubectl apply`'s copy of the object dropped).
    pub fn new(mut meta: ObjectMeta) -> Self {
        keep_data_ownership(&mut meta);
        let pairs =
            |map: Option<BTreeMap<String, String>>| map.unwrap_or_default().into_iter().collect();
        let fields = Fields {
            labels: pairs(meta.labels.take()),
            annotations: pairs(meta.annotations.take()),
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
            fields: COMPRESSION.compress(&json),
        }
    }

    fn fields(&self) -> Fields {
        serde_json::from_slice(&COMPRESSION.decompress(&self.fields))
            .expect("fields decode as they were encoded")
    }

    pub fn label(&self, key: &str) -> Option<String> {
        find(self.fields().labels, key)
    }

    pub fn annotation(&self, key: &str) -> Option<String> {
        find(self.fields().annotations, key)
    }

    pub fn owners(&self) -> Vec<OwnerReference> {
        self.fields().owners
    }

    /// The metadata as it was cached: labels, annotations and the compact
    /// data ownership back in their places.
    pub fn to_meta(&self) -> ObjectMeta {
        let Fields {
            labels,
            annotations,
            data_writers,
            owners,
        } = self.fields();
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

fn find(pairs: Pairs, key: &str) -> Option<String> {
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl Resource for CachedSecret {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Secret::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Secret::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Secret::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Secret::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(cached.label("x").as_deref(), Some("1"));
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
