//! On a control plane of its own: the operator opens one watch per kind,
//! selector and projection (counted by the API server itself), and after the
//! API server stops for 30 s and comes back on the same etcd, new, changed
//! and deleted AccessTokens are handled within seconds.

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace, eventually,
    operator::Operator,
    private_control_plane,
    resources::{apply, reason, secret_text, token_issuer, wait_reason},
};
use tokensmith::api::AccessToken;

/// How long the API server stays down.
const OUTAGE: Duration = Duration::from_secs(30);
/// The longest a change may wait after the API server is back.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

/// Long-running WATCH requests the API server is serving, by resource.
fn open_watches(cp: &ControlPlane) -> BTreeMap<String, i64> {
    let mut watches = BTreeMap::new();
    for (labels, count) in cp.api_server_metric("apiserver_longrunning_requests") {
        if labels.get("verb").map(String::as_str) == Some("WATCH") {
            let resource = labels.get("resource").cloned().unwrap_or_default();
            *watches.entry(resource).or_insert(0) += count as i64;
        }
    }
    watches
}

/// The operator's watches: what is open now beyond `baseline`.
fn operator_watches(cp: &ControlPlane, baseline: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    open_watches(cp)
        .into_iter()
        .map(|(resource, n)| {
            let before = baseline.get(&resource).copied().unwrap_or(0);
            (resource, n - before)
        })
        .filter(|(_, n)| *n != 0)
        .collect()
}

/// What the operator should watch: each kind once; Secrets twice (the
/// metadata of the Secrets it manages, and the data of its key Secrets).
fn expected_watches() -> BTreeMap<String, i64> {
    [
        ("accesstokens", 1),
        ("appregistrations", 1),
        ("tokenissuers", 1),
        ("clustertokenissuers", 1),
        ("namespaces", 1),
        ("configmaps", 1),
        ("secrets", 2),
    ]
    .into_iter()
    .map(|(r, n)| (r.to_string(), n))
    .collect()
}

fn access_token(issuer: &str, scopes: &[&str]) -> serde_json::Value {
    json!({ "spec": {
        "issuerRef": { "kind": "TokenIssuer", "name": issuer },
        "scopes": scopes,
        "lifetime": "1h",
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watch_per_kind_and_recovery_within_seconds_of_an_api_server_restart() {
    let cp = private_control_plane();
    let client = cp.client().await;
    let baseline = open_watches(cp);
    let operator = Operator::start(&[]);
    let http = operator.http().await;
    let ns = TestNamespace::create(&client, "apiserver-restart").await;
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    apply(&tokens, "to-delete", access_token("signer", &["read"])).await;
    apply(&tokens, "to-change", access_token("signer", &["read"])).await;
    wait_reason(&tokens, "to-delete", "Issued").await;
    wait_reason(&tokens, "to-change", "Issued").await;
    let doomed = secret_text(&secrets.get("to-delete").await.unwrap(), "token");
    let info = format!("{}/oauth/token/info", operator.url);
    let info_status = |token: String| {
        let (http, info) = (http.clone(), info.clone());
        async move {
            http.get(&info)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(
        info_status(doomed.clone()).await,
        200,
        "the token is active"
    );

    // One watch per kind, selector and projection, as the API server counts.
    let watches = eventually(
        Duration::from_secs(30),
        "the operator's watches",
        || async {
            let now = operator_watches(cp, &baseline);
            (now == expected_watches()).then_some(now)
        },
    )
    .await;
    println!("operator watches by resource: {watches:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        operator_watches(cp, &baseline),
        expected_watches(),
        "no further watch opens once the operator runs"
    );

    cp.stop_api_server();
    tokio::time::sleep(OUTAGE).await;
    cp.start_api_server();
    let back = Instant::now();

    let created = async {
        apply(&tokens, "created-after", access_token("signer", &["read"])).await;
        eventually(RECOVERY_LIMIT * 3, "the new token to be Issued", || async {
            let token = tokens.get_opt("created-after").await.ok().flatten()?;
            (reason(&token).as_deref() == Some("Issued")).then_some(())
        })
        .await;
        back.elapsed()
    };
    let changed = async {
        tokens
            .patch(
                "to-change",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "scopes": ["read", "write"] } })),
            )
            .await
            .expect("scopes changed");
        eventually(
            RECOVERY_LIMIT * 3,
            "the changed token to be re-minted",
            || async {
                let token = tokens.get_opt("to-change").await.ok().flatten()?;
                let minted = token.status?.minted?;
                (minted.scopes.len() == 2).then_some(())
            },
        )
        .await;
        back.elapsed()
    };
    let deleted = async {
        tokens
            .delete("to-delete", &DeleteParams::default())
            .await
            .expect("deleted");
        eventually(
            RECOVERY_LIMIT * 3,
            "the deleted token to be inactive",
            || {
                let status = info_status(doomed.clone());
                async move { (status.await == 401).then_some(()) }
            },
        )
        .await;
        back.elapsed()
    };
    let (created, changed, deleted) = tokio::join!(created, changed, deleted);
    println!(
        "after a {OUTAGE:?} API-server outage, handled after the API server was back: \
         new {created:.1?}, changed {changed:.1?}, deleted (inactive) {deleted:.1?}"
    );
    for (what, took) in [("new", created), ("changed", changed), ("deleted", deleted)] {
        assert!(
            took <= RECOVERY_LIMIT,
            "the {what} AccessToken took {took:?} after the API server was back"
        );
    }
    // After the restart the API server's own and the controller-manager's
    // watches of the built-in kinds come back in their own numbers, so only
    // "no more than before" can be told for those; the operator's own kinds
    // are its alone.
    let after = eventually(
        Duration::from_secs(30),
        "the operator's watches again",
        || async {
            let now = open_watches(cp);
            let own_kinds_once = [
                "accesstokens",
                "appregistrations",
                "tokenissuers",
                "clustertokenissuers",
            ]
            .iter()
            .all(|kind| now.get(*kind) == Some(&1));
            own_kinds_once.then_some(now)
        },
    )
    .await;
    for (resource, expected) in expected_watches() {
        let limit = baseline.get(&resource).copied().unwrap_or(0) + expected;
        let open = after.get(&resource).copied().unwrap_or(0);
        assert!(
            open <= limit,
            "{open} watches of {resource} after the restart, at most {limit} expected"
        );
    }
}
