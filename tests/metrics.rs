//! `/metrics`, `/healthz` and `/readyz` after a scripted scenario: the
//! counters say exactly what happened.

mod support;

use std::time::Duration;

use kube::{Api, api::ListParams};
use serde_json::json;
use support::{
    TestNamespace, control_plane, eventually,
    oauth::{app, served_issuer, token_request},
    operator::Operator,
    resources::{apply, wait_reason},
};
use tokensmith::api::AccessToken;

/// Waits until no other test's AccessTokens are left: this operator would
/// revoke (and count) them during the scenario.
async fn others_gone(client: &kube::Client, own: &str) {
    let tokens: Api<AccessToken> = Api::all(client.clone());
    eventually(
        Duration::from_secs(300),
        "other tests' AccessTokens to be deleted",
        || async {
            let listed = tokens.list_metadata(&ListParams::default()).await.ok()?;
            listed
                .items
                .iter()
                .all(|t| t.metadata.namespace.as_deref() == Some(own))
                .then_some(())
        },
    )
    .await;
}

/// The metrics once no counter has moved for three seconds.
async fn settled(operator: &Operator) -> String {
    let counters = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("_total") && !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    let mut last = operator.metrics().await;
    let mut quiet = 0;
    while quiet < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = operator.metrics().await;
        quiet = if counters(&now) == counters(&last) {
            quiet + 1
        } else {
            0
        };
        last = now;
    }
    last
}

#[tokio::test]
async fn metrics_count_the_scenario() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "metrics").await;
    // An operator of its own, so the counters hold this scenario only.
    let operator = Operator::start(&[]);
    let http = operator.http().await;
    let probe = |path: &'static str| {
        let url = format!("{}{path}", operator.metrics_url);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(probe("/healthz").await, 200);
    assert_eq!(
        probe("/readyz").await,
        200,
        "ready once the token service serves"
    );
    // The cluster is shared with other test binaries, whose leftovers this
    // operator may still be cleaning up: wait until their AccessTokens are
    // gone, then count from a settled baseline.
    others_gone(&client, &ns.name).await;
    let baseline = settled(&operator).await;

    served_issuer(&client, &operator, &ns.name, "signer").await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let spec = |extra: serde_json::Value| {
        let mut spec =
            json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "lifetime": "1h" });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "spec": spec })
    };
    apply(&tokens, "kept", spec(json!({}))).await;
    apply(&tokens, "revoked", spec(json!({}))).await;
    apply(
        &tokens,
        "short",
        spec(json!({ "lifetime": "12s", "onExpiry": "Delete" })),
    )
    .await;
    for name in ["kept", "revoked", "short"] {
        wait_reason(&tokens, name, "Issued").await;
    }
    // The gauge is computed from the operator's watch cache, which can lag a
    // moment behind the statuses just read: read it until it shows the 12 s
    // token (for 10 s at most; past that the token has expired anyway).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let soonest = loop {
        let soonest = operator
            .sample("tokensmith_soonest_token_expiry_seconds")
            .await;
        if soonest.is_some_and(|s| (0.0..=12.0).contains(&s))
            || tokio::time::Instant::now() >= deadline
        {
            break soonest.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        (0.0..=12.0).contains(&soonest),
        "the 12 s token expires soonest: {soonest}"
    );

    apply(&tokens, "revoked", spec(json!({ "revoked": true }))).await;
    wait_reason(&tokens, "revoked", "Revoked").await;
    eventually(
        Duration::from_secs(30),
        "the short token to expire",
        || async {
            let token = tokens.get("short").await.unwrap();
            (support::resources::reason(&token).as_deref() == Some("Expired")).then_some(())
        },
    )
    .await;

    let creds = app(
        &http,
        &operator,
        &client,
        &ns.name,
        "machine",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "scopes": ["read"] }),
    )
    .await;
    for scope in ["read", "read", "admin"] {
        token_request(
            &http,
            &operator,
            &creds,
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
    }
    token_request(&http, &operator, &creds, &[("grant_type", "password")]).await;

    let text = operator.metrics().await;
    let value = |series: &str| {
        let now = support::operator::sample(&text, series)?;
        Some(now - support::operator::sample(&baseline, series).unwrap_or(0.0))
    };
    assert_eq!(
        support::operator::sample(&text, "tokensmith_leader"),
        Some(1.0)
    );
    assert_eq!(value("tokensmith_tokens_issued_total"), Some(3.0), "{text}");
    assert_eq!(value("tokensmith_tokens_revoked_total"), Some(1.0));
    assert_eq!(value("tokensmith_tokens_expired_total"), Some(1.0));
    assert_eq!(value("tokensmith_tokens_rotated_total"), Some(0.0));
    assert_eq!(
        value(r#"tokensmith_token_requests_total{grant="client_credentials",outcome="ok"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(
            r#"tokensmith_token_requests_total{grant="client_credentials",outcome="invalid_scope"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(r#"tokensmith_token_requests_total{grant="other",outcome="unsupported_grant_type"}"#),
        Some(1.0)
    );
    let reconciles =
        value(r#"tokensmith_reconciles_total{kind="AccessToken",result="ok"}"#).unwrap();
    assert!(reconciles >= 5.0, "{reconciles}");
    let observed =
        value(r#"tokensmith_reconcile_duration_seconds_count{kind="AccessToken"}"#).unwrap();
    assert!(observed >= reconciles, "every reconcile is timed");
    assert!(
        value(r#"tokensmith_reconciles_total{kind="TokenIssuer",result="ok"}"#).unwrap() >= 1.0
    );
    assert!(
        value(r#"tokensmith_reconciles_total{kind="AppRegistration",result="ok"}"#).unwrap() >= 1.0
    );
    // "short" is gone: the soonest expiry is now at most "kept"'s hour.
    let soonest =
        support::operator::sample(&text, "tokensmith_soonest_token_expiry_seconds").unwrap();
    assert!((12.0..=3600.0).contains(&soonest), "{soonest}");
}
