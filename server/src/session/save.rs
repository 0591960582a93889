//! When a session saves, renews its lock and snapshots the player.
//! Storage calls never hold up a player's requests: a periodic save
//! serializes the state, then writes it in the background while the
//! session goes on applying requests; renewals run beside requests the
//! same way. A request runs only while the lease has a margin left.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Background, Session};
use crate::deps::Deps;
use crate::player_file::{blob_key, write_snapshot};
use crate::protocol::{ApiError, Code};
use citadel_store::blob::Precondition;
use citadel_store::world::Lease;

/// A request runs only while the player's lease has at least this part of
/// its lifetime left (a sixth: 10 s of the default 60): a request, its
/// journal commit and a slow world store fit in it many times over, so
/// nothing is acknowledged by a server whose lease may have run out.
const LEASE_MARGIN_DIVISOR: i64 = 6;

/// A player's file is snapshotted when saved if the last snapshot (the
/// file's `snapshot_ms`) is older than this: at most one extra write per
/// player per hour, however many sessions they play.
const SNAPSHOT_INTERVAL_MS: i64 = 60 * 60 * 1000;

/// How a background save ended.
pub(super) enum SaveOutcome {
    /// The file now holds every operation up to `seq`.
    Saved { etag: citadel_store::blob::Etag, seq: u64 },
    /// The stored file moved on: another server wrote it.
    Fenced,
    /// The journal failed before the state's records were durable, so the
    /// state must not reach the file.
    NotDurable,
    /// Storage failed; the next save tries again.
    Failed(String),
}

pub(super) type RenewOutcome = Result<Option<Lease>, citadel_store::world::WorldError>;

impl Session {
    /// True while the player has operations that are in memory only and
    /// this session may still save.
    pub(super) fn unsaved(&self, deps: &Deps) -> bool {
        self.state.seq > self.saved_seq && !self.fenced && !deps.journal.failed()
    }

    /// Starts extending the player's lock, unless the session is fenced
    /// (it will not write the player again, so it must not keep them locked).
    pub(super) fn start_renew(&self, deps: &Arc<Deps>) -> Option<Background<RenewOutcome>> {
        if self.fenced {
            return None;
        }
        let (deps, lease) = (deps.clone(), self.lease.clone());
        Some(Background::spawn(async move {
            let ttl = deps.config.lock_ttl_seconds as i64 * 1000;
            deps.world.renew(&lease, ttl, deps.clock.now_ms()).await
        }))
    }

    /// Makes sure the player's lease outlives this request by a margin,
    /// renewing it now if not: once it expires another server may take
    /// the player over, and what this one acknowledged after that would
    /// be missing from that server's recovery. Renewals in the background
    /// keep this from ever waiting while the world store answers.
    pub(super) async fn hold_lease(&mut self, deps: &Deps, now: i64) -> Result<(), ApiError> {
        let ttl = deps.config.lock_ttl_seconds as i64 * 1000;
        if self.lease.expires_ms - now >= ttl / LEASE_MARGIN_DIVISOR {
            return Ok(());
        }
        let renewed = deps.world.renew(&self.lease, ttl, now).await;
        self.renewed(renewed);
        if self.fenced {
            return Err(ApiError::new(Code::Internal, "this player's lock was lost; log in again"));
        }
        if self.lease.expires_ms - now < ttl / LEASE_MARGIN_DIVISOR {
            return Err(ApiError::new(
                Code::Internal,
                "this player's lock could not be renewed; the action was not applied",
            ));
        }
        Ok(())
    }

    /// A lost lock fences the session.
    pub(super) fn renewed(&mut self, out: RenewOutcome) {
        match out {
            Ok(Some(lease)) => self.lease = lease,
            Ok(None) => {
                tracing::error!(lock = %self.lease.name, "player lock lost; this session will not write the player again");
                self.fenced = true;
            }
            // A transient store error: the lease is still valid until it
            // expires, and the next tick tries again.
            Err(e) => tracing::warn!(lock = %self.lease.name, error = %e, "renewing the player lock failed"),
        }
    }

    pub(super) async fn release(&self, deps: &Deps) {
        if let Err(e) = deps.world.release(&self.lease).await {
            tracing::warn!(lock = %self.lease.name, error = %e, "releasing the player lock failed; it expires by itself");
        }
    }

    /// Starts saving the state as it is now, if it has unsaved operations.
    /// The state is serialized here; the write runs in the background,
    /// after the journal holds every operation the state contains (one
    /// whose record failed was answered `not_durable` and must not appear
    /// in the file later). Only one save runs at a time, so each write is
    /// conditional on the version the previous one wrote.
    pub(super) async fn start_save(&mut self, deps: &Arc<Deps>, blob_key: &str) -> Option<Background<SaveOutcome>> {
        if !self.unsaved(deps) {
            return None;
        }
        let now = deps.clock.now_ms();
        // The file saved records the snapshot taken with it (a snapshot
        // that then fails to write is logged, and the next is an hour on).
        let due = now - self.state.snapshot_ms >= SNAPSHOT_INTERVAL_MS;
        if due {
            self.state.snapshot_ms = now;
        }
        let bytes = self.state.encode(deps.config.player_file_format);
        let snapshot = due.then(|| (self.key.clone(), bytes.clone()));
        let seq = self.state.seq;
        let durable = if self.in_flight.load(Ordering::Acquire) > 0 { Some(deps.journal.mark().await) } else { None };
        let (deps, blob_key, cond) = (deps.clone(), blob_key.to_string(), Precondition::Matches(self.etag.clone()));
        Some(Background::spawn(async move {
            if let Some(durable) = durable {
                if durable.await.is_err() {
                    return SaveOutcome::NotDurable;
                }
            }
            if deps.journal.failed() {
                return SaveOutcome::NotDurable;
            }
            match deps.blobs.put(&blob_key, bytes, cond).await {
                Ok(etag) => {
                    if let Some(((title, player), copy)) = snapshot {
                        write_snapshot(&*deps.blobs, &title, &player, copy, now, seq).await;
                    }
                    SaveOutcome::Saved { etag, seq }
                }
                Err(citadel_store::blob::BlobError::PreconditionFailed) => SaveOutcome::Fenced,
                Err(e) => SaveOutcome::Failed(e.to_string()),
            }
        }))
    }

    /// Takes in the end of a save.
    pub(super) async fn saved(&mut self, deps: &Deps, out: SaveOutcome) {
        match out {
            SaveOutcome::Saved { etag, seq } => {
                self.etag = etag;
                self.saved_seq = seq;
                deps.journal.saved(self.key.clone(), seq).await;
            }
            SaveOutcome::Fenced => {
                tracing::error!(
                    key = %blob_key(&self.key.0, &self.key.1),
                    "player file changed by another writer; this session will not write it again"
                );
                self.fenced = true;
            }
            SaveOutcome::NotDurable => {}
            // Kept unsaved: the next tick or the final save tries again.
            SaveOutcome::Failed(e) => {
                tracing::error!(key = %blob_key(&self.key.0, &self.key.1), error = %e, "saving the player failed")
            }
        }
    }

    /// Writes a snapshot of the state as it is in memory now (before an
    /// admin change, so that it can be undone).
    pub(super) async fn snapshot(&mut self, deps: &Deps, now: i64) {
        self.state.snapshot_ms = now;
        let bytes = self.state.encode(deps.config.player_file_format);
        write_snapshot(&*deps.blobs, &self.key.0, &self.key.1, bytes, now, self.state.seq).await;
    }

    /// Lets a save already running finish, then saves what is left, and
    /// waits for both.
    pub(super) async fn save_now(
        &mut self,
        deps: &Arc<Deps>,
        blob_key: &str,
        running: Option<Background<SaveOutcome>>,
    ) {
        if let Some(f) = running {
            self.saved(deps, f.await).await;
        }
        if let Some(f) = self.start_save(deps, blob_key).await {
            self.saved(deps, f.await).await;
        }
    }
}
