//! Scale figures (`make scale`): AccessTokens created straight through the
//! API on a control plane of its own, then the operator's resident memory,
//! its API requests per token by verb (from the API server's own
//! `apiserver_request_total`), throughput and create-to-Ready latency.
//! Prints the figures and writes them to `target/scale/figures.md`; not part
//! of `cargo test` (`make test` builds it).

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use kube::{Api, api::ListParams};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace,
    operator::Operator,
    private_control_plane,
    resources::{apply, is_ready, token_issuer},
};
use tokensmith::api::AccessToken;

/// Requests the API server has served, by (verb, resource).
fn requests(cp: &ControlPlane) -> BTreeMap<(String, String), f64> {
    let mut counts = BTreeMap::new();
    for (labels, count) in cp.api_server_metric("apiserver_request_total") {
        let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
        *counts
            .entry((label("verb"), label("resource")))
            .or_insert(0.0) += count;
    }
    counts
}

fn rss_mib(pid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Seconds from each Ready token's creation to its Ready condition.
fn latencies(tokens: &[AccessToken]) -> Vec<i64> {
    let mut seconds: Vec<i64> = tokens
        .iter()
        .filter_map(|t| {
            let created = t.metadata.creation_timestamp.as_ref()?.0;
            let ready = t
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")?;
            Some(ready.last_transition_time.0.as_second() - created.as_second())
        })
        .collect();
    seconds.sort();
    seconds
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_at_1000_and_5000_access_tokens() {
    let steps: Vec<usize> = std::env::var("TOKENSMITH_SCALE_STEPS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 5000]);
    let cp = private_control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "scale").await;
    let operator = Operator::start(&[]);
    operator.http().await;
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let base_rss = rss_mib(operator.pid);
    let mut lines = vec![
        "| AccessTokens | created in | all Ready after | tokens/s | p50 / p99 create→Ready | operator RSS | RSS per added token | per token: GET / LIST secrets, POST / PATCH secrets, PATCH accesstokens, POST events |".to_string(),
        "| --- | --- | --- | --- | --- | --- | --- | --- |".to_string(),
        format!("| 0 | | | | | {base_rss:.1} MiB | | |"),
    ];
    let mut created = 0;
    let mut previous_rss = base_rss;
    for target in steps {
        let before = requests(cp);
        let started = Instant::now();
        stream::iter(created..target)
            .for_each_concurrent(32, |i| {
                let tokens = tokens.clone();
                async move {
                    apply(
                        &tokens,
                        &format!("t-{i:06}"),
                        json!({ "spec": {
                            "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
                            "lifetime": "24h",
                        }}),
                    )
                    .await;
                }
            })
            .await;
        let create_time = started.elapsed();
        let added = target - created;
        let list = loop {
            let list = tokens.list(&ListParams::default()).await.unwrap().items;
            let ready = list
                .iter()
                .filter(|t| t.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
                .count();
            if ready >= target || started.elapsed() > Duration::from_secs(1800) {
                break list;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let ready_time = started.elapsed();
        let after = requests(cp);
        let per_token = |verb: &str, resource: &str| {
            let key = (verb.to_string(), resource.to_string());
            (after.get(&key).unwrap_or(&0.0) - before.get(&key).unwrap_or(&0.0)) / added as f64
        };
        let rss = rss_mib(operator.pid);
        let fresh: Vec<AccessToken> = list
            .into_iter()
            .filter(|t| {
                t.metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.strip_prefix("t-"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n >= created)
            })
            .collect();
        let seconds = latencies(&fresh);
        lines.push(format!(
            "| {target} | {:.1} s | {:.1} s | {:.1} | {} s / {} s | {rss:.1} MiB | {:.1} KiB | {:.2} / {:.2}, {:.2} / {:.2}, {:.2}, {:.2} |",
            create_time.as_secs_f64(),
            ready_time.as_secs_f64(),
            added as f64 / ready_time.as_secs_f64(),
            percentile(&seconds, 0.5),
            percentile(&seconds, 0.99),
            (rss - previous_rss) * 1024.0 / added as f64,
            per_token("GET", "secrets"),
            per_token("LIST", "secrets"),
            per_token("POST", "secrets"),
            per_token("PATCH", "secrets") + per_token("APPLY", "secrets"),
            per_token("PATCH", "accesstokens") + per_token("APPLY", "accesstokens") - 1.0,
            per_token("POST", "events"),
        ));
        println!("{}", lines.last().unwrap());
        created = target;
        previous_rss = rss;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    lines.push(format!(
        "| {created}, after 60 s idle | | | | | {:.1} MiB | | |",
        rss_mib(operator.pid)
    ));
    let text = format!(
        "Operator: the debug build the tests use, one replica (logging at debug, as in the tests). PATCH accesstokens excludes the test's own apply of each token.\n\n{}\n",
        lines.join("\n")
    );
    println!("{text}");
    let dir = support::repo_root().join("target/scale");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("figures.md"), text).unwrap();
}
