//! The OAuth 2.0 endpoints: token, introspection (RFC 7662), revocation
//! (RFC 7009), token info and userinfo.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form, Json,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;
use tracing::info;

use super::{
    AppState, exchange,
    inspect::{ActiveToken, inspect},
    mint::{granted_scopes, mint},
    oauth::{OAuthError, authenticate_client},
    refresh::{self, token_response},
};
use crate::{api::AppType, cluster::revocations::RevokedToken, token::REFRESH_TOKEN_PREFIX};

/// The form body as sent: pairs in order, repeats kept, so that a repeat
/// can be refused rather than silently resolved.
type Params = Result<Form<Vec<(String, String)>>, FormRejection>;

/// The form body, or the RFC 6749 error for a malformed or oversized one,
/// or one that repeats a parameter (RFC 6749 §3.1: a parameter must not be
/// sent more than once; taking either copy would be a guess).
fn form(params: Params) -> Result<HashMap<String, String>, OAuthError> {
    match params {
        Ok(Form(pairs)) => {
            let mut map = HashMap::with_capacity(pairs.len());
            for (name, value) in pairs {
                if map.contains_key(&name) {
                    return Err(OAuthError::invalid_request(format!(
                        "parameter {name:?} is sent more than once; send each parameter once (RFC 6749 section 3.1)"
                    )));
                }
                map.insert(name, value);
            }
            Ok(map)
        }
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is too large",
            ))
        }
        Err(rejection) => Err(OAuthError::invalid_request(format!(
            "the body must be application/x-www-form-urlencoded: {}",
            rejection.body_text()
        ))),
    }
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn now() -> i64 {
    Timestamp::now().as_second()
}

/// `POST /oauth/token`.
pub async fn token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let grant = params
        .as_ref()
        .ok()
        .and_then(|Form(pairs)| pairs.iter().find(|(name, _)| name == "grant_type"))
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    match issue(&state, &headers, params).await {
        Ok(body) => {
            state.metrics.token_request(&grant, "ok");
            no_store(Json(body).into_response())
        }
        Err(error) => {
            state.metrics.token_request(&grant, error.code);
            error.into_response()
        }
    }
}

async fn issue(
    state: &AppState,
    headers: &HeaderMap,
    params: Params,
) -> Result<serde_json::Value, OAuthError> {
    let form = form(params)?;
    let grant = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let app = authenticate_client(&state.index, headers, &form)?;
    let app_type = app.spec.app_type();
    let for_type = |wanted: AppType, grant: &str| {
        if app_type == wanted {
            Ok(())
        } else {
            Err(OAuthError::unauthorized_client(format!(
                "{grant} is for apps of type {wanted:?}; this app is {app_type:?}"
            )))
        }
    };
    match grant.as_str() {
        "client_credentials" => {
            for_type(AppType::Native, "client_credentials")?;
            let scopes = granted_scopes(&app.spec.scopes, form.get("scope"))?;
            let client_id = app.uid().unwrap_or_default();
            let minted = mint(&state.index, &app, client_id.clone(), &scopes)?;
            info!(client_id = %client_id, jti = %minted.claims.jti, "token issued by client_credentials");
            Ok(token_response(&minted, None, &[]))
        }
        "refresh_token" => {
            for_type(AppType::Web, "refresh_token")?;
            let token = form
                .get("refresh_token")
                .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
            refresh::refresh(state, &app, token, form.get("scope")).await
        }
        exchange::GRANT_TYPE => {
            for_type(AppType::Web, "token exchange")?;
            exchange::exchange(state, &app, &form).await
        }
        other => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

/// `POST /oauth/introspect` (RFC 7662), for authenticated clients.
pub async fn introspect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let result = (|| {
        let form = form(params)?;
        let app = authenticate_client(&state.index, &headers, &form)?;
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        // A client learns about the tokens of its own issuer only.
        let own_issuer = state.index.issuer_url_of(&app);
        let active = inspect(&state.index, token, now())
            .filter(|active| own_issuer.as_deref() == Some(active.iss.as_str()));
        Ok::<_, OAuthError>(match active {
            Some(active) => introspection(&active),
            None => json!({ "active": false }),
        })
    })();
    match result {
        Ok(body) => no_store(Json(body).into_response()),
        Err(error) => error.into_response(),
    }
}

fn introspection(active: &ActiveToken) -> serde_json::Value {
    json!({
        "active": true,
        "scope": active.scope.join(" "),
        "client_id": active.client_id,
        "sub": active.sub,
        "exp": active.exp,
        "iat": active.iat,
        "nbf": active.iat,
        "iss": active.iss,
        "aud": active.aud,
        "jti": active.jti,
        "token_type": "Bearer",
    })
}

/// `POST /oauth/revoke` (RFC 7009): a client may revoke the tokens issued to
/// it; anything else is answered 200 and left alone, as the RFC asks.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let form = match form(params) {
        Ok(form) => form,
        Err(error) => return error.into_response(),
    };
    let app = match authenticate_client(&state.index, &headers, &form) {
        Ok(app) => app,
        Err(error) => return error.into_response(),
    };
    let Some(token) = form.get("token") else {
        return OAuthError::invalid_request("token is required").into_response();
    };
    if token.starts_with(REFRESH_TOKEN_PREFIX) {
        return match refresh::revoke(&state, &app, token).await {
            Ok(()) => no_store(StatusCode::OK.into_response()),
            Err(error) => error.into_response(),
        };
    }
    if let Some(active) = inspect(&state.index, token, now())
        && active.client_id.is_some()
        && active.client_id == app.uid()
    {
        let revoked = RevokedToken {
            issuer_url: active.iss.clone(),
            token_id: active.jti.clone(),
            expires_at: Timestamp::from_second(active.exp).unwrap_or(Timestamp::MAX),
            namespace: app.namespace(),
        };
        if let Err(error) = state.revocations.revoke(&[revoked], Timestamp::now()).await {
            return OAuthError::server_error(format!(
                "the revocation could not be recorded: {error}"
            ))
            .into_response();
        }
        info!(client_id = ?active.client_id, jti = %active.jti, "token revoked by its client");
    }
    no_store(StatusCode::OK.into_response())
}

/// An RFC 6750 error for a missing or inactive bearer token.
struct Unauthorized {
    code: &'static str,
    description: &'static str,
}

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": self.code, "error_description": self.description })),
        )
            .into_response();
        let challenge = format!("Bearer realm=\"tokensmith\", error=\"{}\"", self.code);
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The active token in `Authorization: Bearer`, or the RFC 6750 error.
fn bearer(state: &AppState, headers: &HeaderMap) -> Result<ActiveToken, Unauthorized> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or(Unauthorized {
            code: "invalid_request",
            description: "a Bearer token is required",
        })?;
    inspect(&state.index, token.trim(), now()).ok_or(Unauthorized {
        code: "invalid_token",
        description: "the token is not active",
    })
}

/// `GET /oauth/token/info`: what the bearer token is.
pub async fn token_info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match bearer(&state, &headers) {
        Ok(active) => no_store(
            Json(json!({
                "resource_owner_id": active.sub,
                "scope": active.scope,
                "expires_in": (active.exp - now()).max(0),
                "application": { "uid": active.client_id },
                "created_at": active.iat,
            }))
            .into_response(),
        ),
        Err(unauthorized) => unauthorized.into_response(),
    }
}

/// `GET /oauth/userinfo`: the subject, with email and name when the token's
/// scopes allow them and its claims carry them.
pub async fn userinfo(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match bearer(&state, &headers) {
        Ok(active) => {
            let mut body = json!({ "sub": active.sub });
            let has = |s: &str| active.scope.iter().any(|x| x == s);
            if has("email")
                && let Some(email) = active.extra.get("email")
            {
                body["email"] = email.clone();
            }
            if has("profile")
                && let Some(name) = active.extra.get("name")
            {
                body["name"] = name.clone();
            }
            no_store(Json(body).into_response())
        }
        Err(unauthorized) => unauthorized.into_response(),
    }
}
