//! Reading and writing the Secret that holds an AccessToken's token.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret, ServiceAccount},
};
use kube::{Api, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use super::{
    decide::SecretSeen,
    record::{ACCESS_TOKEN_LABEL, RecordedToken, annotation, data},
};
use crate::{
    api::AccessToken,
    controller::{
        Context, Error, Result,
        managed_secret::{OwnedSecret, SecretState, data_is_intact, put},
    },
};

/// The Secret as the choice of the next step sees it: whose it is, whether
/// it holds the `recorded` token untouched, and the `secretTemplate` it was
/// last written with.
pub fn seen(state: &SecretState, recorded: Option<&RecordedToken>) -> SecretSeen {
    let meta = match state {
        SecretState::Absent => return SecretSeen::Absent,
        SecretState::Foreign => return SecretSeen::Foreign,
        SecretState::Ours(meta) => meta,
    };
    let says = |key: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    let holds_record = recorded.is_some_and(|record| {
        data_is_intact(meta, data::ALL)
            && says(annotation::TOKEN_ID) == Some(record.token_id.as_str())
            && says(annotation::TOKEN_HASH) == Some(record.token_hash.as_str())
    });
    SecretSeen::Ours {
        holds_record,
        template_hash: says(annotation::TEMPLATE_HASH).map(str::to_string),
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
    let name = super::record::secret_name(token);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let data = match value {
        Some(value) => token_data(record, value),
        None => api.get(&name).await?.data.unwrap_or_default(),
    };
    let secret = OwnedSecret {
        name: &name,
        namespace: &namespace,
        template: token.spec.secret_template.as_ref(),
        labels: BTreeMap::from([(ACCESS_TOKEN_LABEL.to_string(), token.name_any())]),
        annotations: record.annotations(&super::record::template_hash(&token.spec)),
        data,
    }
    .controlled_by(token)?;
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
