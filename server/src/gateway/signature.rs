//! Payment notifications from a platform (`POST /payments/{provider}`,
//! issue 19): checking that a webhook really comes from the provider.
//!
//! The signature is the widely used form `t=<unix seconds>,v1=<hex>[,v1=...]`
//! in a header: `v1` is HMAC-SHA256, keyed by a secret shared with the
//! provider, over `<t>.<raw body>`. A notification is accepted when one of
//! its `v1` values matches one of the configured secrets (several at once,
//! so that a secret can be rotated without a refused notification) and
//! `t` is within [`SIGNATURE_TOLERANCE`] of now (a replayed old request is
//! refused even with a good signature). Comparisons are constant-time
//! (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's time may be from ours, either way: the
/// providers' own recommendation (5 minutes) covers their retries' clock
/// and transit, and bounds how long a captured request can be replayed.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 5 * 60;

/// Signatures looked at in one header at most: a provider sends one per
/// secret it signs with (two during a rotation); more is an attempt to make
/// us compute HMACs for nothing.
pub const SIGNATURES_MAX: usize = 8;

/// The longest signature header read, for the same reason.
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 1024;

/// Why a notification's signature was refused (each a documented code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header, or not of the form `t=...,v1=...`.
    #[error("signature_malformed")]
    Malformed,
    /// The signature's time is more than the tolerance from now.
    #[error("signature_stale")]
    Stale,
    /// No signature matches any configured secret.
    #[error("signature_mismatch")]
    Mismatch,
}

impl SignatureError {
    /// The error code the endpoint answers with.
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Stale => "signature_stale",
            SignatureError::Mismatch => "signature_mismatch",
        }
    }
}

/// Checks `header` (the signature header's value) over `body` (the raw
/// request body, as received) against `secrets`, at `now_s` (unix seconds).
pub fn verify(header: &str, body: &[u8], secrets: &[Vec<u8>], now_s: i64) -> Result<(), SignatureError> {
    if header.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(SignatureError::Malformed);
    }
    let mut time = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if time.is_none() => time = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("t", _)) => return Err(SignatureError::Malformed),
            Some(("v1", hex)) => {
                if signatures.len() == SIGNATURES_MAX {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(decode_hex(hex).ok_or(SignatureError::Malformed)?);
            }
            // Other schemes (`v0`, future versions) are skipped.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = time.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now_s - t).abs() > SIGNATURE_TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    let prefix = format!("{t}.");
    for secret in secrets {
        for signature in &signatures {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
            mac.update(prefix.as_bytes());
            mac.update(body);
            if mac.verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// The header a provider would send for `body` at `t` with `secret` (for
/// tests and for operators checking their setup).
pub fn sign(body: &[u8], secret: &[u8], t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// 32 bytes from 64 hex digits; anything else is `None`.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"pay_1","player":"ann","product":"gems_100"}"#;
    const NOW: i64 = 1_796_000_000;

    fn secrets() -> Vec<Vec<u8>> {
        vec![b"whsec_current".to_vec(), b"whsec_previous".to_vec()]
    }

    #[test]
    fn a_signature_by_any_configured_secret_within_the_tolerance_is_accepted() {
        assert_eq!(verify(&sign(BODY, b"whsec_current", NOW), BODY, &secrets(), NOW), Ok(()));
        assert_eq!(verify(&sign(BODY, b"whsec_previous", NOW - 299), BODY, &secrets(), NOW), Ok(()), "rotation");
        assert_eq!(verify(&sign(BODY, b"whsec_current", NOW + 300), BODY, &secrets(), NOW), Ok(()), "clock skew");
        // Two signatures during the provider's own rotation: one matching is enough.
        let old = sign(BODY, b"whsec_retired", NOW);
        let new = sign(BODY, b"whsec_current", NOW);
        let both = format!("{old},{}", new.split_once(',').unwrap().1);
        assert_eq!(verify(&both, BODY, &secrets(), NOW), Ok(()));
        // The layout: HMAC-SHA256 over "<t>.<body>", in lower-case hex.
        assert_eq!(sign(b"body", b"key", 1), format!("t=1,v1={}", hmac_hex(b"key", b"1.body")));
        assert_eq!(
            hmac_hex(b"key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
            "the well-known HMAC-SHA256 vector"
        );
    }

    /// HMAC-SHA256 computed apart from `sign`, to check its message layout.
    fn hmac_hex(key: &[u8], message: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn stale_forged_or_malformed_signatures_are_refused_with_their_code() {
        let good = sign(BODY, b"whsec_current", NOW);
        assert_eq!(verify(&sign(BODY, b"whsec_current", NOW - 301), BODY, &secrets(), NOW), Err(SignatureError::Stale));
        assert_eq!(verify(&sign(BODY, b"whsec_current", NOW + 301), BODY, &secrets(), NOW), Err(SignatureError::Stale));
        assert_eq!(verify(&sign(BODY, b"someone_else", NOW), BODY, &secrets(), NOW), Err(SignatureError::Mismatch));
        assert_eq!(verify(&good, b"{\"id\":\"pay_2\"}", &secrets(), NOW), Err(SignatureError::Mismatch), "other body");
        assert_eq!(verify(&good, BODY, &[], NOW), Err(SignatureError::Mismatch), "no secret configured");
        let tampered_time = good.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(verify(&tampered_time, BODY, &secrets(), NOW), Err(SignatureError::Mismatch));
        for bad in [
            "",
            "garbage",
            &format!("t={NOW}"),
            "v1=abcd",
            &format!("t=soon,{}", good.split_once(',').unwrap().1),
            &format!("t={NOW},v1=zz"),
            &format!("t={NOW},v1=00"),
            &format!("{good},t={NOW}"),
            &format!("t={NOW}{}", format!(",v1={}", "0".repeat(64)).repeat(SIGNATURES_MAX + 1)),
            &"x".repeat(SIGNATURE_HEADER_BYTES_MAX + 1),
        ] {
            assert_eq!(verify(bad, BODY, &secrets(), NOW), Err(SignatureError::Malformed), "{bad}");
        }
        assert_eq!(SignatureError::Stale.code(), "signature_stale");
    }
}
