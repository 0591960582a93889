//! A player's things in storage: where the file, its snapshots and its
//! lock are, and reading and writing the file. Used by sessions, replay,
//! takeovers and support alike.

use citadel_runtime::PlayerState;
use citadel_store::blob::{BlobStore, Etag, Precondition};

use crate::protocol::{ApiError, Code};

/// Where a player's file lives in the blob store.
pub(crate) fn blob_key(title: &str, player: &str) -> String {
    format!("players/{title}/{player}.json")
}

/// The lock that keeps a player on one server, and that a raid takes.
pub(crate) fn player_lock(title: &str, player: &str) -> String {
    format!("player:{}", blob_key(title, player))
}

/// Where a player's snapshots live: one folder per player, one blob per
/// snapshot named `<time ms, 13 digits>-<seq, 10 digits>.json`, so names
/// sort by time.
pub(crate) fn snapshot_dir(title: &str, player: &str) -> String {
    format!("snapshots/{title}/{player}")
}

/// Snapshots kept per player (the oldest beyond this are deleted): a
/// month of daily sessions, for support to go back to.
pub const SNAPSHOTS_KEPT: usize = 30;

/// A player's file and its version; `None` if they never played.
pub(crate) async fn read_player(
    blobs: &dyn BlobStore,
    title: &str,
    player: &str,
) -> Result<Option<(PlayerState, Etag)>, ApiError> {
    let key = blob_key(title, player);
    let Some((bytes, etag)) =
        blobs.get(&key).await.map_err(|e| ApiError::new(Code::Internal, format!("reading {key}: {e}")))?
    else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| ApiError::new(Code::Internal, format!("{key} is not UTF-8")))?;
    let state = PlayerState::from_json(&text).map_err(|e| ApiError::new(Code::Internal, format!("{key}: {e}")))?;
    Ok(Some((state, etag)))
}

/// Writes a player's file over the version read (the caller holds the
/// player's lock, so a refused write means something broke that rule).
pub(crate) async fn write_player(
    blobs: &dyn BlobStore,
    title: &str,
    player: &str,
    state: &PlayerState,
    etag: Etag,
) -> Result<Etag, ApiError> {
    let key = blob_key(title, player);
    blobs
        .put(&key, state.to_json().into_bytes(), Precondition::Matches(etag))
        .await
        .map_err(|e| ApiError::new(Code::Internal, format!("writing {key}: {e}")))
}

/// Writes one snapshot of a player and deletes the oldest beyond
/// [`SNAPSHOTS_KEPT`]. A failure is logged, never passed on: a snapshot is
/// a convenience for support, the player file is what counts.
pub(crate) async fn write_snapshot(
    blobs: &dyn BlobStore,
    title: &str,
    player: &str,
    bytes: Vec<u8>,
    now: i64,
    seq: u64,
) {
    let dir = snapshot_dir(title, player);
    let key = format!("{dir}/{now:013}-{seq:010}.json");
    match blobs.put(&key, bytes, Precondition::Absent).await {
        // The same name twice: written in the same millisecond at the same
        // seq, so it holds the same state.
        Ok(_) | Err(citadel_store::blob::BlobError::PreconditionFailed) => {}
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "writing a player snapshot failed");
            return;
        }
    }
    match blobs.list(&dir).await {
        Ok(keys) if keys.len() > SNAPSHOTS_KEPT => {
            for old in &keys[..keys.len() - SNAPSHOTS_KEPT] {
                if let Err(e) = blobs.delete(old).await {
                    tracing::warn!(key = %old, error = %e, "deleting an old player snapshot failed");
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(dir = %dir, error = %e, "listing player snapshots failed"),
    }
}
