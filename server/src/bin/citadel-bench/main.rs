//! `citadel-bench`: a load generator. N simulated players log in over HTTP,
//! open a WebSocket each, and send valid actions of a title at a given rate
//! (open loop: sends are scheduled independently of answers, so a slow
//! server cannot hide its latency) or as fast as answers come (closed
//! loop), for a bounded time. It reports throughput, latency percentiles,
//! errors and the server's CPU and memory. `--with-echo` also runs the same
//! traffic against a minimal axum WebSocket echo server that the tool
//! starts itself, the transport ceiling of this machine, and reports the
//! game server's throughput as a ratio of it; `--echo-cpu` runs that echo
//! server in a process of its own pinned to a core (as the game server is).
//!
//! `--reload-every-ms N` pushes a new version of the title to the server's
//! admin API every N ms while it measures (hot reload under load), and
//! reports the latency of requests sent during a reload against the rest
//! of the same run, and how long every title takes to reload.
//!
//! `--chat CLANS` measures clan chat fan-out across servers on NATS
//! against a raw NATS loop (see `chat.rs`); `--timers UNIT` measures how late timer completions are pushed (see
//! `pushes.rs`).
//!
//! `--seed DIR` writes player files of `--file-kb` kilobytes into a data
//! directory before a server starts; `--logins` then measures how fast the
//! server logs those players in (each login loads and parses the file and
//! takes the player's lock).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

mod chat;
mod gateway;
mod journal;
mod pushes;
mod waves;

/// Simulated players at most; each holds a socket and two tasks.
const PLAYERS_MAX: usize = 50_000;
/// Players logging in and connecting at once before a run: each holds a
/// login connection until its WebSocket is open, and all at once would
/// need two sockets per player, past this machine's 20,000 open files per
/// process with 15,000 players.
const CONNECTING_MAX: usize = 256;
/// Longest run.
const DURATION_SECONDS_MAX: u64 = 3600;

#[derive(Parser, Debug, Clone)]
#[command(name = "citadel-bench", about = "Load generator for a Citadel game server")]
struct Args {
    /// Server address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: SocketAddr,
    /// Title to play, or several separated by commas (a mix: simulated
    /// player n plays the n-th, in turn).
    #[arg(long, default_value = "ironhold")]
    title: String,
    /// Simulated players.
    #[arg(long, default_value_t = 100)]
    players: usize,
    /// Actions per second per player; 0 means closed loop (next action as
    /// soon as the answer arrives).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds to send for and measure (after every player has connected
    /// and after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of sending before measuring starts. Every simulated player
    /// starts sending in the same instant, which no real population does;
    /// the first seconds measure that artificial burst (and first-use
    /// allocation), not the steady state. Their worst latencies are still
    /// reported, in `max_latency_ms_by_second`.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// `move` (the headquarters back and forth: rules engine and collision
    /// check) or `ping` (transport and session only).
    #[arg(long, default_value = "move")]
    action: String,
    /// Player id prefix, so that runs do not share players.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Process id of the server, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also run the same traffic against a built-in echo server and report the ratio.
    #[arg(long)]
    with_echo: bool,
    /// Run the echo server in its own process pinned to this CPU (with
    /// `taskset`), so that it has the game server's resources, not the
    /// load generator's.
    #[arg(long)]
    echo_cpu: Option<u32>,
    /// Serve the echo server only and print its address (used by `--echo-cpu`).
    #[arg(long, hide = true)]
    serve_echo: bool,
    /// Write `--players` player files of the title into this data
    /// directory (file backend) and exit.
    #[arg(long, value_name = "DATA_DIR")]
    seed: Option<std::path::PathBuf>,
    /// Folder of title folders: where the titles played are read from (to
    /// plan their moves), and where `--seed` and `--reload-every-ms` read.
    #[arg(long, default_value = "titles")]
    titles: std::path::PathBuf,
    /// Size of each seeded player file, in kilobytes (of JSON).
    #[arg(long, default_value_t = 50)]
    file_kb: usize,
    /// The format of the seeded files (json, msgpack, json+lz4,
    /// msgpack+lz4); without it, plain JSON as written before headers.
    #[arg(long)]
    file_format: Option<citadel_runtime::FileFormat>,
    /// Measure logins instead of actions: every player logs in once.
    #[arg(long)]
    logins: bool,
    /// Measure guest logins at a gateway (`--addr`) instead: `--players`
    /// new guests, then each logs back in; `--server-pid` is the gateway's.
    #[arg(long)]
    gateway_logins: bool,
    /// The login storm (see `waves.rs`): this many players with seeded
    /// files log in at the same instant while `--players` others play.
    #[arg(long, value_name = "PLAYERS")]
    storm: Option<usize>,
    /// Measure logouts with saves instead (see `waves.rs`): the seeded
    /// `--players` log in, send one request each and all reach the
    /// server's idle timeout together.
    #[arg(long)]
    logouts: bool,
    /// With `--logouts`: the server's `idle_timeout_seconds`.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Logins in flight at once (for `--logins`).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Push a new version of the title (from `--titles`) to the server's
    /// admin API this often while measuring; 0 for never.
    #[arg(long, default_value_t = 0)]
    reload_every_ms: u64,
    /// The server's admin token (for `--reload-every-ms`).
    #[arg(long)]
    admin_token: Option<String>,
    /// Measure timer pushes instead: every player trains this unit
    /// (`--train-count` of them, one after another) and times each push.
    #[arg(long, value_name = "UNIT")]
    timers: Option<String>,
    /// Measure clan chat fan-out instead, with this many clans of
    /// `--clan-size` online members spread over the servers of `--addrs`.
    #[arg(long, value_name = "CLANS")]
    chat: Option<usize>,
    /// Members per clan with `--chat`.
    #[arg(long, default_value_t = 30)]
    clan_size: usize,
    /// The game servers of `--chat` (HOST:PORT,HOST:PORT,...).
    #[arg(long, default_value = "")]
    addrs: String,
    /// With `--chat`: the processes whose CPU is counted (the game servers,
    /// then NATS, comma-separated; NATS last, as the baseline counts it).
    #[arg(long, default_value = "")]
    server_pids: String,
    /// With `--chat`: NATS, for the raw publish/subscribe baseline; with
    /// `--jetstream-baseline`, the NATS with JetStream to publish to.
    #[arg(long)]
    nats: Option<String>,
    /// Publish straight to JetStream on `--nats` what `--players` players'
    /// journals would at `--rate`, timing each acknowledgement (no game
    /// server): the JetStream journal's floor on this machine.
    #[arg(long)]
    jetstream_baseline: bool,
    /// With `--jetstream-baseline`: how saved records are removed (none,
    /// head: the journal's way, per-player: its way before 2026-12-02).
    #[arg(long, value_enum, default_value = "none")]
    purge: journal::Purge,
    /// With `--purge`: records acknowledged this many seconds ago count as
    /// saved (the save interval).
    #[arg(long, default_value_t = 30)]
    purge_after: u64,
    /// With `--purge head`: how often the head is purged (by default as
    /// often as the journal does).
    #[arg(long, default_value_t = citadel_server::journal::jetstream::PURGE_EVERY.as_millis() as u64)]
    purge_every_ms: u64,
    /// Units each player queues with `--timers`.
    #[arg(long, default_value_t = 10)]
    train_count: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// What each title of `--title` is played with (worked out from the
    /// titles' data in `--titles`).
    #[arg(skip)]
    plans: Vec<Plan>,
}

/// How a simulated player plays one title: `move` takes the first
/// starting building back and forth between its own spot and a free one.
#[derive(Debug, Clone, Default)]
struct Plan {
    title: String,
    home: (i32, i32),
    away: (i32, i32),
}

impl Plan {
    /// The plan for a title in `titles`: a new player's base is exactly
    /// its `start.buildings`, so the first free spot for the first of them
    /// (scanning from the far corner) is free for every simulated player.
    fn of(titles: &std::path::Path, id: &str) -> anyhow::Result<Plan> {
        let (title, diags) = citadel_runtime::load(&titles.join(id));
        let Some(t) = title else {
            bail!("title {id} does not load: {} problems (run citadel-edit validate)", diags.len())
        };
        let start = &t.manifest.start.buildings;
        let first = start.first().context("the title starts with no buildings")?;
        let size = t.building(&first.building).map_or((1, 1), |d| (d.def.size.w, d.def.size.h));
        let away =
            free_spot(&t, size).with_context(|| format!("title {id}: no free spot to move its first building to"))?;
        Ok(Plan { title: id.to_string(), home: (first.x, first.y), away })
    }
}

/// A spot for a building of `(w, h)` that no starting building overlaps
/// (so free in every new player's base), scanning from the far corner.
fn free_spot(t: &citadel_runtime::Title, (w, h): (i32, i32)) -> Option<(i32, i32)> {
    let start = &t.manifest.start.buildings;
    let size = |b: &str| t.building(b).map_or((1, 1), |d| (d.def.size.w, d.def.size.h));
    let overlaps = |x: i32, y: i32| {
        start.iter().any(|b| {
            let (bw, bh) = size(&b.building);
            x < b.x + bw && b.x < x + w && y < b.y + bh && b.y < y + h
        })
    };
    let grid = &t.manifest.grid;
    (0..=grid.height - h)
        .rev()
        .flat_map(|y| (0..=grid.width - w).rev().map(move |x| (x, y)))
        .find(|&(x, y)| !overlaps(x, y))
}

/// What one run measured.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    answered: u64,
    errors: u64,
    /// Error answers by code (e.g. `rate_limited` when the server's
    /// per-player limit is below the offered rate).
    error_codes: HashMap<String, u64>,
    latencies_us: Vec<u64>,
    /// When each measured request was sent, parallel to `latencies_us`.
    sent_times: Vec<Instant>,
    /// Title pushes during the run: (start, end, server's reload ms, served).
    reloads: Vec<(Instant, Instant, f64, bool)>,
    /// The longest latency of the answers to each second's sends: a stall
    /// (of the disk, of a core) shows as a few bad seconds, an overloaded
    /// server as bad seconds throughout.
    max_us_by_second: Vec<u64>,
    seconds: f64,
    connect_failures: u64,
    /// Requests never answered (within the drain after the run), and a
    /// few of them as (player, request id) to look up in the server's log.
    unanswered: u64,
    unanswered_examples: Vec<(String, u64)>,
    /// The measured process's CPU (percent of one core) and resident bytes.
    usage: Option<(f64, u64)>,
}

/// p50, p99 and max of some latencies, in milliseconds.
fn percentiles(mut us: Vec<u64>) -> Value {
    us.sort_unstable();
    let pct = |p| percentile_ms(&us, p);
    json!({ "n": us.len(), "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) })
}

/// The `p` quantile of sorted microseconds, in milliseconds (0 when empty).
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

/// Requests sent this long after a reload's answer still count as during
/// it (the server's core may still be catching up).
const RELOAD_SHADOW: Duration = Duration::from_millis(10);

impl Outcome {
    /// Latency of requests sent while a reload ran against the rest of the
    /// run, and the reloads' own times.
    fn reload_summary(&self) -> Option<Value> {
        if self.reloads.is_empty() {
            return None;
        }
        let (mut during, mut steady) = (Vec::new(), Vec::new());
        for (&us, &t) in self.latencies_us.iter().zip(&self.sent_times) {
            if self.reloads.iter().any(|&(a, b, _, _)| a <= t && t <= b + RELOAD_SHADOW) {
                during.push(us);
            } else {
                steady.push(us);
            }
        }
        let server_ms: Vec<u64> = self.reloads.iter().map(|r| (r.2 * 1000.0) as u64).collect();
        let round_trip: Vec<u64> = self.reloads.iter().map(|r| r.1.duration_since(r.0).as_micros() as u64).collect();
        let (d, s) = (percentiles(during), percentiles(steady));
        let ratio = d["p99"].as_f64().unwrap_or(0.0) / s["p99"].as_f64().unwrap_or(0.0).max(1e-9);
        Some(json!({
            "reloads": self.reloads.len(),
            "served": self.reloads.iter().filter(|r| r.3).count(),
            "server_reload_ms": percentiles(server_ms),
            "round_trip_ms": percentiles(round_trip),
            "latency_during_reload_ms": d,
            "latency_steady_ms": s,
            "p99_during_to_steady_ratio": ratio,
        }))
    }

    fn summary(&mut self) -> Value {
        self.latencies_us.sort_unstable();
        let pct = |p| percentile_ms(&self.latencies_us, p);
        json!({
            "sent": self.sent,
            "answered": self.answered,
            "errors": self.errors,
            "error_codes": self.error_codes,
            "connect_failures": self.connect_failures,
            "unanswered": self.unanswered,
            "unanswered_examples": self.unanswered_examples,
            "seconds": self.seconds,
            "throughput_per_s": self.answered as f64 / self.seconds.max(1e-9),
            "latency_ms": { "p50": pct(0.50), "p99": pct(0.99), "p99_9": pct(0.999), "max": pct(1.0) },
            "max_latency_ms_by_second": self.max_us_by_second.iter().map(|&us| us as f64 / 1000.0).collect::<Vec<_>>(),
        })
    }
}

/// A minimal HTTP/1.1 POST (a login, or an admin call with `token`);
/// the JSON answer if the status is one of `ok`.
async fn post_as(addr: SocketAddr, path: &str, token: Option<&str>, body: &Value, ok: &[u16]) -> anyhow::Result<Value> {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP answer")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if !ok.contains(&status) {
        bail!("{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(serde_json::from_str(body)?)
}

/// A login (or any POST answered 200).
async fn post(addr: SocketAddr, path: &str, body: &Value) -> anyhow::Result<Value> {
    post_as(addr, path, None, body, &[200]).await
}

fn request(i: u64, action: &str, plan: &Plan) -> String {
    match action {
        "ping" => json!({ "id": i, "action": "ping" }).to_string(),
        // The first starting building (instance 1) between two free spots.
        _ => {
            let (x, y) = if i.is_multiple_of(2) { plan.away } else { plan.home };
            json!({ "id": i, "action": "move", "args": { "id": 1, "x": x, "y": y } }).to_string()
        }
    }
}

/// Answers one player received.
#[derive(Default)]
struct Tally {
    answered: u64,
    errors: u64,
    codes: HashMap<String, u64>,
    latencies_us: Vec<u64>,
    sent_times: Vec<Instant>,
    /// Start of the sending window, for `max_us_by_second`.
    start: Option<Instant>,
    /// Answers to sends before this are matched but not measured.
    measure_from: Option<Instant>,
    /// Every answer matched, measured or not.
    matched: u64,
    max_us_by_second: Vec<u64>,
}

/// Merges per-second maxima.
fn merge_max(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a = (*a).max(*b);
    }
}

impl Tally {
    /// Records an answer to one of our sends; false for anything else
    /// (pushed events, answers already counted).
    fn record(&mut self, text: &str, sent_at: &Mutex<HashMap<u64, Instant>>) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(text) else { return false };
        let Some(id) = v["id"].as_u64() else { return false };
        let Some(t0) = sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) else { return false };
        let us = t0.elapsed().as_micros() as u64;
        self.matched += 1;
        if let Some(start) = self.start {
            // Bounded by the run's duration (at most an hour of seconds).
            let second = t0.saturating_duration_since(start).as_secs() as usize;
            if self.max_us_by_second.len() <= second {
                self.max_us_by_second.resize(second + 1, 0);
            }
            self.max_us_by_second[second] = self.max_us_by_second[second].max(us);
        }
        if self.measure_from.is_some_and(|m| t0 < m) {
            return true;
        }
        self.latencies_us.push(us);
        self.sent_times.push(t0);
        self.answered += 1;
        if v["ok"] == false {
            self.errors += 1;
            *self.codes.entry(v["error"]["code"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
        true
    }
}

/// The start line: every player reports ready (connected, or failed), and
/// sending starts for all at once, so that slow logins never turn into a
/// burst of overdue sends.
struct Start {
    ready: std::sync::atomic::AtomicUsize,
    /// Players logging in and connecting at once (see [`CONNECTING_MAX`]).
    connecting: tokio::sync::Semaphore,
    /// (start, start of measuring, end) of the sending window, once
    /// everyone is ready.
    go: tokio::sync::watch::Receiver<Option<(Instant, Instant, Instant)>>,
}

impl Start {
    fn arrive(&self) {
        self.ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One simulated player: log in, connect, wait for the start, send until
/// the end, collect answers.
async fn player(args: Arc<Args>, addr: SocketAddr, n: usize, start: Arc<Start>, out: Arc<Mutex<Outcome>>) {
    let name = format!("{}-{n}", args.prefix);
    let plan = &args.plans[n % args.plans.len()];
    let connecting = start.connecting.acquire().await;
    let token = match post(addr, &format!("/v1/{}/login", plan.title), &json!({ "player": name })).await {
        Ok(v) => v["token"].as_str().unwrap_or_default().to_string(),
        Err(_) => {
            out.lock().unwrap_or_else(|p| p.into_inner()).connect_failures += 1;
            start.arrive();
            return;
        }
    };
    let url = format!("ws://{addr}/v1/{}/ws?token={token}", plan.title);
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
        out.lock().unwrap_or_else(|p| p.into_inner()).connect_failures += 1;
        start.arrive();
        return;
    };
    drop(connecting);
    start.arrive();
    let mut go = start.go.clone();
    let window = match go.wait_for(Option::is_some).await {
        Ok(w) => *w,
        Err(_) => return,
    };
    let Some((start_at, measure_from, until)) = window else { return };
    let (mut tx, mut rx) = ws.split();
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
    let closed_loop = args.rate <= 0.0;
    let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Receiver: match answers to sends by id.
    let recv = {
        let (sent_at, out, name) = (sent_at.clone(), out.clone(), name.clone());
        tokio::spawn(async move {
            let mut tally = Tally { start: Some(start_at), measure_from: Some(measure_from), ..Tally::default() };
            let total_target = loop {
                tokio::select! {
                    _ = done_rx.changed() => break *done_rx.borrow(),
                    m = rx.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if tally.record(t.as_str(), &sent_at) {
                                let _ = answered_tx.send(());
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break u64::MAX,
                    }
                }
            };
            // Drain answers still in flight (bounded wait).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while tally.matched < total_target {
                match tokio::time::timeout_at(deadline, rx.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        tally.record(t.as_str(), &sent_at);
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            let missing: Vec<u64> = sent_at.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
            o.unanswered += missing.len() as u64;
            if let Some(&id) = missing.iter().min() {
                if o.unanswered_examples.len() < 5 {
                    o.unanswered_examples.push((name.clone(), id));
                }
            }
            o.answered += tally.answered;
            o.errors += tally.errors;
            for (c, n) in tally.codes {
                *o.error_codes.entry(c).or_default() += n;
            }
            o.latencies_us.extend(tally.latencies_us);
            o.sent_times.extend(tally.sent_times);
            merge_max(&mut o.max_us_by_second, &tally.max_us_by_second);
        })
    };
    tokio::time::sleep_until(start_at.into()).await;
    let mut i = 0u64;
    let mut measured = 0u64;
    let period = if closed_loop { Duration::ZERO } else { Duration::from_secs_f64(1.0 / args.rate) };
    // Spread players' first sends over one period so they do not all fire at once.
    let offset = if closed_loop { Duration::ZERO } else { period.mul_f64((n % 1000) as f64 / 1000.0) };
    let mut next = start_at + offset;
    while Instant::now() < until {
        if closed_loop {
            if i > 0 && answered_rx.recv().await.is_none() {
                break;
            }
        } else {
            tokio::time::sleep_until(next.into()).await;
            next += period;
            if Instant::now() >= until {
                break;
            }
        }
        let now = Instant::now();
        measured += u64::from(now >= measure_from);
        sent_at.lock().unwrap_or_else(|p| p.into_inner()).insert(i, now);
        if tx.send(Message::Text(request(i, &args.action, plan).into())).await.is_err() {
            break;
        }
        i += 1;
    }
    out.lock().unwrap_or_else(|p| p.into_inner()).sent += measured;
    let _ = done_tx.send(i);
    let _ = recv.await;
    let _ = tx.close().await;
}

/// Runs the traffic against `addr` and returns what it measured.
async fn run(args: Arc<Args>, addr: SocketAddr, pid: Option<u32>) -> Outcome {
    let out = Arc::new(Mutex::new(Outcome::default()));
    let (go_tx, go) = tokio::sync::watch::channel(None);
    let start = Arc::new(Start {
        ready: std::sync::atomic::AtomicUsize::new(0),
        connecting: tokio::sync::Semaphore::new(CONNECTING_MAX),
        go,
    });
    let mut tasks = Vec::with_capacity(args.players);
    for n in 0..args.players {
        tasks.push(tokio::spawn(player(args.clone(), addr, n, start.clone(), out.clone())));
    }
    // Everyone logs in and connects first (bounded by a minute per 1,000).
    let deadline = Instant::now() + Duration::from_secs(60 * (args.players as u64 / 1000 + 1));
    while start.ready.load(std::sync::atomic::Ordering::Relaxed) < args.players && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start_at = Instant::now() + Duration::from_secs(1);
    let measure_from = start_at + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.duration);
    let _ = go_tx.send(Some((start_at, measure_from, until)));
    let reloading =
        (args.reload_every_ms > 0).then(|| tokio::spawn(push_versions(args.clone(), addr, measure_from, until)));
    // The process's CPU over the measured window only (not logins).
    tokio::time::sleep_until(measure_from.into()).await;
    let before = pid.and_then(process_usage);
    tokio::time::sleep_until(until.into()).await;
    let after = pid.and_then(process_usage);
    let reloads = match reloading {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    for t in tasks {
        let _ = t.await;
    }
    let mut o = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    o.seconds = args.duration as f64;
    o.reloads = reloads;
    if let (Some((c0, _)), Some((c1, rss))) = (before, after) {
        o.usage = Some(((c1 - c0) / o.seconds * 100.0, rss));
    }
    o
}

/// POSTs to the admin API; the JSON answer of a 200 or a 422 (a refused title).
async fn post_admin(addr: SocketAddr, path: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
    post_as(addr, path, Some(token), body, &[200, 422]).await
}

/// Pushes a new version of the title every `--reload-every-ms` from
/// `from` until `until` (its description changes, so each is a new
/// content version and a real swap); returns what each push took.
async fn push_versions(
    args: Arc<Args>,
    addr: SocketAddr,
    from: Instant,
    until: Instant,
) -> Vec<(Instant, Instant, f64, bool)> {
    let mut done = Vec::new();
    let Some(token) = args.admin_token.clone() else { return done };
    let (files, _) = citadel_runtime::read_dir(&args.titles.join(&args.title));
    let Ok(mut manifest) = serde_json::from_str::<Value>(files.get("title.json").map_or("", String::as_str)) else {
        return done;
    };
    let every = Duration::from_millis(args.reload_every_ms);
    let mut next = from + every / 2;
    let mut k = 0u64;
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        k += 1;
        manifest["description"] = json!(format!("benchmark version {k}"));
        let mut files = files.clone();
        files.insert("title.json".into(), manifest.to_string());
        let t0 = Instant::now();
        let r = post_admin(addr, &format!("/admin/api/titles/{}/push", args.title), &token, &json!({ "files": files }))
            .await;
        let t1 = Instant::now();
        if let Ok(v) = r {
            let report = &v["reports"][0];
            done.push((t0, t1, report["load_ms"].as_f64().unwrap_or(0.0), report["outcome"] == "swapped"));
        }
    }
    done
}

/// Reloads every title from the server's folder `rounds` times; the
/// server's reload time of each title, in ms.
async fn reload_all(args: &Args, rounds: usize) -> anyhow::Result<Value> {
    let token = args.admin_token.as_deref().context("--admin-token is needed to reload")?;
    let mut by_title: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for _ in 0..rounds {
        let v = post_admin(args.addr, "/admin/api/titles/reload", token, &json!({})).await?;
        for r in v["reports"].as_array().into_iter().flatten() {
            let ms = r["load_ms"].as_f64().unwrap_or(0.0);
            by_title.entry(r["title"].as_str().unwrap_or("?").to_string()).or_default().push((ms * 1000.0) as u64);
        }
    }
    Ok(json!(by_title.into_iter().map(|(t, us)| (t, percentiles(us))).collect::<serde_json::Map<String, Value>>()))
}

/// The transport ceiling: answers every message with the same text at once,
/// and accepts the same login and WebSocket URLs as the game server.
async fn echo_server() -> anyhow::Result<SocketAddr> {
    use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route("/v1/{title}/login", post(|| async { axum::Json(json!({ "token": "echo" })) }))
        .route(
            "/v1/{title}/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.read_buffer_size(4096).on_upgrade(|mut socket| async move {
                    while let Some(Ok(m)) = socket.recv().await {
                        if let AxMessage::Text(t) = m {
                            if socket.send(AxMessage::Text(t)).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Serves the echo server until stdin closes (the parent's end).
async fn serve_echo() -> anyhow::Result<()> {
    let addr = echo_server().await?;
    println!("{addr}");
    // Blocking read on a thread of its own: tokio's stdin needs a feature
    // the server does not use.
    tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).unwrap_or(0) > 0 {}
    })
    .await?;
    Ok(())
}

/// Starts `citadel-bench --serve-echo` pinned to `cpu`; returns it and its address.
fn spawn_echo(cpu: u32) -> anyhow::Result<(std::process::Child, SocketAddr)> {
    use std::io::BufRead;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = std::process::Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(exe)
        .arg("--serve-echo")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the echo server with taskset")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("echo server stdout")?).read_line(&mut line)?;
    Ok((child, line.trim().parse().context("echo server address")?))
}

/// Writes `players` files of about `file_kb` KB each for the title.
fn seed(args: &Args, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let (title, diags) = citadel_runtime::load(&args.titles.join(&args.title));
    let Some(title) = title else {
        bail!("title {} does not load: {} problems (run citadel-edit validate)", args.title, diags.len())
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let mut state = citadel_runtime::new_player(&title, now);
    // A big base: the title's smallest building type on every free cell
    // of the grid's first rows (what makes real player files large), then
    // flags for whatever size is left.
    let smallest = title.buildings.iter().min_by_key(|b| b.def.size.w * b.def.size.h).context("no buildings")?;
    let (w, h) = (smallest.def.size.w, smallest.def.size.h);
    let grid = &title.manifest.grid;
    let taken = |s: &citadel_runtime::PlayerState, x: i32, y: i32| {
        s.buildings.iter().any(|b| {
            let d = &title.building(&b.building).map(|t| &t.def.size);
            let (bw, bh) = d.map_or((1, 1), |d| (d.w, d.h));
            x < b.x + bw && b.x < x + w && y < b.y + bh && b.y < y + h
        })
    };
    'fill: for y in (0..grid.height - h + 1).step_by(h as usize) {
        for x in (0..grid.width - w + 1).step_by(w as usize) {
            if state.to_json().len() >= args.file_kb * 1024 {
                break 'fill;
            }
            if !taken(&state, x, y) {
                let id = state.next_building_id;
                state.next_building_id += 1;
                state.buildings.push(citadel_runtime::state::Building::completed(id, &smallest.def.id, 1, x, y, now));
            }
        }
    }
    let mut n = 0;
    while state.to_json().len() < args.file_kb * 1024 {
        state.flags.insert(format!("bench_padding_{n:06}"));
        n += 1;
    }
    let text = match args.file_format {
        Some(format) => state.encode(format),
        None => state.to_json().into_bytes(),
    };
    let dir = data_dir.join("players").join(&args.title);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for i in 0..args.players {
        let path = dir.join(format!("{}-{i}.json", args.prefix));
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("wrote {} player files of {} bytes into {}", args.players, text.len(), dir.display());
    Ok(())
}

/// Every player logs in once over a new connection, `concurrency` at a time.
async fn logins(args: Arc<Args>) -> Outcome {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Outcome::default()));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (args, next, out) = (args.clone(), next.clone(), out.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= args.players {
                        break;
                    }
                    let body = json!({ "player": format!("{}-{n}", args.prefix) });
                    let t = Instant::now();
                    let r = post(args.addr, &format!("/v1/{}/login", args.title), &body).await;
                    tally.latencies_us.push(t.elapsed().as_micros() as u64);
                    tally.answered += 1;
                    if let Err(e) = r {
                        tally.errors += 1;
                        *tally.codes.entry(e.to_string()).or_default() += 1;
                    }
                }
                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                o.sent += tally.answered;
                o.answered += tally.answered;
                o.errors += tally.errors;
                for (c, n) in tally.codes {
                    *o.error_codes.entry(c).or_default() += n;
                }
                o.latencies_us.extend(tally.latencies_us);
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let mut o = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    o.seconds = t0.elapsed().as_secs_f64();
    o
}

/// CPU seconds (user + system) and resident memory of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the command name.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, rss_kb * 1024))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_echo {
        return serve_echo().await;
    }
    if args.players == 0 || args.players > PLAYERS_MAX {
        bail!("--players must be 1 to {PLAYERS_MAX}");
    }
    if args.duration == 0 || args.duration > DURATION_SECONDS_MAX {
        bail!("--duration must be 1 to {DURATION_SECONDS_MAX} seconds");
    }
    if args.warmup > DURATION_SECONDS_MAX {
        bail!("--warmup must be at most {DURATION_SECONDS_MAX} seconds");
    }
    if !matches!(args.action.as_str(), "move" | "ping") {
        bail!("--action must be move or ping");
    }
    let mix = args.title.contains(',');
    if mix && (args.seed.is_some() || args.logins || args.logouts || args.storm.is_some() || args.reload_every_ms > 0) {
        bail!("--seed, --logins, --logouts, --storm and --reload-every-ms take one --title, not a mix");
    }
    if let Some(dir) = &args.seed {
        return seed(&args, dir);
    }
    if args.gateway_logins {
        let report = gateway::logins(&args).await?;
        println!("{}", if args.json { report.to_string() } else { serde_json::to_string_pretty(&report)? });
        return Ok(());
    }
    if args.jetstream_baseline {
        let url = args.nats.clone().context("--jetstream-baseline needs --nats")?;
        let report = journal::baseline(&args, &url).await?;
        println!("{}", if args.json { report.to_string() } else { serde_json::to_string_pretty(&report)? });
        return Ok(());
    }
    if let Some(clans) = args.chat {
        let report = chat::chat(Arc::new(args.clone()), clans).await?;
        println!("{}", if args.json { report.to_string() } else { serde_json::to_string_pretty(&report)? });
        return Ok(());
    }
    if let Some(unit) = &args.timers {
        let plan = pushes::TimerPlan::of(&args.titles, args.title.trim(), unit, args.train_count)?;
        let report = pushes::timers(Arc::new(args.clone()), plan).await?;
        println!("{}", if args.json { report.to_string() } else { serde_json::to_string_pretty(&report)? });
        let failed = report["failures"].as_u64().unwrap_or(0);
        if failed > 0 {
            bail!("{failed} of {} simulated players failed: {}", args.players, report["errors"]);
        }
        return Ok(());
    }
    if args.logouts {
        let report = waves::logouts(Arc::new(args.clone())).await?;
        println!("{}", if args.json { report.to_string() } else { serde_json::to_string_pretty(&report)? });
        return Ok(());
    }
    let mut args = args;
    args.plans = args.title.split(',').map(|t| Plan::of(&args.titles, t.trim())).collect::<anyhow::Result<_>>()?;
    let args = Arc::new(args);
    if let Some(n) = args.storm {
        if n == 0 || n > PLAYERS_MAX {
            bail!("--storm must be 1 to {PLAYERS_MAX}");
        }
        let report = waves::storm(args.clone(), n).await?;
        println!("{}", if args.json { report.to_string() } else { serde_json::to_string_pretty(&report)? });
        let errors = report["storm"]["errors"].as_u64().unwrap_or(0);
        if errors > 0 {
            bail!("{errors} of {n} players of the storm did not get to play: {}", report["storm"]["error_kinds"]);
        }
        return Ok(());
    }
    let title_reloads = if args.reload_every_ms > 0 { Some(reload_all(&args, 10).await?) } else { None };
    let before = args.server_pid.and_then(process_usage);
    let mut game =
        if args.logins { logins(args.clone()).await } else { run(args.clone(), args.addr, args.server_pid).await };
    let after = args.server_pid.and_then(process_usage);
    if args.logins {
        if let (Some((c0, _)), Some((c1, rss))) = (before, after) {
            game.usage = Some(((c1 - c0) / game.seconds * 100.0, rss));
        }
    }
    // Before `summary`, which sorts the latencies.
    let hot_reload = game.reload_summary();
    let mut report = if args.logins {
        json!({ "title": args.title, "players": args.players, "mode": "logins", "concurrency": args.concurrency, "game": game.summary() })
    } else {
        json!({ "title": args.title, "players": args.players, "rate": args.rate, "action": args.action, "warmup_seconds": args.warmup, "game": game.summary() })
    };
    if let Some(r) = hot_reload {
        report["hot_reload"] = r;
    }
    if let Some(t) = title_reloads {
        report["title_reload_ms"] = t;
    }
    if let Some((cpu, rss)) = game.usage {
        report["server"] = json!({ "cpu_percent_of_one_core": cpu, "rss_bytes": rss, "rss_bytes_per_player": rss / args.players as u64 });
    }
    if args.with_echo && !args.logins {
        let mut echo_args = (*args).clone();
        echo_args.prefix = format!("{}-echo", args.prefix);
        let (child, addr) = match args.echo_cpu {
            Some(cpu) => {
                let (child, addr) = spawn_echo(cpu)?;
                (Some(child), addr)
            }
            None => (None, echo_server().await?),
        };
        let mut echo = run(Arc::new(echo_args), addr, child.as_ref().map(|c| c.id())).await;
        if let Some((cpu, rss)) = echo.usage {
            report["echo_server"] = json!({ "cpu_percent_of_one_core": cpu, "rss_bytes": rss });
        }
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let ratio = game.answered as f64 / echo.answered.max(1) as f64;
        report["echo"] = echo.summary();
        report["game_to_echo_throughput_ratio"] = json!(ratio);
    }
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let failed = report["game"]["connect_failures"].as_u64().unwrap_or(0);
    if failed > 0 {
        // A run in which players could not connect measured fewer players
        // than it says: fail it, so that its figures are not taken as the
        // load asked for.
        bail!(
            "{failed} of {} simulated players could not log in or connect (a connection limit of the server? see its log)",
            args.players
        );
    }
    Ok(())
}
