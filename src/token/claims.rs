//! The claims of an access token (RFC 9068), signing and verifying them.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Header, Validation, jwk::JwkSet};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{SigningKey, jwt_algorithm};
use crate::api::SigningAlgorithm;

/// The JWT `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of an access token (RFC 9068 profile).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "audience")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// Space-separated scopes, as in OAuth 2.0.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Private claims from the AccessToken's `claims`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `aud` is a string when there is one audience and an array otherwise, as
/// most verifiers expect.
mod audience {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
        match aud {
            [one] => s.serialize_str(one),
            many => s.collect_seq(many),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        })
    }
}

impl AccessTokenClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }
}

/// Signs `claims` with `key`: header `typ: at+jwt`, `alg` and `kid` of the
/// key. The same bytes as `jsonwebtoken::encode`, signed with the key
/// parsed once (see `KeyPair`) rather than once per token.
pub fn sign_jwt(claims: &AccessTokenClaims, key: &SigningKey) -> SecretString {
    let mut header = Header::new(jwt_algorithm(key.algorithm));
    header.typ = Some(ACCESS_TOKEN_TYPE.to_string());
    header.kid = Some(key.kid.clone());
    let part = |json: Result<Vec<u8>, serde_json::Error>| {
        URL_SAFE_NO_PAD.encode(json.expect("a header and claims always serialize"))
    };
    let message = format!(
        "{}.{}",
        part(serde_json::to_vec(&header)),
        part(serde_json::to_vec(claims))
    );
    let signature = URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()));
    SecretString::from(format!("{message}.{signature}"))
}

/// Why a JWT was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a JWT: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    #[error("the token names no key id (kid)")]
    NoKeyId,
    #[error("no published key has kid {0}")]
    UnknownKey(String),
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(jsonwebtoken::Algorithm),
    #[error("the token is not an access token: its header typ is {0:?}, not \"at+jwt\"")]
    NotAnAccessToken(Option<String>),
    #[error("the token is not valid: {0}")]
    Invalid(jsonwebtoken::errors::Error),
}

/// Verifies a JWT access token against a JWKS: the header type `at+jwt`
/// (RFC 9068 §2.1, so no other kind of JWT signed by the same key passes),
/// signature by the key its `kid` names, an allowed algorithm matching that
/// key, `iss`, `exp`/`nbf` with `leeway_secs`, and `aud` when `audience` is
/// given.
pub fn verify_jwt(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: Option<&str>,
    leeway_secs: u64,
) -> Result<AccessTokenClaims, VerifyError> {
    let header = jsonwebtoken::decode_header(token).map_err(VerifyError::Malformed)?;
    let typ = header.typ.as_deref().map(str::to_ascii_lowercase);
    if !matches!(typ.as_deref(), Some("at+jwt" | "application/at+jwt")) {
        return Err(VerifyError::NotAnAccessToken(header.typ));
    }
    let allowed = [
        SigningAlgorithm::ES256,
        SigningAlgorithm::RS256,
        SigningAlgorithm::EdDSA,
    ]
    .map(jwt_algorithm);
    if !allowed.contains(&header.alg) {
        return Err(VerifyError::AlgorithmNotAllowed(header.alg));
    }
    let kid = header.kid.ok_or(VerifyError::NoKeyId)?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
    let key_algorithm = jwk
        .common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<jsonwebtoken::Algorithm>().ok());
    if key_algorithm.is_some_and(|a| a != header.alg) {
        return Err(VerifyError::AlgorithmNotAllowed(header.alg));
    }
    let decoding_key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(VerifyError::Invalid)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = leeway_secs;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "iat", "jti"]);
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    jsonwebtoken::decode::<AccessTokenClaims>(token, &decoding_key, &validation)
        .map(|data| data.claims)
        .map_err(VerifyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn claims(now: i64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://tokens.example/issuers/default".into(),
            sub: "system:accesstoken:team-a:ci".into(),
            aud: vec!["api.example".into()],
            exp: now + 3600,
            iat: now,
            nbf: now,
            jti: "abc".into(),
            scope: "read_scenarios scenarios:write".into(),
            client_id: None,
            extra: [("team".to_string(), serde_json::json!("a"))].into(),
        }
    }

    fn jwks(keys: &[&SigningKey]) -> JwkSet {
        JwkSet {
            keys: keys.iter().map(|k| k.public_jwk().clone()).collect(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// A new key of each algorithm, and claims to sign with it.
    fn each_algorithm() -> impl Iterator<Item = (SigningAlgorithm, SigningKey, AccessTokenClaims)> {
        [
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
            SigningAlgorithm::EdDSA,
        ]
        .into_iter()
        .map(|algorithm| {
            let key = SigningKey::generate(algorithm).unwrap();
            (algorithm, key, claims(now()))
        })
    }

    #[test]
    fn signs_and_verifies_with_every_algorithm() {
        for (algorithm, key, claims) in each_algorithm() {
            let token = sign_jwt(&claims, &key);
            let header = jsonwebtoken::decode_header(token.expose_secret()).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
            let verified = verify_jwt(
                token.expose_secret(),
                &jwks(&[&key]),
                &claims.iss,
                Some("api.example"),
                0,
            )
            .unwrap_or_else(|e| panic!("{algorithm:?}: {e}"));
            assert_eq!(verified, claims);
        }
    }

    #[test]
    fn signs_the_bytes_jsonwebtoken_would() {
        for (algorithm, key, claims) in each_algorithm() {
            let mut header = Header::new(jwt_algorithm(algorithm));
            header.typ = Some(ACCESS_TOKEN_TYPE.to_string());
            header.kid = Some(key.kid.clone());
            let library = jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap();
            let ours = sign_jwt(&claims, &key);
            let signed_part = |token: &str| token.rsplit_once('.').unwrap().0.to_string();
            assert_eq!(
                signed_part(ours.expose_secret()),
                signed_part(&library),
                "{algorithm:?}: header and claims"
            );
            // ECDSA signatures are randomized; the other two are not.
            if algorithm != SigningAlgorithm::ES256 {
                assert_eq!(
                    ours.expose_secret(),
                    library,
                    "{algorithm:?}: the whole token"
                );
            }
        }
    }

    #[test]
    fn single_audience_is_a_string_and_several_an_array() {
        let mut c = claims(0);
        assert_eq!(serde_json::to_value(&c).unwrap()["aud"], "api.example");
        c.aud.push("other".into());
        assert_eq!(
            serde_json::to_value(&c).unwrap()["aud"],
            serde_json::json!(["api.example", "other"])
        );
    }

    #[test]
    fn refuses_a_token_signed_by_an_unpublished_key() {
        let signer = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
        let published = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
        let c = claims(now());
        let token = sign_jwt(&c, &signer);
        let err = verify_jwt(token.expose_secret(), &jwks(&[&published]), &c.iss, None, 0);
        assert!(matches!(err, Err(VerifyError::UnknownKey(_))), "{err:?}");
    }

    #[test]
    fn refuses_expired_wrong_issuer_and_wrong_audience() {
        let key = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
        let set = jwks(&[&key]);
        let mut expired = claims(now() - 7200);
        expired.exp = now() - 60;
        let token = sign_jwt(&expired, &key);
        assert!(verify_jwt(token.expose_secret(), &set, &expired.iss, None, 0).is_err());

        let c = claims(now());
        let token = sign_jwt(&c, &key);
        assert!(verify_jwt(token.expose_secret(), &set, "https://other", None, 0).is_err());
        assert!(verify_jwt(token.expose_secret(), &set, &c.iss, Some("not-it"), 0).is_err());
    }

    #[test]
    fn refuses_a_jwt_that_is_not_typed_as_an_access_token() {
        let key = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
        let c = claims(now());
        for typ in [None, Some("JWT"), Some("id+jwt")] {
            let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
            header.typ = typ.map(String::from);
            header.kid = Some(key.kid.clone());
            let token = jsonwebtoken::encode(&header, &c, key.encoding_key()).unwrap();
            let err = verify_jwt(&token, &jwks(&[&key]), &c.iss, None, 0);
            assert!(
                matches!(err, Err(VerifyError::NotAnAccessToken(_))),
                "{typ:?}: {err:?}"
            );
        }
    }

    #[test]
    fn refuses_alg_none_and_hmac() {
        let key = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
        let c = claims(now());
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        let hs = jsonwebtoken::encode(
            &header,
            &c,
            &jsonwebtoken::EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        let err = verify_jwt(&hs, &jwks(&[&key]), &c.iss, None, 0);
        assert!(
            matches!(err, Err(VerifyError::AlgorithmNotAllowed(_))),
            "{err:?}"
        );
    }
}
