//! AccessToken behaviour against the real control plane, with the operator
//! binary running: issue, verify, rotate, expire, revoke, and stay safe.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    TestNamespace, control_plane, eventually,
    finalizer_policy::{Bound, FinalizerPolicy},
    fixture::Issued,
    operator::{OPERATOR_NAMESPACE, shared_operator},
    resources::{
        apply, is_recorded_as_revoked, reason, secret_text, verify_with_token_issuer, wait_for,
        wait_reason,
    },
};
use tokensmith::{api::AccessToken, controller::FINALIZER, token::fingerprint};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn issues_a_token_that_verifies_with_the_issuer_key() {
    let fixture =
        Issued::with_issuer("issue", "signer", json!({ "audiences": ["api.example"] })).await;
    let Issued {
        operator,
        client,
        ns,
        issuer,
        tokens,
        secrets,
    } = &fixture;
    fixture
        .token(
            "ci",
            json!({
                "scopes": ["read_scenarios", "scenarios:write"],
                "claims": { "team": "platform" },
                "lifetime": "2h",
                "secretTemplate": { "labels": { "app": "ci" } },
            }),
        )
        .await;

    // `kubectl wait` works on the Ready condition.
    control_plane().kubectl(&[
        "wait",
        "-n",
        &ns.name,
        "accesstoken/ci",
        "--for=condition=Ready",
        "--timeout=60s",
    ]);
    let token = tokens.get("ci").await.unwrap();
    let status = token.status.clone().unwrap();
    assert_eq!(reason(&token).as_deref(), Some("Issued"));
    assert_eq!(status.revision, Some(1));
    assert_eq!(status.secret_name.as_deref(), Some("ci"));

    let secret = secrets.get("ci").await.unwrap();
    let jwt = secret_text(&secret, "token");
    assert_eq!(secret_text(&secret, "token-type"), "Bearer");
    assert_eq!(
        secret_text(&secret, "scopes"),
        "read_scenarios scenarios:write"
    );
    assert_eq!(
        secret_text(&secret, "issuer"),
        issuer.spec.settings.issuer_url
    );
    assert_eq!(Some(secret_text(&secret, "token-id")), status.token_id);
    assert_eq!(
        secret_text(&secret, "expires-at"),
        status.expires_at.as_ref().unwrap().0.to_string()
    );
    assert_eq!(secret.labels().get("app").map(String::as_str), Some("ci"));
    assert_eq!(secret.owner_references()[0].uid, token.uid().unwrap());

    let claims = verify_with_token_issuer(client, &ns.name, issuer, &jwt)
        .await
        .expect("the token verifies with the issuer's public key");
    assert_eq!(claims.iss, issuer.spec.settings.issuer_url);
    assert_eq!(claims.sub, format!("system:accesstoken:{}:ci", ns.name));
    assert_eq!(claims.aud, vec!["api.example"]);
    assert_eq!(claims.exp - claims.iat, 7200);
    assert_eq!(claims.nbf, claims.iat);
    assert_eq!(Some(claims.jti.clone()), status.token_id);
    assert_eq!(claims.scope, "read_scenarios scenarios:write");
    assert_eq!(claims.extra["team"], "platform");
    assert_eq!(claims.client_id, None);
    assert_eq!(claims.iat, status.issued_at.unwrap().0.as_second());
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid, status.key_id);
    assert_eq!(header.kid, issuer.status.clone().unwrap().active_key_id);
    assert_eq!(status.token_hash, Some(fingerprint(&jwt)));

    // The token is shown to the workload only.
    assert!(
        !operator.log_text().contains(&jwt),
        "the operator logged a token"
    );
    let status_text = serde_json::to_string(&token.status).unwrap();
    assert!(!status_text.contains(&jwt));
    // Events are published off the reconcile's path: moments later.
    let events = eventually(Duration::from_secs(10), "an Issued event", || async {
        let events = control_plane().kubectl(&["get", "events", "-n", &ns.name, "-o", "json"]);
        events.contains("Issued").then_some(events)
    })
    .await;
    assert!(!events.contains(&jwt), "an event holds the token");
}

#[tokio::test]
async fn rotates_before_expiry() {
    let fixture = Issued::new("rotate").await;
    let Issued {
        client,
        ns,
        issuer,
        tokens,
        secrets,
        ..
    } = &fixture;
    fixture.token("short", json!({ "lifetime": "20s" })).await;
    let first = wait_reason(tokens, "short", "Issued").await.status.unwrap();
    let first_id = first.token_id.clone().unwrap();
    let first_expiry = first.expires_at.clone().unwrap().0;
    assert!(first.renewal_time.unwrap().0 < first_expiry);

    let rotated = wait_for(
        tokens,
        "short",
        Duration::from_secs(30),
        "a rotation",
        |t| t.status.as_ref().is_some_and(|s| s.revision == Some(2)),
    )
    .await;
    let now = k8s_openapi::jiff::Timestamp::now();
    assert!(
        now < first_expiry,
        "the new token arrived before the old one expired"
    );
    let status = rotated.status.unwrap();
    assert_eq!(
        reason(&tokens.get("short").await.unwrap()).as_deref(),
        Some("Rotated")
    );
    assert_ne!(status.token_id.as_deref(), Some(first_id.as_str()));
    assert!(
        status
            .previous_tokens
            .iter()
            .any(|p| p.token_id == first_id),
        "the old token id is remembered: {:?}",
        status.previous_tokens
    );
    let secret = secrets.get("short").await.unwrap();
    assert_eq!(Some(secret_text(&secret, "token-id")), status.token_id);
    let claims = verify_with_token_issuer(client, &ns.name, issuer, &secret_text(&secret, "token"))
        .await
        .unwrap();
    assert_eq!(Some(claims.jti), status.token_id);
    // A scheduled rotation leaves the old token valid until it expires.
    assert!(!is_recorded_as_revoked(client, &first_id).await);
}

#[tokio::test]
async fn deletes_the_secret_at_expiry() {
    let fixture = Issued::new("expire").await;
    let Issued {
        tokens, secrets, ..
    } = &fixture;
    fixture
        .token("once", json!({ "lifetime": "10s", "onExpiry": "Delete" }))
        .await;
    let issued = wait_reason(tokens, "once", "Issued").await.status.unwrap();
    assert_eq!(issued.renewal_time, None, "a Delete token is never renewed");
    let expired = wait_reason(tokens, "once", "Expired").await;
    let now = k8s_openapi::jiff::Timestamp::now();
    assert!(now >= issued.expires_at.unwrap().0);
    assert!(
        secrets.get_opt("once").await.unwrap().is_none(),
        "the Secret is deleted at expiry"
    );
    assert_eq!(
        expired.status.unwrap().revision,
        Some(1),
        "no new token was minted"
    );
}

#[tokio::test]
async fn deleting_revokes_and_releases_the_finalizer() {
    let fixture = Issued::new("delete").await;
    let Issued {
        client,
        ns,
        tokens,
        secrets,
        ..
    } = &fixture;
    fixture.token("gone", json!({})).await;
    let token_id = wait_reason(tokens, "gone", "Issued")
        .await
        .status
        .unwrap()
        .token_id
        .unwrap();

    tokens
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    eventually(TIMEOUT, "the AccessToken to be gone", || async {
        tokens
            .get_opt("gone")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(secrets.get_opt("gone").await.unwrap().is_none());
    assert!(
        is_recorded_as_revoked(client, &token_id).await,
        "the token id is recorded as revoked"
    );

    // A namespace with tokens in it can be deleted without hanging.
    fixture.token("left-behind", json!({})).await;
    let left = wait_reason(tokens, "left-behind", "Issued")
        .await
        .status
        .unwrap()
        .token_id
        .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(TIMEOUT, "the namespace to be deleted", || async {
        namespaces
            .get_opt(&ns.name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(is_recorded_as_revoked(client, &left).await);
}

#[tokio::test]
async fn revoked_true_removes_the_secret_and_keeps_the_record() {
    let fixture = Issued::new("revoke").await;
    let Issued {
        client,
        tokens,
        secrets,
        ..
    } = &fixture;
    let spec = json!({ "scopes": ["read"] });
    fixture.token("leaked", spec.clone()).await;
    let token_id = wait_reason(tokens, "leaked", "Issued")
        .await
        .status
        .unwrap()
        .token_id
        .unwrap();

    let mut revoked_spec = spec.clone();
    revoked_spec["revoked"] = json!(true);
    fixture.token("leaked", revoked_spec).await;
    let revoked = wait_reason(tokens, "leaked", "Revoked").await;
    assert_eq!(
        revoked.status.as_ref().unwrap().token_id.as_deref(),
        Some(token_id.as_str())
    );
    assert!(secrets.get_opt("leaked").await.unwrap().is_none());
    assert!(is_recorded_as_revoked(client, &token_id).await);

    // Clearing `revoked` issues a fresh token.
    fixture.token("leaked", spec).await;
    let reissued = wait_reason(tokens, "leaked", "Issued")
        .await
        .status
        .unwrap();
    assert_ne!(reissued.token_id.as_deref(), Some(token_id.as_str()));
    assert_eq!(reissued.revision, Some(2));
}

#[tokio::test]
async fn leaves_a_foreign_secret_untouched() {
    let fixture = Issued::new("foreign").await;
    let Issued {
        tokens, secrets, ..
    } = &fixture;
    let foreign = secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("taken".into()),
                    labels: Some([("owner".to_string(), "someone-else".to_string())].into()),
                    ..ObjectMeta::default()
                },
                string_data: Some([("token".to_string(), "their-value".to_string())].into()),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    fixture.token("taken", json!({})).await;
    let conflicted = wait_reason(tokens, "taken", "SecretConflict").await;
    let status = conflicted.status.unwrap();
    let message = &support::resources::ready(&status.conditions)
        .unwrap()
        .message;
    assert!(message.contains("not owned"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = secrets.get("taken").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        foreign.metadata.resource_version
    );
    assert_eq!(after.data, foreign.data);
    assert_eq!(after.metadata.labels, foreign.metadata.labels);

    // Deleting the AccessToken does not delete a Secret it never owned.
    tokens
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    eventually(TIMEOUT, "the AccessToken to be gone", || async {
        tokens
            .get_opt("taken")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(secrets.get("taken").await.unwrap().data, foreign.data);
}

#[tokio::test]
async fn reports_issuer_policy_violations_as_conditions() {
    let fixture = Issued::with_issuer(
        "policy",
        "strict",
        json!({ "allowedScopes": ["read_*"], "maxLifetime": "1h" }),
    )
    .await;
    let Issued {
        tokens, secrets, ..
    } = &fixture;
    let message_of = |t: &AccessToken| {
        support::resources::ready(&t.status.as_ref().unwrap().conditions)
            .unwrap()
            .message
            .clone()
    };

    fixture
        .token("too-wide", json!({ "scopes": ["read_x", "admin"] }))
        .await;
    let t = wait_reason(tokens, "too-wide", "InvalidSpec").await;
    assert!(
        message_of(&t).contains("\"admin\""),
        "names the scope: {}",
        message_of(&t)
    );

    fixture.token("too-long", json!({ "lifetime": "2h" })).await;
    let t = wait_reason(tokens, "too-long", "InvalidSpec").await;
    assert!(message_of(&t).contains("maxLifetime"), "{}", message_of(&t));

    fixture
        .token(
            "orphan",
            json!({ "issuerRef": { "kind": "TokenIssuer", "name": "missing" } }),
        )
        .await;
    let t = wait_reason(tokens, "orphan", "IssuerNotReady").await;
    assert!(message_of(&t).contains("missing"), "{}", message_of(&t));

    fixture
        .token("fine", json!({ "scopes": ["read_x"], "lifetime": "30m" }))
        .await;
    wait_reason(tokens, "fine", "Issued").await;
    for name in ["too-wide", "too-long", "orphan"] {
        assert!(
            secrets.get_opt(name).await.unwrap().is_none(),
            "no Secret for the refused {name}"
        );
    }
}

#[tokio::test]
async fn reissues_when_the_secret_is_deleted_or_edited() {
    let fixture = Issued::new("tamper").await;
    let Issued {
        client,
        ns,
        tokens,
        secrets,
        ..
    } = &fixture;
    fixture.token("t", json!({})).await;
    let first = wait_reason(tokens, "t", "Issued")
        .await
        .status
        .unwrap()
        .token_id
        .unwrap();

    secrets.delete("t", &DeleteParams::default()).await.unwrap();
    let second = wait_for(
        tokens,
        "t",
        TIMEOUT,
        "a new token after the Secret was deleted",
        |t| t.status.as_ref().is_some_and(|s| s.revision == Some(2)),
    )
    .await
    .status
    .unwrap()
    .token_id
    .unwrap();
    assert!(secrets.get_opt("t").await.unwrap().is_some());
    assert!(
        is_recorded_as_revoked(client, &first).await,
        "the old token is revoked"
    );

    control_plane().kubectl(&[
        "patch",
        "secret",
        "t",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"stringData":{"token":"hand-made"}}"#,
    ]);
    let third = wait_for(
        tokens,
        "t",
        TIMEOUT,
        "a new token after the Secret was edited",
        |t| t.status.as_ref().is_some_and(|s| s.revision == Some(3)),
    )
    .await
    .status
    .unwrap();
    assert_ne!(third.token_id.as_deref(), Some(second.as_str()));
    let secret = secrets.get("t").await.unwrap();
    assert_ne!(secret_text(&secret, "token"), "hand-made");
    assert!(is_recorded_as_revoked(client, &second).await);
    eventually(
        Duration::from_secs(10),
        "an event saying Reissued",
        || async {
            let events = control_plane().kubectl(&["get", "events", "-n", &ns.name, "-o", "json"]);
            events.contains("Reissued").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn spec_changes_reissue_and_template_changes_do_not() {
    let fixture = Issued::new("change").await;
    let Issued {
        client,
        tokens,
        secrets,
        ..
    } = &fixture;
    let spec = |scopes: &[&str], label: &str| {
        json!({
            "scopes": scopes,
            "secretTemplate": { "labels": { "tier": label } },
        })
    };
    fixture.token("c", spec(&["read"], "one")).await;
    let first = wait_reason(tokens, "c", "Issued").await.status.unwrap();

    fixture.token("c", spec(&["read"], "two")).await;
    let relabelled = wait_for(secrets, "c", TIMEOUT, "the new label on the Secret", |s| {
        s.labels().get("tier").map(String::as_str) == Some("two")
    })
    .await;
    assert_eq!(
        Some(secret_text(&relabelled, "token-id")),
        first.token_id,
        "no new token"
    );
    assert_eq!(
        tokens.get("c").await.unwrap().status.unwrap().revision,
        Some(1)
    );

    fixture.token("c", spec(&["read", "write"], "two")).await;
    let changed = wait_for(
        tokens,
        "c",
        TIMEOUT,
        "a new token for the new scopes",
        |t| t.status.as_ref().is_some_and(|s| s.revision == Some(2)),
    )
    .await
    .status
    .unwrap();
    let secret = secrets.get("c").await.unwrap();
    assert_eq!(secret_text(&secret, "scopes"), "read write");
    assert_eq!(Some(secret_text(&secret, "token-id")), changed.token_id);
    assert!(is_recorded_as_revoked(client, first.token_id.as_deref().unwrap()).await);
}

#[tokio::test]
async fn old_tokens_verify_after_the_issuer_rotates_its_key() {
    let fixture = Issued::with_issuer(
        "keyrot",
        "rolling",
        json!({ "algorithm": "EdDSA", "keyRotation": { "interval": "15s" }, "maxLifetime": "5m" }),
    )
    .await;
    let Issued {
        client,
        ns,
        issuer,
        tokens,
        secrets,
        ..
    } = &fixture;
    let first_kid = issuer.status.clone().unwrap().active_key_id.unwrap();
    let spec = json!({ "lifetime": "4m" });
    fixture.token("before", spec.clone()).await;
    wait_reason(tokens, "before", "Issued").await;
    let old_jwt = secret_text(&secrets.get("before").await.unwrap(), "token");
    assert_eq!(
        jsonwebtoken::decode_header(&old_jwt)
            .unwrap()
            .kid
            .as_deref(),
        Some(first_kid.as_str())
    );

    let issuers: Api<tokensmith::api::TokenIssuer> = Api::namespaced(client.clone(), &ns.name);
    let rotated = wait_for(
        &issuers,
        "rolling",
        Duration::from_secs(40),
        "a new active key",
        |i| {
            i.status
                .as_ref()
                .and_then(|s| s.active_key_id.as_deref())
                .is_some_and(|k| k != first_kid)
        },
    )
    .await;
    let new_kid = rotated.status.clone().unwrap().active_key_id.unwrap();
    let published: Vec<String> = rotated
        .status
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert!(
        published.contains(&first_kid) && published.contains(&new_kid),
        "{published:?}"
    );

    fixture.token("after", spec).await;
    wait_reason(tokens, "after", "Issued").await;
    let new_jwt = secret_text(&secrets.get("after").await.unwrap(), "token");
    assert_eq!(
        jsonwebtoken::decode_header(&new_jwt)
            .unwrap()
            .kid
            .as_deref(),
        Some(new_kid.as_str())
    );
    verify_with_token_issuer(client, &ns.name, &rotated_issuer(&issuers).await, &old_jwt)
        .await
        .expect("a token of the retired key still verifies");
    verify_with_token_issuer(client, &ns.name, &rotated_issuer(&issuers).await, &new_jwt)
        .await
        .expect("a token of the new key verifies");
}

async fn rotated_issuer(
    issuers: &Api<tokensmith::api::TokenIssuer>,
) -> tokensmith::api::TokenIssuer {
    issuers.get("rolling").await.unwrap()
}

#[tokio::test]
async fn issues_opaque_tokens_with_prefix_and_checksum() {
    let fixture = Issued::new("opaque").await;
    let Issued {
        tokens, secrets, ..
    } = &fixture;
    fixture
        .token(
            "scanner-friendly",
            json!({ "format": "Opaque", "prefix": "etm_" }),
        )
        .await;
    let status = wait_reason(tokens, "scanner-friendly", "Issued")
        .await
        .status
        .unwrap();
    let secret = secrets.get("scanner-friendly").await.unwrap();
    let token = secret_text(&secret, "token");
    assert!(
        tokensmith::token::is_well_formed_opaque_token(&token, "etm_"),
        "{}",
        token.len()
    );
    assert_eq!(status.token_hash, Some(fingerprint(&token)));
    assert_eq!(status.key_id, None);
}

#[tokio::test]
async fn cluster_issuer_serves_only_the_namespaces_it_selects() {
    shared_operator();
    let client = control_plane().client().await;
    let admitted = TestNamespace::create(&client, "selected").await;
    let refused = TestNamespace::create(&client, "unselected").await;
    control_plane().kubectl(&["label", "namespace", &admitted.name, "tokens=allowed"]);
    let issuer_name = format!("by-label-{}", admitted.name);
    let issuers: Api<tokensmith::api::ClusterTokenIssuer> = Api::all(client.clone());
    apply(
        &issuers,
        &issuer_name,
        json!({ "spec": {
            "issuerURL": "https://tokens.test/cluster",
            "namespaceSelector": { "matchLabels": { "tokens": "allowed" } },
        }}),
    )
    .await;
    let issuer = wait_for(
        &issuers,
        &issuer_name,
        TIMEOUT,
        "the ClusterTokenIssuer to be Ready",
        |i| i.status.as_ref().is_some_and(|s| s.active_key_id.is_some()),
    )
    .await;
    // Its keys live in the operator's namespace, in a Secret it owns.
    let key_secret = Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get(&format!("tokensmith-clusterissuer-{issuer_name}"))
        .await
        .expect("the key Secret");
    assert_eq!(key_secret.owner_references()[0].uid, issuer.uid().unwrap());

    let spec =
        json!({ "spec": { "issuerRef": { "kind": "ClusterTokenIssuer", "name": issuer_name } } });
    let good: Api<AccessToken> = Api::namespaced(client.clone(), &admitted.name);
    apply(&good, "t", spec.clone()).await;
    let issued = wait_reason(&good, "t", "Issued").await.status.unwrap();
    assert_eq!(issued.key_id, issuer.status.clone().unwrap().active_key_id);

    let bad: Api<AccessToken> = Api::namespaced(client.clone(), &refused.name);
    apply(&bad, "t", spec).await;
    let t = wait_reason(&bad, "t", "InvalidSpec").await;
    let status = t.status.unwrap();
    let message = &support::resources::ready(&status.conditions)
        .unwrap()
        .message;
    assert!(message.contains("namespaceSelector"), "{message}");
    issuers
        .delete(&issuer_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn deleting_the_bound_object_revokes_the_token() {
    let fixture = Issued::new("bound").await;
    let Issued {
        client, ns, tokens, ..
    } = &fixture;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let user = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("alice".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    fixture
        .token(
            "alice-token",
            json!({
                "subject": "alice",
                "boundObjectRef": { "kind": "ConfigMap", "name": "alice" },
            }),
        )
        .await;
    let issued = wait_reason(tokens, "alice-token", "Issued").await;
    assert!(
        issued
            .owner_references()
            .iter()
            .any(|r| r.uid == user.uid().unwrap()),
        "the AccessToken is a dependent of its bound object"
    );
    let token_id = issued.status.unwrap().token_id.unwrap();

    config_maps
        .delete("alice", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        TIMEOUT,
        "the garbage collector and finalizer to remove the token",
        || async {
            tokens
                .get_opt("alice-token")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(is_recorded_as_revoked(client, &token_id).await);

    fixture
        .token(
            "nobody-token",
            json!({ "boundObjectRef": { "kind": "ServiceAccount", "name": "nobody" } }),
        )
        .await;
    wait_reason(tokens, "nobody-token", "InvalidSpec").await;
}

#[tokio::test]
async fn rotation_restarts_the_listed_workloads() {
    let fixture = Issued::new("restart-targets").await;
    let Issued {
        client, ns, tokens, ..
    } = &fixture;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns.name);
    apply(
        &deployments,
        "reader",
        json!({
            "metadata": { "annotations": { "tokensmith.dev/restart-allowed-by": "other, env-token" } },
            "spec": {
            "selector": { "matchLabels": { "app": "reader" } },
            "template": {
                "metadata": { "labels": { "app": "reader" } },
                "spec": { "containers": [{ "name": "app", "image": "example.invalid/reader:1" }] },
            },
        }}),
    )
    .await;
    fixture
        .token(
            "env-token",
            json!({
                "lifetime": "15s",
                "rolloutRestartTargets": [{ "kind": "Deployment", "name": "reader" }],
            }),
        )
        .await;
    wait_reason(tokens, "env-token", "Issued").await;
    let restarted = wait_for(
        &deployments,
        "reader",
        Duration::from_secs(30),
        "a rollout restart",
        |d| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .is_some_and(|a| a.contains_key("tokensmith.dev/restartedAt"))
        },
    )
    .await;
    assert!(restarted.metadata.generation.unwrap() >= 2);
    // The workloads restart before the mint's status is written (so that the
    // status can say how the restart went): wait for that write.
    let token = wait_for(
        tokens,
        "env-token",
        Duration::from_secs(10),
        "the rotation's status",
        |t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "RolloutRestart"))
        },
    )
    .await;
    let status = token.status.unwrap();
    assert_eq!(status.revision, Some(2), "the restart followed a rotation");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "RolloutRestart")
        .expect("a RolloutRestart condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "Restarted")
    );
}

#[tokio::test]
async fn app_tokens_carry_the_client_id() {
    let fixture = Issued::new("app").await;
    let Issued {
        client,
        ns,
        issuer,
        tokens,
        secrets,
        ..
    } = &fixture;
    let apps: Api<tokensmith::api::AppRegistration> = Api::namespaced(client.clone(), &ns.name);
    let app = apply(&apps, "billing", json!({ "spec": { "scopes": ["read"] } })).await;
    fixture
        .token(
            "billing-token",
            json!({ "appRef": { "name": "billing" }, "userless": true }),
        )
        .await;
    let status = wait_reason(tokens, "billing-token", "Issued")
        .await
        .status
        .unwrap();
    let secret = secrets.get("billing-token").await.unwrap();
    let claims = verify_with_token_issuer(client, &ns.name, issuer, &secret_text(&secret, "token"))
        .await
        .unwrap();
    assert_eq!(claims.client_id, app.uid());
    assert_eq!(
        Some(claims.sub),
        status.token_id,
        "a userless token is its own subject"
    );
}

#[tokio::test]
async fn deleting_the_namespace_revokes_its_tokens_without_retrying_writes() {
    let fixture = Issued::new("nsgone").await;
    let Issued {
        operator,
        client,
        ns,
        tokens,
        ..
    } = &fixture;
    let spec = json!({ "lifetime": "1h" });
    let names = ["first", "second", "third"];
    for name in names {
        fixture.token(name, spec.clone()).await;
    }
    let mut token_ids = Vec::new();
    for name in names {
        let issued = wait_reason(tokens, name, "Issued").await;
        token_ids.push(issued.status.unwrap().token_id.unwrap());
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(120),
        "the namespace to be gone",
        || async {
            namespaces
                .get_opt(&ns.name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    for token_id in &token_ids {
        assert!(
            is_recorded_as_revoked(client, token_id).await,
            "token {token_id} was not revoked with its namespace"
        );
    }
    // While the namespace terminates nothing can be created in it: the
    // operator must wait for the deletions rather than retry re-minting.
    let log = operator.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains(ns.name.as_str()))
        .collect();
    assert!(
        warnings.is_empty(),
        "warnings about the deleted namespace:\n{}",
        warnings.join("\n")
    );
}

#[tokio::test]
async fn a_secret_the_api_server_refuses_is_reported_not_retried() {
    let fixture = Issued::new("refused-secret").await;
    let Issued {
        tokens, secrets, ..
    } = &fixture;
    // A label key the API server does not allow, and annotations over the
    // 256 KiB a Secret may carry. (Names too long for a label value are
    // refused at admission: tests/admission.rs.)
    let huge = "x".repeat(300 * 1024);
    for (name, spec) in [
        (
            "bad-label",
            json!({ "secretTemplate": { "labels": { "not a key!": "x" } } }),
        ),
        (
            "huge-annotations",
            json!({ "secretTemplate": { "annotations": { "note": huge } } }),
        ),
    ] {
        fixture.token(name, spec).await;
        let refused = wait_reason(tokens, name, "InvalidSpec").await;
        let status = refused.status.unwrap();
        let message = &support::resources::ready(&status.conditions)
            .unwrap()
            .message;
        assert!(message.contains("cannot be written"), "{message}");
        assert!(secrets.get_opt(name).await.unwrap().is_none());
    }
}

/// The field managers that hold the revocation finalizer on `token`.
/// The subresource of each write the operator's field manager holds on
/// `token` (`None`: the object itself, as for its finalizer).
fn operator_writes(token: &AccessToken) -> Vec<Option<String>> {
    token
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some("tokensmith"))
        .map(|entry| entry.subresource.clone())
        .collect()
}

fn finalizer_holders(token: &AccessToken) -> Vec<String> {
    token
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.fields_v1.as_ref().is_some_and(|fields| {
                fields.0["f:metadata"]["f:finalizers"]
                    .get(format!("v:{}", json!(FINALIZER)))
                    .is_some()
            })
        })
        .filter_map(|entry| entry.manager.clone())
        .collect()
}

#[tokio::test]
async fn the_operator_holds_its_finalizer_under_its_own_field_manager() {
    let fixture = Issued::new("manager").await;
    fixture.token("held", json!({})).await;
    let token = wait_reason(&fixture.tokens, "held", "Issued").await;
    assert_eq!(
        finalizer_holders(&token),
        ["tokensmith"],
        "{:?}",
        token.metadata.managed_fields
    );
}

/// With the chart's admission policy a new token has the revocation
/// finalizer from its creation, and the operator writes no finalizer: only
/// the status. Where the token's own applier holds finalizers too, the
/// operator takes hold of its own, or the applier's next apply without
/// them would take the operator's away as well.
#[tokio::test]
async fn with_the_chart_s_policy_the_finalizer_comes_with_the_token() {
    let fixture = Issued::new("policy").await;
    let release = format!("fp-{}", &fixture.ns.name[fixture.ns.name.len() - 8..]);
    let ns = fixture.ns.name.as_str();
    let Some(_policy) = FinalizerPolicy::apply(control_plane(), &release, Bound::To(ns), ns) else {
        // An older Kubernetes: the operator adds the finalizer, as
        // the_operator_holds_its_finalizer_under_its_own_field_manager shows.
        eprintln!("this API server serves no MutatingAdmissionPolicy: nothing to test");
        return;
    };
    let created = fixture.token("given", json!({})).await;
    assert_eq!(created.finalizers(), [FINALIZER]);
    let token = wait_reason(&fixture.tokens, "given", "Issued").await;
    assert_eq!(token.finalizers(), [FINALIZER]);
    assert!(
        finalizer_holders(&token).is_empty(),
        "{:?}",
        token.metadata.managed_fields
    );
    assert_eq!(operator_writes(&token), [Some("status".to_string())]);

    let tenant = PatchParams::apply("tenant-gitops").force();
    let manifest = |finalizers: &[&str]| {
        let mut manifest = json!({
            "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
            "metadata": { "name": "own" },
            "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "lifetime": "1h" },
        });
        if !finalizers.is_empty() {
            manifest["metadata"]["finalizers"] = json!(finalizers);
        }
        manifest
    };
    let created = fixture
        .tokens
        .patch(
            "own",
            &tenant,
            &Patch::Apply(manifest(&["example.com/hold"])),
        )
        .await
        .unwrap();
    assert_eq!(created.finalizers(), ["example.com/hold", FINALIZER]);
    wait_reason(&fixture.tokens, "own", "Issued").await;
    eventually(TIMEOUT, "the operator to hold its finalizer", || async {
        let token = fixture.tokens.get("own").await.unwrap();
        (finalizer_holders(&token) == ["tokensmith"]).then_some(())
    })
    .await;
    // GitOps drops its own finalizer from the manifest: only that one goes.
    let applied = fixture
        .tokens
        .patch("own", &tenant, &Patch::Apply(manifest(&[])))
        .await
        .unwrap();
    assert_eq!(applied.finalizers(), [FINALIZER]);
}

/// With the finalizer webhook (the chart's `finalizerWebhook`), a new token
/// has the revocation finalizer from its creation and the operator writes
/// only its status. The operator sets the webhook's caBundle to its CA, and
/// writes nothing when it is set already. With the webhook down, a create
/// still goes through (`failurePolicy: Ignore`) and the operator applies
/// the finalizer itself.
#[tokio::test]
async fn the_finalizer_webhook_gives_the_finalizer_at_creation() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use support::operator::{Operator, free_port};
    let fixture = Issued::new("webhook").await;
    let ns = fixture.ns.name.as_str();
    let name = format!("tokensmith-finalizer-{ns}");
    let port = free_port();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(fixture.client.clone());
    let config = support::finalizer_webhook::configuration(
        &name,
        &format!("https://127.0.0.1:{port}"),
        ns,
        None,
    );
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    let mut webhook = Operator::start_on(port, &["--finalizer-webhook", &name]);
    webhook.http().await;
    let ca = webhook.ca_pem().expect("the CA is published");
    let trusted = eventually(TIMEOUT, "the operator to set the caBundle", || async {
        let config = configs.get(&name).await.unwrap();
        let bundle = config.webhooks.as_ref()?[0]
            .client_config
            .ca_bundle
            .clone()?;
        (bundle.0 == ca.as_bytes()).then_some(config)
    })
    .await;

    let created = fixture.token("given", json!({})).await;
    assert_eq!(created.finalizers(), [FINALIZER]);
    let token = wait_reason(&fixture.tokens, "given", "Issued").await;
    assert_eq!(token.finalizers(), [FINALIZER]);
    assert_eq!(operator_writes(&token), [Some("status".to_string())]);

    // Restarted, with the caBundle right: no write.
    webhook.stop_with(libc::SIGTERM);
    let mut webhook = Operator::start_on(port, &["--finalizer-webhook", &name]);
    webhook.http().await;
    let after = configs.get(&name).await.unwrap();
    assert_eq!(
        after.metadata.resource_version, trusted.metadata.resource_version,
        "the operator wrote a caBundle that was right"
    );

    // The webhook down: the create is not refused, and the finalizer comes
    // from the operator.
    webhook.stop_with(libc::SIGTERM);
    let created = fixture.token("unhooked", json!({})).await;
    assert!(
        created.finalizers().is_empty(),
        "{:?}",
        created.finalizers()
    );
    let token = wait_reason(&fixture.tokens, "unhooked", "Issued").await;
    assert_eq!(token.finalizers(), [FINALIZER]);
    configs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

// In this binary rather than tests/metrics.rs, whose own operator must be
// the only one there: the series come from the shared operator's caches.
#[tokio::test]
async fn per_object_series_come_and_go_with_their_objects() {
    let fixture = Issued::new("series").await;
    let operator = fixture.operator;
    fixture.token("watched", json!({ "lifetime": "1h" })).await;
    let token = wait_reason(&fixture.tokens, "watched", "Issued").await;
    let status = token.status.unwrap();
    let labels = format!(
        r#"namespace="{}",name="watched",issuer_kind="TokenIssuer",issuer_name="signer""#,
        fixture.ns.name
    );
    let series = |name: &str| format!("tokensmith_access_token_{name}{{{labels}}}");
    let ready = |condition: &str| {
        format!("tokensmith_access_token_ready_status{{{labels},condition=\"{condition}\"}}")
    };
    // The series come from the operator's watch cache, which can lag a
    // moment behind the Issued status just read from the API server.
    eventually(
        Duration::from_secs(30),
        "the operator's series to show the issued token",
        || async {
            let shown = operator
                .sample(&series("expiration_timestamp_seconds"))
                .await
                .is_some()
                && operator.sample(&ready("True")).await == Some(1.0);
            shown.then_some(())
        },
    )
    .await;
    assert_eq!(
        operator
            .sample(&series("expiration_timestamp_seconds"))
            .await,
        Some(status.expires_at.unwrap().0.as_second() as f64)
    );
    assert_eq!(
        operator.sample(&series("renewal_timestamp_seconds")).await,
        Some(status.renewal_time.unwrap().0.as_second() as f64)
    );
    assert_eq!(operator.sample(&ready("True")).await, Some(1.0));
    assert_eq!(operator.sample(&ready("False")).await, Some(0.0));
    let issuer = format!(
        r#"tokensmith_issuer_ready_status{{namespace="{}",name="signer",issuer_kind="TokenIssuer",issuer_name="signer",condition="True"}}"#,
        fixture.ns.name
    );
    assert_eq!(operator.sample(&issuer).await, Some(1.0));
    assert_eq!(
        operator
            .sample(&format!(
                r#"tokensmith_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            ))
            .await,
        Some(1.0)
    );

    // Every endpoint is counted, not only /oauth/token: an introspection
    // without client credentials is a 4xx of introspection.
    let counted = r#"tokensmith_http_requests_total{endpoint="introspection",code="4xx"}"#;
    let before = operator.sample(counted).await.unwrap_or(0.0);
    let http = operator.http().await;
    let status = http
        .post(format!("{}/oauth/introspect", operator.url))
        .form(&[("token", "nothing")])
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_client_error(), "{status}");
    assert_eq!(operator.sample(counted).await, Some(before + 1.0));

    fixture
        .tokens
        .delete("watched", &Default::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the AccessToken's series to go with it",
        || async {
            let gone = operator
                .sample(&series("expiration_timestamp_seconds"))
                .await
                .is_none()
                && operator.sample(&ready("True")).await.is_none();
            gone.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn renew_mints_a_new_token_and_leaves_the_old_one_valid() {
    let fixture = Issued::new("renew").await;
    let Issued { tokens, ns, .. } = &fixture;
    fixture.token("asked", json!({ "lifetime": "1h" })).await;
    let first = wait_reason(tokens, "asked", "Issued").await.status.unwrap();
    let old_id = first.token_id.clone().unwrap();
    let renew = std::process::Command::new(env!("CARGO_BIN_EXE_tokensmith"))
        .args(["token", "renew", "asked", "-n", &ns.name])
        .args(["--kubeconfig", control_plane().kubeconfig.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        renew.status.success(),
        "{}",
        String::from_utf8_lossy(&renew.stderr)
    );
    // The mint rate limit holds: at most one mint per 10 s.
    let renewed = wait_for(
        tokens,
        "asked",
        Duration::from_secs(60),
        "a renewed token",
        |t| t.status.as_ref().and_then(|s| s.revision) == Some(2),
    )
    .await;
    let status = renewed.status.unwrap();
    assert_eq!(
        reason(&wait_reason(tokens, "asked", "Rotated").await).as_deref(),
        Some("Rotated")
    );
    assert_ne!(status.token_id.as_deref(), Some(old_id.as_str()));
    assert!(
        status.previous_tokens.iter().any(|p| p.token_id == old_id),
        "the old token is listed: {:?}",
        status.previous_tokens
    );
    assert!(
        !is_recorded_as_revoked(&fixture.client, &old_id).await,
        "the old token stays valid"
    );
    assert!(
        status.issued_at.unwrap().0
            >= first
                .issued_at
                .unwrap()
                .0
                .checked_add(std::time::Duration::from_secs(10))
                .unwrap()
    );
    // Served once: the same request asks for nothing more.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let later = tokens.get("asked").await.unwrap().status.unwrap();
    assert_eq!(later.revision, Some(2), "one request, one new token");
}
