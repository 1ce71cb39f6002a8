//! The record of an app's client secret (its status, repeated in the
//! Secret's annotations for people and for telling whether the Secret still
//! holds it) and what the Secret's other keys are made from.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};
use serde_json::json;

use super::decide::SecretSeen;
use crate::{
    api::{AppRegistrationSpec, AppRegistrationStatus},
    cluster::issuers::ResolvedIssuer,
    controller::managed_secret::{SecretState, data_is_intact},
    token::fingerprint,
};

/// The Secret data keys (API.md).
pub mod data {
    pub const CLIENT_ID: &str = "client-id";
    pub const CLIENT_SECRET: &str = "client-secret";
    pub const TOKEN_URL: &str = "token-url";
    pub const ISSUER: &str = "issuer";
    pub const ALL: &[&str] = &[CLIENT_ID, CLIENT_SECRET, TOKEN_URL, ISSUER];
}

/// Annotations saying what the Secret holds. The record itself is the
/// status: the Secret's namespace belongs to a tenant, who could otherwise
/// add a client secret of their own choosing.
mod annotation {
    pub const SECRET_HASH: &str = "tokensmith.dev/client-secret-hash";
    pub const ROTATED_AT: &str = "tokensmith.dev/secret-rotated-at";
    pub const SETTINGS_HASH: &str = "tokensmith.dev/settings-hash";
}

/// The client secrets of an app, as the status records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedSecret {
    pub hash: String,
    pub rotated_at: Timestamp,
    /// The previous secret's hash and the end of its grace period.
    pub previous: Option<(String, Timestamp)>,
}

impl RecordedSecret {
    pub fn from_status(status: &AppRegistrationStatus) -> Option<Self> {
        let previous = status.previous_client_secret_hash.clone().zip(
            status
                .previous_client_secret_expires_at
                .as_ref()
                .map(|t| t.0),
        );
        Some(Self {
            hash: status.client_secret_hash.clone()?,
            rotated_at: status.secret_rotated_at.as_ref()?.0,
            previous,
        })
    }

    pub fn annotations(&self, settings_hash: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (annotation::SECRET_HASH.to_string(), self.hash.clone()),
            (
                annotation::ROTATED_AT.to_string(),
                self.rotated_at.to_string(),
            ),
            (
                annotation::SETTINGS_HASH.to_string(),
                settings_hash.to_string(),
            ),
        ])
    }
}

/// The URL of the token endpoint that the operator's token service serves.
pub fn token_url(public_url: &str) -> String {
    format!("{}/oauth/token", public_url.trim_end_matches('/'))
}

/// Hash of what the Secret's non-secret keys and metadata are made from.
pub fn settings_hash(
    spec: &AppRegistrationSpec,
    issuer: &ResolvedIssuer,
    public_url: &str,
) -> String {
    fingerprint(
        &json!({
            "issuer": issuer.settings.issuer_url,
            "tokenURL": token_url(public_url),
            "template": spec.secret_template,
        })
        .to_string(),
    )
}

/// The Secret as the choice of the next step sees it.
pub fn seen(state: &SecretState) -> SecretSeen {
    let meta: &ObjectMeta = match state {
        SecretState::Absent => return SecretSeen::Absent,
        SecretState::Foreign => return SecretSeen::Foreign,
        SecretState::Ours(meta) => meta,
    };
    let annotation_of = |key: &str| meta.annotations.as_ref()?.get(key).cloned();
    SecretSeen::Ours {
        holds_hash: annotation_of(annotation::SECRET_HASH)
            .filter(|_| data_is_intact(meta, data::ALL)),
        settings_hash: annotation_of(annotation::SETTINGS_HASH),
    }
}
