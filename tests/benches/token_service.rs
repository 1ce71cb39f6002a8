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
        AccessTokenClaims, KEYRING_SECRET_KEY, KeyPolicy, Keyring, SigningKey, jwt_algorithm,
        new_endpoint_token_id, plan_keys, sign_jwt,
    },
};

/// An index and tokens to judge with it.
struct Judged {
    index: Index,
    /// A JWT of one AccessToken.
    resource_token: String,
    /// One of an app, as the token endpoint would mint.
    app_token: String,
    /// One that claims an AccessToken no status records.
    unrecorded: String,
    /// One of the AccessToken being deleted.
    being_deleted: String,
    /// Tokens of the same app, each with an id of its own.
    app_tokens: Vec<String>,
}

/// An index holding `issuers` TokenIssuers, `tokens` AccessTokens (the
/// last one being deleted) and `apps` AppRegistrations, with tokens signed
/// by issuer 0 (`app_tokens` of them for the app).
fn index(issuers: usize, tokens: usize, apps: usize, app_tokens: usize) -> Judged {
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
    let app_tokens = (0..app_tokens)
        .map(|_| {
            let client = Some(format!("client-{}", apps / 2));
            let token = sign_jwt(&claims(new_endpoint_token_id(), client), &key);
            token.expose_secret().to_string()
        })
        .collect();
    Judged {
        index,
        resource_token: resource_token.expose_secret().to_string(),
        app_token: app_token.expose_secret().to_string(),
        unrecorded: unrecorded.expose_secret().to_string(),
        being_deleted: being_deleted.expose_secret().to_string(),
        app_tokens,
    }
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
        "{:>8} {:>8} {:>6} {:>18} {:>18} {:>22}",
        "issuers", "tokens", "apps", "AccessToken µs", "endpoint token µs", "first sight µs"
    );
    for &(issuers, tokens, apps) in sizes {
        let Judged {
            index,
            resource_token,
            app_token,
            unrecorded,
            being_deleted,
            app_tokens,
        } = index(issuers, tokens, apps, iterations as usize + 1);
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
        // Each token once: its signature is checked, as on a token's first
        // introspection; the two above are remembered after their first.
        let mut unseen = app_tokens.iter();
        let c = per_call(iterations, || {
            let token = unseen.next().expect("a token for every call");
            assert!(black_box(inspect(&index, black_box(token), now)).is_some());
        });
        println!("{issuers:>8} {tokens:>8} {apps:>6} {a:>18.1} {b:>18.1} {c:>22.1}");
    }
    signing(if full { 2_000 } else { 5 });
}

/// Signing an access token (claims to JSON, base64, signature) beside
/// jsonwebtoken's signature of an input of the same length (which parses
/// the key for every signature, as `sign_jwt` does) and the bare signature
/// with the key parsed once, per algorithm.
fn signing(iterations: u32) {
    println!(
        "\n{:>6} {:>16} {:>12} {:>24} {:>20} {:>12}",
        "alg", "sign_jwt µs", "per s", "jsonwebtoken sign µs", "bare signature µs", "per s"
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
        let library = per_call(iterations, || {
            black_box(
                jsonwebtoken::crypto::sign(
                    black_box(input.as_bytes()),
                    key.encoding_key(),
                    jwt_algorithm(algorithm),
                )
                .unwrap(),
            );
        });
        let mut bare_signature = bare_signer(algorithm, &key);
        let bare = per_call(iterations, || {
            black_box(bare_signature(black_box(input.as_bytes())));
        });
        println!(
            "{:>6} {signed:>16.1} {:>12.0} {library:>24.1} {bare:>20.1} {:>12.0}",
            format!("{algorithm:?}"),
            1e6 / signed,
            1e6 / bare
        );
    }
}

/// Signs an input.
type Sign = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

/// Signs with `key` parsed once, straight with aws-lc-rs: the primitive.
fn bare_signer(algorithm: SigningAlgorithm, key: &SigningKey) -> Sign {
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256,
            RsaKeyPair,
        },
    };
    let der = pem::parse(key.private_pem().expose_secret())
        .unwrap()
        .into_contents();
    let rng = SystemRandom::new();
    match algorithm {
        SigningAlgorithm::ES256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
            Box::new(move |input| pair.sign(&rng, input).unwrap().as_ref().to_vec())
        }
        SigningAlgorithm::EdDSA => {
            let pair = Ed25519KeyPair::from_pkcs8(&der).unwrap();
            Box::new(move |input| pair.sign(input).as_ref().to_vec())
        }
        SigningAlgorithm::RS256 => {
            let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
            Box::new(move |input| {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input, &mut signature)
                    .unwrap();
                signature
            })
        }
    }
}
