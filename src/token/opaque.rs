//! Opaque tokens: `<prefix><43 base62 characters = 256 random bits><6 base62
//! characters of CRC32>`, the shape secret scanners recognise offline (the
//! prefix says whose it is, the checksum rules out look-alikes).

use secrecy::SecretString;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 43 base62 characters carry 256.03 bits.
const RANDOM_CHARS: usize = 43;
/// 62^6 > 2^32, so six characters hold any CRC32.
const CHECKSUM_CHARS: usize = 6;

/// The prefix of Opaque tokens whose AccessToken names none.
pub const DEFAULT_OPAQUE_PREFIX: &str = "tks_";

/// A new opaque token with `prefix`.
pub fn new_opaque_token(prefix: &str) -> SecretString {
    let mut token = String::with_capacity(prefix.len() + RANDOM_CHARS + CHECKSUM_CHARS);
    token.push_str(prefix);
    while token.len() < prefix.len() + RANDOM_CHARS {
        for byte in super::random_bytes::<64>() {
            // Rejection sampling: 248 = 4 * 62, so every character is equally likely.
            if byte < 248 && token.len() < prefix.len() + RANDOM_CHARS {
                token.push(BASE62[(byte % 62) as usize] as char);
            }
        }
    }
    token.push_str(&checksum(&token));
    SecretString::from(token)
}

/// Whether `token` has the shape and a correct checksum of an opaque token
/// with `prefix` (it says nothing about whether the token was ever issued).
pub fn is_well_formed_opaque_token(token: &str, prefix: &str) -> bool {
    let Some(body) = token.strip_prefix(prefix) else {
        return false;
    };
    if body.len() != RANDOM_CHARS + CHECKSUM_CHARS || !body.bytes().all(|b| BASE62.contains(&b)) {
        return false;
    }
    let (payload, sum) = token.split_at(token.len() - CHECKSUM_CHARS);
    checksum(payload) == sum
}

fn checksum(payload: &str) -> String {
    let mut value = crc32fast::hash(payload.as_bytes()) as u64;
    let mut chars = [b'0'; CHECKSUM_CHARS];
    for slot in chars.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(chars.to_vec()).expect("base62 is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn has_prefix_random_part_and_checksum() {
        let token = new_opaque_token("etm_");
        let token = token.expose_secret();
        assert!(token.starts_with("etm_"));
        assert_eq!(token.len(), 4 + 43 + 6);
        assert!(is_well_formed_opaque_token(token, "etm_"));
    }

    #[test]
    fn checksum_catches_a_changed_character() {
        let token = new_opaque_token("tks_").expose_secret().to_string();
        let mut bytes = token.into_bytes();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let changed = String::from_utf8(bytes).unwrap();
        assert!(!is_well_formed_opaque_token(&changed, "tks_"));
    }

    #[test]
    fn rejects_wrong_prefix_and_length() {
        let token = new_opaque_token("tks_").expose_secret().to_string();
        assert!(!is_well_formed_opaque_token(&token, "etm_"));
        assert!(!is_well_formed_opaque_token(
            &token[..token.len() - 1],
            "tks_"
        ));
    }

    #[test]
    fn tokens_differ() {
        let a = new_opaque_token("tks_").expose_secret().to_string();
        let b = new_opaque_token("tks_").expose_secret().to_string();
        assert_ne!(a, b);
    }
}
