//! A player's things in storage: where the file, its snapshots and its
//! lock are, and reading and writing the file. Used by sessions, replay,
//! takeovers and support alike.

use citadel_runtime::{FileFormat, PlayerState};
use citadel_store::blob::{BlobStore, Etag, Precondition};

use crate::protocol::{ApiError, Code};

/// Where a player's file lives in the blob store. The name ends in `.json`
/// whatever the file's format (`player_file_format`), which its header
/// names: changing the name would have made every existing file a second
/// read away.
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
    let (state, _) = PlayerState::decode(&bytes).map_err(|e| {
        tracing::error!(key = %key, error = %e, "a player file cannot be read; it is left as it is");
        ApiError::new(Code::PlayerFileDamaged, format!("{key}: {e}"))
    })?;
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
    format: FileFormat,
) -> Result<Etag, ApiError> {
    let key = blob_key(title, player);
    blobs
        .put(&key, state.encode(format), Precondition::Matches(etag))
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

/// Where `citadel player show` reads a file from.
#[derive(Debug, Clone)]
pub enum ShowSource {
    /// A file on disk (a player file or a snapshot, copied anywhere).
    Path(std::path::PathBuf),
    /// A player's file in the configured blob store (the data folder or S3).
    Player { title: String, player: String },
}

/// `citadel player show`: a player file in any format as the state's JSON
/// (migrated to the current `format_version`, pretty-printed), and a line
/// describing the file (format, version, size). The same state gives the
/// same JSON whatever the file's format.
pub async fn show(config: &crate::Config, source: &ShowSource) -> anyhow::Result<(String, String)> {
    use anyhow::Context;
    let (bytes, name) = match source {
        ShowSource::Path(path) => {
            (std::fs::read(path).with_context(|| format!("reading {}", path.display()))?, path.display().to_string())
        }
        ShowSource::Player { title, player } => {
            let blobs: Box<dyn BlobStore> = match &config.s3 {
                Some(s3) => Box::new(citadel_store::s3::S3BlobStore::new(s3, |k| std::env::var(k).ok())?),
                None => Box::new(citadel_store::blob::FsBlobStore::new(&config.data_dir)),
            };
            let key = blob_key(title, player);
            anyhow::ensure!(citadel_store::blob::valid_key(&key), "`{title}`/`{player}` is not a player");
            let (bytes, _) = blobs.get(&key).await.with_context(|| format!("reading {key}"))?.with_context(|| {
                format!("no file {key}: `{player}` never played `{title}` (or this is not its data folder or bucket)")
            })?;
            (bytes, key)
        }
    };
    let header = PlayerState::header(&bytes).with_context(|| name.clone())?;
    let (state, format) = PlayerState::decode(&bytes).with_context(|| name.clone())?;
    let about = format!(
        "{name}: {}, format_version {}, {} bytes{}",
        format.map_or_else(|| "plain JSON (from before headers)".to_string(), |f| f.to_string()),
        header.format_version,
        bytes.len(),
        if header.format_version < u64::from(citadel_runtime::STATE_FORMAT_VERSION) {
            format!(" (shown migrated to format_version {})", citadel_runtime::STATE_FORMAT_VERSION)
        } else {
            String::new()
        }
    );
    // Serializing plain maps, vectors and integers cannot fail.
    Ok((serde_json::to_string_pretty(&state).unwrap_or_default(), about))
}
