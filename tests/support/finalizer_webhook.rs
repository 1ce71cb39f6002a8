//! A MutatingWebhookConfiguration like the chart's `finalizerWebhook`, for
//! an operator the tests run as a process: the API server calls it at its
//! URL (there is no Service), for the AccessTokens of one namespace only,
//! as tests that share a control plane must not call each other's.

use k8s_openapi::{ByteString, api::admissionregistration::v1::MutatingWebhookConfiguration};
use serde_json::json;

/// The configuration `name` calling the operator at `operator_url` for
/// creates in `namespace`, trusting `ca` (or, without one, waiting for the
/// operator to set it).
pub fn configuration(
    name: &str,
    operator_url: &str,
    namespace: &str,
    ca: Option<&str>,
) -> MutatingWebhookConfiguration {
    let mut client_config =
        json!({ "url": format!("{operator_url}{}", tokensmith::admission::PATH) });
    if let Some(ca) = ca {
        client_config["caBundle"] = json!(ByteString(ca.as_bytes().to_vec()));
    }
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "webhooks": [{
            "name": "revoke-finalizer.tokensmith.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 2,
            "clientConfig": client_config,
            "rules": [{
                "apiGroups": ["tokensmith.dev"], "apiVersions": ["*"],
                "operations": ["CREATE"], "resources": ["accesstokens"], "scope": "Namespaced",
            }],
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": namespace } },
            "matchConditions": [{
                "name": "without-the-revoke-finalizer",
                "expression": "!has(object.metadata.finalizers) || !object.metadata.finalizers.exists(f, f == 'tokensmith.dev/revoke')",
            }],
        }],
    }))
    .expect("a MutatingWebhookConfiguration")
}
