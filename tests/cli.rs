//! `tokensmith token show` and `tokensmith token verify`, run as a person
//! would run them, against tokens the operator minted.

mod support;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use support::{
    control_plane,
    oauth::{Served, served_issuer},
    resources::{apply, secret_text, wait_reason},
};
use tokensmith::api::AccessToken;

fn tokensmith(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokensmith"))
        .args(args)
        .args(["--kubeconfig", control_plane().kubeconfig.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn show_decodes_without_revealing_and_verify_checks_against_the_jwks() {
    let served = Served::new("cli").await;
    let (operator, client, ns) = (served.operator, &served.client, &served.ns);
    let issuer_url = served.issuer_url.clone();
    served_issuer(client, operator, &ns.name, "other").await;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let spec = json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "scopes": ["read"], "lifetime": "2h" });
    apply(&tokens, "deployer", json!({ "spec": spec })).await;
    let status = wait_reason(&tokens, "deployer", "Issued")
        .await
        .status
        .unwrap();
    let jwt = secret_text(
        &Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get("deployer")
            .await
            .unwrap(),
        "token",
    );

    let shown = tokensmith(&["token", "show", "deployer", "-n", &ns.name], None);
    let text = said(&shown);
    assert!(shown.status.success(), "{text}");
    assert!(text.contains(status.token_id.as_deref().unwrap()), "{text}");
    assert!(
        text.contains("Expires at") && (text.contains("(in 1h 59m") || text.contains("(in 2h 0m")),
        "{text}"
    );
    assert!(text.contains("\"scope\": \"read\""), "{text}");
    assert!(!text.contains(&jwt), "the token is hidden unless asked for");
    assert!(text.contains("hidden (--reveal prints it)"));

    let revealed = tokensmith(
        &[
            "token", "show", "deployer", "-n", &ns.name, "--reveal", "-o", "json",
        ],
        None,
    );
    assert!(revealed.status.success(), "{}", said(&revealed));
    let view: Value = serde_json::from_slice(&revealed.stdout).unwrap();
    assert_eq!(view["token"], jwt);
    assert_eq!(
        view["claims"]["sub"],
        format!("system:accesstoken:{}:deployer", ns.name)
    );
    assert_eq!(view["header"]["kid"], status.key_id.unwrap());
    assert_eq!(view["revision"], 1);
    let expires_in = view["expiresIn"].as_i64().unwrap();
    assert!((7100..=7200).contains(&expires_in), "{expires_in}");

    let missing = tokensmith(&["token", "show", "nope", "-n", &ns.name], None);
    assert_eq!(
        missing.status.code(),
        Some(4),
        "not found: {}",
        said(&missing)
    );
    assert!(said(&missing).contains(&format!("AccessToken {}/nope not found", ns.name)));

    // verify: from the Secret, and from standard input, against the JWKS
    // the token's issuer publishes through the token service.
    let ca = operator.ca_file();
    let ca = ca.to_str().unwrap();
    let verified = tokensmith(
        &[
            "token",
            "verify",
            "--access-token",
            "deployer",
            "-n",
            &ns.name,
            "--ca-file",
            ca,
        ],
        None,
    );
    let text = said(&verified);
    assert!(verified.status.success(), "{text}");
    assert!(text.contains("valid:"), "{text}");
    assert!(
        text.contains("as recorded in the AccessToken's status"),
        "says where the issuer came from: {text}"
    );
    assert!(!text.contains(&jwt));
    let piped = tokensmith(
        &[
            "token",
            "verify",
            "--ca-file",
            ca,
            "--issuer",
            &issuer_url,
            "--audience",
            "api.test",
        ],
        Some(&jwt),
    );
    assert!(piped.status.success(), "{}", said(&piped));
    // A raw token names its own issuer; that is not trusted.
    let unpinned = tokensmith(&["token", "verify", "--ca-file", ca], Some(&jwt));
    assert_eq!(unpinned.status.code(), Some(3), "could not check");
    assert!(
        said(&unpinned).contains("pass --issuer"),
        "{}",
        said(&unpinned)
    );
    let plain_http = tokensmith(
        &[
            "token",
            "verify",
            "--issuer",
            &issuer_url,
            "--jwks-url",
            &issuer_url.replace("https://", "http://"),
        ],
        Some(&jwt),
    );
    assert!(!plain_http.status.success());
    assert!(
        said(&plain_http).contains("only https"),
        "{}",
        said(&plain_http)
    );

    let mut tampered = jwt.clone();
    let cut = tampered.len() - 4;
    tampered.replace_range(cut.., "AAAA");
    let refused = tokensmith(
        &["token", "verify", "--ca-file", ca, "--issuer", &issuer_url],
        Some(&tampered),
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "not valid: {}",
        said(&refused)
    );
    assert!(said(&refused).contains("invalid:"), "{}", said(&refused));
    let wrong_audience = tokensmith(
        &[
            "token",
            "verify",
            "--ca-file",
            ca,
            "--issuer",
            &issuer_url,
            "--audience",
            "elsewhere",
        ],
        Some(&jwt),
    );
    assert!(!wrong_audience.status.success());
    // Another issuer's JWKS does not hold the signing key.
    let other_jwks = format!(
        "{}/issuers/{}/other/.well-known/jwks.json",
        operator.url, ns.name
    );
    let elsewhere = tokensmith(
        &[
            "token",
            "verify",
            "--ca-file",
            ca,
            "--issuer",
            &issuer_url,
            "--jwks-url",
            &other_jwks,
        ],
        Some(&jwt),
    );
    assert!(!elsewhere.status.success());
    assert!(
        said(&elsewhere).contains("invalid:"),
        "{}",
        said(&elsewhere)
    );
    let garbage = tokensmith(&["token", "verify"], Some("not a token"));
    assert_eq!(garbage.status.code(), Some(1));
    assert!(said(&garbage).contains("not a JWT"), "{}", said(&garbage));
}

/// Runs the binary with `args` alone (no --kubeconfig added) and `env`.
fn bare(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokensmith"));
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn behaves_like_kubectl_namespace_context_output_and_exit_codes() {
    let served = Served::new("kubectl-like").await;
    let (client, ns) = (&served.client, &served.ns);
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let spec =
        json!({ "issuerRef": { "kind": "TokenIssuer", "name": "signer" }, "scopes": ["read"] });
    apply(&tokens, "ci", json!({ "spec": spec })).await;
    wait_reason(&tokens, "ci", "Issued").await;

    // A kubeconfig whose second context names the test's namespace: -n
    // comes from the context chosen, as kubectl has it.
    let admin: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&control_plane().kubeconfig).unwrap())
            .unwrap();
    let mut kubeconfig = admin.clone();
    let mut context = admin["contexts"][0].clone();
    context["name"] = json!("team");
    context["context"]["namespace"] = json!(ns.name);
    kubeconfig["contexts"].as_array_mut().unwrap().push(context);
    let path = support::repo_root()
        .join("target/tmp")
        .join(format!("kubeconfig-{}", ns.name));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    let path = path.to_str().unwrap();

    let in_context = bare(
        &[
            "token",
            "show",
            "ci",
            "--kubeconfig",
            path,
            "--context",
            "team",
            "-o",
            "yaml",
        ],
        &[],
    );
    assert!(in_context.status.success(), "{}", said(&in_context));
    let view: Value = serde_yaml::from_slice(&in_context.stdout).expect("YAML");
    assert_eq!(view["accessToken"], format!("{}/ci", ns.name));
    // The current context has no namespace: "default", where ci is not.
    let current = bare(&["token", "show", "ci", "--kubeconfig", path], &[]);
    assert_eq!(current.status.code(), Some(4), "{}", said(&current));
    assert!(
        said(&current).contains("AccessToken default/ci not found"),
        "{}",
        said(&current)
    );
    // $KUBECONFIG is read as kubectl reads it.
    let from_env = bare(
        &["token", "list", "--context", "team"],
        &[("KUBECONFIG", path)],
    );
    assert!(from_env.status.success(), "{}", said(&from_env));
    let listed = String::from_utf8_lossy(&from_env.stdout).to_string();
    assert!(
        listed.starts_with("NAME"),
        "no NAMESPACE column for one namespace: {listed}"
    );
    assert!(
        listed.contains("ci") && listed.contains("True") && listed.contains("Issued"),
        "{listed}"
    );

    let all = tokensmith(&["token", "list", "-A", "-o", "json"], None);
    assert!(all.status.success(), "{}", said(&all));
    let rows: Vec<Value> = serde_json::from_slice(&all.stdout).unwrap();
    assert!(
        rows.iter().any(|r| r["namespace"] == ns.name.as_str()
            && r["name"] == "ci"
            && r["ready"] == "True"),
        "{rows:?}"
    );

    let version = tokensmith(&["version"], None);
    let text = said(&version);
    assert!(version.status.success(), "{text}");
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("kubernetes: v1."),
        "{text}"
    );
    assert!(text.contains("tokensmith.dev/v1alpha1"), "{text}");

    // Short errors, each with its exit code.
    let no_cluster = bare(&["token", "list"], &[]);
    let text = said(&no_cluster);
    assert_eq!(no_cluster.status.code(), Some(3), "{text}");
    assert!(
        text.contains("no cluster configured") && text.len() < 200,
        "{text}"
    );
    let missing_file = bare(
        &["token", "list", "--kubeconfig", "/nonexistent/config"],
        &[],
    );
    let text = said(&missing_file);
    assert_eq!(missing_file.status.code(), Some(3), "{text}");
    assert!(
        text.contains("/nonexistent/config") && text.len() < 300,
        "{text}"
    );
    let usage = bare(&["token", "show"], &[]);
    assert_eq!(usage.status.code(), Some(2), "{}", said(&usage));

    // Completions for every shell clap knows; the plugin's help names it
    // as kubectl users type it.
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = bare(&["completion", shell], &[]);
        assert!(script.status.success(), "{shell}: {}", said(&script));
        assert!(
            String::from_utf8_lossy(&script.stdout).contains("renew"),
            "{shell}"
        );
    }
    let plugin = support::repo_root()
        .join("target/tmp")
        .join(format!("plugin-{}", ns.name));
    std::fs::create_dir_all(&plugin).unwrap();
    let link = plugin.join("kubectl-tokensmith");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tokensmith"), &link).unwrap();
    let help = Command::new(&link).arg("--help").output().unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("kubectl tokensmith"),
        "{}",
        said(&help)
    );
    let path = format!(
        "{}:{}",
        plugin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let through_kubectl = Command::new(control_plane().bin_dir.join("kubectl"))
        .args(["tokensmith", "version", "--client"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        through_kubectl.status.success(),
        "{}",
        said(&through_kubectl)
    );
    assert!(said(&through_kubectl).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_bad_worker_thread_count_stops_the_binary_with_a_usage_error() {
    for bad in ["0", "many", ""] {
        let refused = bare(&["version", "--client"], &[("TOKIO_WORKER_THREADS", bad)]);
        let text = said(&refused);
        assert_eq!(refused.status.code(), Some(2), "{bad:?}: {text}");
        assert!(
            text.contains("TOKIO_WORKER_THREADS must be a number of worker threads")
                && !text.contains("panicked")
                && text.len() < 200,
            "{bad:?}: {text}"
        );
    }
    let one = bare(&["version", "--client"], &[("TOKIO_WORKER_THREADS", "1")]);
    assert!(one.status.success(), "{}", said(&one));
}
