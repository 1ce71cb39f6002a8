//! The errors of a reconcile, and how a refused write is recognised.

use crate::token::KeyError;

/// Everything that can go wrong in a reconcile. User mistakes are not errors:
/// they become conditions and events, and the reconcile succeeds.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {}", readable(.0))]
    Kube(#[from] kube::Error),

    #[error("signing key: {0}")]
    Key(#[from] KeyError),

    #[error("the key Secret {secret} of issuer {issuer} is unreadable: {reason}")]
    KeyringUnreadable {
        issuer: String,
        secret: String,
        reason: String,
    },

    /// The API server refused to store a Secret as the spec asks for it
    /// (a `secretTemplate` label or annotation it does not allow, or a name
    /// too long for the label that carries it): a user mistake, reported as
    /// a condition rather than retried.
    #[error("the API server refuses Secret {secret}: {reason}")]
    SecretRefused { secret: String, reason: String },

    /// A Secret by the name the operator writes exists and is not the
    /// operator's: found on create, since such Secrets are not cached.
    #[error("Secret {secret} exists and is not the operator's")]
    SecretTaken { secret: String },

    #[error("{0} has no {1}; the API server always sets it")]
    MissingObjectKey(&'static str, &'static str),

    #[error("revocation: {0}")]
    Revocation(#[from] crate::cluster::revocations::RevocationError),
}

/// A kube error in words for people: an API error is its status message
/// and code (kube's own text appends a `Debug` dump of the whole Status).
pub fn readable(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

/// The Result of this crate's controllers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether the API server refused a write because the namespace is being
/// deleted.
pub fn is_namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
    if status.details.as_ref().is_some_and(|details| {
        details.causes.iter().any(|cause| cause.reason == "NamespaceTerminating")
    }))
}

impl Error {
    /// Whether this failure is a write refused because the namespace is
    /// being deleted: routine, and nothing to retry, since the object goes
    /// with its namespace.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::Kube(error) => is_namespace_terminating(error),
            _ => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Key(_) => "key",
            Error::KeyringUnreadable { .. } => "keyring",
            Error::MissingObjectKey(..) => "missing_object_key",
            Error::Revocation(crate::cluster::revocations::RevocationError::Full { .. }) => {
                "revocation_store_full"
            }
            Error::Revocation(crate::cluster::revocations::RevocationError::Kube(_)) => "kube",
            Error::Revocation(crate::cluster::revocations::RevocationError::WriterGone) => {
                "revocation_writer_gone"
            }
            Error::SecretRefused { .. } => "secret_refused",
            Error::SecretTaken { .. } => "secret_taken",
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    /// An API error as the API server sends it.
    fn api_error(body: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value::<Status>(body).unwrap()))
    }

    fn terminating() -> kube::Error {
        api_error(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
            "reason": "Forbidden",
            "message": "secrets \"t\" is forbidden: unable to create new content in namespace ns because it is being terminated",
            "details": { "name": "t", "kind": "secrets", "causes": [{
                "reason": "NamespaceTerminating",
                "message": "namespace ns is being terminated",
                "field": "metadata.namespace",
            }]},
        }))
    }

    #[test]
    fn api_errors_read_as_their_message() {
        let error = Error::Kube(terminating());
        assert_eq!(
            error.to_string(),
            "Kubernetes API request failed: secrets \"t\" is forbidden: unable to create new content in namespace ns because it is being terminated (403 Forbidden)"
        );
        assert!(!error.to_string().contains("Status {"));
    }

    #[test]
    fn recognises_a_write_refused_by_a_terminating_namespace() {
        assert!(Error::Kube(terminating()).is_namespace_terminating());
    }

    #[test]
    fn other_refusals_are_not_mistaken_for_it() {
        let forbidden = api_error(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "secrets is forbidden: User cannot create resource",
            "details": { "kind": "secrets" },
        }));
        assert!(!Error::Kube(forbidden).is_namespace_terminating());
        let not_found = api_error(serde_json::json!({
            "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found",
        }));
        assert!(!Error::Kube(not_found).is_namespace_terminating());
        let full = crate::cluster::revocations::RevocationError::Full {
            configmap: "tokensmith-revocations-0".into(),
            entries: 15_000,
        };
        assert!(!Error::Revocation(full).is_namespace_terminating());
    }
}
