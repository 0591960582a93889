//! The journal on NATS JetStream (`journal_store = "jetstream"`): records
//! live in a stream on NATS, not on this machine's disk, so a server whose
//! disk is gone for good loses no acknowledged action: whoever takes its
//! players over reads their records from the stream.
//!
//! The contract is the file journal's (`super`): `append` runs its `done`
//! once the record is durable, here once JetStream acknowledged it (the
//! stream stored it, on as many replicas as it has); `barrier` after every
//! earlier record; fail-stop after one record that could not be stored.
//!
//! One subject per player, `<prefix>.journal.<title>.<player>` (ids as
//! [`crate::bus::token`] writes them), holding that player's records in
//! `seq` order, each the same line as in a segment file (checksum and
//! JSON). A record is published as soon as it arrives (the client sends in
//! order; many are in flight at once) and its waiter is answered when its
//! acknowledgement comes, in the order the records came. Once a player is
//! saved, their subject is purged up to the last record the save holds.
//!
//! A takeover ([`crate::recovery`]) reads a player's subject with direct
//! gets (no consumer to create), re-runs the records above the file's
//! `seq`, saves, and purges what it read.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{decode, Done, Entry, Journal, JournalFailed, Key, Record, QUEUE_MAX, RECORD_BYTES_MAX};
use crate::config::NatsConfig;

/// How long a record may wait for JetStream's acknowledgement. Longer than
/// a NATS server's restart or a replica's leader election (a few seconds),
/// so that those are waited out; a record not stored by then fails the
/// journal (fail-stop, as a failed fsync does), as its fate is unknown.
const ACK_WAIT_MAX: Duration = Duration::from_secs(10);

/// Records published and not yet acknowledged at most; beyond this,
/// appending waits (backpressure, as a full queue does for the file journal).
const ACKS_IN_FLIGHT_MAX: usize = QUEUE_MAX;

/// How long a start waits for the stream to be found or made: NATS down at
/// start means no action could be acknowledged, so the start fails (with
/// this error) rather than serve players it cannot make durable.
const STREAM_SETUP_WAIT: Duration = Duration::from_secs(15);

/// A player's records read at a takeover at most. A player has the records
/// since their last save (a few hundred at most at the rate limit); more
/// means purges failed for a long time, and reading on would hold the
/// login indefinitely.
const RECORDS_READ_MAX: usize = 100_000;

/// How long a clean close waits for the last purges.
const CLOSE_PURGE_WAIT: Duration = Duration::from_secs(10);

/// The stream holding every server's records: written by the journal,
/// read (and purged) by takeovers.
#[derive(Clone)]
pub struct JournalStream {
    stream: stream::Stream,
    context: jetstream::Context,
    /// Subjects are `<prefix>.journal.<title>.<player>`.
    prefix: String,
    name: String,
}

impl std::fmt::Debug for JournalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStream").field("name", &self.name).finish()
    }
}

/// The stream's name for a subject prefix (stream names take no dots).
pub fn stream_name(prefix: &str) -> String {
    format!("{}_journal", prefix.replace('.', "_"))
}

impl JournalStream {
    /// Connects (a connection of its own, apart from the bus) and finds the
    /// stream, or makes it: file storage, `nats.journal_replicas` copies.
    pub async fn open(nats: &NatsConfig, connection_name: &str) -> anyhow::Result<JournalStream> {
        let client = crate::bus::nats::client(
            &nats.url,
            nats.credentials.as_deref(),
            connection_name,
            "the journal (NATS JetStream)",
            "no action is acknowledged until it is back",
        )
        .await
        .map_err(|e| anyhow::anyhow!("nats: {e}"))?;
        let context = jetstream::ContextBuilder::new()
            .ack_timeout(ACK_WAIT_MAX)
            .timeout(ACK_WAIT_MAX)
            .max_ack_inflight(ACKS_IN_FLIGHT_MAX)
            .backpressure_on_inflight(true)
            .build(client);
        let name = stream_name(&nats.subject_prefix);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{}.journal.>", nats.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: nats.journal_replicas,
            max_message_size: RECORD_BYTES_MAX as i32,
            allow_direct: true,
            ..Default::default()
        };
        let setup = async {
            let mut tries = 0u32;
            loop {
                match context.get_or_create_stream(config.clone()).await {
                    Ok(s) => return Ok(s),
                    // NATS may still be coming up (the connection retries
                    // by itself); anything else is final.
                    Err(e) if tries < 100 => {
                        tries += 1;
                        tracing::debug!(error = %e, "finding the journal stream");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let mut stream = tokio::time::timeout(STREAM_SETUP_WAIT, setup)
            .await
            .map_err(|_| anyhow::anyhow!("NATS JetStream at {} did not answer within {STREAM_SETUP_WAIT:?}", nats.url))?
            .with_context(|| {
                format!("finding or making the journal stream {name} (is JetStream enabled: nats-server -js?)")
            })?;
        let info = stream.info().await.with_context(|| format!("reading the journal stream {name}"))?;
        anyhow::ensure!(
            info.config.allow_direct && info.config.storage == stream::StorageType::File,
            "the stream {name} exists with other settings (it needs file storage and allow_direct): delete it or choose another nats.subject_prefix"
        );
        if info.config.num_replicas != nats.journal_replicas {
            tracing::warn!(stream = %name, replicas = info.config.num_replicas, configured = nats.journal_replicas, "the journal stream keeps another number of copies than configured; it is left as it is");
        }
        tracing::info!(stream = %name, replicas = info.config.num_replicas, "the journal is on NATS JetStream");
        Ok(JournalStream { stream, context, prefix: nats.subject_prefix.clone(), name })
    }

    /// The stream's name (recorded as where this server's journal is).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn subject(&self, key: &Key) -> String {
        use crate::bus::token;
        format!("{}.journal.{}.{}", self.prefix, token(&key.0), token(&key.1))
    }

    /// The player's records in the stream, in `seq` order, and the stream
    /// sequence of the last one read (for [`JournalStream::purge_through`]).
    pub async fn records(&self, key: &Key) -> anyhow::Result<(Vec<Record>, Option<u64>)> {
        let subject = self.subject(key);
        let mut records = Vec::new();
        let mut next = 1;
        let mut last = None;
        loop {
            let message = match self.stream.direct_get_next_for_subject(subject.clone(), Some(next)).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(anyhow::anyhow!("reading {subject} from the journal stream {}: {e}", self.name)),
            };
            next = message.sequence + 1;
            last = Some(message.sequence);
            let line = message.payload.strip_suffix(b"\n").unwrap_or(&message.payload);
            match decode(line) {
                Some(Ok(r)) if r.title == key.0 && r.player == key.1 => records.push(r),
                Some(Ok(_)) | None => {
                    tracing::warn!(subject = %subject, sequence = message.sequence, "dropping a corrupt journal record in the stream");
                }
                Some(Err(version)) => anyhow::bail!(
                    "{subject} sequence {}: journal record format_version {version} is newer than this server understands ({}); run the newer server to take this player over",
                    message.sequence,
                    super::JOURNAL_FORMAT_VERSION
                ),
            }
            anyhow::ensure!(
                records.len() <= RECORDS_READ_MAX,
                "{subject} holds more than {RECORDS_READ_MAX} records: the journal stream is not being purged"
            );
        }
        records.sort_by_key(|r| r.seq);
        Ok((records, last))
    }

    /// Removes the player's records up to and including stream sequence `through`.
    pub async fn purge_through(&self, key: &Key, through: u64) -> anyhow::Result<()> {
        let subject = self.subject(key);
        self.stream
            .purge()
            .filter(subject.clone())
            .sequence(through + 1)
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("purging {subject} in the journal stream {}: {e}", self.name))
    }
}

/// What the acknowledging task waits on, in the order records came.
enum Pending {
    Record {
        ack: PublishAckFuture,
        key: Key,
        seq: u64,
        done: Done,
        sent: Instant,
    },
    /// Could not be sent at all (the journal failed).
    Refused(Done),
    Barrier(Done),
    Saved {
        key: Key,
        seq: u64,
    },
    Close(oneshot::Sender<()>),
}

/// Purges waiting to run: per player, the stream sequence to purge through
/// (the latest wins: a purge covers every earlier record of the subject).
#[derive(Default)]
struct Purges {
    through: HashMap<Key, u64>,
    close: Option<oneshot::Sender<()>>,
}

/// Starts the journal on `stream`. With a profiler, the time from sending a
/// record to its acknowledgement is recorded (`journal` / `ack`).
pub fn open(stream: JournalStream, profiler: Option<Arc<crate::profile::Profiler>>) -> Journal {
    let failed = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<Entry>(QUEUE_MAX);
    let (pending_tx, pending_rx) = mpsc::channel::<Pending>(ACKS_IN_FLIGHT_MAX);
    let purges = Arc::new((Mutex::new(Purges::default()), Notify::new()));
    tokio::spawn(acknowledge(pending_rx, failed.clone(), purges.clone(), profiler));
    tokio::spawn(purge(stream.clone(), purges));
    let sending = failed.clone();
    tokio::spawn(async move {
        while let Some(entry) = rx.recv().await {
            let pending = match entry {
                Entry::Append { line, key, seq, done } => {
                    if sending.load(Ordering::Acquire) {
                        Pending::Refused(done)
                    } else {
                        let sent = Instant::now();
                        match stream.context.publish(stream.subject(&key), line.into()).await {
                            Ok(ack) => Pending::Record { ack, key, seq, done, sent },
                            Err(e) => {
                                fail(&sending, &e);
                                Pending::Refused(done)
                            }
                        }
                    }
                }
                Entry::Barrier(done) => Pending::Barrier(done),
                Entry::Saved { key, seq } => Pending::Saved { key, seq },
                Entry::Close(c) => Pending::Close(c),
            };
            let close = matches!(pending, Pending::Close(_));
            if let Err(mpsc::error::SendError(p)) = pending_tx.send(pending).await {
                refuse(p);
            }
            if close {
                return;
            }
        }
    });
    Journal { tx: Some(tx), failed }
}

fn fail(failed: &AtomicBool, e: &dyn std::fmt::Display) {
    if !failed.swap(true, Ordering::AcqRel) {
        tracing::error!(error = %e, "the journal (NATS JetStream) did not store a record; no more actions will be acknowledged");
    }
}

/// The acknowledging task is gone: whoever waits hears "failed".
fn refuse(p: Pending) {
    match p {
        Pending::Record { done, .. } | Pending::Refused(done) | Pending::Barrier(done) => done(Err(JournalFailed)),
        Pending::Saved { .. } => {}
        Pending::Close(c) => {
            let _ = c.send(());
        }
    }
}

/// Answers each waiter in the order records came, and turns saves into
/// purges: a save through `seq` covers the player's acknowledged records
/// up to it.
async fn acknowledge(
    mut pending: mpsc::Receiver<Pending>,
    failed: Arc<AtomicBool>,
    purges: Arc<(Mutex<Purges>, Notify)>,
    profiler: Option<Arc<crate::profile::Profiler>>,
) {
    // Per player, the acknowledged records not yet saved: (seq, stream sequence).
    let mut stored: HashMap<Key, VecDeque<(u64, u64)>> = HashMap::new();
    while let Some(p) = pending.recv().await {
        match p {
            Pending::Record { ack, key, seq, done, sent } => match ack.await {
                // After a failure no later record counts: an earlier one
                // may be missing from the stream, and replay needs every
                // `seq` in order.
                Ok(_) if failed.load(Ordering::Acquire) => done(Err(JournalFailed)),
                Ok(a) => {
                    if let Some(p) = &profiler {
                        p.record(crate::profile::Kind::Journal, "ack", "", sent.elapsed());
                    }
                    stored.entry(key).or_default().push_back((seq, a.sequence));
                    done(Ok(()));
                }
                Err(e) => {
                    fail(&failed, &e);
                    done(Err(JournalFailed));
                }
            },
            Pending::Refused(done) => done(Err(JournalFailed)),
            Pending::Barrier(done) => done(if failed.load(Ordering::Acquire) { Err(JournalFailed) } else { Ok(()) }),
            Pending::Saved { key, seq } => {
                let Some(queue) = stored.get_mut(&key) else { continue };
                let mut through = None;
                while queue.front().is_some_and(|&(s, _)| s <= seq) {
                    through = queue.pop_front().map(|(_, n)| n);
                }
                if queue.is_empty() {
                    stored.remove(&key);
                }
                if let Some(n) = through {
                    let mut p = lock(&purges.0);
                    let t = p.through.entry(key).or_insert(n);
                    *t = (*t).max(n);
                    drop(p);
                    purges.1.notify_one();
                }
            }
            Pending::Close(c) => {
                let (tx, rx) = oneshot::channel();
                lock(&purges.0).close = Some(tx);
                purges.1.notify_one();
                if tokio::time::timeout(CLOSE_PURGE_WAIT, rx).await.is_err() {
                    tracing::warn!(
                        "the journal closed before its last purges ran; those records are skipped at the next takeover"
                    );
                }
                let _ = c.send(());
                return;
            }
        }
    }
}

/// Runs purges one after another as saves ask for them. A failed purge is
/// logged and dropped: the records stay, and are skipped (their `seq` is in
/// the file) at a takeover, which purges them, or by the player's next purge.
async fn purge(stream: JournalStream, purges: Arc<(Mutex<Purges>, Notify)>) {
    let mut failures = 0u64;
    loop {
        purges.1.notified().await;
        let (through, close) = {
            let mut p = lock(&purges.0);
            (std::mem::take(&mut p.through), p.close.take())
        };
        for (key, n) in through {
            if let Err(e) = stream.purge_through(&key, n).await {
                failures += 1;
                // Logged at the first and then every thousandth: NATS down
                // fails every purge meanwhile.
                if failures % 1000 == 1 {
                    tracing::warn!(error = %format!("{e:#}"), failures, "purging saved records from the journal stream failed");
                }
            }
        }
        if let Some(c) = close {
            let _ = c.send(());
            return;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
