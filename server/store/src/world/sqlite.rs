//! The SQLite world store: one database file in WAL mode, shared safely by
//! several server processes on one machine. Documents (server status,
//! player info, raids) are stored as JSON beside the columns their queries
//! use.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::*;

/// SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteWorld {
    /// One connection, used by each caller on its own thread: a call is a
    /// few statements on pages in memory (tens of microseconds), less than
    /// handing it to another thread and back costs (two context switches
    /// per call: a third of a login's CPU when a thread of its own ran the
    /// calls, docs/benchmarks.md). SQLite runs one write transaction at a
    /// time anyway; callers on other threads wait for the mutex, never
    /// across an await. What could take long stays off the callers:
    /// checkpoints run on a thread of their own (`Checkpoints`).
    conn: Arc<Mutex<Connection>>,
    _checkpoints: Arc<Checkpoints>,
}

/// How long a writer waits for another process's transaction, in ms. Lock
/// transactions are a few statements long; 5 s means something is stuck.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// How often the write-ahead log is copied into the database. A commit
/// appends to the log without an fsync; copying it back (a checkpoint)
/// writes and fsyncs the database, milliseconds on a slow disk, so it runs
/// on a thread of its own instead of in whichever call would cross
/// SQLite's automatic threshold. Each second's log at 10,000 players is a
/// few MB: the log stays small.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The checkpointing thread: stops when the store's last handle is dropped.
#[derive(Debug)]
struct Checkpoints {
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread, which sees it gone.
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Checkpoints {
    fn start(path: &Path) -> Result<Checkpoints, WorldError> {
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(db)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("citadel-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    // PASSIVE: copies what no reader still needs, never
                    // waits for readers or writers; the next one goes on.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "SQLite world store: checkpoint failed; retried in a second");
                    }
                }
            })
            .map_err(|e| WorldError::Db(format!("starting the SQLite checkpoint thread: {e}")))?;
        Ok(Checkpoints { stop: Mutex::new(Some(stop)) })
    }
}

fn db(e: rusqlite::Error) -> WorldError {
    WorldError::Db(e.to_string())
}

impl SqliteWorld {
    pub fn open(path: &Path) -> Result<SqliteWorld, WorldError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| WorldError::Db(format!("creating {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(db)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
        // WAL with synchronous = NORMAL: a commit survives the crash of any
        // process (what locks shared by processes need) and is not fsynced
        // one by one; only an OS crash may lose the last commits, and with
        // it every process on this machine that held those locks. Lock
        // renewals are thousands of commits a second at 10,000 players.
        // Servers that start together on one file (`citadel cluster`) may
        // find it locked while another sets it up: switching to WAL does
        // not wait for the busy timeout, so the setup is tried again.
        let setup = || {
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
             INSERT OR IGNORE INTO fence (id, last) VALUES (1, 0);
             CREATE TABLE IF NOT EXISTS servers (id TEXT PRIMARY KEY, heartbeat_ms INTEGER NOT NULL, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS players (
                 title TEXT NOT NULL, player TEXT NOT NULL, name_key TEXT NOT NULL, doc TEXT NOT NULL,
                 PRIMARY KEY (title, player)
             );
             CREATE INDEX IF NOT EXISTS players_by_name ON players (title, name_key, player);
             CREATE TABLE IF NOT EXISTS scores (
                 title TEXT NOT NULL, stat TEXT NOT NULL, win TEXT NOT NULL, player TEXT NOT NULL,
                 base INTEGER NOT NULL, value INTEGER NOT NULL,
                 PRIMARY KEY (title, stat, win, player)
             );
             CREATE INDEX IF NOT EXISTS scores_by_rank ON scores (title, stat, win, value DESC, player);
             CREATE TABLE IF NOT EXISTS positions (
                 title TEXT NOT NULL, player TEXT NOT NULL, region TEXT NOT NULL, x INTEGER NOT NULL, y INTEGER NOT NULL,
                 PRIMARY KEY (title, player)
             );
             CREATE UNIQUE INDEX IF NOT EXISTS positions_by_spot ON positions (title, region, x, y);
             CREATE TABLE IF NOT EXISTS region_counts (
                 title TEXT NOT NULL, region TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (title, region)
             );
             CREATE TABLE IF NOT EXISTS raids (
                 id TEXT PRIMARY KEY, title TEXT NOT NULL, attacker TEXT NOT NULL, defender TEXT NOT NULL,
                 started_ms INTEGER NOT NULL, status TEXT NOT NULL, defender_applied INTEGER NOT NULL, doc TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS raids_by_attacker ON raids (title, attacker, started_ms);
             CREATE INDEX IF NOT EXISTS raids_by_defender ON raids (title, defender, status, defender_applied);
             CREATE TABLE IF NOT EXISTS clans (
                 title TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
                 open INTEGER NOT NULL, members INTEGER NOT NULL, created_ms INTEGER NOT NULL,
                 PRIMARY KEY (title, id)
             );
             CREATE TABLE IF NOT EXISTS clan_members (
                 title TEXT NOT NULL, player TEXT NOT NULL, clan TEXT NOT NULL, role TEXT NOT NULL,
                 joined_ms INTEGER NOT NULL, PRIMARY KEY (title, player)
             );
             CREATE INDEX IF NOT EXISTS clan_members_by_clan ON clan_members (title, clan, joined_ms);
             CREATE TABLE IF NOT EXISTS clan_asks (
                 title TEXT NOT NULL, clan TEXT NOT NULL, player TEXT NOT NULL, kind TEXT NOT NULL,
                 at_ms INTEGER NOT NULL, PRIMARY KEY (title, clan, player, kind)
             );
             CREATE TABLE IF NOT EXISTS clan_chat (
                 title TEXT NOT NULL, clan TEXT NOT NULL, seq INTEGER NOT NULL, player TEXT NOT NULL,
                 text TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (title, clan, seq)
             );
             CREATE INDEX IF NOT EXISTS clan_chat_by_player ON clan_chat (title, clan, player, at_ms);
             CREATE TABLE IF NOT EXISTS restrictions (
                 title TEXT NOT NULL, player TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (title, player)
             );
             CREATE TABLE IF NOT EXISTS audit (
                 id TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, title TEXT NOT NULL, player TEXT NOT NULL, doc TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at_ms, id);
             CREATE INDEX IF NOT EXISTS audit_by_player ON audit (title, player, at_ms, id);
             CREATE TABLE IF NOT EXISTS journal_homes (server TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS inbox (
                 title TEXT NOT NULL, player TEXT NOT NULL, id TEXT NOT NULL, created_ms INTEGER NOT NULL,
                 expires_ms INTEGER NOT NULL, claimed_ms INTEGER, doc TEXT NOT NULL,
                 PRIMARY KEY (title, player, id)
             );
             CREATE INDEX IF NOT EXISTS inbox_by_time ON inbox (title, player, created_ms);
             CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS payments (
                 provider TEXT NOT NULL, id TEXT NOT NULL, account TEXT NOT NULL, title TEXT NOT NULL,
                 player TEXT NOT NULL, state TEXT NOT NULL, created_ms INTEGER NOT NULL, doc TEXT NOT NULL,
                 PRIMARY KEY (provider, id));
             CREATE INDEX IF NOT EXISTS payments_by_state ON payments (state, created_ms);
             CREATE INDEX IF NOT EXISTS payments_by_time ON payments (created_ms);
             CREATE INDEX IF NOT EXISTS payments_by_account ON payments (account, created_ms);
             CREATE INDEX IF NOT EXISTS payments_by_player ON payments (title, player, created_ms);
             CREATE TABLE IF NOT EXISTS identities (
                 provider TEXT NOT NULL, subject TEXT NOT NULL, account TEXT NOT NULL, linked_ms INTEGER NOT NULL,
                 doc TEXT NOT NULL, PRIMARY KEY (provider, subject)
             );
             CREATE INDEX IF NOT EXISTS identities_by_account ON identities (account, linked_ms);
             CREATE TABLE IF NOT EXISTS title_players (
                 account TEXT NOT NULL, title TEXT NOT NULL, player TEXT NOT NULL, PRIMARY KEY (account, title)
             );",
            )
        };
        let until = std::time::Instant::now() + std::time::Duration::from_millis(BUSY_TIMEOUT_MS);
        loop {
            match setup() {
                Ok(()) => break,
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(db(e)),
            }
        }
        // Databases made before locks carried a duty to recover gain the
        // column. Two processes may race to add it: the loser's
        // "duplicate column" changes nothing.
        let has_duty: i64 = conn
            .row("SELECT COUNT(*) FROM pragma_table_info('locks') WHERE name = 'recover_from'", [], |r| r.get(0))
            .map_err(db)?;
        if has_duty == 0 {
            if let Err(e) = conn.exec("ALTER TABLE locks ADD COLUMN recover_from TEXT", []) {
                if !e.to_string().contains("duplicate column") {
                    return Err(db(e));
                }
            }
        }
        // Databases made before bases were counted per region gain the
        // counts once, from the positions there are (in one write
        // transaction: two processes opening it at once count once).
        let mut counted = || -> Result<(), rusqlite::Error> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let empty: i64 = tx.row("SELECT COUNT(*) FROM region_counts", [], |r| r.get(0))?;
            if empty == 0 {
                tx.exec(
                    "INSERT INTO region_counts (title, region, n)
                     SELECT title, region, COUNT(*) FROM positions GROUP BY title, region",
                    [],
                )?;
            }
            tx.commit()
        };
        counted().map_err(db)?;
        // Checkpoints are the checkpoint thread's, not the callers'.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;").map_err(db)?;
        let checkpoints = Checkpoints::start(path)?;
        Ok(SqliteWorld { conn: Arc::new(Mutex::new(conn)), _checkpoints: Arc::new(checkpoints) })
    }

    /// The `doc` of the one row `sql` selects with `keys`, decoded.
    async fn one_doc<T: serde::de::DeserializeOwned>(
        &self,
        sql: &'static str,
        keys: &[&str],
    ) -> Result<Option<T>, WorldError> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let doc = self
            .with(move |c| c.row(sql, rusqlite::params_from_iter(keys), |r| r.get::<_, String>(0)).optional())
            .await?;
        doc.as_deref().map(from_json).transpose()
    }

    /// Runs `f` on the connection, on the calling thread. A call that
    /// panics rolls its transaction back (rusqlite's `Transaction` drop)
    /// and loses its own answer, not the store.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, WorldError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(db)
    }
}

/// Prepared statements kept per connection: every statement this store
/// runs (about 80) stays prepared, so none is parsed twice.
const STATEMENTS_CACHED: usize = 160;

/// Running a statement through the connection's cache of prepared
/// statements. `Connection::execute` and `query_row` parse their SQL on
/// every call: a tenth of a login's CPU at 10,000 players
/// (docs/benchmarks.md, The login path).
trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

#[async_trait]
impl Locks for SqliteWorld {
    async fn acquire(&self, name: &str, owner: &str, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.with(move |c| {
            // IMMEDIATE takes the write lock up front, so two processes
            // cannot both read "free" and both grant.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let held: Option<(String, i64, Option<String>)> = tx
                .row("SELECT owner, expires_ms, recover_from FROM locks WHERE name = ?1", params![name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let mut recover_from = None;
            if let Some((holder, expires, duty)) = held {
                if holder != owner && expires > now_ms {
                    return Ok(None);
                }
                recover_from = duty_after(holder, expires, duty, now_ms);
            }
            let token: i64 =
                tx.row("UPDATE fence SET last = last + 1 WHERE id = 1 RETURNING last", [], |r| r.get(0))?;
            let expires_ms = now_ms + ttl_ms;
            tx.exec(
                "INSERT INTO locks (name, owner, token, expires_ms, recover_from) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token,
                     expires_ms = excluded.expires_ms, recover_from = excluded.recover_from",
                params![name, owner, token, expires_ms, recover_from],
            )?;
            tx.commit()?;
            Ok(Some(Lease { name, owner, token, expires_ms, recover_from }))
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        let lease = lease.clone();
        self.with(move |c| {
            let expires_ms = now_ms + ttl_ms;
            let n = c.exec(
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
            let sql = if lease.recover_from.is_some() {
                // Left expired, with its duty, for the next holder.
                "UPDATE locks SET expires_ms = 0 WHERE name = ?1 AND owner = ?2 AND token = ?3"
            } else {
                "DELETE FROM locks WHERE name = ?1 AND owner = ?2 AND token = ?3"
            };
            c.exec(sql, params![lease.name, lease.owner, lease.token])?;
            Ok(())
        })
        .await
    }

    async fn recovered(&self, lease: &Lease) -> Result<Option<Lease>, WorldError> {
        let lease = lease.clone();
        self.with(move |c| {
            let n = c.exec(
                "UPDATE locks SET recover_from = NULL WHERE name = ?1 AND owner = ?2 AND token = ?3",
                params![lease.name, lease.owner, lease.token],
            )?;
            Ok((n == 1).then_some(Lease { recover_from: None, ..lease }))
        })
        .await
    }

    async fn holder(&self, name: &str, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        let name = name.to_string();
        self.with(move |c| {
            c.row(
                "SELECT owner, token, expires_ms, recover_from FROM locks WHERE name = ?1 AND expires_ms > ?2",
                params![name, now_ms],
                |r| {
                    Ok(Lease {
                        name: name.clone(),
                        owner: r.get(0)?,
                        token: r.get(1)?,
                        expires_ms: r.get(2)?,
                        recover_from: r.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }
}

#[async_trait]
impl Servers for SqliteWorld {
    async fn heartbeat(&self, status: &ServerStatus) -> Result<(), WorldError> {
        let (id, at, doc) = (status.id.clone(), status.heartbeat_ms, to_json(status)?);
        self.with(move |c| {
            c.exec(
                "INSERT INTO servers (id, heartbeat_ms, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, doc = excluded.doc",
                params![id, at, doc],
            )
            .map(drop)
        })
        .await
    }

    async fn servers(&self, now_ms: i64, stale_ms: i64) -> Result<Vec<ServerStatus>, WorldError> {
        let docs = self
            .with(move |c| {
                c.exec("DELETE FROM servers WHERE heartbeat_ms <= ?1", params![now_ms - stale_ms])?;
                let mut q = c.prepare_cached("SELECT doc FROM servers ORDER BY id")?;
                let rows = q.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>();
                rows
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn deregister(&self, id: &str) -> Result<(), WorldError> {
        let id = id.to_string();
        self.with(move |c| c.exec("DELETE FROM servers WHERE id = ?1", params![id]).map(drop)).await
    }

    async fn put_journal_home(&self, home: &JournalHome) -> Result<(), WorldError> {
        let (server, doc) = (home.server.clone(), to_json(home)?);
        self.with(move |c| {
            c.exec(
                "INSERT INTO journal_homes (server, doc) VALUES (?1, ?2)
                 ON CONFLICT (server) DO UPDATE SET doc = excluded.doc",
                params![server, doc],
            )
            .map(drop)
        })
        .await
    }

    async fn journal_home(&self, server: &str) -> Result<Option<JournalHome>, WorldError> {
        self.one_doc("SELECT doc FROM journal_homes WHERE server = ?1", &[server]).await
    }
}

#[async_trait]
impl Players for SqliteWorld {
    async fn put_info(&self, info: &PlayerInfo) -> Result<(), WorldError> {
        let (title, player, key, doc) = (info.title.clone(), info.player.clone(), name_key(&info.name), to_json(info)?);
        self.with(move |c| {
            c.exec(
                "INSERT INTO players (title, player, name_key, doc) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (title, player) DO UPDATE SET name_key = excluded.name_key, doc = excluded.doc",
                params![title, player, key, doc],
            )
            .map(drop)
        })
        .await
    }

    async fn info(&self, title: &str, player: &str) -> Result<Option<PlayerInfo>, WorldError> {
        let (title, player) = (title.to_string(), player.to_string());
        let doc = self
            .with(move |c| {
                c.row("SELECT doc FROM players WHERE title = ?1 AND player = ?2", params![title, player], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
            })
            .await?;
        doc.as_deref().map(from_json).transpose()
    }

    async fn search(
        &self,
        title: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<PlayerInfo>, WorldError> {
        let (title, low) = (title.to_string(), name_key(prefix));
        let high = prefix_end(&low);
        let (after_key, after_player) =
            after.map_or((String::new(), String::new()), |(n, p)| (name_key(n), p.to_string()));
        let limit = page(limit) as i64;
        let docs = self
            .with(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT doc FROM players WHERE title = ?1 AND name_key >= ?2 AND name_key < ?3
                     AND (name_key, player) > (?4, ?5) ORDER BY name_key, player LIMIT ?6",
                )?;
                let rows = q
                    .query_map(params![title, low, high, after_key, after_player, limit], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>();
                rows
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn restriction(&self, title: &str, player: &str) -> Result<Option<Restriction>, WorldError> {
        self.one_doc("SELECT doc FROM restrictions WHERE title = ?1 AND player = ?2", &[title, player]).await
    }

    async fn put_restriction(&self, r: &Restriction) -> Result<(), WorldError> {
        let (title, player, doc) = (r.title.clone(), r.player.clone(), to_json(r)?);
        self.with(move |c| {
            c.exec(
                "INSERT INTO restrictions (title, player, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (title, player) DO UPDATE SET doc = excluded.doc",
                params![title, player, doc],
            )
            .map(drop)
        })
        .await
    }
}

#[async_trait]
impl Scores for SqliteWorld {
    async fn set_score(
        &self,
        title: &str,
        stat: &str,
        player: &str,
        windows: &[String],
        before: i64,
        after: i64,
    ) -> Result<(), WorldError> {
        let (title, stat, player, windows) =
            (title.to_string(), stat.to_string(), player.to_string(), windows.to_vec());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut q = tx.prepare_cached(
                    "INSERT INTO scores (title, stat, win, player, base, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6 - ?5)
                     ON CONFLICT (title, stat, win, player) DO UPDATE SET value = ?6 - scores.base",
                )?;
                for w in &windows {
                    let base = if w == ALL_TIME { 0 } else { before };
                    q.execute(params![title, stat, w, player, base, after])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn top(&self, board: Board<'_>, offset: usize, limit: usize) -> Result<Vec<ScoreRow>, WorldError> {
        let (title, stat, win) = (board.title.to_string(), board.stat.to_string(), board.window.to_string());
        let (offset, limit) = (offset.min(TOP_OFFSET_MAX), page(limit));
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT player, value FROM scores WHERE title = ?1 AND stat = ?2 AND win = ?3
                 ORDER BY value DESC, player LIMIT ?4 OFFSET ?5",
            )?;
            let rows = q
                .query_map(params![title, stat, win, limit as i64, offset as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .enumerate()
                .map(|(i, r)| r.map(|(player, value)| ScoreRow { rank: (offset + i + 1) as u64, player, value }))
                .collect::<Result<Vec<_>, _>>();
            rows
        })
        .await
    }

    async fn rank(&self, board: Board<'_>, player: &str) -> Result<Option<ScoreRow>, WorldError> {
        let (title, stat, win, player) =
            (board.title.to_string(), board.stat.to_string(), board.window.to_string(), player.to_string());
        self.with(move |c| {
            let value: Option<i64> = c
                .row(
                    "SELECT value FROM scores WHERE title = ?1 AND stat = ?2 AND win = ?3 AND player = ?4",
                    params![title, stat, win, player],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(value) = value else { return Ok(None) };
            // Walks the index above the player only.
            let above: i64 = c.row(
                "SELECT count(*) FROM scores WHERE title = ?1 AND stat = ?2 AND win = ?3
                 AND (value > ?4 OR (value = ?4 AND player < ?5))",
                params![title, stat, win, value, player],
                |r| r.get(0),
            )?;
            Ok(Some(ScoreRow { rank: above as u64 + 1, player, value }))
        })
        .await
    }

    async fn place(&self, title: &str, player: &str, at: &Position) -> Result<bool, WorldError> {
        let (title, player, at) = (title.to_string(), player.to_string(), at.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let was: Option<String> = tx
                .prepare_cached("SELECT region FROM positions WHERE title = ?1 AND player = ?2")?
                .query_row(params![title, player], |r| r.get(0))
                .optional()?;
            let r = tx
                .prepare_cached(
                    "INSERT INTO positions (title, player, region, x, y) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (title, player) DO UPDATE SET region = excluded.region, x = excluded.x, y = excluded.y",
                )?
                .execute(params![title, player, at.region, at.x, at.y]);
            match r {
                Ok(_) => {}
                // The spot's unique index: someone is there.
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            }
            // Bases per region, kept here so that placing a new base never
            // counts a region's rows (which grew with every player).
            if was.as_deref() != Some(at.region.as_str()) {
                let mut add = tx.prepare_cached(
                    "INSERT INTO region_counts (title, region, n) VALUES (?1, ?2, ?3)
                     ON CONFLICT (title, region) DO UPDATE SET n = n + excluded.n",
                )?;
                add.execute(params![title, at.region, 1])?;
                if let Some(old) = &was {
                    add.execute(params![title, old, -1])?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn position(&self, title: &str, player: &str) -> Result<Option<Position>, WorldError> {
        let (title, player) = (title.to_string(), player.to_string());
        self.with(move |c| {
            c.row("SELECT region, x, y FROM positions WHERE title = ?1 AND player = ?2", params![title, player], |r| {
                Ok(Position { region: r.get(0)?, x: r.get(1)?, y: r.get(2)? })
            })
            .optional()
        })
        .await
    }

    async fn near(&self, title: &str, at: &Position, radius: i32, limit: usize) -> Result<Vec<Base>, WorldError> {
        let (title, at, limit) = (title.to_string(), at.clone(), page(limit) as i64);
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT player, x, y FROM positions WHERE title = ?1 AND region = ?2
                 AND x BETWEEN ?3 AND ?4 AND y BETWEEN ?5 AND ?6
                 ORDER BY (x - ?7) * (x - ?7) + (y - ?8) * (y - ?8), player LIMIT ?9",
            )?;
            let rows = q
                .query_map(
                    params![
                        title,
                        at.region,
                        at.x - radius,
                        at.x + radius,
                        at.y - radius,
                        at.y + radius,
                        at.x,
                        at.y,
                        limit
                    ],
                    |r| {
                        Ok(Base {
                            player: r.get(0)?,
                            position: Position { region: at.region.clone(), x: r.get(1)?, y: r.get(2)? },
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>();
            rows
        })
        .await
    }

    async fn region_counts(&self, title: &str, regions: &[String]) -> Result<BTreeMap<String, i64>, WorldError> {
        let (title, regions) = (title.to_string(), regions.to_vec());
        self.with(move |c| {
            let mut q = c.prepare_cached("SELECT n FROM region_counts WHERE title = ?1 AND region = ?2")?;
            regions
                .into_iter()
                .map(|r| Ok((r.clone(), q.query_row(params![title, r], |row| row.get(0)).optional()?.unwrap_or(0))))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl Raids for SqliteWorld {
    async fn insert_raid(&self, raid: &RaidRecord) -> Result<(), WorldError> {
        let raid = raid.clone();
        let doc = to_json(&raid)?;
        self.with(move |c| {
            c.exec(
                "INSERT INTO raids (id, title, attacker, defender, started_ms, status, defender_applied, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    raid.id,
                    raid.title,
                    raid.attacker,
                    raid.defender,
                    raid.started_ms,
                    status_name(raid.status),
                    raid.defender_applied,
                    doc
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn raid(&self, id: &str) -> Result<Option<RaidRecord>, WorldError> {
        let id = id.to_string();
        let doc = self
            .with(move |c| {
                c.row("SELECT doc, defender_applied FROM raids WHERE id = ?1", params![id], raid_row).optional()
            })
            .await?;
        doc.as_ref().map(raid_from).transpose()
    }

    async fn last_raid(&self, title: &str, attacker: &str) -> Result<Option<RaidRecord>, WorldError> {
        let (title, attacker) = (title.to_string(), attacker.to_string());
        let doc = self
            .with(move |c| {
                c.row(
                    "SELECT doc, defender_applied FROM raids WHERE title = ?1 AND attacker = ?2
                     ORDER BY started_ms DESC, id DESC LIMIT 1",
                    params![title, attacker],
                    raid_row,
                )
                .optional()
            })
            .await?;
        doc.as_ref().map(raid_from).transpose()
    }

    async fn end_raid(&self, raid: &RaidRecord) -> Result<bool, WorldError> {
        let (id, status, doc) = (raid.id.clone(), status_name(raid.status), to_json(raid)?);
        self.with(move |c| {
            let n = c.exec(
                "UPDATE raids SET status = ?2, doc = ?3 WHERE id = ?1 AND status = 'started'",
                params![id, status, doc],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn pending_defenses(&self, title: &str, defender: &str) -> Result<Vec<RaidRecord>, WorldError> {
        let (title, defender) = (title.to_string(), defender.to_string());
        let docs = self
            .with(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT doc, defender_applied FROM raids WHERE title = ?1 AND defender = ?2 AND status = 'ended'
                     AND defender_applied = 0 ORDER BY started_ms, id",
                )?;
                let rows = q.query_map(params![title, defender], raid_row)?.collect::<Result<Vec<_>, _>>();
                rows
            })
            .await?;
        docs.iter().map(raid_from).collect()
    }

    async fn defense_applied(&self, id: &str) -> Result<(), WorldError> {
        let id = id.to_string();
        self.with(move |c| c.exec("UPDATE raids SET defender_applied = 1 WHERE id = ?1", params![id]).map(drop)).await
    }
}

#[async_trait]
impl Clans for SqliteWorld {
    async fn create_clan(&self, clan: &Clan, founder: &str, role: &str) -> Result<Joined, WorldError> {
        let (clan, founder, role) = (clan.clone(), founder.to_string(), role.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let member: Option<String> = tx
                .row(
                    "SELECT clan FROM clan_members WHERE title = ?1 AND player = ?2",
                    params![clan.title, founder],
                    |r| r.get(0),
                )
                .optional()?;
            if member.is_some() {
                return Ok(Joined::AlreadyInClan);
            }
            let inserted = tx.exec(
                "INSERT OR IGNORE INTO clans (title, id, name, description, open, members, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
                params![clan.title, clan.id, clan.name, clan.description, clan.open, clan.created_ms],
            )?;
            if inserted == 0 {
                return Ok(Joined::NoClan);
            }
            tx.exec(
                "INSERT INTO clan_members (title, player, clan, role, joined_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![clan.title, founder, clan.id, role, clan.created_ms],
            )?;
            tx.commit()?;
            Ok(Joined::Joined)
        })
        .await
    }

    async fn clan(&self, title: &str, id: &str) -> Result<Option<Clan>, WorldError> {
        let (title, id) = (title.to_string(), id.to_string());
        self.with(move |c| {
            c.row(
                "SELECT title, id, name, description, open, members, created_ms FROM clans WHERE title = ?1 AND id = ?2",
                params![title, id],
                clan_row,
            )
            .optional()
        })
        .await
    }

    async fn edit_clan(&self, title: &str, id: &str, description: &str, open: bool) -> Result<(), WorldError> {
        let (title, id, description) = (title.to_string(), id.to_string(), description.to_string());
        self.with(move |c| {
            c.exec(
                "UPDATE clans SET description = ?3, open = ?4 WHERE title = ?1 AND id = ?2",
                params![title, id, description, open],
            )
            .map(drop)
        })
        .await
    }

    async fn search_clans(
        &self,
        title: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Clan>, WorldError> {
        let (title, low) = (title.to_string(), name_key(prefix));
        let (high, after, limit) = (prefix_end(&low), after.map(name_key).unwrap_or_default(), page(limit) as i64);
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT title, id, name, description, open, members, created_ms FROM clans
                 WHERE title = ?1 AND id >= ?2 AND id < ?3 AND id > ?4 ORDER BY id LIMIT ?5",
            )?;
            let rows = q.query_map(params![title, low, high, after, limit], clan_row)?.collect::<Result<Vec<_>, _>>();
            rows
        })
        .await
    }

    async fn members(&self, title: &str, clan: &str) -> Result<Vec<Member>, WorldError> {
        let (title, clan) = (title.to_string(), clan.to_string());
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT clan, player, role, joined_ms FROM clan_members WHERE title = ?1 AND clan = ?2
                 ORDER BY joined_ms, player LIMIT 1000",
            )?;
            let rows = q.query_map(params![title, clan], member_row)?.collect::<Result<Vec<_>, _>>();
            rows
        })
        .await
    }

    async fn membership(&self, title: &str, player: &str) -> Result<Option<Member>, WorldError> {
        let (title, player) = (title.to_string(), player.to_string());
        self.with(move |c| {
            c.row(
                "SELECT clan, player, role, joined_ms FROM clan_members WHERE title = ?1 AND player = ?2",
                params![title, player],
                member_row,
            )
            .optional()
        })
        .await
    }

    async fn join_clan(&self, title: &str, member: &Member, capacity: i64) -> Result<Joined, WorldError> {
        let (title, m) = (title.to_string(), member.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let members: Option<i64> = tx
                .row("SELECT members FROM clans WHERE title = ?1 AND id = ?2", params![title, m.clan], |r| r.get(0))
                .optional()?;
            let Some(members) = members else { return Ok(Joined::NoClan) };
            let inserted = tx.exec(
                "INSERT OR IGNORE INTO clan_members (title, player, clan, role, joined_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![title, m.player, m.clan, m.role, m.joined_ms],
            )?;
            if inserted == 0 {
                return Ok(Joined::AlreadyInClan);
            }
            if members >= capacity {
                return Ok(Joined::Full);
            }
            tx.exec("UPDATE clans SET members = members + 1 WHERE title = ?1 AND id = ?2", params![title, m.clan])?;
            tx.commit()?;
            Ok(Joined::Joined)
        })
        .await
    }

    async fn leave_clan(&self, title: &str, clan: &str, player: &str) -> Result<bool, WorldError> {
        let (title, clan, player) = (title.to_string(), clan.to_string(), player.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.exec(
                "DELETE FROM clan_members WHERE title = ?1 AND player = ?2 AND clan = ?3",
                params![title, player, clan],
            )?;
            if n == 1 {
                tx.exec("UPDATE clans SET members = members - 1 WHERE title = ?1 AND id = ?2", params![title, clan])?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_role(&self, title: &str, clan: &str, player: &str, role: &str) -> Result<bool, WorldError> {
        let (title, clan, player, role) = (title.to_string(), clan.to_string(), player.to_string(), role.to_string());
        self.with(move |c| {
            let n = c.exec(
                "UPDATE clan_members SET role = ?4 WHERE title = ?1 AND player = ?2 AND clan = ?3",
                params![title, player, clan, role],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn disband(&self, title: &str, clan: &str) -> Result<(), WorldError> {
        let (title, clan) = (title.to_string(), clan.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for table in ["clan_members", "clan_asks", "clan_chat"] {
                tx.exec(&format!("DELETE FROM {table} WHERE title = ?1 AND clan = ?2"), params![title, clan])?;
            }
            tx.exec("DELETE FROM clans WHERE title = ?1 AND id = ?2", params![title, clan])?;
            tx.commit()
        })
        .await
    }

    async fn put_ask(&self, title: &str, clan: &str, ask: &ClanAsk) -> Result<(), WorldError> {
        let (title, clan, ask) = (title.to_string(), clan.to_string(), ask.clone());
        self.with(move |c| {
            c.exec(
                "INSERT INTO clan_asks (title, clan, player, kind, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (title, clan, player, kind) DO UPDATE SET at_ms = excluded.at_ms",
                params![title, clan, ask.player, ask_name(ask.kind), ask.at_ms],
            )
            .map(drop)
        })
        .await
    }

    async fn take_ask(&self, title: &str, clan: &str, player: &str, kind: Ask) -> Result<bool, WorldError> {
        let (title, clan, player) = (title.to_string(), clan.to_string(), player.to_string());
        self.with(move |c| {
            let n = c.exec(
                "DELETE FROM clan_asks WHERE title = ?1 AND clan = ?2 AND player = ?3 AND kind = ?4",
                params![title, clan, player, ask_name(kind)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn asks(&self, title: &str, clan: &str) -> Result<Vec<ClanAsk>, WorldError> {
        let (title, clan) = (title.to_string(), clan.to_string());
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT player, kind, at_ms FROM clan_asks WHERE title = ?1 AND clan = ?2 ORDER BY at_ms, player LIMIT ?3",
            )?;
            let rows = q
                .query_map(params![title, clan, PAGE_MAX as i64], |r| {
                    let kind: String = r.get(1)?;
                    Ok(ClanAsk {
                        player: r.get(0)?,
                        kind: if kind == "invite" { Ask::Invite } else { Ask::Request },
                        at_ms: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>();
            rows
        })
        .await
    }

    async fn post_chat(
        &self,
        title: &str,
        clan: &str,
        player: &str,
        text: &str,
        now_ms: i64,
        limits: ChatLimits,
    ) -> Result<Option<ChatLine>, WorldError> {
        let (title, clan, player, text) = (title.to_string(), clan.to_string(), player.to_string(), text.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let recent: i64 = tx.row(
                "SELECT count(*) FROM clan_chat WHERE title = ?1 AND clan = ?2 AND player = ?3 AND at_ms > ?4",
                params![title, clan, player, now_ms - limits.rate_window_ms],
                |r| r.get(0),
            )?;
            if recent >= limits.rate_max {
                return Ok(None);
            }
            let seq: i64 = tx.row(
                "SELECT coalesce(max(seq), 0) + 1 FROM clan_chat WHERE title = ?1 AND clan = ?2",
                params![title, clan],
                |r| r.get(0),
            )?;
            tx.exec(
                "INSERT INTO clan_chat (title, clan, seq, player, text, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![title, clan, seq, player, text, now_ms],
            )?;
            tx.exec(
                "DELETE FROM clan_chat WHERE title = ?1 AND clan = ?2 AND seq <= ?3",
                params![title, clan, seq - limits.history_max],
            )?;
            tx.commit()?;
            Ok(Some(ChatLine { seq, player, text, at_ms: now_ms }))
        })
        .await
    }

    async fn chat(
        &self,
        title: &str,
        clan: &str,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatLine>, WorldError> {
        let (title, clan, before, limit) =
            (title.to_string(), clan.to_string(), before_seq.unwrap_or(i64::MAX), page(limit) as i64);
        self.with(move |c| {
            let mut q = c.prepare_cached(
                "SELECT seq, player, text, at_ms FROM clan_chat WHERE title = ?1 AND clan = ?2 AND seq < ?3
                 ORDER BY seq DESC LIMIT ?4",
            )?;
            let rows = q
                .query_map(params![title, clan, before, limit], |r| {
                    Ok(ChatLine { seq: r.get(0)?, player: r.get(1)?, text: r.get(2)?, at_ms: r.get(3)? })
                })?
                .collect::<Result<Vec<_>, _>>();
            rows
        })
        .await
    }
}

#[async_trait]
impl Audit for SqliteWorld {
    async fn audit(&self, e: &AuditEntry) -> Result<(), WorldError> {
        let (id, at, title, player, doc) = (e.id.clone(), e.at_ms, e.title.clone(), e.player.clone(), to_json(e)?);
        self.with(move |c| {
            c.exec(
                "INSERT INTO audit (id, at_ms, title, player, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, at, title, player, doc],
            )
            .map(drop)
        })
        .await
    }

    async fn audit_log(
        &self,
        player: Option<(&str, &str)>,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, WorldError> {
        let who = player.map(|(t, p)| (t.to_string(), p.to_string()));
        let before = before_ms.unwrap_or(i64::MAX);
        let limit = page(limit) as i64;
        let docs = self
            .with(move |c| {
                let rows = match &who {
                    Some((t, p)) => {
                        let mut q = c.prepare_cached(
                            "SELECT doc FROM audit WHERE title = ?1 AND player = ?2 AND at_ms < ?3
                             ORDER BY at_ms DESC, id DESC LIMIT ?4",
                        )?;
                        let rows = q.query_map(params![t, p, before, limit], |r| r.get::<_, String>(0))?;
                        rows.collect::<Result<Vec<_>, _>>()
                    }
                    None => {
                        let mut q = c.prepare_cached(
                            "SELECT doc FROM audit WHERE at_ms < ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2",
                        )?;
                        let rows = q.query_map(params![before, limit], |r| r.get::<_, String>(0))?;
                        rows.collect::<Result<Vec<_>, _>>()
                    }
                };
                rows
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}

#[async_trait]
impl Inbox for SqliteWorld {
    async fn put_inbox(&self, item: &InboxItem, cap: usize) -> Result<InboxPut, WorldError> {
        let it = item.clone();
        let doc = to_json(item)?;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Expired items go first: they count for nothing.
            tx.exec(
                "DELETE FROM inbox WHERE title = ?1 AND player = ?2 AND expires_ms <= ?3",
                params![it.title, it.player, it.created_ms],
            )?;
            let exists: i64 = tx.row(
                "SELECT COUNT(*) FROM inbox WHERE title = ?1 AND player = ?2 AND id = ?3",
                params![it.title, it.player, it.id],
                |r| r.get(0),
            )?;
            if exists > 0 {
                return Ok(InboxPut::Exists);
            }
            let waiting: i64 = tx.row(
                "SELECT COUNT(*) FROM inbox WHERE title = ?1 AND player = ?2 AND claimed_ms IS NULL",
                params![it.title, it.player],
                |r| r.get(0),
            )?;
            if waiting >= cap as i64 {
                return Ok(InboxPut::Full);
            }
            tx.exec(
                "INSERT INTO inbox (title, player, id, created_ms, expires_ms, claimed_ms, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
                params![it.title, it.player, it.id, it.created_ms, it.expires_ms, doc],
            )?;
            tx.commit()?;
            Ok(InboxPut::Added)
        })
        .await
    }

    async fn inbox(&self, title: &str, player: &str, now_ms: i64, limit: usize) -> Result<Vec<InboxItem>, WorldError> {
        self.inbox_rows(title, player, now_ms, limit, false).await
    }

    async fn unclaimed(
        &self,
        title: &str,
        player: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, WorldError> {
        self.inbox_rows(title, player, now_ms, limit, true).await
    }

    async fn claim(&self, title: &str, player: &str, id: &str, now_ms: i64) -> Result<bool, WorldError> {
        let (title, player, id) = (title.to_string(), player.to_string(), id.to_string());
        self.with(move |c| {
            c.exec(
                "UPDATE inbox SET claimed_ms = ?4 WHERE title = ?1 AND player = ?2 AND id = ?3 AND claimed_ms IS NULL",
                params![title, player, id, now_ms],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn revoke_inbox(&self, title: &str, player: &str, id: &str, now_ms: i64) -> Result<InboxRevoke, WorldError> {
        let (title, player, id) = (title.to_string(), player.to_string(), id.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed: Option<Option<i64>> = tx
                .row(
                    "SELECT claimed_ms FROM inbox WHERE title = ?1 AND player = ?2 AND id = ?3",
                    params![title, player, id],
                    |r| r.get(0),
                )
                .optional()?;
            let found = match claimed {
                None => InboxRevoke::Missing,
                Some(Some(_)) => InboxRevoke::Claimed,
                Some(None) => {
                    tx.exec(
                        "UPDATE inbox SET claimed_ms = ?4, doc = json_set(doc, '$.revoked_ms', ?4)
                         WHERE title = ?1 AND player = ?2 AND id = ?3",
                        params![title, player, id, now_ms],
                    )?;
                    InboxRevoke::Unclaimed
                }
            };
            tx.commit()?;
            Ok(found)
        })
        .await
    }
}

#[async_trait]
impl Payments for SqliteWorld {
    async fn record_payment(&self, payment: &Payment) -> Result<bool, WorldError> {
        let (p, doc) = (payment.clone(), to_json(payment)?);
        self.with(move |c| {
            c.exec(
                "INSERT OR IGNORE INTO payments (provider, id, account, title, player, state, created_ms, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![p.provider, p.id, p.account, p.title, p.player, p.state.as_str(), p.created_ms, doc],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn payment(&self, provider: &str, id: &str) -> Result<Option<Payment>, WorldError> {
        self.one_doc("SELECT doc FROM payments WHERE provider = ?1 AND id = ?2", &[provider, id]).await
    }

    async fn payment_moved(
        &self,
        provider: &str,
        id: &str,
        from: PaymentState,
        to: PaymentState,
        at_ms: i64,
        reason: &str,
    ) -> Result<bool, WorldError> {
        let (provider, id, reason) = (provider.to_string(), id.to_string(), reason.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let doc: Option<String> = tx
                .row(
                    "SELECT doc FROM payments WHERE provider = ?1 AND id = ?2 AND state = ?3",
                    params![provider, id, from.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(doc) = doc else { return Ok(Ok(false)) };
            let mut p: Payment = match serde_json::from_str(&doc) {
                Ok(p) => p,
                Err(e) => return Ok(Err(WorldError::Db(format!("payment {provider} {id} does not decode: {e}")))),
            };
            moved(&mut p, to, at_ms, &reason);
            let doc = match serde_json::to_string(&p) {
                Ok(d) => d,
                Err(e) => return Ok(Err(WorldError::Db(e.to_string()))),
            };
            tx.exec(
                "UPDATE payments SET state = ?3, doc = ?4 WHERE provider = ?1 AND id = ?2",
                params![provider, id, to.as_str(), doc],
            )?;
            tx.commit()?;
            Ok(Ok(true))
        })
        .await?
    }

    async fn undelivered(&self, limit: usize) -> Result<Vec<Payment>, WorldError> {
        let limit = page(limit) as i64;
        let docs = self
            .with(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT doc FROM payments WHERE state = 'recorded' ORDER BY created_ms, provider, id LIMIT ?1",
                )?;
                let rows = q.query_map(params![limit], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn payments(
        &self,
        of: PaymentsOf<'_>,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Payment>, WorldError> {
        let (limit, before) = (page(limit) as i64, before_ms.unwrap_or(i64::MAX));
        let (sql, a, b): (&'static str, String, String) = match of {
            PaymentsOf::All => (
                "SELECT doc FROM payments WHERE created_ms < ?1 AND ?2 = ?3
                 ORDER BY created_ms DESC, provider DESC, id DESC LIMIT ?4",
                String::new(),
                String::new(),
            ),
            PaymentsOf::Account(account) => (
                "SELECT doc FROM payments WHERE created_ms < ?1 AND account = ?2 AND ?3 = ?3
                 ORDER BY created_ms DESC, provider DESC, id DESC LIMIT ?4",
                account.to_string(),
                String::new(),
            ),
            PaymentsOf::Player { title, player } => (
                "SELECT doc FROM payments WHERE created_ms < ?1 AND title = ?2 AND player = ?3
                 ORDER BY created_ms DESC, provider DESC, id DESC LIMIT ?4",
                title.to_string(),
                player.to_string(),
            ),
        };
        let docs = self
            .with(move |c| {
                let mut q = c.prepare_cached(sql)?;
                let rows = q.query_map(params![before, a, b, limit], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}

impl SqliteWorld {
    /// Unexpired items: every one newest first, or the unclaimed oldest first.
    async fn inbox_rows(
        &self,
        title: &str,
        player: &str,
        now_ms: i64,
        limit: usize,
        unclaimed: bool,
    ) -> Result<Vec<InboxItem>, WorldError> {
        let (title, player, limit) = (title.to_string(), player.to_string(), page(limit) as i64);
        let rows = self
            .with(move |c| {
                let sql = if unclaimed {
                    "SELECT doc, claimed_ms FROM inbox WHERE title = ?1 AND player = ?2 AND expires_ms > ?3
                     AND claimed_ms IS NULL ORDER BY created_ms, id LIMIT ?4"
                } else {
                    "SELECT doc, claimed_ms FROM inbox WHERE title = ?1 AND player = ?2 AND expires_ms > ?3
                     ORDER BY created_ms DESC, id DESC LIMIT ?4"
                };
                let mut q = c.prepare_cached(sql)?;
                let rows = q.query_map(params![title, player, now_ms, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        rows.iter()
            .map(|(doc, claimed)| {
                let mut item: InboxItem = from_json(doc)?;
                item.claimed_ms = *claimed;
                Ok(item)
            })
            .collect()
    }
}

fn clan_row(r: &rusqlite::Row<'_>) -> Result<Clan, rusqlite::Error> {
    Ok(Clan {
        title: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        open: r.get(4)?,
        members: r.get(5)?,
        created_ms: r.get(6)?,
    })
}

fn member_row(r: &rusqlite::Row<'_>) -> Result<Member, rusqlite::Error> {
    Ok(Member { clan: r.get(0)?, player: r.get(1)?, role: r.get(2)?, joined_ms: r.get(3)? })
}

/// A raid row: its document and the applied flag kept beside it.
fn raid_row(r: &rusqlite::Row<'_>) -> Result<(String, bool), rusqlite::Error> {
    Ok((r.get(0)?, r.get(1)?))
}

fn raid_from((doc, applied): &(String, bool)) -> Result<RaidRecord, WorldError> {
    let mut raid: RaidRecord = from_json(doc)?;
    raid.defender_applied = *applied;
    Ok(raid)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, WorldError> {
    serde_json::from_str(text).map_err(|e| WorldError::Db(format!("a stored document does not decode: {e}")))
}

#[async_trait]
impl Accounts for SqliteWorld {
    async fn create_account(&self, account: &Account, identity: &Identity) -> Result<bool, WorldError> {
        let (a, i) = (account.clone(), identity.clone());
        let (adoc, idoc) = (to_json(account)?, to_json(identity)?);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.exec(
                "INSERT OR IGNORE INTO identities (provider, subject, account, linked_ms, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![i.provider, i.subject, a.id, i.linked_ms, idoc],
            )?;
            if n == 0 {
                return Ok(false);
            }
            tx.exec("INSERT INTO accounts (id, doc) VALUES (?1, ?2)", params![a.id, adoc])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, WorldError> {
        self.one_doc("SELECT doc FROM accounts WHERE id = ?1", &[id]).await
    }

    async fn identity(&self, provider: &str, subject: &str) -> Result<Option<Identity>, WorldError> {
        self.one_doc("SELECT doc FROM identities WHERE provider = ?1 AND subject = ?2", &[provider, subject]).await
    }

    async fn link_identity(&self, identity: &Identity) -> Result<bool, WorldError> {
        let (i, doc) = (identity.clone(), to_json(identity)?);
        self.with(move |c| {
            c.exec(
                "INSERT OR IGNORE INTO identities (provider, subject, account, linked_ms, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![i.provider, i.subject, i.account, i.linked_ms, doc],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn identities(&self, account: &str) -> Result<Vec<Identity>, WorldError> {
        let account = account.to_string();
        let docs = self
            .with(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT doc FROM identities WHERE account = ?1 ORDER BY linked_ms, provider, subject LIMIT ?2",
                )?;
                let rows = q.query_map(params![account, PAGE_MAX as i64], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn account_login(&self, id: &str, now_ms: i64) -> Result<(), WorldError> {
        self.update_account(id, move |a| a.last_login_ms = a.last_login_ms.max(now_ms)).await
    }

    async fn set_flagged(&self, id: &str, flagged: bool) -> Result<(), WorldError> {
        self.update_account(id, move |a| a.flagged = flagged).await
    }

    async fn title_player(&self, account: &str, title: &str, player: &str) -> Result<String, WorldError> {
        let (account, title, player) = (account.to_string(), title.to_string(), player.to_string());
        self.with(move |c| title_player_in(c, &account, &title, &player)).await
    }

    async fn enter(&self, account: &str, title: &str, player: &str, now_ms: i64) -> Result<String, WorldError> {
        let (account, title, player) = (account.to_string(), title.to_string(), player.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Err(e) = change_account(&tx, &account, |a| a.last_login_ms = a.last_login_ms.max(now_ms))? {
                return Ok(Err(e));
            }
            let found = title_player_in(&tx, &account, &title, &player)?;
            tx.commit()?;
            Ok(Ok(found))
        })
        .await?
    }
}

/// The account's player in `title`, `player` stored if none was.
fn title_player_in(c: &Connection, account: &str, title: &str, player: &str) -> Result<String, rusqlite::Error> {
    c.exec(
        "INSERT OR IGNORE INTO title_players (account, title, player) VALUES (?1, ?2, ?3)",
        params![account, title, player],
    )?;
    c.row("SELECT player FROM title_players WHERE account = ?1 AND title = ?2", params![account, title], |r| r.get(0))
}

/// Reads, changes and writes back one account inside `tx`; the inner
/// error when there is no such account or it does not decode.
fn change_account(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    change: impl FnOnce(&mut Account),
) -> Result<Result<(), WorldError>, rusqlite::Error> {
    let doc: Option<String> = tx.row("SELECT doc FROM accounts WHERE id = ?1", params![id], |r| r.get(0)).optional()?;
    let Some(doc) = doc else { return Ok(Err(WorldError::Db(format!("no account {id}")))) };
    let mut account: Account = match serde_json::from_str(&doc) {
        Ok(a) => a,
        Err(e) => return Ok(Err(WorldError::Db(format!("account {id} does not decode: {e}")))),
    };
    change(&mut account);
    let doc = match serde_json::to_string(&account) {
        Ok(d) => d,
        Err(e) => return Ok(Err(WorldError::Db(e.to_string()))),
    };
    tx.exec("UPDATE accounts SET doc = ?2 WHERE id = ?1", params![id, doc])?;
    Ok(Ok(()))
}

impl SqliteWorld {
    /// Reads, changes and writes back one account, in one transaction.
    async fn update_account(
        &self,
        id: &str,
        change: impl FnOnce(&mut Account) + Send + 'static,
    ) -> Result<(), WorldError> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = change_account(&tx, &id, change)?;
            if changed.is_ok() {
                tx.commit()?;
            }
            Ok(changed)
        })
        .await?
    }
}
