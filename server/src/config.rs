//! Server configuration: defaults, then a TOML file, then environment
//! variables, then command-line flags (each overrides the one before).
//! Every option is documented in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Limits on what one client or player may use. Each has a reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open HTTP and WebSocket connections at once. 20,000 leaves headroom
    /// over the 10,000 players per core we aim for on one server.
    pub connections_max: usize,
    /// Bytes in one request body or WebSocket message. Actions are tiny
    /// (under 1 KiB); 16 KiB bounds the parser's work per message.
    pub message_bytes_max: usize,
    /// Requests waiting for one player's session. A client that queues more
    /// than this is not waiting for answers.
    pub session_queue_max: usize,
    /// Requests per second one player may send, with bursts up to twice
    /// that. Human play is under 5 per second.
    pub requests_per_second_max: u32,
    /// WebSocket read buffer per connection. The 128 KiB default costs
    /// about 13x the memory at 10,000 connections; messages are small.
    pub ws_read_buffer_bytes: usize,
    /// Players held in memory at once; logins beyond it get `server_full`.
    pub sessions_max: usize,
    /// Open connections from one IP address. Without it, one client
    /// holding half-sent requests fills `connections_max` and locks every
    /// other player out; 200 leaves room for many players behind one NAT.
    pub connections_per_address_max: usize,
    /// Seconds a client has to send a request's headers, counted from the
    /// connection's start or the end of the previous answer: so it is also
    /// how long an idle keep-alive connection stays open. A request's
    /// headers are a few hundred bytes; 10 s covers the worst mobile link.
    pub request_header_seconds_max: u64,
    /// Seconds a client has to send a request's body once its headers are
    /// in (answered `request_timeout`, 408, and closed), plus a second per
    /// 256 KiB it declares (a 20 MiB title push over a slow link). Game
    /// requests are at most `message_bytes_max`: 10 s covers them, and
    /// keeps a half-sent body from holding a slot.
    pub request_body_seconds_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 20_000,
            message_bytes_max: 16 * 1024,
            session_queue_max: 64,
            requests_per_second_max: 20,
            ws_read_buffer_bytes: 4 * 1024,
            sessions_max: 50_000,
            connections_per_address_max: 200,
            request_header_seconds_max: 10,
            request_body_seconds_max: 10,
        }
    }
}

pub use crate::admin::auth::AdminUser;

/// The message bus between game servers on NATS (`[nats]`): chat, map
/// updates, wake-ups and cluster-wide admin operations reach every server
/// sharing it. Without it the bus is in-process: one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Where NATS is, e.g. `nats://10.0.0.5:4222` (several, comma-separated,
    /// for a NATS cluster).
    pub url: String,
    /// A NATS credentials file (`.creds`: a user JWT and its key), if the
    /// NATS server requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// The first token of every subject this deployment uses, so that
    /// several deployments (staging, production) can share one NATS.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Copies of the journal stream JetStream keeps (with
    /// `journal_store = "jetstream"`): 1 on a single NATS server; 3 in
    /// production (a NATS cluster of three or more), so that losing a NATS
    /// machine loses no record either.
    #[serde(default = "default_journal_replicas")]
    pub journal_replicas: usize,
}

fn default_journal_replicas() -> usize {
    1
}

/// `citadel gateway` (`[gateway]`, docs/gateway.md): the front door where
/// players log in and are given a game server. It shares `data_dir` (or
/// `[mongodb]`), `titles`, `token_secret` and `[nats]` with the game servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address and port the gateway listens on.
    pub listen: SocketAddr,
    /// Accept guest logins: a new device gets an account and a secret.
    pub guest: bool,
    /// Accept logins with a bare player name, for local development only:
    /// anybody can then play as anybody.
    pub dev_login: bool,
    /// How long a game token lasts: the client logs in at its game server
    /// with it at once.
    pub game_token_ttl_seconds: u64,
    /// Logins from one IP address per minute (many players share a
    /// carrier's address; see docs/gateway.md).
    pub logins_per_address_per_minute: u32,
    /// Logins of one guest device or platform identity per minute.
    pub logins_per_account_per_minute: u32,
    /// OpenID Connect issuers whose ID tokens log players in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<OidcIssuer>,
    /// Payment providers whose signed notifications grant purchases
    /// (`POST /payments/{name}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub payments: Vec<PaymentProvider>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7060)),
            guest: true,
            dev_login: false,
            game_token_ttl_seconds: 60,
            logins_per_address_per_minute: crate::gateway::limits::LOGINS_PER_ADDRESS_PER_MINUTE,
            logins_per_account_per_minute: crate::gateway::limits::LOGINS_PER_ACCOUNT_PER_MINUTE,
            oidc: Vec::new(),
            payments: Vec::new(),
        }
    }
}

/// One OpenID Connect issuer (`[[gateway.oidc]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// The issuer exactly as its tokens' `iss` says, e.g. `https://accounts.google.com`.
    pub issuer: String,
    /// This game's client id at the issuer: tokens must name it in `aud`.
    pub audience: String,
    /// Where the issuer publishes its signing keys (its `jwks_uri`).
    pub jwks_url: String,
}

/// One payment provider (`[[gateway.payments]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentProvider {
    /// The name in the notification URL: `POST /payments/{name}`.
    pub name: String,
    /// The secrets notifications are signed with: the current one, and the
    /// one it replaces while a rotation lasts.
    pub secrets: Vec<String>,
}

/// Where the journal keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStore {
    /// Segment files in the server's folder (`server_dir/journal`): the
    /// embedded default. A takeover by another server reads them only on
    /// the same machine; a disk lost for good loses what they held.
    #[default]
    File,
    /// A stream on NATS JetStream (needs `[nats]`): any server takes any
    /// player over, even when the machine that held them is gone.
    Jetstream,
}

fn default_subject_prefix() -> String {
    "citadel".into()
}

/// Everything `citadel serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Folder for player files and the server's own files.
    pub data_dir: PathBuf,
    /// Folder holding one folder per title.
    pub titles: PathBuf,
    /// This server's own files: its journal and its identity. Default
    /// `<data_dir>/server`. Servers sharing a `data_dir` (on one machine)
    /// each need their own; a second process on the same one is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_dir: Option<PathBuf>,
    /// Secret for signing session tokens. When absent, a random secret is
    /// created in `data_dir/token-secret` on first start and kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// The secret `token_secret` replaced, during a rotation: tokens it
    /// signed are still accepted (new ones are signed with `token_secret`
    /// only). Remove it once the longest token lifetime has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_previous: Option<String>,
    /// Bearer token for the admin API (`/admin/api/`). When absent, a
    /// random token is created in `data_dir/admin-token` on first start and
    /// kept: read it from there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Who may log in to the admin console (`/admin/`), each with a
    /// password hash made by `citadel hash-password`. When empty, the one
    /// user `admin` logs in with the admin token as password.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_users: Vec<AdminUser>,
    /// Reload a title when a file of its folder changes (validated first;
    /// see docs/operations.md). SIGHUP and the admin API reload either way.
    pub watch_titles: bool,
    /// Accept `login` with a bare player name (embedded and test setups).
    /// When not set: on with the embedded world store and bus (one
    /// server, `citadel serve` on a fresh clone), off with `[mongodb]` or
    /// `[nats]` (a fleet, where players log in through the gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_login: Option<bool>,
    /// How long a session token stays valid.
    pub token_ttl_seconds: u64,
    /// How often a session with unsaved changes is saved.
    pub save_interval_seconds: u64,
    /// A session with no request for this long is saved and closed.
    pub idle_timeout_seconds: u64,
    /// How long a player's lock lasts without renewal. A server that dies
    /// holding players frees them after this long; sessions renew at a
    /// third of it.
    pub lock_ttl_seconds: u64,
    /// How long a login (or a request starting a session) waits for a
    /// player lock held by another server before answering
    /// `player_locked`. Covers a binary upgrade, where the old process
    /// saves and releases players just after they reconnect to the new one.
    pub login_lock_wait_seconds: u64,
    /// Journal every operation and acknowledge it only once on disk. Turn
    /// off only to measure what the journal costs: without it a crash
    /// loses every action since each player's last save.
    pub journal: bool,
    /// Where the journal's records live: `"file"` (default) or
    /// `"jetstream"` (NATS JetStream, with `[nats]`; see docs/operations.md).
    pub journal_store: JournalStore,
    /// How player files (and their snapshots) are written: `"msgpack+lz4"`
    /// (default), `"msgpack"`, `"json"` or `"json+lz4"`. Every file
    /// names its format in a header, so files of every format (and plain
    /// JSON from before headers) keep loading whatever this says; a file
    /// is rewritten in this format at its next save.
    pub player_file_format: citadel_runtime::FileFormat,
    /// Time every entry point (routes, messages, actions, storage, journal
    /// commits, world store calls) for `/metrics` and the admin API. Turn off only to measure
    /// what profiling costs.
    pub profiling: bool,
    /// A request slower than this is logged with the time it spent in each
    /// stage (queued, rules, script, world, journal) and kept for the admin API.
    /// The default is the hard latency limit players notice.
    pub slow_request_ms: u64,
    /// Keep the world store (player locks; later clans, top scores, the
    /// map) in MongoDB instead of `data_dir/world.sqlite3`: for servers on
    /// several machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<citadel_store::world::MongoConfig>,
    /// Keep player files in S3 instead of `data_dir/players`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<citadel_store::s3::S3Config>,
    /// Share the message bus with other game servers over NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsConfig>,
    pub limits: Limits,
    /// Where clients reach this server, as the gateway hands it out
    /// (`http://10.0.0.5:7070`, `https://s1.example.com`). Default: the
    /// address it listens on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// `citadel gateway`'s own options.
    pub gateway: GatewayConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("var/data"),
            titles: PathBuf::from("titles"),
            server_dir: None,
            token_secret: None,
            token_secret_previous: None,
            admin_token: None,
            admin_users: Vec::new(),
            watch_titles: true,
            dev_login: None,
            token_ttl_seconds: 24 * 3600,
            save_interval_seconds: 30,
            idle_timeout_seconds: 300,
            lock_ttl_seconds: 60,
            login_lock_wait_seconds: 10,
            journal: true,
            journal_store: JournalStore::File,
            // The fastest to log in with, and the smallest (docs/benchmarks.md,
            // Player file formats).
            player_file_format: citadel_runtime::FileFormat::MSGPACK_LZ4,
            profiling: true,
            slow_request_ms: 200,
            mongodb: None,
            s3: None,
            nats: None,
            limits: Limits::default(),
            public_address: None,
            gateway: GatewayConfig::default(),
        }
    }
}

/// The environment variables `citadel serve` reads, with the option each sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("CITADEL_LISTEN", "listen"),
    ("CITADEL_DATA_DIR", "data_dir"),
    ("CITADEL_TITLES", "titles"),
    ("CITADEL_SERVER_DIR", "server_dir"),
    ("CITADEL_TOKEN_SECRET", "token_secret"),
    ("CITADEL_TOKEN_SECRET_PREVIOUS", "token_secret_previous"),
    ("CITADEL_DEV_LOGIN", "dev_login"),
    ("CITADEL_ADMIN_TOKEN", "admin_token"),
    ("CITADEL_WATCH_TITLES", "watch_titles"),
    ("CITADEL_MONGODB_URI", "mongodb.uri"),
    ("CITADEL_MONGODB_DATABASE", "mongodb.database"),
    ("CITADEL_S3_BUCKET", "s3.bucket"),
    ("CITADEL_S3_PREFIX", "s3.prefix"),
    ("CITADEL_S3_REGION", "s3.region"),
    ("CITADEL_S3_ENDPOINT", "s3.endpoint"),
    ("AWS_ACCESS_KEY_ID", "s3.access_key_id"),
    ("AWS_SECRET_ACCESS_KEY", "s3.secret_access_key"),
    ("CITADEL_NATS_URL", "nats.url"),
    ("CITADEL_NATS_PREFIX", "nats.subject_prefix"),
];

impl Config {
    /// Whether `login` takes a bare player name: as configured, else only
    /// on the embedded defaults (no `[mongodb]`, no `[nats]`).
    pub fn dev_login(&self) -> bool {
        self.dev_login.unwrap_or(self.mongodb.is_none() && self.nats.is_none())
    }

    /// Where this server keeps its journal and identity.
    pub fn server_dir(&self) -> PathBuf {
        self.server_dir.clone().unwrap_or_else(|| self.data_dir.join("server"))
    }

    /// Defaults overridden by the TOML file at `path`, if given.
    pub fn from_file(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
            }
        }
    }

    /// Applies `CITADEL_*` environment variables (see [`ENV_VARS`]).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = get("CITADEL_LISTEN") {
            self.listen = v.parse().with_context(|| format!("CITADEL_LISTEN={v} is not ADDR:PORT"))?;
        }
        if let Some(v) = get("CITADEL_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("CITADEL_TITLES") {
            self.titles = v.into();
        }
        if let Some(v) = get("CITADEL_SERVER_DIR") {
            self.server_dir = Some(v.into());
        }
        if let Some(v) = get("CITADEL_TOKEN_SECRET") {
            self.token_secret = Some(v);
        }
        if let Some(v) = get("CITADEL_TOKEN_SECRET_PREVIOUS") {
            self.token_secret_previous = Some(v);
        }
        if let Some(v) = get("CITADEL_DEV_LOGIN") {
            self.dev_login = Some(matches!(v.as_str(), "1" | "true" | "yes"));
        }
        if let Some(v) = get("CITADEL_ADMIN_TOKEN") {
            self.admin_token = Some(v);
        }
        if let Some(v) = get("CITADEL_WATCH_TITLES") {
            self.watch_titles = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(uri) = get("CITADEL_MONGODB_URI") {
            self.mongodb.get_or_insert_with(|| citadel_store::world::MongoConfig::new("")).uri = uri;
        }
        if let (Some(m), Some(db)) = (&mut self.mongodb, get("CITADEL_MONGODB_DATABASE")) {
            m.database = db;
        }
        if let Some(url) = get("CITADEL_NATS_URL") {
            let n = self.nats.get_or_insert_with(|| NatsConfig {
                url: String::new(),
                credentials: None,
                subject_prefix: default_subject_prefix(),
                journal_replicas: default_journal_replicas(),
            });
            n.url = url;
        }
        if let (Some(n), Some(prefix)) = (&mut self.nats, get("CITADEL_NATS_PREFIX")) {
            n.subject_prefix = prefix;
        }
        if let Some(bucket) = get("CITADEL_S3_BUCKET") {
            let s3 = self.s3.get_or_insert_with(|| citadel_store::s3::S3Config::new(""));
            s3.bucket = bucket;
        }
        if let Some(s3) = &mut self.s3 {
            if let Some(v) = get("CITADEL_S3_PREFIX") {
                s3.prefix = v;
            }
            if let Some(v) = get("CITADEL_S3_REGION") {
                s3.region = v;
            }
            if let Some(v) = get("CITADEL_S3_ENDPOINT") {
                s3.endpoint = Some(v);
                s3.path_style = true;
            }
        }
        Ok(())
    }

    /// Refuses configurations that cannot work, so that a server never
    /// starts half-configured.
    pub fn check(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        anyhow::ensure!(l.message_bytes_max >= 256, "limits.message_bytes_max must be at least 256");
        anyhow::ensure!(l.session_queue_max >= 1, "limits.session_queue_max must be at least 1");
        anyhow::ensure!(l.requests_per_second_max >= 1, "limits.requests_per_second_max must be at least 1");
        anyhow::ensure!(
            l.connections_max >= 1 && l.sessions_max >= 1 && l.connections_per_address_max >= 1,
            "connection and session limits must be at least 1"
        );
        anyhow::ensure!(
            l.request_header_seconds_max >= 1 && l.request_body_seconds_max >= 1,
            "limits.request_header_seconds_max and limits.request_body_seconds_max must be at least 1"
        );
        anyhow::ensure!(self.save_interval_seconds >= 1, "save_interval_seconds must be at least 1");
        anyhow::ensure!(self.token_ttl_seconds >= 60, "token_ttl_seconds must be at least 60");
        anyhow::ensure!(self.lock_ttl_seconds >= 3, "lock_ttl_seconds must be at least 3");
        if let Some(t) = &self.admin_token {
            anyhow::ensure!(t.len() >= 16, "admin_token must be at least 16 characters");
        }
        for u in &self.admin_users {
            anyhow::ensure!(
                !u.name.is_empty() && u.name.len() <= 64 && u.name.bytes().all(|b| b.is_ascii_graphic()),
                "admin_users: `{}` is not a user name (1 to 64 printable characters, no spaces)",
                u.name
            );
            match crate::admin::auth::PasswordHash::parse(&u.password_hash) {
                None => anyhow::bail!(
                    "admin_users.{}: password_hash is not an argon2id hash ($argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>, at most 256 MiB, 10 passes, 4 lanes) nor one made before 2026-12-02 (pbkdf2-sha256$...); make one with `citadel hash-password`",
                    u.name
                ),
                Some(h) if h.is_legacy() => tracing::warn!(
                    user = %u.name,
                    "admin_users: this password_hash is PBKDF2, made before 2026-12-02; it still works, but make an argon2id one with `citadel hash-password` and replace it"
                ),
                Some(_) => {}
            }
        }
        if let Some(n) = &self.nats {
            anyhow::ensure!(!n.url.is_empty(), "nats.url is empty");
            anyhow::ensure!(
                crate::bus::check_subject(&n.subject_prefix).is_ok(),
                "nats.subject_prefix `{}` must be dot-separated tokens of letters, digits, _ and -",
                n.subject_prefix
            );
        }
        if self.journal_store == JournalStore::Jetstream {
            let n = self.nats.as_ref();
            anyhow::ensure!(n.is_some(), "journal_store = \"jetstream\" needs [nats] (its url)");
            anyhow::ensure!(
                n.is_some_and(|n| (1..=5).contains(&n.journal_replicas)),
                "nats.journal_replicas must be 1 to 5 (JetStream's limit)"
            );
        }
        if let Some(s) = &self.token_secret {
            anyhow::ensure!(s.len() >= 32, "token_secret must be at least 32 characters");
        }
        if let Some(s) = &self.token_secret_previous {
            anyhow::ensure!(s.len() >= 32, "token_secret_previous must be at least 32 characters");
            anyhow::ensure!(
                self.token_secret.is_some(),
                "token_secret_previous needs token_secret (the new secret) set too"
            );
            anyhow::ensure!(self.token_secret.as_ref() != Some(s), "token_secret_previous is the same as token_secret");
        }
        let g = &self.gateway;
        anyhow::ensure!(
            (10..=600).contains(&g.game_token_ttl_seconds),
            "gateway.game_token_ttl_seconds must be 10 to 600: the client uses the token at once"
        );
        anyhow::ensure!(
            g.logins_per_address_per_minute >= 1 && g.logins_per_account_per_minute >= 1,
            "gateway.logins_per_address_per_minute and gateway.logins_per_account_per_minute must be at least 1"
        );
        for o in &g.oidc {
            anyhow::ensure!(
                !o.issuer.is_empty() && !o.audience.is_empty(),
                "gateway.oidc: issuer and audience must be set"
            );
            anyhow::ensure!(
                o.jwks_url.starts_with("https://") || o.jwks_url.starts_with("http://127.0.0.1"),
                "gateway.oidc `{}`: jwks_url must be https:// (plain http only on 127.0.0.1, for tests)",
                o.issuer
            );
        }
        for (i, p) in g.payments.iter().enumerate() {
            anyhow::ensure!(
                crate::auth::valid_player_id(&p.name),
                "gateway.payments: `{}` is not a provider name (1 to 64 of A-Z a-z 0-9 _ -)",
                p.name
            );
            anyhow::ensure!(
                g.payments[..i].iter().all(|q| q.name != p.name),
                "gateway.payments: `{}` is named twice",
                p.name
            );
            anyhow::ensure!(
                !p.secrets.is_empty() && p.secrets.iter().all(|s| s.len() >= 16),
                "gateway.payments `{}`: give one or two secrets of at least 16 characters",
                p.name
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_name_logins_are_on_for_the_embedded_defaults_and_off_in_a_fleet_unless_set() {
        assert!(Config::default().dev_login(), "citadel serve on a fresh clone");
        let mut fleet = Config::default();
        fleet.apply_env(|k| (k == "CITADEL_NATS_URL").then(|| "nats://10.0.0.5:4222".into())).unwrap();
        assert!(!fleet.dev_login(), "a server on NATS takes game tokens only");
        let mut mongo = Config::default();
        mongo.apply_env(|k| (k == "CITADEL_MONGODB_URI").then(|| "mongodb://10.0.0.6".into())).unwrap();
        assert!(!mongo.dev_login());
        fleet.apply_env(|k| (k == "CITADEL_DEV_LOGIN").then(|| "true".into())).unwrap();
        assert!(fleet.dev_login(), "unless configured");
        let off: Config = toml::from_str("dev_login = false").unwrap();
        assert!(!off.dev_login());
    }
}
