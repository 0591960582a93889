//! `citadel gateway`: the front door (docs/gateway.md). A player logs in
//! here (as a guest device, with an OpenID Connect ID token, or, when
//! configured for development, with a bare name), is given a game server
//! and a short-lived game token, and then talks to that server only.
//! Payment providers' notifications come here too (`payments`).
//!
//! A gateway keeps nothing of its own: accounts, identities, the server
//! list and payments are in the world store the game servers share, so
//! several gateways can run side by side behind one address.
//!
//! - [`assign`]: which game server a player goes to.
//! - [`oidc`]: checking ID tokens against issuers' published keys.
//! - [`limits`]: login rate limits.
//! - [`payments`]: `POST /payments/{provider}`, delivery and refunds.
//! - [`signature`]: payment notifications' signatures.

pub mod assign;
pub mod limits;
pub mod oidc;
pub mod payments;
pub mod signature;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use citadel_store::world::{Account, Identity, WorldStore};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{Claims, Signer};
use crate::config::Config;
use crate::deps::{Clock, SystemClock};
use crate::protocol::{ApiError, Code, Fail};

/// The provider name of guest identities.
pub const GUEST: &str = "guest";

/// The provider name of development identities (`[gateway] dev_login`).
pub const DEV: &str = "dev";

/// A guest device's secret: 32 random bytes. Guessing one is hopeless, so
/// its hash needs no stretching against guesses; it is hashed only so that
/// a copy of the world store is not a list of working secrets.
pub const GUEST_SECRET_BYTES: usize = 32;

/// argon2id parameters for guest secrets, stated: 64 KiB, 1 pass, 1 lane
/// (about 10 µs). The secrets are random 256-bit values, not passwords:
/// memory-hard cost buys nothing against guessing them, and a gateway
/// must answer thousands of logins a second per core.
pub const GUEST_HASH_MEMORY_KIB: u32 = 64;
pub const GUEST_HASH_PASSES: u32 = 1;
pub const GUEST_HASH_LANES: u32 = 1;

/// How long a gateway waits for a Retry-After's worth: a client told
/// `no_server` tries again after this many seconds (a server that starts
/// heartbeats within 5 s).
pub const NO_SERVER_RETRY_AFTER_S: u64 = 5;

/// What every gateway handler shares.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub world: Arc<dyn WorldStore>,
    pub titles: Arc<crate::titles::Titles>,
    pub signer: Signer,
    pub clock: Arc<dyn Clock>,
    pub assigner: assign::Assigner,
    pub oidc: oidc::Verifier,
    pub bus: crate::bus::SharedBus,
    per_address: limits::Buckets,
    per_account: limits::Buckets,
    /// A guest hash to check unknown devices against, so that an unknown
    /// device and a wrong secret take the same time.
    decoy: String,
}

type St = State<Arc<Gateway>>;

/// An error answer, with `Retry-After` for the codes that have one.
#[derive(Debug)]
pub struct Refused(pub ApiError, pub Option<u64>);

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Refused {
        Refused(e, None)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut r = Fail::new(self.0).into_response();
        if let Some(s) = self.1 {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}

fn too_many(s: u64, what: &str) -> Refused {
    Refused(ApiError::new(Code::TooManyLogins, format!("too many logins {what}; retry in {s} s")), Some(s))
}

fn internal(e: impl std::fmt::Display) -> Refused {
    Refused(ApiError::new(Code::Internal, e.to_string()), None)
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], Refused> {
    crate::admin::auth::random().map_err(internal)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn guest_params() -> argon2::Params {
    argon2::Params::new(GUEST_HASH_MEMORY_KIB, GUEST_HASH_PASSES, GUEST_HASH_LANES, None)
        .unwrap_or_else(|_| argon2::Params::default())
}

/// An argon2id PHC string of a guest secret.
fn hash_secret(secret: &str) -> Result<String, Refused> {
    crate::admin::auth::phc(secret, guest_params()).map_err(internal)
}

/// Whether `secret` matches `hash` (argon2's own constant-time check).
fn secret_matches(secret: &str, hash: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::password_hash::PasswordHash::new(hash)
        .is_ok_and(|phc| crate::admin::auth::argon2(guest_params()).verify_password(secret.as_bytes(), &phc).is_ok())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], limit: usize) -> Result<T, Refused> {
    Ok(crate::http::parse_json(body, limit)?)
}

impl Gateway {
    /// Counts a login attempt against the address and, when known, the
    /// device or account.
    fn allow(&self, ip: IpAddr, who: Option<&str>) -> Result<(), Refused> {
        let now = self.clock.now_ms();
        self.per_address.take(&ip.to_string(), now).map_err(|s| too_many(s, "from this address"))?;
        match who {
            Some(who) => self.allow_who(who),
            None => Ok(()),
        }
    }

    /// Counts a login attempt against a device or account.
    fn allow_who(&self, who: &str) -> Result<(), Refused> {
        self.per_account.take(who, self.clock.now_ms()).map_err(|s| too_many(s, "for this device or account"))
    }

    fn title_known(&self, title: &str) -> Result<(), Refused> {
        match self.titles.get(title) {
            Some(_) => Ok(()),
            None => Err(ApiError::new(Code::UnknownTitle, format!("no title `{title}`")).into()),
        }
    }

    /// The account's player in `title`, a server for them and a game token:
    /// the answer of every login.
    async fn admit(&self, title: &str, account: &str, mut extra: Value) -> Result<Response, Refused> {
        let now = self.clock.now_ms();
        let fresh = format!("p{}", hex(&random::<10>()?));
        let player = self.world.enter(account, title, &fresh, now).await.map_err(internal)?;
        if let Some(r) = self.world.restriction(title, &player).await.map_err(internal)? {
            if r.banned(now) {
                return Err(crate::session::banned(&r).into());
            }
        }
        let server = self.assigner.pick(title, &player).await.map_err(internal)?.ok_or_else(|| {
            let mut e = ApiError::new(Code::NoServer, format!("no live game server serves `{title}` now"));
            if extra.as_object().is_some_and(|o| !o.is_empty()) {
                // A new device keeps its credentials: it retries with them.
                e = e.details(extra.clone());
            }
            Refused(e, Some(NO_SERVER_RETRY_AFTER_S))
        })?;
        let expires = now + self.config.gateway.game_token_ttl_seconds as i64 * 1000;
        let token = self.signer.issue(&Claims { t: title.to_string(), p: player.clone(), e: expires, i: now });
        let answer = json!({
            "account": account,
            "title": title,
            "player": player,
            "server": { "id": server.id, "address": server.address },
            "token": token,
            "expires_at_ms": expires,
        });
        if let (Some(e), Value::Object(a)) = (extra.as_object_mut(), answer) {
            e.extend(a);
        }
        Ok((StatusCode::OK, axum::Json(extra)).into_response())
    }

    /// Refuses when no OpenID Connect issuer is configured.
    fn oidc_on(&self) -> Result<(), Refused> {
        if self.oidc.enabled() {
            return Ok(());
        }
        Err(ApiError::new(Code::LoginMethodDisabled, "no OpenID Connect issuer is configured").into())
    }

    /// The account `subject` at `provider` logs in to: a new one at its
    /// first login (a racing first login finds the one the other made).
    async fn account_for(&self, provider: &str, subject: &str) -> Result<String, Refused> {
        if let Some(i) = self.world.identity(provider, subject).await.map_err(internal)? {
            return Ok(i.account);
        }
        let identity = Identity {
            provider: provider.to_string(),
            subject: subject.to_string(),
            account: String::new(),
            secret_hash: String::new(),
            linked_ms: self.clock.now_ms(),
        };
        if let Some(made) = self.new_account(identity).await? {
            return Ok(made);
        }
        let found = self.world.identity(provider, subject).await.map_err(internal)?;
        Ok(found.ok_or_else(|| internal("an identity vanished"))?.account)
    }

    /// A new account with its first identity.
    async fn new_account(&self, identity: Identity) -> Result<Option<String>, Refused> {
        let now = self.clock.now_ms();
        let account =
            Account { id: format!("a{}", hex(&random::<16>()?)), created_ms: now, last_login_ms: now, flagged: false };
        let made = self
            .world
            .create_account(&account, &Identity { account: account.id.clone(), ..identity })
            .await
            .map_err(internal)?;
        Ok(made.then_some(account.id))
    }

    /// The account a guest device's credentials open: the same refusal for
    /// an unknown device and a wrong secret, after the same work.
    async fn guest_account(&self, device: &str, secret: &str) -> Result<String, Refused> {
        let bad = || Refused::from(ApiError::new(Code::BadCredentials, "unknown device or wrong secret"));
        if device.is_empty() || device.len() > 64 || secret.len() > 128 {
            return Err(bad());
        }
        let found = self.world.identity(GUEST, device).await.map_err(internal)?;
        let hash = found.as_ref().map_or(self.decoy.as_str(), |i| i.secret_hash.as_str());
        // About 10 µs (GUEST_HASH_*): on this thread, not worth a handoff.
        let matches = secret_matches(secret, hash);
        match found {
            Some(i) if matches => Ok(i.account),
            _ => Err(bad()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestBody {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

/// `POST /v1/{title}/login/guest`: `{}` makes a new device (and account);
/// `{device, secret}` logs an existing one back in.
async fn guest(
    State(g): St,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(title): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    g.title_known(&title)?;
    if !g.config.gateway.guest {
        return Err(ApiError::new(Code::LoginMethodDisabled, "guest logins are not configured").into());
    }
    let req: GuestBody = parse(&body, g.config.limits.message_bytes_max)?;
    match (req.device, req.secret) {
        (None, None) => {
            g.allow(from.ip(), None)?;
            let device = format!("d{}", hex(&random::<16>()?));
            let secret = B64.encode(random::<GUEST_SECRET_BYTES>()?);
            let hash = hash_secret(&secret)?;
            let now = g.clock.now_ms();
            let identity = Identity {
                provider: GUEST.into(),
                subject: device.clone(),
                account: String::new(),
                secret_hash: hash,
                linked_ms: now,
            };
            let account = g.new_account(identity).await?.ok_or_else(|| internal("a new device id was taken"))?;
            g.admit(&title, &account, json!({ "device": device, "secret": secret, "new": true })).await
        }
        (Some(device), Some(secret)) => {
            g.allow(from.ip(), Some(&format!("{GUEST} {device}")))?;
            let account = g.guest_account(&device, &secret).await?;
            g.admit(&title, &account, json!({})).await
        }
        _ => Err(ApiError::new(Code::BadRequest, "send both device and secret, or neither (a new device)").into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcBody {
    id_token: String,
}

/// `POST /v1/{title}/login/oidc`: an ID token from a configured issuer; a
/// first login with it makes an account.
async fn oidc_login(
    State(g): St,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(title): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    g.title_known(&title)?;
    g.oidc_on()?;
    g.allow(from.ip(), None)?;
    let req: OidcBody = parse(&body, g.config.limits.message_bytes_max)?;
    let who = g.oidc.verify(&req.id_token).await?;
    g.allow_who(&format!("{} {}", who.issuer, who.subject))?;
    let account = g.account_for(&who.issuer, &who.subject).await?;
    g.admit(&title, &account, json!({})).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    device: String,
    secret: String,
    id_token: String,
}

/// `POST /v1/{title}/link`: a guest device's account takes an OpenID
/// Connect identity, so that the player logs in with it anywhere.
async fn link(
    State(g): St,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(title): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    g.title_known(&title)?;
    g.oidc_on()?;
    let req: LinkBody = parse(&body, g.config.limits.message_bytes_max)?;
    g.allow(from.ip(), Some(&format!("{GUEST} {}", req.device)))?;
    let account = g.guest_account(&req.device, &req.secret).await?;
    let who = g.oidc.verify(&req.id_token).await?;
    let identity = Identity {
        provider: who.issuer.clone(),
        subject: who.subject.clone(),
        account: account.clone(),
        secret_hash: String::new(),
        linked_ms: g.clock.now_ms(),
    };
    if !g.world.link_identity(&identity).await.map_err(internal)? {
        let holder = g.world.identity(&who.issuer, &who.subject).await.map_err(internal)?;
        if holder.is_none_or(|h| h.account != account) {
            return Err(ApiError::new(
                Code::IdentityTaken,
                "that identity is linked to another account; log in with it",
            )
            .into());
        }
    }
    g.admit(&title, &account, json!({ "linked": { "issuer": who.issuer, "subject": who.subject } })).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevBody {
    player: String,
}

/// `POST /v1/{title}/login/dev`: a bare name, for local development.
async fn dev(
    State(g): St,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(title): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    g.title_known(&title)?;
    if !g.config.gateway.dev_login {
        return Err(ApiError::new(Code::LoginMethodDisabled, "development logins are not configured").into());
    }
    let req: DevBody = parse(&body, g.config.limits.message_bytes_max)?;
    ApiError::check_player_id(&req.player)?;
    g.allow(from.ip(), None)?;
    let account = g.account_for(DEV, &req.player).await?;
    // The development player keeps the name given.
    g.world.title_player(&account, &title, &req.player).await.map_err(internal)?;
    g.admit(&title, &account, json!({})).await
}

/// The gateway's routes.
pub fn app(g: Arc<Gateway>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/{title}/login/guest", post(guest))
        .route("/v1/{title}/login/oidc", post(oidc_login))
        .route("/v1/{title}/login/dev", post(dev))
        .route("/v1/{title}/link", post(link))
        .route("/payments/{provider}", post(payments::notify))
        .layer(DefaultBodyLimit::max(g.config.limits.message_bytes_max * 4))
        .with_state(g)
}

/// Runs a gateway until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`run`] with an injected clock (tests move time by hand).
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    config.check()?;
    let signer = crate::signer(&config)?;
    let world: Arc<dyn WorldStore> = crate::open_world(&config).await?;
    let titles = Arc::new(crate::titles::Titles::open(&config.titles, None).await?);
    let profiler = Arc::new(crate::profile::Profiler::new(false));
    let bus = crate::bus::connect(&config, &profiler).await?;
    let oidc = oidc::Verifier::new(&config.gateway.oidc, clock.clone()).context("the OpenID Connect client")?;
    let g = config.gateway.clone();
    let decoy = hash_secret("no device has this secret").map_err(|r| anyhow::anyhow!(r.0.message))?;
    let gateway = Arc::new(Gateway {
        assigner: assign::Assigner::new(world.clone(), clock.clone()),
        per_address: limits::Buckets::new(g.logins_per_address_per_minute),
        per_account: limits::Buckets::new(g.logins_per_account_per_minute),
        config,
        world,
        titles,
        signer,
        clock,
        oidc,
        bus,
        decoy,
    });
    let stop = CancellationToken::new();
    // Products change with the titles' data: reloaded as the servers do.
    if gateway.config.watch_titles {
        crate::watch::spawn(gateway.titles.clone(), &gateway.config.titles, stop.clone())?;
    }
    crate::watch::on_sighup(gateway.titles.clone(), stop.clone())?;
    payments::spawn_sweep(gateway.clone(), stop.clone());
    let limits = crate::listener::ConnLimits::of(&gateway.config.limits);
    let addr = listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string());
    tracing::info!(%addr, "the gateway listens");
    let graceful = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        graceful.cancel();
    });
    crate::listener::serve(listener, limits, Arc::new(crate::listener::Closes::default()), app(gateway), stop).await;
    tracing::info!("the gateway stopped");
    Ok(())
}
