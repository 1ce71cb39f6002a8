//! The AppRegistration kind: an OAuth 2.0 client whose id and secret the
//! operator writes to a Secret, with scheduled secret rotation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, Duration, IssuerRef, SecretTemplate};

/// An OAuth 2.0 client for machine-to-machine use. Its client id and secret
/// are written to a Secret; the token service issues it access tokens.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "tokensmith.dev",
    version = "v1alpha1",
    kind = "AppRegistration",
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: the operator writes it into label values"),
    doc = "An OAuth 2.0 client registration: tokensmith writes its client id and secret to a Secret and issues it access tokens at the token endpoint.",
    namespaced,
    shortname = "appreg",
    category = "tokensmith",
    status = "AppRegistrationStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.type",
        priority = 1
    ),
    printcolumn(name = "Client ID", type_ = "string", json_path = ".status.clientID"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.issuerRef) == has(oldSelf.issuerRef) && (!has(self.issuerRef) || self.issuerRef == oldSelf.issuerRef)").message("issuerRef is immutable: create a new AppRegistration to change issuers"))]
#[x_kube(validation = Rule::new("has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)").message("secretName is immutable: create a new AppRegistration to write another Secret"))]
#[x_kube(validation = Rule::new("!has(self.accessTokenLifetime) || !has(self.refreshTokenLifetime) || duration(self.accessTokenLifetime) <= duration(self.refreshTokenLifetime)").message("accessTokenLifetime must not be longer than refreshTokenLifetime"))]
#[x_kube(validation = Rule::new("!has(self.refreshTokenLifetime) || !has(self.refreshChainLifetime) || duration(self.refreshTokenLifetime) <= duration(self.refreshChainLifetime)").message("refreshTokenLifetime must not be longer than refreshChainLifetime"))]
pub struct AppRegistrationSpec {
    /// The issuer that signs this app's tokens. Default: the
    /// ClusterTokenIssuer named `default`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// A name for people, shown by the token-info endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,

    /// The most this app may ask for; a token request naming another scope is
    /// refused with `invalid_scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::scope_list_schema")]
    pub scopes: Vec<String>,

    /// The `aud` claim of this app's tokens. Default: the issuer's `audiences`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::audience_list_schema")]
    pub audiences: Vec<String>,

    /// `Native` (default): the client_credentials grant; tokens act as the app.
    /// `Web`: token exchange (RFC 8693) of a Kubernetes service-account token
    /// for a token acting on behalf of that identity, with refresh tokens.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub app_type: Option<AppType>,

    /// Lifetime of access tokens issued to this app. Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("accessTokenLifetime must be at least 10s"))]
    pub access_token_lifetime: Option<Duration>,

    /// Lifetime of refresh tokens (Web apps). Default `1h`. Each refresh token
    /// works once; reusing a spent one revokes the whole chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("refreshTokenLifetime must be at least 10s"))]
    pub refresh_token_lifetime: Option<Duration>,

    /// How long a chain of refresh tokens lives in all (Web apps), counted
    /// from the token exchange that started it: rotation never extends it
    /// past this, and a refresh after it answers `invalid_grant`, so a
    /// stolen chain cannot be kept alive for ever. Default `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("refreshChainLifetime must be at least 10s"))]
    pub refresh_chain_lifetime: Option<Duration>,

    /// Rotates the client secret on a schedule. When unset, the secret is
    /// kept until the Secret is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_rotation: Option<ClientSecretRotation>,

    /// Name of the Secret that holds the client credentials. Default: the
    /// AppRegistration's name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a valid Secret name (lower-case DNS subdomain)"))]
    pub secret_name: Option<String>,

    /// Labels and annotations for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
}

/// The OAuth 2.0 flows an app uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AppType {
    #[default]
    Native,
    Web,
}

/// When the client secret is replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.gracePeriod) < duration(self.interval)").message("gracePeriod must be shorter than interval"))]
pub struct ClientSecretRotation {
    /// Age at which the client secret is replaced, e.g. `720h`.
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("clientSecretRotation.interval must be at least 10s"))]
    pub interval: Duration,
    /// How long the previous secret keeps working after a rotation, e.g. `1h`.
    pub grace_period: Duration,
}

/// The observed state of an AppRegistration. Never holds the secret itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRegistrationStatus {
    /// `Ready`, with reason Registered, SecretRotated, InvalidSpec,
    /// IssuerNotReady or SecretConflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The OAuth 2.0 client id, stable for the life of the resource.
    #[serde(rename = "clientID", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `sha256:<hex>` of the current client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_hash: Option<String>,
    /// When the current client secret was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_rotated_at: Option<Time>,
    /// `sha256:<hex>` of the previous client secret while its grace period
    /// runs; it still authenticates until `previousClientSecretExpiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_client_secret_hash: Option<String>,
    /// End of the previous client secret's grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_client_secret_expires_at: Option<Time>,
}

/// Default `accessTokenLifetime`.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: &str = "30m";
/// Default `refreshTokenLifetime`.
pub const DEFAULT_REFRESH_TOKEN_LIFETIME: &str = "1h";
/// Default `refreshChainLifetime`.
pub const DEFAULT_REFRESH_CHAIN_LIFETIME: &str = "24h";

/// Defaults and derived values of an AppRegistration's spec.
impl AppRegistrationSpec {
    pub fn app_type(&self) -> AppType {
        self.app_type.unwrap_or_default()
    }

    pub fn issuer_ref(&self) -> IssuerRef {
        self.issuer_ref.clone().unwrap_or_default()
    }

    pub fn access_token_lifetime(&self) -> Result<std::time::Duration, super::DurationError> {
        self.access_token_lifetime.as_ref().map_or_else(
            || super::parse_go_duration(DEFAULT_ACCESS_TOKEN_LIFETIME),
            |d| d.to_std(),
        )
    }

    pub fn refresh_token_lifetime(&self) -> Result<std::time::Duration, super::DurationError> {
        self.refresh_token_lifetime.as_ref().map_or_else(
            || super::parse_go_duration(DEFAULT_REFRESH_TOKEN_LIFETIME),
            |d| d.to_std(),
        )
    }

    pub fn refresh_chain_lifetime(&self) -> Result<std::time::Duration, super::DurationError> {
        self.refresh_chain_lifetime.as_ref().map_or_else(
            || super::parse_go_duration(DEFAULT_REFRESH_CHAIN_LIFETIME),
            |d| d.to_std(),
        )
    }
}
