//! Is a presented token active, and what does it say? The one answer that
//! introspection, revocation, token info and userinfo all rely on.

use serde::Serialize;

use super::index::Index;
use crate::{
    controller::access_token::default_subject,
    token::{AccessTokenClaims, fingerprint, verify_jwt},
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub jti: String,
    /// Extra claims (for userinfo's email and name).
    #[serde(skip)]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The active token `token` is, or `None` when it is unknown, malformed,
/// expired, revoked, or belongs to a deleted AccessToken or AppRegistration.
pub fn inspect(index: &Index, token: &str, now: i64) -> Option<ActiveToken> {
    let active = if token.split('.').count() == 3 {
        inspect_jwt(index, token)?
    } else {
        inspect_opaque(index, token)?
    };
    (active.exp > now && !index.is_revoked(&active.jti)).then_some(active)
}

fn inspect_jwt(index: &Index, token: &str) -> Option<ActiveToken> {
    // The issuer is chosen by the unverified `iss`; the signature is then
    // checked against that issuer's keys only.
    let unverified: AccessTokenClaims =
        jsonwebtoken::dangerous::insecure_decode(token).ok()?.claims;
    let issuer = index.issuer_by_url(&unverified.iss)?;
    let keyring = index.keyring(&issuer)?;
    let claims = verify_jwt(token, &keyring.jwks(), &issuer.settings.issuer_url, None, 0).ok()?;
    match index.access_token_by_id(&claims.jti) {
        // An AccessToken's token: its resource must not be revoked.
        Some(resource) => {
            let revoked = resource.spec.is_revoked();
            let app_gone = resource.spec.app_ref.is_some()
                && claims
                    .client_id
                    .as_deref()
                    .is_none_or(|id| index.app(id).is_none());
            if revoked || app_gone {
                return None;
            }
        }
        // A token of the token endpoint, or one whose AccessToken the watch
        // has not shown yet (the Secret is written before the status): a
        // signature of ours and no revocation are enough, but an app's
        // token also needs its app.
        None => {
            if let Some(id) = claims.client_id.as_deref() {
                index.app(id)?;
            }
        }
    }
    Some(ActiveToken {
        scope: claims.scopes().map(String::from).collect(),
        sub: claims.sub,
        client_id: claims.client_id,
        exp: claims.exp,
        iat: claims.iat,
        iss: Some(claims.iss),
        aud: claims.aud,
        jti: claims.jti,
        extra: claims.extra,
    })
}

fn inspect_opaque(index: &Index, token: &str) -> Option<ActiveToken> {
    let (resource, token_id) = index.access_token_by_hash(&fingerprint(token))?;
    if resource.spec.is_revoked() {
        return None;
    }
    let status = resource.status.as_ref()?;
    let (exp, iat) = if status.token_id.as_deref() == Some(token_id.as_str()) {
        (status.expires_at.as_ref()?.0, status.issued_at.as_ref()?.0)
    } else {
        let previous = status
            .previous_tokens
            .iter()
            .find(|p| p.token_id == token_id)?;
        (previous.expires_at.0, previous.expires_at.0)
    };
    let namespace = kube::ResourceExt::namespace(resource.as_ref()).unwrap_or_default();
    let issuer = index
        .issuers
        .resolve(
            &resource.spec.issuer_ref(),
            &namespace,
            &index.operator_namespace,
        )
        .ok();
    let client_id = match &resource.spec.app_ref {
        None => None,
        Some(app) => {
            let app = index
                .apps
                .get(&kube::runtime::reflector::ObjectRef::new(&app.name).within(&namespace))?;
            Some(kube::ResourceExt::uid(app.as_ref())?)
        }
    };
    let sub = if resource.spec.is_userless() {
        token_id.clone()
    } else {
        resource.spec.subject.clone().unwrap_or_else(|| {
            default_subject(&namespace, &kube::ResourceExt::name_any(resource.as_ref()))
        })
    };
    let aud = match (&issuer, resource.spec.audiences.is_empty()) {
        (_, false) => resource.spec.audiences.clone(),
        (Some(i), true) => i.settings.audiences().to_vec(),
        (None, true) => Vec::new(),
    };
    Some(ActiveToken {
        sub,
        scope: resource.spec.scopes.clone(),
        client_id,
        exp: exp.as_second(),
        iat: iat.as_second(),
        iss: issuer.map(|i| i.settings.issuer_url),
        aud,
        jti: token_id,
        extra: resource
            .spec
            .claims
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    })
}
