//! OpenID Connect ID tokens: checked with the `jsonwebtoken` crate against
//! the keys each configured issuer publishes (its JWKS), fetched over
//! HTTPS, cached, and fetched again when a token names a key id not in
//! the cache (an issuer rotating its keys), at most once a minute.
//!
//! Only RS256 and ES256 are accepted: the algorithm comes from a list we
//! fix, never from the token, so `alg: none` and an HMAC token "signed"
//! with the issuer's public key are refused before any key is used.
//! `iss`, `aud`, `exp` and `nbf` are checked, with [`CLOCK_SKEW_S`] of
//! slack on the times (against the injected clock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::OidcIssuer;
use crate::deps::Clock;
use crate::protocol::{ApiError, Code};

/// How far a token's `exp` and `nbf` may be off: issuers' and our clocks
/// drift by seconds; a minute is what the specification's users allow.
pub const CLOCK_SKEW_S: i64 = 60;

/// The shortest time between two fetches of one issuer's keys: an unknown
/// key id in a forged token must not make us hammer the issuer.
pub const JWKS_REFETCH_MIN_MS: i64 = 60_000;

/// How long a fetch of an issuer's keys may take before the login is
/// answered `issuer_unavailable`.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest key set read: issuers publish a few keys (a few KiB).
pub const JWKS_BYTES_MAX: usize = 64 * 1024;

/// The longest ID token looked at: real ones are 1 to 2 KiB.
pub const ID_TOKEN_BYTES_MAX: usize = 8 * 1024;

/// The algorithms accepted, and nothing else.
const ALGORITHMS: [(&str, Algorithm); 2] = [("RS256", Algorithm::RS256), ("ES256", Algorithm::ES256)];

/// Who a valid token says the player is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
}

#[derive(Debug, Default)]
struct Keys {
    by_id: HashMap<String, DecodingKey>,
    fetched_ms: Option<i64>,
}

struct Issuer {
    config: OidcIssuer,
    keys: Mutex<Keys>,
    /// One fetch at a time per issuer.
    fetching: tokio::sync::Mutex<()>,
}

/// Every configured issuer, with their keys.
pub struct Verifier {
    issuers: Vec<Issuer>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.issuers.iter().map(|i| i.config.issuer.as_str()).collect();
        f.debug_struct("Verifier").field("issuers", &names).finish()
    }
}

#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    iss: Option<String>,
}

fn refused(code: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl Verifier {
    pub fn new(issuers: &[OidcIssuer], clock: Arc<dyn Clock>) -> anyhow::Result<Verifier> {
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let issuers = issuers
            .iter()
            .map(|c| Issuer {
                config: c.clone(),
                keys: Mutex::new(Keys::default()),
                fetching: tokio::sync::Mutex::new(()),
            })
            .collect();
        Ok(Verifier { issuers, http, clock })
    }

    /// Whether any issuer is configured.
    pub fn enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Checks `token` completely; the error's code says what was wrong.
    pub async fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        if token.len() > ID_TOKEN_BYTES_MAX {
            return Err(refused(Code::IdTokenMalformed, format!("longer than {ID_TOKEN_BYTES_MAX} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(refused(Code::IdTokenMalformed, "not three dot-separated parts"));
        };
        let json = |part: &str| -> Option<serde_json::Value> { serde_json::from_slice(&B64.decode(part).ok()?).ok() };
        let head = json(head).ok_or_else(|| refused(Code::IdTokenMalformed, "the header is not base64url JSON"))?;
        let alg_name = head.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        let Some(&(_, alg)) = ALGORITHMS.iter().find(|(n, _)| *n == alg_name) else {
            return Err(refused(
                Code::IdTokenAlgorithm,
                format!("alg `{alg_name}`: only RS256 and ES256 are accepted"),
            ));
        };
        let peek: Peek = json(body)
            .and_then(|b| serde_json::from_value(b).ok())
            .ok_or_else(|| refused(Code::IdTokenMalformed, "the claims are not base64url JSON"))?;
        let iss = peek.iss.unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| refused(Code::IdTokenIssuer, format!("`{iss}` is not a configured issuer")))?;
        let kid = head
            .get("kid")
            .and_then(|k| k.as_str())
            .ok_or_else(|| refused(Code::IdTokenUnknownKey, "the token names no key (`kid`)"))?;
        let key = self.key(issuer, kid).await?;
        let mut v = Validation::new(alg);
        v.set_audience(&[&issuer.config.audience]);
        v.set_issuer(&[&issuer.config.issuer]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Times are checked below, against the injected clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<IdClaims>(token, &key, &v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => refused(Code::IdTokenSignature, "the signature does not verify"),
            ErrorKind::InvalidAudience => {
                refused(Code::IdTokenAudience, format!("`aud` does not name `{}`", issuer.config.audience))
            }
            ErrorKind::InvalidIssuer => refused(Code::IdTokenIssuer, "`iss` does not match"),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => {
                refused(Code::IdTokenAlgorithm, format!("the key `{kid}` is not a key for {alg_name}"))
            }
            other => refused(Code::IdTokenMalformed, format!("{other:?}")),
        })?;
        let now_s = self.clock.now_ms().div_euclid(1000);
        let c = data.claims;
        if c.exp + CLOCK_SKEW_S < now_s {
            return Err(refused(Code::IdTokenExpired, format!("expired at {} (unix seconds)", c.exp)));
        }
        if c.nbf.is_some_and(|nbf| nbf - CLOCK_SKEW_S > now_s) {
            return Err(refused(Code::IdTokenExpired, "not valid yet (`nbf`)"));
        }
        if c.sub.is_empty() || c.sub.len() > 255 {
            return Err(refused(Code::IdTokenMalformed, "`sub` is empty or longer than 255 bytes"));
        }
        Ok(Verified { issuer: issuer.config.issuer.clone(), subject: c.sub })
    }

    /// The issuer's key `kid`: from the cache, else from a fetch (the first
    /// one, or one at least [`JWKS_REFETCH_MIN_MS`] after the last).
    async fn key(&self, issuer: &Issuer, kid: &str) -> Result<DecodingKey, ApiError> {
        let cached = |i: &Issuer| i.keys.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(kid).cloned();
        if let Some(k) = cached(issuer) {
            return Ok(k);
        }
        let _one = issuer.fetching.lock().await;
        if let Some(k) = cached(issuer) {
            return Ok(k);
        }
        let now = self.clock.now_ms();
        let last = issuer.keys.lock().unwrap_or_else(|p| p.into_inner()).fetched_ms;
        let unknown = || refused(Code::IdTokenUnknownKey, format!("the issuer publishes no key `{kid}`"));
        if last.is_some_and(|at| now - at < JWKS_REFETCH_MIN_MS && at <= now) {
            return Err(unknown());
        }
        let by_id = self.fetch(&issuer.config).await?;
        let mut keys = issuer.keys.lock().unwrap_or_else(|p| p.into_inner());
        *keys = Keys { by_id, fetched_ms: Some(now) };
        keys.by_id.get(kid).cloned().ok_or_else(unknown)
    }

    async fn fetch(&self, issuer: &OidcIssuer) -> Result<HashMap<String, DecodingKey>, ApiError> {
        let unavailable = |why: String| {
            tracing::warn!(issuer = %issuer.issuer, url = %issuer.jwks_url, %why, "cannot fetch the issuer's keys");
            refused(Code::IssuerUnavailable, format!("the issuer's keys could not be fetched: {why}"))
        };
        let mut r = self.http.get(&issuer.jwks_url).send().await.map_err(|e| unavailable(e.to_string()))?;
        if !r.status().is_success() {
            return Err(unavailable(format!("HTTP {}", r.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            if body.len() + chunk.len() > JWKS_BYTES_MAX {
                return Err(unavailable(format!("more than {JWKS_BYTES_MAX} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| unavailable(format!("not a JWKS: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else { continue };
            match DecodingKey::from_jwk(jwk) {
                Ok(k) => {
                    keys.insert(kid.clone(), k);
                }
                Err(e) => tracing::warn!(issuer = %issuer.issuer, %kid, error = %e, "an unusable key in the JWKS"),
            }
        }
        Ok(keys)
    }
}
