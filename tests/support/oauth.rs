//! Talking to the token service as an OAuth client would.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use tokensmith::api::AppRegistration;

use super::{
    operator::Operator,
    resources::{apply, secret_text, token_issuer, wait_for},
};

/// A TokenIssuer whose issuerURL is served by the test's operator.
pub async fn served_issuer(
    client: &kube::Client,
    operator: &Operator,
    namespace: &str,
    name: &str,
) -> String {
    let url = format!("{}/issuers/{namespace}/{name}", operator.url);
    token_issuer(
        client,
        namespace,
        name,
        json!({ "issuerURL": url, "audiences": ["api.test"] }),
    )
    .await;
    url
}

/// An AppRegistration and its (client id, client secret).
pub async fn app(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: Value,
) -> (String, String) {
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), namespace);
    apply(&apps, name, json!({ "spec": spec })).await;
    wait_for(
        &apps,
        name,
        Duration::from_secs(60),
        "the app to be registered",
        |a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.client_secret_hash.is_some())
        },
    )
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap();
    (
        secret_text(&secret, "client-id"),
        secret_text(&secret, "client-secret"),
    )
}

pub async fn introspect(
    http: &reqwest::Client,
    operator: &Operator,
    creds: &(String, String),
    token: &str,
) -> Value {
    http.post(format!("{}/oauth/introspect", operator.url))
        .basic_auth(&creds.0, Some(&creds.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POSTs a form to `/oauth/token` as the client `creds`; the status and JSON body.
pub async fn token_request(
    http: &reqwest::Client,
    operator: &Operator,
    creds: &(String, String),
    form: &[(&str, &str)],
) -> (u16, Value) {
    let response = http
        .post(format!("{}/oauth/token", operator.url))
        .basic_auth(&creds.0, Some(&creds.1))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
