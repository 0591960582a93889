//! Who may use the admin API and console: a bearer token (scripts,
//! `citadel-edit push`) or a console login (name and password from
//! config, then a session cookie). Every admin request carries a [`Who`]
//! that the audit log names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One admin console user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    /// An argon2id PHC string (`$argon2id$v=19$m=...`) from `citadel
    /// hash-password`; a `pbkdf2-sha256$<iterations>$<salt>$<hash>` made by
    /// versions before 2026-12-02 still works.
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

/// Argon2id's cost for new hashes: 19 MiB of memory, 2 passes, 1 lane,
/// the OWASP password storage recommendation (about 30 ms per login on one
/// core here); memory-hard, so a leaked config costs an attacker with
/// GPUs as much per guess as it costs us per login.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_PASSES: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

/// The most a configured argon2 hash may ask for: above this, every login
/// would hold a CPU for seconds or take a large share of memory.
const ARGON2_MEMORY_KIB_MAX: u32 = 256 * 1024;
const ARGON2_PASSES_MAX: u32 = 10;
const ARGON2_LANES_MAX: u32 = 4;

/// Rounds a legacy PBKDF2 hash may ask for, for the same reason.
const PBKDF2_ROUNDS_MAX: u32 = 10_000_000;

/// The admin making a request: a console user's name, or `token` for the
/// bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who(pub String);

/// A console user's password hash, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// An argon2id PHC string, checked at parse time.
    Argon2(String),
    /// `pbkdf2-sha256$<rounds>$<salt>$<hash>`, made before 2026-12-02.
    Pbkdf2 { rounds: u32, salt: Vec<u8>, hash: Vec<u8> },
    /// The admin token itself (no users configured): random and long,
    /// nothing to stretch.
    Exact(Vec<u8>),
}

/// An argon2id PHC string of `secret` with `params` and a random salt.
pub(crate) fn phc(secret: &str, params: argon2::Params) -> std::io::Result<String> {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::encode_b64(&random::<16>()?).map_err(std::io::Error::other)?;
    Ok(argon2(params).hash_password(secret.as_bytes(), &salt).map_err(std::io::Error::other)?.to_string())
}

/// argon2id, version 0x13, with `params` (console passwords; guest secrets).
pub(crate) fn argon2(params: argon2::Params) -> argon2::Argon2<'static> {
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

impl PasswordHash {
    pub fn parse(text: &str) -> Option<PasswordHash> {
        if text.starts_with("$argon2id$") {
            let phc = argon2::password_hash::PasswordHash::new(text).ok()?;
            let params = argon2::Params::try_from(&phc).ok()?;
            let sane = params.m_cost() <= ARGON2_MEMORY_KIB_MAX
                && params.t_cost() <= ARGON2_PASSES_MAX
                && params.p_cost() <= ARGON2_LANES_MAX
                && phc.hash.is_some_and(|h| h.len() >= 16);
            return sane.then(|| PasswordHash::Argon2(text.to_string()));
        }
        let mut parts = text.split('$');
        if parts.next()? != "pbkdf2-sha256" {
            return None;
        }
        let rounds: u32 = parts.next()?.parse().ok().filter(|r| (1..=PBKDF2_ROUNDS_MAX).contains(r))?;
        let salt = B64.decode(parts.next()?).ok().filter(|s| s.len() >= 8)?;
        let hash = B64.decode(parts.next()?).ok().filter(|h| h.len() == 32)?;
        parts.next().is_none().then_some(PasswordHash::Pbkdf2 { rounds, salt, hash })
    }

    /// A new argon2id hash of `password` with a random salt.
    pub fn make(password: &str) -> std::io::Result<String> {
        let params =
            argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None).map_err(std::io::Error::other)?;
        phc(password, params)
    }

    /// Whether this is a hash made before argon2id (worth replacing).
    pub fn is_legacy(&self) -> bool {
        matches!(self, PasswordHash::Pbkdf2 { .. })
    }

    pub fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHash::Argon2(text) => {
                use argon2::PasswordVerifier;
                // Parsed when configured; the parameters come from the hash.
                argon2::password_hash::PasswordHash::new(text)
                    .is_ok_and(|phc| argon2::Argon2::default().verify_password(password.as_bytes(), &phc).is_ok())
            }
            PasswordHash::Pbkdf2 { rounds, salt, hash } => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, *rounds, &mut out);
                same(&out, hash)
            }
            PasswordHash::Exact(secret) => same(password.as_bytes(), secret),
        }
    }
}

/// Bytes from the operating system's randomness (admin sessions and
/// salts; the gateway's devices, secrets and ids).
pub(crate) fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(std::io::Error::other)?;
    Ok(out)
}

/// Compares in constant time (`subtle`), so response times say nothing
/// about how much of a guess was right.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// A hash to check unknown names against: the same work as a real one, so
/// timing does not tell which names exist. Made once, at the first need.
fn decoy() -> &'static PasswordHash {
    static DECOY: std::sync::OnceLock<PasswordHash> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        PasswordHash::make("no user has this password")
            .ok()
            .and_then(|t| PasswordHash::parse(&t))
            .unwrap_or(PasswordHash::Exact(Vec::new()))
    })
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
            parsed.push(("admin".into(), PasswordHash::Exact(token.as_bytes().to_vec())));
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
                let _ = decoy().verify(password);
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

    /// `citadel hash-password` of "correct horse" before 2026-12-02.
    const LEGACY: &str = "pbkdf2-sha256$100000$7f71l+RG3cymbitGLPlq4w$vk23AaGBAjJjmkohPIp6Bnaa+gc/zEtTBgOkjWR5O58";

    #[test]
    fn new_hashes_are_argon2id_and_verify_their_password_only() {
        let text = PasswordHash::make("correct horse").unwrap();
        assert!(text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{text}");
        let h = PasswordHash::parse(&text).unwrap();
        assert!(!h.is_legacy());
        assert!(h.verify("correct horse"));
        assert!(!h.verify("correct horse "));
        assert_ne!(PasswordHash::make("correct horse").unwrap(), text, "a fresh salt each time");
    }

    #[test]
    fn hashes_made_before_argon2id_still_verify() {
        let h = PasswordHash::parse(LEGACY).unwrap();
        assert!(h.is_legacy());
        assert!(h.verify("correct horse"));
        assert!(!h.verify("correct hors"));
    }

    #[test]
    fn malformed_or_too_costly_hashes_are_refused() {
        let costly = "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        let weak_algorithm = "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        let fine = costly.replace("m=1048576", "m=19456");
        assert!(PasswordHash::parse(&fine).is_some(), "the same hash at a sane cost parses: {fine}");
        for bad in [
            "",
            "sha256$1$abc$def",
            "pbkdf2-sha256$0$c2FsdHNhbHQ$",
            "pbkdf2-sha256$x$y$z",
            &format!("{LEGACY}$x"),
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$argon2id$garbage",
            costly,
            weak_algorithm,
        ] {
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
