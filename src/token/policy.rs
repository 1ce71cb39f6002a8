//! The token rules both token makers follow (the AccessToken reconciler and
//! the token endpoint): what an issuer's policy allows, which audiences a
//! token carries by default, and the claims a minted token is signed with.

use std::fmt;

use k8s_openapi::jiff::Timestamp;

use super::AccessTokenClaims;
use crate::api::{IDENTITY_CLAIMS, IssuerSettings, MintedClaims};

/// The subject of an AccessToken's token that names none.
pub fn default_subject(namespace: &str, name: &str) -> String {
    format!("system:accesstoken:{namespace}:{name}")
}

/// The audiences a token carries: those asked for, else the issuer's.
pub fn audiences<'a>(asked: &'a [String], issuer: &'a IssuerSettings) -> &'a [String] {
    if asked.is_empty() {
        issuer.audiences()
    } else {
        asked
    }
}

/// What a token would carry, as far as an issuer's policy judges it.
pub struct Request<'a> {
    pub scopes: &'a [String],
    /// `None` for a token whose subject the policy does not judge (userless).
    pub subject: Option<&'a str>,
    pub audiences: &'a [String],
    /// The names of the private claims.
    pub claims: Vec<&'a str>,
}

/// What of a request an issuer's policy refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Scope {
        scope: String,
        allowed: String,
    },
    Subject {
        subject: String,
        allowed: String,
        namespace: String,
    },
    Audience {
        audience: String,
        allowed: String,
    },
    Claim {
        claim: String,
        allowed: String,
    },
    /// A claim verifiers read as an identity, without `allowedClaims` naming it.
    IdentityClaim {
        claim: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scope { scope, allowed } => {
                write!(
                    f,
                    "scope {scope:?} is not allowed (allowedScopes: {allowed})"
                )
            }
            Self::Subject {
                subject,
                allowed,
                namespace,
            } => write!(
                f,
                "subject {subject:?} is not allowed (allowedSubjects: {allowed}, with ${{namespace}} = {namespace})"
            ),
            Self::Audience { audience, allowed } => {
                write!(
                    f,
                    "audience {audience:?} is not allowed (allowedAudiences: {allowed})"
                )
            }
            Self::Claim { claim, allowed } => {
                write!(
                    f,
                    "claim {claim:?} is not allowed (allowedClaims: {allowed})"
                )
            }
            Self::IdentityClaim { claim } => write!(
                f,
                "claim {claim:?} carries an identity to verifiers and is allowed only when the issuer's allowedClaims names it"
            ),
        }
    }
}

/// The first thing `request` carries that `issuer`'s policy refuses for a
/// token of `namespace`; `None` when it allows all of it.
pub fn refusal(issuer: &IssuerSettings, namespace: &str, request: &Request) -> Option<Refusal> {
    let refused = |patterns: &Option<Vec<String>>, values: &[String]| {
        let patterns = patterns.as_deref()?;
        let value = IssuerSettings::first_unmatched(Some(patterns), values, namespace)?;
        Some((value.clone(), patterns.join(", ")))
    };
    if let Some((scope, allowed)) = refused(&issuer.allowed_scopes, request.scopes) {
        return Some(Refusal::Scope { scope, allowed });
    }
    if let Some(subject) = request.subject
        && let Some((subject, allowed)) = refused(&issuer.allowed_subjects, &[subject.to_string()])
    {
        let namespace = namespace.to_string();
        return Some(Refusal::Subject {
            subject,
            allowed,
            namespace,
        });
    }
    if let Some((audience, allowed)) = refused(&issuer.allowed_audiences, request.audiences) {
        return Some(Refusal::Audience { audience, allowed });
    }
    let claims: Vec<String> = request.claims.iter().map(|c| c.to_string()).collect();
    if let Some((claim, allowed)) = refused(&issuer.allowed_claims, &claims) {
        return Some(Refusal::Claim { claim, allowed });
    }
    if issuer.allowed_claims.is_none()
        && let Some(claim) = claims
            .iter()
            .find(|c| IDENTITY_CLAIMS.contains(&c.as_str()))
    {
        return Some(Refusal::IdentityClaim {
            claim: claim.clone(),
        });
    }
    None
}

/// The JWT claims of the token `token_id`, valid from `issued_at` to
/// `expires_at`, carrying `minted`.
pub fn claims(
    minted: &MintedClaims,
    token_id: &str,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: minted.issuer_url.clone(),
        sub: minted.subject_of(token_id),
        aud: minted.audiences.clone(),
        exp: expires_at.as_second(),
        iat: issued_at.as_second(),
        nbf: issued_at.as_second(),
        jti: token_id.to_string(),
        scope: minted.scopes.join(" "),
        client_id: minted.client_id.clone(),
        extra: minted
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(json: serde_json::Value) -> IssuerSettings {
        serde_json::from_value(json).unwrap()
    }

    /// (scopes, subject, audiences, claims, issuer, expected refusal kind)
    type Row<'a> = (
        &'a [&'a str],
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
        &'a IssuerSettings,
        &'a str,
    );

    #[test]
    fn the_policy_judges_scopes_subjects_audiences_and_claims() {
        let confined = issuer(serde_json::json!({
            "issuerURL": "https://tokens.example/default",
            "allowedScopes": ["read_*", "scenarios:*"],
            "allowedSubjects": ["system:accesstoken:${namespace}:*"],
            "allowedAudiences": ["api.example", "*.team-a.example"],
        }));
        let open = issuer(serde_json::json!({ "issuerURL": "https://open.example" }));
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let rows: Vec<Row> = vec![
            (
                &["read_x"],
                Some("system:accesstoken:team-a:ci"),
                &["api.example"],
                &[],
                &confined,
                "none",
            ),
            (&["admin"], None, &[], &[], &confined, "Scope"),
            (
                &[],
                Some("system:accesstoken:team-b:ci"),
                &[],
                &[],
                &confined,
                "Subject",
            ),
            (&[], None, &[], &[], &confined, "none"),
            (
                &[],
                None,
                &["https://kubernetes.default.svc"],
                &[],
                &confined,
                "Audience",
            ),
            (&[], None, &["x.team-a.example"], &[], &confined, "none"),
            (&[], None, &[], &["groups"], &confined, "IdentityClaim"),
            (&[], None, &[], &["team"], &open, "none"),
            (&["anything"], Some("anyone"), &["any"], &[], &open, "none"),
        ];
        for (scopes, subject, audiences, claims, issuer, expected) in rows {
            let (scopes, audiences) = (strings(scopes), strings(audiences));
            let request = Request {
                scopes: &scopes,
                subject,
                audiences: &audiences,
                claims: claims.to_vec(),
            };
            let kind = match refusal(issuer, "team-a", &request) {
                None => "none".to_string(),
                Some(r) => format!("{r:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_string(),
            };
            assert_eq!(
                kind, expected,
                "{scopes:?} {subject:?} {audiences:?} {claims:?}"
            );
        }
        let mut named = open.clone();
        named.allowed_claims = Some(vec!["email".into()]);
        let request = Request {
            scopes: &[],
            subject: None,
            audiences: &[],
            claims: vec!["email", "team"],
        };
        assert!(
            matches!(refusal(&named, "team-a", &request), Some(Refusal::Claim { claim, .. }) if claim == "team")
        );
    }

    #[test]
    fn audiences_default_to_the_issuers() {
        let with_default = issuer(serde_json::json!({
            "issuerURL": "https://tokens.example", "audiences": ["api.example"],
        }));
        assert_eq!(audiences(&[], &with_default), ["api.example"]);
        let own = vec!["own".to_string()];
        assert_eq!(audiences(&own, &with_default), ["own"]);
    }
}
