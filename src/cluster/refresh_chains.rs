//! Where the token service keeps refresh-token chains: one Secret per chain
//! in the operator's namespace, where no tenant can write (a chain says
//! whose identity its tokens carry). A chain names its app by client id
//! (label); an owner reference cannot cross namespaces.

use k8s_openapi::jiff::Timestamp;

/// Label on chain Secrets: the client id (AppRegistration uid) they belong to.
pub const CHAIN_CLIENT_LABEL: &str = "tokensmith.dev/refresh-chain-of";
/// Annotation on chain Secrets: when the chain's current refresh token expires.
pub const CHAIN_EXPIRES_ANNOTATION: &str = "tokensmith.dev/expires-at";
/// The type of chain Secrets.
pub const CHAIN_SECRET_TYPE: &str = "tokensmith.dev/refresh-chain";

pub fn chain_secret_name(chain_id: &str) -> String {
    format!("tokensmith-refresh-{chain_id}")
}

/// Annotations on chain Secrets: the namespace and name of the app, so that
/// the sweeper can ask the API server whether it still exists.
pub const CHAIN_APP_NAMESPACE_ANNOTATION: &str = "tokensmith.dev/app-namespace";
pub const CHAIN_APP_NAME_ANNOTATION: &str = "tokensmith.dev/app-name";

/// When the chain's current refresh token expires.
pub fn expiry_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Timestamp> {
    meta.annotations
        .as_ref()?
        .get(CHAIN_EXPIRES_ANNOTATION)?
        .parse()
        .ok()
}
