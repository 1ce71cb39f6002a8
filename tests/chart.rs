//! The Helm chart: lint-clean, rendered templates valid under
//! `kubeconform -strict` with the project's CRD schemas, installable, and
//! its RBAC exactly enough: checked verb by verb with `kubectl auth can-i`,
//! then by running the operator with the chart's ServiceAccount.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{ConfigMap, ServiceAccount},
};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};
use support::{
    TestNamespace, control_plane, eventually,
    finalizer_policy::{self, ADMISSION_POLICIES},
    kubernetes_version,
    operator::Operator,
    render_chart, repo_root,
    resources::{apply, is_ready, wait_for, wait_reason},
    schemas::write_schemas,
    tool,
};
use tokensmith::{
    api::{AccessToken, AppRegistration, ClusterTokenIssuer},
    controller::FINALIZER,
};

fn chart() -> PathBuf {
    repo_root().join("charts/tokensmith")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The chart rendered with `values`, for a cluster like the suite's: one
/// that serves MutatingAdmissionPolicies where the suite's does.
fn render(values: &[&str]) -> String {
    if finalizer_policy::served(control_plane()) {
        render_with(values, &[ADMISSION_POLICIES])
    } else {
        render_with(values, &[])
    }
}

/// The chart rendered with `values` for a cluster that serves (beyond
/// helm's defaults) `api_versions`.
fn render_with(values: &[&str], api_versions: &[&str]) -> String {
    render_chart("tokensmith", values, api_versions)
}

/// The documents of `yaml`, and the default ClusterTokenIssuer the chart
/// hands the operator in a ConfigMap (validated like the rest).
fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    let mut docs: Vec<Value> = serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect();
    let handed_over: Vec<Value> = docs
        .iter()
        .filter_map(|d| d["data"]["default-issuer.yaml"].as_str())
        .map(|text| serde_yaml::from_str(text).expect("the default issuer is YAML"))
        .collect();
    docs.extend(handed_over);
    docs
}

/// Runs kubeconform -strict on `file` with schemas for its kinds; its JSON summary.
fn kubeconform(file: &Path, docs: &[Value]) -> (bool, String) {
    let mut kinds: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["apiVersion"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    let schemas = repo_root().join("target/tmp/schemas");
    write_schemas(&schemas, &kinds);
    let location = format!(
        "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        schemas.display()
    );
    let output = tool(
        "kubeconform",
        &[
            "-strict",
            "-summary",
            "-output",
            "json",
            "-schema-location",
            &location,
            file.to_str().unwrap(),
        ],
    );
    (output.status.success(), text(&output))
}

#[test]
fn helm_lint_is_clean() {
    for values in [
        vec![],
        vec![
            "replicaCount=1",
            "leaderElection.enabled=false",
            "metrics.serviceMonitor.enabled=true",
        ],
    ] {
        let chart = chart();
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        for value in &values {
            args.extend(["--set", value]);
        }
        let output = tool("helm", &args);
        let said = text(&output);
        assert!(output.status.success(), "helm lint {values:?}: {said}");
        assert!(
            !said.contains("[WARNING]") && !said.contains("[ERROR]"),
            "{said}"
        );
    }
}

#[test]
fn rendered_templates_pass_kubeconform_strict() {
    let dir = repo_root().join("target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, values) in [
        vec![],
        vec![
            "replicaCount=1",
            "leaderElection.enabled=false",
            "tokenService.tlsSecret=tokensmith-tls",
            "tokenService.publicURL=https://tokens.example.com",
            "extraArgs={--log-level=debug}",
            "priorityClassName=system-cluster-critical",
            "nodeSelector.kubernetes\\.io/os=linux",
        ],
        vec![
            "defaultIssuer.enabled=false",
            "rbac.create=false",
            "serviceAccount.create=false",
            "metrics.enabled=false",
            "crds.enabled=false",
        ],
        vec![
            "networkPolicy.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "commonLabels.team=platform",
            "deploymentAnnotations.owner=platform",
            "strategy.type=Recreate",
            "topologySpreadConstraints[0].maxSkew=1",
            "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
            "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
            "extraEnv[0].name=HTTPS_PROXY",
            "extraEnv[0].value=http://proxy:3128",
            "extraVolumes[0].name=extra",
            "extraVolumes[0].emptyDir.medium=Memory",
            "extraVolumeMounts[0].name=extra",
            "extraVolumeMounts[0].mountPath=/extra",
            "livenessProbe.periodSeconds=20",
            "podDisruptionBudget.minAvailable=2",
            "replicaCount=3",
            "finalizerPolicy.enabled=true",
            "finalizerWebhook.enabled=true",
        ],
    ]
    .iter()
    .enumerate()
    {
        let rendered = render(values);
        let docs = documents(&rendered);
        assert!(docs.iter().any(|d| d["kind"] == "Deployment"), "{values:?}");
        let file = dir.join(format!("chart-{}-{i}.yaml", std::process::id()));
        let all: String = docs
            .iter()
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
            .collect();
        std::fs::write(&file, all).unwrap();
        let (valid, summary) = kubeconform(&file, &docs);
        assert!(valid, "kubeconform -strict {values:?}: {summary}");
        assert!(
            summary.contains(&format!("\"valid\": {}", docs.len())),
            "every document validated: {summary}"
        );
    }

    // The schemas are strict and include the CRDs: an unknown field in a
    // Deployment and an unsupported algorithm in the issuer are refused.
    let mut docs = documents(&render(&[]));
    for doc in &mut docs {
        if doc["kind"] == "Deployment" {
            doc["spec"]["replicass"] = json!(2);
        }
        if doc["kind"] == "ClusterTokenIssuer" {
            doc["spec"]["algorithm"] = json!("HS256");
        }
    }
    let broken: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    let file = dir.join(format!("chart-{}-broken.yaml", std::process::id()));
    std::fs::write(&file, broken).unwrap();
    let (valid, summary) = kubeconform(&file, &docs);
    assert!(!valid, "{summary}");
    assert!(summary.contains("replicass"), "{summary}");
    assert!(summary.contains("/spec/algorithm"), "{summary}");
}

fn can_i(service_account: &str, verb: &str, resource: &str, scope: &[&str]) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", service_account];
    args.extend(scope);
    let output = control_plane().kubectl_output(&args);
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}

/// A kubeconfig that authenticates as `service_account` of `namespace`.
async fn service_account_kubeconfig(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
) -> PathBuf {
    let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(
            service_account,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut kubeconfig: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&control_plane().kubeconfig).unwrap())
            .unwrap();
    let user = json!([{ "name": "service-account", "user": { "token": token } }]);
    kubeconfig["users"] = user;
    for context in kubeconfig["contexts"].as_array_mut().unwrap() {
        context["context"]["user"] = json!("service-account");
    }
    let path = repo_root().join(format!(
        "target/tmp/{namespace}-{service_account}.kubeconfig"
    ));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

/// The chart's README is what helm-docs makes of values.yaml now, and
/// every value in it says what it is.
#[test]
fn chart_readme_is_generated_from_the_values() {
    let chart = chart();
    let output = Command::new(control_plane().bin_dir.join("helm-docs"))
        .args([
            "--chart-search-root",
            ".",
            "--skip-version-footer",
            "--log-level",
            "warning",
            "--dry-run",
        ])
        .current_dir(&chart)
        .output()
        .expect("helm-docs runs (hack/control-plane.sh build installs it)");
    assert!(output.status.success(), "{}", text(&output));
    let generated = String::from_utf8(output.stdout).unwrap();
    let checked_in = std::fs::read_to_string(chart.join("README.md")).unwrap();
    assert!(
        generated.trim_end() == checked_in.trim_end(),
        "charts/tokensmith/README.md is out of date: run helm-docs in charts/tokensmith (hack/control-plane.sh bin-dir has it)"
    );
    let undocumented: Vec<&str> = checked_in
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Key"))
        .filter(|l| l.trim_end().ends_with("|  |") || l.trim_end().ends_with("| |"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "values without a description: {undocumented:#?}"
    );
}

/// The values schema and the chart's own checks refuse what cannot work,
/// saying which value is wrong.
#[test]
fn bad_values_fail_to_render_and_say_which() {
    let chart = chart();
    let version = kubernetes_version();
    for (value, says) in [
        ("replicaCount=two", "/replicaCount"),
        ("replicaCount=0", "/replicaCount"),
        ("logFormat=xml", "/logFormat"),
        (
            "defaultIssuer.spec.algorithm=HS256",
            "/defaultIssuer/spec/algorithm",
        ),
        (
            "tokenService.publicURL=http://plain.example.com",
            "/tokenService/publicURL",
        ),
        ("image.digest=latest", "/image/digest"),
        ("replicaCont=2", "replicaCont"),
        ("metrics.serviceMonitor.intervall=1m", "intervall"),
        (
            "leaderElection.enabled=false",
            "needs leaderElection.enabled",
        ),
    ] {
        let output = tool(
            "helm",
            &[
                "template",
                "tokensmith",
                chart.to_str().unwrap(),
                "--kube-version",
                &version,
                "--set",
                value,
            ],
        );
        let said = text(&output);
        assert!(!output.status.success(), "{value} renders:\n{said}");
        assert!(said.contains(says), "{value}: {said}");
    }
    // One replica without leader election is fine.
    render(&["replicaCount=1", "leaderElection.enabled=false"]);
}

/// The monitoring objects render only where their CRDs are installed.
#[test]
fn monitoring_objects_need_their_crds() {
    let values = [
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ];
    let kinds = |docs: Vec<Value>| -> Vec<String> {
        docs.iter()
            .filter_map(|d| d["kind"].as_str().map(str::to_string))
            .filter(|k| k == "ServiceMonitor" || k == "PrometheusRule")
            .collect()
    };
    assert!(kinds(documents(&render(&values))).is_empty());
    let docs = documents(&render_with(
        &values,
        &[
            "monitoring.coreos.com/v1/ServiceMonitor",
            "monitoring.coreos.com/v1/PrometheusRule",
        ],
    ));
    let mut rendered = kinds(docs.clone());
    rendered.sort();
    assert_eq!(rendered, ["PrometheusRule", "ServiceMonitor"]);
    let monitor = docs.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
}

/// The finalizer policy gives new AccessTokens the operator's own
/// finalizer, lets a failed evaluation through (the operator adds the
/// finalizer then), and renders only where the values ask for it and the
/// API server serves such policies.
#[test]
fn the_finalizer_policy_gives_the_operator_s_finalizer() {
    let enabled = ["finalizerPolicy.enabled=true"];
    let docs = documents(&render_with(&enabled, &[ADMISSION_POLICIES]));
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "MutatingAdmissionPolicy")
        .expect("the policy is rendered");
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "MutatingAdmissionPolicyBinding")
        .expect("the binding is rendered");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(
        binding["spec"]["matchResources"],
        Value::Null,
        "every namespace"
    );
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Ignore");
    assert_eq!(
        spec["matchConstraints"]["resourceRules"],
        json!([{
            "apiGroups": ["tokensmith.dev"], "apiVersions": ["*"],
            "operations": ["CREATE"], "resources": ["accesstokens"],
        }])
    );
    let quoted = format!("\"{FINALIZER}\"");
    let condition = spec["matchConditions"][0]["expression"].as_str().unwrap();
    assert!(condition.contains(&quoted), "{condition}");
    let mutation = spec["mutations"][0]["applyConfiguration"]["expression"]
        .as_str()
        .unwrap();
    assert!(mutation.contains(&format!("[{quoted}]")), "{mutation}");

    let policies = |docs: Vec<Value>| {
        docs.iter()
            .filter(|d| {
                d["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("MutatingAdmissionPolicy"))
            })
            .count()
    };
    assert_eq!(policies(docs), 2);
    // Off by default; and not where the API server serves no such policies.
    assert_eq!(
        policies(documents(&render_with(&[], &[ADMISSION_POLICIES]))),
        0
    );
    assert_eq!(policies(documents(&render_with(&enabled, &[]))), 0);
}

/// The finalizer webhook calls the operator's admission path on the chart's
/// Service for AccessToken creates only, is skipped when it cannot answer,
/// and the operator is told which configuration's caBundle to keep and may
/// patch that one only. On by default.
#[test]
fn the_finalizer_webhook_calls_the_operator_for_new_tokens() {
    let docs = documents(&render(&[
        "finalizerWebhook.enabled=true",
        "finalizerWebhook.timeoutSeconds=3",
    ]));
    let config = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("the webhook configuration is rendered");
    let name = config["metadata"]["name"].as_str().unwrap();
    let webhook = &config["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["timeoutSeconds"], 3);
    assert_eq!(
        webhook["rules"],
        json!([{
            "apiGroups": ["tokensmith.dev"], "apiVersions": ["*"],
            "operations": ["CREATE"], "resources": ["accesstokens"], "scope": "Namespaced",
        }])
    );
    let service = &webhook["clientConfig"]["service"];
    assert_eq!(service["path"], tokensmith::admission::PATH);
    let chart_service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(service["name"], chart_service["metadata"]["name"]);
    assert_eq!(service["namespace"], chart_service["metadata"]["namespace"]);
    assert_eq!(service["port"], chart_service["spec"]["ports"][0]["port"]);
    let condition = webhook["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    assert!(
        condition.contains(&format!("\"{FINALIZER}\"")),
        "{condition}"
    );

    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&format!("--finalizer-webhook={name}").as_str()),
        "{args:?}"
    );
    assert!(
        args.contains(&format!("--service-name={}", service["name"].as_str().unwrap()).as_str()),
        "{args:?}"
    );
    let operator_role = |docs: &[Value]| {
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == service["name"])
            .cloned()
            .expect("the operator's ClusterRole")
    };
    let role = operator_role(&docs);
    let rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["mutatingwebhookconfigurations"]))
        .expect("a rule for the webhook's configuration");
    assert_eq!(rule["resourceNames"], json!([name]));
    assert_eq!(rule["verbs"], json!(["get", "patch"]));

    let on = documents(&render(&[]));
    assert!(
        on.iter()
            .any(|d| d["kind"] == "MutatingWebhookConfiguration")
    );
    let off = documents(&render(&["finalizerWebhook.enabled=false"]));
    assert!(
        !off.iter()
            .any(|d| d["kind"] == "MutatingWebhookConfiguration")
    );
    let role = operator_role(&off);
    assert!(!role.to_string().contains("mutatingwebhookconfigurations"));
}

#[tokio::test]
async fn installs_and_its_rbac_is_enough_and_no_more() {
    let client = control_plane().client().await;
    let release_ns = TestNamespace::create(&client, "chart").await;
    let other = TestNamespace::create(&client, "chart-workload").await;
    let release = format!("ts-{}", &release_ns.name[release_ns.name.len() - 8..]);
    let fullname = format!("{release}-tokensmith");
    let issuer = format!("{release}-default");
    let installed = tool(
        "helm",
        &[
            "install",
            &release,
            chart().to_str().unwrap(),
            "--namespace",
            &release_ns.name,
            "--set",
            &format!("defaultIssuer.name={issuer}"),
            // The suite installed the CRDs (as a cluster whose CRDs are
            // managed apart from the chart); tests/helm_lifecycle.rs
            // installs them with the chart.
            "--set",
            "crds.enabled=false",
        ],
    );
    assert!(
        installed.status.success(),
        "helm install: {}",
        text(&installed)
    );
    let uninstall = || {
        tool(
            "helm",
            &["uninstall", &release, "--namespace", &release_ns.name],
        )
    };

    let deployment: Value = serde_json::from_str(&control_plane().kubectl(&[
        "get",
        "deployment",
        &fullname,
        "-n",
        &release_ns.name,
        "-o",
        "json",
    ]))
    .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["serviceAccountName"], fullname);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--leader-elect=true"))
    );
    assert_eq!(deployment["spec"]["replicas"], 2);

    // Verb by verb.
    let sa = format!("system:serviceaccount:{}:{fullname}", release_ns.name);
    let all = ["--all-namespaces"];
    let elsewhere = ["-n", other.name.as_str()];
    let own = ["-n", release_ns.name.as_str()];
    let status = ["--subresource=status", "--all-namespaces"];
    let mut granted = vec![];
    for kind in [
        "accesstokens",
        "appregistrations",
        "tokenissuers",
        "clustertokenissuers",
    ] {
        let resource = format!("{kind}.tokensmith.dev");
        for verb in ["get", "list", "watch", "patch"] {
            granted.push((verb, resource.clone(), &all[..]));
        }
        granted.push(("patch", resource, &status[..]));
    }
    // The default issuer the chart hands over is created by the operator.
    granted.push((
        "create",
        "clustertokenissuers.tokensmith.dev".into(),
        &all[..],
    ));
    for verb in ["get", "list", "watch", "create", "patch", "delete"] {
        granted.push((verb, "secrets".into(), &elsewhere[..]));
    }
    granted.extend([
        ("list", "namespaces".to_string(), &all[..]),
        ("watch", "namespaces".into(), &all[..]),
        ("get", "serviceaccounts".into(), &elsewhere[..]),
        ("get", "configmaps".into(), &elsewhere[..]),
        ("create", "events.events.k8s.io".into(), &elsewhere[..]),
        ("patch", "events.events.k8s.io".into(), &elsewhere[..]),
        ("patch", "deployments.apps".into(), &elsewhere[..]),
        ("patch", "statefulsets.apps".into(), &elsewhere[..]),
        ("patch", "daemonsets.apps".into(), &elsewhere[..]),
        ("get", "deployments.apps".into(), &elsewhere[..]),
        (
            "create",
            "tokenreviews.authentication.k8s.io".into(),
            &all[..],
        ),
        ("list", "configmaps".into(), &own[..]),
        ("watch", "configmaps".into(), &own[..]),
        ("create", "configmaps".into(), &own[..]),
        ("patch", "configmaps".into(), &own[..]),
        ("get", "leases.coordination.k8s.io".into(), &own[..]),
        ("create", "leases.coordination.k8s.io".into(), &own[..]),
        ("patch", "leases.coordination.k8s.io".into(), &own[..]),
        ("update", "secrets".into(), &own[..]),
    ]);
    // The finalizer webhook's configuration (on by default): its caBundle.
    let webhook = format!("{fullname}-revoke-finalizer");
    let webhook_config =
        format!("mutatingwebhookconfigurations.admissionregistration.k8s.io/{webhook}");
    granted.push(("get", webhook_config.clone(), &all[..]));
    granted.push(("patch", webhook_config, &all[..]));
    for (verb, resource, scope) in &granted {
        assert!(
            can_i(&sa, verb, resource, scope),
            "the operator needs to {verb} {resource} {scope:?}"
        );
    }
    let denied: Vec<(&str, &str, &[&str])> = vec![
        ("create", "accesstokens.tokensmith.dev", &all),
        ("update", "accesstokens.tokensmith.dev", &all),
        ("update", "secrets", &elsewhere),
        ("delete", "accesstokens.tokensmith.dev", &all),
        ("delete", "appregistrations.tokensmith.dev", &all),
        ("list", "configmaps", &elsewhere),
        ("patch", "configmaps", &elsewhere),
        ("create", "leases.coordination.k8s.io", &elsewhere),
        ("update", "deployments.apps", &elsewhere),
        ("create", "pods", &elsewhere),
        ("delete", "namespaces", &all),
        ("create", "clusterroles.rbac.authorization.k8s.io", &all),
        ("create", "serviceaccounts/token", &elsewhere),
        ("get", "nodes", &all),
        (
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/another",
            &all,
        ),
    ];
    for (verb, resource, scope) in denied {
        assert!(
            !can_i(&sa, verb, resource, scope),
            "the operator must not {verb} {resource} {scope:?}"
        );
    }

    // And the RBAC suffices: the operator, running with the chart's
    // ServiceAccount, does the whole job.
    let kubeconfig = service_account_kubeconfig(&client, &release_ns.name, &fullname).await;
    let default_issuer = support::chart_default_issuer(&release_ns.name, &fullname);
    let operator = Operator::start_as(
        &kubeconfig,
        &release_ns.name,
        &[
            "--default-issuer",
            default_issuer.to_str().unwrap(),
            "--finalizer-webhook",
            &webhook,
        ],
    );
    let issuers: Api<ClusterTokenIssuer> = Api::all(client.clone());
    wait_for(
        &issuers,
        &issuer,
        Duration::from_secs(60),
        "the chart's issuer to be Ready",
        |i| i.status.as_ref().is_some_and(|s| is_ready(&s.conditions)),
    )
    .await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &other.name);
    apply(
        &tokens,
        "workload",
        json!({ "spec": { "issuerRef": { "kind": "ClusterTokenIssuer", "name": issuer }, "scopes": ["read"] } }),
    )
    .await;
    wait_reason(&tokens, "workload", "Issued").await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), &other.name);
    apply(
        &apps,
        "client",
        json!({ "spec": { "issuerRef": { "kind": "ClusterTokenIssuer", "name": issuer }, "scopes": ["read"] } }),
    )
    .await;
    support::oauth::registered(&apps, "client").await;
    operator.http().await;
    let configs: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.clone());
    let config = configs.get(&webhook).await.unwrap();
    assert!(
        config.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .is_some(),
        "the operator set the webhook's caBundle with the chart's RBAC"
    );
    tokens
        .delete("workload", &Default::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the AccessToken to be revoked and gone",
        || async {
            tokens
                .get_opt("workload")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let revocations = Api::<ConfigMap>::namespaced(client.clone(), &release_ns.name)
        .list(&kube::api::ListParams::default().labels("tokensmith.dev/revocations"))
        .await
        .unwrap();
    assert!(
        !revocations.items.is_empty(),
        "the revocation record is in the release's namespace"
    );
    // RBAC refusals name the user; other "forbidden"s (say, a namespace of
    // another test binary being terminated) are not about permissions.
    let log = operator.log_text();
    let refused = [format!("{sa}\" cannot"), format!("{sa}\\\" cannot")];
    assert!(
        !refused.iter().any(|r| log.contains(r.as_str())),
        "the operator was refused something:\n{log}"
    );

    // The operator applied the default issuer, so the release does not
    // delete it (README: Uninstalling); this test does.
    issuers.delete(&issuer, &Default::default()).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the chart's issuer to be gone",
        || async {
            issuers
                .get_opt(&issuer)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let uninstalled = uninstall();
    assert!(
        uninstalled.status.success(),
        "helm uninstall: {}",
        text(&uninstalled)
    );
}

#[test]
fn argo_cd_health_check_follows_ready() {
    let object = |generation: i64, condition: Option<Value>| {
        let mut object = json!({ "metadata": { "name": "t", "generation": generation } });
        if let Some(condition) = condition {
            object["status"] = json!({ "conditions": [
                { "type": "Other", "status": "False", "reason": "X", "message": "not this one" },
                condition,
            ] });
        }
        object
    };
    let ready = |status: &str, reason: &str, observed: i64| json!({ "type": "Ready", "status": status, "reason": reason, "message": reason, "observedGeneration": observed });
    let cases = [
        (object(1, None), "Progressing"),
        (object(1, Some(ready("True", "Issued", 1))), "Healthy"),
        (object(2, Some(ready("True", "Issued", 1))), "Progressing"),
        (
            object(1, Some(ready("False", "InvalidSpec", 1))),
            "Degraded",
        ),
        (
            object(1, Some(ready("False", "IssuerNotReady", 1))),
            "Progressing",
        ),
        (object(1, Some(ready("False", "Revoked", 1))), "Suspended"),
        (object(1, Some(ready("False", "Expired", 1))), "Suspended"),
    ];
    let objects: Vec<Value> = cases.iter().map(|(o, _)| o.clone()).collect();
    let script = chart().join("files/argocd-health.lua");
    let results = support::python(
        "argocd_health.py",
        &[
            script.to_str().unwrap(),
            &serde_json::to_string(&objects).unwrap(),
        ],
    )
    .unwrap_or_else(|e| panic!("the Lua script fails: {e}"));
    for (i, (_, expected)) in cases.iter().enumerate() {
        assert_eq!(results[i]["status"], *expected, "case {i}: {}", objects[i]);
    }
    assert_eq!(
        results[3]["message"], "InvalidSpec",
        "the condition's message is shown"
    );
}

#[test]
fn argo_cd_renew_action_asks_for_a_new_token() {
    let object = json!({
        "apiVersion": "tokensmith.dev/v1alpha1", "kind": "AccessToken",
        "metadata": { "name": "ci", "namespace": "team-a", "labels": { "team": "a" } },
        "spec": { "issuerRef": { "kind": "TokenIssuer", "name": "signer" } },
    });
    let script = chart().join("files/argocd-renew-action.lua");
    let changed = support::python(
        "argocd_action.py",
        &[script.to_str().unwrap(), &object.to_string()],
    )
    .unwrap_or_else(|e| panic!("the Lua action fails: {e}"));
    let asked = changed["metadata"]["annotations"]["tokensmith.dev/renew"]
        .as_str()
        .unwrap_or_else(|| panic!("no renew annotation: {changed}"));
    let asked: k8s_openapi::jiff::Timestamp = asked.parse().expect("a time");
    let now = k8s_openapi::jiff::Timestamp::now();
    assert!((now.as_second() - asked.as_second()).abs() < 60, "{asked}");
    assert_eq!(
        changed["metadata"]["labels"]["team"], "a",
        "the rest is kept"
    );
    assert_eq!(changed["spec"], object["spec"]);
}
