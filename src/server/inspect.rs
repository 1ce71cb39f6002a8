//! Is a presented token active, and what does it say? The one answer that
//! introspection, revocation, token info and userinfo all rely on.

use serde::Serialize;

use super::index::Index;
use crate::{
    api::{AccessToken, MintedClaims},
    token::{AccessTokenClaims, fingerprint, is_endpoint_token_id, verify_jwt},
};

/// An active token, as RFC 7662 describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActiveToken {
    pub sub: String,
    pub scope: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: Vec<String>,
    pub jti: String,
    /// Extra claims (for userinfo's email and name).
    #[serde(skip)]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

/// How long a JWT that names no record may still be active: the time for
/// the status write that records a freshly minted token to reach this
/// replica's watch (the Secret is written just before it).
pub const RECORD_GRACE_SECONDS: i64 = 10;

/// The active token `token` is, or `None` when it is unknown, malformed,
/// expired, revoked, or belongs to a deleted AccessToken or AppRegistration.
pub fn inspect(index: &Index, token: &str, now: i64) -> Option<ActiveToken> {
    let active = if token.split('.').count() == 3 {
        inspect_jwt(index, token, now)?
    } else {
        inspect_opaque(index, token)?
    };
    (active.exp > now && !index.is_revoked(&active.iss, &active.jti)).then_some(active)
}

fn inspect_jwt(index: &Index, token: &str, now: i64) -> Option<ActiveToken> {
    // The issuer is chosen by the unverified `iss`; the signature is then
    // checked against that issuer's keys only.
    let unverified: AccessTokenClaims =
        jsonwebtoken::dangerous::insecure_decode(token).ok()?.claims;
    let issuer = index.issuer_by_url(&unverified.iss)?;
    let keyring = index.keyring(&issuer)?;
    let claims = index.verified.claims(token, &keyring, || {
        verify_jwt(token, keyring.jwks(), &issuer.settings.issuer_url, None, 0).ok()
    })?;
    // Nothing of this issuer lives longer than its maxLifetime, whatever
    // the signature says.
    let max_lifetime = issuer.settings.max_lifetime().ok()?.as_secs() as i64;
    if claims.exp - claims.iat > max_lifetime {
        return None;
    }
    if is_endpoint_token_id(&claims.jti) {
        // A token of the token endpoint: judged by signature, revocation
        // and its app's existence.
        index.app(claims.client_id.as_deref()?)?;
    } else {
        // An AccessToken's token: its record must hold it, under this issuer.
        match index.access_token_by_id(&claims.iss, &claims.jti) {
            Some(resource) => {
                let minted = resource.status.as_ref()?.minted.as_ref()?;
                if withdrawn(&resource) || app_gone(index, minted) {
                    return None;
                }
            }
            // Minted a moment ago and not yet seen in the record, or the
            // record is gone (an AccessToken deleted without its finalizer).
            None if now - claims.iat > RECORD_GRACE_SECONDS => return None,
            None => {
                if let Some(id) = claims.client_id.as_deref() {
                    index.app(id)?;
                }
            }
        }
    }
    Some(ActiveToken {
        scope: claims.scopes().map(String::from).collect(),
        sub: claims.sub,
        client_id: claims.client_id,
        exp: claims.exp,
        iat: claims.iat,
        iss: claims.iss,
        aud: claims.aud,
        jti: claims.jti,
        extra: claims.extra,
    })
}

/// Whether the AccessToken's tokens are revoked or being revoked: a deletion
/// in progress counts at once, on every replica, without waiting for the
/// leader's finalizer to write the revocation record.
fn withdrawn(resource: &AccessToken) -> bool {
    resource.spec.is_revoked() || resource.metadata.deletion_timestamp.is_some()
}

/// Whether the app a token was minted for no longer exists.
fn app_gone(index: &Index, minted: &MintedClaims) -> bool {
    minted
        .client_id
        .as_deref()
        .is_some_and(|id| index.app(id).is_none())
}

/// An Opaque token is known only by its record: what it carries, until when,
/// and under which issuer, which must still exist and serve its namespace.
fn inspect_opaque(index: &Index, token: &str) -> Option<ActiveToken> {
    let (resource, token_id) = index.access_token_by_hash(&fingerprint(token))?;
    if withdrawn(&resource) {
        return None;
    }
    let status = resource.status.as_ref()?;
    let minted = status.minted.as_ref()?;
    let (exp, iat) = if status.token_id.as_deref() == Some(token_id.as_str()) {
        (status.expires_at.as_ref()?.0, status.issued_at.as_ref()?.0)
    } else {
        let previous = status
            .previous_tokens
            .iter()
            .find(|p| p.token_id == token_id)?;
        (previous.expires_at.0, previous.expires_at.0)
    };
    let namespace = kube::ResourceExt::namespace(resource.as_ref())?;
    // `issuerRef` is immutable, so it names the issuer that minted the token.
    let issuer = index
        .issuers
        .resolve(
            &resource.spec.issuer_ref(),
            &namespace,
            &index.operator_namespace,
        )
        .ok()?;
    if issuer.settings.issuer_url != minted.issuer_url || app_gone(index, minted) {
        return None;
    }
    Some(ActiveToken {
        sub: minted.subject_of(&token_id),
        scope: minted.scopes.clone(),
        client_id: minted.client_id.clone(),
        exp: exp.as_second(),
        iat: iat.as_second(),
        iss: minted.issuer_url.clone(),
        aud: minted.audiences.clone(),
        jti: token_id,
        extra: minted
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    })
}
