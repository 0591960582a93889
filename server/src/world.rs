//! The world store: the small amount of data shared between servers. For
//! now, lease locks (a player is live on one server at a time). The
//! embedded backend is SQLite in WAL mode, safe for several server
//! processes on one machine; MongoDB joins it behind the same trait.

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

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> SqliteWorld {
        let p = std::env::temp_dir().join(format!("citadel-world-{}-{}.sqlite3", std::process::id(), rand_suffix()));
        SqliteWorld::open(&p).unwrap()
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    }

    #[tokio::test]
    async fn leases_exclude_renew_expire_and_fence() {
        let w = world();
        let a = w.acquire("player:x", "a", 1000, 0).await.unwrap().unwrap();
        assert!(w.acquire("player:x", "b", 1000, 500).await.unwrap().is_none(), "held by a");
        let a2 = w.renew(&a, 1000, 900).await.unwrap().unwrap();
        assert_eq!(a2.expires_ms, 1900);
        assert!(w.acquire("player:x", "b", 1000, 1500).await.unwrap().is_none(), "renewed");
        let b = w.acquire("player:x", "b", 1000, 1900).await.unwrap().unwrap();
        assert!(b.token > a.token, "fencing tokens grow");
        assert!(w.renew(&a2, 1000, 2000).await.unwrap().is_none(), "a lost it");
        w.release(&a2).await.unwrap();
        assert!(w.acquire("player:x", "c", 1000, 2000).await.unwrap().is_none(), "a's release does not free b's lock");
        w.release(&b).await.unwrap();
        assert!(w.acquire("player:x", "c", 1000, 2000).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_race_of_many_contenders_has_one_winner() {
        let w = world();
        let mut tasks = Vec::new();
        for i in 0..32 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move { w.acquire("raid:z", &format!("c{i}"), 10_000, 0).await.unwrap() }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(winners, 1);
    }
}
