//! OpenID discovery and JWKS, per issuer: `<issuerURL path>/.well-known/...`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::AppState;

const DISCOVERY: &str = "/.well-known/openid-configuration";
const JWKS: &str = "/.well-known/jwks.json";

/// Serves discovery and JWKS for whichever issuer the path names.
pub async fn serve(State(state): State<Arc<AppState>>, request: Request) -> Response {
    // Only the path picks the issuer: it is unique in the cluster, while
    // the host may come as `Host` or (HTTP/2) `:authority`.
    let path = request.uri().path();
    let (prefix, document) = if let Some(prefix) = path.strip_suffix(DISCOVERY) {
        (prefix, Document::Discovery)
    } else if let Some(prefix) = path.strip_suffix(JWKS) {
        (prefix, Document::Jwks)
    } else {
        return not_found("no such endpoint");
    };
    let Some(issuer) = state.index.issuer_by_path(prefix) else {
        return not_found("no issuer is served at this path");
    };
    match document {
        Document::Jwks => match state.index.keyring(&issuer) {
            Some(keyring) => cached(Json(keyring.jwks()).into_response()),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "the issuer has no keys yet" })),
            )
                .into_response(),
        },
        Document::Discovery => {
            let iss = issuer.settings.issuer_url.trim_end_matches('/');
            let base = state.public_url.trim_end_matches('/');
            cached(
                Json(json!({
                    "issuer": issuer.settings.issuer_url,
                    "jwks_uri": format!("{iss}{JWKS}"),
                    "token_endpoint": format!("{base}/oauth/token"),
                    "introspection_endpoint": format!("{base}/oauth/introspect"),
                    "revocation_endpoint": format!("{base}/oauth/revoke"),
                    "userinfo_endpoint": format!("{base}/oauth/userinfo"),
                    "grant_types_supported": [
                        "client_credentials",
                        "refresh_token",
                        "urn:ietf:params:oauth:grant-type:token-exchange"
                    ],
                    "response_types_supported": ["token"],
                    "subject_types_supported": ["public"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "id_token_signing_alg_values_supported": [issuer.settings.algorithm().as_str()],
                    "scopes_supported": issuer.settings.allowed_scopes.clone().unwrap_or_default(),
                }))
                .into_response(),
            )
        }
    }
}

enum Document {
    Discovery,
    Jwks,
}

/// Verifiers may cache keys briefly; a rotation adds the new key well before
/// it signs anything that outlives the cache.
fn cached(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=60"),
    );
    response
}

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": why }))).into_response()
}
