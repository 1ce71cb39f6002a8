//! The generated serving certificate follows `--public-url`: an operator
//! restarted with a new public URL serves a certificate for its host, signed
//! by the CA clients already trust (published in `tokensmith-ca`).

mod support;

use std::{net::SocketAddr, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use support::{TestNamespace, control_plane, operator::Operator};

const PUBLIC_HOST: &str = "tokens.example.test";

/// An HTTPS client that trusts only `ca_pem` and reaches `PUBLIC_HOST` at
/// `address`, so the certificate must name that host.
fn client_for_public_host(ca_pem: &str, address: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .resolve(PUBLIC_HOST, address)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn address(operator: &Operator) -> SocketAddr {
    operator
        .url
        .trim_start_matches("https://")
        .parse()
        .expect("https://127.0.0.1:<port>")
}

fn published_ca(namespace: &str) -> String {
    control_plane().kubectl(&[
        "get",
        "configmap",
        "tokensmith-ca",
        "-n",
        namespace,
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ])
}

#[tokio::test]
async fn the_serving_certificate_follows_the_public_url_and_keeps_its_ca() {
    let client = control_plane().client().await;
    // The operator's namespace of its own: a serving certificate of its own.
    let ns = TestNamespace::create(&client, "serving").await;
    let kubeconfig = control_plane().kubeconfig.clone();
    let mut first = Operator::start_as(&kubeconfig, &ns.name, &[]);
    first.http().await;
    let ca = published_ca(&ns.name);
    let port = address(&first).port();
    let refused = client_for_public_host(&ca, address(&first))
        .get(format!("https://{PUBLIC_HOST}:{port}/oauth/token/info"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "the first certificate does not name {PUBLIC_HOST}"
    );
    first.stop_with(libc::SIGTERM);

    let public_url = format!("https://{PUBLIC_HOST}");
    let second = Operator::start_as(&kubeconfig, &ns.name, &["--public-url", &public_url]);
    second.http().await;
    assert_eq!(
        published_ca(&ns.name),
        ca,
        "the same CA: clients keep trusting it"
    );
    let port = address(&second).port();
    let answered = client_for_public_host(&ca, address(&second))
        .get(format!("https://{PUBLIC_HOST}:{port}/oauth/token/info"))
        .send()
        .await;
    assert!(
        answered.is_ok(),
        "the new certificate names {PUBLIC_HOST}: {answered:?}"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("tokensmith-serving-cert")
        .await
        .unwrap();
    assert!(
        secret.data.unwrap().contains_key("ca.key"),
        "the CA's key is kept to sign the next one"
    );
}
