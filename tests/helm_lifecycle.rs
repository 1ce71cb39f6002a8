//! The Helm chart's life on a cluster of its own (no CRDs until the chart
//! installs them): install, the examples Ready against the chart's default
//! issuer, `helm upgrade` changing a CRD, `helm uninstall` keeping the CRDs
//! and the signing keys that live tokens need, and installing again.

mod support;

use std::{path::Path, process::Output, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use support::{
    TestNamespace, bare_control_plane, control_plane,
    operator::Operator,
    repo_root,
    resources::{issuer_keyring, secret_text},
};
use tokensmith::{
    api::{AccessToken, ClusterTokenIssuer},
    token::verify_jwt,
};

fn helm(args: &[&str]) -> Output {
    support::tool("helm", args)
}

/// The categories of the AccessToken CRD in the cluster.
fn crd_categories() -> String {
    control_plane().kubectl(&[
        "get",
        "crd",
        "accesstokens.tokensmith.dev",
        "-o",
        "jsonpath={.spec.names.categories}",
    ])
}

fn succeeded(what: &str, output: Output) {
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A copy of the chart whose AccessToken CRD gained a category, as a new
/// chart version changing a CRD would.
fn changed_chart(into: &Path) {
    let _ = std::fs::remove_dir_all(into);
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("charts/tokensmith"))
        .arg(into)
        .status()
        .unwrap();
    assert!(copied.success());
    let crd = into.join("templates/crds/accesstokens.tokensmith.dev.yaml");
    let text = std::fs::read_to_string(&crd).unwrap();
    let changed = text.replacen(
        "    categories:\n    - tokensmith\n",
        "    categories:\n    - tokensmith\n    - tokensmith-upgraded\n",
        1,
    );
    assert_ne!(text, changed, "the CRD template lists its categories");
    std::fs::write(&crd, changed).unwrap();
}

#[tokio::test]
async fn install_upgrade_and_uninstall_keep_crds_and_keys() {
    let cp = bare_control_plane();
    let client = cp.client().await;
    let release_ns = TestNamespace::create(&client, "release").await;
    let chart = repo_root().join("charts/tokensmith");
    let release = "ts";
    // Before the chart, the CLI says what is missing, in one line.
    let before = std::process::Command::new(env!("CARGO_BIN_EXE_tokensmith"))
        .args(["token", "list", "-A", "--kubeconfig"])
        .arg(&cp.kubeconfig)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&before.stderr).to_string();
    assert_eq!(before.status.code(), Some(3), "{said}");
    assert!(
        said.contains("CRDs are not installed") && said.lines().count() == 1,
        "{said}"
    );
    succeeded(
        "helm install",
        helm(&[
            "install",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            &release_ns.name,
        ]),
    );
    let crd = cp.kubectl(&["get", "crd", "accesstokens.tokensmith.dev", "-o", "json"]);
    let crd: serde_json::Value = serde_json::from_str(&crd).unwrap();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "{crd}"
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );

    // The chart's Deployment has no node to run on here: the operator runs
    // beside the cluster, in the release's namespace, as the chart's would.
    let default_issuer = support::chart_default_issuer(&release_ns.name, "ts-tokensmith");
    let mut operator = Operator::start_as(
        &cp.kubeconfig,
        &release_ns.name,
        &["--default-issuer", default_issuer.to_str().unwrap()],
    );

    // Every example becomes Ready against the chart's default issuer.
    let apps_ns = TestNamespace::create(&client, "examples").await;
    let examples = repo_root().join("examples");
    cp.kubectl(&[
        "apply",
        "-n",
        &apps_ns.name,
        "-f",
        examples.to_str().unwrap(),
    ]);
    let waited = cp.kubectl_output(&[
        "wait",
        "-n",
        &apps_ns.name,
        "--for=condition=Ready",
        "accesstokens,appregistrations,tokenissuers",
        "--all",
        "--timeout=90s",
    ]);
    succeeded("the examples become Ready", waited);

    // A JWT of the default issuer, to verify after the uninstall.
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &apps_ns.name);
    support::resources::apply(
        &tokens,
        "kept",
        serde_json::json!({ "spec": { "scopes": ["read"] } }),
    )
    .await;
    support::resources::wait_reason(&tokens, "kept", "Issued").await;
    let secret_name = "kept";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &apps_ns.name);
    let jwt = secret_text(&secrets.get(secret_name).await.unwrap(), "token");

    // helm upgrade changes a CRD.
    let upgraded = repo_root()
        .join("target/tmp")
        .join(format!("chart-upgraded-{}", std::process::id()));
    changed_chart(&upgraded);
    succeeded(
        "helm upgrade",
        helm(&[
            "upgrade",
            release,
            upgraded.to_str().unwrap(),
            "--namespace",
            &release_ns.name,
        ]),
    );
    let categories = crd_categories();
    assert!(categories.contains("tokensmith-upgraded"), "{categories}");

    // helm uninstall: the operator goes first (its Deployment), then the
    // release. The CRDs, the default issuer and its keys stay.
    operator.stop_with(libc::SIGTERM);
    succeeded(
        "helm uninstall",
        helm(&["uninstall", release, "--namespace", &release_ns.name]),
    );
    let issuers: Api<ClusterTokenIssuer> = Api::all(client.clone());
    // The garbage collector deletes what the uninstall orphaned within
    // seconds; what it leaves after that, it leaves.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let default = issuers
        .get("default")
        .await
        .expect("the default issuer is kept");
    assert!(default.metadata.deletion_timestamp.is_none());
    let (key_namespace, key_secret) =
        tokensmith::controller::issuer::key_secret_location(&default, &release_ns.name);
    let keyring = issuer_keyring(&client, &key_namespace, &key_secret).await;
    let verified = verify_jwt(
        &jwt,
        &keyring.jwks(),
        &default.spec.settings.issuer_url,
        None,
        0,
    );
    assert!(
        verified.is_ok(),
        "the token verifies with the kept keys: {verified:?}"
    );
    assert!(tokens.get_opt("kept").await.unwrap().is_some());

    // Installing the release again: the CRDs become the release's again.
    succeeded(
        "helm install after uninstall",
        helm(&[
            "install",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            &release_ns.name,
        ]),
    );
    let categories = crd_categories();
    assert!(
        !categories.contains("tokensmith-upgraded"),
        "back to this chart's CRD: {categories}"
    );
    succeeded(
        "helm uninstall",
        helm(&["uninstall", release, "--namespace", &release_ns.name]),
    );
}
