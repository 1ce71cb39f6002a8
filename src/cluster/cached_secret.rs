//! A managed Secret's metadata as the leader caches it: one per token, so
//! its size is most of what a token costs the operator.
//!
//! Labels, annotations and the data ownership (see [`data_ownership`]) are
//! kept as flat lists of boxed strings instead of the `BTreeMap`s and
//! `ManagedFieldsEntry`s of an `ObjectMeta`: a map node costs over 500 bytes
//! however few entries it holds. Readers get them back as an `ObjectMeta`
//! with [`CachedSecret::to_meta`], or one at a time.
//!
//! [`data_ownership`]: super::data_ownership

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta},
};
use kube::Resource;
use serde_json::Value;

use super::data_ownership::keep_data_ownership;

type Pairs = Box<[(Box<str>, Box<str>)]>;

/// The metadata of a Secret the operator manages. [`Resource::meta`] holds
/// its identity, version and owners, not its labels or annotations: those
/// are read with [`CachedSecret::label`], [`CachedSecret::annotation`] or
/// [`CachedSecret::to_meta`].
#[derive(Clone, Debug, PartialEq)]
pub struct CachedSecret {
    metadata: ObjectMeta,
    labels: Pairs,
    annotations: Pairs,
    /// (manager, its data keys comma-separated), in the compact form of
    /// [`super::data_ownership::keep_data_ownership`].
    data_writers: Pairs,
}

impl CachedSecret {
    /// Caches `meta`, its `managedFields` reduced to who wrote which data
    /// keys (and `kubectl apply`'s copy of the object dropped).
    pub fn new(mut meta: ObjectMeta) -> Self {
        keep_data_ownership(&mut meta);
        let labels = pairs(meta.labels.take().unwrap_or_default());
        let annotations = pairs(meta.annotations.take().unwrap_or_default());
        let data_writers = meta
            .managed_fields
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| {
                let keys = match entry.fields_v1?.0 {
                    Value::String(keys) => keys,
                    _ => return None,
                };
                Some((entry.manager?.into_boxed_str(), keys.into_boxed_str()))
            })
            .collect();
        Self {
            metadata: meta,
            labels,
            annotations,
            data_writers,
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    /// The metadata as it was cached: labels, annotations and the compact
    /// data ownership back in their places.
    pub fn to_meta(&self) -> ObjectMeta {
        let map = |pairs: &Pairs| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let managed_fields = self
            .data_writers
            .iter()
            .map(|(manager, keys)| ManagedFieldsEntry {
                manager: Some(manager.to_string()),
                fields_v1: Some(FieldsV1(Value::String(keys.to_string()))),
                ..ManagedFieldsEntry::default()
            })
            .collect();
        ObjectMeta {
            labels: map(&self.labels),
            annotations: map(&self.annotations),
            managed_fields: Some(managed_fields),
            ..self.metadata.clone()
        }
    }
}

fn pairs(map: BTreeMap<String, String>) -> Pairs {
    map.into_iter()
        .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
        .collect()
}

fn find<'a>(pairs: &'a Pairs, key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.as_ref() == key)
        .map(|(_, v)| v.as_ref())
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
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
        assert_eq!(cached.annotation("note"), Some("a,b=c"));
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
    fn identity_and_owners_stay_in_meta_labels_do_not() {
        let cached = CachedSecret::new(meta());
        let meta = cached.meta();
        assert_eq!(meta.uid.as_deref(), Some("u1"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        let owner: &OwnerReference = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("AccessToken", "o1")
        );
        assert_eq!(
            (meta.labels.as_ref(), meta.annotations.as_ref()),
            (None, None)
        );
        assert_eq!(meta.managed_fields, None);
    }

    #[test]
    fn a_secret_without_labels_or_annotations_reads_back_as_none() {
        let cached = CachedSecret::new(ObjectMeta {
            name: Some("bare".into()),
            ..ObjectMeta::default()
        });
        let meta = cached.to_meta();
        assert_eq!((meta.labels, meta.annotations), (None, None));
        assert_eq!(meta.managed_fields, Some(Vec::new()));
    }
}
