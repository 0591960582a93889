//! `--chat CLANS`: clan chat fan-out across game servers sharing NATS.
//! `CLANS` clans of `--clan-size` members, spread over the servers of
//! `--addrs` (member m of clan c on server (c * size + m) mod servers), all
//! online over WebSockets; every clan gets one line a second (its members
//! take turns, within the server's per-player chat limit). A line carries
//! its send time; the latency of a delivery is its arrival at a member
//! (any server) minus that. CPU per delivered line is the game servers'
//! and NATS's CPU over the measured window divided by the deliveries.
//!
//! The baseline, in the same run: a raw `async-nats` loop doing the same
//! fan-out with no game server: one subscription per member (on as many
//! connections as there are servers), one publish per clan a second; its
//! CPU is this process's and NATS's over its window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::{percentiles, post, post_as, process_usage, Args};

/// Clans at most, and members per clan at most (a title's capacity bounds it too).
const CLANS_MAX: usize = 1000;
const CLAN_SIZE_MAX: usize = 100;

/// Deliveries still in flight this long after the last line are waited for.
const DRAIN: Duration = Duration::from_secs(2);

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Latencies of deliveries (µs) sent within the measured window, and counts.
#[derive(Default)]
struct Deliveries {
    latencies_us: Vec<u64>,
    /// Deliveries of measured lines.
    received: u64,
}

/// Shared by every member of one run.
struct Window {
    /// Lines sent at or after this wall time (µs) are measured...
    from_us: AtomicU64,
    /// ...and before this one.
    until_us: AtomicU64,
    measured_lines: AtomicU64,
    got: Mutex<Deliveries>,
}

impl Window {
    fn new() -> Window {
        Window {
            from_us: AtomicU64::new(u64::MAX),
            until_us: AtomicU64::new(u64::MAX),
            measured_lines: AtomicU64::new(0),
            got: Mutex::new(Deliveries::default()),
        }
    }

    fn measured(&self, sent_us: i64) -> bool {
        let s = sent_us.max(0) as u64;
        s >= self.from_us.load(Ordering::Relaxed) && s < self.until_us.load(Ordering::Relaxed)
    }

    fn delivered(&self, sent_us: i64) {
        if self.measured(sent_us) {
            let us = (wall_us() - sent_us).max(0) as u64;
            let mut g = self.got.lock().unwrap_or_else(|p| p.into_inner());
            g.received += 1;
            g.latencies_us.push(us);
        }
    }
}

/// The line text: its send time, so any receiver can time it.
fn stamp() -> (i64, String) {
    let t = wall_us();
    (t, format!("t={t}"))
}

fn sent_of(text: &str) -> Option<i64> {
    text.strip_prefix("t=")?.parse().ok()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Logs `player` in on `addr` and opens a socket.
async fn connect(addr: SocketAddr, title: &str, player: &str) -> anyhow::Result<Socket> {
    let v = post(addr, &format!("/v1/{title}/login"), &json!({ "player": player })).await.context("logging in")?;
    let token = v["token"].as_str().unwrap_or_default();
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/{title}/ws?token={token}"))
        .await
        .context("connecting")?;
    Ok(ws)
}

/// Sends one request and waits for its answer (pushes meanwhile are skipped).
async fn ask(ws: &mut Socket, id: u64, action: &str, args: Value) -> anyhow::Result<Value> {
    ws.send(Message::Text(json!({ "id": id, "action": action, "args": args }).to_string().into())).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                if v["id"].as_u64() == Some(id) {
                    if v["ok"] != true {
                        bail!("{action}: {}", v["error"]);
                    }
                    return Ok(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => bail!("socket: {e}"),
            Ok(None) => bail!("the server closed the socket"),
            Err(_) => bail!("{action}: no answer within 30 s"),
        }
    }
}

/// Sets up one clan: its founder gets the creation cost (admin grant),
/// creates it, and every other member joins. Returns the members' sockets.
async fn clan(args: &Args, addrs: &[SocketAddr], c: usize, cost: &Value) -> anyhow::Result<Vec<Socket>> {
    let title = args.title.trim();
    let size = args.clan_size;
    let token =
        args.admin_token.as_deref().context("--chat needs --admin-token (the founders are granted the clan's cost)")?;
    let name = format!("{} {c}", args.prefix);
    let mut sockets = Vec::with_capacity(size);
    for m in 0..size {
        let addr = addrs[(c * size + m) % addrs.len()];
        let player = format!("{}-c{c}-m{m}", args.prefix);
        let mut ws = connect(addr, title, &player).await?;
        if m == 0 {
            let body = json!({ "resources": cost, "reason": "chat benchmark" });
            post_as(addr, &format!("/admin/api/players/{title}/{player}/adjust"), Some(token), &body, &[200]).await?;
            ask(&mut ws, 1, "clan_create", json!({ "name": name, "open": true })).await?;
        } else {
            ask(&mut ws, 1, "clan_join", json!({ "clan": name })).await?;
        }
        sockets.push(ws);
    }
    Ok(sockets)
}

/// The chat run and its baseline: a JSON report.
pub(crate) async fn chat(args: Arc<Args>, clans: usize) -> anyhow::Result<Value> {
    if clans == 0 || clans > CLANS_MAX || args.clan_size < 2 || args.clan_size > CLAN_SIZE_MAX {
        bail!("--chat must be 1 to {CLANS_MAX} clans, --clan-size 2 to {CLAN_SIZE_MAX}");
    }
    let addrs: Vec<SocketAddr> = args
        .addrs
        .split(',')
        .map(|a| a.trim().parse().with_context(|| format!("--addrs: {a} is not HOST:PORT")))
        .collect::<anyhow::Result<_>>()?;
    let pids: Vec<u32> = args.server_pids.split(',').filter_map(|p| p.trim().parse().ok()).collect();
    let (t, diags) = citadel_runtime::load(&args.titles.join(args.title.trim()));
    let Some(t) = t else { bail!("title {} does not load: {} problems", args.title, diags.len()) };
    let cost =
        serde_json::to_value(t.manifest.world.clans.as_ref().context("the title has no clans")?.create_cost.clone())?;

    // Set up every clan (a few at a time: logins are not what is measured).
    let window = Arc::new(Window::new());
    let mut members: Vec<Vec<Socket>> = Vec::new();
    let setting_up = Instant::now();
    let set_up = futures_util::stream::iter((0..clans).map(|c| {
        let (args, addrs, cost) = (args.clone(), addrs.clone(), cost.clone());
        async move { clan(&args, &addrs, c, &cost).await }
    }))
    .buffered(16)
    .collect::<Vec<_>>()
    .await;
    for s in set_up {
        members.push(s?);
    }
    let set_up_seconds = setting_up.elapsed().as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut senders = Vec::new();
    for (c, sockets) in members.into_iter().enumerate() {
        let mut writers = Vec::new();
        for ws in sockets {
            let (tx, mut rx) = ws.split();
            writers.push(tx);
            let window = window.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(m)) = rx.next().await {
                    if let Message::Text(t) = m {
                        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                        if v["event"] == "chat" {
                            if let Some(sent) = v["text"].as_str().and_then(sent_of) {
                                window.delivered(sent);
                            }
                        }
                    }
                }
            }));
        }
        senders.push((c, writers));
    }
    // One line per clan per second, the clan's members in turn; clans
    // spread over the second.
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let mut sending = Vec::new();
    for (c, mut writers) in senders {
        let (window, stop) = (window.clone(), stop.clone());
        let offset = Duration::from_secs(1).mul_f64(c as f64 / clans as f64);
        sending.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut k = 0usize;
            let mut id = 100u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (sent, text) = stamp();
                let n = writers.len();
                let w = &mut writers[k % n];
                id += 1;
                let msg = json!({ "id": id, "action": "clan_chat_post", "args": { "text": text } });
                if w.send(Message::Text(msg.to_string().into())).await.is_err() {
                    return;
                }
                if window.measured(sent) {
                    window.measured_lines.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    let cpu_before: Vec<Option<(f64, u64)>> = pids.iter().map(|&p| process_usage(p)).collect();
    let from = wall_us();
    window.from_us.store(from as u64, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    window.until_us.store(wall_us() as u64, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_after: Vec<Option<(f64, u64)>> = pids.iter().map(|&p| process_usage(p)).collect();
    tokio::time::sleep(DRAIN).await;
    stop.store(true, Ordering::Relaxed);
    for s in sending {
        s.abort();
    }
    for t in tasks {
        t.abort();
    }
    let lines = window.measured_lines.load(Ordering::Relaxed);
    let got = std::mem::take(&mut *window.got.lock().unwrap_or_else(|p| p.into_inner()));
    let cpu_seconds: f64 =
        cpu_before.iter().zip(&cpu_after).filter_map(|(a, b)| Some(b.as_ref()?.0 - a.as_ref()?.0)).sum();
    let game = json!({
        "servers": addrs.len(),
        "lines": lines,
        "deliveries_expected": lines * args.clan_size as u64,
        "deliveries": got.received,
        "deliveries_per_second": got.received as f64 / seconds,
        "latency_ms": percentiles(got.latencies_us),
        "cpu_seconds": cpu_seconds,
        "cpu_us_per_delivery": cpu_seconds * 1e6 / got.received.max(1) as f64,
        "set_up_seconds": set_up_seconds,
    });
    let raw = match &args.nats {
        Some(url) => Some(raw(&args, url, clans, addrs.len(), pids.last().copied()).await?),
        None => None,
    };
    let mut report =
        json!({ "mode": "chat", "clans": clans, "clan_size": args.clan_size, "title": args.title, "game": game });
    if let Some(raw) = raw {
        let ratio = report["game"]["cpu_us_per_delivery"].as_f64().unwrap_or(0.0)
            / raw["cpu_us_per_delivery"].as_f64().unwrap_or(0.0).max(1e-9);
        report["raw_nats"] = raw;
        report["cpu_per_delivery_game_to_raw"] = json!(ratio);
    }
    Ok(report)
}

/// The baseline: the same fan-out on `async-nats` alone. `nats_pid` (the
/// last of `--server-pids`) is counted with this process.
async fn raw(args: &Args, url: &str, clans: usize, connections: usize, nats_pid: Option<u32>) -> anyhow::Result<Value> {
    let window = Arc::new(Window::new());
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(async_nats::connect(url).await.context("connecting to NATS for the baseline")?);
    }
    let prefix = format!("bench-raw-{}", std::process::id());
    let mut tasks = Vec::new();
    for c in 0..clans {
        for m in 0..args.clan_size {
            let client = &clients[(c * args.clan_size + m) % connections];
            let mut sub = client.subscribe(format!("{prefix}.clan.{c}")).await?;
            let window = window.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    if let Some(sent) = std::str::from_utf8(&msg.payload).ok().and_then(sent_of) {
                        window.delivered(sent);
                    }
                }
            }));
        }
    }
    for c in &clients {
        c.flush().await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut sending = Vec::new();
    for c in 0..clans {
        let (client, window, stop) = (clients[c % connections].clone(), window.clone(), stop.clone());
        let subject = format!("{prefix}.clan.{c}");
        let offset = Duration::from_secs(1).mul_f64(c as f64 / clans as f64);
        sending.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (sent, text) = stamp();
                if client.publish(subject.clone(), text.into()).await.is_err() {
                    return;
                }
                if window.measured(sent) {
                    window.measured_lines.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let me = std::process::id();
    let before = (process_usage(me), nats_pid.and_then(process_usage));
    window.from_us.store(wall_us() as u64, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    window.until_us.store(wall_us() as u64, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let after = (process_usage(me), nats_pid.and_then(process_usage));
    tokio::time::sleep(DRAIN).await;
    stop.store(true, Ordering::Relaxed);
    for t in sending.into_iter().chain(tasks) {
        t.abort();
    }
    let cpu = |a: Option<(f64, u64)>, b: Option<(f64, u64)>| Some(b?.0 - a?.0);
    let (own, nats) = (cpu(before.0, after.0).unwrap_or(0.0), cpu(before.1, after.1).unwrap_or(0.0));
    let lines = window.measured_lines.load(Ordering::Relaxed);
    let got = std::mem::take(&mut *window.got.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(json!({
        "connections": connections,
        "lines": lines,
        "deliveries_expected": lines * args.clan_size as u64,
        "deliveries": got.received,
        "deliveries_per_second": got.received as f64 / seconds,
        "latency_ms": percentiles(got.latencies_us),
        "cpu_seconds": own + nats,
        "cpu_seconds_nats": nats,
        "cpu_us_per_delivery": (own + nats) * 1e6 / got.received.max(1) as f64,
    }))
}
