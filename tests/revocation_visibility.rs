//! Revocation reaches verifiers at once and survives a restart: deleting an
//! AccessToken makes its token inactive at introspection within a second,
//! and a restarted operator still says so.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use support::{
    TestNamespace, control_plane, eventually,
    oauth::{app, introspect, served_issuer},
    operator::Operator,
    resources::{apply, secret_text, wait_reason},
};
use tokensmith::api::{AccessToken, AppRegistration};

#[tokio::test]
async fn deleted_token_is_inactive_within_a_second_and_after_a_restart() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "visibility").await;
    let mut operator = Operator::start(&[]);
    let http = operator.http().await;
    served_issuer(&client, &operator, &ns.name, "signer").await;
    let creds = app(
        &http,
        &operator,
        &client,
        &ns.name,
        "checker",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" } }),
    )
    .await;
    let checker = Api::<AppRegistration>::namespaced(client.clone(), &ns.name)
        .get("checker")
        .await
        .unwrap();
    assert_eq!(Some(creds.0.clone()), checker.status.unwrap().client_id);

    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &tokens,
        "doomed",
        json!({ "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" } } }),
    )
    .await;
    wait_reason(&tokens, "doomed", "Issued").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let jwt = secret_text(&secrets.get("doomed").await.unwrap(), "token");
    assert_eq!(
        introspect(&http, &operator, &creds, &jwt).await["active"],
        true
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
    eventually(
        Duration::from_secs(5),
        "the token to turn inactive",
        || async {
            (introspect(&http, &operator, &creds, &jwt).await["active"] == false).then_some(())
        },
    )
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
    support::oauth::accepted(&http, &restarted, &creds).await;
    assert_eq!(
        introspect(&http, &restarted, &creds, &jwt).await["active"],
        false,
        "still inactive after a restart"
    );
}
