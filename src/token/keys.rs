//! Signing keys: making, storing (PKCS#8 PEM) and publishing (JWK) them.

use std::sync::Arc;

use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    rsa::KeySize,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
    },
};
use jsonwebtoken::{
    Algorithm, EncodingKey,
    jwk::{Jwk, PublicKeyUse, ThumbprintHash},
};
use secrecy::{ExposeSecret, SecretString};

use crate::api::SigningAlgorithm;

/// Why a key could not be made or read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a {0} key")]
    Generate(&'static str),
    #[error("stored private key {kid} is unreadable: {reason}")]
    Unreadable { kid: String, reason: String },
}

/// One signing key pair. The private half is PKCS#8 PEM, kept secret.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    private_pem: SecretString,
    encoding_key: EncodingKey,
    key_pair: Arc<KeyPair>,
    public_jwk: Jwk,
}

/// The private key parsed once, ready to sign. jsonwebtoken's
/// `EncodingKey` holds the key's DER and parses it for every signature,
/// which takes longer than the signature itself (ES256: the key pair is
/// checked by a curve multiplication; RS256: 2.5 times the signature).
enum KeyPair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl KeyPair {
    /// From the DER an `EncodingKey` holds.
    fn from_der(algorithm: SigningAlgorithm, der: &[u8]) -> Result<Self, String> {
        // aws-lc-rs's errors carry no detail, let alone key material.
        let refused = |_| format!("not a {} private key", algorithm.as_str());
        match algorithm {
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map(Self::Ecdsa)
            }
            SigningAlgorithm::EdDSA => Ed25519KeyPair::from_pkcs8(der).map(Self::Ed25519),
            // As jsonwebtoken's own RSA signer reads an EncodingKey.
            SigningAlgorithm::RS256 => RsaKeyPair::from_der(der).map(Self::Rsa),
        }
        .map_err(refused)
    }

    /// The JWS signature of `message` (ES256: `r || s`, as RFC 7518 asks).
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let failed = "signing with a loaded key fails only without randomness";
        match self {
            Self::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .expect(failed)
                .as_ref()
                .to_vec(),
            Self::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Self::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .expect(failed);
                signature
            }
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

pub fn jwt_algorithm(algorithm: SigningAlgorithm) -> Algorithm {
    match algorithm {
        SigningAlgorithm::ES256 => Algorithm::ES256,
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

impl SigningKey {
    /// A new random key pair. Its `kid` is the RFC 7638 thumbprint of its
    /// public key, so the same key always has the same id.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        let name = algorithm.as_str();
        let pkcs8 = match algorithm {
            SigningAlgorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|der| der.as_ref().to_vec()),
            SigningAlgorithm::RS256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map(|der| der.as_ref().to_vec()),
            SigningAlgorithm::EdDSA => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map(|der| der.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::Generate(name))?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8));
        Self::from_pem(algorithm, SecretString::from(pem), None)
    }

    /// A key read back from storage. `kid` is checked against the key when given.
    pub fn from_pem(
        algorithm: SigningAlgorithm,
        private_pem: SecretString,
        kid: Option<&str>,
    ) -> Result<Self, KeyError> {
        let unreadable = |reason: String| KeyError::Unreadable {
            kid: kid.unwrap_or("(new)").to_string(),
            reason,
        };
        let pem_bytes = private_pem.expose_secret().as_bytes();
        let encoding_key = match algorithm {
            SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(pem_bytes),
            SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(pem_bytes),
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem_bytes),
        }
        // The error type of jsonwebtoken names the problem, never the key.
        .map_err(|e| unreadable(e.to_string()))?;
        let key_pair = KeyPair::from_der(algorithm, encoding_key.as_bytes()).map_err(unreadable)?;
        let mut public_jwk = Jwk::from_encoding_key(&encoding_key, jwt_algorithm(algorithm))
            .map_err(|e| unreadable(e.to_string()))?;
        let thumbprint = public_jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| unreadable(e.to_string()))?;
        if let Some(kid) = kid
            && kid != thumbprint
        {
            return Err(unreadable("its kid does not match the key".into()));
        }
        public_jwk.common.key_id = Some(thumbprint.clone());
        public_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            kid: thumbprint,
            algorithm,
            private_pem,
            encoding_key,
            key_pair: Arc::new(key_pair),
            public_jwk,
        })
    }

    /// The signature of `message` with this key.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message)
    }

    pub fn private_pem(&self) -> &SecretString {
        &self.private_pem
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding_key
    }

    /// The public half as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public_jwk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_key_that_reloads_with_the_same_kid() {
        for algorithm in [
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
            SigningAlgorithm::EdDSA,
        ] {
            let key = SigningKey::generate(algorithm).expect("key generated");
            assert_eq!(key.kid.len(), 43, "base64url SHA-256 thumbprint");
            let reloaded = SigningKey::from_pem(
                algorithm,
                SecretString::from(key.private_pem().expose_secret().to_string()),
                Some(&key.kid),
            )
            .expect("stored key reloads");
            assert_eq!(reloaded.kid, key.kid);
            assert_eq!(reloaded.public_jwk(), key.public_jwk());
        }
    }

    #[test]
    fn reload_refuses_a_key_under_another_kid() {
        let key = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
        let other = SigningKey::from_pem(
            SigningAlgorithm::ES256,
            SecretString::from(key.private_pem().expose_secret().to_string()),
            Some("not-its-kid"),
        );
        assert!(other.is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }
}
