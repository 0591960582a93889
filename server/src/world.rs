//! The world store: the small amount of data shared between servers. For
//! now, lease locks (a player is live on one server at a time). The
//! embedded backend is SQLite in WAL mode, safe for several server
//! processes on one machine; [`MongoWorld`] serves fleets behind the same
//! trait. One conformance suite (`server/tests/world_conformance.rs`)
//! runs against both.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// A held lock. `token` is a fencing token: it grows with every grant of
/// any lock, so a later holder always has a larger token than an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub token: i64,
    pub expires_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("world store error: {0}")]
    Db(String),
}

#[async_trait]
pub trait WorldStore: Send + Sync + std::fmt::Debug {
    /// Takes `name` for `owner` until `now_ms + ttl_ms`, if it is free, expired
    /// or already `owner`'s. `None` when someone else holds it.
    async fn acquire(&self, name: &str, owner: &str, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError>;
    /// Extends a lease still held; `None` if it was lost (expired and taken).
    async fn renew(&self, lease: &Lease, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError>;
    /// Gives a lease up (no effect if it was already lost).
    async fn release(&self, lease: &Lease) -> Result<(), WorldError>;
}

/// SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteWorld {
    /// One connection: SQLite runs one write transaction at a time anyway.
    /// Callers queue for it here, asynchronously, rather than each on a
    /// blocking thread of its own.
    conn: Arc<tokio::sync::Mutex<Connection>>,
}

/// How long a writer waits for another process's transaction, in ms. Lock
/// transactions are a few statements long; 5 s means something is stuck.
const BUSY_TIMEOUT_MS: u64 = 5_000;

fn db(e: rusqlite::Error) -> WorldError {
    WorldError::Db(e.to_string())
}

impl SqliteWorld {
    pub fn open(path: &Path) -> Result<SqliteWorld, WorldError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| WorldError::Db(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(db)?;
        // WAL with synchronous = NORMAL: a commit survives the crash of any
        // process (what locks shared by processes need) and is not fsynced
        // one by one; only an OS crash may lose the last commits, and with
        // it every process on this machine that held those locks. Lock
        // renewals are thousands of commits a second at 10,000 players.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS locks (
                 name TEXT PRIMARY KEY,
                 owner TEXT NOT NULL,
                 token INTEGER NOT NULL,
                 expires_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS fence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
             INSERT OR IGNORE INTO fence (id, last) VALUES (1, 0);",
        )
        .map_err(db)?;
        Ok(SqliteWorld { conn: Arc::new(tokio::sync::Mutex::new(conn)) })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, WorldError> {
        let mut conn = self.conn.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&mut conn).map_err(db))
            .await
            .map_err(|e| WorldError::Db(e.to_string()))?
    }
}

#[async_trait]
impl WorldStore for SqliteWorld {
    async fn acquire(&self, name: &str, owner: &str, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.with(move |c| {
            // IMMEDIATE takes the write lock up front, so two processes
            // cannot both read "free" and both grant.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let held: Option<(String, i64)> = tx
                .query_row("SELECT owner, expires_ms FROM locks WHERE name = ?1", params![name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((holder, expires)) = held {
                if holder != owner && expires > now_ms {
                    return Ok(None);
                }
            }
            let token: i64 = tx.query_row("UPDATE fence SET last = last + 1 WHERE id = 1 RETURNING last", [], |r| r.get(0))?;
            let expires_ms = now_ms + ttl_ms;
            tx.execute(
                "INSERT INTO locks (name, owner, token, expires_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token, expires_ms = excluded.expires_ms",
                params![name, owner, token, expires_ms],
            )?;
            tx.commit()?;
            Ok(Some(Lease { name, owner, token, expires_ms }))
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        let lease = lease.clone();
        self.with(move |c| {
            let expires_ms = now_ms + ttl_ms;
            let n = c.execute(
                "UPDATE locks SET expires_ms = ?1 WHERE name = ?2 AND owner = ?3 AND token = ?4",
                params![expires_ms, lease.name, lease.owner, lease.token],
            )?;
            Ok((n == 1).then_some(Lease { expires_ms, ..lease }))
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), WorldError> {
        let lease = lease.clone();
        self.with(move |c| {
            c.execute(
                "DELETE FROM locks WHERE name = ?1 AND owner = ?2 AND token = ?3",
                params![lease.name, lease.owner, lease.token],
            )?;
            Ok(())
        })
        .await
    }
}

/// Where the MongoDB world store lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://db1:27017,db2:27017/?replicaSet=rs0`.
    pub uri: String,
    /// Database holding Citadel's collections.
    #[serde(default = "default_database")]
    pub database: String,
}

fn default_database() -> String {
    "citadel".into()
}

impl MongoConfig {
    /// The default database at `uri`.
    pub fn new(uri: impl Into<String>) -> MongoConfig {
        MongoConfig { uri: uri.into(), database: default_database() }
    }
}

/// MongoDB backend: one document per lock in `locks` (`_id` is the lock's
/// name), and the fencing counter in `counters`. Times are i64 epoch ms.
#[derive(Debug, Clone)]
pub struct MongoWorld {
    locks: mongodb::Collection<mongodb::bson::Document>,
    counters: mongodb::Collection<mongodb::bson::Document>,
}

/// How long to wait for a MongoDB server at start and per operation
/// before failing (instead of the driver's 30 s).
const MONGO_SELECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn mongo(e: mongodb::error::Error) -> WorldError {
    WorldError::Db(e.to_string())
}

/// A duplicate key error: an upsert lost a race for the same `_id`.
fn duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        _ => e.to_string().contains("E11000"),
    }
}

impl MongoWorld {
    pub async fn connect(config: &MongoConfig) -> Result<MongoWorld, WorldError> {
        let mut options = mongodb::options::ClientOptions::parse(&config.uri).await.map_err(mongo)?;
        options.server_selection_timeout = Some(MONGO_SELECT_TIMEOUT);
        options.app_name = Some("citadel".into());
        let client = mongodb::Client::with_options(options).map_err(mongo)?;
        let db = client.database(&config.database);
        // Fails now, not at the first login, when the server is unreachable.
        db.run_command(mongodb::bson::doc! { "ping": 1 }).await.map_err(mongo)?;
        Ok(MongoWorld { locks: db.collection("locks"), counters: db.collection("counters") })
    }

    /// Increments the fencing counter, which exists.
    async fn increment_existing(&self) -> Result<mongodb::bson::Document, WorldError> {
        use mongodb::bson::doc;
        use mongodb::options::ReturnDocument;
        self.counters
            .find_one_and_update(doc! { "_id": "fence" }, doc! { "$inc": { "last": 1_i64 } })
            .return_document(ReturnDocument::After)
            .await
            .map_err(mongo)?
            .ok_or_else(|| WorldError::Db("the fencing counter vanished".into()))
    }

    /// The next fencing token.
    async fn next_token(&self) -> Result<i64, WorldError> {
        use mongodb::bson::doc;
        use mongodb::options::ReturnDocument;
        let after = self
            .counters
            .find_one_and_update(doc! { "_id": "fence" }, doc! { "$inc": { "last": 1_i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        let d = match after {
            Ok(Some(d)) => d,
            // Two first-ever increments raced to create the counter (E11000,
            // or a stand-in answered nothing): it exists now; increment again.
            Ok(None) => self.increment_existing().await?,
            Err(e) if duplicate_key(&e) => self.increment_existing().await?,
            Err(e) => return Err(mongo(e)),
        };
        number(&d, "last").ok_or_else(|| WorldError::Db("the fencing counter is not a number".into()))
    }
}

/// An integer field, whichever integer type the server stored it as.
fn number(d: &mongodb::bson::Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        mongodb::bson::Bson::Int64(n) => Some(*n),
        mongodb::bson::Bson::Int32(n) => Some(i64::from(*n)),
        mongodb::bson::Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

#[async_trait]
impl WorldStore for MongoWorld {
    async fn acquire(&self, name: &str, owner: &str, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        use mongodb::bson::doc;
        use mongodb::options::ReturnDocument;
        let token = self.next_token().await?;
        let expires_ms = now_ms + ttl_ms;
        // Taken only if free (the upsert inserts it), expired, or ours. A
        // lock held by someone else matches nothing, so the upsert tries to
        // insert a second document with the same `_id`: MongoDB refuses
        // that with E11000, a stand-in may answer nothing. Both mean
        // someone else holds it.
        let result = self
            .locks
            .find_one_and_update(
                doc! { "_id": name, "$or": [ { "expires_ms": { "$lte": now_ms } }, { "owner": owner } ] },
                doc! { "$set": { "owner": owner, "token": token, "expires_ms": expires_ms } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match result {
            Ok(Some(d)) if d.get_str("owner").ok() == Some(owner) && number(&d, "token") == Some(token) => {
                Ok(Some(Lease { name: name.to_string(), owner: owner.to_string(), token, expires_ms }))
            }
            Ok(_) => Ok(None),
            Err(e) if duplicate_key(&e) => Ok(None),
            Err(e) => Err(mongo(e)),
        }
    }

    async fn renew(&self, lease: &Lease, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        use mongodb::bson::doc;
        let expires_ms = now_ms + ttl_ms;
        let r = self
            .locks
            .update_one(
                doc! { "_id": &lease.name, "owner": &lease.owner, "token": lease.token },
                doc! { "$set": { "expires_ms": expires_ms } },
            )
            .await
            .map_err(mongo)?;
        Ok((r.matched_count == 1).then(|| Lease { expires_ms, ..lease.clone() }))
    }

    async fn release(&self, lease: &Lease) -> Result<(), WorldError> {
        use mongodb::bson::doc;
        self.locks
            .delete_one(doc! { "_id": &lease.name, "owner": &lease.owner, "token": lease.token })
            .await
            .map_err(mongo)?;
        Ok(())
    }
}
