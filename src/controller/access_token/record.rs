//! The record of an AccessToken's token (its status, repeated in the
//! Secret's annotations) and what a token minted from a spec carries: pure
//! functions of the spec, the issuer and the time.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use serde::Serialize;

use crate::{
    api::{
        AccessToken, AccessTokenSpec, AccessTokenStatus, ExpiryPolicy, IssuerSettings,
        MintedClaims, TokenFormat,
    },
    token::{
        TimingPolicy, fingerprint,
        policy::{self, Refusal, Request},
    },
};

pub use crate::token::policy::default_subject;

/// Annotations on the token's Secret. They say which token the Secret holds,
/// for people and for the reconciler's "is this still our token" check; the
/// record itself is the status, which tenants cannot write.
pub mod annotation {
    /// Those written for people only: the reconciler never reads them, so
    /// the cache of managed Secrets leaves them out.
    pub const FOR_PEOPLE: &[&str] = &[ISSUED_AT, EXPIRES_AT, KEY_ID, REVISION, SPEC_HASH];

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

/// Drops from a token Secret's cached metadata what no reconcile reads: the
/// annotations written for people only, and its labels (a token Secret is
/// known by its owner reference; its template's labels by their hash). A
/// label map costs over half a kibibyte per Secret in the cache. Other
/// managed Secrets are left alone: a refresh chain's labels name its client
/// and its `tokensmith.dev/expires-at` is its record.
pub fn leave_out_of_cache(meta: &mut ObjectMeta) {
    let is_token_secret = meta
        .labels
        .as_ref()
        .is_some_and(|labels| labels.contains_key(ACCESS_TOKEN_LABEL));
    if !is_token_secret {
        return;
    }
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| !annotation::FOR_PEOPLE.contains(&key.as_str()));
    }
}

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

/// The name of the Secret the token is kept in.
pub fn secret_name(token: &AccessToken) -> String {
    token
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| kube::ResourceExt::name_any(token))
}

/// The timing policy of a spec; `Err` names a duration or time that does
/// not parse (or that the operator cannot represent).
pub fn timing_policy(spec: &AccessTokenSpec) -> Result<TimingPolicy, String> {
    let parse = |d: &Option<crate::api::Duration>| d.as_ref().map(|d| d.to_std()).transpose();
    Ok(TimingPolicy {
        lifetime: parse(&spec.lifetime).map_err(|e| e.to_string())?,
        expires_at: spec.expires_at.as_ref().map(|t| t.parse()).transpose()?,
        renew_before: parse(&spec.renew_before).map_err(|e| e.to_string())?,
        renew_before_percentage: spec.renew_before_percentage.map(|p| p.clamp(1, 90) as u32),
        renew: spec.on_expiry() == ExpiryPolicy::Rotate,
    })
}

/// What of a spec the issuer's policy refuses; `None` when it allows all
/// of it. The subject judged is the one the token would carry (the default
/// one included).
pub fn policy_violation(
    spec: &AccessTokenSpec,
    issuer: &IssuerSettings,
    namespace: &str,
    name: &str,
) -> Option<Refusal> {
    let subject = (!spec.is_userless()).then(|| {
        spec.subject
            .clone()
            .unwrap_or_else(|| default_subject(namespace, name))
    });
    let request = Request {
        scopes: &spec.scopes,
        subject: subject.as_deref(),
        audiences: policy::audiences(&spec.audiences, issuer),
        claims: spec
            .claims
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect(),
    };
    policy::refusal(issuer, namespace, &request)
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
        audiences: policy::audiences(&spec.audiences, issuer),
        claims: spec.claims.as_ref(),
        app: spec.app_ref.as_ref().map(|a| a.name.as_str()),
        lifetime: spec.lifetime.as_ref().map(|d| d.as_str()),
        expires_at: spec.expires_at.as_ref().map(|t| t.to_string()),
    };
    fingerprint(&serde_json::to_string(&shape).expect("serializes"))
}

/// Hash of the Secret's labels and annotations from `secretTemplate`.
pub fn template_hash(spec: &AccessTokenSpec) -> String {
    fingerprint(&serde_json::to_string(&spec.secret_template).expect("serializes"))
}

/// What a token minted now from `spec` carries.
pub fn minted_claims(
    spec: &AccessTokenSpec,
    issuer: &IssuerSettings,
    namespace: &str,
    name: &str,
    client_id: Option<String>,
) -> MintedClaims {
    MintedClaims {
        issuer_url: issuer.issuer_url.clone(),
        subject: (!spec.is_userless()).then(|| {
            spec.subject
                .clone()
                .unwrap_or_else(|| default_subject(namespace, name))
        }),
        scopes: spec.scopes.clone(),
        audiences: policy::audiences(&spec.audiences, issuer).to_vec(),
        claims: spec.claims.clone().unwrap_or_default(),
        client_id,
    }
}

/// The current token of an AccessToken, as the operator recorded it in the
/// status. The Secret's annotations repeat it for people and for telling
/// whether the Secret still holds this token; they are never read back as
/// the record, since the Secret's namespace belongs to a tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedToken {
    pub token_id: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub key_id: Option<String>,
    pub token_hash: String,
    pub revision: i64,
    pub spec_hash: String,
    pub minted: MintedClaims,
}

impl RecordedToken {
    /// The record of the current token in `status`; `None` when there is
    /// none or it is incomplete.
    pub fn from_status(status: &AccessTokenStatus) -> Option<Self> {
        Some(Self {
            token_id: status.token_id.clone()?,
            issued_at: status.issued_at.as_ref()?.0,
            expires_at: status.expires_at.as_ref()?.0,
            key_id: status.key_id.clone(),
            token_hash: status.token_hash.clone()?,
            revision: status.revision.unwrap_or(1),
            spec_hash: status.spec_hash.clone()?,
            minted: status.minted.clone()?,
        })
    }

    /// The Secret's annotations describing this token, with `template_hash`.
    pub fn annotations(&self, template_hash: &str) -> BTreeMap<String, String> {
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
            (
                annotation::TEMPLATE_HASH.to_string(),
                template_hash.to_string(),
            ),
        ]);
        if let Some(kid) = &self.key_id {
            a.insert(annotation::KEY_ID.to_string(), kid.clone());
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
    fn the_issuer_policy_judges_scopes_subjects_audiences_and_claims() {
        let confined: IssuerSettings = serde_json::from_value(serde_json::json!({
            "issuerURL": "https://tokens.example/default",
            "allowedScopes": ["read_*", "scenarios:*"],
            "allowedSubjects": ["system:accesstoken:${namespace}:*", "system:serviceaccount:${namespace}:*"],
            "allowedAudiences": ["api.example", "*.team-a.example"],
        }))
        .unwrap();
        let open: IssuerSettings =
            serde_json::from_value(serde_json::json!({ "issuerURL": "https://open.example" }))
                .unwrap();
        let with = |extra: serde_json::Value| -> AccessTokenSpec {
            let mut spec = serde_json::json!({ "scopes": ["read_scenarios"] });
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            serde_json::from_value(spec).unwrap()
        };
        // (spec, issuer, the words the refusal must hold, or None when allowed)
        let cases: Vec<(AccessTokenSpec, &IssuerSettings, Option<&str>)> = vec![
            (with(serde_json::json!({})), &confined, None),
            (
                with(serde_json::json!({ "scopes": ["admin"] })),
                &confined,
                Some("scope \"admin\""),
            ),
            (
                with(serde_json::json!({ "subject": "system:serviceaccount:team-a:builder" })),
                &confined,
                None,
            ),
            (
                with(serde_json::json!({ "subject": "system:accesstoken:team-b:victim" })),
                &confined,
                Some("allowedSubjects"),
            ),
            (
                with(serde_json::json!({ "subject": "system:serviceaccount:kube-system:admin" })),
                &confined,
                Some("allowedSubjects"),
            ),
            (
                with(serde_json::json!({ "userless": true })),
                &confined,
                None,
            ),
            (
                with(serde_json::json!({ "audiences": ["https://kubernetes.default.svc"] })),
                &confined,
                Some("allowedAudiences"),
            ),
            (
                with(serde_json::json!({ "audiences": ["x.team-a.example"] })),
                &confined,
                None,
            ),
            (
                with(serde_json::json!({ "claims": { "team": "a" } })),
                &confined,
                None,
            ),
            (
                with(serde_json::json!({ "claims": { "groups": "system:masters" } })),
                &confined,
                Some("\"groups\""),
            ),
            (
                with(serde_json::json!({ "claims": { "email": "ceo@example.com" } })),
                &open,
                Some("allowedClaims"),
            ),
            (
                with(serde_json::json!({ "subject": "anyone", "scopes": ["anything"] })),
                &open,
                None,
            ),
        ];
        for (spec, issuer, refusal) in cases {
            let verdict = policy_violation(&spec, issuer, "team-a", "ci");
            match (refusal, &verdict) {
                (None, None) => {}
                (Some(words), Some(refusal)) if refusal.to_string().contains(words) => {}
                _ => panic!("{spec:?}: expected {refusal:?}, got {verdict:?}"),
            }
        }
        let mut named: IssuerSettings = open.clone();
        named.allowed_claims = Some(vec!["email".into()]);
        let email = with(serde_json::json!({ "claims": { "email": "ceo@example.com" } }));
        assert_eq!(policy_violation(&email, &named, "team-a", "ci"), None);
    }

    #[test]
    fn claims_default_subject_audience_and_userless() {
        let issued_at = "2026-01-01T00:00:00Z".parse().unwrap();
        let expires_at = "2026-01-02T00:00:00Z".parse().unwrap();
        let minted = minted_claims(&spec(), &issuer(), "team-a", "ci", None);
        let c = policy::claims(&minted, "jti-1", issued_at, expires_at);
        assert_eq!(c.sub, "system:accesstoken:team-a:ci");
        assert_eq!(c.aud, vec!["api.example"]);
        assert_eq!(c.scope, "read_scenarios scenarios:write");
        assert_eq!(c.exp - c.iat, 86_400);
        let mut userless = spec();
        userless.userless = Some(true);
        let minted = minted_claims(&userless, &issuer(), "team-a", "ci", None);
        assert_eq!(minted.subject, None);
        assert_eq!(
            policy::claims(&minted, "jti-2", issued_at, expires_at).sub,
            "jti-2"
        );
    }

    #[test]
    fn a_time_past_the_end_of_the_timestamp_type_is_judged_not_fatal() {
        // Admitted before the CRD bounded it: the object still decodes (one
        // bad object must not make the list of AccessTokens unreadable), and
        // the decision refuses it with words.
        let token: AccessToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokensmith.dev/v1alpha1",
            "kind": "AccessToken",
            "metadata": { "name": "far", "namespace": "team-a" },
            "spec": { "expiresAt": "9999-12-31T23:59:59Z" },
        }))
        .expect("decodes");
        let refusal = timing_policy(&token.spec).unwrap_err();
        assert!(refusal.contains("9999-12-31T23:59:59Z"), "{refusal}");
    }

    #[test]
    fn the_record_comes_from_a_complete_status_only() {
        let minted = minted_claims(&spec(), &issuer(), "team-a", "ci", None);
        let status = AccessTokenStatus {
            token_id: Some("id".into()),
            issued_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            )),
            expires_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-02T00:00:00Z".parse().unwrap(),
            )),
            token_hash: Some("sha256:00".into()),
            revision: Some(3),
            spec_hash: Some("sha256:11".into()),
            minted: Some(minted.clone()),
            ..AccessTokenStatus::default()
        };
        let record = RecordedToken::from_status(&status).unwrap();
        assert_eq!((record.revision, &record.minted), (3, &minted));
        let annotations = record.annotations("sha256:22");
        assert_eq!(annotations[annotation::TOKEN_HASH], "sha256:00");
        let before_the_record = AccessTokenStatus {
            minted: None,
            ..status
        };
        assert_eq!(RecordedToken::from_status(&before_the_record), None);
    }

    #[test]
    fn only_token_secrets_lose_their_labels_and_annotations_for_people() {
        let secret = |labels: serde_json::Value| -> ObjectMeta {
            serde_json::from_value(serde_json::json!({
                "name": "s", "labels": labels,
                "annotations": {
                    annotation::EXPIRES_AT: "2030-01-01T00:00:00Z",
                    annotation::TOKEN_ID: "t1",
                },
            }))
            .unwrap()
        };
        let mut token = secret(serde_json::json!({ ACCESS_TOKEN_LABEL: "ci" }));
        leave_out_of_cache(&mut token);
        let kept: Vec<&String> = token.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(kept, [annotation::TOKEN_ID]);
        assert_eq!(token.labels, None);
        let mut chain = secret(serde_json::json!({ "tokensmith.dev/refresh-chain-of": "c1" }));
        leave_out_of_cache(&mut chain);
        assert_eq!(
            chain.annotations.unwrap().len(),
            2,
            "a chain's expiry is its record"
        );
        assert!(chain.labels.is_some(), "a chain's labels name its client");
    }
}
