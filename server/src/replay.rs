//! Re-running journaled operations onto player files: at start, the
//! records of this server's journal that its files lack ([`replay`]), and
//! when a player is taken over from a server that stopped holding them, that
//! server's records ([`take_over`]). Both go through [`reapply`], which runs
//! each record on the title version it first ran on, with its time and
//! random state, through the same interpreter as live requests.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use citadel_runtime::{PlayerState, Rng, Title};
use citadel_store::blob::{BlobError, BlobStore, Precondition};
use citadel_store::world::{Lease, WorldStore};

use crate::apply::execute;
use crate::deps::Deps;
use crate::journal::{Key, Record};
use crate::player_file::{blob_key, player_lock, read_player};
use crate::protocol::{ApiError, Code};
use crate::recovery::Recovery;
use crate::titles::Titles;

/// Players replayed at once at start.
const REPLAY_PARALLEL_MAX: usize = 32;

/// What replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Players whose file gained operations.
    pub players: usize,
    /// Operations re-applied.
    pub applied: usize,
    /// Records already in the player's file.
    pub skipped: usize,
    /// Records that can never apply, kept in `journal-orphans/`.
    pub orphaned: usize,
    /// Records that could not apply yet (their player is held by a server
    /// that has not applied them, or another server's journal they follow
    /// cannot be read): their segments stay for the next start and for
    /// takeovers, which read this journal.
    pub kept: usize,
}

/// What replay needs from the server.
#[derive(Debug)]
pub struct ReplayDeps<'a> {
    pub titles: &'a Titles,
    pub blobs: &'a dyn BlobStore,
    pub world: &'a dyn WorldStore,
    pub recovery: &'a Recovery,
    pub server_id: &'a str,
    pub lock_ttl_ms: i64,
    /// How long to wait for a player held by another server (one taking
    /// the player over is done in moments).
    pub lock_wait: Duration,
    pub now_ms: i64,
    pub data_dir: &'a Path,
    /// How a player file replayed into is written.
    pub format: citadel_runtime::FileFormat,
}

/// The title versions records ran on, each resolved once (from memory or
/// the version store, where a stored version is read and validated again).
#[derive(Debug, Default)]
pub(crate) struct Versions(std::sync::Mutex<HashMap<(String, String), Option<Title>>>);

impl Versions {
    /// Finds the title versions `records` ran on, each once (the store is
    /// read here, so that [`Versions::get`] never waits for it).
    pub(crate) async fn resolve(&self, titles: &Titles, records: &[Record]) {
        for r in records {
            let key = (r.title.clone(), r.content_version.clone());
            if self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
                continue;
            }
            let found = match titles.get(&r.title) {
                None => None,
                Some(current) if current.content_version == r.content_version => Some(current),
                Some(current) => Some(titles.version(&r.title, &r.content_version).await.unwrap_or_else(|| {
                    tracing::warn!(title = %r.title, version = %r.content_version, "a journal record's title version is not kept; replaying it on the current one");
                    current
                })),
            };
            self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key, found);
        }
    }

    /// `None` when the title is no longer served; the current version when
    /// the one named is not kept (or was not resolved).
    fn get(&self, titles: &Titles, title: &str, version: &str) -> Option<Title> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(title.to_string(), version.to_string())) {
            Some(found) => found.clone(),
            None => titles.get(title),
        }
    }
}

/// Re-runs onto `state` the records numbered right above its `seq`, in
/// order, each on the title version it first ran on. Records already in
/// the state are skipped; those that cannot apply (a record missing before
/// them, their title no longer served) are returned with the reason.
pub(crate) fn reapply(
    titles: &Titles,
    versions: &Versions,
    state: &mut PlayerState,
    records: Vec<Record>,
) -> (Replayed, Vec<(Record, String)>) {
    let mut done = Replayed::default();
    let mut orphans = Vec::new();
    for r in records {
        if r.seq <= state.seq {
            done.skipped += 1;
            continue;
        }
        if r.seq != state.seq + 1 || !orphans.is_empty() {
            orphans.push((r, format!("a record is missing before it (the file has seq {})", state.seq)));
            continue;
        }
        let Some(title) = versions.get(titles, &r.title, &r.content_version) else {
            orphans.push((r, "the title is no longer served".to_string()));
            continue;
        };
        let mut rng = Rng::new(r.rng);
        // The outcome was already answered; replay only rebuilds the state.
        let result = execute(&title, state, &r.op, r.now_ms, &mut rng);
        state.seq = r.seq;
        crate::apply::remember_key(state, r.key.as_deref(), &result);
        done.applied += 1;
    }
    (done, orphans)
}

/// What replaying one player came to.
struct PlayerReplay {
    done: Replayed,
    orphans: Vec<(Record, String)>,
}

/// Applies every record not yet in its player's file and saves the files.
/// Runs at start, before the server accepts anyone. A storage error stops
/// the start (the journal stays for the next attempt). A record that can
/// never apply (its title is gone, a record before it is missing, the
/// player's file is damaged) is
/// logged and kept in `journal-orphans/` for support. A player held by
/// another server is waited for a while; if that server has the records
/// already (its takeover applied them), they are done, otherwise they are
/// kept in this journal ([`Replayed::kept`]) and replay goes on.
pub async fn replay(deps: &ReplayDeps<'_>, records: Vec<Record>) -> anyhow::Result<Replayed> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let mut by_player: BTreeMap<Key, Vec<Record>> = BTreeMap::new();
    for r in records {
        by_player.entry((r.title.clone(), r.player.clone())).or_default().push(r);
    }
    let versions = Versions::default();
    let versions = &versions;
    let outcomes: Vec<PlayerReplay> = stream::iter(by_player)
        .map(|(key, records)| replay_player(deps, versions, key, records))
        .buffer_unordered(REPLAY_PARALLEL_MAX)
        .try_collect()
        .await?;
    let mut total = Replayed::default();
    let mut orphans = Vec::new();
    for r in outcomes {
        total.players += r.done.players;
        total.applied += r.done.applied;
        total.skipped += r.done.skipped;
        total.kept += r.done.kept;
        orphans.extend(r.orphans);
    }
    total.orphaned = orphans.len();
    if !orphans.is_empty() {
        let dir = deps.data_dir.join("journal-orphans");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.jsonl", deps.now_ms));
        let mut text = String::new();
        for (record, reason) in &orphans {
            text.push_str(&serde_json::json!({ "reason": reason, "record": record }).to_string());
            text.push('\n');
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        tracing::error!(count = orphans.len(), path = %path.display(), "journal records could not be replayed; kept for support");
    }
    Ok(total)
}

async fn replay_player(
    deps: &ReplayDeps<'_>,
    versions: &Versions,
    key: Key,
    records: Vec<Record>,
) -> anyhow::Result<PlayerReplay> {
    let blob_key = blob_key(&key.0, &key.1);
    let lock = player_lock(&key.0, &key.1);
    let give_up = Instant::now() + deps.lock_wait;
    let lease = loop {
        if let Some(lease) = deps.world.acquire(&lock, deps.server_id, deps.lock_ttl_ms, deps.now_ms).await? {
            break lease;
        }
        if Instant::now() >= give_up {
            return held_elsewhere(deps, &key, records).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let result = async {
        // Another server's work on the player comes first: it held them
        // after this server's records were written (and died unsaved).
        let mut records = records;
        match lease.recover_from.as_deref() {
            Some(from) if from != deps.server_id && !from.starts_with("raid:") => {
                match deps.recovery.records(deps.world, from, &key).await {
                    Ok(theirs) => {
                        records.extend(theirs);
                        records.sort_by_key(|r| r.seq);
                        records.dedup_by_key(|r| r.seq);
                    }
                    Err(e) => {
                        deps.recovery.note_unsaved(key.clone());
                        tracing::error!(title = %key.0, player = %key.1, error = %e.message, "cannot replay a player yet; their records stay in the journal");
                        let kept = records.len();
                        return Ok((PlayerReplay { done: Replayed { kept, ..Replayed::default() }, orphans: Vec::new() }, false));
                    }
                }
            }
            _ => {}
        }
        let Some((bytes, etag)) = deps.blobs.get(&blob_key).await? else {
            // Sessions create the file before their first operation.
            let orphans = records.into_iter().map(|r| (r, "the player file does not exist".to_string())).collect();
            return Ok((PlayerReplay { done: Replayed::default(), orphans }, true));
        };
        let mut state = match PlayerState::decode(&bytes) {
            Ok((state, _)) => state,
            // Damaged for good: the file is left as it is and its records
            // set aside with the others that cannot apply, so that one
            // player's file does not keep the server from starting.
            Err(e) => {
                let why = format!("the player file cannot be read ({e}); restore a snapshot, then apply these by hand");
                let orphans = records.into_iter().map(|r| (r, why.clone())).collect();
                return Ok((PlayerReplay { done: Replayed::default(), orphans }, true));
            }
        };
        versions.resolve(deps.titles, &records).await;
        let (mut done, orphans) = reapply(deps.titles, versions, &mut state, records);
        if done.applied > 0 {
            match deps.blobs.put(&blob_key, state.encode(deps.format), Precondition::Matches(etag)).await {
                Ok(_) => done.players = 1,
                Err(BlobError::PreconditionFailed) => anyhow::bail!("{blob_key} changed during replay"),
                Err(e) => return Err(e).with_context(|| format!("saving {blob_key}")),
            }
        }
        Ok((PlayerReplay { done, orphans }, true))
    }
    .await;
    let mut lease = lease;
    if let Ok((_, true)) = &result {
        if lease.recover_from.is_some() {
            // Everything owed to the player is in the file now.
            match deps.world.recovered(&lease).await {
                Ok(Some(l)) => lease = l,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(lock = %lease.name, error = %e, "clearing a player's recovery failed; the next holder reads the journal again")
                }
            }
        }
    }
    if let Err(e) = deps.world.release(&lease).await {
        tracing::warn!(lock = %lease.name, error = %e, "releasing a player lock after replay failed; it expires by itself");
    }
    result.map(|(r, _)| r)
}

/// A player another server holds: done if its file has every record
/// already (that server took the player over from this one), otherwise kept.
async fn held_elsewhere(deps: &ReplayDeps<'_>, key: &Key, records: Vec<Record>) -> anyhow::Result<PlayerReplay> {
    let blob_key = blob_key(&key.0, &key.1);
    let seq = match deps.blobs.get(&blob_key).await? {
        Some((bytes, _)) => match PlayerState::decode(&bytes) {
            Ok((state, _)) => state.seq,
            // Unreadable: nothing shows the records are in it; keep them.
            Err(e) => {
                tracing::error!(key = %blob_key, error = %e, "a player file cannot be read; its journal records are kept");
                0
            }
        },
        None => 0,
    };
    let mut done = Replayed::default();
    for r in &records {
        if r.seq <= seq {
            done.skipped += 1;
        } else {
            done.kept += 1;
        }
    }
    if done.kept > 0 {
        deps.recovery.note_unsaved(key.clone());
        tracing::error!(title = %key.0, player = %key.1, kept = done.kept, "a player held by another server lacks this server's journal records; they stay in the journal");
    }
    Ok(PlayerReplay { done, orphans: Vec::new() })
}

/// Fulfils the duty a fresh lease on a player carries: applies and saves
/// what the server named in `lease.recover_from` acknowledged for them,
/// then clears the duty. Returns the lease to go on with. On an error the
/// caller releases `lease` as it is, which keeps the duty on the lock.
pub(crate) async fn take_over(deps: &Deps, key: &Key, lease: Lease) -> Result<Lease, ApiError> {
    let Some(from) = lease.recover_from.clone() else { return Ok(lease) };
    // A raid writes its defender's file itself, only after its commit
    // (and whatever it left is finished from the raid record): a raid's
    // lease never holds journaled work.
    if !from.starts_with("raid:") {
        let records = deps.recovery.records(&*deps.world, &from, key).await?;
        if !records.is_empty() {
            apply_records(deps, key, &from, records).await?;
        }
    }
    let lease =
        deps.world.recovered(&lease).await.map_err(|e| ApiError::new(Code::Internal, e.to_string()))?.ok_or_else(
            || ApiError::new(Code::PlayerLocked, "the player's lock was taken while recovering them; retry"),
        )?;
    if from == deps.server_id {
        deps.recovery.forget_unsaved(key);
    }
    deps.recovery.settled(key).await;
    Ok(lease)
}

/// Re-runs a dead server's records for one player and saves the file.
async fn apply_records(deps: &Deps, key: &Key, from: &str, records: Vec<Record>) -> Result<(), ApiError> {
    let Some((mut state, etag)) = read_player(&*deps.blobs, &key.0, &key.1).await? else {
        tracing::error!(title = %key.0, player = %key.1, server = %from, count = records.len(), "journal records for a player without a file cannot apply");
        return Ok(());
    };
    let versions = Versions::default();
    versions.resolve(&deps.titles, &records).await;
    let (done, missing) = reapply(&deps.titles, &versions, &mut state, records);
    if !missing.is_empty() {
        tracing::error!(title = %key.0, player = %key.1, server = %from, count = missing.len(), reason = %missing[0].1, "journal records of a takeover could not apply");
    }
    if done.applied == 0 {
        return Ok(());
    }
    let blob_key = blob_key(&key.0, &key.1);
    deps.blobs
        .put(&blob_key, state.encode(deps.config.player_file_format), citadel_store::blob::Precondition::Matches(etag))
        .await
        .map_err(|e| ApiError::new(Code::Internal, format!("saving {blob_key} after a takeover: {e}")))?;
    tracing::info!(title = %key.0, player = %key.1, server = %from, applied = done.applied, seq = state.seq, "took a player over with the operations their last server acknowledged");
    Ok(())
}
