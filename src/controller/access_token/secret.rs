//! Reading and writing the Secret that holds an AccessToken's token.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use super::plan::{ACCESS_TOKEN_LABEL, RecordedToken, data};
use crate::{
    api::{AccessToken, IssuerSettings},
    controller::{
        Context, Error, MANAGED_BY, Result,
        managed_secret::{SecretState, controller_reference, data_is_intact, put},
    },
};

/// What an AccessToken needs to know of its Secret beyond ownership.
pub trait TokenSecret {
    /// What the Secret's annotations say it holds.
    fn recorded(&self) -> Option<RecordedToken>;
    /// Whether it still holds, untouched, the token its annotations describe.
    fn is_intact(&self) -> bool;
}

impl TokenSecret for SecretState {
    fn recorded(&self) -> Option<RecordedToken> {
        match self {
            Self::Ours(meta) => RecordedToken::from_meta(meta),
            _ => None,
        }
    }

    fn is_intact(&self) -> bool {
        match self {
            Self::Ours(meta) => {
                data_is_intact(meta, data::ALL) && RecordedToken::from_meta(meta).is_some()
            }
            _ => false,
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
    issuer: &IssuerSettings,
    state: &SecretState,
) -> Result<()> {
    let namespace = token
        .namespace()
        .ok_or(Error::MissingObjectKey("AccessToken", "metadata.namespace"))?;
    let name = super::plan::secret_name(token);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let data = match value {
        Some(value) => token_data(token, record, value, issuer),
        None => api.get(&name).await?.data.unwrap_or_default(),
    };
    let template = token.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels.unwrap_or_default();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(ACCESS_TOKEN_LABEL.into(), token.name_any());
    let mut annotations = template.annotations.unwrap_or_default();
    annotations.extend(record.annotations());
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

fn token_data(
    token: &AccessToken,
    record: &RecordedToken,
    value: &SecretString,
    issuer: &IssuerSettings,
) -> BTreeMap<String, ByteString> {
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    BTreeMap::from([
        (data::TOKEN.into(), text(value.expose_secret())),
        (data::TOKEN_TYPE.into(), text("Bearer")),
        (
            data::EXPIRES_AT.into(),
            text(&record.expires_at.to_string()),
        ),
        (data::TOKEN_ID.into(), text(&record.token_id)),
        (data::ISSUER.into(), text(&issuer.issuer_url)),
        (data::SCOPES.into(), text(&token.spec.scopes.join(" "))),
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
