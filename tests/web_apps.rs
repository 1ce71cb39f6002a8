//! Apps of type Web: token exchange (RFC 8693) of a real service-account
//! token, verified by the API server's TokenReview, and rotating refresh
//! tokens whose reuse revokes the whole chain.

mod support;

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use serde_json::{Value, json};
use support::{
    control_plane, eventually,
    oauth::{self, Served},
};

/// A service-account token made for the token service (the audience the
/// exchange requires).
async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audience: &str,
) -> String {
    oauth::service_account_token(client, namespace, name, Some(audience)).await
}

/// Token exchange of `subject_token` as the client `creds` of `served`.
async fn exchange(
    served: &Served,
    creds: &(String, String),
    subject_token: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    oauth::exchange(&served.http, served.operator, creds, subject_token, extra).await
}

fn claims_of(jwt: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(jwt)
        .unwrap()
        .claims
}

#[tokio::test]
async fn exchange_then_rotate_refresh_tokens_and_revoke_the_chain_on_reuse() {
    let served = Served::new("web-app").await;
    let (client, ns) = (served.client.clone(), &served.ns);
    let creds = served
        .app(
            "portal",
            json!({
                "type": "Web",
                "scopes": ["read", "write"],
            }),
        )
        .await;
    let subject_token =
        service_account_token(&client, &ns.name, "worker", &served.operator.url).await;
    let service_account = format!("system:serviceaccount:{}:worker", ns.name);

    let (status, exchanged) = exchange(&served, &creds, &subject_token, &[("scope", "read")]).await;
    assert_eq!(status, 200, "{exchanged}");
    assert_eq!(
        exchanged["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(exchanged["token_type"], "Bearer");
    assert_eq!(exchanged["scope"], "read");
    let first_access = exchanged["access_token"].as_str().unwrap().to_string();
    let first_refresh = exchanged["refresh_token"].as_str().unwrap().to_string();
    assert!(first_refresh.starts_with("tkrt_"));
    assert_eq!(
        claims_of(&first_access)["sub"],
        service_account,
        "the token acts as the service account"
    );
    let info = served.introspect(&creds, &first_access).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], service_account);
    assert_eq!(info["client_id"], creds.0);

    // A Web app does not get client_credentials.
    let (status, refused) = served
        .token_request(&creds, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    // Scopes stay within the app's.
    let (status, refused) = exchange(&served, &creds, &subject_token, &[("scope", "admin")]).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    // Rotation: the new refresh token works, the spent one does not.
    let refresh = |token: String| {
        let creds = creds.clone();
        let served = &served;
        async move {
            served
                .token_request(
                    &creds,
                    &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                )
                .await
        }
    };
    let (status, rotated) = refresh(first_refresh.clone()).await;
    assert_eq!(status, 200, "{rotated}");
    let second_access = rotated["access_token"].as_str().unwrap().to_string();
    let second_refresh = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first_refresh);
    assert_eq!(
        rotated["scope"], "read",
        "a refresh keeps the chain's scopes"
    );
    assert_eq!(claims_of(&second_access)["sub"], service_account);
    assert_eq!(
        served.introspect(&creds, &second_access).await["active"],
        true
    );

    let (status, third) = refresh(second_refresh.clone()).await;
    assert_eq!(status, 200, "{third}");
    let third_access = third["access_token"].as_str().unwrap().to_string();
    let third_refresh = third["refresh_token"].as_str().unwrap().to_string();

    // Replaying a spent refresh token revokes the whole chain.
    let (status, replayed) = refresh(first_refresh).await;
    assert_eq!(
        (status, replayed["error"].as_str()),
        (400, Some("invalid_grant")),
        "{replayed}"
    );
    let (status, after) = refresh(third_refresh).await;
    assert_eq!(
        (status, after["error"].as_str()),
        (400, Some("invalid_grant")),
        "the newest refresh token dies with its chain"
    );
    for token in [&first_access, &second_access, &third_access] {
        served
            .until_inactive(&creds, token, Duration::from_secs(1))
            .await;
    }
}

#[tokio::test]
async fn a_refresh_token_revoked_by_its_client_stops_working() {
    let served = Served::new("web-revoke").await;
    let (operator, http, client, ns) = (
        served.operator,
        served.http.clone(),
        served.client.clone(),
        &served.ns,
    );
    let spec = json!({ "type": "Web", "scopes": ["read"] });
    let creds = served.app("portal", spec.clone()).await;
    let other = served.app("other", spec).await;
    let subject_token =
        service_account_token(&client, &ns.name, "worker", &served.operator.url).await;
    let (status, exchanged) = exchange(&served, &creds, &subject_token, &[]).await;
    assert_eq!(status, 200, "{exchanged}");
    let refresh_token = exchanged["refresh_token"].as_str().unwrap();
    let access_token = exchanged["access_token"].as_str().unwrap();

    // Another client can neither use nor revoke it.
    let (status, refused) = served
        .token_request(
            &other,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let revoke = |creds: (String, String)| {
        let http = http.clone();
        let token = refresh_token.to_string();
        async move {
            http.post(format!("{}/oauth/revoke", operator.url))
                .basic_auth(&creds.0, Some(&creds.1))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        revoke(other.clone()).await,
        200,
        "RFC 7009 answers 200 either way"
    );
    assert_eq!(
        served.introspect(&creds, access_token).await["active"],
        true
    );

    assert_eq!(revoke(creds.clone()).await, 200);
    let (status, refused) = served
        .token_request(
            &creds,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    served
        .until_inactive(&creds, access_token, Duration::from_secs(1))
        .await;
}

/// Re-signs the claims of a real service-account token, with `exp` moved.
fn resign(real: &str, key: &EncodingKey, exp_offset: i64) -> String {
    let header = jsonwebtoken::decode_header(real).unwrap();
    let mut claims = claims_of(real);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    claims["iat"] = json!(now - 3600);
    claims["nbf"] = json!(now - 3600);
    claims["exp"] = json!(now + exp_offset);
    let mut new_header = Header::new(header.alg);
    new_header.kid = header.kid;
    jsonwebtoken::encode(&new_header, &claims, key).unwrap()
}

#[tokio::test]
async fn forged_and_expired_subject_tokens_are_refused() {
    let served = Served::new("web-forged").await;
    let (client, ns) = (served.client.clone(), &served.ns);
    let creds = served
        .app("portal", json!({ "type": "Web", "scopes": ["read"] }))
        .await;
    let real = service_account_token(&client, &ns.name, "worker", &served.operator.url).await;
    let refused = |(status, body): (u16, Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
    };

    // Same claims, signed by a key the API server does not know.
    let stranger =
        tokensmith::token::SigningKey::generate(tokensmith::api::SigningAlgorithm::RS256).unwrap();
    refused(
        exchange(
            &served,
            &creds,
            &resign(&real, stranger.encoding_key(), 600),
            &[],
        )
        .await,
    );
    // A real token with its signature altered.
    let mut tampered = real.clone();
    let cut = tampered.len() - 6;
    tampered.replace_range(cut.., "AAAAAA");
    refused(exchange(&served, &creds, &tampered, &[]).await);
    // Not a JWT at all, and an empty one.
    refused(exchange(&served, &creds, "not-a-token", &[]).await);
    refused(exchange(&served, &creds, "", &[]).await);

    // Expired: signed with the control plane's own service-account key,
    // which only a control plane started by hack/control-plane.sh lets us read.
    let key_file = control_plane()
        .kubeconfig
        .parent()
        .unwrap()
        .join("pki/sa.key");
    match std::fs::read(&key_file) {
        Ok(pem) => {
            let key = EncodingKey::from_rsa_pem(&pem).unwrap();
            // The same construction, unexpired, is accepted: so the refusal
            // below is for the expiry and nothing else.
            let (status, body) = exchange(&served, &creds, &resign(&real, &key, 600), &[]).await;
            assert_eq!(status, 200, "{body}");
            refused(exchange(&served, &creds, &resign(&real, &key, -60), &[]).await);
        }
        Err(_) => eprintln!(
            "{} is not readable: the expired-token case needs the test control plane",
            key_file.display()
        ),
    }
}

#[tokio::test]
async fn deleting_a_web_app_ends_its_tokens_and_its_refresh_chains() {
    let served = Served::new("web-delete").await;
    let (operator, client, ns) = (served.operator, served.client.clone(), &served.ns);
    let spec = json!({ "type": "Web", "scopes": ["read"] });
    let doomed = served.app("doomed", spec.clone()).await;
    let checker = served.app("checker", spec).await;
    let subject_token =
        service_account_token(&client, &ns.name, "worker", &served.operator.url).await;
    let (status, exchanged) = exchange(&served, &doomed, &subject_token, &[]).await;
    assert_eq!(status, 200, "{exchanged}");
    let access_token = exchanged["access_token"].as_str().unwrap().to_string();
    let refresh_token = exchanged["refresh_token"].as_str().unwrap().to_string();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &operator.namespace);
    let chains = kube::api::ListParams::default()
        .labels(&format!("tokensmith.dev/refresh-chain-of={}", doomed.0));
    assert_eq!(
        secrets.list_metadata(&chains).await.unwrap().items.len(),
        1,
        "one chain, stored in the operator's namespace"
    );
    assert_eq!(
        served.introspect(&checker, &access_token).await["active"],
        true
    );

    Api::<tokensmith::api::AppRegistration>::namespaced(client.clone(), &ns.name)
        .delete("doomed", &Default::default())
        .await
        .unwrap();
    served
        .until_inactive(&checker, &access_token, Duration::from_secs(1))
        .await;
    eventually(
        Duration::from_secs(60),
        "the sweeper to delete the chain",
        || async {
            secrets
                .list_metadata(&chains)
                .await
                .unwrap()
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;

    // None of the secrets that went through the operator is in its log.
    let log = operator.log_text();
    for secret in [
        &access_token,
        &refresh_token,
        &subject_token,
        &doomed.1,
        &checker.1,
    ] {
        assert!(
            !log.contains(secret.as_str()),
            "a token or client secret was logged"
        );
    }
}

#[tokio::test]
async fn deleting_the_service_account_ends_its_refresh_chain() {
    let served = Served::new("web-sa-gone").await;
    let (client, ns) = (served.client.clone(), &served.ns);
    let creds = served
        .app("portal", json!({ "type": "Web", "scopes": ["read"] }))
        .await;
    let subject_token =
        service_account_token(&client, &ns.name, "leaver", &served.operator.url).await;
    let (status, exchanged) = exchange(&served, &creds, &subject_token, &[]).await;
    assert_eq!(status, 200, "{exchanged}");
    let access_token = exchanged["access_token"].as_str().unwrap().to_string();
    let refresh_token = exchanged["refresh_token"].as_str().unwrap().to_string();

    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .delete("leaver", &Default::default())
        .await
        .unwrap();
    let (status, refused) = served
        .token_request(
            &creds,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
            ],
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{refused}"
    );
    served
        .until_inactive(&creds, &access_token, Duration::from_secs(1))
        .await;
}
