//! AppRegistration behaviour against the real control plane: client
//! credentials in a Secret, secret rotation with a grace period, and the
//! revocation of an app's tokens when the app is deleted.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, api::DeleteParams};
use serde_json::json;
use support::{
    TestNamespace, control_plane,
    operator::shared_operator,
    resources::{apply, ready, secret_text, token_issuer, wait_for, wait_reason},
};
use tokensmith::{
    api::{AccessToken, AppRegistration},
    token::fingerprint,
};

fn reason_of(app: &AppRegistration) -> Option<String> {
    app.status
        .as_ref()
        .and_then(|s| ready(&s.conditions))
        .map(|c| c.reason.clone())
}

#[tokio::test]
async fn registers_a_client_and_keeps_only_the_secret_hash_in_status() {
    let operator = shared_operator();
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "app-register").await;
    let issuer = token_issuer(&client, &ns.name, "signer", json!({})).await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &apps,
        "billing",
        json!({ "spec": {
            "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
            "scopes": ["read_invoices"],
            "secretName": "billing-client",
        }}),
    )
    .await;
    let app = wait_for(
        &apps,
        "billing",
        Duration::from_secs(60),
        "the app to be Registered",
        |a| reason_of(a).as_deref() == Some("Registered"),
    )
    .await;
    let status = app.status.clone().unwrap();
    assert_eq!(
        status.client_id,
        app.uid(),
        "the client id is the app's UID"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("billing-client")
        .await
        .unwrap();
    let client_secret = secret_text(&secret, "client-secret");
    assert!(client_secret.starts_with("tkcs_") && client_secret.len() > 40);
    assert_eq!(Some(secret_text(&secret, "client-id")), status.client_id);
    assert_eq!(
        secret_text(&secret, "issuer"),
        issuer.spec.settings.issuer_url
    );
    assert!(secret_text(&secret, "token-url").ends_with("/oauth/token"));
    assert_eq!(status.client_secret_hash, Some(fingerprint(&client_secret)));
    let status_text = serde_json::to_string(&status).unwrap();
    assert!(!status_text.contains(&client_secret));
    assert!(
        !operator.log_text().contains(&client_secret),
        "the operator logged a client secret"
    );

    // Re-applying the same manifest changes nothing.
    let version = app.resource_version();
    apply(
        &apps,
        "billing",
        json!({ "spec": {
            "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
            "scopes": ["read_invoices"],
            "secretName": "billing-client",
        }}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        apps.get("billing").await.unwrap().resource_version(),
        version
    );
}

#[tokio::test]
async fn rotates_the_client_secret_with_a_grace_period() {
    shared_operator();
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "app-rotate").await;
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &apps,
        "rolling",
        json!({ "spec": {
            "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
            "clientSecretRotation": { "interval": "15s", "gracePeriod": "8s" },
        }}),
    )
    .await;
    let first = wait_for(
        &apps,
        "rolling",
        Duration::from_secs(60),
        "registration",
        |a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.client_secret_hash.is_some())
        },
    )
    .await
    .status
    .unwrap();
    let first_hash = first.client_secret_hash.clone().unwrap();

    let rotated = wait_for(
        &apps,
        "rolling",
        Duration::from_secs(40),
        "a rotation",
        |a| {
            a.status
                .as_ref()
                .and_then(|s| s.client_secret_hash.as_ref())
                .is_some_and(|h| *h != first_hash)
        },
    )
    .await;
    let status = rotated.status.clone().unwrap();
    assert_eq!(reason_of(&rotated).as_deref(), Some("SecretRotated"));
    assert_eq!(
        status.previous_client_secret_hash.as_ref(),
        Some(&first_hash)
    );
    let grace_end = status.previous_client_secret_expires_at.clone().unwrap().0;
    let rotated_at = status.secret_rotated_at.clone().unwrap().0;
    assert_eq!(grace_end.as_second() - rotated_at.as_second(), 8);
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("rolling")
        .await
        .unwrap();
    assert_eq!(
        status.client_secret_hash,
        Some(fingerprint(&secret_text(&secret, "client-secret")))
    );

    let after_grace = wait_for(
        &apps,
        "rolling",
        Duration::from_secs(20),
        "the grace period to end",
        |a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.previous_client_secret_hash.is_none())
        },
    )
    .await;
    assert!(
        after_grace
            .status
            .unwrap()
            .previous_client_secret_expires_at
            .is_none()
    );
}

#[tokio::test]
async fn deleting_the_app_revokes_its_access_tokens() {
    shared_operator();
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "app-delete").await;
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &apps,
        "partner",
        json!({ "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" } } }),
    )
    .await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &tokens,
        "partner-token",
        json!({ "spec": {
            "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
            "appRef": { "name": "partner" },
        }}),
    )
    .await;
    let token_id = wait_reason(&tokens, "partner-token", "Issued")
        .await
        .status
        .unwrap()
        .token_id
        .unwrap();

    apps.delete("partner", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = wait_reason(&tokens, "partner-token", "Revoked").await;
    let message = ready(&revoked.status.unwrap().conditions)
        .unwrap()
        .message
        .clone();
    assert!(message.contains("AppRegistration partner"), "{message}");
    assert!(
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get_opt("partner-token")
            .await
            .unwrap()
            .is_none()
    );
    assert!(support::resources::is_recorded_as_revoked(&client, &token_id).await);
}

#[tokio::test]
async fn an_app_applied_before_its_issuer_is_registered_within_seconds_of_it() {
    shared_operator();
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "app-first").await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &apps,
        "early",
        json!({ "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "late" } } }),
    )
    .await;
    wait_for(
        &apps,
        "early",
        Duration::from_secs(30),
        "the app to wait for its issuer",
        |a| reason_of(a).as_deref() == Some("IssuerNotReady"),
    )
    .await;
    // As one GitOps sync applies them: the issuer a moment after its app.
    let started = std::time::Instant::now();
    token_issuer(&client, &ns.name, "late", json!({})).await;
    wait_for(
        &apps,
        "early",
        Duration::from_secs(60),
        "the app to be registered",
        |a| reason_of(a).as_deref() == Some("Registered"),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "registered {took:?} after its issuer was applied (its retry is a minute)"
    );
}
