//! `--jetstream-baseline`: the floor under the JetStream journal on this
//! machine. The same records a game server's journal would publish (one
//! subject per simulated player, `--rate` records a second each, a
//! journal record's size) are published straight to a JetStream stream
//! with file storage, each timed from publish to acknowledgement, with no
//! game server in between. Run in the same invocation as the server runs
//! (scripts/bench-server, step 8), it tells how much of the journal's ack
//! time is JetStream's and how much the server's own path adds.

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
    js.get_or_create_stream(stream).await.context("making the baseline stream (is JetStream on?)")?;
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Instant, bool, async_nats::jetstream::context::PublishAckFuture)>(IN_FLIGHT_MAX);
    let acks = tokio::spawn(async move {
        let (mut measured, mut failed) = (Vec::new(), 0u64);
        while let Some((sent, measure, ack)) = rx.recv().await {
            match ack.await {
                Ok(_) if measure => measured.push(sent.elapsed().as_micros() as u64),
                Ok(_) => {}
                Err(_) => failed += 1,
            }
        }
        (measured, failed)
    });
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
            tx.send((at, measure, ack)).await.context("the acknowledging task ended")?;
            sent += 1;
            player = (player + 1) % args.players;
        }
    }
    drop(tx);
    let (measured, failed) = acks.await?;
    let _ = js.delete_stream(&name).await;
    Ok(json!({
        "run": args.prefix,
        "baseline": "jetstream",
        "records_per_second": per_second,
        "failed": failed,
        "ack_latency_ms": percentiles(measured),
    }))
}
