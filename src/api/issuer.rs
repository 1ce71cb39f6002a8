//! TokenIssuer and ClusterTokenIssuer: the signing settings they share,
//! their status (keys published), and the `Issuer` trait the controllers and
//! the token service use for either kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, Duration};

/// The signing settings shared by TokenIssuer and ClusterTokenIssuer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.defaultLifetime) || !has(self.maxLifetime) || duration(self.defaultLifetime) <= duration(self.maxLifetime)").message("defaultLifetime must not be longer than maxLifetime"))]
pub struct IssuerSettings {
    /// The `iss` claim of every token this issuer signs. Verifiers fetch
    /// `<issuerURL>/.well-known/openid-configuration` and
    /// `<issuerURL>/.well-known/jwks.json`, which the operator's token service
    /// serves, so it should be an https URL routed to that service.
    #[serde(rename = "issuerURL")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() == 'https' && url(self).getQuery() == {}").message("issuerURL must be an https URL without a query"))]
    pub issuer_url: String,

    /// Signature algorithm of new keys: `ES256` (default), `RS256` or `EdDSA`
    /// (Ed25519). Changing it makes the next key use the new algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SigningAlgorithm>,

    /// How often a new signing key becomes active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,

    /// Lifetime of a token that sets neither `lifetime` nor `expiresAt`.
    /// Default `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_lifetime: Option<Duration>,

    /// The longest lifetime a token of this issuer may have; a token asking for
    /// more is refused with reason InvalidSpec. Default `8760h` (one year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<Duration>,

    /// Glob patterns (`*` matches any run of characters, e.g. `scenarios:*`) of
    /// the scopes a token of this issuer may carry. A token asking for a scope
    /// that matches none is refused with a condition naming the scope. When
    /// unset, every scope is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::scope_pattern_list_schema")]
    pub allowed_scopes: Option<Vec<String>>,

    /// The `aud` claim of tokens that name no audience of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::audience_list_schema")]
    pub audiences: Option<Vec<String>>,

    /// Glob patterns (`*` matches any run of characters) of the subjects an
    /// AccessToken of this issuer may carry; `${namespace}` stands for the
    /// AccessToken's namespace, e.g. `system:accesstoken:${namespace}:*`.
    /// A token asking for another subject is refused with reason
    /// InvalidSpec. When unset, every subject is allowed. Userless tokens
    /// (their own token id as subject) are always allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::pattern_list_schema")]
    pub allowed_subjects: Option<Vec<String>>,

    /// Glob patterns of the audiences a token of this issuer may carry
    /// (AccessTokens and AppRegistrations alike). When unset, every audience
    /// is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::pattern_list_schema")]
    pub allowed_audiences: Option<Vec<String>>,

    /// Glob patterns of the private claim names an AccessToken of this
    /// issuer may set in `claims`. When unset, any name is allowed except
    /// those that carry an identity to verifiers (`groups`, `email`, `name`,
    /// `preferred_username`, `roles`, ...: see the README), which must be
    /// named here to be allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::pattern_list_schema")]
    pub allowed_claims: Option<Vec<String>>,
}

/// Private claim names that verifiers commonly read as an identity (OpenID
/// Connect's standard claims, SCIM/RFC 9068 groups, roles and entitlements,
/// the Kubernetes service-account claim). An issuer allows them only by
/// naming them in `allowedClaims`.
pub const IDENTITY_CLAIMS: &[&str] = &[
    "groups",
    "roles",
    "role",
    "entitlements",
    "permissions",
    "scp",
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "username",
    "upn",
    "uid",
    "oid",
    "tid",
    "sid",
    "acr",
    "amr",
    "idp",
    "profile",
    "picture",
    "website",
    "phone_number",
    "phone_number_verified",
    "address",
    "birthdate",
    "gender",
    "locale",
    "zoneinfo",
    "updated_at",
    "kubernetes.io",
];

/// When new signing keys become active.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// Age at which the active signing key is replaced by a new one. Default
    /// `720h` (30 days). Retired public keys stay in the JWKS until every token
    /// they signed has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("keyRotation.interval must be at least 10s"))]
    pub interval: Option<Duration>,
}

/// A JWS signature algorithm the issuer can sign with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256.
    #[default]
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key.
    RS256,
    /// Ed25519.
    EdDSA,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// A namespaced signer of tokens, usable only by resources in its own namespace.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "tokensmith.dev",
    version = "v1alpha1",
    kind = "TokenIssuer",
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: the operator writes it into label values"),
    doc = "Signs the tokens of AccessTokens and AppRegistrations in its own namespace, with keys it generates, rotates and publishes.",
    namespaced,
    shortname = "tki",
    category = "tokensmith",
    status = "IssuerStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Algorithm",
        type_ = "string",
        json_path = ".spec.algorithm",
        priority = 1
    ),
    printcolumn(
        name = "Active Key",
        type_ = "string",
        json_path = ".status.activeKeyID"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct TokenIssuerSpec {
    #[serde(flatten)]
    pub settings: IssuerSettings,
}

/// A cluster-wide signer of tokens, usable from every namespace its
/// `namespaceSelector` admits.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "tokensmith.dev",
    version = "v1alpha1",
    kind = "ClusterTokenIssuer",
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: the operator writes it into label values"),
    doc = "Signs the tokens of AccessTokens and AppRegistrations in the namespaces it selects, with keys it generates, rotates and publishes.",
    shortname = "ctki",
    category = "tokensmith",
    status = "IssuerStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Algorithm",
        type_ = "string",
        json_path = ".spec.algorithm",
        priority = 1
    ),
    printcolumn(
        name = "Active Key",
        type_ = "string",
        json_path = ".status.activeKeyID"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTokenIssuerSpec {
    #[serde(flatten)]
    pub settings: IssuerSettings,

    /// Namespaces whose resources may use this issuer. When unset, every
    /// namespace may. A resource in a namespace outside the selector is
    /// refused with reason InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// The observed state of an issuer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// `Ready` (reasons KeysReady, KeyError, InvalidSpec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `kid` of the key that signs new tokens.
    #[serde(
        rename = "activeKeyID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub active_key_id: Option<String>,
    /// Every key whose public half is still published, the active one included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<IssuerKeyStatus>,
}

/// One signing key of an issuer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerKeyStatus {
    /// The key id, also the `kid` header of the tokens it signs.
    pub kid: String,
    /// The algorithm of the key.
    pub algorithm: SigningAlgorithm,
    /// When the key was generated.
    pub created_at: Time,
    /// When the key stops signing (the active key) or leaves the JWKS (a
    /// retired key: once every token it signed has expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<Time>,
}

/// Default `keyRotation.interval`.
pub const DEFAULT_KEY_ROTATION_INTERVAL: &str = "720h";
/// Default `defaultLifetime`.
pub const DEFAULT_TOKEN_LIFETIME: &str = "24h";
/// Default `maxLifetime`.
pub const DEFAULT_MAX_TOKEN_LIFETIME: &str = "8760h";

impl IssuerSettings {
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm.unwrap_or_default()
    }

    pub fn key_rotation_interval(&self) -> Result<std::time::Duration, super::DurationError> {
        self.key_rotation
            .as_ref()
            .and_then(|k| k.interval.as_ref())
            .map_or_else(
                || super::parse_go_duration(DEFAULT_KEY_ROTATION_INTERVAL),
                |d| d.to_std(),
            )
    }

    pub fn default_lifetime(&self) -> Result<std::time::Duration, super::DurationError> {
        self.default_lifetime.as_ref().map_or_else(
            || super::parse_go_duration(DEFAULT_TOKEN_LIFETIME),
            |d| d.to_std(),
        )
    }

    pub fn max_lifetime(&self) -> Result<std::time::Duration, super::DurationError> {
        self.max_lifetime.as_ref().map_or_else(
            || super::parse_go_duration(DEFAULT_MAX_TOKEN_LIFETIME),
            |d| d.to_std(),
        )
    }

    /// The first of `values` that none of the glob `patterns` (`*`: any run
    /// of characters; `${namespace}`: `namespace`) matches; `None` when all
    /// match or there are no patterns (a policy left unset allows all).
    pub fn first_unmatched<'a>(
        patterns: Option<&[String]>,
        values: impl IntoIterator<Item = &'a String>,
        namespace: &str,
    ) -> Option<&'a String> {
        let patterns: Vec<wildmatch::WildMatch> = patterns?
            .iter()
            .map(|p| wildmatch::WildMatch::new(&p.replace("${namespace}", namespace)))
            .collect();
        values
            .into_iter()
            .find(|value| !patterns.iter().any(|p| p.matches(value)))
    }

    /// The issuer's `audiences`, empty when unset.
    pub fn audiences(&self) -> &[String] {
        self.audiences.as_deref().unwrap_or_default()
    }
}

/// What the controllers need of either kind of issuer.
pub trait Issuer:
    kube::Resource<DynamicType = ()>
    + kube::core::object::HasStatus<Status = IssuerStatus>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: super::IssuerKind;
    fn settings(&self) -> &IssuerSettings;
    fn issuer_status(&self) -> Option<&IssuerStatus>;
    /// `None` for a TokenIssuer: it serves its own namespace only.
    fn namespace_selector(&self) -> Option<&LabelSelector>;
}

impl Issuer for TokenIssuer {
    const KIND: super::IssuerKind = super::IssuerKind::TokenIssuer;
    fn settings(&self) -> &IssuerSettings {
        &self.spec.settings
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn namespace_selector(&self) -> Option<&LabelSelector> {
        None
    }
}

impl Issuer for ClusterTokenIssuer {
    const KIND: super::IssuerKind = super::IssuerKind::ClusterTokenIssuer;
    fn settings(&self) -> &IssuerSettings {
        &self.spec.settings
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn namespace_selector(&self) -> Option<&LabelSelector> {
        self.spec.namespace_selector.as_ref()
    }
}
