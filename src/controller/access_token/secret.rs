//! Reading and writing the Secret that holds an AccessToken's token.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use super::plan::{ACCESS_TOKEN_LABEL, RecordedToken, annotation, data};
use crate::{
    api::AccessToken,
    controller::{
        Context, Error, MANAGED_BY, Result,
        managed_secret::{SecretState, controller_reference, data_is_intact, put},
    },
};

/// What an AccessToken needs to know of its Secret beyond ownership.
pub trait TokenSecret {
    /// Whether it still holds, untouched, the token `record` describes.
    fn holds(&self, record: &RecordedToken) -> bool;
    /// The hash of the `secretTemplate` it was last written with.
    fn template_hash(&self) -> Option<&str>;
}

impl TokenSecret for SecretState {
    fn holds(&self, record: &RecordedToken) -> bool {
        match self {
            Self::Ours(meta) => {
                let says = |key: &str| {
                    meta.annotations
                        .as_ref()
                        .and_then(|a| a.get(key))
                        .map(String::as_str)
                };
                data_is_intact(meta, data::ALL)
                    && says(annotation::TOKEN_ID) == Some(record.token_id.as_str())
                    && says(annotation::TOKEN_HASH) == Some(record.token_hash.as_str())
            }
            _ => false,
        }
    }

    fn template_hash(&self) -> Option<&str> {
        match self {
            Self::Ours(meta) => meta
                .annotations
                .as_ref()?
                .get(annotation::TEMPLATE_HASH)
                .map(String::as_str),
            _ => None,
        }
    }
}

/// Writes the Secret: a new token when `value` is given, else the current
/// data with updated labels and annotations. An absent Secret is created (so
/// that one created meanwhile by someone else is never taken over); an owned
/// one is applied with its UID as precondition.
pub async fn write(
    ctx: &Context,
    token: &AccessToken,
    record: &RecordedToken,
    value: Option<&SecretString>,
    state: &SecretState,
) -> Result<()> {
    let namespace = token
        .namespace()
        .ok_or(Error::MissingObjectKey("AccessToken", "metadata.namespace"))?;
    let name = super::plan::secret_name(token);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let data = match value {
        Some(value) => token_data(record, value),
        None => api.get(&name).await?.data.unwrap_or_default(),
    };
    let template = token.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels.unwrap_or_default();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(ACCESS_TOKEN_LABEL.into(), token.name_any());
    let mut annotations = template.annotations.unwrap_or_default();
    annotations.extend(record.annotations(&super::plan::template_hash(&token.spec)));
    let owner =
        controller_reference(token).ok_or(Error::MissingObjectKey("AccessToken", "metadata"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    };
    put(ctx, secret, state).await
}

fn token_data(record: &RecordedToken, value: &SecretString) -> BTreeMap<String, ByteString> {
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    BTreeMap::from([
        (data::TOKEN.into(), text(value.expose_secret())),
        (data::TOKEN_TYPE.into(), text("Bearer")),
        (
            data::EXPIRES_AT.into(),
            text(&record.expires_at.to_string()),
        ),
        (data::TOKEN_ID.into(), text(&record.token_id)),
        (data::ISSUER.into(), text(&record.minted.issuer_url)),
        (data::SCOPES.into(), text(&record.minted.scopes.join(" "))),
    ])
}

/// The UID of a core object a token can be bound to, if it exists.
pub async fn core_object_uid(
    ctx: &Context,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Option<String>> {
    let client = ctx.client.clone();
    let meta = match kind {
        "ServiceAccount" => Api::<ServiceAccount>::namespaced(client, namespace)
            .get_metadata_opt(name)
            .await?
            .map(|m| m.metadata),
        "Secret" => Api::<Secret>::namespaced(client, namespace)
            .get_metadata_opt(name)
            .await?
            .map(|m| m.metadata),
        _ => Api::<ConfigMap>::namespaced(client, namespace)
            .get_metadata_opt(name)
            .await?
            .map(|m| m.metadata),
    };
    Ok(meta.and_then(|m| m.uid))
}
