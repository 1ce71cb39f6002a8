//! Refresh-token chains, stored in the cluster: one Secret per chain in the
//! operator's namespace (a chain says whose identity its tokens carry, so it
//! lives where no tenant can write), labelled with its app's client id and
//! holding hashes only. Expired chains, and those of deleted apps, are pruned
//! by the AppRegistration reconciler. Rotation
//! replaces the Secret with a resourceVersion precondition, so of two
//! concurrent uses of one refresh token exactly one wins and the other is
//! judged again, as the reuse it is.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{Secret, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use kube::{Api, ResourceExt, api::PostParams};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{
    AppState,
    mint::{Minted, granted_scopes, mint},
    oauth::OAuthError,
};
use crate::{
    api::AppRegistration,
    cluster::{
        labels::MANAGED_BY,
        refresh_chains::{
            CHAIN_APP_NAME_ANNOTATION, CHAIN_APP_NAMESPACE_ANNOTATION, CHAIN_CLIENT_LABEL,
            CHAIN_EXPIRES_ANNOTATION, CHAIN_SECRET_TYPE, chain_secret_name,
        },
        revocations::RevokedToken,
    },
    token::{Presented, RefreshChain, chain_id_of, new_chain_id, new_refresh_token},
};

const CHAIN_KEY: &str = "chain.json";
/// How often a conflicting rotation is judged again before giving up.
const ROTATION_ATTEMPTS: usize = 5;

fn invalid_grant(description: &str) -> OAuthError {
    OAuthError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid_grant",
        description,
    )
}

fn storage_error(error: kube::Error) -> OAuthError {
    warn!(%error, "refresh chain storage failed");
    OAuthError::server_error("the refresh token could not be stored; try again")
}

/// The chains of one app.
struct Chains {
    api: Api<Secret>,
}

impl Chains {
    fn of(state: &AppState) -> Self {
        Self {
            api: Api::namespaced(state.client.clone(), &state.index.operator_namespace),
        }
    }

    fn secret(app: &AppRegistration, chain_id: &str, chain: &RefreshChain) -> Secret {
        let expires_at = Timestamp::from_second(chain.expires_at()).unwrap_or(Timestamp::MAX);
        Secret {
            metadata: ObjectMeta {
                name: Some(chain_secret_name(chain_id)),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    (CHAIN_CLIENT_LABEL.to_string(), chain.client_id.clone()),
                ])),
                annotations: Some(BTreeMap::from([
                    (CHAIN_EXPIRES_ANNOTATION.to_string(), expires_at.to_string()),
                    (
                        CHAIN_APP_NAMESPACE_ANNOTATION.to_string(),
                        app.namespace().unwrap_or_default(),
                    ),
                    (CHAIN_APP_NAME_ANNOTATION.to_string(), app.name_any()),
                ])),
                ..Default::default()
            },
            type_: Some(CHAIN_SECRET_TYPE.into()),
            data: Some(BTreeMap::from([(
                CHAIN_KEY.to_string(),
                ByteString(serde_json::to_vec(chain).expect("a chain serializes")),
            )])),
            ..Default::default()
        }
    }

    async fn create(
        &self,
        app: &AppRegistration,
        chain_id: &str,
        chain: &RefreshChain,
    ) -> Result<(), OAuthError> {
        let secret = Self::secret(app, chain_id, chain);
        self.api
            .create(&PostParams::default(), &secret)
            .await
            .map(drop)
            .map_err(storage_error)
    }

    /// The chain and the resourceVersion it was read at.
    async fn get(&self, chain_id: &str) -> Result<Option<(RefreshChain, String)>, OAuthError> {
        let Some(secret) = self
            .api
            .get_opt(&chain_secret_name(chain_id))
            .await
            .map_err(storage_error)?
        else {
            return Ok(None);
        };
        if secret.type_.as_deref() != Some(CHAIN_SECRET_TYPE) {
            return Ok(None);
        }
        let chain = secret
            .data
            .as_ref()
            .and_then(|d| d.get(CHAIN_KEY))
            .and_then(|bytes| serde_json::from_slice(&bytes.0).ok());
        Ok(chain.map(|c| (c, secret.resource_version().unwrap_or_default())))
    }

    /// Writes `chain` if nobody changed it since `version`; `false` on a conflict.
    async fn replace(
        &self,
        app: &AppRegistration,
        chain_id: &str,
        chain: &RefreshChain,
        version: String,
    ) -> Result<bool, OAuthError> {
        let mut secret = Self::secret(app, chain_id, chain);
        secret.metadata.resource_version = Some(version);
        match self
            .api
            .replace(
                &chain_secret_name(chain_id),
                &PostParams::default(),
                &secret,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
            Err(error) => Err(storage_error(error)),
        }
    }

    async fn delete(&self, chain_id: &str) -> Result<(), OAuthError> {
        match self
            .api
            .delete(&chain_secret_name(chain_id), &Default::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(storage_error(error)),
        }
    }
}

/// The JSON answer of the token endpoint.
pub fn token_response(
    minted: &Minted,
    refresh_token: Option<&SecretString>,
    extra: &[(&str, &str)],
) -> Value {
    let mut body = json!({
        "access_token": minted.token.expose_secret(),
        "token_type": "Bearer",
        "expires_in": minted.lifetime.as_secs(),
        "scope": minted.claims.scope,
    });
    if let Some(refresh) = refresh_token {
        body["refresh_token"] = Value::String(refresh.expose_secret().to_string());
    }
    for (key, value) in extra {
        body[*key] = Value::String((*value).to_string());
    }
    body
}

fn refresh_lifetime(app: &AppRegistration) -> Result<i64, OAuthError> {
    app.spec
        .refresh_token_lifetime()
        .map(|d| d.as_secs() as i64)
        .map_err(|e| OAuthError::server_error(e.to_string()))
}

fn chain_lifetime(app: &AppRegistration) -> Result<i64, OAuthError> {
    app.spec
        .refresh_chain_lifetime()
        .map(|d| d.as_secs() as i64)
        .map_err(|e| OAuthError::server_error(e.to_string()))
}

/// Starts a chain for an access token just minted for `app`; returns its
/// first refresh token.
pub async fn start_chain(
    state: &AppState,
    app: &AppRegistration,
    minted: &Minted,
    subject_uid: Option<String>,
) -> Result<SecretString, OAuthError> {
    let now = Timestamp::now().as_second();
    let chain_id = new_chain_id();
    let token = new_refresh_token(&chain_id);
    let mut chain = RefreshChain::start(
        app.uid().unwrap_or_default(),
        minted.claims.sub.clone(),
        minted.claims.scopes().map(String::from).collect(),
        minted.claims.aud.clone(),
        &token,
        now + refresh_lifetime(app)?,
        now + chain_lifetime(app)?,
    );
    chain.subject_uid = subject_uid;
    chain.issued(
        minted.claims.iss.clone(),
        minted.claims.jti.clone(),
        minted.claims.exp,
    );
    Chains::of(state).create(app, &chain_id, &chain).await?;
    Ok(token)
}

/// The `refresh_token` grant: spends the presented token for a new one and
/// a new access token; a spent token presented again revokes the chain.
pub async fn refresh(
    state: &AppState,
    app: &AppRegistration,
    token: &str,
    requested_scope: Option<&String>,
) -> Result<Value, OAuthError> {
    let invalid = || invalid_grant("the refresh token is invalid, expired or revoked");
    let chain_id = chain_id_of(token).ok_or_else(invalid)?;
    let client_id = app.uid().unwrap_or_default();
    let chains = Chains::of(state);
    for _ in 0..ROTATION_ATTEMPTS {
        let Some((mut chain, version)) = chains.get(chain_id).await? else {
            return Err(invalid());
        };
        if chain.client_id != client_id {
            return Err(invalid());
        }
        let now = Timestamp::now().as_second();
        match chain.judge(token, now) {
            Presented::Current => {
                if !subject_exists(state, &chain).await? {
                    revoke_chain(state, app, &chains, chain_id, &chain).await?;
                    info!(client_id = %client_id, chain = %chain_id, "the chain's service account is gone; chain revoked");
                    return Err(invalid_grant(
                        "the service account this refresh token acts for no longer exists; its chain is revoked",
                    ));
                }
                // Narrower scopes may be asked for (RFC 6749 §6); never more
                // than the chain was granted, nor more than the app has now.
                let grantable: Vec<String> = chain
                    .scopes
                    .iter()
                    .filter(|s| app.spec.scopes.contains(s))
                    .cloned()
                    .collect();
                let scopes = granted_scopes(&grantable, requested_scope)?;
                let minted = mint(&state.index, app, chain.subject.clone(), &scopes)?;
                let next = new_refresh_token(chain_id);
                chain.rotate(&next, now + refresh_lifetime(app)?, now);
                chain.issued(
                    minted.claims.iss.clone(),
                    minted.claims.jti.clone(),
                    minted.claims.exp,
                );
                if chains.replace(app, chain_id, &chain, version).await? {
                    info!(client_id = %client_id, jti = %minted.claims.jti, "refresh token rotated");
                    return Ok(token_response(&minted, Some(&next), &[]));
                }
            }
            Presented::Reused => {
                revoke_chain(state, app, &chains, chain_id, &chain).await?;
                warn!(client_id = %client_id, chain = %chain_id, "a spent refresh token was presented again; its chain is revoked");
                return Err(invalid_grant(
                    "the refresh token was already used; every token of its chain is now revoked",
                ));
            }
            Presented::Expired | Presented::Unknown => return Err(invalid()),
        }
    }
    Err(OAuthError::server_error(
        "the refresh token is in use concurrently; try again",
    ))
}

/// Whether the service account a chain acts for still exists (the same
/// object, by UID). Deleting it ends the chain, as it ends the account's own
/// tokens.
async fn subject_exists(state: &AppState, chain: &RefreshChain) -> Result<bool, OAuthError> {
    let Some((namespace, name)) = chain
        .subject
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return Ok(true);
    };
    let account = Api::<ServiceAccount>::namespaced(state.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|error| {
            warn!(%error, "looking up a refresh chain's service account failed");
            OAuthError::server_error("the service account could not be looked up; try again")
        })?;
    Ok(account.is_some_and(|a| chain.subject_uid.is_none() || a.uid() == chain.subject_uid))
}

/// Revokes a refresh token's chain at its client's request (RFC 7009).
/// Unknown tokens and other clients' tokens are left alone.
pub async fn revoke(
    state: &AppState,
    app: &AppRegistration,
    token: &str,
) -> Result<(), OAuthError> {
    let Some(chain_id) = chain_id_of(token) else {
        return Ok(());
    };
    let chains = Chains::of(state);
    let Some((chain, _)) = chains.get(chain_id).await? else {
        return Ok(());
    };
    let now = Timestamp::now().as_second();
    if chain.client_id == app.uid().unwrap_or_default()
        && chain.judge(token, now) != Presented::Unknown
    {
        revoke_chain(state, app, &chains, chain_id, &chain).await?;
        info!(client_id = %chain.client_id, chain = %chain_id, "refresh chain revoked by its client");
    }
    Ok(())
}

/// Records every live access token of the chain as revoked, then deletes
/// the chain, so none of its refresh tokens works any more.
async fn revoke_chain(
    state: &AppState,
    app: &AppRegistration,
    chains: &Chains,
    chain_id: &str,
    chain: &RefreshChain,
) -> Result<(), OAuthError> {
    let revoked: Vec<RevokedToken> = chain
        .access_tokens
        .iter()
        .map(|t| RevokedToken {
            issuer_url: t.issuer_url.clone(),
            token_id: t.token_id.clone(),
            expires_at: Timestamp::from_second(t.expires_at).unwrap_or(Timestamp::MAX),
            namespace: app.namespace(),
        })
        .collect();
    if !revoked.is_empty() {
        state
            .revocations
            .revoke(&revoked, Timestamp::now())
            .await
            .map_err(|error| {
                warn!(%error, "recording revoked tokens failed");
                OAuthError::server_error("the revocation could not be recorded; try again")
            })?;
    }
    chains.delete(chain_id).await
}
