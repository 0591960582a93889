//! The journal on NATS JetStream (`journal_store = "jetstream"`): records
//! live in streams on NATS, not on this machine's disk, so a server whose
//! disk is gone for good loses no acknowledged action: whoever takes its
//! players over reads their records from NATS.
//!
//! The contract is the file journal's (`super`): `append` runs its `done`
//! once the record is durable, here once JetStream acknowledged it (the
//! stream stored it, on as many replicas as it has); `barrier` after every
//! earlier record; fail-stop after one record that could not be stored.
//!
//! Each server has a stream of its own, `<prefix>_journal_<server>`, one
//! subject per player, `<prefix>.journal.<server>.<title>.<player>` (ids as
//! [`crate::bus::token`] writes them), holding that player's records in
//! `seq` order, each the same line as in a segment file (checksum and
//! JSON). A record is published as soon as it arrives (the client sends in
//! order; many are in flight at once) and its waiter is answered when its
//! acknowledgement comes, in the order the records came.
//!
//! Clean-up is by the stream's sequence, every few seconds: everything below
//! the oldest record not yet in a saved player file goes at once (a purge
//! of the stream's head, which drops whole blocks). Removing each player's
//! records at their save instead (a purge filtered by subject per save,
//! 333 a second at 10,000 players) held the stream's lock long enough to
//! raise every acknowledgement tenfold (docs/benchmarks.md, step 8).
//!
//! Records that must outlive that clean-up move to one stream every server
//! shares, `<prefix>_journal_kept`, subject
//! `<prefix>.journal_kept.<title>.<player>`: those of a player whose session
//! ended unsaved (copied before they stop holding the clean-up back), and
//! those a server finds in its own stream at start (left by a crash; the
//! start replays them into the files, as the file journal's, and removes
//! the kept copies of the players it could).
//!
//! A takeover ([`crate::recovery`]) reads the player's subject in the
//! stream of the server it takes them from, then their kept subject, with
//! direct gets (no consumer to create), re-runs the records above the
//! file's `seq`, saves, and purges what it read. In that order, a record
//! being moved is always found in one or the other.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{decode, Done, Entry, Journal, JournalFailed, Key, Record, QUEUE_MAX, RECORD_BYTES_MAX};
use crate::bus::token;
use crate::config::NatsConfig;

/// How long a record may wait for JetStream's acknowledgement. Longer than
/// a NATS server's restart or a replica's leader election (a few seconds),
/// so that those are waited out; a record not stored by then fails the
/// journal (fail-stop, as a failed fsync does), as its fate is unknown.
const ACK_WAIT_MAX: Duration = Duration::from_secs(10);

/// Records published and not yet acknowledged at most; beyond this,
/// appending waits (backpressure, as a full queue does for the file journal).
const ACKS_IN_FLIGHT_MAX: usize = QUEUE_MAX;

/// How long a start waits for the streams to be found or made: NATS down at
/// start means no action could be acknowledged, so the start fails (with
/// this error) rather than serve players it cannot make durable.
const STREAM_SETUP_WAIT: Duration = Duration::from_secs(15);

/// A player's records read at a takeover at most. A player has the records
/// since their last save (a few hundred at most at the rate limit); more
/// means purges failed for a long time, and reading on would hold the
/// login indefinitely.
const RECORDS_READ_MAX: usize = 100_000;

/// How often the records every saved file holds are removed from this
/// server's stream. Each removal is one request and one hold of the stream
/// while NATS drops the blocks below (some 20 ms at 10,000 players): once
/// every 5 s kept the acknowledgements' p99 where it is with no removal at
/// all (1.6 to 4 ms), once a second raised it to 6 to 11 ms
/// (docs/benchmarks.md, step 8). The stream holds about the save interval
/// of records plus this.
pub const PURGE_EVERY: Duration = Duration::from_secs(5);

/// Players whose records are being moved to the kept stream at once. A
/// storage outage ends many sessions unsaved together; the moves queue
/// behind this many rather than flood NATS.
const KEEPS_AT_ONCE_MAX: usize = 16;

/// How long a move to the kept stream that failed (NATS away) waits before
/// trying again. The records stay where they are meanwhile, and so does
/// everything after them in this server's stream.
const KEEP_RETRY: Duration = Duration::from_secs(1);

/// How long reading what an earlier run left in this server's stream
/// waits for the next record before asking the stream whether any is left.
const LEFTOVERS_WAIT_MAX: Duration = Duration::from_secs(5);

/// How long a clean close waits for the last clean-up.
const CLOSE_PURGE_WAIT: Duration = Duration::from_secs(10);

/// The streams of the journal: this server's own, written by its journal
/// and read by takeovers, and the shared kept stream.
#[derive(Clone)]
pub struct JournalStream {
    own: stream::Stream,
    kept: stream::Stream,
    context: jetstream::Context,
    /// Subjects are `<prefix>.journal.<server>.<title>.<player>` and
    /// `<prefix>.journal_kept.<title>.<player>`.
    prefix: String,
    /// This server, as a subject token.
    server: String,
    name: String,
    /// Other servers' streams, by name, found at their first takeover.
    others: Arc<Mutex<HashMap<String, stream::Stream>>>,
}

impl std::fmt::Debug for JournalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStream").field("name", &self.name).finish()
    }
}

/// The name of `server`'s journal stream for a subject prefix (stream
/// names take no dots).
pub fn stream_name(prefix: &str, server: &str) -> String {
    format!("{}_journal_{}", prefix.replace('.', "_"), token(server))
}

/// The name of the stream every server moves kept records to.
pub fn kept_stream_name(prefix: &str) -> String {
    format!("{}_journal_kept", prefix.replace('.', "_"))
}

/// What an earlier run left in this server's stream: the records, and per
/// player the kept stream's sequence of their last one.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub records: Vec<Record>,
    pub kept: HashMap<Key, u64>,
    /// The stream sequence of the last record read (0: none).
    through: u64,
}

/// What a takeover read from one subject: purged once the player is saved.
#[derive(Debug)]
pub struct Read {
    stream: stream::Stream,
    subject: String,
    through: u64,
}

impl JournalStream {
    /// Connects (a connection of its own, apart from the bus), and finds or
    /// makes this server's stream and the kept stream (file storage,
    /// `nats.journal_replicas` copies).
    pub async fn open(nats: &NatsConfig, server: &str, connection_name: &str) -> anyhow::Result<JournalStream> {
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
        let prefix = nats.subject_prefix.clone();
        let name = stream_name(&prefix, server);
        let server = token(server);
        let setup = async {
            let own = find_or_make(&context, nats, &name, format!("{prefix}.journal.{server}.>")).await?;
            let kept =
                find_or_make(&context, nats, &kept_stream_name(&prefix), format!("{prefix}.journal_kept.>")).await?;
            anyhow::Ok((own, kept))
        };
        let (own, kept) = tokio::time::timeout(STREAM_SETUP_WAIT, setup).await.map_err(|_| {
            anyhow::anyhow!("NATS JetStream at {} did not answer within {STREAM_SETUP_WAIT:?}", nats.url)
        })??;
        tracing::info!(stream = %name, replicas = nats.journal_replicas, "the journal is on NATS JetStream");
        Ok(JournalStream { own, kept, context, prefix, server, name, others: Arc::default() })
    }

    /// This server's stream's name (recorded as where its journal is).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `key`'s subject in the stream of the server whose token is `server`.
    fn subject_of(&self, server: &str, key: &Key) -> String {
        format!("{}.journal.{server}.{}.{}", self.prefix, token(&key.0), token(&key.1))
    }

    fn subject(&self, key: &Key) -> String {
        self.subject_of(&self.server, key)
    }

    fn kept_subject(&self, key: &Key) -> String {
        format!("{}.journal_kept.{}.{}", self.prefix, token(&key.0), token(&key.1))
    }

    /// Records left in this server's stream by an earlier run that stopped
    /// without saving every player, for the start to replay (as the file
    /// journal's are). They are first copied to the kept stream (where a
    /// takeover finds the ones replay cannot apply yet); once replay is
    /// over, [`JournalStream::drop_leftovers`] empties this stream, so that
    /// this run's clean-up starts from nothing of anyone else's.
    pub async fn take_leftovers(&self) -> anyhow::Result<Leftovers> {
        let mut own = self.own.clone();
        let state = own.info().await?.state.clone();
        let mut left = Leftovers::default();
        if state.messages == 0 {
            return Ok(left);
        }
        let last = state.last_sequence;
        let consumer = own
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut acks = VecDeque::new();
        loop {
            // Nobody else writes to this stream now; others' takeovers may
            // only delete from it meanwhile. So a wait means nothing is
            // left, unless the stream still holds something: then NATS is
            // stuck and the start fails rather than skip a record.
            let message = match tokio::time::timeout(LEFTOVERS_WAIT_MAX, messages.next()).await {
                Ok(Some(m)) => m?,
                Ok(None) => anyhow::bail!("the journal stream {} ended while being read", self.name),
                Err(_) if own.info().await?.state.messages == 0 => break,
                Err(_) => anyhow::bail!("reading the journal stream {} stalled for {LEFTOVERS_WAIT_MAX:?}", self.name),
            };
            let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if let Some(r) = decode_payload(&message.payload, &message.subject, sequence)? {
                let key = (r.title.clone(), r.player.clone());
                if message.subject.as_str() == self.subject(&key) {
                    let ack = self.context.publish(self.kept_subject(&key), message.payload.clone()).await?;
                    acks.push_back((key, ack));
                    left.records.push(r);
                } else {
                    tracing::warn!(subject = %message.subject, sequence, "dropping a journal record of another player");
                }
            }
            while acks.len() >= ACKS_IN_FLIGHT_MAX {
                let (key, ack) = acks.pop_front().expect("not empty");
                left.kept.insert(key, ack.await?.sequence);
            }
            if sequence >= last || pending == 0 {
                break;
            }
        }
        for (key, ack) in acks {
            left.kept.insert(key, ack.await?.sequence);
        }
        left.through = last;
        tracing::warn!(records = left.records.len(), stream = %self.name, "records left by the last run were copied to the kept stream to be replayed");
        Ok(left)
    }

    /// Empties this server's stream of what [`JournalStream::take_leftovers`]
    /// read, once replay is over: a start that fails before reads them again.
    pub async fn drop_leftovers(&self, left: &Leftovers) -> anyhow::Result<()> {
        if left.through > 0 {
            self.own.purge().sequence(left.through + 1).await?;
        }
        Ok(())
    }

    /// Removes what [`JournalStream::take_leftovers`] kept for `key`, once
    /// replay put it in their file.
    pub async fn forget_kept(&self, key: &Key, through: u64) -> anyhow::Result<()> {
        self.purge_read(vec![Read { stream: self.kept.clone(), subject: self.kept_subject(key), through }]).await
    }

    /// `key`'s records that `from`, whose journal is the stream `name`,
    /// acknowledged, with those kept for them by any server, in `seq`
    /// order; and what was read, for [`JournalStream::purge_read`].
    pub async fn records(&self, name: &str, from: &str, key: &Key) -> anyhow::Result<(Vec<Record>, Vec<Read>)> {
        let stream = if name == self.name {
            self.own.clone()
        } else {
            let found = lock(&self.others).get(name).cloned();
            match found {
                Some(s) => s,
                None => {
                    let s = self.context.get_stream(name).await.map_err(|e| {
                        anyhow::anyhow!("finding the journal stream {name} of {from}: {e} (deleted by hand? declare that journal lost)")
                    })?;
                    lock(&self.others).insert(name.to_string(), s.clone());
                    s
                }
            }
        };
        let subject = self.subject_of(&token(from), key);
        let mut records = Vec::new();
        let mut reads = Vec::new();
        // The server's stream first: a record being moved to the kept
        // stream leaves it only once the kept stream has it.
        for (stream, subject) in [(stream, subject), (self.kept.clone(), self.kept_subject(key))] {
            let (found, through) = read_subject(&stream, &subject, key).await?;
            records.extend(found);
            if let Some(through) = through {
                reads.push(Read { stream, subject, through });
            }
        }
        records.sort_by_key(|r| r.seq);
        records.dedup_by_key(|r| r.seq);
        Ok((records, reads))
    }

    /// Removes what a takeover read, once the player's file holds it.
    pub async fn purge_read(&self, reads: Vec<Read>) -> anyhow::Result<()> {
        for r in reads {
            r.stream
                .purge()
                .filter(r.subject.clone())
                .sequence(r.through + 1)
                .await
                .map_err(|e| anyhow::anyhow!("purging {} in the journal stream: {e}", r.subject))?;
        }
        Ok(())
    }

    /// Copies `key`'s records in this server's stream to the kept stream.
    async fn keep(&self, key: &Key) -> anyhow::Result<()> {
        let subject = self.subject(key);
        let mut acks = Vec::new();
        for (_, payload) in read_raw(&self.own, &subject).await? {
            acks.push(self.context.publish(self.kept_subject(key), payload).await?);
        }
        for ack in acks {
            ack.await?;
        }
        Ok(())
    }
}

/// Finds the stream `name`, or makes it, with the journal's settings.
async fn find_or_make(
    context: &jetstream::Context,
    nats: &NatsConfig,
    name: &str,
    subject: String,
) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: name.to_string(),
        subjects: vec![subject],
        storage: stream::StorageType::File,
        num_replicas: nats.journal_replicas,
        max_message_size: RECORD_BYTES_MAX as i32,
        allow_direct: true,
        ..Default::default()
    };
    let mut tries = 0u32;
    let mut stream = loop {
        match context.get_or_create_stream(config.clone()).await {
            Ok(s) => break s,
            // NATS may still be coming up (the connection retries by
            // itself); anything else is final.
            Err(e) if tries < 100 => {
                tries += 1;
                tracing::debug!(error = %e, "finding the journal stream");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e)).with_context(|| {
                    format!("finding or making the journal stream {name} (is JetStream enabled: nats-server -js? A stream whose subjects overlap {} from an older version must be deleted)", config.subjects[0])
                })
            }
        }
    };
    let info = stream.info().await.with_context(|| format!("reading the journal stream {name}"))?;
    anyhow::ensure!(
        info.config.allow_direct && info.config.storage == stream::StorageType::File,
        "the stream {name} exists with other settings (it needs file storage and allow_direct): delete it or choose another nats.subject_prefix"
    );
    if info.config.num_replicas != nats.journal_replicas {
        tracing::warn!(stream = %name, replicas = info.config.num_replicas, configured = nats.journal_replicas, "the journal stream keeps another number of copies than configured; it is left as it is");
    }
    Ok(stream)
}

/// Every message on `subject` in `stream`: (stream sequence, payload).
async fn read_raw(stream: &stream::Stream, subject: &str) -> anyhow::Result<Vec<(u64, bytes::Bytes)>> {
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let message = match stream.direct_get_next_for_subject(subject, Some(next)).await {
            Ok(m) => m,
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(anyhow::anyhow!("reading {subject} from the journal: {e}")),
        };
        next = message.sequence + 1;
        out.push((message.sequence, message.payload));
        anyhow::ensure!(
            out.len() <= RECORDS_READ_MAX,
            "{subject} holds more than {RECORDS_READ_MAX} records: the journal is not being purged"
        );
    }
    Ok(out)
}

/// `key`'s records on `subject`, and the stream sequence of the last one.
async fn read_subject(stream: &stream::Stream, subject: &str, key: &Key) -> anyhow::Result<(Vec<Record>, Option<u64>)> {
    let raw = read_raw(stream, subject).await?;
    let last = raw.last().map(|(n, _)| *n);
    let mut records = Vec::new();
    for (sequence, payload) in raw {
        match decode_payload(&payload, subject, sequence)? {
            Some(r) if r.title == key.0 && r.player == key.1 => records.push(r),
            Some(_) => tracing::warn!(subject = %subject, sequence, "dropping a journal record of another player"),
            None => {}
        }
    }
    Ok((records, last))
}

/// The record a stream message holds (the line of a segment file); `None`,
/// logged, for a corrupt one; an error for a newer format than this
/// server's, which it must not skip.
fn decode_payload(payload: &[u8], subject: &str, sequence: u64) -> anyhow::Result<Option<Record>> {
    let line = payload.strip_suffix(b"\n").unwrap_or(payload);
    match decode(line) {
        Some(Ok(r)) => Ok(Some(r)),
        None => {
            tracing::warn!(subject = %subject, sequence, "dropping a corrupt journal record in the stream");
            Ok(None)
        }
        Some(Err(version)) => anyhow::bail!(
            "{subject} sequence {sequence}: journal record format_version {version} is newer than this server understands ({}); run the newer server",
            super::JOURNAL_FORMAT_VERSION
        ),
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
    Keep(Key),
    Close(oneshot::Sender<()>),
}

/// What holds this server's stream back from being cleaned: the stream
/// sequences of acknowledged records no saved file holds yet (in a live
/// session, or being moved to the kept stream), and the last acknowledged.
/// Everything below the oldest of them, or after the last acknowledged
/// when there are none, may go.
#[derive(Default)]
struct Held {
    unsaved: BTreeSet<u64>,
    last_acked: u64,
}

impl Held {
    /// The stream sequence below which every record of this run is in a
    /// saved file (1 while nothing is acknowledged: nothing may go).
    fn keep_from(&self) -> u64 {
        self.unsaved.first().copied().unwrap_or(self.last_acked + 1)
    }
}

/// Starts the journal on `stream`. With a profiler, the time from sending a
/// record to its acknowledgement is recorded (`journal` / `ack`).
pub fn open(stream: JournalStream, profiler: Option<Arc<crate::profile::Profiler>>) -> Journal {
    let failed = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<Entry>(QUEUE_MAX);
    let (pending_tx, pending_rx) = mpsc::channel::<Pending>(ACKS_IN_FLIGHT_MAX);
    let held = Arc::new(Mutex::new(Held::default()));
    let (close_tx, close_rx) = mpsc::channel(1);
    tokio::spawn(acknowledge(pending_rx, failed.clone(), held.clone(), stream.clone(), close_tx, profiler));
    tokio::spawn(purge(stream.clone(), held, close_rx));
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
                Entry::Keep(key) => Pending::Keep(key),
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
        Pending::Saved { .. } | Pending::Keep(_) => {}
        Pending::Close(c) => {
            let _ = c.send(());
        }
    }
}

/// Answers each waiter in the order records came, and keeps [`Held`]: a
/// record holds the stream back from its acknowledgement until a save
/// through its `seq`, or until it is moved to the kept stream.
async fn acknowledge(
    mut pending: mpsc::Receiver<Pending>,
    failed: Arc<AtomicBool>,
    held: Arc<Mutex<Held>>,
    stream: JournalStream,
    close: mpsc::Sender<oneshot::Sender<()>>,
    profiler: Option<Arc<crate::profile::Profiler>>,
) {
    // Per player, the acknowledged records not yet saved: (seq, stream sequence).
    let mut stored: HashMap<Key, VecDeque<(u64, u64)>> = HashMap::new();
    let keeping = Arc::new(Semaphore::new(KEEPS_AT_ONCE_MAX));
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
                    let mut h = lock(&held);
                    h.unsaved.insert(a.sequence);
                    h.last_acked = h.last_acked.max(a.sequence);
                    drop(h);
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
                let mut h = lock(&held);
                while let Some(&(_, n)) = queue.front().filter(|&&(s, _)| s <= seq) {
                    h.unsaved.remove(&n);
                    queue.pop_front();
                }
                drop(h);
                if queue.is_empty() {
                    stored.remove(&key);
                }
            }
            Pending::Keep(key) => {
                // No save will come for these: they move to the kept
                // stream, and only then stop holding this stream back.
                let Some(queue) = stored.remove(&key) else { continue };
                let (stream, held, keeping) = (stream.clone(), held.clone(), keeping.clone());
                tokio::spawn(async move {
                    let _turn = keeping.acquire().await;
                    let mut failures = 0u32;
                    while let Err(e) = stream.keep(&key).await {
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(title = %key.0, player = %key.1, error = %format!("{e:#}"), "moving an unsaved player's records to the kept stream failed; trying again");
                        }
                        tokio::time::sleep(KEEP_RETRY).await;
                    }
                    let mut h = lock(&held);
                    for (_, n) in queue {
                        h.unsaved.remove(&n);
                    }
                });
            }
            Pending::Close(c) => {
                let (tx, rx) = oneshot::channel();
                if close.send(tx).await.is_ok() && tokio::time::timeout(CLOSE_PURGE_WAIT, rx).await.is_err() {
                    tracing::warn!(
                        "the journal closed before its last clean-up ran; the next start moves what is left"
                    );
                }
                let _ = c.send(());
                return;
            }
        }
    }
}

/// Once every [`PURGE_EVERY`], and at close, removes from this server's
/// stream everything below what [`Held`] keeps. A failed purge is logged
/// and tried again at the next turn: the records only stay longer.
async fn purge(stream: JournalStream, held: Arc<Mutex<Held>>, mut close: mpsc::Receiver<oneshot::Sender<()>>) {
    let mut purged_below = 1u64;
    let mut failures = 0u64;
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closing = tokio::select! {
            _ = tick.tick() => None,
            c = close.recv() => Some(c),
        };
        let keep_from = lock(&held).keep_from();
        if keep_from > purged_below {
            match stream.own.purge().sequence(keep_from).await {
                Ok(_) => purged_below = keep_from,
                Err(e) => {
                    failures += 1;
                    // Logged at the first and then every hundredth: NATS
                    // down fails every purge meanwhile.
                    if failures % 100 == 1 {
                        tracing::warn!(error = %e, failures, stream = %stream.name, "removing saved records from the journal stream failed");
                    }
                }
            }
        }
        match closing {
            None => {}
            Some(Some(c)) => {
                let _ = c.send(());
                return;
            }
            Some(None) => return,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
