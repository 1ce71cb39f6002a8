//! What an AccessToken's Secret and status should be: pure functions of the
//! spec, the issuer, what the Secret's metadata says, and the time.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp};
use serde::Serialize;

use crate::{
    api::{AccessToken, AccessTokenSpec, ExpiryPolicy, IssuerSettings, TokenFormat},
    token::{AccessTokenClaims, TimingPolicy, fingerprint},
};

/// Annotations on the token's Secret. They record what the Secret holds, so
/// that the status can always be derived from the Secret's metadata, even
/// when a status write was lost.
pub mod annotation {
    pub const TOKEN_ID: &str = "tokensmith.dev/token-id";
    pub const ISSUED_AT: &str = "tokensmith.dev/issued-at";
    pub const EXPIRES_AT: &str = "tokensmith.dev/expires-at";
    pub const KEY_ID: &str = "tokensmith.dev/key-id";
    pub const TOKEN_HASH: &str = "tokensmith.dev/token-hash";
    pub const REVISION: &str = "tokensmith.dev/revision";
    pub const SPEC_HASH: &str = "tokensmith.dev/spec-hash";
    pub const TEMPLATE_HASH: &str = "tokensmith.dev/template-hash";
}

/// Label naming the AccessToken a Secret belongs to.
pub const ACCESS_TOKEN_LABEL: &str = "tokensmith.dev/access-token";

/// The Secret data keys (API.md).
pub mod data {
    pub const TOKEN: &str = "token";
    pub const TOKEN_TYPE: &str = "token-type";
    pub const EXPIRES_AT: &str = "expires-at";
    pub const TOKEN_ID: &str = "token-id";
    pub const ISSUER: &str = "issuer";
    pub const SCOPES: &str = "scopes";
    pub const ALL: &[&str] = &[TOKEN, TOKEN_TYPE, EXPIRES_AT, TOKEN_ID, ISSUER, SCOPES];
}

/// The subject of a token that names none.
pub fn default_subject(namespace: &str, name: &str) -> String {
    format!("system:accesstoken:{namespace}:{name}")
}

/// The name of the Secret the token is kept in.
pub fn secret_name(token: &AccessToken) -> String {
    token
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| kube::ResourceExt::name_any(token))
}

/// The audiences a token carries: its own, else the issuer's.
pub fn audiences<'a>(spec: &'a AccessTokenSpec, issuer: &'a IssuerSettings) -> &'a [String] {
    if spec.audiences.is_empty() {
        issuer.audiences()
    } else {
        &spec.audiences
    }
}

/// The timing policy of a spec; `Err` names a duration that does not parse.
pub fn timing_policy(spec: &AccessTokenSpec) -> Result<TimingPolicy, String> {
    let parse = |d: &Option<crate::api::Duration>| d.as_ref().map(|d| d.to_std()).transpose();
    Ok(TimingPolicy {
        lifetime: parse(&spec.lifetime).map_err(|e| e.to_string())?,
        expires_at: spec.expires_at.as_ref().map(|t| t.0),
        renew_before: parse(&spec.renew_before).map_err(|e| e.to_string())?,
        renew_before_percentage: spec.renew_before_percentage.map(|p| p.clamp(1, 99) as u32),
        renew: spec.on_expiry() == ExpiryPolicy::Rotate,
    })
}

/// The first requested scope the issuer does not allow, if any.
pub fn disallowed_scope<'a>(spec: &'a AccessTokenSpec, issuer: &IssuerSettings) -> Option<&'a str> {
    let patterns = issuer.allowed_scopes.as_ref()?;
    spec.scopes
        .iter()
        .find(|scope| {
            !patterns
                .iter()
                .any(|p| wildmatch::WildMatch::new(p).matches(scope))
        })
        .map(String::as_str)
}

/// What a token is minted from. Any change here mints a new token; anything
/// else in the spec (secretTemplate, renewBefore, ...) does not.
#[derive(Serialize)]
struct TokenShape<'a> {
    issuer_url: &'a str,
    format: TokenFormat,
    prefix: Option<&'a str>,
    subject: Option<&'a str>,
    userless: bool,
    scopes: &'a [String],
    audiences: &'a [String],
    claims: Option<&'a BTreeMap<String, String>>,
    app: Option<&'a str>,
    lifetime: Option<&'a str>,
    expires_at: Option<String>,
}

/// Hash of everything a token is minted from.
pub fn spec_hash(spec: &AccessTokenSpec, issuer: &IssuerSettings) -> String {
    let shape = TokenShape {
        issuer_url: &issuer.issuer_url,
        format: spec.format(),
        prefix: spec.prefix.as_deref(),
        subject: spec.subject.as_deref(),
        userless: spec.is_userless(),
        scopes: &spec.scopes,
        audiences: audiences(spec, issuer),
        claims: spec.claims.as_ref(),
        app: spec.app_ref.as_ref().map(|a| a.name.as_str()),
        lifetime: spec.lifetime.as_ref().map(|d| d.as_str()),
        expires_at: spec.expires_at.as_ref().map(|t| t.0.to_string()),
    };
    fingerprint(&serde_json::to_string(&shape).expect("serializes"))
}

/// Hash of the Secret's labels and annotations from `secretTemplate`.
pub fn template_hash(spec: &AccessTokenSpec) -> String {
    fingerprint(&serde_json::to_string(&spec.secret_template).expect("serializes"))
}

/// The claims of a JWT minted now.
pub struct ClaimsInput<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub token_id: &'a str,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub client_id: Option<String>,
}

pub fn claims(
    spec: &AccessTokenSpec,
    issuer: &IssuerSettings,
    input: ClaimsInput<'_>,
) -> AccessTokenClaims {
    let sub = if spec.is_userless() {
        input.token_id.to_string()
    } else {
        spec.subject
            .clone()
            .unwrap_or_else(|| default_subject(input.namespace, input.name))
    };
    AccessTokenClaims {
        iss: issuer.issuer_url.clone(),
        sub,
        aud: audiences(spec, issuer).to_vec(),
        exp: input.expires_at.as_second(),
        iat: input.issued_at.as_second(),
        nbf: input.issued_at.as_second(),
        jti: input.token_id.to_string(),
        scope: spec.scopes.join(" "),
        client_id: input.client_id,
        extra: spec
            .claims
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    }
}

/// What the token Secret's annotations say it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedToken {
    pub token_id: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub key_id: Option<String>,
    pub token_hash: String,
    pub revision: i64,
    pub spec_hash: String,
    pub template_hash: Option<String>,
}

impl RecordedToken {
    /// Reads the record from a Secret's metadata; `None` when incomplete.
    pub fn from_meta(meta: &ObjectMeta) -> Option<Self> {
        let a = meta.annotations.as_ref()?;
        let get = |k: &str| a.get(k).cloned();
        Some(Self {
            token_id: get(annotation::TOKEN_ID)?,
            issued_at: get(annotation::ISSUED_AT)?.parse().ok()?,
            expires_at: get(annotation::EXPIRES_AT)?.parse().ok()?,
            key_id: get(annotation::KEY_ID),
            token_hash: get(annotation::TOKEN_HASH)?,
            revision: get(annotation::REVISION)?.parse().ok()?,
            spec_hash: get(annotation::SPEC_HASH)?,
            template_hash: get(annotation::TEMPLATE_HASH),
        })
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (annotation::TOKEN_ID.to_string(), self.token_id.clone()),
            (
                annotation::ISSUED_AT.to_string(),
                self.issued_at.to_string(),
            ),
            (
                annotation::EXPIRES_AT.to_string(),
                self.expires_at.to_string(),
            ),
            (annotation::TOKEN_HASH.to_string(), self.token_hash.clone()),
            (annotation::REVISION.to_string(), self.revision.to_string()),
            (annotation::SPEC_HASH.to_string(), self.spec_hash.clone()),
        ]);
        if let Some(kid) = &self.key_id {
            a.insert(annotation::KEY_ID.to_string(), kid.clone());
        }
        if let Some(hash) = &self.template_hash {
            a.insert(annotation::TEMPLATE_HASH.to_string(), hash.clone());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Duration, SecretTemplate};

    fn issuer() -> IssuerSettings {
        serde_json::from_value(serde_json::json!({
            "issuerURL": "https://tokens.example/default",
            "allowedScopes": ["read_*", "scenarios:*"],
            "audiences": ["api.example"],
        }))
        .unwrap()
    }

    fn spec() -> AccessTokenSpec {
        serde_json::from_value(serde_json::json!({
            "scopes": ["read_scenarios", "scenarios:write"],
        }))
        .unwrap()
    }

    #[test]
    fn token_affecting_changes_change_the_hash_and_others_do_not() {
        let base = spec_hash(&spec(), &issuer());
        let mut scopes = spec();
        scopes.scopes.push("read_more".into());
        assert_ne!(spec_hash(&scopes, &issuer()), base);

        let mut template = spec();
        template.secret_template = Some(SecretTemplate {
            labels: Some([("team".to_string(), "a".to_string())].into()),
            annotations: None,
        });
        template.renew_before = Some(Duration::from("1h"));
        assert_eq!(spec_hash(&template, &issuer()), base);
        assert_ne!(template_hash(&template), template_hash(&spec()));

        let mut other_issuer = issuer();
        other_issuer.issuer_url = "https://elsewhere".into();
        assert_ne!(spec_hash(&spec(), &other_issuer), base);
    }

    #[test]
    fn scopes_are_checked_against_issuer_globs() {
        assert_eq!(disallowed_scope(&spec(), &issuer()), None);
        let mut s = spec();
        s.scopes.push("admin".into());
        assert_eq!(disallowed_scope(&s, &issuer()), Some("admin"));
        let mut open = issuer();
        open.allowed_scopes = None;
        assert_eq!(disallowed_scope(&s, &open), None);
    }

    #[test]
    fn claims_default_subject_audience_and_userless() {
        let input = |id| ClaimsInput {
            namespace: "team-a",
            name: "ci",
            token_id: id,
            issued_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            expires_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            client_id: None,
        };
        let c = claims(&spec(), &issuer(), input("jti-1"));
        assert_eq!(c.sub, "system:accesstoken:team-a:ci");
        assert_eq!(c.aud, vec!["api.example"]);
        assert_eq!(c.scope, "read_scenarios scenarios:write");
        assert_eq!(c.exp - c.iat, 86_400);
        let mut userless = spec();
        userless.userless = Some(true);
        assert_eq!(claims(&userless, &issuer(), input("jti-2")).sub, "jti-2");
    }

    #[test]
    fn recorded_token_round_trips_through_annotations() {
        let record = RecordedToken {
            token_id: "id".into(),
            issued_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            expires_at: "2026-01-02T00:00:00Z".parse().unwrap(),
            key_id: Some("kid".into()),
            token_hash: "sha256:00".into(),
            revision: 3,
            spec_hash: "sha256:11".into(),
            template_hash: None,
        };
        let meta = ObjectMeta {
            annotations: Some(record.annotations()),
            ..ObjectMeta::default()
        };
        assert_eq!(RecordedToken::from_meta(&meta), Some(record));
    }
}
