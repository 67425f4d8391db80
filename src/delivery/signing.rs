//! Standard Webhooks signatures.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}` and each
//! signature is `v1,` + base64(HMAC-SHA256(key, content)). During a key
//! rotation every listed secret signs, space-separated, so a receiver holding
//! either the old or the new secret verifies the request.
//!
//! Keys are decoded and the HMAC keyed once, when the subscription index is
//! built; signing a delivery clones the keyed state instead of re-deriving it.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::webhook::{decode_secret, ExpiringSecret, SecretError};

type HmacSha256 = Hmac<Sha256>;

/// Signs requests for one webhook with all of its current secrets.
#[derive(Clone)]
pub struct Signer {
    /// Keyed HMAC states, each with the Unix time (seconds) after which it no
    /// longer signs (`i64::MAX` for current secrets).
    keys: Vec<(HmacSha256, i64)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    /// Prepares `whsec_...` secrets, newest first.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Result<Signer, SecretError> {
        Self::with_expiring(secrets, &[])
    }

    /// Prepares current secrets plus rotated-out secrets that keep signing
    /// until their expiry.
    pub fn with_expiring<S: AsRef<str>>(secrets: &[S], previous: &[ExpiringSecret]) -> Result<Signer, SecretError> {
        let key = |secret: &str| -> Result<HmacSha256, SecretError> {
            let key = decode_secret(secret)?;
            // HMAC takes a key of any length.
            HmacSha256::new_from_slice(&key).map_err(|_| SecretError::Length)
        };
        let mut keys = Vec::with_capacity(secrets.len() + previous.len());
        for s in secrets {
            keys.push((key(s.as_ref())?, i64::MAX));
        }
        for p in previous {
            keys.push((key(&p.secret)?, p.expires_at.unix_timestamp()));
        }
        Ok(Signer { keys })
    }

    /// The `webhook-signature` header value: one signature per secret valid
    /// at `timestamp` (Unix seconds, the `webhook-timestamp`).
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let at = timestamp;
        let timestamp = timestamp.to_string();
        let mut out = String::with_capacity(self.keys.len() * 48);
        for (key, _) in self.keys.iter().filter(|(_, until)| at < *until) {
            let mut mac = key.clone();
            mac.update(msg_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            base64::engine::general_purpose::STANDARD.encode_string(mac.finalize().into_bytes(), &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn the_standard_webhooks_test_vector_holds() {
        let signer = Signer::new(&[SECRET]).unwrap();
        assert_eq!(
            signer.sign(MSG_ID, TIMESTAMP, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn every_secret_signs_newest_first() {
        let other = crate::webhook::generate_secret();
        let both = Signer::new(&[other.as_str(), SECRET])
            .unwrap()
            .sign(MSG_ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], Signer::new(&[other]).unwrap().sign(MSG_ID, TIMESTAMP, BODY));
        assert_eq!(parts[1], "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn any_change_to_the_signed_content_changes_the_signature() {
        let signer = Signer::new(&[SECRET]).unwrap();
        let good = signer.sign(MSG_ID, TIMESTAMP, BODY);
        assert_ne!(good, signer.sign("msg_other", TIMESTAMP, BODY));
        assert_ne!(good, signer.sign(MSG_ID, TIMESTAMP + 1, BODY));
        assert_ne!(good, signer.sign(MSG_ID, TIMESTAMP, b"{}"));
    }

    #[test]
    fn a_rotated_out_secret_signs_until_its_expiry_only() {
        let new = crate::webhook::generate_secret();
        let expires_at = time::OffsetDateTime::from_unix_timestamp(TIMESTAMP + 60).unwrap();
        let previous = [ExpiringSecret {
            secret: SECRET.into(),
            expires_at,
        }];
        let signer = Signer::with_expiring(&[new.as_str()], &previous).unwrap();
        let only_new = Signer::new(&[new.as_str()]).unwrap();
        let during = signer.sign(MSG_ID, TIMESTAMP, BODY);
        assert_eq!(
            during,
            format!(
                "{} v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                only_new.sign(MSG_ID, TIMESTAMP, BODY)
            )
        );
        assert_eq!(
            signer.sign(MSG_ID, TIMESTAMP + 60, BODY),
            only_new.sign(MSG_ID, TIMESTAMP + 60, BODY)
        );
    }

    #[test]
    fn invalid_secrets_are_refused() {
        assert_eq!(
            Signer::new(&["C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]).unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(Signer::new(&["whsec_!!!"]).unwrap_err(), SecretError::Base64);
        assert_eq!(Signer::new(&["whsec_c2hvcnQ="]).unwrap_err(), SecretError::Length);
    }
}
