//! Restarting the operator costs nothing: with 200 Ready AccessTokens, the
//! new process makes no write to the API server and mints no token.

mod support;

use std::{collections::BTreeMap, time::Duration};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::json;
use support::{
    TestNamespace, control_plane, eventually,
    operator::Operator,
    resources::{apply, is_ready, token_issuer},
};
use tokensmith::api::AccessToken;

const TOKENS: usize = 200;

/// Writes made by the operator's identity so far, read from the control
/// plane's audit log (which records every write with its user), whose
/// request path holds one of `scopes`. Only what a start could rewrite is
/// looked at: an operator also finishes the deletions of namespaces that
/// earlier test binaries left behind, and prunes their revocations.
fn operator_writes(audit_log: &std::path::Path, scopes: &[String]) -> Vec<String> {
    let text = std::fs::read_to_string(audit_log).expect("readable audit log");
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["user"]["username"] == "tokensmith-operator")
        .filter(|event| {
            event["requestURI"]
                .as_str()
                .is_some_and(|uri| scopes.iter().any(|scope| uri.contains(scope)))
        })
        .filter(|event| {
            matches!(
                event["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .map(|event| format!("{} {}", event["verb"], event["requestURI"]))
        .collect()
}

/// Per token: (tokenID, revision) from the status, and the Secret's resourceVersion.
async fn snapshot(
    client: &kube::Client,
    namespace: &str,
) -> BTreeMap<String, (Option<String>, Option<i64>, Option<String>)> {
    let tokens = Api::<AccessToken>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    tokens
        .into_iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            let secret_version = secrets
                .iter()
                .find(|s| s.name_any() == t.name_any())
                .and_then(|s| s.resource_version());
            (
                t.name_any(),
                (status.token_id, status.revision, secret_version),
            )
        })
        .collect()
}

#[tokio::test]
async fn restart_with_ready_tokens_makes_no_writes() {
    let audit_log = control_plane().kubeconfig.with_file_name("audit.log");
    assert!(
        audit_log.exists(),
        "this test counts writes in the audit log of the control plane started by hack/control-plane.sh ({} is missing)",
        audit_log.display()
    );
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "restart").await;
    let mut first = Operator::start(&[]);
    // The test's namespace, and what every start publishes in the
    // operator's own: the CA ConfigMap and the serving certificate.
    let operator_namespace = &first.namespace;
    let watched = [
        format!("/namespaces/{}/", ns.name),
        format!("/namespaces/{operator_namespace}/configmaps/tokensmith-ca"),
        format!("/namespaces/{operator_namespace}/secrets/tokensmith-serving-cert"),
    ];
    let writes_at_start = operator_writes(&audit_log, &watched).len();
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    stream::iter(0..TOKENS)
        .for_each_concurrent(16, |i| {
            let tokens = tokens.clone();
            async move {
                apply(
                    &tokens,
                    &format!("token-{i:03}"),
                    json!({ "spec": {
                        "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
                        "scopes": ["read"],
                        "lifetime": "24h",
                    }}),
                )
                .await;
            }
        })
        .await;
    eventually(
        Duration::from_secs(180),
        "200 Ready AccessTokens",
        || async {
            let list = tokens.list(&ListParams::default()).await.ok()?;
            let ready = list
                .iter()
                .filter(|t| t.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
                .count();
            (ready == TOKENS).then_some(())
        },
    )
    .await;
    first.stop_with(libc::SIGTERM);

    let before = snapshot(&client, &ns.name).await;
    let writes_before = operator_writes(&audit_log, &watched).len();
    let second = Operator::start(&[]);
    // The new process has looked at every token once it logged as many
    // finished reconciles; a little more time shows nothing else follows.
    eventually(
        Duration::from_secs(120),
        "the restarted operator to reconcile every token",
        || async {
            let done = second.log_text().matches("reconciled").count();
            (done >= TOKENS).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let writes = operator_writes(&audit_log, &watched);
    let new_writes = &writes[writes_before..];
    assert!(
        new_writes.is_empty(),
        "the restarted operator wrote: {new_writes:#?}"
    );
    let after = snapshot(&client, &ns.name).await;
    assert_eq!(after.len(), TOKENS);
    assert_eq!(
        before, after,
        "no token was re-minted and no Secret changed"
    );
    println!(
        "restart with {TOKENS} Ready tokens: the first operator made {} writes to issue them, the restarted one {}",
        writes_before - writes_at_start,
        new_writes.len()
    );
}

/// The reader the scale figures follow the audit log with (lines across a
/// rotation, a line or a character cut by a read), tested here where
/// `cargo test` runs it.
#[test]
fn a_tail_reads_complete_lines_across_a_rotation() {
    use std::io::Write;
    let dir = support::repo_root()
        .join("target/tmp")
        .join(format!("tail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.log");
    std::fs::write(&path, "before\n").unwrap();
    let mut tail = support::tail::Tail::from_end(path.clone());
    let append = |bytes: &[u8]| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    };
    append(b"one\ntw");
    assert_eq!(tail.lines(), ["one"]);
    // A read that ends inside a character: nothing is lost.
    append(b"o \xc3");
    assert!(tail.lines().is_empty());
    append(b"\xa9\n");
    std::fs::rename(&path, dir.join("audit-rotated.log")).unwrap();
    append(b"three\n");
    assert_eq!(tail.lines(), ["two é", "three"]);
    assert!(tail.lines().is_empty());
    let mut whole = support::tail::Tail::from_start(path.clone());
    assert_eq!(whole.lines(), ["three"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
