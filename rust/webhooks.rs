//! Standard Webhooks signatures (pure Rust, no pyo3).
//!
//! A signature is `v1,` + base64(HMAC-SHA256(secret, "{msg_id}.{timestamp}.{body}")).
//! While a secret is being rotated a message is signed with every live secret and the
//! header carries the signatures space-separated; a receiver accepts any of them.
//! See <https://www.standardwebhooks.com/> ("Signature scheme").

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of one `v1,<base64 of 32 bytes>` signature.
const SIGNATURE_LEN: usize = 3 + 44;

/// The raw HMAC-SHA256 of `{msg_id}.{timestamp}.{body}` under `secret`.
pub fn mac(secret: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(msg_id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// The `webhook-signature` header value: one `v1,<sig>` per secret, space-separated, in
/// the order given. No secrets give an empty string (the caller refuses that case).
pub fn sign<S: AsRef<[u8]>>(secrets: &[S], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::with_capacity(secrets.len() * (SIGNATURE_LEN + 1));
    for (i, secret) in secrets.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str("v1,");
        STANDARD.encode_string(mac(secret.as_ref(), msg_id, timestamp, body), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published Standard Webhooks test vector (the reference libraries' tests).
    const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> Vec<u8> {
        STANDARD.decode(SECRET_B64).unwrap()
    }

    #[test]
    fn published_test_vector() {
        assert_eq!(sign(&[secret()], MSG_ID, TIMESTAMP, BODY), EXPECTED);
    }

    #[test]
    fn several_secrets_are_space_separated_in_order() {
        let other = b"another secret of some length...".to_vec();
        let both = sign(&[other.clone(), secret()], MSG_ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&[other], MSG_ID, TIMESTAMP, BODY));
        assert_eq!(parts[1], EXPECTED);
        assert_eq!(parts[0].len(), SIGNATURE_LEN);
    }

    #[test]
    fn every_part_is_covered() {
        let s = secret();
        let base = sign(&[&s], MSG_ID, TIMESTAMP, BODY);
        assert_ne!(sign(&[&s], "msg_other", TIMESTAMP, BODY), base);
        assert_ne!(sign(&[&s], MSG_ID, TIMESTAMP + 1, BODY), base);
        assert_ne!(sign(&[&s], MSG_ID, TIMESTAMP, b"{}"), base);
        assert_ne!(sign(&[b"x".as_slice()], MSG_ID, TIMESTAMP, BODY), base);
    }

    #[test]
    fn no_secrets_no_signature() {
        let none: [&[u8]; 0] = [];
        assert_eq!(sign(&none, MSG_ID, TIMESTAMP, BODY), "");
    }
}
