//! Scale and load figures (`make bench`): AccessTokens created straight through the
//! API on a control plane of its own, then the operator's resident memory,
//! its API requests per token by verb (from the API server's own
//! `apiserver_request_total`), throughput and create-to-Ready latency; then
//! a cold start with every token present, a rotation storm (how renewal
//! times spread), and the limit: a raw client making the same requests.
//! Prints the figures and writes them to `target/scale/figures.md`; not part
//! of `cargo test` (`make test` builds it).

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, api::ListParams};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace,
    finalizer_policy::{Bound, FinalizerPolicy},
    operator::Operator,
    private_control_plane,
    resources::{apply, delete_all, is_ready, token_issuer},
    tail::Tail,
};
use tokensmith::{api::AccessToken, server::REMEMBERED_BYTES};

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

/// A figure of `/proc/PID/status` in MiB: `VmRSS:` (resident now) or
/// `VmHWM:` (the most it has been resident).
fn status_mib(pid: i32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn rss_mib(pid: i32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// The operator's memory at one moment, MiB: resident, and in use by its
/// allocator (what it holds beyond that is free memory not yet handed back).
#[derive(Clone, Copy)]
struct Memory {
    rss: f64,
    heap: f64,
}

impl Memory {
    async fn of(operator: &Operator) -> Self {
        Self {
            rss: rss_mib(operator.pid),
            heap: heap_mib(operator).await,
        }
    }

    /// The same once the free memory of the last burst has gone back to the
    /// system (the operator hands it back every `RELEASE_EVERY`): what it
    /// keeps holding.
    async fn settled(operator: &Operator) -> Self {
        tokio::time::sleep(SETTLE).await;
        Self::of(operator).await
    }

    fn mib(&self) -> String {
        format!("{:.1} MiB ({:.1} MiB)", self.rss, self.heap)
    }

    /// KiB per token added since `before`: "RSS (heap)".
    fn per_token(&self, before: &Self, added: usize) -> String {
        let kib = |now: f64, then: f64| (now - then) * 1024.0 / added.max(1) as f64;
        format!(
            "{:.1} KiB ({:.1} KiB)",
            kib(self.rss, before.rss),
            kib(self.heap, before.heap)
        )
    }
}

/// How long after a burst memory is read again: two looks at free memory
/// (the operator hands it back at the first after enough was freed) and a
/// margin.
const SETTLE: Duration =
    Duration::from_secs(tokensmith::telemetry::allocator::RELEASE_EVERY.as_secs() * 2 + 5);

/// How long a measurement's namespace with `tokens` AccessTokens may take
/// to be gone, every token revoked (about 70 a second here; allowed: 20).
/// The next measurement waits for it: the token service measured while the
/// operator revoked 500 tokens and the namespace controller collected their
/// Secrets and events made a fifth fewer client_credentials a second (9 900
/// against 12 700, by hand).
fn revoked_within(tokens: usize) -> Duration {
    Duration::from_secs(60 + tokens as u64 / 20)
}

/// CPU time each process taking part has used so far, in seconds: the API
/// server, etcd, the controller-manager, the operator (when it runs) and
/// this test, the client creating the tokens. Two cores are shared by all
/// of them, so what a token costs them together bounds tokens/s.
#[derive(Clone, Copy, Default)]
struct Cpu {
    api_server: f64,
    etcd: f64,
    controller_manager: f64,
    operator: f64,
    client: f64,
}

/// User and system CPU seconds of process `pid` (0 if it is gone).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count from after it.
    // utime and stime are the 14th and 15th fields, the 12th and 13th after it.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    fields.iter().sum::<f64>() / ticks_per_second
}

impl Cpu {
    fn now(cp: &ControlPlane, operator: Option<i32>) -> Self {
        let dir = cp.kubeconfig.parent().expect("the control plane's folder");
        let of = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|pid| pid.trim().parse().ok())
                .map_or(0.0, cpu_seconds)
        };
        Self {
            api_server: of("kube-apiserver.pid"),
            etcd: of("etcd.pid"),
            controller_manager: of("kube-controller-manager.pid"),
            operator: operator.map_or(0.0, cpu_seconds),
            client: cpu_seconds(std::process::id() as i32),
        }
    }

    /// Milliseconds per token from `before` to `self`.
    fn per_token(&self, before: &Self, tokens: usize) -> Self {
        let ms = |now: f64, then: f64| (now - then) * 1000.0 / tokens.max(1) as f64;
        Self {
            api_server: ms(self.api_server, before.api_server),
            etcd: ms(self.etcd, before.etcd),
            controller_manager: ms(self.controller_manager, before.controller_manager),
            operator: ms(self.operator, before.operator),
            client: ms(self.client, before.client),
        }
    }

    fn total(&self) -> f64 {
        self.api_server + self.etcd + self.controller_manager + self.operator + self.client
    }
}

/// What the operator's allocator has handed out and not taken back, MiB.
async fn heap_mib(operator: &Operator) -> f64 {
    operator
        .sample("tokensmith_heap_allocated_bytes")
        .await
        .unwrap_or(0.0)
        / (1024.0 * 1024.0)
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
async fn figures_at_scale() {
    let steps: Vec<usize> = std::env::var("TOKENSMITH_SCALE_STEPS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10000]);
    let cp = private_control_plane();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "scale").await;
    let mut operator = Operator::start(&[]);
    operator.http().await;
    token_issuer(&client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let base = Memory::of(&operator).await;
    let mut lines = vec![
        format!(
            "| AccessTokens | created in | all Ready after | tokens/s | p50 / p99 create→Ready | operator RSS (heap in use): when all are Ready; {} s later | per added token, {} s later: RSS (heap) | per token: GET / LIST secrets, POST / PATCH secrets, PATCH accesstokens, POST events |",
            SETTLE.as_secs(),
            SETTLE.as_secs()
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- |".to_string(),
        format!("| 0 | | | | | {} | | |", base.mib()),
    ];
    let mut restarts = vec![
        format!(
            "| cold start with | serving after | every token re-checked after (goal: ≤ 5 s at 10 000) | writes by the operator (goal: 0) | operator RSS (heap in use): when every token is re-checked; the most resident since start; {} s later | per added token, {} s later: RSS (heap) |",
            SETTLE.as_secs(),
            SETTLE.as_secs()
        ),
        "| --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    let mut created = 0;
    // The operator's tokens/s at each step, against the limit's below.
    let mut rates: Vec<(usize, f64)> = Vec::new();
    // The operator's settled memory before the step: each step ends with a
    // restart, which the next step grows, so it is also the last restart's.
    let mut previous = base;
    // CPU per token of every process in each step, for the limit's rows.
    let mut cpu_per_token: Vec<Cpu> = Vec::new();
    for target in steps.iter().copied() {
        let round = issue(
            cp,
            &operator,
            &tokens,
            &ns.name,
            (created..target).map(token_name).collect(),
        )
        .await;
        let added = target - created;
        cpu_per_token.push(round.cpu);
        let per_token = |verb, resource| round.per_token(verb, resource);
        let ready = Memory::of(&operator).await;
        let settled = Memory::settled(&operator).await;
        let seconds = latencies(&round.tokens);
        lines.push(format!(
            "| {target} | {:.1} s | {:.1} s | {:.1} | {} s / {} s | {}; {} | {} | {:.2} / {:.2}, {:.2} / {:.2}, {:.2}, {:.2} |",
            round.create_time.as_secs_f64(),
            round.ready_time.as_secs_f64(),
            round.rate(),
            percentile(&seconds, 0.5),
            percentile(&seconds, 0.99),
            ready.mib(),
            settled.mib(),
            settled.per_token(&previous, added),
            per_token("GET", "secrets"),
            per_token("LIST", "secrets"),
            per_token("POST", "secrets"),
            per_token("PATCH", "secrets") + per_token("APPLY", "secrets"),
            per_token("PATCH", "accesstokens") + per_token("APPLY", "accesstokens") - 1.0,
            per_token("POST", "events"),
        ));
        println!("{}", lines.last().unwrap());
        rates.push((target, round.rate()));
        let restart = cold_start(&mut operator, cp, target).await;
        restarts.push(restart.row(&previous, added));
        println!("{}", restarts.last().unwrap());
        created = target;
        previous = restart.settled;
    }
    let written = OperatorWrites::of(&client, &ns.name, "t-000000").await;
    let mut more = vec![
        "| measurement | result | | |".to_string(),
        "| --- | --- | --- | --- |".to_string(),
    ];
    more.push(rotation_storm(&client).await);
    println!("{}", more.last().unwrap());
    more.push(short_lifetimes(&client).await);
    println!("{}", more.last().unwrap());
    more.extend(token_service(cp, &mut operator, &client, created).await);
    more.push(revoke_all(&operator, cp, &client, &ns.name, created).await);
    println!("{}", more.last().unwrap());
    let with_webhook = with_admission(cp, &operator, &client, &steps, Admission::Webhook).await;
    let with_policy = with_admission(cp, &operator, &client, &steps, Admission::Policy).await;
    operator.stop_with(libc::SIGTERM);
    let (limits, plain) = raw_limit(cp, &client, &steps, &written).await;
    for (((target, rate), (_, raw, raw_cpu)), cpu) in rates.iter().zip(&limits).zip(&cpu_per_token)
    {
        more.push(format!(
            "| the limit at {target} tokens: a raw client making the same requests per token (create, finalizer, Secret, status, event), 32 at a time, with as many tokens already there | {raw:.1} tokens/s | the operator writing the finalizer itself (`finalizerWebhook.enabled=false`, or the webhook out of reach): {rate:.1} tokens/s = {:.0} % (goal: ≥ 90 %) | CPU ms per token, the operator's run / the raw client's: API server {:.2} / {:.2}, etcd {:.2} / {:.2}, controller-manager {:.2} / {:.2}, operator {:.2}, this test {:.2} / {:.2}; all {:.2} / {:.2} |",
            rate * 100.0 / raw.max(f64::MIN_POSITIVE),
            cpu.api_server,
            raw_cpu.api_server,
            cpu.etcd,
            raw_cpu.etcd,
            cpu.controller_manager,
            raw_cpu.controller_manager,
            cpu.operator,
            cpu.client,
            raw_cpu.client,
            cpu.total(),
            raw_cpu.total(),
        ));
    }
    for (admitted, by) in [
        (
            &with_webhook,
            "finalizer webhook (`finalizerWebhook.enabled`, on by default)",
        ),
        (
            &with_policy,
            "finalizer policy (`finalizerPolicy.enabled`, off by default)",
        ),
    ] {
        for ((target, raw, raw_cpu), round) in limits.iter().zip(admitted) {
            let (rate, cpu) = (round.rate(), &round.cpu);
            more.push(format!(
            "| with the chart's {by}, the steps again in a namespace of their own: {target} tokens | {rate:.1} tokens/s = {:.0} % of the limit at {target} (goal: ≥ 90 %) | PATCH accesstokens per token {:.2} (the finalizer comes with the create) | CPU ms per token, this run / the raw client's: API server {:.2} / {:.2}, etcd {:.2} / {:.2}, operator {:.2}, this test {:.2} / {:.2}; all {:.2} / {:.2} |",
            rate * 100.0 / raw.max(f64::MIN_POSITIVE),
            round.per_token("PATCH", "accesstokens") + round.per_token("APPLY", "accesstokens")
                - 1.0,
            cpu.api_server,
            raw_cpu.api_server,
            cpu.etcd,
            raw_cpu.etcd,
            cpu.operator,
            cpu.client,
            raw_cpu.client,
            cpu.total(),
            raw_cpu.total(),
        ));
        }
    }
    more.push(format!(
        "| reference: plain Secret creates, 32 at a time | {plain:.1} Secrets/s | | |"
    ));
    let text = format!(
        "Operator: one replica, log level `{}`. PATCH accesstokens excludes the test's own apply of each token.\n\n{}\n\nAfter each step the operator is restarted with every token present:\n\n{}\n\n{}\n",
        std::env::var("TOKENSMITH_TEST_LOG_LEVEL")
            .unwrap_or_else(|_| "info,tokensmith=debug".into()),
        lines.join("\n"),
        restarts.join("\n"),
        more.join("\n")
    );
    println!("{text}");
    let dir = support::repo_root().join("target/scale");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("figures.md"), text).unwrap();
}

/// The name of the `i`th token of the steps.
fn token_name(i: usize) -> String {
    format!("t-{i:06}")
}

/// One round of new AccessTokens, and how the operator issued them.
struct Round {
    /// Until the last create returned.
    create_time: Duration,
    /// Until the operator's last status write of the round (or, if a token
    /// was not Ready by then, until the test saw every one Ready).
    ready_time: Duration,
    /// Every process's CPU, ms per token, until the last status write.
    cpu: Cpu,
    /// Requests per token by (verb, resource), as the API server counted
    /// them until the last status write; the round's creates included.
    requests: BTreeMap<(String, String), f64>,
    /// The round's tokens, as listed once every one was Ready.
    tokens: Vec<AccessToken>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.tokens.len() as f64 / self.ready_time.as_secs_f64()
    }

    /// Requests of `verb` on `resource` per token.
    fn per_token(&self, verb: &str, resource: &str) -> f64 {
        self.requests
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Creates the AccessTokens `names` in `namespace` (issued by its
/// TokenIssuer `signer`), 32 at a time, and waits until the operator has
/// written the status of every one, as the API server's audit log has it,
/// stamped by the API server. Asking the operator (its metrics) or the API
/// server (a LIST) each moment would load either with work the raw
/// client's run has not: the metrics hold a few series per token (about
/// 40 ms of the operator's CPU a scrape with 12 000), and a LIST of 10 000
/// tokens takes a second.
async fn issue(
    cp: &ControlPlane,
    operator: &Operator,
    tokens: &Api<AccessToken>,
    namespace: &str,
    names: Vec<String>,
) -> Round {
    let before = requests(cp);
    let cpu_before = Cpu::now(cp, Some(operator.pid));
    let mut audit = audit_log(cp);
    let started_at = Timestamp::now();
    let started = Instant::now();
    stream::iter(names.iter())
        .for_each_concurrent(32, |name| {
            let tokens = tokens.clone();
            async move {
                apply(
                    &tokens,
                    name,
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
    let in_round: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut statuses = BTreeMap::new();
    while statuses.len() < names.len() {
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the operator wrote the status of {} of the {} new tokens in 1800 s",
            statuses.len(),
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        statuses.extend(
            status_writes(&mut audit, namespace)
                .into_iter()
                .filter(|(name, _)| in_round.contains(name.as_str())),
        );
    }
    let since_start = |at: Timestamp| {
        Duration::try_from(at.duration_since(started_at))
            .unwrap_or_default()
            .max(create_time)
    };
    let mut ready_time = since_start(statuses.values().max().copied().unwrap_or(started_at));
    let cpu = Cpu::now(cp, Some(operator.pid)).per_token(&cpu_before, names.len());
    let after = requests(cp);
    let requests = after
        .iter()
        .map(|(key, count)| {
            let per_token = (count - before.get(key).unwrap_or(&0.0)) / names.len() as f64;
            (key.clone(), per_token)
        })
        .collect();
    // Then checked: every token Ready (if one is not yet, the time is when
    // the test saw them all Ready).
    let tokens = loop {
        let round: Vec<AccessToken> = tokens
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|t| {
                t.metadata
                    .name
                    .as_deref()
                    .is_some_and(|name| in_round.contains(name))
            })
            .collect();
        let ready = round
            .iter()
            .filter(|t| t.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
            .count();
        if ready >= names.len() || started.elapsed() > Duration::from_secs(1800) {
            break round;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        ready_time = started.elapsed();
    };
    // A first status that was not Ready yet (a token that had to wait) is
    // followed by the one that is: the last write counts.
    if let Some(later) = status_writes(&mut audit, namespace)
        .into_iter()
        .filter(|(name, _)| in_round.contains(name.as_str()))
        .map(|(_, at)| at)
        .max()
    {
        ready_time = ready_time.max(since_start(later));
    }
    Round {
        create_time,
        ready_time,
        cpu,
        requests,
        tokens,
    }
}

/// What gives new AccessTokens the operator's finalizer as they are
/// created, in a run of the steps beside the default install's.
#[derive(Clone, Copy)]
enum Admission {
    /// The chart's `finalizerPolicy`.
    Policy,
    /// The chart's `finalizerWebhook`: the operator's admission path.
    Webhook,
}

/// The `steps` again, with `admission` in place, in a namespace of their
/// own; then it is removed and the namespace deleted, its tokens revoked,
/// so that the next run and the limit are measured with as many tokens
/// there as the operator had at each step, and with no revocation under
/// way.
async fn with_admission(
    cp: &'static ControlPlane,
    operator: &Operator,
    client: &kube::Client,
    steps: &[usize],
    admission: Admission,
) -> Vec<Round> {
    let ns = TestNamespace::create(client, "admitted").await;
    token_issuer(client, &ns.name, "signer", json!({})).await;
    let policy = matches!(admission, Admission::Policy).then(|| {
        FinalizerPolicy::apply(cp, "bench", Bound::Everywhere, &ns.name)
            .expect("the API server serves MutatingAdmissionPolicies")
    });
    let webhook = match admission {
        Admission::Webhook => Some(finalizer_webhook(client, operator, &ns.name).await),
        Admission::Policy => None,
    };
    // The issuer's keys, as the steps' issuer had them before they began.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let mut rounds = Vec::new();
    let mut created = 0;
    for &target in steps {
        let names = (created..target).map(token_name).collect();
        rounds.push(issue(cp, operator, &tokens, &ns.name, names).await);
        created = target;
    }
    if let Some(policy) = policy {
        policy.remove();
    }
    if let Some(webhook) = webhook {
        use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(&webhook, &Default::default())
            .await
            .unwrap();
    }
    ns.delete_and_wait(client, revoked_within(created)).await;
    rounds
}

/// A configuration like the chart's `finalizerWebhook` for `namespace`,
/// calling `operator` at its URL (there is no Service here) and trusting its
/// CA as the operator would set it; returns its name.
async fn finalizer_webhook(client: &kube::Client, operator: &Operator, namespace: &str) -> String {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let ca = operator.ca_pem().expect("the CA is published");
    let name = format!("bench-finalizer-{namespace}");
    let config =
        support::finalizer_webhook::configuration(&name, &operator.url, namespace, Some(&ca));
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&Default::default(), &config)
        .await
        .unwrap();
    name
}

/// The operator's writes (by its own identity, leader-election leases
/// aside) in the audit log `lines`, counted by verb and resource.
fn operator_writes(lines: &[String]) -> BTreeMap<String, usize> {
    let mut writes = BTreeMap::new();
    for event in lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    {
        let verb = event["verb"].as_str().unwrap_or_default();
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        if event["user"]["username"] == "tokensmith-operator"
            && matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            )
            && resource != "leases"
        {
            *writes.entry(format!("{verb} {resource}")).or_default() += 1;
        }
    }
    writes
}

/// The control plane's audit log from now on.
fn audit_log(cp: &ControlPlane) -> Tail {
    let path = cp.kubeconfig.with_file_name("audit.log");
    assert!(
        path.exists(),
        "the figures read the audit log of the control plane hack/control-plane.sh starts ({} is missing)",
        path.display()
    );
    Tail::from_end(path)
}

/// The AccessTokens of `namespace` whose status the operator wrote, in the
/// audit lines `audit` has had since the last call, each with when the API
/// server was done writing it.
fn status_writes(audit: &mut Tail, namespace: &str) -> Vec<(String, Timestamp)> {
    let namespace = format!("\"namespace\":\"{namespace}\"");
    audit
        .lines()
        .iter()
        .filter(|line| {
            line.contains("\"username\":\"tokensmith-operator\"")
                && line.contains("\"resource\":\"accesstokens\"")
                && line.contains("\"subresource\":\"status\"")
                && line.contains(&namespace)
        })
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["verb"] == "patch" && event["responseStatus"]["code"] == 200)
        .filter_map(|event| {
            let name = event["objectRef"]["name"].as_str()?.to_string();
            let at = event["stageTimestamp"].as_str()?.parse().ok()?;
            Some((name, at))
        })
        .collect()
}

/// When the operator logged that it had looked at every AccessToken, if
/// `line` says so for at least `tokens` of them.
fn every_token_looked_at(line: &str, tokens: usize) -> Option<Timestamp> {
    if !line.contains("looked at every object of the kind")
        || !line.contains("kind=\"AccessToken\"")
    {
        return None;
    }
    let mut fields = line.split_whitespace();
    let at = fields.next()?.parse().ok()?;
    let given: usize = fields
        .find_map(|field| field.strip_prefix("given="))?
        .parse()
        .ok()?;
    if given < tokens {
        return None;
    }
    Some(at)
}

/// What a restart of the operator with every token present cost.
struct ColdStart {
    tokens: usize,
    serving: Duration,
    rechecked: Duration,
    written: BTreeMap<String, usize>,
    rechecked_memory: Memory,
    peak_rss: f64,
    settled: Memory,
}

impl ColdStart {
    /// Its row; `before` is the restart of the step before (or the first
    /// start with no token), `added` the tokens since.
    fn row(&self, before: &Memory, added: usize) -> String {
        format!(
            "| {} AccessTokens | {:.1} s | {:.1} s | {} {:?} | {}; {:.1} MiB; {} | {} |",
            self.tokens,
            self.serving.as_secs_f64(),
            self.rechecked.as_secs_f64(),
            self.written.values().sum::<usize>(),
            self.written,
            self.rechecked_memory.mib(),
            self.peak_rss,
            self.settled.mib(),
            self.settled.per_token(before, added),
        )
    }
}

/// Restarts the operator with `tokens` AccessTokens present: how soon it
/// serves and has looked at every token, what it wrote, and its memory.
async fn cold_start(operator: &mut Operator, cp: &ControlPlane, tokens: usize) -> ColdStart {
    operator.stop_with(libc::SIGTERM);
    let mut audit = audit_log(cp);
    let started_at = Timestamp::now();
    let started = Instant::now();
    let second = Operator::start(&[]);
    second.http().await;
    let serving = started.elapsed();
    let rechecked = every_token_looked_at_after(&second, started_at, tokens).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let written = operator_writes(&audit.lines());
    let rechecked_memory = Memory::of(&second).await;
    let peak_rss = status_mib(second.pid, "VmHWM:");
    let settled = Memory::settled(&second).await;
    *operator = second;
    ColdStart {
        tokens,
        serving,
        rechecked,
        written,
        rechecked_memory,
        peak_rss,
        settled,
    }
}

/// How long after `started_at` a newly started `operator` said it had
/// looked at every one of `tokens` AccessTokens, by its own log (its
/// metrics, asked every moment, would cost it more than the start).
async fn every_token_looked_at_after(
    operator: &Operator,
    started_at: Timestamp,
    tokens: usize,
) -> Duration {
    let mut log = Tail::from_start(operator.log.clone());
    let at = support::eventually(
        Duration::from_secs(600),
        "the restarted operator to look at every token",
        || {
            let lines = log.lines();
            let done = lines
                .iter()
                .find_map(|line| every_token_looked_at(line, tokens));
            std::future::ready(done)
        },
    )
    .await;
    Duration::try_from(at.duration_since(started_at)).unwrap_or_default()
}

/// Restarts the operator with `env` set, once it has looked at every one of
/// `tokens` AccessTokens and its token service answers `creds`.
async fn restart_with_env(
    operator: &mut Operator,
    env: &[(&str, &str)],
    tokens: usize,
    creds: &(String, String),
) {
    use support::oauth::token_request;
    operator.stop_with(libc::SIGTERM);
    let started_at = Timestamp::now();
    *operator = Operator::start_with_env(&[], env);
    let http = operator.http().await;
    every_token_looked_at_after(operator, started_at, tokens).await;
    let form = [("grant_type", "client_credentials")];
    support::eventually(
        Duration::from_secs(60),
        "the restarted token service to serve the app",
        || async { (token_request(&http, operator, creds, &form).await.0 == 200).then_some(()) },
    )
    .await;
}

/// `count` AccessTokens `PREFIX-0000`... of the issuer `signer` that live
/// `lifetime` and renew `renew_before` ahead, 32 applied at a time.
async fn create_tokens(
    tokens: &Api<AccessToken>,
    prefix: &str,
    count: usize,
    lifetime: &str,
    renew_before: &str,
) {
    stream::iter(0..count)
        .for_each_concurrent(32, |i| async move {
            apply(
                tokens,
                &format!("{prefix}-{i:04}"),
                json!({ "spec": {
                    "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
                    "lifetime": lifetime,
                    "renewBefore": renew_before,
                }}),
            )
            .await;
        })
        .await;
}

/// 500 tokens that live a minute and renew 30 s before expiry, watched
/// for 150 s: every second, is any token's current expiry in the past
/// (it expired un-rotated)? And how often each was rotated.
async fn short_lifetimes(client: &kube::Client) -> String {
    const TOKENS: usize = 500;
    let ns = TestNamespace::create(client, "short").await;
    token_issuer(client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    create_tokens(&tokens, "m", TOKENS, "1m", "30s").await;
    let started = Instant::now();
    let mut expired_unrotated = std::collections::BTreeSet::new();
    let mut revisions = Vec::new();
    while started.elapsed() < Duration::from_secs(150) {
        let now = Timestamp::now().as_second();
        let list = tokens.list(&ListParams::default()).await.unwrap().items;
        revisions = list
            .iter()
            .map(|t| t.status.as_ref().and_then(|s| s.revision).unwrap_or(0))
            .collect();
        for token in &list {
            let expires = token.status.as_ref().and_then(|s| s.expires_at.as_ref());
            if expires.is_some_and(|at| at.0.as_second() < now) {
                expired_unrotated.insert(token.metadata.name.clone().unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let least = revisions.iter().min().copied().unwrap_or(0);
    let rotations: i64 = revisions.iter().map(|r| (r - 1).max(0)).sum();
    let row = format!(
        "| short lifetimes: {TOKENS} tokens (lifetime 1m, renewBefore 30s) watched for 150 s, every second | {rotations} rotations, each token rotated at least {} times | tokens seen past their expiry un-rotated: {} (goal: 0) | |",
        (least - 1).max(0),
        expired_unrotated.len()
    );
    ns.delete_and_wait(client, revoked_within(TOKENS)).await;
    row
}

/// Deletes every AccessToken of `namespace` at once and measures their
/// revocation: how long until every one is revoked and gone, the writes to
/// the revocation record per token, and what an entry of the record costs,
/// hence how many unexpired revocations its 16 shards of 65 ConfigMaps hold.
async fn revoke_all(
    operator: &Operator,
    cp: &ControlPlane,
    client: &kube::Client,
    namespace: &str,
    tokens: usize,
) -> String {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
    let before = requests(cp);
    let started = Instant::now();
    // One delete per token, 32 at a time, as a GitOps prune would send
    // them (a single deletecollection of thousands outlasts the API
    // server's request timeout).
    let names: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    delete_all(&api, names).await;
    loop {
        let left = api.list(&ListParams::default().limit(1)).await.unwrap();
        if left.items.is_empty() || started.elapsed() > Duration::from_secs(1800) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let after = requests(cp);
    let per_token = |verb: &str, resource: &str| {
        let key = (verb.to_string(), resource.to_string());
        (after.get(&key).unwrap_or(&0.0) - before.get(&key).unwrap_or(&0.0)) / tokens as f64
    };
    let record = Api::<ConfigMap>::namespaced(client.clone(), &operator.namespace)
        .list(&ListParams::default().labels("tokensmith.dev/revocations"))
        .await
        .unwrap()
        .items;
    let entries: usize = record
        .iter()
        .map(|c| c.data.as_ref().map_or(0, |d| d.len()))
        .sum();
    let bytes: usize = record
        .iter()
        .flat_map(|c| c.data.iter().flatten())
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum();
    let per_entry = bytes as f64 / entries.max(1) as f64;
    use tokensmith::cluster::revocations::{OVERFLOW_PAGES, PAGE_BYTES, SHARDS};
    let pages = SHARDS as f64 * (OVERFLOW_PAGES + 1) as f64;
    let bound = pages * PAGE_BYTES as f64 / per_entry.max(1.0);
    format!(
        "| revoking {tokens} AccessTokens (all deleted together, 32 deletes at a time) | every one revoked and gone after {took:.1} s ({:.0}/s) | {:.2} PATCH configmaps (the revocation record) per token; {entries} entries in {} ConfigMaps, {per_entry:.0} bytes an entry: {pages} pages of {} KiB hold about {:.1} million unexpired revocations | RSS {:.1} MiB |",
        tokens as f64 / took,
        per_token("PATCH", "configmaps"),
        record.len(),
        PAGE_BYTES >> 10,
        bound / 1e6,
        rss_mib(operator.pid)
    )
}

/// 1 000 tokens of one lifetime and `renewBefore`, created together: how
/// their renewal times spread (without jitter about 10 % would fall in one
/// second).
async fn rotation_storm(client: &kube::Client) -> String {
    const TOKENS: usize = 1000;
    let ns = TestNamespace::create(client, "storm").await;
    token_issuer(client, &ns.name, "signer", json!({})).await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    create_tokens(&tokens, "s", TOKENS, "1h", "20m").await;
    let created_in = started.elapsed();
    let renewals: Vec<i64> = loop {
        let list = tokens.list(&ListParams::default()).await.unwrap().items;
        let times: Vec<i64> = list
            .iter()
            .filter_map(|t| t.status.as_ref()?.renewal_time.as_ref())
            .map(|t| t.0.as_second())
            .collect();
        if times.len() >= TOKENS || started.elapsed() > Duration::from_secs(600) {
            break times;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut buckets: BTreeMap<i64, usize> = BTreeMap::new();
    for second in &renewals {
        *buckets.entry(*second).or_default() += 1;
    }
    let fullest = buckets.values().max().copied().unwrap_or(0);
    let spread = renewals.iter().max().unwrap_or(&0) - renewals.iter().min().unwrap_or(&0);
    let row = format!(
        "| rotation storm: {TOKENS} tokens (lifetime 1h, renewBefore 20m) created in {:.1} s | renewal times spread over {spread} s | fullest 1-second bucket: {fullest} tokens, {:.1} % (goal: ≤ 2 %) | |",
        created_in.as_secs_f64(),
        fullest as f64 * 100.0 / renewals.len().max(1) as f64
    );
    ns.delete_and_wait(client, revoked_within(TOKENS)).await;
    row
}

/// The limit: a client making the operator's requests for each new token
/// itself (create the AccessToken, add the finalizer, create the Secret,
/// write the status, create an event), 32 at a time as the operator does;
/// and plain Secret creates as a reference. Run with the operator stopped,
/// in steps as the operator's: (tokens there after the step, tokens/s of
/// the step), and plain Secret creates/s.
/// What the operator wrote for one of its tokens, for the raw client to
/// write the same: its status, and its Secret's labels, annotations and
/// data keys (each value replaced by as many filler bytes).
struct OperatorWrites {
    status: serde_json::Value,
    labels: serde_json::Value,
    annotations: serde_json::Value,
    data: serde_json::Value,
}

impl OperatorWrites {
    async fn of(client: &kube::Client, namespace: &str, name: &str) -> Self {
        use k8s_openapi::api::core::v1::Secret;
        let token = Api::<AccessToken>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .unwrap();
        let secret = Api::<Secret>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .unwrap();
        let data: BTreeMap<String, String> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| {
                let filler = vec![b'x'; value.0.len()];
                (
                    key,
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, filler),
                )
            })
            .collect();
        Self {
            status: serde_json::to_value(token.status).unwrap(),
            labels: json!(secret.metadata.labels),
            annotations: json!(secret.metadata.annotations),
            data: json!(data),
        }
    }
}

/// The limit: a raw client making, for each token, the requests the
/// operator makes, with the same verbs and bodies of the same size (the
/// finalizer and the status by server-side apply, the Secret and the event
/// created), 32 at a time.
async fn raw_limit(
    cp: &ControlPlane,
    client: &kube::Client,
    steps: &[usize],
    written: &OperatorWrites,
) -> (Vec<(usize, f64, Cpu)>, f64) {
    use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
    use kube::api::{Patch, PatchParams, PostParams};
    let ns = TestNamespace::create(client, "raw").await;
    let access_tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let mut rates = Vec::new();
    let mut created = 0;
    for &target in steps {
        let cpu_before = Cpu::now(cp, None);
        let started = Instant::now();
        stream::iter(created..target)
            .for_each_concurrent(32, |i| {
                let (access_tokens, secrets, events) =
                    (access_tokens.clone(), secrets.clone(), events.clone());
                let namespace = ns.name.clone();
                async move {
                    let name = format!("r-{i:06}");
                    let token = apply(
                        &access_tokens,
                        &name,
                        json!({ "spec": {
                            "issuerRef": { "kind": "TokenIssuer", "name": "signer" },
                            "lifetime": "24h",
                        }}),
                    )
                    .await;
                    let params = PatchParams::apply("raw").force();
                    let finalizer = json!({
                        "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
                        "metadata": { "name": name, "finalizers": ["tokensmith.dev/revoke"] },
                    });
                    access_tokens
                        .patch(&name, &params, &Patch::Apply(&finalizer))
                        .await
                        .unwrap();
                    let uid = token.metadata.uid.clone().unwrap();
                    let secret: Secret = serde_json::from_value(json!({
                        "metadata": {
                            "name": name,
                            "labels": written.labels,
                            "annotations": written.annotations,
                            "ownerReferences": [{
                                "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
                                "name": name, "uid": uid, "controller": true,
                            }],
                        },
                        "data": written.data,
                    }))
                    .unwrap();
                    secrets
                        .create(&PostParams::default(), &secret)
                        .await
                        .unwrap();
                    let status = json!({
                        "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
                        "status": written.status,
                    });
                    access_tokens
                        .patch_status(&name, &params, &Patch::Apply(&status))
                        .await
                        .unwrap();
                    let now = Timestamp::now();
                    let event: Event = serde_json::from_value(json!({
                        "metadata": { "name": format!("{name}.{}", now.as_nanosecond()) },
                        "eventTime": now.to_string(),
                        "reason": "Issued", "action": "Issued", "type": "Normal",
                        "note": "Issued token abcdefghijklmnopqrstuv (revision 1)",
                        "reportingController": "raw", "reportingInstance": "raw",
                        "regarding": {
                            "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
                            "name": name, "namespace": namespace, "uid": uid,
                        },
                    }))
                    .unwrap();
                    events.create(&PostParams::default(), &event).await.unwrap();
                }
            })
            .await;
        rates.push((
            target,
            (target - created) as f64 / started.elapsed().as_secs_f64(),
            Cpu::now(cp, None).per_token(&cpu_before, target - created),
        ));
        created = target;
    }
    let plain_count = steps.first().copied().unwrap_or(1000);
    let started = Instant::now();
    stream::iter(0..plain_count)
        .for_each_concurrent(32, |i| {
            let secrets = secrets.clone();
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": { "name": format!("plain-{i:06}") },
                    "data": { "token": "dG9rZW4=" },
                }))
                .unwrap();
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .unwrap();
            }
        })
        .await;
    let plain = plain_count as f64 / started.elapsed().as_secs_f64();
    (rates, plain)
}

/// Which endpoint a load step calls.
#[derive(Clone, Copy)]
enum Endpoint {
    ClientCredentials,
    Introspection,
    Jwks,
}

/// What sends the requests of a load step.
#[derive(Clone, Copy)]
enum Generator {
    Hey,
    TestClient,
}

/// Where a load step sends its requests: the operator's URL and the
/// issuer's, the app's client id and secret, and the `hey` binary.
struct Target {
    urls: (String, String),
    creds: (String, String),
    hey: std::path::PathBuf,
}

impl Target {
    /// Where `endpoint` is served.
    fn url(&self, endpoint: Endpoint) -> String {
        match endpoint {
            Endpoint::ClientCredentials => format!("{}/oauth/token", self.urls.0),
            Endpoint::Introspection => format!("{}/oauth/introspect", self.urls.0),
            Endpoint::Jwks => format!("{}/.well-known/jwks.json", self.urls.1),
        }
    }
}

/// Requests per second, p50 and p99 latency in ms, and how many failed.
struct Load {
    rate: f64,
    p50: f64,
    p99: f64,
    failed: usize,
}

impl Load {
    /// The table row of `name` measured `how` (generator and placement).
    fn row(&self, name: &str, how: &str, goal: &str) -> String {
        let Self {
            rate,
            p50,
            p99,
            failed,
        } = self;
        format!(
            "| token service, {name} (c=16, {how}) | {rate:.0} requests/s, p50 {p50:.2} ms, p99 {p99:.2} ms, {failed} failed | {goal} | |"
        )
    }
}

/// Calls `endpoint` from `concurrency` tasks for `seconds`. Introspection
/// takes the `tokens` in turn, round and round.
async fn load(
    http: &reqwest::Client,
    endpoint: Endpoint,
    target: &Target,
    tokens: &Arc<Vec<String>>,
    concurrency: usize,
    seconds: u64,
) -> Load {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let turn = Arc::new(AtomicUsize::new(0));
    let url = target.url(endpoint);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, creds, tokens, turn) = (
                http.clone(),
                url.clone(),
                target.creds.clone(),
                tokens.clone(),
                turn.clone(),
            );
            tokio::spawn(async move {
                let (mut took, mut failed) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let token = &tokens[turn.fetch_add(1, Ordering::Relaxed) % tokens.len()];
                    let request = match endpoint {
                        Endpoint::ClientCredentials => http
                            .post(url.as_str())
                            .basic_auth(&creds.0, Some(&creds.1))
                            .form(&[("grant_type", "client_credentials")]),
                        Endpoint::Introspection => http
                            .post(url.as_str())
                            .basic_auth(&creds.0, Some(&creds.1))
                            .form(&[("token", token.as_str())]),
                        Endpoint::Jwks => http.get(url.as_str()),
                    };
                    let ok = match request.send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            ok && response.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    took.push(sent.elapsed().as_secs_f64() * 1000.0);
                    failed += usize::from(!ok);
                }
                (took, failed)
            })
        })
        .collect();
    let (mut took, mut failed) = (Vec::new(), 0);
    for task in tasks {
        let (t, f) = task.await.unwrap();
        took.extend(t);
        failed += f;
    }
    let rate = took.len() as f64 / started.elapsed().as_secs_f64();
    took.sort_by(f64::total_cmp);
    let at = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    Load {
        rate,
        p50: at(0.5),
        p99: at(0.99),
        failed,
    }
}

/// Calls `endpoint` with `hey` from `concurrency` workers for `seconds`
/// (introspecting `token`), on `core` if given; hey's summary read back.
fn hey(
    target: &Target,
    endpoint: Endpoint,
    token: &str,
    concurrency: usize,
    seconds: u64,
    core: Option<&str>,
) -> Load {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", target.creds.0, target.creds.1));
    let authorization = format!("Authorization: Basic {basic}");
    let form = match endpoint {
        Endpoint::ClientCredentials => Some("grant_type=client_credentials".to_string()),
        Endpoint::Introspection => Some(format!("token={token}")),
        Endpoint::Jwks => None,
    };
    let mut command = match core {
        Some(core) => {
            let mut taskset = std::process::Command::new("taskset");
            taskset.args(["-c", core]).arg(&target.hey);
            taskset
        }
        None => std::process::Command::new(&target.hey),
    };
    // hey sends the Host header as its TLS server name, where a port is
    // not allowed: the address alone goes as the host.
    command.args([
        "-z",
        &format!("{seconds}s"),
        "-c",
        &concurrency.to_string(),
        "-host",
        "127.0.0.1",
    ]);
    if let Some(form) = &form {
        command.args(["-m", "POST", "-T", "application/x-www-form-urlencoded"]);
        command.args(["-H", &authorization, "-d", form]);
    }
    // hey's seconds are waited for without holding up the runtime's tasks.
    command.arg(target.url(endpoint));
    let output = tokio::task::block_in_place(|| command.output()).expect("hey runs");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "hey failed: {summary}");
    hey_summary(&summary).unwrap_or_else(|| panic!("hey's summary unread: {summary}"))
}

/// Reads hey's summary: requests per second, the 50 % and 99 % latencies,
/// and every response that was not a 200 or that failed.
fn hey_summary(summary: &str) -> Option<Load> {
    let secs_at = |percent: &str| {
        summary.lines().find_map(|line| {
            let (at, rest) = line.trim().split_once(" in ")?;
            (at.trim_end_matches('%') == percent)
                .then(|| rest.trim_end_matches(" secs").trim().parse::<f64>().ok())?
        })
    };
    let rate = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    // "[200]\t93918 responses" under the status codes, "[12]\tPost ...:
    // error" under the errors: a count in brackets under errors.
    let mut failed = 0;
    let mut section = "";
    for line in summary.lines() {
        let line = line.trim();
        if line.ends_with("distribution:") {
            section = line;
            continue;
        }
        let Some((bracketed, rest)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) else {
            continue;
        };
        let Ok(number) = bracketed.parse::<usize>() else {
            continue;
        };
        match section {
            "Status code distribution:" if number != 200 => {
                failed += rest.split_whitespace().next()?.parse::<usize>().ok()?
            }
            "Error distribution:" => failed += number,
            _ => {}
        }
    }
    Some(Load {
        rate,
        p50: secs_at("50")? * 1000.0,
        p99: secs_at("99")? * 1000.0,
        failed,
    })
}

/// `count` tokens from the token endpoint, by client_credentials.
async fn minted_tokens(
    http: &reqwest::Client,
    operator: &Operator,
    creds: &(String, String),
    count: usize,
) -> Arc<Vec<String>> {
    use support::oauth::token_request;
    let tokens = stream::iter(0..count)
        .map(|_| async {
            let (status, body) = token_request(
                http,
                operator,
                creds,
                &[("grant_type", "client_credentials")],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_string()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    Arc::new(tokens)
}

/// Pins every thread of process `pid` to `cpus` (`taskset`).
fn pin(pid: u32, cpus: &str) {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset runs");
    assert!(status.success(), "taskset -a -p -c {cpus} {pid}");
}

/// The token service under load: client_credentials, introspection and
/// JWKS, 16 requests at a time for 10 s each, first with the load generator
/// and the operator sharing both cores, then pinned one to each core. Each
/// endpoint is driven by `hey` (rakyll/hey, built by hack/control-plane.sh)
/// and by this test's own client; only the client can take 20 480 tokens in
/// turn. On shared cores a load generator's own CPU is taken from the
/// operator's, so the two tell how much of a figure is the generator's.
/// Last, on shared cores again, the operator restarted with one worker
/// thread (`tokens_present` AccessTokens looked at before it is measured).
async fn token_service(
    cp: &ControlPlane,
    operator: &mut Operator,
    client: &kube::Client,
    tokens_present: usize,
) -> Vec<String> {
    use support::oauth::{app, served_issuer, token_request};
    let ns = TestNamespace::create(client, "load").await;
    let issuer_url = served_issuer(client, operator, &ns.name, "signer").await;
    let http = operator.http().await;
    let creds = app(
        &http,
        operator,
        client,
        &ns.name,
        "load",
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" } }),
    )
    .await;
    let (status, body) = token_request(
        &http,
        operator,
        &creds,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = Arc::new(vec![body["access_token"].as_str().unwrap().to_string()]);
    // More tokens than the token service remembers as verified, so that
    // each introspection of them checks a signature.
    let many = minted_tokens(&http, operator, &creds, 20_480).await;
    let weight: usize = many.iter().map(String::len).sum();
    assert!(
        weight as u64 > 2 * REMEMBERED_BYTES,
        "{weight} bytes of tokens: too few to go past what is remembered"
    );
    let target = Target {
        urls: (operator.url.clone(), issuer_url),
        creds,
        hey: cp.bin_dir.join("hey"),
    };
    let mut rows = Vec::new();
    let introspection_of_many = format!(
        "introspection of {} tokens in turn, each new to it (it remembers {} MiB of verified tokens)",
        many.len(),
        REMEMBERED_BYTES >> 20
    );
    const GOAL: &str = "≥ 10 000/s, p99 < 10 ms";
    for pinned in [false, true] {
        if pinned {
            pin(std::process::id(), "0");
            pin(operator.pid as u32, "1");
        }
        let placement = if pinned {
            "load generator on core 0, operator on core 1"
        } else {
            "both on both cores"
        };
        let hey_core = pinned.then_some("0");
        for (name, endpoint, tokens, generator, goal) in [
            (
                "client_credentials",
                Endpoint::ClientCredentials,
                &token,
                Generator::Hey,
                GOAL,
            ),
            (
                "client_credentials",
                Endpoint::ClientCredentials,
                &token,
                Generator::TestClient,
                GOAL,
            ),
            (
                "introspection of the same token",
                Endpoint::Introspection,
                &token,
                Generator::Hey,
                GOAL,
            ),
            (
                "introspection of the same token",
                Endpoint::Introspection,
                &token,
                Generator::TestClient,
                GOAL,
            ),
            (
                &introspection_of_many,
                Endpoint::Introspection,
                &many,
                Generator::TestClient,
                "",
            ),
            ("JWKS", Endpoint::Jwks, &token, Generator::Hey, ""),
            ("JWKS", Endpoint::Jwks, &token, Generator::TestClient, ""),
        ] {
            let load = match generator {
                Generator::Hey => hey(&target, endpoint, &tokens[0], 16, 10, hey_core),
                Generator::TestClient => load(&http, endpoint, &target, tokens, 16, 10).await,
            };
            let generator = match generator {
                Generator::Hey => "hey",
                Generator::TestClient => "this test's client",
            };
            rows.push(load.row(name, &format!("{generator}, {placement}"), goal));
            println!("{}", rows.last().unwrap());
        }
    }
    pin(std::process::id(), "0,1");
    pin(operator.pid as u32, "0,1");
    // tokio starts a worker thread per core. On two cores shared with the
    // load generator, the second worker mostly parks and is woken again:
    // the same operator with one worker, set as a user would set it
    // (extraEnv, or a CPU limit of one core), then back to the default.
    let one_worker = [("TOKIO_WORKER_THREADS", "1")];
    restart_with_env(operator, &one_worker, tokens_present, &target.creds).await;
    let target = Target {
        urls: (operator.url.clone(), target.urls.1.clone()),
        ..target
    };
    for (name, endpoint) in [
        ("client_credentials", Endpoint::ClientCredentials),
        ("introspection of the same token", Endpoint::Introspection),
    ] {
        let how = "hey, both on both cores, the operator with one worker thread: `TOKIO_WORKER_THREADS=1`";
        rows.push(hey(&target, endpoint, &token[0], 16, 10, None).row(name, how, GOAL));
        println!("{}", rows.last().unwrap());
    }
    restart_with_env(operator, &[], tokens_present, &target.creds).await;
    ns.delete_and_wait(client, revoked_within(0)).await;
    rows
}

#[test]
fn the_operator_s_line_after_every_token_was_looked_at_is_recognised() {
    let line = r#"2026-11-28T15:51:20.710203Z  INFO looked at every object of the kind (at start, or after a relist) kind="AccessToken" given=10000 seconds=1.2"#;
    assert_eq!(
        every_token_looked_at(line, 10000),
        Some("2026-11-28T15:51:20.710203Z".parse().unwrap())
    );
    assert_eq!(every_token_looked_at(line, 10001), None);
    let other = line.replace("\"AccessToken\"", "\"TokenIssuer\"");
    assert_eq!(every_token_looked_at(&other, 1), None);
}

#[test]
fn hey_s_summary_is_read() {
    let summary = "\nSummary:\n  Total:\t10.0021 secs\n  Requests/sec:\t11737.2529\n\n\
Response time histogram:\n  0.000 [1]\t|\n  0.001 [40125]\t|■■■■\n\n\
Latency distribution:\n  10%% in 0.0006 secs\n  50%% in 0.0011 secs\n  99%% in 0.0033 secs\n\n\
Status code distribution:\n  [200]\t93918 responses\n  [401]\t2 responses\n\n\
Error distribution:\n  [3]\tPost \"https://127.0.0.1:1/oauth/token\": EOF\n";
    let load = hey_summary(summary).expect("read");
    assert_eq!(load.rate, 11737.2529);
    assert!((load.p50 - 1.1).abs() < 1e-9 && (load.p99 - 3.3).abs() < 1e-9);
    assert_eq!(load.failed, 5, "two 401s and three errors");
    assert!(hey_summary("Summary:\n  Requests/sec:\tNaN\n").is_none());
}
