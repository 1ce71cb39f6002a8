//! One object the operator cannot decode does not stop it: a restarted
//! operator lists around it, names it once in its log, and goes on serving
//! and minting for everyone else.

mod support;

use std::time::Duration;

use kube::{Api, api::DeleteParams};
use serde_json::json;
use support::{
    TestNamespace, control_plane, eventually,
    operator::Operator,
    resources::{apply, token_issuer, wait_reason},
};
use tokensmith::api::AccessToken;

/// A time admission accepts (`format: date-time`) that the operator's
/// timestamp type cannot hold (it ends at 9999-12-30).
const UNREPRESENTABLE: &str = "9999-12-31T23:59:59Z";

fn spec() -> serde_json::Value {
    json!({ "spec": {
        "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
        "lifetime": "1h",
    }})
}

/// Writes `expiresAt` into the AccessToken's status, as anyone allowed to
/// write the status subresource could.
fn set_status_expiry(namespace: &str, name: &str, expires_at: &str) {
    control_plane().kubectl(&[
        "patch",
        "accesstoken",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({ "status": { "expiresAt": expires_at } }).to_string(),
    ]);
}

/// The message of the AccessToken's Ready condition, read untyped: the
/// object may not fit the Rust type.
fn ready_message(namespace: &str, name: &str) -> Option<String> {
    let output = control_plane().kubectl_output(&[
        "get",
        "accesstoken",
        name,
        "-n",
        namespace,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}",
    ]);
    String::from_utf8(output.stdout).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_access_token_does_not_stop_a_restarted_operator() {
    let client = control_plane().client().await;
    let poisoned_ns = TestNamespace::create(&client, "poisoned").await;
    let healthy_ns = TestNamespace::create(&client, "healthy").await;
    let mut first = Operator::start(&[]);
    token_issuer(&client, &poisoned_ns.name, "signer", json!({})).await;
    token_issuer(&client, &healthy_ns.name, "signer", json!({})).await;
    let poisoned: Api<AccessToken> = Api::namespaced(client.clone(), &poisoned_ns.name);
    let healthy: Api<AccessToken> = Api::namespaced(client.clone(), &healthy_ns.name);
    apply(&poisoned, "poison", spec()).await;
    wait_reason(&poisoned, "poison", "Issued").await;
    set_status_expiry(&poisoned_ns.name, "poison", UNREPRESENTABLE);
    // The live operator names it as the watch event arrives...
    eventually(
        Duration::from_secs(30),
        "the live operator to name the object",
        || async {
            first
                .log_text()
                .contains("object cannot be decoded")
                .then_some(())
        },
    )
    .await;
    first.stop_with(libc::SIGTERM);

    // ...and a restarted one lists around it.
    let second = Operator::start(&[]);
    second.http().await;
    let probe = format!("{}/readyz", second.metrics_url);
    eventually(
        Duration::from_secs(30),
        "the restarted operator to be ready",
        || async {
            let status = reqwest::get(&probe).await.ok()?.status();
            status.is_success().then_some(())
        },
    )
    .await;
    apply(&healthy, "fresh", spec()).await;
    wait_reason(&healthy, "fresh", "Issued").await;

    // The leader tells the object's owner why it is ignored.
    eventually(
        Duration::from_secs(30),
        "a condition saying why",
        || async {
            let message = ready_message(&poisoned_ns.name, "poison")?;
            (message.contains("cannot read this object") && message.contains("status.expiresAt"))
                .then_some(())
        },
    )
    .await;

    let log = second.log_text();
    let naming: Vec<&str> = log
        .lines()
        // Every test's operator watches the whole cluster: only this
        // test's object counts.
        .filter(|l| l.contains("object cannot be decoded") && l.contains(&poisoned_ns.name))
        .collect();
    assert_eq!(naming.len(), 1, "named once: {naming:#?}");
    assert!(
        naming[0].contains("poison") && naming[0].contains("status.expiresAt"),
        "the line names the object and the field: {}",
        naming[0]
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 4096,
        "no log line carries a whole list ({longest} bytes)"
    );
    assert!(!log.contains("panicked"), "no panic");

    // Repaired, it is reconciled again: its deletion goes through the
    // operator's finalizer, so its namespace can go too.
    set_status_expiry(&poisoned_ns.name, "poison", "2030-01-01T00:00:00Z");
    poisoned
        .delete("poison", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually(
        Duration::from_secs(30),
        "the repaired AccessToken to be gone",
        || async { matches!(poisoned.get_opt("poison").await, Ok(None)).then_some(()) },
    )
    .await;
}

/// A time the API server and the operator both read, but that the operator
/// writes back in a form that does not read again (a year before 1): the
/// token's cache entry is checked when it is made, so the token is reported
/// instead of failing every later read of it (the watch, the reconciles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_does_not_read_back_is_reported_and_the_rest_goes_on() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "roundtrip").await;
    let operator = Operator::start(&[]);
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    apply(&tokens, "odd", spec()).await;
    wait_reason(&tokens, "odd", "Issued").await;
    set_status_expiry(&ns.name, "odd", "0000-01-01T00:00:00+01:00");
    eventually(
        Duration::from_secs(30),
        "a condition saying why",
        || async {
            let message = ready_message(&ns.name, "odd")?;
            message.contains("does not read back").then_some(())
        },
    )
    .await;
    apply(&tokens, "after", spec()).await;
    wait_reason(&tokens, "after", "Issued").await;
    assert!(!operator.log_text().contains("panicked"), "no panic");

    set_status_expiry(&ns.name, "odd", "2030-01-01T00:00:00Z");
    tokens
        .delete("odd", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually(
        Duration::from_secs(30),
        "the repaired AccessToken to be gone",
        || async { matches!(tokens.get_opt("odd").await, Ok(None)).then_some(()) },
    )
    .await;
}
