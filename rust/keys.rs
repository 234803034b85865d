//! API-key format, generation and hashing (pure Rust, no pyo3).
//!
//! A key is `sk_live_`, then 32 base62 characters of OS randomness
//! (~190.5 bits), then 6 base62 characters encoding the CRC32 of everything
//! before them (`sk_live_` and the secret), zero-padded, most significant
//! digit first. Total length: 8 + 32 + 6 = 46 characters. The checksum lets scanners and
//! the service reject garbage offline, before any hashing or lookup.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Fixed prefix of every live key.
pub const KEY_PREFIX: &str = "sk_live_";
/// Number of random base62 characters.
pub const SECRET_LEN: usize = 32;
/// Number of base62 checksum characters (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Total key length.
pub const KEY_LEN: usize = KEY_PREFIX.len() + SECRET_LEN + CHECKSUM_LEN;
/// Length of the displayable prefix (`sk_live_` + 3 characters).
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 3;

/// Base62 alphabet, in ASCII order: digits, upper case, lower case.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

type HmacSha256 = Hmac<Sha256>;

/// Largest multiple of 62 that fits in a byte: bytes >= this are rejected so
/// that `byte % 62` is uniform (no modulo bias).
const REJECT_AT: u8 = 62 * 4; // 248

#[inline]
fn base62_value(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 36),
        _ => None,
    }
}

/// Base62 encoding of a CRC32, zero-padded to [`CHECKSUM_LEN`] characters.
pub fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

/// Fills `out` with uniformly random base62 characters from the OS CSPRNG.
///
/// # Panics
/// Only if the operating system's random source fails, which getrandom
/// treats as unrecoverable.
fn fill_base62(out: &mut [u8]) {
    // 48 bytes cover 32 characters with overwhelming probability
    // (each byte is accepted with probability 248/256).
    let mut buf = [0u8; 48];
    let mut filled = 0;
    while filled < out.len() {
        getrandom::getrandom(&mut buf).expect("OS random number generator failed");
        for &b in &buf {
            if b < REJECT_AT {
                out[filled] = ALPHABET[usize::from(b % 62)];
                filled += 1;
                if filled == out.len() {
                    break;
                }
            }
        }
    }
}

/// Generates a new random API key (see the module docs for the format).
pub fn generate_key() -> String {
    let mut key = [0u8; KEY_LEN];
    key[..KEY_PREFIX.len()].copy_from_slice(KEY_PREFIX.as_bytes());
    let body_len = KEY_PREFIX.len() + SECRET_LEN;
    fill_base62(&mut key[KEY_PREFIX.len()..body_len]);
    let crc = crc32fast::hash(&key[..body_len]);
    key[body_len..].copy_from_slice(&encode_checksum(crc));
    // Every byte is ASCII by construction.
    String::from_utf8(key.to_vec()).expect("key is ASCII")
}

/// True when `key` has the right prefix, length, charset and checksum.
pub fn is_well_formed(key: &str) -> bool {
    let bytes = key.as_bytes();
    if bytes.len() != KEY_LEN || !bytes.starts_with(KEY_PREFIX.as_bytes()) {
        return false;
    }
    let body_len = KEY_PREFIX.len() + SECRET_LEN;
    if !bytes[KEY_PREFIX.len()..body_len]
        .iter()
        .all(|&c| base62_value(c).is_some())
    {
        return false;
    }
    let mut crc: u64 = 0;
    for &c in &bytes[body_len..] {
        match base62_value(c) {
            Some(v) => crc = crc * 62 + u64::from(v),
            None => return false,
        }
    }
    crc == u64::from(crc32fast::hash(&bytes[..body_len]))
}

/// HMAC-SHA256(pepper, key).
pub fn hash_key(pepper: &[u8], key: &str) -> [u8; 32] {
    KeyHasher::new(pepper).hash(key)
}

/// An HMAC-SHA256 keyed with the pepper once; hashing then only clones the
/// precomputed inner/outer states (two SHA-256 compressions for a key).
#[derive(Clone)]
pub struct KeyHasher {
    mac: HmacSha256,
}

impl KeyHasher {
    pub fn new(pepper: &[u8]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(pepper).expect("HMAC accepts keys of any length"),
        }
    }

    pub fn hash(&self, key: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The displayable prefix: the first 11 characters (or the whole string if
/// shorter), never splitting a UTF-8 character.
pub fn prefix(key: &str) -> &str {
    match key.char_indices().nth(DISPLAY_PREFIX_LEN) {
        Some((idx, _)) => &key[..idx],
        None => key,
    }
}

/// Constant-time equality (for equal lengths; the length itself is not
/// secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_keys_are_well_formed_and_unique() {
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let k = generate_key();
            assert_eq!(k.len(), KEY_LEN);
            assert_eq!(k.len(), 46);
            assert!(k.starts_with("sk_live_"));
            assert!(k[8..].bytes().all(|c| c.is_ascii_alphanumeric()));
            assert!(is_well_formed(&k), "{k}");
            assert!(seen.insert(k));
        }
    }

    #[test]
    fn secret_characters_are_roughly_uniform() {
        let mut counts = [0u32; 62];
        let n = 4000;
        for _ in 0..n {
            let k = generate_key();
            for c in k[8..40].bytes() {
                counts[base62_value(c).unwrap() as usize] += 1;
            }
        }
        let expected = f64::from(n * 32) / 62.0; // ~2065
        for (i, &c) in counts.iter().enumerate() {
            let dev = (f64::from(c) - expected).abs() / expected;
            assert!(dev < 0.15, "char {i} count {c} expected {expected}");
        }
    }

    #[test]
    fn checksum_encoding() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn rejects_malformed_keys() {
        let k = generate_key();
        assert!(is_well_formed(&k));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&k[..45]));
        assert!(!is_well_formed(&format!("{k}0")));
        assert!(!is_well_formed(&k.replacen("sk_live_", "sk_test_", 1)));
        // Flip one secret character: checksum must catch it.
        let mut b = k.clone().into_bytes();
        b[10] = if b[10] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(std::str::from_utf8(&b).unwrap()));
        // Non-base62 character in the secret.
        let mut b = k.clone().into_bytes();
        b[12] = b'-';
        assert!(!is_well_formed(std::str::from_utf8(&b).unwrap()));
        // Checksum digits above u32::MAX ("zzzzzz") are rejected, not wrapped.
        let mut b = k.clone().into_bytes();
        b[40..].copy_from_slice(b"zzzzzz");
        assert!(!is_well_formed(std::str::from_utf8(&b).unwrap()));
        // Non-ASCII of the same byte length.
        let s = format!("sk_live_{}é{}", "a".repeat(30), "000000");
        assert_eq!(s.len(), 46);
        assert!(!is_well_formed(&s));
    }

    #[test]
    fn known_checksum_matches_crc32() {
        let body = format!("sk_live_{}", "A".repeat(32));
        let crc = crc32fast::hash(body.as_bytes());
        let key = format!(
            "{body}{}",
            std::str::from_utf8(&encode_checksum(crc)).unwrap()
        );
        assert!(is_well_formed(&key));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        let h = hash_key(b"Jefe", "what do ya want for nothing?");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let hasher = KeyHasher::new(b"Jefe");
        assert_eq!(hasher.hash("what do ya want for nothing?"), h);
        assert_ne!(hash_key(b"other", "what do ya want for nothing?"), h);
    }

    #[test]
    fn prefix_and_ct_eq() {
        let k = generate_key();
        assert_eq!(prefix(&k), &k[..11]);
        assert_eq!(prefix("short"), "short");
        assert_eq!(prefix("ééééééééééééé").chars().count(), 11);
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
