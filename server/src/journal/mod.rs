//! The write-ahead journal: an operation on a player is acknowledged only
//! once its record is on disk.
//!
//! A session applies an operation to the player in memory, numbers it (the
//! player's `seq` goes up by one), and hands the journal a [`Record`]: the
//! player, the operation, the time and the random generator's state it ran
//! with. One writer thread appends records to the active segment file and
//! fsyncs once per batch (group commit: records that arrive during an fsync
//! share the next one), then answers every request of the batch.
//!
//! Records are redo records. Operations are pure functions of (title,
//! state, operation, time, rng), so after a crash replay (`crate::replay`) loads each
//! player's file and re-runs exactly the records numbered above the file's
//! `seq`: nothing acknowledged is lost and nothing is applied twice.
//!
//! Once a player is saved, the session tells the journal up to which `seq`;
//! a closed segment whose every player is saved that far is deleted
//! (checkpoint and truncation). A clean shutdown leaves no segment behind.
//!
//! Answers are sent from inside the async runtime, not from the writer
//! thread: the writer hands each finished batch to an acknowledging task,
//! so a batch costs one wake-up across threads instead of one per answer.
//!
//! The journal is fail-stop: after one failed write or fsync it refuses
//! every later record (an fsync error may have dropped data the kernel
//! already claimed to have written, so retrying proves nothing), sessions
//! answer `not_durable`, and the players' files are left for replay.
//!
//! Segment files are `journal/<id>.log`, one record per line:
//! `<crc32 of the JSON, 8 hex digits> <record JSON>\n`, followed by zeros:
//! a segment is written full of zeros and fsynced before its first record
//! (by a helper thread, ahead of time), so that appending overwrites blocks
//! that already exist and an fdatasync writes data only, never the file's
//! size or block map (half the disk writes per commit, and no metadata
//! commit to wait for). A record never contains a zero byte, so the first
//! zero ends a segment's records.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::apply::Op;

pub mod jetstream;

/// The journal record format. Replay refuses records newer than this (a
/// journal written by a newer server: downgrading over it would drop them).
/// Version 2 adds the request's idempotency `key` (absent in version 1
/// records, which read as records without one).
pub const JOURNAL_FORMAT_VERSION: u32 = 2;

/// A segment this large is closed and a new one started, so that the
/// records to read at start stay bounded and saved ones can be deleted.
/// It is also the size a segment is filled to with zeros ahead of use:
/// at 10,000 records a second (about 2 MB/s) a new one every few seconds.
const SEGMENT_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// A segment this old is closed at the next write even if small: records
/// are deleted about this long (plus the save interval) after their player
/// is saved.
const SEGMENT_AGE_MAX: Duration = Duration::from_secs(30);
/// Entries waiting for the writer. When full, sessions wait to append
/// (backpressure), so a slow disk cannot make memory grow without bound.
pub const QUEUE_MAX: usize = 16_384;
/// Records written per fsync at most; bounds the batch buffer (records are
/// a few hundred bytes, so a full batch is about a megabyte).
const BATCH_MAX: usize = 4_096;
/// The shortest time from one commit (fsync) to the next. Each fsync costs
/// CPU in the kernel whatever it carries; at 10,000 records a second,
/// committing as fast as the disk allows meant well over 1,000 fsyncs a
/// second on the server's one core. Waiting this long gathers more records
/// per commit for at most this much added latency (2 ms cost more in
/// latency than it saved in CPU: docs/benchmarks.md).
const COMMIT_INTERVAL_MIN: Duration = Duration::from_millis(1);
/// The longest record line replay accepts; anything longer is corruption
/// (a record holds one request of at most `limits.message_bytes_max`).
pub(crate) const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// One journaled operation: enough to re-run it exactly as it first ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format_version: u32,
    pub title: String,
    pub player: String,
    /// The player's `seq` after this operation; it applies to a state whose
    /// `seq` is one less, and is already in a state whose `seq` is this or more.
    pub seq: u64,
    pub now_ms: i64,
    /// The random generator's state before the operation.
    pub rng: u64,
    /// The title content the operation ran under.
    pub content_version: String,
    pub op: Op,
    /// The request's idempotency key, remembered in the player's state
    /// (`answered`) once applied; replay remembers it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Why an operation could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the journal failed earlier and accepts no more records (see the server log)")]
pub struct JournalFailed;

/// Called by the writer once a record (or barrier) is durable, or is not.
pub type Done = Box<dyn FnOnce(Result<(), JournalFailed>) + Send>;

/// A player: (title, player id).
pub type Key = (String, String);

/// A finished batch's waiters and its outcome.
type Acks = (Vec<Done>, Result<(), JournalFailed>);

enum Entry {
    Append {
        line: Vec<u8>,
        key: Key,
        seq: u64,
        done: Done,
    },
    /// Answered after everything queued before it.
    Barrier(Done),
    /// The player is saved with this `seq`: their records up to it may go.
    Saved {
        key: Key,
        seq: u64,
    },
    /// The player's session ended without saving their records: they must
    /// outlive this server's own clean-up until a takeover applies them.
    Keep(Key),
    Close(oneshot::Sender<()>),
}

/// The journal of one server process.
pub struct Journal {
    /// `None` when journaling is off (`journal = false`, benchmarks only).
    tx: Option<mpsc::Sender<Entry>>,
    failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("enabled", &self.tx.is_some()).field("failed", &self.failed()).finish()
    }
}

impl Journal {
    /// Starts the writer on a new segment `first_id` in `dir`.
    /// With a profiler, every commit (write and fsync of a batch) is timed.
    pub fn open(dir: &Path, first_id: u64, profiler: Option<Arc<crate::profile::Profiler>>) -> anyhow::Result<Journal> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let failed = Arc::new(AtomicBool::new(false));
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            file: create_segment(dir, first_id, Fill::AtOnce)?,
            id: first_id,
            bytes: 0,
            opened: Instant::now(),
            pending: HashMap::new(),
            closed: BTreeMap::new(),
            failed: failed.clone(),
            buf: Vec::new(),
            spare: Some(Spare::prepare(dir, first_id + 1)),
            profiler,
        };
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        // Unbounded, yet bounded by the queue: a batch holds at most
        // BATCH_MAX waiters, and no more than QUEUE_MAX are queued.
        let (acks, mut batches) = mpsc::unbounded_channel::<Acks>();
        tokio::spawn(async move {
            while let Some((dones, result)) = batches.recv().await {
                for done in dones {
                    done(result.clone());
                }
            }
        });
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run(rx, acks))
            .context("starting the journal writer")?;
        Ok(Journal { tx: Some(tx), failed })
    }

    /// A journal that writes nothing and acknowledges at once: a crash
    /// loses every action since each player's last save.
    pub fn disabled() -> Journal {
        Journal { tx: None, failed: Arc::new(AtomicBool::new(false)) }
    }

    /// True once a write failed; no record is accepted after that.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Appends `record`; `done` runs once it is durable (or cannot be).
    /// Waits while the writer's queue is full.
    pub async fn append(&self, record: &Record, done: Done) {
        let Some(tx) = &self.tx else { return done(Ok(())) };
        let line = encode(record);
        let key = (record.title.clone(), record.player.clone());
        if let Err(mpsc::error::SendError(e)) = tx.send(Entry::Append { line, key, seq: record.seq, done }).await {
            fail_entry(e);
        }
    }

    /// Runs `done` after every record appended before it is durable (or
    /// failed): answers that must not overtake earlier ones go through here.
    pub async fn barrier(&self, done: Done) {
        let Some(tx) = &self.tx else { return done(Ok(())) };
        if let Err(mpsc::error::SendError(e)) = tx.send(Entry::Barrier(done)).await {
            fail_entry(e);
        }
    }

    /// Marks the records appended so far: the returned future resolves
    /// once they are all durable (or cannot be). The mark is placed now;
    /// waiting for it can happen elsewhere (a background save).
    pub async fn mark(&self) -> impl Future<Output = Result<(), JournalFailed>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.barrier(Box::new(move |r| {
            let _ = tx.send(r);
        }))
        .await;
        async move { rx.await.unwrap_or(Err(JournalFailed)) }
    }

    /// The player's file now holds every operation up to `seq`.
    pub async fn saved(&self, key: Key, seq: u64) {
        if let Some(tx) = &self.tx {
            // A closed writer has nothing left to truncate.
            let _ = tx.send(Entry::Saved { key, seq }).await;
        }
    }

    /// The player's session ended with records their file lacks (a save
    /// failed, or the lock was lost): they are kept for the takeover that
    /// applies them. The file journal keeps every segment a record of an
    /// unsaved player is in anyway; the JetStream journal moves the
    /// player's records out of the way of its own clean-up.
    pub async fn keep(&self, key: Key) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Entry::Keep(key)).await;
        }
    }

    /// Stops the writer after everything queued; deletes the segments if
    /// every player in them was saved.
    pub async fn close(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Entry::Close(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// The writer is gone (closed): whoever waits on this entry hears "failed".
fn fail_entry(e: Entry) {
    match e {
        Entry::Append { done, .. } | Entry::Barrier(done) => done(Err(JournalFailed)),
        Entry::Saved { .. } | Entry::Keep(_) | Entry::Close(_) => {}
    }
}

fn encode(record: &Record) -> Vec<u8> {
    // A record is plain strings, integers and an action: serializing cannot fail.
    let json = serde_json::to_vec(record).unwrap_or_default();
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

/// How a new segment's zeros are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// In one go: nothing is committing yet (the first segment, at start).
    AtOnce,
    /// In pieces with pauses, beside a writer that is committing.
    Paced,
}

/// Creates segment `id` filled with zeros, durable with its name, and
/// positioned at its start. On failure no file is left behind, so that a
/// later attempt can create the same segment.
fn create_segment(dir: &Path, id: u64, fill: Fill) -> anyhow::Result<std::fs::File> {
    let path = segment_path(dir, id);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    fill_segment(dir, &path, file, fill).inspect_err(|_| {
        let _ = std::fs::remove_file(&path);
    })
}

/// Paced zeros are written and synced this much at a time, with a pause
/// after each piece: a segment written in one go put megabytes in the
/// disk's queue ahead of the journal's next commit, and every answer waited
/// (tens of milliseconds at each rotation).
const ZERO_CHUNK_BYTES: usize = 256 * 1024;
const ZERO_CHUNK_PAUSE: Duration = Duration::from_millis(1);

fn fill_segment(dir: &Path, path: &Path, mut file: std::fs::File, fill: Fill) -> anyhow::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    // Real zeros, not `set_len`: a hole would be allocated on the first
    // write, and that allocation is metadata every commit would sync.
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut left = SEGMENT_BYTES_MAX;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n]).with_context(|| format!("filling {}", path.display()))?;
        left -= n as u64;
        if fill == Fill::Paced {
            file.sync_data().with_context(|| format!("filling {}", path.display()))?;
            std::thread::sleep(ZERO_CHUNK_PAUSE);
        }
    }
    file.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    // The new name must be durable before records in it are acknowledged.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
    file.seek(SeekFrom::Start(0)).with_context(|| format!("seeking {}", path.display()))?;
    Ok(file)
}

/// The next segment, being created by a helper thread so that rotating
/// never waits for a segment's zeros to be written.
struct Spare {
    id: u64,
    thread: std::thread::JoinHandle<anyhow::Result<std::fs::File>>,
}

impl Spare {
    fn prepare(dir: &Path, id: u64) -> Spare {
        let dir = dir.to_path_buf();
        Spare { id, thread: std::thread::spawn(move || create_segment(&dir, id, Fill::Paced)) }
    }

    /// Waits for the segment (at once, unless rotation came early).
    fn take(self) -> anyhow::Result<std::fs::File> {
        self.thread.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread preparing a journal segment panicked")))
    }
}

struct Writer {
    dir: PathBuf,
    file: std::fs::File,
    /// The active segment.
    id: u64,
    bytes: u64,
    opened: Instant,
    /// Players with records in the active segment, and their highest `seq` there.
    pending: HashMap<Key, u64>,
    /// Closed segments still holding records of unsaved players.
    closed: BTreeMap<u64, HashMap<Key, u64>>,
    failed: Arc<AtomicBool>,
    buf: Vec<u8>,
    /// The segment after the active one, prepared ahead of time.
    spare: Option<Spare>,
    profiler: Option<Arc<crate::profile::Profiler>>,
}

impl Writer {
    /// The writer loop. Order of operations per batch: take every queued
    /// entry (up to `BATCH_MAX`); write the records in one go and fsync;
    /// hand every waiter, in queue order, to the acknowledging task; apply
    /// checkpoints; rotate and delete segments.
    fn run(&mut self, mut rx: mpsc::Receiver<Entry>, acks: mpsc::UnboundedSender<Acks>) {
        let mut dones: Vec<Done> = Vec::new();
        let mut saved: Vec<(Key, u64)> = Vec::new();
        let mut committed = Instant::now();
        while let Some(first) = rx.blocking_recv() {
            if matches!(first, Entry::Append { .. }) {
                if let Some(wait) = COMMIT_INTERVAL_MIN.checked_sub(committed.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let mut close = None;
            self.buf.clear();
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(entry) = next.take() {
                taken += 1;
                match entry {
                    Entry::Append { line, key, seq, done } => {
                        if !self.failed() {
                            self.buf.extend_from_slice(&line);
                            self.pending.insert(key, seq);
                        }
                        dones.push(done);
                    }
                    Entry::Barrier(done) => dones.push(done),
                    Entry::Saved { key, seq } => saved.push((key, seq)),
                    Entry::Keep(_) => {}
                    Entry::Close(c) => {
                        close = Some(c);
                        break;
                    }
                }
                if taken < BATCH_MAX {
                    next = rx.try_recv().ok();
                }
            }
            let started = Instant::now();
            let wrote = !self.buf.is_empty();
            let result = self.write_batch();
            committed = Instant::now();
            if let (Some(p), true) = (&self.profiler, wrote) {
                p.record(crate::profile::Kind::Journal, "commit", "", committed - started);
            }
            if let Err(mpsc::error::SendError((dones, result))) = acks.send((std::mem::take(&mut dones), result)) {
                // The runtime is gone (the process is ending): answer here.
                for done in dones {
                    done(result.clone());
                }
            }
            for (key, seq) in saved.drain(..) {
                self.checkpoint(&key, seq);
            }
            self.rotate_and_truncate();
            if let Some(c) = close {
                self.finish();
                let _ = c.send(());
                return;
            }
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn write_batch(&mut self) -> Result<(), JournalFailed> {
        if self.failed() {
            return Err(JournalFailed);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        match self.file.write_all(&self.buf).and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                self.bytes += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                tracing::error!(segment = self.id, error = %e, "journal write failed; no more actions will be acknowledged");
                self.failed.store(true, Ordering::Release);
                Err(JournalFailed)
            }
        }
    }

    fn checkpoint(&mut self, key: &Key, seq: u64) {
        for map in std::iter::once(&mut self.pending).chain(self.closed.values_mut()) {
            if map.get(key).is_some_and(|&s| s <= seq) {
                map.remove(key);
            }
        }
    }

    fn rotate_and_truncate(&mut self) {
        if self.failed() {
            return;
        }
        let full = self.bytes >= SEGMENT_BYTES_MAX;
        let old = self.bytes > 0 && self.opened.elapsed() >= SEGMENT_AGE_MAX;
        if full || old {
            // The spare is always the next id; there is none only after
            // preparing it failed, and then this tries again.
            let next = match self.spare.take() {
                Some(spare) => spare.take(),
                None => create_segment(&self.dir, self.id + 1, Fill::Paced),
            };
            match next {
                Ok(file) => {
                    let pending = std::mem::take(&mut self.pending);
                    self.closed.insert(self.id, pending);
                    self.file = file;
                    self.id += 1;
                    self.bytes = 0;
                    self.opened = Instant::now();
                    self.spare = Some(Spare::prepare(&self.dir, self.id + 1));
                }
                // Keep writing the current segment; rotation is retried
                // after the next batch.
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "starting a new journal segment failed"),
            }
        }
        let done: Vec<u64> = self.closed.iter().filter(|(_, m)| m.is_empty()).map(|(id, _)| *id).collect();
        for id in done {
            let path = segment_path(&self.dir, id);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.closed.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "deleting a checkpointed journal segment failed")
                }
            }
        }
    }

    /// At close: if every player is saved, no record is needed any more.
    /// (A spare holds no record: it is deleted either way.)
    fn finish(&mut self) {
        if let Some(spare) = self.spare.take() {
            let id = spare.id;
            if spare.take().is_ok() {
                let path = segment_path(&self.dir, id);
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "deleting the spare journal segment failed");
                }
            }
        }
        if self.failed() || !self.pending.is_empty() || !self.closed.is_empty() {
            tracing::warn!("journal closed with records of unsaved players; they are replayed at the next start");
            return;
        }
        let path = segment_path(&self.dir, self.id);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "deleting the last journal segment failed");
        }
    }
}

/// What a journal directory held at start.
#[derive(Debug, Default)]
pub struct Found {
    pub records: Vec<Record>,
    pub segments: Vec<PathBuf>,
    /// The id for the next segment (after every existing one).
    pub next_id: u64,
    /// Lines dropped: a torn last write, or corruption (logged with place).
    pub bad_lines: usize,
}

/// Reads every segment in `dir`, oldest first. A record of a newer format
/// refuses the start; a line that fails its checksum is dropped and logged
/// (a crash mid-write leaves a torn last line; such a record was never
/// acknowledged).
pub fn read_dir(dir: &Path) -> anyhow::Result<Found> {
    let mut found = Found { next_id: 1, ..Found::default() };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut ids = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".log").and_then(|n| n.parse::<u64>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    for id in ids {
        let path = segment_path(dir, id);
        let mut bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        // The segment's unused zeros (see the module docs).
        bytes.truncate(bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()));
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match decode(line) {
                Some(Ok(r)) => found.records.push(r),
                Some(Err(version)) => anyhow::bail!(
                    "{} line {}: journal record format_version {version} is newer than this server understands ({JOURNAL_FORMAT_VERSION}); run the newer server to replay it",
                    path.display(),
                    n + 1
                ),
                None => {
                    tracing::warn!(path = %path.display(), line = n + 1, "dropping a torn or corrupt journal record");
                    found.bad_lines += 1;
                }
            }
        }
        found.segments.push(path);
        found.next_id = id + 1;
    }
    Ok(found)
}

/// `None` for a line that is torn or corrupt; `Some(Err(v))` for a sound
/// record of a newer format `v`.
fn decode(line: &[u8]) -> Option<Result<Record, u64>> {
    if line.len() > RECORD_BYTES_MAX || line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    if crc32fast::hash(json) != crc {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let version = value.get("format_version")?.as_u64()?;
    if version > u64::from(JOURNAL_FORMAT_VERSION) {
        return Some(Err(version));
    }
    // Version 2 only added an optional field, so version 1 records read
    // as they are; a later change of shape would be migrated here, as
    // player files are.
    serde_json::from_value(value).ok().map(Ok)
}

#[cfg(test)]
mod tests {
    use citadel_runtime::Action;

    use super::*;

    fn record(player: &str, seq: u64) -> Record {
        Record {
            format_version: JOURNAL_FORMAT_VERSION,
            title: "mini".into(),
            player: player.into(),
            seq,
            now_ms: 1_000 + seq as i64,
            rng: seq,
            content_version: "v".into(),
            op: Op::Act { action: Action::Collect { id: 1 } },
            key: None,
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("citadel-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    async fn append(j: &Journal, r: &Record) -> Result<(), JournalFailed> {
        let (tx, rx) = oneshot::channel();
        j.append(
            r,
            Box::new(move |d| {
                let _ = tx.send(d);
            }),
        )
        .await;
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn records_survive_and_a_torn_tail_is_dropped() {
        let dir = temp("torn");
        let j = Journal::open(&dir, 1, None).unwrap();
        for seq in 1..=3 {
            append(&j, &record("a", seq)).await.unwrap();
        }
        // Simulate a crash: the writer is never closed. Then tear the tail
        // as a crash mid-write would: part of a record over the zeros.
        let path = segment_path(&dir, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, SEGMENT_BYTES_MAX, "segments are written full of zeros ahead of use");
        let end = bytes.iter().position(|&b| b == 0).unwrap();
        let clean = bytes.clone();
        bytes[end..end + 40].copy_from_slice(&encode(&record("a", 4))[..40]);
        std::fs::write(&path, &bytes).unwrap();
        let found = read_dir(&dir).unwrap();
        assert_eq!(found.records, (1..=3).map(|s| record("a", s)).collect::<Vec<_>>());
        assert_eq!(found.bad_lines, 1, "the torn record is dropped; the zeros after it are no record");
        assert!(found.next_id > 1);
        // Without the torn record the zeros alone are no bad line.
        std::fs::write(&path, &clean).unwrap();
        assert_eq!(read_dir(&dir).unwrap().bad_lines, 0);
        // A flipped byte inside a record fails its checksum.
        let mut bytes = clean;
        bytes[20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_dir(&dir).unwrap().records.len(), 2);
    }

    #[tokio::test]
    async fn newer_records_refuse_the_start() {
        let dir = temp("newer");
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = record("a", 1);
        r.format_version = JOURNAL_FORMAT_VERSION + 1;
        std::fs::write(segment_path(&dir, 7), encode(&r)).unwrap();
        let e = read_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("newer than this server understands"), "{e}");
    }

    #[tokio::test]
    async fn saved_players_segments_are_deleted_and_a_clean_close_leaves_nothing() {
        let dir = temp("truncate");
        let j = Journal::open(&dir, 5, None).unwrap();
        append(&j, &record("a", 1)).await.unwrap();
        append(&j, &record("b", 1)).await.unwrap();
        j.saved(("mini".into(), "a".into()), 1).await;
        j.close().await;
        // b is unsaved: its record must stay.
        let found = read_dir(&dir).unwrap();
        assert_eq!(found.records.len(), 2);
        assert_eq!(found.next_id, 6);
        let j = Journal::open(&dir, found.next_id, None).unwrap();
        append(&j, &record("c", 1)).await.unwrap();
        j.saved(("mini".into(), "c".into()), 1).await;
        j.close().await;
        assert!(!segment_path(&dir, 6).exists(), "a clean close with every player saved leaves no segment");
    }

    #[test]
    fn a_full_or_old_segment_rotates_and_is_deleted_once_its_players_are_saved() {
        let dir = temp("rotate");
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = Writer {
            dir: dir.clone(),
            file: create_segment(&dir, 1, Fill::AtOnce).unwrap(),
            id: 1,
            bytes: 0,
            opened: Instant::now(),
            pending: HashMap::new(),
            closed: BTreeMap::new(),
            failed: Arc::new(AtomicBool::new(false)),
            buf: encode(&record("a", 1)),
            spare: None,
            profiler: None,
        };
        w.pending.insert(("mini".into(), "a".into()), 1);
        w.write_batch().unwrap();
        w.bytes = SEGMENT_BYTES_MAX;
        w.rotate_and_truncate();
        assert_eq!(w.id, 2);
        assert!(segment_path(&dir, 1).exists(), "a's record is not saved yet");
        w.checkpoint(&("mini".into(), "a".into()), 0);
        w.rotate_and_truncate();
        assert!(segment_path(&dir, 1).exists(), "saving an older seq does not cover the record");
        w.checkpoint(&("mini".into(), "a".into()), 1);
        w.rotate_and_truncate();
        assert!(!segment_path(&dir, 1).exists());
        assert!(w.closed.is_empty());
    }
}
