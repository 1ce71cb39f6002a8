//! The fault suite (`make faults`, README: Reliability): each scenario breaks
//! something on a control plane of the suite's own and prints one row —
//! scenario, load and faults, figures, lost, duplicated, verdict — to stdout
//! and to `target/faults/rows.tsv`, from which `hack/faults.sh` writes
//! RELIABILITY.md. Scenarios run one after another (`--test-threads=1`):
//! several stop parts of the control plane.
//!
//! Not part of `make test` (it takes about ten minutes); `make test` builds
//! it so it cannot rot.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    core::ApiResource,
};
use serde_json::{Value, json};
use support::{
    ControlPlane, TestNamespace, eventually,
    operator::Operator,
    private_control_plane,
    resources::{apply, delete_all, is_ready, reason, secret_text, token_issuer},
};
use tokensmith::api::{AccessToken, AppRegistration, TokenIssuer};

/// Every token and client secret the suite saw, for the last scenario to
/// search for where none may be.
static SEEN_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn saw(secret: String) {
    SEEN_SECRETS.lock().unwrap().push(secret);
}

/// One line of the table.
struct Row {
    scenario: &'static str,
    load: String,
    figures: String,
    lost: usize,
    duplicated: usize,
    pass: bool,
}

/// Prints the row, appends it to `target/faults/rows.tsv`, then fails the
/// scenario if it did not pass.
fn report(row: Row) {
    let verdict = if row.pass { "pass" } else { "FAIL" };
    println!(
        "\n| {} | {} | {} | {} | {} | {verdict} |\n",
        row.scenario, row.load, row.figures, row.lost, row.duplicated
    );
    let dir = support::repo_root().join("target/faults");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("rows.tsv"))
        .unwrap();
    writeln!(
        rows,
        "{}\t{}\t{}\t{}\t{}\t{verdict}",
        row.scenario, row.load, row.figures, row.lost, row.duplicated
    )
    .unwrap();
    assert!(row.pass, "{}: {}", row.scenario, row.figures);
}

/// A small seeded generator, so a run can be repeated with its seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::env::var("TOKENSMITH_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("seed {seed} (TOKENSMITH_FAULT_SEED={seed} repeats it)");
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The start of most scenarios: a namespace with a TokenIssuer `signer`,
/// an operator, and an HTTPS client that trusts its token service.
struct Scene {
    cp: &'static ControlPlane,
    client: Client,
    ns: TestNamespace,
    operator: Operator,
    http: reqwest::Client,
    tokens: Api<AccessToken>,
}

impl Scene {
    async fn new(prefix: &str) -> Self {
        let cp = private_control_plane();
        let client = cp.client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let operator = Operator::start(&[]);
        let http = operator.http().await;
        token_issuer(&client, &ns.name, "signer", json!({})).await;
        let tokens = Api::namespaced(client.clone(), &ns.name);
        Self {
            cp,
            client,
            ns,
            operator,
            http,
            tokens,
        }
    }
}

fn spec(scopes: &[&str]) -> Value {
    json!({ "spec": {
        "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
        "scopes": scopes,
        "lifetime": "24h",
    }})
}

async fn create_tokens(tokens: &Api<AccessToken>, names: impl Iterator<Item = String>) {
    stream::iter(names)
        .for_each_concurrent(16, |name| {
            let tokens = tokens.clone();
            async move {
                apply(&tokens, &name, spec(&["read"])).await;
            }
        })
        .await;
}

/// AccessTokens in the namespace whose Ready condition is True.
async fn ready_count(tokens: &Api<AccessToken>) -> usize {
    tokens
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.iter()
                .filter(|t| t.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
                .count()
        })
        .unwrap_or(0)
}

async fn wait_ready(tokens: &Api<AccessToken>, n: usize, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if ready_count(tokens).await >= n {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The token each AccessToken's Secret holds, by name.
async fn minted(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let list = secrets
        .list(&ListParams::default().labels("tokensmith.dev/access-token"))
        .await
        .unwrap();
    let minted: BTreeMap<_, _> = list
        .iter()
        .map(|s| (s.name_any(), secret_text(s, "token")))
        .collect();
    for token in minted.values() {
        saw(token.clone());
    }
    minted
}

/// Secret writes (create, patch, update) the operator made in `namespace`,
/// from the control plane's audit log.
fn operator_secret_writes(cp: &ControlPlane, namespace: &str) -> usize {
    let audit = cp.kubeconfig.with_file_name("audit.log");
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let scope = format!("/namespaces/{namespace}/secrets");
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["user"]["username"] == "tokensmith-operator")
        .filter(|e| e["requestURI"].as_str().is_some_and(|u| u.contains(&scope)))
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_i64()
                .is_some_and(|c| c < 300)
        })
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "patch" | "update")))
        .count()
}

/// `GET /oauth/token/info` with `token`: 200 active, 401 inactive, 0 when
/// the token service does not answer.
async fn token_info(http: &reqwest::Client, operator: &Operator, token: &str) -> u16 {
    http.get(format!("{}/oauth/token/info", operator.url))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// How many of `tokens` the token service calls active.
async fn active_count(http: &reqwest::Client, operator: &Operator, tokens: &[String]) -> usize {
    stream::iter(tokens)
        .map(|t| token_info(http, operator, t))
        .buffer_unordered(32)
        .filter(|status| std::future::ready(*status == 200))
        .count()
        .await
}

/// Waits until AccessToken `name` is Issued; how long after `since` it was.
async fn issued_after(tokens: &Api<AccessToken>, name: &str, since: Instant) -> Duration {
    let what = format!("{name} to be Issued");
    eventually(Duration::from_secs(60), &what, || async {
        let token = tokens.get_opt(name).await.ok().flatten()?;
        (reason(&token).as_deref() == Some("Issued")).then_some(since.elapsed())
    })
    .await
}

/// Seconds of CPU the process has used.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_sigkill_storm() {
    const BURSTS: usize = 10;
    const PER_BURST: usize = 20;
    const KILLS_PER_BURST: usize = 2;
    let Scene {
        cp,
        client,
        ns,
        mut operator,
        tokens,
        ..
    } = Scene::new("storm").await;
    let mut rng = Rng::seeded();
    let mut kills = 0;
    for burst in 0..BURSTS {
        let names = (burst * PER_BURST..(burst + 1) * PER_BURST).map(|i| format!("t-{i:03}"));
        let creating = create_tokens(&tokens, names);
        let killing = async {
            for _ in 0..KILLS_PER_BURST {
                tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
                operator.stop_with(libc::SIGKILL);
                operator = Operator::start(&[]);
                kills += 1;
            }
        };
        futures::join!(creating, killing);
    }
    let total = BURSTS * PER_BURST;
    let settled = wait_ready(&tokens, total, Duration::from_secs(300)).await;
    let ready = ready_count(&tokens).await;
    let secrets = minted(&client, &ns.name).await;
    let list = tokens.list(&ListParams::default()).await.unwrap();
    // The Secret holds the token the status records.
    let held_ids: BTreeMap<String, String> = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels("tokensmith.dev/access-token"))
        .await
        .unwrap()
        .iter()
        .map(|s| (s.name_any(), secret_text(s, "token-id")))
        .collect();
    let mismatched = list
        .iter()
        .filter(|t| {
            let recorded = t.status.as_ref().and_then(|s| s.token_id.clone());
            recorded.is_none() || held_ids.get(&t.name_any()) != recorded.as_ref()
        })
        .count();
    let orphans = secrets
        .keys()
        .filter(|name| !list.iter().any(|t| &t.name_any() == *name))
        .count();
    let writes = operator_secret_writes(cp, &ns.name);
    delete_all(&tokens, list.iter().map(|t| t.name_any())).await;
    let gone = eventually(
        Duration::from_secs(120),
        "every AccessToken deleted",
        || async {
            let left = tokens.list(&ListParams::default()).await.ok()?.items.len();
            (left == 0).then_some(())
        },
    );
    let stuck = tokio::time::timeout(Duration::from_secs(125), gone)
        .await
        .is_err();
    let lost = total - ready.min(total) + mismatched;
    let duplicated = writes.saturating_sub(total);
    report(Row {
        scenario: "SIGKILL storm",
        load: format!("{total} AccessTokens in {BURSTS} bursts, {kills} SIGKILLs at random points"),
        figures: format!(
            "all Ready {} after the last kill; {} Secrets for {total} tokens, {writes} Secret writes, {orphans} orphans, status matches Secret for {}/{total}, finalizers {}",
            settled.map(secs).unwrap_or_else(|| "never".into()),
            secrets.len(),
            total - mismatched,
            if stuck { "STUCK" } else { "all released" }
        ),
        lost,
        duplicated,
        pass: settled.is_some() && lost == 0 && duplicated == 0 && orphans == 0 && !stuck,
    });
}

async fn deletions_while_down(count: usize) {
    let Scene {
        client,
        ns,
        mut operator,
        http,
        tokens,
        ..
    } = Scene::new("down").await;
    create_tokens(&tokens, (0..count).map(|i| format!("t-{i:04}"))).await;
    wait_ready(&tokens, count, Duration::from_secs(600))
        .await
        .expect("every token Ready");
    let minted: Vec<String> = minted(&client, &ns.name).await.into_values().collect();
    assert_eq!(
        active_count(&http, &operator, &minted).await,
        count,
        "all active at first"
    );
    operator.stop_with(libc::SIGKILL);
    delete_all(&tokens, (0..count).map(|i| format!("t-{i:04}"))).await;

    let restarted = Operator::start(&[]);
    let started = Instant::now();
    let readyz = format!("{}/readyz", restarted.metrics_url);
    let ready_after = loop {
        if reqwest::get(&readyz)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let http = restarted.http().await;
    let active_at_ready = active_count(&http, &restarted, &minted).await;
    let inactive_after = started.elapsed();
    let released = eventually(
        Duration::from_secs(300),
        "every AccessToken gone",
        || async {
            let left = tokens.list(&ListParams::default()).await.ok()?.items.len();
            (left == 0).then_some(started.elapsed())
        },
    )
    .await;
    report(Row {
        scenario: if count >= 1000 {
            "deletions while down (1 000)"
        } else {
            "deletions while down (100)"
        },
        load: format!("{count} Ready AccessTokens deleted while the only operator was killed"),
        figures: format!(
            "/readyz 200 {} after start, {active_at_ready} of {count} active then, all checked inactive {} after start; finalizers released {} after start",
            secs(ready_after),
            secs(inactive_after),
            secs(released)
        ),
        lost: active_at_ready,
        duplicated: 0,
        pass: active_at_ready == 0,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_deletions_while_the_operator_is_down_100() {
    deletions_while_down(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_deletions_while_the_operator_is_down_1000() {
    deletions_while_down(1000).await;
}

/// What is broken during an outage.
#[derive(Clone, Copy)]
enum Outage {
    ApiServer,
    Etcd,
}

async fn outage(kind: Outage, length: Duration) {
    let Scene {
        cp,
        client,
        ns,
        operator,
        http,
        tokens,
    } = Scene::new("outage").await;
    create_tokens(
        &tokens,
        ["to-delete", "to-change"].map(String::from).into_iter(),
    )
    .await;
    wait_ready(&tokens, 2, Duration::from_secs(60))
        .await
        .expect("Ready");
    let doomed = minted(&client, &ns.name).await["to-delete"].clone();

    // Lines a production log would hold: the tests log the operator at debug.
    let logged = |operator: &Operator| {
        operator
            .log_text()
            .lines()
            .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
            .count()
    };
    let (cpu_before, lines_before) = (cpu_seconds(operator.pid), logged(&operator));
    let name = match kind {
        Outage::ApiServer => "API server",
        Outage::Etcd => "etcd",
    };
    match kind {
        Outage::ApiServer => cp.stop_api_server(),
        Outage::Etcd => cp.stop_etcd(),
    }
    tokio::time::sleep(length).await;
    let cpu = cpu_seconds(operator.pid) - cpu_before;
    let lines = logged(&operator) - lines_before;
    match kind {
        Outage::ApiServer => cp.start_api_server(),
        Outage::Etcd => cp.start_etcd(),
    }
    let back = Instant::now();

    let limit = Duration::from_secs(60);
    // The API server may need a while of its own before it can write again
    // (after etcd returns, its client reconnects): the operator is timed from
    // the first write that goes through.
    // Each kind is stored through its own etcd client in the API server, so
    // every kind the operator writes is probed.
    let probes: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let writable = eventually(limit, "writes of every kind to go through", || async {
        let marked = json!({ "metadata": { "labels": { "outage": "over" } } });
        tokens
            .patch("to-change", &PatchParams::default(), &Patch::Merge(&marked))
            .await
            .ok()?;
        probes
            .patch(
                "outage-probe",
                &PatchParams::apply("tokensmith-tests").force(),
                &Patch::Apply(json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "outage-probe" } })),
            )
            .await
            .ok()?;
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns.name)
            .patch(
                "outage-probe",
                &PatchParams::apply("tokensmith-tests").force(),
                &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "outage-probe" } })),
            )
            .await
            .ok()?;
        Some(back.elapsed())
    })
    .await;
    let back = Instant::now();
    let created = async {
        eventually(limit, "the create to go through", || async {
            tokens
                .patch(
                    "created-after",
                    &PatchParams::apply("tokensmith-tests").force(),
                    &Patch::Apply(json!({
                        "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
                        "metadata": { "name": "created-after" },
                        "spec": spec(&["read"])["spec"],
                    })),
                )
                .await
                .ok()
        })
        .await;
        issued_after(&tokens, "created-after", back).await
    };
    let changed = async {
        eventually(limit, "the change to go through", || async {
            tokens
                .patch(
                    "to-change",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "scopes": ["read", "write"] } })),
                )
                .await
                .ok()
        })
        .await;
        eventually(limit, "the changed token re-minted", || async {
            let minted = tokens
                .get_opt("to-change")
                .await
                .ok()
                .flatten()?
                .status?
                .minted?;
            (minted.scopes.len() == 2).then_some(back.elapsed())
        })
        .await
    };
    let deleted = async {
        eventually(limit, "the delete to go through", || async {
            tokens
                .delete("to-delete", &DeleteParams::default())
                .await
                .ok()
        })
        .await;
        eventually(limit, "the deleted token inactive", || async {
            (token_info(&http, &operator, &doomed).await == 401).then_some(back.elapsed())
        })
        .await
    };
    let (created, changed, deleted) = tokio::join!(created, changed, deleted);
    let target = Duration::from_secs(5);
    report(Row {
        scenario: match kind {
            Outage::ApiServer => "API-server outage",
            Outage::Etcd => "etcd outage",
        },
        load: format!(
            "{name} stopped {} s, restarted on the same data",
            length.as_secs()
        ),
        figures: format!(
            "writes went through {} after it returned; from then: new Ready {}, changed re-minted {}, deleted inactive {}; during the outage {cpu:.2} s CPU, {lines} log lines at info or above",
            secs(writable),
            secs(created),
            secs(changed),
            secs(deleted)
        ),
        lost: 0,
        duplicated: 0,
        pass: created <= target
            && changed <= target
            && deleted <= target
            && cpu < 3.0
            && lines < 40,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_api_server_outage() {
    outage(Outage::ApiServer, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_etcd_outage() {
    outage(Outage::Etcd, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_leader_sigkill() {
    const TOKENS: usize = 20;
    const DELETED_IN_GAP: usize = 10;
    let cp = private_control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "failover").await;
    let mut replicas = vec![Operator::start(&[]), Operator::start(&[])];
    let leading = eventually(Duration::from_secs(60), "a leader", || async {
        for (i, replica) in replicas.iter().enumerate() {
            if replica.sample("tokensmith_leader").await == Some(1.0) {
                return Some(i);
            }
        }
        None
    })
    .await;
    let mut leader = replicas.remove(leading);
    let follower = replicas.remove(0);
    let http = follower.http().await;
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    create_tokens(&tokens, (0..TOKENS).map(|i| format!("t-{i:02}"))).await;
    wait_ready(&tokens, TOKENS, Duration::from_secs(120))
        .await
        .expect("every token Ready");
    let before_kill = minted(&client, &ns.name).await;

    leader.stop_with(libc::SIGKILL);
    let killed = Instant::now();
    let inactive_after: Vec<Duration> = stream::iter(0..DELETED_IN_GAP)
        .map(|i| {
            let (tokens, http, follower) = (&tokens, &http, &follower);
            let name = format!("t-{i:02}");
            let token = before_kill[&name].clone();
            async move {
                let deleted = Instant::now();
                tokens
                    .delete(&name, &DeleteParams::default())
                    .await
                    .unwrap();
                while token_info(http, follower, &token).await != 401 {
                    if deleted.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                deleted.elapsed()
            }
        })
        .buffer_unordered(DELETED_IN_GAP)
        .collect()
        .await;
    let slowest = inactive_after.iter().max().copied().unwrap_or_default();
    apply(&tokens, "after-failover", spec(&["read"])).await;
    let took_over = eventually(Duration::from_secs(60), "the follower to lead", || async {
        (follower.sample("tokensmith_leader").await == Some(1.0)).then_some(killed.elapsed())
    })
    .await;
    let first_mint = issued_after(&tokens, "after-failover", killed).await;
    minted(&client, &ns.name).await;
    let writes = operator_secret_writes(cp, &ns.name);
    let duplicated = writes.saturating_sub(TOKENS + 1);
    report(Row {
        scenario: "leader SIGKILL",
        load: format!(
            "2 replicas, {TOKENS} Ready tokens; leader killed, {DELETED_IN_GAP} deleted in the gap"
        ),
        figures: format!(
            "deleted tokens inactive on the follower within {} (slowest); follower leads {} after the kill, first mint {} after",
            secs(slowest),
            secs(took_over),
            secs(first_mint)
        ),
        lost: 0,
        duplicated,
        pass: slowest <= Duration::from_secs(1) && duplicated == 0,
    });
}

/// Tricky values for generated objects.
const STRINGS: &[&str] = &[
    "",
    "a",
    "read",
    "∀x🙂",
    "-1",
    "10s",
    "0s",
    "999999999999h",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "https://tokens.example/x",
    "http://[::1]:0/",
    "*",
    "${namespace}",
    "system:masters",
    "a b",
    "tks_",
    "Bearer",
    "\u{0}",
    "x.y/z",
];

/// A plausible value for a string field, by its name.
fn plausible(field: &str, rng: &mut Rng) -> Value {
    let lower = field.to_ascii_lowercase();
    let choice: &[&str] = if lower.contains("lifetime")
        || lower.contains("renewbefore")
        || lower.contains("interval")
        || lower.contains("period")
    {
        &["10s", "1h", "30m", "24h", "90m"]
    } else if lower.contains("expiresat") {
        &["2030-01-01T00:00:00Z", "2020-01-01T00:00:00Z"]
    } else if lower.contains("url") {
        &[
            "https://tokens.example/a",
            "https://tokens.example/b",
            "https://x.example",
        ]
    } else if lower == "prefix" {
        &["tks_", "ab_"]
    } else if lower.contains("subject") {
        &["${namespace}", "alice", "system:serviceaccount:x:y"]
    } else if lower.contains("name") {
        &["a", "signer", "nobody", "client"]
    } else {
        &["read", "write", "api", "x"]
    };
    json!(*rng.pick(choice))
}

/// A random value that follows `schema` loosely, for the field `field`:
/// mostly plausible, sometimes one of the tricky values. Admission decides
/// which objects are accepted; the operator must live with every one that is.
fn generate(field: &str, schema: &Value, rng: &mut Rng, depth: usize) -> Value {
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && rng.below(6) != 0
    {
        return rng.pick(options).clone();
    }
    let tricky = rng.below(6) == 0;
    match schema.get("type").and_then(Value::as_str) {
        Some("object") if depth < 6 => {
            let mut object = serde_json::Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for (name, property) in properties {
                    if required.contains(&name.as_str()) || rng.below(4) == 0 {
                        object.insert(name.clone(), generate(name, property, rng, depth + 1));
                    }
                }
            } else if let Some(values) = schema.get("additionalProperties") {
                for _ in 0..rng.below(3) {
                    let key = rng
                        .pick(&["team", "groups", "x.y/z", "sub", "a"])
                        .to_string();
                    object.insert(key, generate(field, values, rng, depth + 1));
                }
            }
            Value::Object(object)
        }
        Some("array") => {
            let items = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..rng.below(3))
                    .map(|_| generate(field, &items, rng, depth + 1))
                    .collect(),
            )
        }
        Some("integer") if tricky => json!(*rng.pick(&[-1i64, 0, 91, i32::MAX as i64, i64::MAX])),
        Some("integer") => json!(*rng.pick(&[1i64, 20, 50, 90])),
        Some("boolean") => json!(rng.below(2) == 0),
        _ if tricky && rng.below(4) == 0 => json!("x".repeat(300 * 1024)),
        _ if tricky => json!(*rng.pick(STRINGS)),
        _ => plausible(field, rng),
    }
}

/// The openAPIV3Schema of the spec of the CRD in `crds/<file>`.
fn spec_schema(file: &str) -> Value {
    let text = std::fs::read_to_string(support::repo_root().join("crds").join(file)).unwrap();
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// Creates `object` of `resource`; whether admission took it.
async fn admitted(client: &Client, namespace: &str, resource: &ApiResource, object: Value) -> bool {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let Ok(mut object) = serde_json::from_value::<DynamicObject>(object) else {
        return false;
    };
    object.types = Some(kube::core::TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    api.create(&PostParams::default(), &object).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_poison_and_fuzz_corpus() {
    const GENERATED_PER_KIND: usize = 40;
    let cp = private_control_plane();
    let client = cp.client().await;
    let poisoned = TestNamespace::create(&client, "poison").await;
    let fresh = TestNamespace::create(&client, "fresh").await;
    let mut rng = Rng::seeded();
    let mut operator = Operator::start(&[]);
    token_issuer(&client, &poisoned.name, "signer", json!({})).await;
    token_issuer(&client, &fresh.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &poisoned.name);

    // The hand-made corpus: each admitted, each a trap.
    let signer = json!({ "kind": "TokenIssuer", "name": "signer" });
    let corpus = [
        (
            "huge-annotations",
            json!({ "issuerRef": signer, "secretTemplate": { "annotations": { "a": "x".repeat(300 * 1024) } } }),
        ),
        (
            "bad-label-key",
            json!({ "issuerRef": signer, "secretTemplate": { "labels": { "not a key!": "x" } } }),
        ),
        (
            "missing-app",
            json!({ "issuerRef": signer, "appRef": { "name": "nobody" } }),
        ),
        (
            "missing-bound-object",
            json!({ "issuerRef": signer, "boundObjectRef": { "kind": "ServiceAccount", "name": "nobody" } }),
        ),
        (
            "missing-issuer",
            json!({ "issuerRef": { "kind": "TokenIssuer", "name": "nobody" } }),
        ),
        (
            "unicode-claims",
            json!({ "issuerRef": signer, "claims": { "team": "∀x🙂\u{0}" } }),
        ),
        ("status-poison", json!({ "issuerRef": signer })),
    ];
    let mut admitted_names = Vec::new();
    for (name, spec) in corpus {
        apply(&tokens, name, json!({ "spec": spec })).await;
        admitted_names.push(("AccessToken", name.to_string()));
    }
    eventually(Duration::from_secs(60), "status-poison Issued", || async {
        let t = tokens.get_opt("status-poison").await.ok().flatten()?;
        (reason(&t).as_deref() == Some("Issued")).then_some(())
    })
    .await;
    cp.kubectl(&[
        "patch",
        "accesstoken",
        "status-poison",
        "-n",
        &poisoned.name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"expiresAt":"9999-12-31T23:59:59Z"}}"#,
    ]);
    cp.kubectl(&[
        "patch",
        "accesstoken",
        "missing-app",
        "-n",
        &poisoned.name,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);

    // The generated corpus, from the CRDs' own schemas.
    let kinds = [
        (
            ApiResource::erase::<AccessToken>(&()),
            "accesstokens.tokensmith.dev.yaml",
        ),
        (
            ApiResource::erase::<AppRegistration>(&()),
            "appregistrations.tokensmith.dev.yaml",
        ),
        (
            ApiResource::erase::<TokenIssuer>(&()),
            "tokenissuers.tokensmith.dev.yaml",
        ),
    ];
    let mut generated = 0;
    let mut accepted = 0;
    for (resource, file) in &kinds {
        let schema = spec_schema(file);
        for i in 0..GENERATED_PER_KIND {
            let name = format!("gen-{}-{i}", resource.plural);
            let object = json!({ "metadata": { "name": name }, "spec": generate("spec", &schema, &mut rng, 0) });
            generated += 1;
            if admitted(&client, &poisoned.name, resource, object).await {
                accepted += 1;
                admitted_names.push((resource.kind.as_str().to_owned().leak(), name));
            }
        }
    }

    // Restart on top of it all.
    operator.stop_with(libc::SIGTERM);
    let restarted = Operator::start(&[]);
    let started = Instant::now();
    let readyz = format!("{}/readyz", restarted.metrics_url);
    let ready_after = eventually(
        Duration::from_secs(60),
        "ready after the restart",
        || async {
            let ok = reqwest::get(&readyz).await.ok()?.status().is_success();
            ok.then_some(started.elapsed())
        },
    )
    .await;
    let fresh_tokens: Api<AccessToken> = Api::namespaced(client.clone(), &fresh.name);
    apply(&fresh_tokens, "fresh", spec(&["read"])).await;
    let fresh_minted = issued_after(&fresh_tokens, "fresh", started).await;

    // Every admitted object ends with a condition (or, undecodable, with one
    // line naming it).
    let without_condition = eventually(
        Duration::from_secs(90),
        "a condition on every object",
        || async {
            let mut missing = Vec::new();
            for (kind, name) in &admitted_names {
                let resource = kinds
                    .iter()
                    .find(|(r, _)| r.kind == *kind)
                    .map(|(r, _)| r.clone())
                    .unwrap();
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &poisoned.name, &resource);
                let Ok(object) = api.get(name).await else {
                    continue;
                };
                let has_condition = object.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"));
                if !has_condition {
                    missing.push(format!("{kind}/{name}"));
                }
            }
            missing.is_empty().then_some(missing.len()).or_else(|| {
                if started.elapsed() > Duration::from_secs(85) {
                    println!("without a Ready condition: {missing:?}");
                    Some(missing.len())
                } else {
                    None
                }
            })
        },
    )
    .await;
    let log = restarted.log_text();
    let panics = log.matches("panicked").count();
    let longest_line = log.lines().map(str::len).max().unwrap_or(0);

    // The namespace goes, the hand-held finalizer released by hand.
    cp.kubectl(&[
        "patch",
        "accesstoken",
        "missing-app",
        "-n",
        &poisoned.name,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
    ]);
    cp.kubectl(&["delete", "namespace", &poisoned.name, "--wait=false"]);
    let namespace_gone = tokio::time::timeout(
        Duration::from_secs(180),
        eventually(
            Duration::from_secs(180),
            "the poisoned namespace gone",
            || async {
                let gone = cp
                    .kubectl_output(&["get", "namespace", &poisoned.name])
                    .status
                    .code()
                    != Some(0);
                gone.then_some(started.elapsed())
            },
        ),
    )
    .await
    .ok();
    report(Row {
        scenario: "poison and fuzz corpus",
        load: format!(
            "7 hand-made objects (status past 9999-12-30, 300 KiB annotations, a bad label key, missing app/issuer/bound object, a foreign finalizer) and {accepted} of {generated} generated objects admitted; operator restarted"
        ),
        figures: format!(
            "ready {} after restart, fresh token elsewhere {}; {without_condition} admitted objects without a condition; {panics} panics; longest log line {longest_line} B; namespace deleted {}",
            secs(ready_after),
            secs(fresh_minted),
            namespace_gone.map(secs).unwrap_or_else(|| "NEVER".into())
        ),
        lost: 0,
        duplicated: 0,
        pass: without_condition == 0
            && panics == 0
            && longest_line < 8192
            && namespace_gone.is_some(),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_token_service_abuse() {
    let _cp = private_control_plane();
    let operator = Operator::start(&[]);
    let http = operator.http().await;
    let address = operator.url.trim_start_matches("https://").to_string();
    let slow = std::process::Command::new("python3")
        .arg(support::repo_root().join("hack/slow-clients.py"))
        .args(["--address", &address, "--pid", &operator.pid.to_string()])
        .args(["--idle", "1000", "--slow", "1000", "--seconds", "30"])
        .output()
        .expect("hack/slow-clients.py runs");
    let text = String::from_utf8_lossy(&slow.stdout).to_string();
    let before = text
        .lines()
        .find(|l| l.starts_with("before:"))
        .unwrap_or("")
        .to_string();
    let after = text
        .lines()
        .find(|l| l.starts_with("after:"))
        .unwrap_or("")
        .to_string();
    let peak_fds = text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|f| f.parse::<i64>().ok())
        })
        .max()
        .unwrap_or(-1);

    // Malformed and oversized requests: an answer each, never a 5xx.
    let url = |path: &str| format!("{}{path}", operator.url);
    let big = "x".repeat(1024 * 1024);
    let mut statuses = BTreeMap::new();
    for i in 0..200 {
        let request = match i % 6 {
            0 => http.post(url("/oauth/token")).body(big.clone()),
            1 => http
                .post(url("/oauth/token"))
                .header("content-type", "application/json")
                .body("{"),
            2 => http
                .post(url("/oauth/introspect"))
                .form(&[("token", "\u{0}"); 3]),
            3 => http.get(url("/../../etc/passwd")),
            4 => http
                .get(url("/oauth/token/info"))
                .header("authorization", format!("Bearer {}", "a".repeat(8000))),
            _ => http
                .post(url("/oauth/revoke"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("token=%ZZ&&&=="),
        };
        let status = request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        *statuses.entry(status).or_insert(0) += 1;
    }
    let server_errors: usize = statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    report(Row {
        scenario: "token service abuse",
        load: "1 000 idle TLS + 1 000 slow-header connections for 30 s; 200 malformed or oversized requests".into(),
        figures: format!(
            "{before}; peak fds {peak_fds}; {after}; answers by status {statuses:?} (0: connection closed by the server before the answer, e.g. a body over the limit)"
        ),
        lost: 0,
        duplicated: 0,
        pass: slow.status.success() && server_errors == 0,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_no_secret_anywhere() {
    let Scene {
        cp,
        client,
        ns,
        operator,
        http,
        ..
    } = Scene::new("secrets").await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), &ns.name);
    apply(
        &apps,
        "client",
        json!({ "spec": {
            "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
            "scopes": ["read"],
        }}),
    )
    .await;
    let credentials = eventually(Duration::from_secs(60), "the app's Secret", || async {
        let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get_opt("client")
            .await
            .ok()??;
        Some((
            secret_text(&secret, "client-id"),
            secret_text(&secret, "client-secret"),
        ))
    })
    .await;
    saw(credentials.1.clone());
    let response: Value = http
        .post(format!("{}/oauth/token", operator.url))
        .basic_auth(&credentials.0, Some(&credentials.1))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(token) = response["access_token"].as_str() {
        saw(token.to_string());
    }

    let mut haystacks: Vec<(String, String)> = Vec::new();
    let logs = support::repo_root().join("target/tmp");
    let prefix = format!("operator-{}-", std::process::id());
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(&prefix) {
            haystacks.push((
                name,
                std::fs::read_to_string(entry.path()).unwrap_or_default(),
            ));
        }
    }
    haystacks.push((
        "events".into(),
        cp.kubectl(&["get", "events", "-A", "-o", "json"]),
    ));
    for kind in [
        "accesstokens",
        "appregistrations",
        "tokenissuers",
        "clustertokenissuers",
    ] {
        haystacks.push((
            format!("{kind} (status included)"),
            cp.kubectl(&["get", kind, "-A", "-o", "json"]),
        ));
    }
    haystacks.push(("/metrics".into(), operator.metrics().await));
    let secrets: BTreeSet<String> = SEEN_SECRETS
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.len() >= 16)
        .cloned()
        .collect();
    let found: Vec<String> = haystacks
        .iter()
        .filter(|(_, text)| secrets.iter().any(|s| text.contains(s.as_str())))
        .map(|(name, _)| name.clone())
        .collect();
    let searched: usize = haystacks.iter().map(|(_, t)| t.len()).sum();
    report(Row {
        scenario: "no secret anywhere",
        load: format!(
            "{} tokens and client secrets minted during the suite",
            secrets.len()
        ),
        figures: format!(
            "searched {} places, {:.1} MB (operator logs, events, every CR with status, /metrics): found in {found:?}",
            haystacks.len(),
            searched as f64 / 1e6
        ),
        lost: 0,
        duplicated: 0,
        pass: found.is_empty() && !secrets.is_empty(),
    });
}
