//! Invalid manifests are refused by the API server itself (schema and CEL
//! rules of the generated CRDs), each with a message a person understands.
//! The README's reference lists the same cases.

mod support;

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::ApiResource,
};
use serde_json::{Value, json};
use support::{TestNamespace, control_plane};
use tokensmith::api::{AccessToken, AppRegistration, TokenIssuer};

/// Creates `object` and returns the API server's refusal message.
async fn refusal(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    object: Value,
) -> String {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let mut object: DynamicObject = serde_json::from_value(object).expect("a valid object shape");
    object.types = Some(kube::core::TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => panic!("{} was accepted: {:?}", resource.kind, object.data),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn token(name: &str, spec: Value) -> Value {
    json!({ "metadata": { "name": name }, "spec": spec })
}

#[tokio::test]
async fn invalid_access_tokens_are_refused_with_a_readable_message() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "admission").await;
    let resource = ApiResource::erase::<AccessToken>(&());
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "lifetime and expiresAt",
            json!({ "lifetime": "1h", "expiresAt": "2030-01-01T00:00:00Z" }),
            "set either lifetime or expiresAt, not both",
        ),
        (
            "renewBefore and renewBeforePercentage",
            json!({ "renewBefore": "10m", "renewBeforePercentage": 20 }),
            "set either renewBefore or renewBeforePercentage, not both",
        ),
        (
            "renewBefore not shorter than lifetime",
            json!({ "lifetime": "1h", "renewBefore": "1h" }),
            "renewBefore must be at most 90% of lifetime",
        ),
        (
            "expiresAt past what a timestamp can hold",
            json!({ "expiresAt": "9999-12-31T23:59:59Z" }),
            "expiresAt must be before 9999-12-30T00:00:00Z",
        ),
        (
            "renewBefore over 90% of lifetime",
            json!({ "lifetime": "100s", "renewBefore": "91s" }),
            "renewBefore must be at most 90% of lifetime",
        ),
        (
            "renewBeforePercentage over 90",
            json!({ "renewBeforePercentage": 91 }),
            "should be less than or equal to 90",
        ),
        (
            "prefix on a JWT",
            json!({ "prefix": "etm_" }),
            "prefix applies only to format Opaque",
        ),
        (
            "subject on a userless token",
            json!({ "subject": "alice", "userless": true }),
            "a userless token is its own subject",
        ),
        (
            "a registered claim",
            json!({ "claims": { "sub": "someone-else" } }),
            "claims must not set a registered claim",
        ),
        (
            "a scope with a space",
            json!({ "scopes": ["read scenarios"] }),
            "a scope may hold letters, digits and _ . : / - (no spaces)",
        ),
        (
            "a repeated scope",
            json!({ "scopes": ["read", "read"] }),
            "Duplicate value",
        ),
        (
            "a duration in days",
            json!({ "lifetime": "1d" }),
            "spec.lifetime in body should match",
        ),
        (
            "a lifetime under 10s",
            json!({ "lifetime": "5s" }),
            "lifetime must be at least 10s",
        ),
        (
            "renewBeforePercentage of 0",
            json!({ "renewBeforePercentage": 0 }),
            "spec.renewBeforePercentage in body should be greater than or equal to 1",
        ),
        (
            "an unknown onExpiry",
            json!({ "onExpiry": "Never" }),
            "Unsupported value: \"Never\"",
        ),
        (
            "a prefix with capitals",
            json!({ "format": "Opaque", "prefix": "Bad-" }),
            "prefix must be 2 to 10 lower-case letters or digits",
        ),
        (
            "an invalid secretName",
            json!({ "secretName": "Not_A_Name" }),
            "secretName must be a valid Secret name",
        ),
        (
            "an unknown boundObjectRef kind",
            json!({ "boundObjectRef": { "kind": "Pod", "name": "p" } }),
            "Unsupported value: \"Pod\"",
        ),
        (
            "an unknown format",
            json!({ "format": "PASETO" }),
            "Unsupported value: \"PASETO\"",
        ),
    ];
    assert!(cases.len() >= 12);
    for (i, (what, spec, expected)) in cases.into_iter().enumerate() {
        let message = refusal(
            &client,
            &ns.name,
            &resource,
            token(&format!("bad-{i}"), spec),
        )
        .await;
        assert!(
            message.contains(expected),
            "{what}: expected {expected:?} in {message:?}"
        );
    }
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "immutable").await;
    let api: Api<AccessToken> = Api::namespaced(client.clone(), &ns.name);
    let apply = |spec: Value| {
        let api = api.clone();
        async move {
            let body = json!({
                "apiVersion": "tokensmith.dev/v1alpha1",
                "kind": "AccessToken",
                "metadata": { "name": "fixed" },
                "spec": spec,
            });
            api.patch(
                "fixed",
                &PatchParams::apply("tokensmith-tests"),
                &Patch::Apply(&body),
            )
            .await
        }
    };
    apply(json!({ "issuerRef": { "name": "a" }, "secretName": "one" }))
        .await
        .expect("created");
    for (spec, expected) in [
        (
            json!({ "issuerRef": { "name": "b" }, "secretName": "one" }),
            "issuerRef is immutable",
        ),
        (
            json!({ "issuerRef": { "name": "a" }, "secretName": "two" }),
            "secretName is immutable",
        ),
    ] {
        match apply(spec).await {
            Err(kube::Error::Api(status)) => {
                assert!(status.message.contains(expected), "{}", status.message)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn invalid_issuers_and_apps_are_refused() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "admission-issuer").await;
    let issuers = ApiResource::erase::<TokenIssuer>(&());
    let apps = ApiResource::erase::<AppRegistration>(&());
    let issuer = |name: &str, spec: Value| json!({ "metadata": { "name": name }, "spec": spec });
    let cases = [
        (
            &issuers,
            issuer(
                "plain-http",
                json!({ "issuerURL": "http://tokens.example" }),
            ),
            "issuerURL must be an https URL without a query",
        ),
        (
            &issuers,
            issuer(
                "backwards",
                json!({ "issuerURL": "https://t.example", "defaultLifetime": "48h", "maxLifetime": "24h" }),
            ),
            "defaultLifetime must not be longer than maxLifetime",
        ),
        (
            &issuers,
            issuer(
                "hmac",
                json!({ "issuerURL": "https://t.example", "algorithm": "HS256" }),
            ),
            "Unsupported value: \"HS256\"",
        ),
        (
            &issuers,
            issuer(
                "hasty",
                json!({ "issuerURL": "https://t.example", "keyRotation": { "interval": "5s" } }),
            ),
            "keyRotation.interval must be at least 10s",
        ),
        (
            &issuers,
            issuer(
                "wild",
                json!({ "issuerURL": "https://t.example", "allowedScopes": ["read all"] }),
            ),
            "a scope pattern may hold letters, digits, _ . : / - and the wildcard *",
        ),
        (
            &apps,
            issuer(
                "grace",
                json!({ "clientSecretRotation": { "interval": "1h", "gracePeriod": "2h" } }),
            ),
            "gracePeriod must be shorter than interval",
        ),
        (
            &apps,
            issuer("kind-of-app", json!({ "type": "Desktop" })),
            "Unsupported value: \"Desktop\"",
        ),
    ];
    for (resource, object, expected) in cases {
        let message = refusal(&client, &ns.name, resource, object).await;
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
}

#[tokio::test]
async fn names_too_long_for_a_label_value_are_refused() {
    let client = control_plane().client().await;
    let ns = TestNamespace::create(&client, "admission-names").await;
    let long = "n".repeat(64);
    let kinds = [
        (
            ApiResource::erase::<AccessToken>(&()),
            json!({ "issuerRef": { "name": "x" } }),
        ),
        (ApiResource::erase::<AppRegistration>(&()), json!({})),
        (
            ApiResource::erase::<TokenIssuer>(&()),
            json!({ "issuerURL": "https://t.example" }),
        ),
    ];
    for (resource, spec) in kinds {
        let object = json!({ "metadata": { "name": long }, "spec": spec.clone() });
        let message = refusal(&client, &ns.name, &resource, object).await;
        assert!(
            message.contains("metadata.name must be at most 63 characters"),
            "{}: {message}",
            resource.kind
        );
        // 63 is fine.
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
        let mut fits: DynamicObject =
            serde_json::from_value(json!({ "metadata": { "name": "n".repeat(63) }, "spec": spec }))
                .unwrap();
        fits.types = Some(kube::core::TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        api.create(&PostParams::default(), &fits)
            .await
            .unwrap_or_else(|e| panic!("a 63-character {} name: {e}", resource.kind));
    }
}
