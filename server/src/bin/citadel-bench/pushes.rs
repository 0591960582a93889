//! `--timers UNIT`: how late timer pushes arrive. Every simulated player
//! places the building that trains `UNIT` (its construction is a timer
//! too), then queues `--train-count` of them: one unit ends every
//! `train_seconds`, and the server, waking each session at its next
//! timer's end with no request, pushes `game_events`. The delay of a push
//! is when it arrived (this machine's clock, which is the server's) minus
//! the end time the state gave for that timer. Players start spread evenly
//! over one training period, so timers end at a steady rate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::{percentiles, post, process_usage, Args};

/// Units queued per player at most (a training queue is bounded by the
/// title's housing anyway).
const TRAIN_COUNT_MAX: u32 = 1000;

/// How long after the last expected end a player waits for its pushes
/// before it counts the rest as missing.
const LATE_MAX: Duration = Duration::from_secs(30);

/// What the players of a `--timers` run do, worked out from the title.
#[derive(Debug, Clone)]
pub(crate) struct TimerPlan {
    title: String,
    unit: String,
    building: String,
    spot: (i32, i32),
    build_seconds: i64,
    train_seconds: i64,
    count: u32,
}

impl TimerPlan {
    pub(crate) fn of(titles: &std::path::Path, title: &str, unit: &str, count: u32) -> anyhow::Result<TimerPlan> {
        if count == 0 || count > TRAIN_COUNT_MAX {
            bail!("--train-count must be 1 to {TRAIN_COUNT_MAX}");
        }
        let (t, diags) = citadel_runtime::load(&titles.join(title));
        let Some(t) = t else { bail!("title {title} does not load: {} problems", diags.len()) };
        let u = t.unit(unit).with_context(|| format!("title {title} has no unit {unit}"))?;
        let building = u.def.building.clone();
        let b = t.building(&building).with_context(|| format!("{unit} trains in {building}, which {title} lacks"))?;
        let spot = crate::free_spot(&t, (b.def.size.w, b.def.size.h))
            .with_context(|| format!("title {title}: no free spot for {building}"))?;
        let build_seconds = b.def.levels.first().map_or(0, |l| l.build_seconds);
        Ok(TimerPlan {
            title: title.to_string(),
            unit: unit.to_string(),
            building,
            spot,
            build_seconds,
            train_seconds: u.def.train_seconds,
            count,
        })
    }
}

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// What the players measured.
#[derive(Default)]
struct Measured {
    /// Delays of training pushes, microseconds.
    training_us: Vec<u64>,
    /// Delays of the construction pushes.
    construction_us: Vec<u64>,
    /// Units whose push never came (within `LATE_MAX`).
    missing: u64,
    failures: u64,
    errors: Vec<String>,
}

/// The timers run: a JSON report.
pub(crate) async fn timers(args: Arc<Args>, plan: TimerPlan) -> anyhow::Result<Value> {
    let out = Arc::new(Mutex::new(Measured::default()));
    let ready = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let period = Duration::from_secs(plan.train_seconds.max(1) as u64);
    let mut tasks = Vec::new();
    for n in 0..args.players {
        let stagger = period.mul_f64(n as f64 / args.players as f64);
        let (args, plan, out, ready, go) = (args.clone(), plan.clone(), out.clone(), ready.clone(), go_rx.clone());
        tasks.push(tokio::spawn(async move {
            let r = player(&args, &plan, n, stagger, &ready, go, &out).await;
            if let Err(e) = r {
                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                o.failures += 1;
                if o.errors.len() < 5 {
                    o.errors.push(format!("{e:#}"));
                }
            }
        }));
    }
    // Everyone logs in first; then timers start, spread over one period.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::Relaxed) < args.players && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = args.server_pid.and_then(process_usage);
    let t0 = Instant::now();
    let _ = go_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = args.server_pid.and_then(process_usage);
    let o = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    let expected = args.players as u64 * u64::from(plan.count);
    let mut report = json!({
        "mode": "timers",
        "title": plan.title,
        "players": args.players,
        "unit": plan.unit,
        "train_seconds": plan.train_seconds,
        "units_per_player": plan.count,
        "timers_ending_per_second": args.players as f64 / plan.train_seconds.max(1) as f64,
        "seconds": seconds,
        "training_pushes": { "expected": expected, "received": o.training_us.len(), "missing": o.missing },
        "push_delay_ms": percentiles_fine(o.training_us),
        "construction_push_delay_ms": percentiles(o.construction_us),
        "failures": o.failures,
        "errors": o.errors,
    });
    if let (Some((c0, _)), Some((c1, rss))) = (before, after) {
        report["server"] = json!({ "cpu_percent_of_one_core": (c1 - c0) / seconds * 100.0, "rss_bytes": rss, "rss_bytes_per_player": rss / args.players as u64 });
    }
    Ok(report)
}

/// p50, p99, p99.9 and max, in milliseconds.
fn percentiles_fine(us: Vec<u64>) -> Value {
    let mut p = percentiles(us.clone());
    let mut sorted = us;
    sorted.sort_unstable();
    p["p99_9"] = json!(crate::percentile_ms(&sorted, 0.999));
    p
}

/// One player: log in, wait for the start and its place in the spread,
/// place the building, queue the units when it is built, and time every
/// push against the end the state gave.
async fn player(
    args: &Args,
    plan: &TimerPlan,
    n: usize,
    stagger: Duration,
    ready: &AtomicUsize,
    mut go: tokio::sync::watch::Receiver<bool>,
    out: &Mutex<Measured>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = args.addr;
    let name = format!("{}-{n}", args.prefix);
    let login = post(addr, &format!("/v1/{}/login", plan.title), &json!({ "player": name })).await;
    let connected = match login {
        Ok(v) => {
            let token = v["token"].as_str().unwrap_or_default().to_string();
            tokio_tungstenite::connect_async(format!("ws://{addr}/v1/{}/ws?token={token}", plan.title))
                .await
                .map(|(ws, _)| ws)
                .context("connecting")
        }
        Err(e) => Err(e).context("logging in"),
    };
    ready.fetch_add(1, Ordering::Relaxed);
    let ws = connected?;
    go.wait_for(|g| *g).await.context("the run ended")?;
    tokio::time::sleep(stagger).await;
    let (mut tx, mut rx) = ws.split();
    let (x, y) = plan.spot;
    tx.send(Message::Text(
        json!({ "id": 1, "action": "build", "args": { "building": plan.building, "x": x, "y": y } }).to_string().into(),
    ))
    .await?;
    tx.send(Message::Text(json!({ "id": 2, "action": "get_state" }).to_string().into())).await?;
    // Timer ends the state announced, in ms, each a construction (false)
    // or a unit (true).
    let mut ends: BTreeMap<i64, bool> = BTreeMap::new();
    let (mut trained, mut queued) = (0u32, false);
    let until = Instant::now()
        + Duration::from_secs((plan.build_seconds + plan.train_seconds * i64::from(plan.count)).max(0) as u64)
        + LATE_MAX;
    let (mut training_us, mut construction_us) = (Vec::new(), Vec::new());
    while trained < plan.count {
        let m = match tokio::time::timeout_at(until.into(), rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => bail!("socket: {e}"),
            Ok(None) => bail!("the server closed the socket"),
            Err(_) => break,
        };
        let arrived = wall_us();
        let v: Value = serde_json::from_str(m.as_str()).context("a message that is not JSON")?;
        if v["ok"] == false {
            bail!("{}", v["error"]);
        }
        match (v["id"].as_u64(), v["event"].as_str()) {
            (Some(2 | 4), _) => {
                let state = &v["result"]["state"];
                for b in state["buildings"].as_array().into_iter().flatten() {
                    if let Some(e) = b["upgrade"]["ends_ms"].as_i64() {
                        ends.entry(e).or_insert(false);
                    }
                }
                for t in state["training"].as_array().into_iter().flatten() {
                    if let Some(e) = t["ends_ms"].as_i64() {
                        ends.insert(e, true);
                    }
                }
            }
            (None, Some("game_events")) => {
                let at = v["at_ms"].as_i64().unwrap_or(i64::MAX);
                let due: Vec<(i64, bool)> = ends.range(..=at).map(|(&e, &k)| (e, k)).collect();
                for (end, unit) in due {
                    ends.remove(&end);
                    let us = (arrived - end * 1000).max(0) as u64;
                    if unit {
                        training_us.push(us);
                        trained += 1;
                    } else {
                        construction_us.push(us);
                    }
                }
                if !queued && ends.is_empty() {
                    queued = true;
                    let train =
                        json!({ "id": 3, "action": "train", "args": { "unit": plan.unit, "count": plan.count } });
                    tx.send(Message::Text(train.to_string().into())).await?;
                    tx.send(Message::Text(json!({ "id": 4, "action": "get_state" }).to_string().into())).await?;
                }
            }
            _ => {}
        }
    }
    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
    o.missing += u64::from(plan.count - trained);
    o.training_us.extend(training_us);
    o.construction_us.extend(construction_us);
    Ok(())
}
