//! Token exchange (RFC 8693) for apps of type Web: the caller presents a
//! Kubernetes service-account token, the API server vouches for it through a
//! TokenReview, and the app gets a token acting on behalf of that identity,
//! with a refresh token.

use std::collections::HashMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, api::PostParams};
use serde_json::Value;
use tracing::{info, warn};

use super::{
    AppState,
    mint::{granted_scopes, mint},
    oauth::OAuthError,
    refresh::{start_chain, token_response},
};
use crate::api::AppRegistration;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The subject token's type must be one a service-account token is.
fn check_request(form: &HashMap<String, String>) -> Result<&str, OAuthError> {
    let token = form
        .get("subject_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
    match form.get("subject_token_type").map(String::as_str) {
        Some(JWT_TYPE | ACCESS_TOKEN_TYPE) => {}
        Some(_) => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type must be {JWT_TYPE} (a Kubernetes service-account token)"
            )));
        }
        None => {
            return Err(OAuthError::invalid_request(
                "subject_token_type is required",
            ));
        }
    }
    if let Some(requested) = form.get("requested_token_type")
        && requested != ACCESS_TOKEN_TYPE
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    if form.contains_key("actor_token") {
        return Err(OAuthError::invalid_request(
            "actor_token is not supported: the authenticated client is the actor",
        ));
    }
    Ok(token)
}

/// The service account a subject token authenticates as, by TokenReview:
/// its user name and UID. The token must be made for this token service
/// (audience `--public-url`, as `kubectl create token SA --audience URL` or a
/// projected volume makes it), unless API-audience tokens are accepted for
/// compatibility.
async fn review(state: &AppState, token: &str) -> Result<(String, Option<String>), OAuthError> {
    let ours = vec![state.public_url.clone()];
    match review_for(state, token, Some(ours.clone())).await? {
        Some(identity) => Ok(identity),
        None if state.exchange_accepts_api_audience => review_for(state, token, None)
            .await?
            .ok_or_else(not_authenticated),
        None => Err(OAuthError::invalid_request(format!(
            "the subject token is not a valid Kubernetes token for audience {} (forged, expired, revoked, or made for another audience: request one with `kubectl create token <account> --audience {}`)",
            ours[0], ours[0]
        ))),
    }
}

fn not_authenticated() -> OAuthError {
    OAuthError::invalid_request(
        "the subject token is not a valid Kubernetes token (forged, expired or revoked)",
    )
}

/// One TokenReview for `audiences` (`None`: the API server's own); `None`
/// when the token is not authenticated for them.
async fn review_for(
    state: &AppState,
    token: &str,
    audiences: Option<Vec<String>>,
) -> Result<Option<(String, Option<String>)>, OAuthError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: audiences.clone(),
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(state.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|error| {
            // The error is the API server's answer; it never echoes the token.
            warn!(%error, "TokenReview failed");
            OAuthError::server_error("the subject token could not be reviewed; try again")
        })?;
    let status = reviewed.status.unwrap_or_default();
    // The answer must confirm the audience asked for, not only authenticate.
    let audience_confirmed = audiences.as_ref().is_none_or(|wanted| {
        status
            .audiences
            .iter()
            .flatten()
            .any(|a| wanted.contains(a))
    });
    if status.authenticated != Some(true) || !audience_confirmed {
        return Ok(None);
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    if !username.starts_with(SERVICE_ACCOUNT_PREFIX) {
        return Err(OAuthError::invalid_request(
            "the subject token must be a service-account token",
        ));
    }
    Ok(Some((username, user.uid)))
}

/// The token-exchange grant.
pub async fn exchange(
    state: &AppState,
    app: &AppRegistration,
    form: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let subject_token = check_request(form)?;
    let scopes = granted_scopes(&app.spec.scopes, form.get("scope"))?;
    let (subject, subject_uid) = review(state, subject_token).await?;
    let minted = mint(&state.index, app, subject, &scopes)?;
    let refresh_token = start_chain(state, app, &minted, subject_uid).await?;
    info!(
        client_id = ?minted.claims.client_id,
        sub = %minted.claims.sub,
        jti = %minted.claims.jti,
        "token issued by token exchange"
    );
    Ok(token_response(
        &minted,
        Some(&refresh_token),
        &[("issued_token_type", ACCESS_TOKEN_TYPE)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn requires_a_jwt_subject_token() {
        assert!(
            check_request(&form(&[
                ("subject_token", "x"),
                ("subject_token_type", JWT_TYPE)
            ]))
            .is_ok()
        );
        for bad in [
            form(&[("subject_token_type", JWT_TYPE)]),
            form(&[("subject_token", ""), ("subject_token_type", JWT_TYPE)]),
            form(&[("subject_token", "x")]),
            form(&[
                ("subject_token", "x"),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:saml2",
                ),
            ]),
            form(&[
                ("subject_token", "x"),
                ("subject_token_type", JWT_TYPE),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ]),
            form(&[
                ("subject_token", "x"),
                ("subject_token_type", JWT_TYPE),
                ("actor_token", "y"),
            ]),
        ] {
            assert_eq!(
                check_request(&bad).unwrap_err().code,
                "invalid_request",
                "{bad:?}"
            );
        }
    }
}
