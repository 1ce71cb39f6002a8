//! Token minting: keys, claims, signing and opaque tokens. Pure: no I/O, no
//! clock (callers pass `now`), so every rule here is unit tested.

mod claims;
mod keyring;
mod keys;
mod loaded_keyring;
mod opaque;
pub mod policy;
mod refresh;
mod schedule;

pub use claims::*;
pub use keyring::*;
pub use keys::*;
pub use loaded_keyring::*;
pub use opaque::*;
pub use refresh::*;
pub use schedule::*;

use std::fmt::Write;

use aws_lc_rs::digest;

/// `sha256:<hex>` of a token or client secret: enough to recognise it, useless
/// to use it.
pub fn fingerprint(secret: &str) -> String {
    let digest = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for byte in digest.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Whether two fingerprints (or other secrets' digests) are equal, compared
/// in constant time.
pub fn same_fingerprint(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// Fills `N` bytes from the operating system's secure random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source is available");
    bytes
}

/// A fresh token id (`jti`): 128 random bits, base64url without padding.
pub fn new_token_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

/// What the id of every token minted by the token endpoint starts with. A
/// `.` never occurs in [`new_token_id`]'s alphabet, so an AccessToken's
/// token can never pass for one (the id is inside the signed claims).
pub const ENDPOINT_TOKEN_ID_PREFIX: &str = "oauth.";

/// A fresh token id for a token of the token endpoint.
pub fn new_endpoint_token_id() -> String {
    format!("{ENDPOINT_TOKEN_ID_PREFIX}{}", new_token_id())
}

/// Whether `token_id` is that of a token minted by the token endpoint
/// (rather than of an AccessToken, which must have a record).
pub fn is_endpoint_token_id(token_id: &str) -> bool {
    token_id.starts_with(ENDPOINT_TOKEN_ID_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_ids_are_unique_and_url_safe() {
        let a = new_token_id();
        let b = new_token_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(!is_endpoint_token_id(&a));
        assert!(is_endpoint_token_id(&new_endpoint_token_id()));
    }
}
