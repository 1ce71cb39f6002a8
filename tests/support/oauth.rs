//! Talking to the token service as an OAuth client would.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use tokensmith::api::AppRegistration;

use super::{
    TestNamespace, control_plane, eventually,
    operator::{Operator, shared_operator},
    resources::{apply, secret_text, token_issuer, wait_for},
};

/// Where most token-service tests start: the shared operator, an HTTPS
/// client that trusts it, and a namespace of their own with a TokenIssuer
/// `signer` that the operator serves.
pub struct Served {
    pub operator: &'static Operator,
    pub http: reqwest::Client,
    pub client: kube::Client,
    pub ns: TestNamespace,
    pub issuer_url: String,
}

impl Served {
    pub async fn new(prefix: &str) -> Self {
        let operator = shared_operator();
        let http = operator.http().await;
        let client = control_plane().client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let issuer_url = served_issuer(&client, operator, &ns.name, "signer").await;
        Self {
            operator,
            http,
            client,
            ns,
            issuer_url,
        }
    }

    /// An app of the `signer` issuer with `spec` added; its credentials.
    pub async fn app(&self, name: &str, mut spec: Value) -> (String, String) {
        spec["issuerRef"] = json!({ "kind": "TokenIssuer", "name": "signer" });
        app(
            &self.http,
            self.operator,
            &self.client,
            &self.ns.name,
            name,
            spec,
        )
        .await
    }

    pub async fn introspect(&self, creds: &(String, String), token: &str) -> Value {
        introspect(&self.http, self.operator, creds, token).await
    }

    pub async fn token_request(
        &self,
        creds: &(String, String),
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        token_request(&self.http, self.operator, creds, form).await
    }

    /// Waits up to `within` for introspection to call `token` inactive.
    pub async fn until_inactive(&self, creds: &(String, String), token: &str, within: Duration) {
        eventually(
            within,
            "the token to be inactive at introspection",
            || async { (self.introspect(creds, token).await["active"] == false).then_some(()) },
        )
        .await;
    }
}

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

/// Waits until the AppRegistration `name` has its client secret.
pub async fn registered(apps: &Api<AppRegistration>, name: &str) -> AppRegistration {
    wait_for(
        apps,
        name,
        Duration::from_secs(60),
        "the app to be registered",
        |a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.client_secret_hash.is_some())
        },
    )
    .await
}

/// An AppRegistration and its (client id, client secret), once the token
/// service of `operator` accepts them: it authenticates clients from its own
/// watch of the apps, which can lag a moment behind the API server.
pub async fn app(
    http: &reqwest::Client,
    operator: &Operator,
    client: &kube::Client,
    namespace: &str,
    name: &str,
    spec: Value,
) -> (String, String) {
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), namespace);
    apply(&apps, name, json!({ "spec": spec })).await;
    registered(&apps, name).await;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap();
    let creds = (
        secret_text(&secret, "client-id"),
        secret_text(&secret, "client-secret"),
    );
    accepted(http, operator, &creds).await;
    creds
}

/// Waits until the token service of `operator` authenticates the client
/// `creds`. It asks by introspecting something that is no token: answered
/// `{"active": false}` once the client is known, `invalid_client` before;
/// that mints nothing, touches no token and counts no token request, so
/// the tests that count those still count only their own.
pub async fn accepted(http: &reqwest::Client, operator: &Operator, creds: &(String, String)) {
    eventually(
        Duration::from_secs(30),
        "the token service to accept the client's credentials",
        || async {
            let answer = introspect(http, operator, creds, "not-a-token").await;
            (answer["active"] == false).then_some(())
        },
    )
    .await;
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

/// The token-exchange grant type and the subject-token type of a JWT.
pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A real token of service account `name` (created when missing) from the
/// API server's TokenRequest, made by `client` for `audience` (`None`: the
/// API server's own, as every pod mounts).
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audience: Option<&str>,
) -> String {
    use k8s_openapi::api::{authentication::v1::TokenRequest, core::v1::ServiceAccount};
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if accounts.get_opt(name).await.unwrap().is_none() {
        let account = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
        accounts
            .create(&Default::default(), &account)
            .await
            .unwrap();
    }
    let audiences: Vec<&str> = audience.into_iter().collect();
    let request: TokenRequest = serde_json::from_value(
        json!({ "spec": { "expirationSeconds": 600, "audiences": audiences } }),
    )
    .unwrap();
    accounts
        .create_token_request(name, &Default::default(), &request)
        .await
        .expect("a service-account token")
        .status
        .unwrap()
        .token
}

/// Token exchange of the JWT `subject_token` as the client `creds`, with
/// `extra` form fields; the status and JSON body.
pub async fn exchange(
    http: &reqwest::Client,
    operator: &Operator,
    creds: &(String, String),
    subject_token: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", JWT),
    ];
    form.extend_from_slice(extra);
    token_request(http, operator, creds, &form).await
}
