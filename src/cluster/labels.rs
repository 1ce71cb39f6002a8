//! Names the operator puts on what it keeps in the cluster: labels that its
//! watches select on, its field manager, its finalizer.

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "tokensmith";
/// Holds an AccessToken until its token is revoked.
pub const FINALIZER: &str = "tokensmith.dev/revoke";
/// Marks what the operator created; watches of Secrets select on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tokensmith");
/// On an issuer's key Secret: the issuer's name.
pub const ISSUER_LABEL: &str = "tokensmith.dev/issuer";
/// On every revocation ConfigMap.
pub const REVOCATIONS_LABEL: &str = "tokensmith.dev/revocations";

/// The label selector of every Secret the operator manages.
pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}
