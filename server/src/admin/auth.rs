//! Who may use the admin API and console: a bearer token (scripts,
//! `citadel-edit push`) or a console login (name and password from
//! config, then a session cookie). Every admin request carries a [`Who`]
//! that the audit log names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One admin console user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    /// `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64), from `citadel hash-password`.
    pub password_hash: String,
}

/// The name of the console's session cookie.
pub const COOKIE: &str = "citadel_admin";

/// How long a console login lasts: a working day, so that a forgotten
/// browser tab does not stay an open door.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Console logins held at once; the oldest is dropped beyond this (each is
/// a few dozen bytes, but a login loop must not grow memory).
pub const SESSIONS_MAX: usize = 1024;

/// Failed console logins per minute per server before further attempts
/// are refused outright (`429`): slows password guessing to a crawl.
pub const LOGIN_FAILURES_PER_MINUTE: usize = 10;

/// PBKDF2 rounds for new password hashes: about 50 ms per login on one
/// core, which costs an attacker with a leaked config as much per guess.
pub const PBKDF2_ROUNDS: u32 = 100_000;

/// Rounds a configured hash may ask for: above this, every login would
/// hold a CPU for seconds.
const PBKDF2_ROUNDS_MAX: u32 = 10_000_000;

/// The admin making a request: a console user's name, or `token` for the
/// bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who(pub String);

/// A parsed `pbkdf2-sha256$<rounds>$<salt>$<hash>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    rounds: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl PasswordHash {
    pub fn parse(text: &str) -> Option<PasswordHash> {
        let mut parts = text.split('$');
        if parts.next()? != "pbkdf2-sha256" {
            return None;
        }
        let rounds: u32 = parts.next()?.parse().ok().filter(|r| (1..=PBKDF2_ROUNDS_MAX).contains(r))?;
        let salt = B64.decode(parts.next()?).ok().filter(|s| s.len() >= 8)?;
        let hash = B64.decode(parts.next()?).ok().filter(|h| h.len() == 32)?;
        parts.next().is_none().then_some(PasswordHash { rounds, salt, hash })
    }

    /// A new hash of `password` with a random salt.
    pub fn make(password: &str) -> std::io::Result<String> {
        let salt: [u8; 16] = random()?;
        let hash = pbkdf2(password.as_bytes(), &salt, PBKDF2_ROUNDS);
        Ok(format!("pbkdf2-sha256${PBKDF2_ROUNDS}${}${}", B64.encode(salt), B64.encode(hash)))
    }

    pub fn verify(&self, password: &str) -> bool {
        same(&pbkdf2(password.as_bytes(), &self.salt, self.rounds), &self.hash)
    }
}

/// Bytes from the operating system's randomness.
fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block (RFC 8018).
fn pbkdf2(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mac = || Hmac::<Sha256>::new_from_slice(password).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    let mut m = mac();
    m.update(salt);
    m.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = m.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..rounds {
        let mut m = mac();
        m.update(&u);
        u = m.finalize().into_bytes().into();
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// Compares without stopping at the first difference, so response times
/// say nothing about how much of a guess was right.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Login {
    name: String,
    expires: Instant,
}

/// The admin token, the console's users and their logins.
pub struct AdminAuth {
    token: String,
    users: Vec<(String, PasswordHash)>,
    logins: Mutex<HashMap<String, Login>>,
    failures: Mutex<Vec<Instant>>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAuth(..)")
    }
}

/// Why a console login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    Wrong,
    TooMany,
    /// No randomness for a session id.
    Random,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AdminAuth {
    /// `users` from config (checked there); without any, `admin` logs in
    /// with the admin token.
    pub fn new(token: String, users: &[AdminUser]) -> AdminAuth {
        let mut parsed: Vec<_> =
            users.iter().filter_map(|u| Some((u.name.clone(), PasswordHash::parse(&u.password_hash)?))).collect();
        if parsed.is_empty() {
            // One round: the token is random and long, nothing to stretch.
            let salt = b"citadel-admin-token".to_vec();
            let hash = pbkdf2(token.as_bytes(), &salt, 1).to_vec();
            parsed.push(("admin".into(), PasswordHash { rounds: 1, salt, hash }));
        }
        AdminAuth { token, users: parsed, logins: Mutex::new(HashMap::new()), failures: Mutex::new(Vec::new()) }
    }

    pub fn token_matches(&self, given: &str) -> bool {
        same(given.as_bytes(), self.token.as_bytes())
    }

    /// Checks a name and password; on success returns a new session id.
    /// Runs the password hash: call it off the async threads.
    pub fn login(&self, name: &str, password: &str) -> Result<String, LoginError> {
        {
            let mut failures = lock(&self.failures);
            let minute_ago = Instant::now() - Duration::from_secs(60);
            failures.retain(|t| *t > minute_ago);
            if failures.len() >= LOGIN_FAILURES_PER_MINUTE {
                return Err(LoginError::TooMany);
            }
        }
        let ok = match self.users.iter().find(|(n, _)| n == name) {
            Some((_, hash)) => hash.verify(password),
            None => {
                // The same work for an unknown name, so timing does not
                // tell which names exist.
                let _ = pbkdf2(password.as_bytes(), b"unknown-user-salt", PBKDF2_ROUNDS.min(self.rounds_max()));
                false
            }
        };
        if !ok {
            lock(&self.failures).push(Instant::now());
            return Err(LoginError::Wrong);
        }
        let id: String = random::<32>().map_err(|_| LoginError::Random)?.iter().map(|b| format!("{b:02x}")).collect();
        let mut logins = lock(&self.logins);
        let now = Instant::now();
        logins.retain(|_, l| l.expires > now);
        if logins.len() >= SESSIONS_MAX {
            if let Some(oldest) = logins.iter().min_by_key(|(_, l)| l.expires).map(|(k, _)| k.clone()) {
                logins.remove(&oldest);
            }
        }
        logins.insert(id.clone(), Login { name: name.to_string(), expires: now + SESSION_TTL });
        Ok(id)
    }

    fn rounds_max(&self) -> u32 {
        self.users.iter().map(|(_, h)| h.rounds).max().unwrap_or(1)
    }

    /// The user of a live console session.
    pub fn session(&self, id: &str) -> Option<Who> {
        let logins = lock(&self.logins);
        logins.get(id).filter(|l| l.expires > Instant::now()).map(|l| Who(l.name.clone()))
    }

    pub fn logout(&self, id: &str) {
        lock(&self.logins).remove(id);
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_rfc_7914_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1.
        let out = pbkdf2(b"passwd", b"salt", 1);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex[..32], "55ac046e56e3089fec1691c22544b605");
    }

    #[test]
    fn hashes_verify_their_password_only() {
        let text = PasswordHash::make("correct horse").unwrap();
        let h = PasswordHash::parse(&text).unwrap();
        assert!(h.verify("correct horse"));
        assert!(!h.verify("correct horse "));
        for bad in ["", "sha256$1$abc$def", "pbkdf2-sha256$0$c2FsdHNhbHQ$", "pbkdf2-sha256$x$y$z", &format!("{text}$x")]
        {
            assert!(PasswordHash::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn logins_open_sessions_and_guessing_is_throttled() {
        let users = [AdminUser { name: "ops".into(), password_hash: PasswordHash::make("pw").unwrap() }];
        let auth = AdminAuth::new("t".repeat(20), &users);
        let id = auth.login("ops", "pw").unwrap();
        assert_eq!(auth.session(&id), Some(Who("ops".into())));
        assert_eq!(auth.session("forged"), None);
        auth.logout(&id);
        assert_eq!(auth.session(&id), None);
        for _ in 0..LOGIN_FAILURES_PER_MINUTE {
            assert_eq!(auth.login("ops", "guess"), Err(LoginError::Wrong));
        }
        assert_eq!(auth.login("ops", "pw"), Err(LoginError::TooMany), "even the right password, for a minute");
        let token_only = AdminAuth::new("t".repeat(20), &[]);
        assert!(token_only.login("admin", &"t".repeat(20)).is_ok(), "without users, admin logs in with the token");
    }
}
