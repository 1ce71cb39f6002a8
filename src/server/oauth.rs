//! OAuth 2.0 errors (RFC 6749 §5.2) and client authentication (§2.3.1).

use std::collections::HashMap;

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde_json::json;

use super::index::Index;
use crate::{
    api::AppRegistration,
    token::{fingerprint, same_fingerprint},
};

/// An RFC 6749 error response. The description is for people and never
/// carries a token or secret.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    pub fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": self.code, "error_description": self.description })),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read: the connection cannot be reused.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tokensmith\""),
            );
        }
        response
    }
}

/// Authenticates the calling client by `client_secret_basic` or
/// `client_secret_post` (exactly one of them), against the hash of its
/// current secret or, during the grace period, of its previous one.
pub fn authenticate_client(
    index: &Index,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<std::sync::Arc<AppRegistration>, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    let posted = form.get("client_id").zip(form.get("client_secret"));
    let (client_id, secret) = match (basic, posted) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not both",
            ));
        }
        (Some(encoded), None) => decode_basic(encoded)?,
        (None, Some((id, secret))) => (id.clone(), secret.clone()),
        (None, None) => {
            return Err(OAuthError::invalid_client(
                "client authentication is required",
            ));
        }
    };
    let rejected = || OAuthError::invalid_client("unknown client or wrong secret");
    let app = index.app(&client_id).ok_or_else(rejected)?;
    let status = app.status.as_ref().ok_or_else(rejected)?;
    let presented = fingerprint(&secret);
    let now = k8s_openapi::jiff::Timestamp::now();
    let current = status
        .client_secret_hash
        .as_deref()
        .is_some_and(|h| same_fingerprint(h, &presented));
    let previous = status
        .previous_client_secret_hash
        .as_deref()
        .is_some_and(|h| same_fingerprint(h, &presented))
        && status
            .previous_client_secret_expires_at
            .as_ref()
            .is_some_and(|until| until.0 > now);
    if current || previous {
        Ok(app)
    } else {
        Err(rejected())
    }
}

/// `Basic base64(urlencode(id):urlencode(secret))`.
fn decode_basic(encoded: &str) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError::invalid_client("malformed Basic authorization header");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let decode = |s: &str| {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok((decode(id), decode(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_credentials_with_url_encoding() {
        let header = base64::engine::general_purpose::STANDARD.encode("my%20id:s%3Acret");
        assert_eq!(
            decode_basic(&header).unwrap(),
            ("my id".into(), "s:cret".into())
        );
        assert!(decode_basic("%%%").is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(decode_basic(&no_colon).is_err());
    }

    #[test]
    fn errors_render_as_rfc6749_json() {
        let response = OAuthError::invalid_client("nope").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
