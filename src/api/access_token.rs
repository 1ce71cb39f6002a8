//! The AccessToken kind: a named token with scopes and an expiry, minted
//! into a Secret; its status is the operator's record of what was minted.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditions, Duration, FixedTime, IssuerRef, LocalObjectRef, SecretTemplate};

/// Claim names the operator sets itself; `claims` may not override them.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "client_id",
    "kid",
    "typ",
    "cnf",
    "act",
    "may_act",
    "azp",
    "auth_time",
    "nonce",
];

/// The characters and length a scope may have (an OAuth 2.0 scope token
/// without spaces or quotes).
pub const SCOPE_PATTERN: &str = r"^[A-Za-z0-9_.:/-]{1,128}$";

/// One long-lived credential for one workload or person, kept in one Secret.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "tokensmith.dev",
    version = "v1alpha1",
    kind = "AccessToken",
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: the operator writes it into label values"),
    doc = "A long-lived API access token for one workload or person, minted by tokensmith into a Secret, rotated before it expires and revoked when this resource is deleted.",
    namespaced,
    shortname = "atk",
    category = "tokensmith",
    status = "AccessTokenStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretName",
        priority = 1
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.lifetime) && has(self.expiresAt))").message("set either lifetime or expiresAt, not both"))]
#[x_kube(validation = Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))").message("set either renewBefore or renewBeforePercentage, not both"))]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || !has(self.lifetime) || duration(self.renewBefore).getSeconds() * 10 <= duration(self.lifetime).getSeconds() * 9").message("renewBefore must be at most 90% of lifetime: a token lives at least a tenth of its lifetime before it is renewed"))]
#[x_kube(validation = Rule::new("!has(self.prefix) || (has(self.format) && self.format == 'Opaque')").message("prefix applies only to format Opaque"))]
#[x_kube(validation = Rule::new("!(has(self.subject) && has(self.userless) && self.userless)").message("a userless token is its own subject: do not set subject as well"))]
#[x_kube(validation = Rule::new("has(self.issuerRef) == has(oldSelf.issuerRef) && (!has(self.issuerRef) || self.issuerRef == oldSelf.issuerRef)").message("issuerRef is immutable: create a new AccessToken to change issuers"))]
#[x_kube(validation = Rule::new("has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)").message("secretName is immutable: create a new AccessToken to write another Secret"))]
pub struct AccessTokenSpec {
    /// The issuer that signs this token. Default: the ClusterTokenIssuer
    /// named `default`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// The `sub` claim. Default `system:accesstoken:<namespace>:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub subject: Option<String>,

    /// Makes the token its own subject: `sub` is the token id (`jti`), for a
    /// token tied to no user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userless: Option<bool>,

    /// Scopes the token carries in its `scope` claim, e.g. `read_scenarios`
    /// or `scenarios:write`. Each must be allowed by the issuer's
    /// `allowedScopes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::scope_list_schema")]
    pub scopes: Vec<String>,

    /// The `aud` claim. Default: the issuer's `audiences`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::audience_list_schema")]
    pub audiences: Vec<String>,

    /// Extra private claims added to the JWT, as string values. Registered
    /// claim names and the ones the operator sets (iss, sub, aud, exp, nbf,
    /// iat, jti, scope, client_id, ...) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "claims_schema")]
    #[x_kube(validation = Rule::new("self.all(k, !(k in ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'scope', 'client_id', 'kid', 'typ', 'cnf', 'act', 'may_act', 'azp', 'auth_time', 'nonce']))").message("claims must not set a registered claim (iss, sub, aud, exp, nbf, iat, jti, scope, client_id, kid, typ, cnf, act, may_act, azp, auth_time, nonce): use the matching field instead"))]
    pub claims: Option<BTreeMap<String, String>>,

    /// The AppRegistration this token belongs to (sets `client_id`); deleting
    /// the app revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_ref: Option<LocalObjectRef>,

    /// An object in the same namespace that owns the token (the "user" of a
    /// user token). Deleting it deletes this AccessToken through the garbage
    /// collector, which revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_object_ref: Option<BoundObjectRef>,

    /// `JWT` (default): a signed JWT anyone can verify offline with the
    /// issuer's JWKS. `Opaque`: `prefix` + 256 random bits in base62 + a
    /// CRC32 checksum, verifiable only through introspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TokenFormat>,

    /// Prefix of an Opaque token, so secret scanners recognise a leaked one.
    /// Default `tks_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 11))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9]{1,9}_$')").message("prefix must be 2 to 10 lower-case letters or digits, starting with a letter, followed by _ (like tks_)"))]
    pub prefix: Option<String>,

    /// How long each token is valid, e.g. `24h`. Default: the issuer's
    /// `defaultLifetime`. Excludes `expiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("lifetime must be at least 10s"))]
    pub lifetime: Option<Duration>,

    /// A fixed expiry time (RFC 3339), before 9999-12-30. Excludes `lifetime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self < timestamp('9999-12-30T00:00:00Z')").message("expiresAt must be before 9999-12-30T00:00:00Z"))]
    pub expires_at: Option<FixedTime>,

    /// Renew this long before expiry, e.g. `1h`; at most 90% of the
    /// lifetime. However it is set, a token is never renewed sooner than 10 s
    /// or a tenth of its lifetime after it was issued. Excludes
    /// `renewBeforePercentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<Duration>,

    /// Renew when this percentage of the lifetime is left (1 to 90: a token
    /// lives at least a tenth of its lifetime). Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub renew_before_percentage: Option<i32>,

    /// `Rotate` (default): a fresh token replaces this one before it expires.
    /// `Delete`: no renewal; at expiry the Secret is deleted and the condition
    /// becomes Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<ExpiryPolicy>,

    /// `true` revokes the token now and removes its Secret; the resource stays
    /// as a record with reason Revoked. Setting it back to `false` issues a
    /// new token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<bool>,

    /// Name of the Secret that holds the token. Default: the AccessToken's
    /// name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a valid Secret name (lower-case DNS subdomain)"))]
    pub secret_name: Option<String>,

    /// Labels and annotations for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Workloads restarted (like `kubectl rollout restart`) after each
    /// rotation, for programs that read the token only at start-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

fn claims_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": { "type": "string", "maxLength": 1024 },
    })
}

/// The object that owns a user token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct BoundObjectRef {
    /// `ServiceAccount`, `Secret` or `ConfigMap`.
    pub kind: BoundObjectKind,
    /// Name of the object, in the AccessToken's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of object a token can be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BoundObjectKind {
    ServiceAccount,
    Secret,
    ConfigMap,
}

/// How the token is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TokenFormat {
    #[default]
    #[serde(rename = "JWT")]
    Jwt,
    Opaque,
}

/// What happens when a token reaches its expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExpiryPolicy {
    #[default]
    Rotate,
    Delete,
}

/// A workload restarted after each rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct RolloutRestartTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// Name of the workload, in the AccessToken's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload that can be restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// The observed state of an AccessToken. Never holds the token itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenStatus {
    /// `Ready`, with reason Issued, Rotated, Expired, Revoked, InvalidSpec,
    /// IssuerNotReady or SecretConflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `jti` of the current token.
    #[serde(rename = "tokenID", default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The `kid` of the key that signed the current token (JWT only).
    #[serde(rename = "keyID", default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// When the current token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    /// When the current token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the operator will replace the current token (onExpiry Rotate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// How many tokens have been issued for this resource, the current one
    /// included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The Secret holding the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `sha256:<hex>` of the current token, to recognise it without storing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// Tokens replaced by a scheduled rotation that stay valid until they
    /// expire (workloads may still hold them). They are revoked with the
    /// current one when the AccessToken is deleted or revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_tokens: Vec<PreviousToken>,
    /// Hash of the fields the current token was minted from; a change to any
    /// of them mints a new token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// What the current token, and every token in `previousTokens`, was
    /// minted with. The token service answers introspection from this
    /// record, which only the operator can write, never from the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted: Option<MintedClaims>,
    /// The value of the `tokensmith.dev/renew` annotation last served with
    /// a new token: another value asks for another token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_request: Option<String>,
}

/// Annotation asking for a new token now (any new value, e.g. the time:
/// `tokensmith token renew` writes one). The new token is minted as at
/// renewal time: the old one stays valid until it expires, listed in
/// `previousTokens`, and the mint rate limit applies.
pub const RENEW_ANNOTATION: &str = "tokensmith.dev/renew";

/// The claims a token was minted with, as recorded by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MintedClaims {
    /// The `iss` claim: the issuer's URL when the token was minted.
    #[serde(rename = "issuerURL")]
    pub issuer_url: String,
    /// The `sub` claim; absent for a userless token, whose subject is its
    /// own token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The `scope` claim, one scope per item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The `aud` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The private claims.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    /// The `client_id` claim (the client id of `appRef`'s AppRegistration).
    #[serde(rename = "clientID", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl MintedClaims {
    /// The `sub` of the token with id `token_id`.
    pub fn subject_of(&self, token_id: &str) -> String {
        self.subject.clone().unwrap_or_else(|| token_id.to_string())
    }
}

/// A token superseded by rotation but not yet expired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviousToken {
    /// Its `jti`.
    #[serde(rename = "tokenID")]
    pub token_id: String,
    /// When it expires.
    pub expires_at: Time,
    /// `sha256:<hex>` of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
}

/// Defaults and derived values of an AccessToken's spec.
impl AccessTokenSpec {
    pub fn format(&self) -> TokenFormat {
        self.format.unwrap_or_default()
    }

    pub fn on_expiry(&self) -> ExpiryPolicy {
        self.on_expiry.unwrap_or_default()
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked == Some(true)
    }

    pub fn is_userless(&self) -> bool {
        self.userless == Some(true)
    }

    pub fn issuer_ref(&self) -> IssuerRef {
        self.issuer_ref.clone().unwrap_or_default()
    }
}
