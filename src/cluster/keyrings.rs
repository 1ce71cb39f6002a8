//! The issuers' keyrings, read from the watched key Secrets and loaded
//! (parsed, the active key made ready to sign) once per version of each
//! Secret: one cache for the reconcilers (which sign AccessTokens) and the
//! token service (which signs and verifies).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    api::{Issuer, IssuerKind},
    token::{KEYRING_SECRET_KEY, Keyring, LoadedKeyring},
};

/// Where a key Secret is: (namespace, name).
pub type KeySecretLocation = (String, String);

/// Where the signing keys of `issuer` live: always in the operator's
/// namespace, where no tenant can read or write them. A TokenIssuer's
/// Secret is named by a digest of its namespace and name, so names never
/// collide across namespaces and always fit.
pub fn key_secret_location<I: Issuer>(issuer: &I, operator_namespace: &str) -> (String, String) {
    let name = match I::KIND {
        IssuerKind::ClusterTokenIssuer => format!("tokensmith-clusterissuer-{}", issuer.name_any()),
        IssuerKind::TokenIssuer => {
            let digest = crate::token::fingerprint(&format!(
                "{}/{}",
                issuer.namespace().unwrap_or_default(),
                issuer.name_any()
            ));
            let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
            format!("tokensmith-issuer-{}", &hex[..24])
        }
    };
    (operator_namespace.to_string(), name)
}

/// Why a keyring cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("its key Secret does not exist (yet)")]
    Missing,
    #[error("it holds no keys")]
    Empty,
    #[error("its keys cannot be read: {0}")]
    Unreadable(String),
}

/// A keyring and the resourceVersion of the Secret it was parsed from.
type Parsed = (Option<String>, Arc<LoadedKeyring>);

/// Parsed keyrings over the watched key Secrets.
#[derive(Clone)]
pub struct Keyrings {
    secrets: Store<Secret>,
    parsed: Arc<Mutex<HashMap<KeySecretLocation, Parsed>>>,
}

impl Keyrings {
    pub fn new(secrets: Store<Secret>) -> Self {
        Self {
            secrets,
            parsed: Arc::default(),
        }
    }

    /// The keyring in the key Secret at `location`, as the watch last saw it.
    pub fn get(&self, location: &KeySecretLocation) -> Result<Arc<LoadedKeyring>, KeyringError> {
        let (namespace, name) = location;
        let secret = self
            .secrets
            .get(&ObjectRef::new(name).within(namespace))
            .ok_or(KeyringError::Missing)?;
        let version = secret.resource_version();
        let mut parsed = self
            .parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((parsed_version, keyring)) = parsed.get(location)
            && *parsed_version == version
        {
            return Ok(keyring.clone());
        }
        let keyring = Arc::new(LoadedKeyring::new(parse(&secret)?));
        parsed.insert(location.clone(), (version, keyring.clone()));
        Ok(keyring)
    }
}

/// The keyring a key Secret holds.
pub fn parse(secret: &Secret) -> Result<Keyring, KeyringError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEYRING_SECRET_KEY))
        .ok_or(KeyringError::Empty)?;
    // The position only: a parser's message may quote what it read.
    Keyring::from_json(&bytes.0).map_err(|e| {
        KeyringError::Unreadable(format!(
            "not a keyring (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}
