//! Revocation reaches verifiers at once and survives a restart: deleting an
//! AccessToken makes its token inactive at introspection within a second,
//! and a restarted operator still says so.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use support::{
    TestNamespace, control_plane, eventually,
    operator::Operator,
    resources::{apply, secret_text, token_issuer, wait_for, wait_reason},
};
use tokensmith::api::{AccessToken, AppRegistration};

#[tokio::test]
async fn deleted_token_is_inactive_within_a_second_and_after_a_restart() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "visibility").await;
    let mut operator = Operator::start(&[]);
    let http = operator.http().await;
    let issuer_url = format!("{}/issuers/{}/signer", operator.url, ns.name);
    token_issuer(
        &client,
        &ns.name,
        "signer",
        json!({ "issuerURL": issuer_url }),
    )
    .await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &apps,
        "checker",
        json!({ "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" } } }),
    )
    .await;
    let checker = wait_for(&apps, "checker", Duration::from_secs(60), "the app", |a| {
        a.status
            .as_ref()
            .is_some_and(|s| s.client_secret_hash.is_some())
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let creds_secret = secrets.get("checker").await.unwrap();
    let creds = (
        secret_text(&creds_secret, "client-id"),
        secret_text(&creds_secret, "client-secret"),
    );
    assert_eq!(Some(creds.0.clone()), checker.status.unwrap().client_id);

    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &tokens,
        "doomed",
        json!({ "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" } } }),
    )
    .await;
    wait_reason(&tokens, "doomed", "Issued").await;
    let jwt = secret_text(&secrets.get("doomed").await.unwrap(), "token");
    let active = |http: reqwest::Client, url: String, creds: (String, String), jwt: String| async move {
        let body: Value = http
            .post(format!("{url}/oauth/introspect"))
            .basic_auth(&creds.0, Some(&creds.1))
            .form(&[("token", jwt.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["active"] == true
    };
    assert!(
        active(
            http.clone(),
            operator.url.clone(),
            creds.clone(),
            jwt.clone()
        )
        .await
    );

    control_plane().kubectl(&[
        "delete",
        "accesstoken",
        "doomed",
        "-n",
        &ns.name,
        "--wait=false",
    ]);
    let deleted_at = Instant::now();
    eventually(Duration::from_secs(5), "the token to turn inactive", || {
        let (http, url, creds, jwt) = (
            http.clone(),
            operator.url.clone(),
            creds.clone(),
            jwt.clone(),
        );
        async move { (!active(http, url, creds, jwt).await).then_some(()) }
    })
    .await;
    let took = deleted_at.elapsed();
    println!(
        "inactive at introspection {} ms after `kubectl delete accesstoken`",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eventually(
        Duration::from_secs(30),
        "the AccessToken to be gone",
        || async {
            tokens
                .get_opt("doomed")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    operator.stop_with(libc::SIGTERM);
    let restarted = Operator::start(&[]);
    let http = restarted.http().await;
    assert!(
        !active(http, restarted.url.clone(), creds, jwt).await,
        "still inactive after a restart"
    );
}
