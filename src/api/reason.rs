//! The reasons of the Ready condition, one set for every kind (the README's
//! reference tables list what each means). Events use them too.

// AccessToken
pub const ISSUED: &str = "Issued";
pub const ROTATED: &str = "Rotated";
pub const EXPIRED: &str = "Expired";
pub const REVOKED: &str = "Revoked";
pub const REVOCATION_QUOTA_EXCEEDED: &str = "RevocationQuotaExceeded";

// AppRegistration
pub const REGISTERED: &str = "Registered";
pub const SECRET_ROTATED: &str = "SecretRotated";

// TokenIssuer and ClusterTokenIssuer
pub const KEYS_READY: &str = "KeysReady";
pub const KEY_ERROR: &str = "KeyError";
pub const KEY_SECRET_CONFLICT: &str = "KeySecretConflict";
pub const ISSUER_URL_CONFLICT: &str = "IssuerURLConflict";

// Shared
/// The spec asks for something the issuer's policy, the API server or the
/// operator refuses; nothing is retried until it changes.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// The Secret to write exists and is someone else's.
pub const SECRET_CONFLICT: &str = "SecretConflict";
/// The issuer named is missing, not ready, or not serving its URL.
pub const ISSUER_NOT_READY: &str = "IssuerNotReady";
