//! How fast the token service judges a token, with many resources in its
//! watched index, and how fast it signs with each algorithm beside the bare
//! signature. Prints figures; `cargo bench --bench token_service`.
//! Under `cargo test` it runs once with small numbers, as a smoke test.

use std::{hint::black_box, time::Instant};

use secrecy::ExposeSecret;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    jiff::{SignedDuration, Timestamp},
};
use serde_json::json;
use tokensmith::{
    api::{AccessToken, AppRegistration, SigningAlgorithm, TokenIssuer},
    controller::issuer::{ISSUER_LABEL, key_secret_location},
    server::{Index, inspect::inspect},
    token::{
        AccessTokenClaims, KEYRING_SECRET_KEY, KeyPolicy, Keyring, jwt_algorithm,
        new_endpoint_token_id, plan_keys, sign_jwt,
    },
};

/// An index holding `issuers` TokenIssuers, `tokens` AccessTokens (the
/// last one being deleted) and `apps` AppRegistrations; returns it with a
/// JWT of one AccessToken, one of an app (as the token endpoint would mint),
/// both signed by issuer 0, one that claims an AccessToken no status
/// records, and one of the AccessToken being deleted.
fn index(issuers: usize, tokens: usize, apps: usize) -> (Index, String, String, String, String) {
    let (mut token_issuers, mut key_secrets, mut access_tokens, mut app_store) =
        (vec![], vec![], vec![], vec![]);
    let now = Timestamp::now();
    let keyring = plan_keys(
        Keyring::default(),
        KeyPolicy {
            algorithm: SigningAlgorithm::ES256,
            rotation_interval: std::time::Duration::from_secs(86_400),
            max_token_lifetime: std::time::Duration::from_secs(86_400),
        },
        now,
    )
    .unwrap()
    .keyring;
    for i in 0..issuers {
        let issuer: TokenIssuer = serde_json::from_value(json!({
            "apiVersion": "tokensmith.dev/v1alpha1", "kind": "TokenIssuer",
            "metadata": { "name": format!("issuer-{i}"), "namespace": "bench", "uid": format!("uid-{i}") },
            "spec": { "issuerURL": format!("https://tokens.bench/issuers/{i}") },
        }))
        .unwrap();
        let (key_namespace, key_name) = key_secret_location(&issuer, "tokensmith-system");
        token_issuers.push(issuer);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(key_name),
                namespace: Some(key_namespace),
                labels: Some([(ISSUER_LABEL.to_string(), format!("issuer-{i}"))].into()),
                ..Default::default()
            },
            data: Some(
                [(
                    KEYRING_SECRET_KEY.to_string(),
                    ByteString(keyring.to_json()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        key_secrets.push(secret);
    }
    let expires = (now + SignedDuration::from_hours(1)).to_string();
    // Older than the grace window, so the AccessToken's token is judged by
    // its record, as nearly all are.
    let issued = now - SignedDuration::from_mins(5);
    for i in 0..tokens {
        let token: AccessToken = serde_json::from_value(json!({
            "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
            "metadata": { "name": format!("token-{i}"), "namespace": "bench", "uid": format!("t-{i}") },
            "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "issuer-0" }, "scopes": ["read"] },
            "status": {
                "tokenID": format!("jti-{i}"), "expiresAt": expires, "issuedAt": issued.to_string(),
                "tokenHash": format!("sha256:{i}"),
                "minted": { "issuerURL": "https://tokens.bench/issuers/0", "scopes": ["read"] },
            },
        }))
        .unwrap();
        access_tokens.push(token);
    }
    for i in 0..apps {
        let app: AppRegistration = serde_json::from_value(json!({
            "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AppRegistration",
            "metadata": { "name": format!("app-{i}"), "namespace": "bench", "uid": format!("client-{i}") },
            "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "issuer-0" }, "scopes": ["read"] },
        }))
        .unwrap();
        app_store.push(app);
    }
    let key = keyring.active_signing_key().unwrap().unwrap();
    let claims = |jti: String, client_id: Option<String>| AccessTokenClaims {
        iss: "https://tokens.bench/issuers/0".into(),
        sub: "bench".into(),
        aud: vec![],
        exp: (now + SignedDuration::from_hours(1)).as_second(),
        iat: issued.as_second(),
        nbf: issued.as_second(),
        jti,
        scope: "read".into(),
        client_id,
        extra: Default::default(),
    };
    let resource_token = sign_jwt(&claims(format!("jti-{}", tokens / 2), None), &key);
    let app_token = sign_jwt(
        &claims(
            new_endpoint_token_id(),
            Some(format!("client-{}", apps / 2)),
        ),
        &key,
    );
    let unrecorded = sign_jwt(&claims("jti-nobody-recorded".into(), None), &key);
    let being_deleted = sign_jwt(&claims(format!("jti-{}", tokens - 1), None), &key);
    if let Some(last) = access_tokens.last_mut() {
        last.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    }
    let index = Index::from_objects(
        "tokensmith-system",
        token_issuers,
        key_secrets,
        access_tokens,
        app_store,
    );
    (
        index,
        resource_token.expose_secret().to_string(),
        app_token.expose_secret().to_string(),
        unrecorded.expose_secret().to_string(),
        being_deleted.expose_secret().to_string(),
    )
}

fn per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    f();
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, usize, usize)] = if full {
        &[
            (1, 100, 10),
            (10, 1_000, 100),
            (100, 10_000, 1_000),
            (1_000, 50_000, 5_000),
        ]
    } else {
        &[(2, 20, 2)]
    };
    let iterations = if full { 2_000 } else { 10 };
    println!(
        "{:>8} {:>8} {:>6} {:>18} {:>18}",
        "issuers", "tokens", "apps", "AccessToken µs", "endpoint token µs"
    );
    for &(issuers, tokens, apps) in sizes {
        let (index, resource_token, app_token, unrecorded, being_deleted) =
            index(issuers, tokens, apps);
        let now = Timestamp::now().as_second();
        assert!(
            inspect(&index, &resource_token, now).is_some(),
            "the AccessToken's token is active"
        );
        assert!(
            inspect(&index, &app_token, now).is_some(),
            "the app's token is active"
        );
        assert!(
            inspect(&index, &unrecorded, now).is_none(),
            "a token no AccessToken records is inactive"
        );
        assert!(
            inspect(&index, &being_deleted, now).is_none(),
            "a token of an AccessToken being deleted is inactive at once"
        );
        let a = per_call(iterations, || {
            black_box(inspect(&index, black_box(&resource_token), now));
        });
        let b = per_call(iterations, || {
            black_box(inspect(&index, black_box(&app_token), now));
        });
        println!("{issuers:>8} {tokens:>8} {apps:>6} {a:>18.1} {b:>18.1}");
    }
    signing(if full { 2_000 } else { 5 });
}

/// Signing an access token (claims to JSON, base64, signature) beside the
/// bare signature of an input of the same length, per algorithm.
fn signing(iterations: u32) {
    println!(
        "\n{:>6} {:>16} {:>12} {:>20} {:>12}",
        "alg", "sign_jwt µs", "per s", "bare signature µs", "per s"
    );
    let now = Timestamp::now();
    for algorithm in [
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
    ] {
        let policy = KeyPolicy {
            algorithm,
            rotation_interval: std::time::Duration::from_secs(86_400),
            max_token_lifetime: std::time::Duration::from_secs(86_400),
        };
        let keyring = plan_keys(Keyring::default(), policy, now).unwrap().keyring;
        let key = keyring.active_signing_key().unwrap().unwrap();
        let claims = AccessTokenClaims {
            iss: "https://tokens.bench/issuers/0".into(),
            sub: "system:serviceaccount:bench:client".into(),
            aud: vec!["api.bench".into()],
            exp: now.as_second() + 1800,
            iat: now.as_second(),
            nbf: now.as_second(),
            jti: new_endpoint_token_id(),
            scope: "read write".into(),
            client_id: Some("client".into()),
            extra: Default::default(),
        };
        let jwt = sign_jwt(&claims, &key);
        let input = jwt.expose_secret().rsplit_once('.').unwrap().0.to_string();
        let signed = per_call(iterations, || {
            black_box(sign_jwt(black_box(&claims), &key));
        });
        let bare = per_call(iterations, || {
            black_box(
                jsonwebtoken::crypto::sign(
                    black_box(input.as_bytes()),
                    key.encoding_key(),
                    jwt_algorithm(algorithm),
                )
                .unwrap(),
            );
        });
        println!(
            "{:>6} {signed:>16.1} {:>12.0} {bare:>20.1} {:>12.0}",
            format!("{algorithm:?}"),
            1e6 / signed,
            1e6 / bare
        );
    }
}
