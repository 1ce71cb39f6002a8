use crate::token::KeyError;

/// Everything that can go wrong in a reconcile. User mistakes are not errors:
/// they become conditions and events, and the reconcile succeeds.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("signing key: {0}")]
    Key(#[from] KeyError),

    #[error("the key Secret {secret} of issuer {issuer} is unreadable: {reason}")]
    KeyringUnreadable {
        issuer: String,
        secret: String,
        reason: String,
    },

    #[error("{0} has no {1}; the API server always sets it")]
    MissingObjectKey(&'static str, &'static str),

    #[error("the operator's watches stopped before they were ready")]
    WatchesStopped,

    #[error(
        "the revocation record {configmap} is full ({entries} live entries); tokens cannot be revoked until entries expire or the operator is given more shards"
    )]
    RevocationStoreFull { configmap: String, entries: usize },
}

/// The Result of this crate's controllers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Key(_) => "key",
            Error::KeyringUnreadable { .. } => "keyring",
            Error::MissingObjectKey(..) => "missing_object_key",
            Error::RevocationStoreFull { .. } => "revocation_store_full",
            Error::WatchesStopped => "watches_stopped",
        }
    }
}
