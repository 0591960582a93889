//! `--jetstream-baseline`: the floor under the JetStream journal on this
//! machine. The same records a game server's journal would publish (one
//! subject per simulated player, `--rate` records a second each, a
//! journal record's size) are published straight to a JetStream stream
//! with file storage, each timed from publish to acknowledgement, with no
//! game server in between. Run in the same invocation as the server runs
//! (scripts/bench-server, step 8), it tells how much of the journal's ack
//! time is JetStream's and how much the server's own path adds.
//!
//! `--purge` adds the removal of saved records, records acknowledged
//! `--purge-after` seconds ago standing for saved ones (the save
//! interval): `head` as the journal does it (the stream's head below them,
//! every `--purge-every-ms`, by default the journal's own period), `per-player` as it once did (each player's subject
//! through their last record, one purge after another, each player every
//! `--purge-after` seconds).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::{percentiles, Args};

/// Bytes of each record: a `move` action's journal line.
const RECORD_BYTES: usize = 400;
/// Acknowledgements awaited at once at most: the journal's own bound.
const IN_FLIGHT_MAX: usize = citadel_server::journal::QUEUE_MAX;

pub(crate) async fn baseline(args: &Args, url: &str) -> anyhow::Result<Value> {
    let client = async_nats::connect(url).await.context("connecting to NATS for the JetStream baseline")?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .max_ack_inflight(IN_FLIGHT_MAX)
        .backpressure_on_inflight(true)
        .build(client);
    let name = format!("bench_baseline_{}", std::process::id());
    let stream = async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let stream = js.get_or_create_stream(stream).await.context("making the baseline stream (is JetStream on?)")?;
    let acked = Arc::new(Mutex::new(Acked { last: vec![0; args.players], times: VecDeque::new() }));
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Instant, bool, usize, async_nats::jetstream::context::PublishAckFuture)>(
            IN_FLIGHT_MAX,
        );
    let acks = tokio::spawn({
        let acked = acked.clone();
        async move {
            let (mut measured, mut failed) = (Vec::new(), 0u64);
            while let Some((sent, measure, player, ack)) = rx.recv().await {
                match ack.await {
                    Ok(a) => {
                        if measure {
                            measured.push(sent.elapsed().as_micros() as u64);
                        }
                        let mut acked = acked.lock().unwrap();
                        acked.last[player] = a.sequence;
                        acked.times.push_back((Instant::now(), a.sequence));
                    }
                    Err(_) => failed += 1,
                }
            }
            (measured, failed)
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let purging = match args.purge {
        Purge::None => None,
        mode => Some(tokio::spawn(purge(
            mode,
            stream,
            name.clone(),
            (args.players, Duration::from_secs(args.purge_after), Duration::from_millis(args.purge_every_ms)),
            acked,
            stop.clone(),
        ))),
    };
    // Records go out evenly, a slice every millisecond, the players in turn.
    let per_second = (args.players as f64 * args.rate).max(1.0);
    let record = bytes::Bytes::from(vec![b'x'; RECORD_BYTES]);
    let started = Instant::now();
    let measure_from = Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let (mut sent, mut player) = (0u64, 0usize);
    while started.elapsed() < end {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * per_second) as u64;
        while sent < due {
            let at = Instant::now();
            let measure = started.elapsed() >= measure_from;
            let ack = js.publish(format!("{name}.p{player}"), record.clone()).await?;
            tx.send((at, measure, player, ack)).await.context("the acknowledging task ended")?;
            sent += 1;
            player = (player + 1) % args.players;
        }
    }
    drop(tx);
    let (measured, failed) = acks.await?;
    stop.store(true, Ordering::Relaxed);
    let purges = match purging {
        Some(p) => p.await?,
        None => 0,
    };
    let _ = js.delete_stream(&name).await;
    Ok(json!({
        "run": args.prefix,
        "baseline": "jetstream",
        "records_per_second": per_second,
        "purge": format!("{:?}", args.purge),
        "purges": purges,
        "failed": failed,
        "ack_latency_ms": percentiles(measured),
    }))
}

/// What the acknowledging task saw: per player the stream sequence of their
/// last record, and when each sequence was acknowledged.
struct Acked {
    last: Vec<u64>,
    times: VecDeque<(Instant, u64)>,
}

/// How `--jetstream-baseline` removes saved records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Purge {
    None,
    /// Every `--purge-every-ms`, the stream's head (the journal's way).
    Head,
    /// Each player's subject in turn (the journal's way before 2026-12-02).
    PerPlayer,
}

/// Runs `mode`'s purges until `stop`; returns how many ran.
async fn purge(
    mode: Purge,
    stream: async_nats::jetstream::stream::Stream,
    name: String,
    (players, after, every): (usize, Duration, Duration),
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut purged = 0u64;
    if mode == Purge::Head {
        let mut tick = tokio::time::interval(every);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let mut through = None;
            {
                let mut a = acked.lock().unwrap();
                while a.times.front().is_some_and(|(at, _)| at.elapsed() > after) {
                    through = a.times.pop_front().map(|(_, n)| n);
                }
            }
            if let Some(n) = through {
                if stream.purge().sequence(n + 1).await.is_ok() {
                    purged += 1;
                }
            }
        }
        return purged;
    }
    // Each player every `after`, spread evenly: a slice every 10 ms.
    let per_tick = players as f64 / (after.as_secs_f64().max(1.0) * 100.0);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut due, mut player) = (0.0f64, 0usize);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        due += per_tick;
        while due >= 1.0 {
            due -= 1.0;
            let through = acked.lock().unwrap().last[player];
            if through > 0 && stream.purge().filter(format!("{name}.p{player}")).sequence(through + 1).await.is_ok() {
                purged += 1;
            }
            player = (player + 1) % players;
        }
    }
    purged
}
