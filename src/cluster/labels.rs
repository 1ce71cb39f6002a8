//! Labels that mark what the operator keeps in the cluster; watches select on them.

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "tokensmith";
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
