//! Session tokens: HMAC-SHA256 signed `{title, player, expiry}`, so any
//! server holding the secret can check a token without a lookup. A token
//! for one title is refused by every other title.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Longest player id. Ids become file names, so they are short and plain.
pub const PLAYER_ID_BYTES_MAX: usize = 64;

/// Whether `id` is a valid player id: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn valid_player_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= PLAYER_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Title id.
    pub t: String,
    /// Player id.
    pub p: String,
    /// Expiry, milliseconds since the epoch.
    pub e: i64,
    /// Issued at, milliseconds since the epoch (0 in tokens from before
    /// this field: treated as issued before any forced logout).
    #[serde(default)]
    pub i: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the session token is malformed or its signature is wrong")]
    Invalid,
    #[error("the session token has expired; log in again")]
    Expired,
    #[error("the session token was issued for another title")]
    WrongTitle,
}

/// Signs tokens with one secret, and checks them with it or with the
/// secret it replaced (a rotation: both are accepted until every token
/// the old one signed has expired).
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer { secret: secret.to_vec(), previous: None }
    }

    /// Also accepts tokens signed with `previous`.
    pub fn also_accepting(self, previous: &[u8]) -> Signer {
        Signer { previous: Some(previous.to_vec()), ..self }
    }

    fn mac(secret: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = Signer::mac(&self.secret);
        mac.update(body.as_bytes());
        format!("{body}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// Checks signature, expiry (against `now_ms`) and title.
    pub fn verify(&self, token: &str, title: &str, now_ms: i64) -> Result<Claims, TokenError> {
        let (body, sig) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Invalid)?;
        let signed_by = |secret: &[u8]| {
            let mut mac = Signer::mac(secret);
            mac.update(body.as_bytes());
            mac.verify_slice(&sig).is_ok()
        };
        if !signed_by(&self.secret) && !self.previous.as_deref().is_some_and(signed_by) {
            return Err(TokenError::Invalid);
        }
        let bytes = B64.decode(body).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| TokenError::Invalid)?;
        if claims.e <= now_ms {
            return Err(TokenError::Expired);
        }
        if claims.t != title {
            return Err(TokenError::WrongTitle);
        }
        if !valid_player_id(&claims.p) {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_signature_expiry_and_title() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let c = Claims { t: "fort".into(), p: "alice".into(), e: 1000, i: 10 };
        let tok = s.issue(&c);
        assert_eq!(s.verify(&tok, "fort", 999), Ok(c));
        assert_eq!(s.verify(&tok, "fort", 1000), Err(TokenError::Expired));
        assert_eq!(s.verify(&tok, "other", 0), Err(TokenError::WrongTitle));
        assert_eq!(Signer::new(b"another secret of 32 bytes......").verify(&tok, "fort", 0), Err(TokenError::Invalid));
        let forged = format!("{}x", tok);
        assert_eq!(s.verify(&forged, "fort", 0), Err(TokenError::Invalid));
        assert_eq!(s.verify("garbage", "fort", 0), Err(TokenError::Invalid));
    }

    #[test]
    fn during_a_rotation_tokens_of_the_previous_secret_are_accepted_and_new_ones_use_the_new() {
        let old = Signer::new(b"the old secret of 32 bytes......");
        let rotated =
            Signer::new(b"the new secret of 32 bytes......").also_accepting(b"the old secret of 32 bytes......");
        let c = Claims { t: "fort".into(), p: "alice".into(), e: 1000, i: 10 };
        assert_eq!(rotated.verify(&old.issue(&c), "fort", 0), Ok(c.clone()), "an old token still works");
        let new_token = rotated.issue(&c);
        assert_eq!(old.verify(&new_token, "fort", 0), Err(TokenError::Invalid), "signed with the new secret only");
        assert_eq!(Signer::new(b"the new secret of 32 bytes......").verify(&new_token, "fort", 0), Ok(c.clone()));
        let stranger = Signer::new(b"a third secret of 32 bytes......");
        assert_eq!(rotated.verify(&stranger.issue(&c), "fort", 0), Err(TokenError::Invalid));
        assert_eq!(rotated.verify(&old.issue(&c), "fort", 1000), Err(TokenError::Expired), "and expire as before");
    }

    #[test]
    fn player_ids_are_plain_file_names() {
        assert!(valid_player_id("alice_01-x"));
        for bad in ["", "../etc", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_player_id(bad), "{bad}");
        }
    }
}
