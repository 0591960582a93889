//! Blob storage for player files, behind a trait so that the filesystem
//! (embedded default) and S3 (production) are interchangeable.
//!
//! Writes are conditional: a writer says which version it last read, and
//! the write is refused if the stored version has moved on. A server that
//! lost a player's lock therefore can never overwrite a newer file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// A version tag of a stored blob.
pub type Etag = String;

/// The largest blob read or written. Player files are tens of kilobytes; a
/// file this large is corrupt or hostile, and holding it would cost memory
/// for as long as the player is online.
pub const BLOB_BYTES_MAX: usize = 16 * 1024 * 1024;

/// When a write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Only if no blob exists under the key.
    Absent,
    /// Only if the stored blob has this version.
    Matches(Etag),
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the stored version changed since it was read; the write was refused")]
    PreconditionFailed,
    #[error("invalid blob key `{0}`")]
    BadKey(String),
    #[error("blob `{0}` is larger than {BLOB_BYTES_MAX} bytes")]
    TooLarge(String),
    #[error("{0}")]
    Backend(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

crate::decorate::decorated_traits! {
over BlobStore;

/// Player file storage: conditional writes, so that a server that lost a
/// player's lock can never overwrite a newer file.
pub trait BlobStore {
    /// The blob and its version, or `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Etag)>, BlobError>;
    /// Stores `bytes` if `cond` holds; returns the new version.
    async fn put(&self, key: &str, bytes: Vec<u8>, cond: Precondition) -> Result<Etag, BlobError>;
    /// The keys directly inside the folder `dir` (no deeper), in byte
    /// order, at most [`LIST_MAX`] (the first ones).
    async fn list(&self, dir: &str) -> Result<Vec<String>, BlobError>;
    /// Removes a blob; removing an absent one is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
}
}

/// Most keys one `list` returns: folders listed are a player's snapshots,
/// a few dozen at most; a larger folder is not one of ours.
pub const LIST_MAX: usize = 1000;

/// Keys are `/`-separated paths of plain segments (no `..`, no absolute paths).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
}

fn etag_of(bytes: &[u8]) -> Etag {
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Player files on the local filesystem. Each write goes to a temporary
/// file, is fsynced, renamed over the old one, and the directory is fsynced,
/// so a crash leaves either the old or the new file, never a torn one.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    /// One lock per key, so that check-then-write is atomic within this
    /// process (another process never writes the same player: the player
    /// lock ensures that).
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Bounds the file operations running at once (see [`FS_IO_MAX`]).
    io: tokio::sync::Semaphore,
}

/// File operations (each a few system calls and an fsync) running at once
/// on blocking threads. More would not make the disk faster, and every
/// runnable blocking thread takes CPU from the threads answering players:
/// unbounded, a burst of saves starved the runtime for a second.
const FS_IO_MAX: usize = 2;

impl FsBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> FsBlobStore {
        FsBlobStore { root: root.into(), locks: Mutex::new(HashMap::new()), io: tokio::sync::Semaphore::new(FS_IO_MAX) }
    }

    /// Runs `f` on a blocking thread once an I/O slot is free.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
    ) -> Result<T, BlobError> {
        // The semaphore is never closed.
        let _slot = self.io.acquire().await.map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        if !valid_key(key) {
            return Err(BlobError::BadKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    fn key_lock(&self, key: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, BlobError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(BLOB_BYTES_MAX as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > BLOB_BYTES_MAX {
        return Err(BlobError::TooLarge(path.display().to_string()));
    }
    Ok(Some(bytes))
}

/// Writes a file so that a crash leaves the old or the new one, never a
/// mix: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().ok_or_else(|| std::io::Error::other("blob path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    // Unique per write: two servers in one process (tests), or two writes
    // of the same path at once, must not rename each other's file away.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Etag)>, BlobError> {
        let path = self.path(key)?;
        let bytes = self.blocking(move || read_opt(&path)).await?;

        Ok(bytes.map(|b| {
            let tag = etag_of(&b);
            (b, tag)
        }))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, cond: Precondition) -> Result<Etag, BlobError> {
        let path = self.path(key)?;
        if bytes.len() > BLOB_BYTES_MAX {
            return Err(BlobError::TooLarge(key.to_string()));
        }
        let lock = self.key_lock(key);
        let held = lock.clone();
        let result = self
            .blocking(move || {
                let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let current = read_opt(&path)?.map(|b| etag_of(&b));
                let ok = match (&cond, &current) {
                    (Precondition::Absent, None) => true,
                    (Precondition::Matches(want), Some(have)) => want == have,
                    _ => false,
                };
                if !ok {
                    return Err(BlobError::PreconditionFailed);
                }
                write_atomic(&path, &bytes)?;
                Ok(etag_of(&bytes))
            })
            .await;
        // Forget the key's lock unless another writer holds it, so the map
        // does not keep one entry for every player ever saved.
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&held) == 2 {
            locks.remove(key);
        }
        result
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, BlobError> {
        let path = self.path(dir)?;
        let dir = dir.to_string();
        self.blocking(move || {
            let entries = match std::fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut keys = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Files only, and never a write's temporary file.
                if entry.file_type()?.is_file() && !name.contains(".tmp") && valid_key(&name) {
                    keys.push(format!("{dir}/{name}"));
                }
            }
            keys.sort();
            keys.truncate(LIST_MAX);
            Ok(keys)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key)?;
        self.blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_conditional_on_the_version_read() {
        let root = std::env::temp_dir().join(format!("citadel-blob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let s = FsBlobStore::new(&root);
        let k = "players/t/p.json";
        assert!(s.get(k).await.unwrap().is_none());
        let e1 = s.put(k, b"one".to_vec(), Precondition::Absent).await.unwrap();
        assert!(matches!(s.put(k, b"x".to_vec(), Precondition::Absent).await, Err(BlobError::PreconditionFailed)));
        let e2 = s.put(k, b"two".to_vec(), Precondition::Matches(e1.clone())).await.unwrap();
        assert!(matches!(
            s.put(k, b"stale".to_vec(), Precondition::Matches(e1)).await,
            Err(BlobError::PreconditionFailed)
        ));
        assert_eq!(s.get(k).await.unwrap(), Some((b"two".to_vec(), e2)));
        assert!(s.locks.lock().unwrap().is_empty(), "per-key locks are forgotten after use");
        // No temporary files are left behind.
        let names: Vec<_> =
            std::fs::read_dir(root.join("players/t")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("p.json")]);
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(matches!(s.put(bad, vec![], Precondition::Absent).await, Err(BlobError::BadKey(_))), "{bad}");
            assert!(matches!(s.list(bad).await, Err(BlobError::BadKey(_))), "{bad}");
        }
    }
}
