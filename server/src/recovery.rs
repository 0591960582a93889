//! Taking a player over from a server that stopped holding them: before
//! anyone reads a player file as current, the operations that server
//! acknowledged and never saved are applied from its journal.
//!
//! Every grant of a player lock says whose work may be missing from the
//! player file (`Lease::recover_from`): the owner of a lease that expired
//! without being released, since a server releases a player only after a
//! successful save. The new holder reads that server's journal, re-runs the
//! player's records above the file's `seq` (exactly as replay at start
//! does), saves the file, and only then clears the duty in the world store.
//! A holder that cannot do this gives the lock back with the duty on it,
//! and the player is refused with `player_recovering` until someone can.
//!
//! A journal on NATS JetStream (`journal_store = "jetstream"`) is
//! reachable from any server on the same NATS: the records are read from
//! the player's subject in that server's stream and from the kept stream
//! ([`crate::journal::jetstream`]), and purged once the file holds them.
//!
//! A journal of files is reachable when the world store says where it is
//! ([`JournalHome`], written by each server at start), on this machine,
//! and the folder still belongs to that server (its `server-id`). Servers
//! on other machines cannot read it: the player waits until their server
//! starts again (its replay applies the records) or an operator declares
//! that journal lost (`POST /admin/api/servers/{id}/journal-lost`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::journal::jetstream::{self, JournalStream};
use crate::journal::{self, Key, Record};
use crate::protocol::{ApiError, Code};
use citadel_store::world::{JournalHome, WorldStore};

/// Other servers' journals kept decoded in memory at once. A mass takeover
/// (a server with thousands of players died) reads its journal once, not
/// once per player; a handful of dead servers at a time is already an
/// outage.
const CACHED_JOURNALS_MAX: usize = 8;

/// This server's side of takeovers: where its own journal is, and the
/// journals of others read lately.
#[derive(Debug)]
pub struct Recovery {
    server_id: String,
    host: String,
    own_dir: PathBuf,
    cache: Mutex<HashMap<String, Cached>>,
    /// Players whose records this process's journal holds beyond their
    /// file: a session here ended unsaved, or replay at start kept them.
    /// Only these make a takeover from this server read its own journal
    /// (after a restart every expired lock names this server, and reading
    /// the journal at each of those logins would cost a login storm dearly).
    unsaved: Mutex<std::collections::HashSet<Key>>,
    /// The journal stream, when this server's journal is on JetStream.
    stream: Option<JournalStream>,
    /// Per player, what a takeover read from the journal streams: purged
    /// once the takeover saved it ([`Recovery::settled`]).
    read_through: Mutex<HashMap<Key, Vec<jetstream::Read>>>,
}

/// What a journal home says when the journal is a JetStream stream.
const STREAM_HOME: &str = "nats-jetstream:";

#[derive(Debug)]
struct Cached {
    /// The segments as they were read: names, sizes and change times.
    fingerprint: Vec<(String, u64, Option<SystemTime>)>,
    records: Arc<HashMap<Key, Vec<Record>>>,
}

/// The machine this process runs on: `/etc/machine-id`, else the host name.
pub fn machine() -> String {
    ["/etc/machine-id", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn unreachable(from: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::PlayerRecovering,
        format!("this player's last server ({from}) stopped with actions it acknowledged in its journal, which this server cannot read ({why}); retry once that server is running again, or after an operator declares its journal lost"),
    )
    .details(serde_json::json!({ "server": from }))
}

impl Recovery {
    /// `own_dir` is this server's journal directory; `stream` the journal
    /// stream when the journal is on JetStream.
    pub fn new(server_id: &str, own_dir: &Path, stream: Option<JournalStream>) -> Recovery {
        let own_dir = std::path::absolute(own_dir).unwrap_or_else(|_| own_dir.to_path_buf());
        Recovery {
            server_id: server_id.to_string(),
            host: machine(),
            own_dir,
            cache: Mutex::new(HashMap::new()),
            unsaved: Mutex::new(std::collections::HashSet::new()),
            stream,
            read_through: Mutex::new(HashMap::new()),
        }
    }

    /// A takeover saved what it read for `key` from the journal stream:
    /// those records go. A failure only leaves records that are skipped
    /// later (their `seq` is in the file).
    pub async fn settled(&self, key: &Key) {
        let reads = lock(&self.read_through).remove(key);
        if let (Some(stream), Some(reads)) = (&self.stream, reads) {
            if let Err(e) = stream.purge_read(reads).await {
                tracing::warn!(title = %key.0, player = %key.1, error = %format!("{e:#}"), "purging records a takeover applied failed");
            }
        }
    }

    /// `key`'s records that `from` journaled to the stream `name`.
    async fn stream_records(
        &self,
        stream: &JournalStream,
        name: &str,
        from: &str,
        key: &Key,
    ) -> Result<Vec<Record>, ApiError> {
        let (records, reads) =
            stream.records(name, from, key).await.map_err(|e| unreachable(from, format!("{e:#}")))?;
        lock(&self.read_through).insert(key.clone(), reads);
        Ok(records)
    }

    /// This process's journal holds records of `key` beyond their file.
    pub fn forget_unsaved(&self, key: &Key) {
        lock(&self.unsaved).remove(key);
    }

    /// Whether this process's journal holds records of `key` beyond their file.
    pub fn is_unsaved(&self, key: &Key) -> bool {
        lock(&self.unsaved).contains(key)
    }

    /// Notes that this server holds `key`'s acknowledged operations in its
    /// own journal only (a session ended unsaved, replay kept records).
    pub fn note_unsaved(&self, key: Key) {
        lock(&self.unsaved).insert(key);
    }

    /// This server's id (a lock owner).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Tells the world store where this server's journal is (at start).
    pub async fn register(&self, world: &dyn WorldStore) -> anyhow::Result<()> {
        let dir = match &self.stream {
            Some(s) => format!("{STREAM_HOME}{}", s.name()),
            None => self.own_dir.to_string_lossy().into_owned(),
        };
        let home = JournalHome {
            server: self.server_id.clone(),
            host: self.host.clone(),
            dir,
            lost_ms: 0,
            lost_by: String::new(),
        };
        Ok(world.put_journal_home(&home).await?)
    }

    /// The records `from`'s journal holds for `key`, in `seq` order; an
    /// error when that journal cannot be read and nobody declared it lost.
    pub async fn records(&self, world: &dyn WorldStore, from: &str, key: &Key) -> Result<Vec<Record>, ApiError> {
        if let (Some(stream), true) = (&self.stream, from == self.server_id) {
            // Our own records are in the stream (after a restart too).
            return self.stream_records(stream, stream.name(), from, key).await;
        }
        if from == self.server_id {
            // Our own journal, when an earlier session here ended unsaved.
            // It is being written, so it is read afresh.
            if !lock(&self.unsaved).contains(key) {
                return Ok(Vec::new());
            }
            let dir = self.own_dir.clone();
            let all = read(dir).await.map_err(|e| ApiError::new(Code::Internal, format!("{e:#}")))?;
            return Ok(all.get(key).cloned().unwrap_or_default());
        }
        let home = world.journal_home(from).await.map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
        let Some(home) = home else { return Err(unreachable(from, "it never said where its journal is")) };
        if home.lost_ms > 0 {
            tracing::warn!(server = %from, player = %key.1, by = %home.lost_by, "taking a player over without their last server's journal (declared lost)");
            return Ok(Vec::new());
        }
        if let Some(name) = home.dir.strip_prefix(STREAM_HOME) {
            return match &self.stream {
                Some(stream) => self.stream_records(stream, name, from, key).await,
                None => Err(unreachable(
                    from,
                    format!("it journals to the NATS JetStream stream {name}, and this server does not use JetStream"),
                )),
            };
        }
        if home.host != self.host {
            return Err(unreachable(from, format!("it ran on another machine ({})", home.host)));
        }
        let dir = PathBuf::from(&home.dir);
        let id_file = dir.parent().map(|p| p.join("server-id")).unwrap_or_default();
        match std::fs::read_to_string(&id_file) {
            Ok(id) if format!("server-{}", id.trim()) == from => {}
            Ok(_) => return Err(unreachable(from, format!("{} now belongs to another server", dir.display()))),
            Err(e) => return Err(unreachable(from, format!("{}: {e}", id_file.display()))),
        }
        let fingerprint = fingerprint(&dir).map_err(|e| unreachable(from, format!("{}: {e}", dir.display())))?;
        let cached = lock(&self.cache).get(from).filter(|c| c.fingerprint == fingerprint).map(|c| c.records.clone());
        let records = match cached {
            Some(r) => r,
            None => {
                let r = Arc::new(read(dir.clone()).await.map_err(|e| unreachable(from, format!("{e:#}")))?);
                let mut cache = lock(&self.cache);
                if cache.len() >= CACHED_JOURNALS_MAX && !cache.contains_key(from) {
                    let evict = cache.keys().next().cloned();
                    evict.map(|k| cache.remove(&k));
                }
                cache.insert(from.to_string(), Cached { fingerprint, records: r.clone() });
                r
            }
        };
        Ok(records.get(key).cloned().unwrap_or_default())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fingerprint(dir: &Path) -> std::io::Result<Vec<(String, u64, Option<SystemTime>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        out.push((e.file_name().to_string_lossy().into_owned(), meta.len(), meta.modified().ok()));
    }
    out.sort();
    Ok(out)
}

/// A journal directory's records by player (a blocking read, off the runtime).
async fn read(dir: PathBuf) -> anyhow::Result<HashMap<Key, Vec<Record>>> {
    let found = tokio::task::spawn_blocking(move || journal::read_dir(&dir)).await??;
    let mut by_player: HashMap<Key, Vec<Record>> = HashMap::new();
    for r in found.records {
        by_player.entry((r.title.clone(), r.player.clone())).or_default().push(r);
    }
    for records in by_player.values_mut() {
        records.sort_by_key(|r| r.seq);
    }
    Ok(by_player)
}
