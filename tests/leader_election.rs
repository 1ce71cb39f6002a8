//! Two operators against one control plane: one leads, the other serves
//! the token service only; when the leader is killed the other takes over
//! within 20 s and no token is minted twice.

mod support;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use kube::Api;
use serde_json::json;
use support::{
    TestNamespace, control_plane, eventually,
    operator::Operator,
    resources::{apply, token_issuer, wait_reason},
};
use tokensmith::api::AccessToken;

const TOKENS: usize = 10;

async fn leads(operator: &Operator) -> bool {
    operator.sample("tokensmith_leader").await == Some(1.0)
}

/// (name, token id, revision) of every AccessToken.
async fn minted(tokens: &Api<AccessToken>) -> Vec<(String, String, i64)> {
    let mut all: Vec<_> = tokens
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            (
                kube::ResourceExt::name_any(&t),
                status.token_id.unwrap_or_default(),
                status.revision.unwrap_or_default(),
            )
        })
        .collect();
    all.sort();
    all
}

#[tokio::test]
async fn the_follower_takes_over_within_20s_of_a_sigkill_without_minting_twice() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "leader").await;
    let mut first = Operator::start(&["--leader-elect=true"]);
    let mut second = Operator::start(&["--leader-elect=true"]);
    let (leader_ready, follower_ready) =
        eventually(Duration::from_secs(60), "one operator to lead", || async {
            match (leads(&first).await, leads(&second).await) {
                (true, false) => Some((true, false)),
                (false, true) => Some((false, true)),
                _ => None,
            }
        })
        .await;
    let (leader, follower) = if leader_ready && !follower_ready {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    // The follower serves too: its token service answers.
    follower.http().await;

    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    stream::iter(0..TOKENS)
        .for_each_concurrent(5, |i| {
            let tokens = tokens.clone();
            async move {
                let name = format!("t{i}");
                let spec = json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "lifetime": "1h" });
                apply(&tokens, &name, json!({ "spec": spec })).await;
                wait_reason(&tokens, &name, "Issued").await;
            }
        })
        .await;
    let before = minted(&tokens).await;
    assert!(
        before
            .iter()
            .all(|(_, id, revision)| !id.is_empty() && *revision == 1),
        "{before:?}"
    );
    assert!(
        !follower.log_text().contains("token minted"),
        "only the leader reconciles"
    );

    leader.stop_with(libc::SIGKILL);
    let killed = Instant::now();
    eventually(Duration::from_secs(20), "the follower to lead", || async {
        leads(follower).await.then_some(())
    })
    .await;
    let took_over = killed.elapsed();
    println!(
        "the follower led {} ms after the leader's SIGKILL",
        took_over.as_millis()
    );
    assert!(took_over <= Duration::from_secs(20), "took {took_over:?}");

    // The new leader reconciles: a new token is issued...
    let spec =
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "lifetime": "1h" });
    apply(&tokens, "after", json!({ "spec": spec })).await;
    wait_reason(&tokens, "after", "Issued").await;
    // ...and the ones the old leader minted are left as they were.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<_> = minted(&tokens)
        .await
        .into_iter()
        .filter(|(name, ..)| name != "after")
        .collect();
    assert_eq!(after, before, "no AccessToken was minted twice");
    let reminted = follower.log_text().matches("token minted").count();
    assert_eq!(reminted, 1, "the new leader minted only the new token");
}
