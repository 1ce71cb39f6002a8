//! The chart's alert rules and Grafana dashboard, checked against what the
//! operator really exports: the rules as `helm template` renders them are
//! evaluated by `promtool test rules` on series taken from two scrapes of a
//! running operator, and the alerts that fire must be exactly those the
//! objects' statuses (read from the API server) call for.
//!
//! The scraped series are held constant from the first scrape on (counters
//! grow by what they grew between the two scrapes, every minute): that is
//! what Prometheus sees of an operator that stops renewing, so letting
//! promtool's clock run on is how renewal overdue and expiry are reached.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::{Value, json};
use support::{
    control_plane,
    oauth::Served,
    repo_root,
    resources::{apply, is_ready, wait_for},
};
use tokensmith::api::{AccessToken, TokenIssuer};

/// Minutes of series given to promtool: past every time evaluated.
const MINUTES: u64 = 90;

#[tokio::test]
async fn alert_rules_fire_on_a_real_scrape_as_the_objects_say() {
    let served = Served::new("alerts").await;
    let ns = served.ns.name.clone();
    let tokens: Api<AccessToken> = Api::namespaced(served.client.clone(), &ns);
    let issuers: Api<TokenIssuer> = Api::namespaced(served.client.clone(), &ns);

    let signer = json!({ "kind": "TokenIssuer", "name": "signer" });
    let fixed_expiry = Timestamp::from_second(Timestamp::now().as_second() + 300).unwrap();
    for (name, spec) in [
        ("healthy", json!({ "lifetime": "1h", "renewBefore": "30m" })),
        ("fixed", json!({ "expiresAt": fixed_expiry.to_string() })),
        // Longer than the issuer's maxLifetime: refused, not ready.
        ("refused", json!({ "lifetime": "9000h" })),
    ] {
        let mut spec = spec;
        spec["issuerRef"] = signer.clone();
        spec["audiences"] = json!(["api.test"]);
        apply(&tokens, name, json!({ "spec": spec })).await;
    }
    let settled = |t: &AccessToken| {
        t.status.as_ref().is_some_and(|s| {
            support::resources::ready(&s.conditions).is_some_and(|c| c.status != "Unknown")
        })
    };
    let mut statuses = BTreeMap::new();
    for name in ["healthy", "fixed", "refused"] {
        let token = wait_for(
            &tokens,
            name,
            Duration::from_secs(60),
            "a Ready condition",
            settled,
        )
        .await;
        statuses.insert(name, token.status.unwrap());
    }
    assert!(
        is_ready(&statuses["healthy"].conditions),
        "{:?}",
        statuses["healthy"].conditions
    );
    assert!(!is_ready(&statuses["refused"].conditions));
    // A second issuer at the first one's URL, younger by more than the
    // second creation times are counted in, is refused: not ready.
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply(
        &issuers,
        "copycat",
        json!({ "spec": { "issuerURL": served.issuer_url, "audiences": ["api.test"] } }),
    )
    .await;
    let copycat = wait_for(
        &issuers,
        "copycat",
        Duration::from_secs(60),
        "the copycat issuer to be refused",
        |i: &TokenIssuer| {
            i.status.as_ref().is_some_and(|s| {
                support::resources::ready(&s.conditions).is_some_and(|c| c.status == "False")
            })
        },
    )
    .await;
    assert!(!is_ready(&copycat.status.unwrap().conditions));
    let creds = served.app("client", json!({})).await;

    // Two scrapes, a token endpoint mostly refusing clients in between.
    let first = served.operator.metrics().await;
    let start = Timestamp::now().as_second();
    let wrong = (creds.0.clone(), "not-the-secret".to_string());
    for attempt in 0..12 {
        let who = if attempt % 6 == 0 { &creds } else { &wrong };
        served
            .token_request(who, &[("grant_type", "client_credentials")])
            .await;
    }
    let second = served.operator.metrics().await;
    let first = samples(&first, &ns);
    let second = samples(&second, &ns);
    let growth = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let matching = |set: &BTreeMap<String, f64>| -> f64 {
            set.iter()
                .filter(|(series, _)| {
                    series.starts_with(&format!("{name}{{"))
                        && labels
                            .iter()
                            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
                })
                .map(|(_, v)| v)
                .sum()
        };
        matching(&second) - matching(&first)
    };
    let refused = growth(
        "tokensmith_http_requests_total",
        &[("endpoint", "token"), ("code", "4xx")],
    );
    let all = growth("tokensmith_http_requests_total", &[("endpoint", "token")]);
    assert!(
        all >= 12.0,
        "the scrape counts the token requests made ({all})"
    );

    // The alerts the objects call for, minute by minute.
    let at = |status: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        status.as_ref().map(|t| t.0.as_second())
    };
    let token_labels = |name: &str| {
        format!(
            "issuer_kind=\"TokenIssuer\", issuer_name=\"signer\", name=\"{name}\", namespace=\"{ns}\""
        )
    };
    let reconcile_errors: Vec<String> = [
        "AccessToken",
        "AppRegistration",
        "TokenIssuer",
        "ClusterTokenIssuer",
    ]
    .into_iter()
    .filter(|kind| {
        growth(
            "tokensmith_reconciles_total",
            &[("kind", kind), ("result", "error")],
        ) > 0.0
    })
    .map(str::to_string)
    .collect();
    let expected = |minute: u64| -> BTreeSet<String> {
        let now = start + minute as i64 * 60;
        let mut firing = BTreeSet::new();
        let mut fire = |alert: &str, severity: &str, labels: String| {
            let sep = if labels.is_empty() { "" } else { ", " };
            firing.insert(format!(
                "ALERTS{{alertname=\"{alert}\", alertstate=\"firing\", severity=\"{severity}\"{sep}{labels}}}"
            ));
        };
        for (name, status) in &statuses {
            let ready = support::resources::ready(&status.conditions).unwrap();
            if ready.status == "False" && minute >= 10 {
                fire(
                    "TokensmithAccessTokenNotReady",
                    "warning",
                    token_labels(name),
                );
            }
            let renewal = at(&status.renewal_time);
            if renewal.is_some_and(|r| now - r > 600) {
                fire(
                    "TokensmithAccessTokenRenewalOverdue",
                    "warning",
                    token_labels(name),
                );
            }
            if at(&status.expires_at).is_some_and(|x| x - now < 600)
                && renewal.is_none_or(|r| r <= now)
            {
                fire(
                    "TokensmithAccessTokenExpiringWithoutRenewal",
                    "critical",
                    token_labels(name),
                );
            }
        }
        if minute >= 10 {
            fire(
                "TokensmithIssuerNotReady",
                "critical",
                format!("issuer_kind=\"TokenIssuer\", name=\"copycat\", namespace=\"{ns}\""),
            );
        }
        // `for: 15m` counted from the first minute with a rate.
        if minute >= 16 {
            if refused / all > 0.5 {
                fire(
                    "TokensmithTokenEndpointClientFailures",
                    "warning",
                    String::new(),
                );
            }
            for kind in &reconcile_errors {
                fire(
                    "TokensmithReconcileErrors",
                    "warning",
                    format!("kind=\"{kind}\""),
                );
            }
        }
        firing
    };
    let renewal_minute = |name: &str| {
        let renewal = at(&statuses[name].renewal_time).expect("a renewal time");
        ((renewal - start + 600) / 60 + 2) as u64
    };
    let expiry_minute = |name: &str| {
        let expiry = at(&statuses[name].expires_at).expect("an expiry");
        ((expiry - start - 300) / 60) as u64
    };
    let minutes = [
        11,
        20,
        renewal_minute("healthy"),
        expiry_minute("healthy"),
        expiry_minute("healthy") + 10,
    ];
    assert!(minutes.iter().all(|m| *m < MINUTES), "{minutes:?}");
    // The times chosen see each per-token alert both ways.
    let seen: BTreeSet<String> = minutes.iter().flat_map(|m| expected(*m)).collect();
    for alert in [
        "AccessTokenNotReady",
        "RenewalOverdue",
        "ExpiringWithoutRenewal",
        "IssuerNotReady",
        "ClientFailures",
    ] {
        assert!(
            seen.iter().any(|s| s.contains(alert)),
            "{alert} is tested firing: {seen:#?}"
        );
    }
    assert!(!expected(11).iter().any(|s| s.contains("RenewalOverdue")));

    let dir = repo_root().join("target/tmp").join(format!("alerts-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yaml"), rendered_rules()).unwrap();
    promtool(&["check", "rules", "rules.yaml"], &dir);

    let input_series: Vec<Value> = second
        .iter()
        .map(|(series, value)| {
            let values = if is_cumulative(series) {
                let from = first.get(series).copied().unwrap_or(0.0);
                format!("{from}+{}x{MINUTES}", value - from)
            } else {
                format!("{value}+0x{MINUTES}")
            };
            json!({ "series": series, "values": values })
        })
        .collect();
    let promql_expr_test: Vec<Value> = minutes
        .iter()
        .map(|minute| {
            let samples: Vec<Value> = expected(*minute)
                .into_iter()
                .map(|labels| json!({ "labels": labels, "value": 1 }))
                .collect();
            json!({
                "expr": "ALERTS{alertstate=\"firing\"}",
                "eval_time": format!("{minute}m"),
                "exp_samples": samples,
            })
        })
        .collect();
    let test = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "name": "a real scrape, frozen",
            "interval": "1m",
            "start_timestamp": start,
            "input_series": input_series,
            "promql_expr_test": promql_expr_test,
        }],
    });
    std::fs::write(dir.join("test.yaml"), serde_yaml::to_string(&test).unwrap()).unwrap();
    promtool(&["test", "rules", "test.yaml"], &dir);

    // Every series the dashboard asks for is one the operator exports, and
    // every query parses.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("charts/tokensmith/files/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() > 10, "{queries:?}");
    let exported: BTreeSet<&str> = second
        .keys()
        .map(|s| s.split('{').next().unwrap())
        .collect();
    let mut rules = Vec::new();
    for (i, query) in queries.iter().enumerate() {
        for name in metric_names(query) {
            assert!(
                exported.contains(name.as_str()),
                "the dashboard's {name} is exported ({query})"
            );
        }
        // Grafana's own function, not PromQL.
        if query.starts_with("label_values(") {
            continue;
        }
        let expr = query
            .replace("$__rate_interval", "5m")
            .replace("$namespace", ".*");
        rules.push(json!({ "record": format!("dashboard:query_{i}"), "expr": expr }));
    }
    let recorded = json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(
        dir.join("dashboard-queries.yaml"),
        serde_yaml::to_string(&recorded).unwrap(),
    )
    .unwrap();
    promtool(&["check", "rules", "dashboard-queries.yaml"], &dir);
}

/// The samples of `text` (OpenMetrics), keyed by series as promtool writes
/// them; the per-object series only of `namespace` (other tests' objects
/// share the cluster), every other series of this test binary's operator.
fn samples(text: &str, namespace: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("tokensmith_"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse::<f64>().ok()?))
        })
        .filter(|(series, _)| {
            let per_object = [
                "tokensmith_access_token_",
                "tokensmith_app_registration_",
                "tokensmith_issuer_",
            ]
            .iter()
            .any(|p| series.starts_with(p));
            !per_object || series.contains(&format!("namespace=\"{namespace}\""))
        })
        .collect()
}

fn is_cumulative(series: &str) -> bool {
    let name = series.split('{').next().unwrap();
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// The PrometheusRule's rule groups as the chart renders them.
fn rendered_rules() -> String {
    let chart = repo_root().join("charts/tokensmith");
    let output = support::tool(
        "helm",
        &[
            "template",
            "tokensmith",
            chart.to_str().unwrap(),
            "--kube-version",
            "1.36.0",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--api-versions",
            "monitoring.coreos.com/v1/PrometheusRule",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let rule = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "PrometheusRule")
        .expect("the chart renders a PrometheusRule");
    serde_yaml::to_string(&rule["spec"]).unwrap()
}

fn promtool(args: &[&str], dir: &std::path::Path) {
    let output = Command::new(control_plane().bin_dir.join("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (hack/control-plane.sh build installs it)");
    assert!(
        output.status.success(),
        "promtool {args:?} in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every `expr` and variable `query` in the dashboard.
fn collect_queries(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(q)) => into.push(q.clone()),
                    ("query", Value::Object(q)) if q.contains_key("query") => {
                        if let Some(Value::String(q)) = q.get("query") {
                            into.push(q.clone());
                        }
                    }
                    _ => collect_queries(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_queries(v, into)),
        _ => {}
    }
}

fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("tokensmith_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}
