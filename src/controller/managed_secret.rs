//! Facts about a Secret the operator writes, read from its metadata alone so
//! that no Secret data has to be fetched or cached to know it is intact.

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use serde_json::json;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::{Context, MANAGED_BY, MANAGER, Result};
use crate::api::SecretTemplate;
use crate::cluster::{CachedSecret, data_ownership::data_keys};

/// The target Secret as the reconcile finds it.
pub enum SecretState {
    Absent,
    /// Exists and is not controlled by the resource: never touched.
    Foreign,
    Ours(Box<ObjectMeta>),
}

impl SecretState {
    /// Looks the Secret up in the metadata cache, and asks the API server
    /// (metadata only) when the cache does not have it: a Secret the operator
    /// did not label is not in the cache, and must not be mistaken for absent.
    pub async fn observe(
        ctx: &Context,
        namespace: &str,
        name: &str,
        owner_uid: &str,
    ) -> Result<Self> {
        let cached = ctx
            .managed_secrets
            .get(&ObjectRef::new(name).within(namespace))
            .map(|s| s.to_meta());
        // Not among the managed Secrets: taken as absent without asking.
        // Should one exist anyway (someone else's, or ours not yet seen by
        // the cache), creating it fails and `put` finds out which.
        Ok(match cached {
            Some(meta) => Self::of(meta, owner_uid),
            None => Self::Absent,
        })
    }

    /// Asks the API server (metadata only), bypassing the cache: for when
    /// the cache may lag behind the operator's own last write.
    pub async fn fetch(
        ctx: &Context,
        namespace: &str,
        name: &str,
        owner_uid: &str,
    ) -> Result<Self> {
        let meta = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_metadata_opt(name)
            .await?;
        Ok(match meta {
            None => Self::Absent,
            Some(m) => Self::of(m.metadata, owner_uid),
        })
    }

    fn of(meta: ObjectMeta, owner_uid: &str) -> Self {
        if is_controlled_by(&meta, owner_uid) {
            Self::Ours(Box::new(meta))
        } else {
            Self::Foreign
        }
    }
}

/// Writes `secret` as the operator: creates it when absent (so that a Secret
/// created meanwhile by someone else is never taken over: the create fails),
/// or applies it with the observed UID as precondition when it is ours.
pub async fn put(ctx: &Context, secret: Secret, state: &SecretState) -> Result<()> {
    let name = secret.name_any();
    put_unchecked(ctx, secret, state)
        .await
        .map_err(|error| match error {
            super::Error::Kube(kube::Error::Api(status)) if status.code == 422 => {
                super::Error::SecretRefused {
                    secret: name,
                    reason: status.message,
                }
            }
            other => other,
        })
}

async fn put_unchecked(ctx: &Context, mut secret: Secret, state: &SecretState) -> Result<()> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    match state {
        SecretState::Ours(meta) => {
            secret.metadata.uid = meta.uid.clone();
            let stored = apply(&api, &secret).await?;
            ctx.own_writes.wrote(&stored);
        }
        SecretState::Absent => {
            let params = PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            };
            match api.create(&params, &secret).await {
                Ok(stored) => ctx.own_writes.wrote(&stored),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let owner_uid = secret
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .find(|r| r.controller == Some(true))
                        .map(|r| r.uid.clone())
                        .unwrap_or_default();
                    return match SecretState::fetch(ctx, &namespace, &name, &owner_uid).await? {
                        found @ SecretState::Ours(_) => {
                            Box::pin(put_unchecked(ctx, secret, &found)).await
                        }
                        _ => Err(super::Error::SecretTaken { secret: name }),
                    };
                }
                Err(error) => return Err(error.into()),
            }
        }
        SecretState::Foreign => unreachable!("a foreign Secret is reported before any write"),
    }
    Ok(())
}

/// Applies `secret` as the operator (server-side apply, forced): the one
/// way the operator writes a Secret it already holds.
pub async fn apply(api: &Api<Secret>, secret: &Secret) -> kube::Result<Secret> {
    let mut body = serde_json::to_value(secret).expect("a Secret serializes");
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Secret");
    api.patch(
        &secret.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
}

/// A Secret the operator writes: the managed-by label, `labels` and
/// `annotations` over those of the resource's `secretTemplate`, and `data`.
pub struct OwnedSecret<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub template: Option<&'a SecretTemplate>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, ByteString>,
}

impl OwnedSecret<'_> {
    /// The Secret, controlled by `owner` (deleted with it by the garbage
    /// collector; never mistaken for someone else's).
    pub fn controlled_by<K: kube::Resource<DynamicType = ()>>(self, owner: &K) -> Result<Secret> {
        let owner = controller_reference(owner)
            .ok_or(super::Error::MissingObjectKey("owner", "metadata"))?;
        Ok(self.build(Some(vec![owner])))
    }

    /// The Secret, with `owner_references` (none when its owner lives in
    /// another namespace).
    pub fn build(self, owner_references: Option<Vec<OwnerReference>>) -> Secret {
        let template = self.template.cloned().unwrap_or_default();
        let mut labels = template.labels.unwrap_or_default();
        labels.extend(self.labels);
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        let mut annotations = template.annotations.unwrap_or_default();
        annotations.extend(self.annotations);
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                namespace: Some(self.namespace.to_string()),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                owner_references,
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(self.data),
            ..Secret::default()
        }
    }
}

/// Deletes the Secret if the resource owns it, guarded by its UID.
pub async fn delete_if_ours(ctx: &Context, namespace: &str, state: &SecretState) -> Result<()> {
    let SecretState::Ours(meta) = state else {
        return Ok(());
    };
    let name = meta.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .delete(&name, &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The objects of kind `K` that own `secret` (in its namespace): what
/// kube's `owns` would trigger, for Secrets whose cached metadata keeps
/// its owners out of [`kube::Resource::meta`].
pub fn owners_of<K: kube::Resource<DynamicType = ()>>(secret: &CachedSecret) -> Vec<ObjectRef<K>> {
    let Some(namespace) = secret.namespace() else {
        return Vec::new();
    };
    secret
        .owners()
        .into_iter()
        .filter(|o| o.kind == K::kind(&()) && o.api_version == K::api_version(&()))
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
        .collect()
}

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
    let mut ours: Vec<&str> = Vec::new();
    for entry in entries {
        let written = data_keys(entry);
        if entry.manager.as_deref() == Some(MANAGER) {
            ours.extend(written);
        } else if !written.is_empty() {
            return false;
        }
    }
    keys.iter().all(|k| ours.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::{Value, json};

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
