//! A fixture for tests of AccessTokens.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use tokensmith::api::{AccessToken, TokenIssuer};

use super::{
    TestNamespace, control_plane,
    operator::{Operator, shared_operator},
    resources::{apply, token_issuer},
};

/// Where most AccessToken tests start: the shared operator, a namespace of
/// their own, and a Ready TokenIssuer in it that their tokens refer to.
pub struct Issued {
    pub operator: &'static Operator,
    pub client: kube::Client,
    pub ns: TestNamespace,
    /// The issuer as it was once Ready.
    pub issuer: TokenIssuer,
    /// The AccessTokens and Secrets of `ns`.
    pub tokens: Api<AccessToken>,
    pub secrets: Api<Secret>,
}

impl Issued {
    /// A namespace `PREFIX-<random>` with a TokenIssuer `signer` of the
    /// default spec.
    pub async fn new(prefix: &str) -> Self {
        Self::with_issuer(prefix, "signer", json!({})).await
    }

    /// A namespace `PREFIX-<random>` with a TokenIssuer `name` of `spec`
    /// (as `resources::token_issuer` takes it).
    pub async fn with_issuer(prefix: &str, name: &str, spec: Value) -> Self {
        let operator = shared_operator();
        let client = control_plane().client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let issuer = token_issuer(&client, &ns.name, name, spec).await;
        let tokens = Api::namespaced(client.clone(), &ns.name);
        let secrets = Api::namespaced(client.clone(), &ns.name);
        Self {
            operator,
            client,
            ns,
            issuer,
            tokens,
            secrets,
        }
    }

    /// Applies the AccessToken `name` with `spec` (the spec alone), whose
    /// `issuerRef` is this issuer unless `spec` names one.
    pub async fn token(&self, name: &str, mut spec: Value) -> AccessToken {
        if spec.get("issuerRef").is_none() {
            spec["issuerRef"] = json!({ "kind": "TokenIssuer", "name": self.issuer_name() });
        }
        apply(&self.tokens, name, json!({ "spec": spec })).await
    }

    fn issuer_name(&self) -> &str {
        self.issuer
            .metadata
            .name
            .as_deref()
            .expect("a named issuer")
    }
}
