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
    assert!(!missing.status.success());
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
    assert!(!unpinned.status.success());
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
    assert!(!refused.status.success());
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
    assert!(!garbage.status.success());
    assert!(said(&garbage).contains("not a JWT"), "{}", said(&garbage));
}
