//! Creating and waiting for tokensmith resources in tests.

use std::{fmt::Debug, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokensmith::{
    api::{AccessToken, TokenIssuer},
    token::{AccessTokenClaims, KEYRING_SECRET_KEY, Keyring, verify_jwt},
};

use super::eventually;

/// Server-side applies `body` (the object without apiVersion and kind) as
/// the test's own field manager.
pub async fn apply<K>(api: &Api<K>, name: &str, mut body: Value) -> K
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize,
{
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(K::kind(&()));
    body["metadata"]["name"] = json!(name);
    api.patch(
        name,
        &PatchParams::apply("tokensmith-tests").force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", K::kind(&())))
}

/// A TokenIssuer named `name` with `spec` (issuerURL is filled in when absent).
pub async fn token_issuer(
    client: &Client,
    namespace: &str,
    name: &str,
    mut spec: Value,
) -> TokenIssuer {
    if spec.get("issuerURL").is_none() {
        spec["issuerURL"] = json!(format!("https://tokens.test/{namespace}/{name}"));
    }
    let api: Api<TokenIssuer> = Api::namespaced(client.clone(), namespace);
    apply(&api, name, json!({ "spec": spec })).await;
    wait_for(
        &api,
        name,
        Duration::from_secs(30),
        "the issuer to be Ready",
        |i: &TokenIssuer| {
            i.status
                .as_ref()
                .is_some_and(|s| is_ready(&s.conditions) && s.active_key_id.is_some())
        },
    )
    .await
}

pub fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

pub fn is_ready(conditions: &[Condition]) -> bool {
    ready(conditions).is_some_and(|c| c.status == "True")
}

/// The Ready condition's reason of an AccessToken, if it has one.
pub fn reason(token: &AccessToken) -> Option<String> {
    token
        .status
        .as_ref()
        .and_then(|s| ready(&s.conditions))
        .map(|c| c.reason.clone())
}

/// Polls `name` until `check` holds.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, what: &str, check: F) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned,
    F: Fn(&K) -> bool,
{
    eventually(timeout, what, || async {
        api.get_opt(name).await.ok().flatten().filter(|o| check(o))
    })
    .await
}

/// Waits for the AccessToken's Ready condition to have `reason`.
pub async fn wait_reason(api: &Api<AccessToken>, name: &str, wanted: &str) -> AccessToken {
    wait_for(
        api,
        name,
        Duration::from_secs(60),
        &format!("{name} to have reason {wanted}"),
        |t| reason(t).as_deref() == Some(wanted),
    )
    .await
}

/// The string value of `key` in the Secret.
pub fn secret_text(secret: &Secret, key: &str) -> String {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("Secret has key {key}"));
    String::from_utf8(bytes.0.clone()).expect("utf-8")
}

/// The keyring an issuer keeps in its Secret (the public halves are what
/// the JWKS serves).
pub async fn issuer_keyring(client: &Client, namespace: &str, secret_name: &str) -> Keyring {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(secret_name)
        .await
        .expect("issuer key Secret");
    let bytes = &secret.data.as_ref().unwrap()[KEYRING_SECRET_KEY];
    Keyring::from_json(&bytes.0).expect("keyring JSON")
}

/// Verifies `jwt` against the public keys of a TokenIssuer.
pub async fn verify_with_token_issuer(
    client: &Client,
    namespace: &str,
    issuer: &TokenIssuer,
    jwt: &str,
) -> Result<AccessTokenClaims, String> {
    let _ = namespace;
    let (key_namespace, key_secret) = tokensmith::controller::issuer::key_secret_location(
        issuer,
        super::operator::OPERATOR_NAMESPACE,
    );
    let keyring = issuer_keyring(client, &key_namespace, &key_secret).await;
    verify_jwt(
        jwt,
        &keyring.jwks(),
        &issuer.spec.settings.issuer_url,
        None,
        0,
    )
    .map_err(|e| e.to_string())
}

/// Whether the revocation record (in the operator's namespace) holds token
/// `token_id`, under whichever issuer: token ids are random, so the id alone
/// names one token in a test.
pub async fn is_recorded_as_revoked(client: &Client, token_id: &str) -> bool {
    let suffix = format!(".{token_id}");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        client.clone(),
        super::operator::OPERATOR_NAMESPACE,
    )
    .list(&kube::api::ListParams::default().labels("tokensmith.dev/revocations"))
    .await
    .map(|list| {
        list.items
            .iter()
            .flat_map(|cm| cm.data.iter().flatten())
            .any(|(key, _)| key.ends_with(&suffix))
    })
    .unwrap_or(false)
}

/// Deletes the named objects one request each, 32 at a time, as a GitOps
/// prune sends them; an object already gone is no error.
pub async fn delete_all<K>(api: &Api<K>, names: impl IntoIterator<Item = String>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    use futures::{StreamExt, stream};
    stream::iter(names)
        .for_each_concurrent(32, |name| {
            let api = api.clone();
            async move {
                let _ = api.delete(&name, &kube::api::DeleteParams::default()).await;
            }
        })
        .await;
}
