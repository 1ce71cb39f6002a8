//! Access tokens minted by the token endpoint, whichever the grant.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use secrecy::SecretString;

use super::{index::Index, oauth::OAuthError};
use crate::{
    api::{AppRegistration, MintedClaims},
    token::{
        AccessTokenClaims, new_endpoint_token_id,
        policy::{self, Refusal, Request},
        sign_jwt, whole_seconds,
    },
};

/// A freshly signed access token.
pub struct Minted {
    pub token: SecretString,
    pub claims: AccessTokenClaims,
    pub lifetime: Duration,
}

/// The scopes asked for, each within the app's; all of `allowed` when none are named.
pub fn granted_scopes(
    allowed: &[String],
    requested: Option<&String>,
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    let mut scopes = Vec::new();
    for scope in requested.split_ascii_whitespace() {
        if !allowed.iter().any(|a| a == scope) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {scope:?} is not among the scopes granted"
            )));
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    Ok(scopes)
}

/// Signs an access token for `app` acting as `subject`, with the app's
/// issuer, audiences and access-token lifetime (capped by the issuer's
/// maximum). Scopes must already be within the app's.
pub fn mint(
    index: &Index,
    app: &AppRegistration,
    subject: String,
    scopes: &[String],
) -> Result<Minted, OAuthError> {
    let namespace = app.namespace().unwrap_or_default();
    let issuer = index
        .issuers
        .resolve(
            &app.spec.issuer_ref(),
            &namespace,
            &index.operator_namespace,
        )
        .map_err(|unresolved| OAuthError::server_error(unresolved.message))?;
    let view = index
        .issuer_by_url(&issuer.settings.issuer_url)
        .ok_or_else(|| OAuthError::server_error("the issuer is not known yet"))?;
    let no_key = || OAuthError::server_error("the issuer has no signing key yet");
    let keyring = index.keyring(&view).ok_or_else(no_key)?;
    let key = keyring.signing_key().ok().flatten().ok_or_else(no_key)?;
    let lifetime = app
        .spec
        .access_token_lifetime()
        .map_err(|e| OAuthError::server_error(e.to_string()))?
        .min(issuer.settings.max_lifetime().unwrap_or(Duration::MAX));
    let client_id = app.uid().unwrap_or_default();
    let audiences = policy::audiences(&app.spec.audiences, &issuer.settings);
    let request = Request {
        scopes,
        subject: None,
        audiences,
        claims: Vec::new(),
    };
    match policy::refusal(&issuer.settings, &namespace, &request) {
        None => {}
        Some(refused @ Refusal::Scope { .. }) => {
            return Err(OAuthError::invalid_scope(format!(
                "{refused}: refused by the app's issuer"
            )));
        }
        Some(refused) => {
            return Err(OAuthError::unauthorized_client(format!(
                "{refused}: the app is refused by its issuer"
            )));
        }
    }
    let issued_at = whole_seconds(Timestamp::now());
    let expires_at = issued_at
        .checked_add(lifetime)
        .map_err(|e| OAuthError::server_error(e.to_string()))?;
    let minted = MintedClaims {
        issuer_url: issuer.settings.issuer_url.clone(),
        subject: Some(subject.clone()),
        scopes: scopes.to_vec(),
        audiences: audiences.to_vec(),
        claims: Default::default(),
        client_id: Some(client_id.clone()),
    };
    let mut claims = policy::claims(&minted, &new_endpoint_token_id(), issued_at, expires_at);
    claims.extra.extend(actor(&subject, &client_id));
    Ok(Minted {
        token: sign_jwt(&claims, key),
        claims,
        lifetime,
    })
}

/// The `act` claim (RFC 8693 section 4.1) of a token that acts on behalf of
/// `subject`: the client is the actor. None when the client acts as itself.
fn actor(subject: &str, client_id: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    if subject == client_id {
        return Default::default();
    }
    [("act".to_string(), serde_json::json!({ "sub": client_id }))].into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_requested_scopes_within_the_allowed() {
        let allowed = vec!["read".to_string(), "write".to_string()];
        assert_eq!(granted_scopes(&allowed, None).unwrap(), allowed);
        assert_eq!(
            granted_scopes(&allowed, Some(&"read read".into())).unwrap(),
            vec!["read"]
        );
        let err = granted_scopes(&allowed, Some(&"admin".into())).unwrap_err();
        assert_eq!(err.code, "invalid_scope");
    }

    #[test]
    fn a_token_on_behalf_of_another_names_the_client_as_actor() {
        assert!(actor("client-1", "client-1").is_empty());
        let act = actor("system:serviceaccount:team-a:worker", "client-1");
        assert_eq!(act["act"], serde_json::json!({ "sub": "client-1" }));
    }
}
