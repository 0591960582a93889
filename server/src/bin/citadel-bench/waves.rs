//! Waves of players arriving or leaving at once.
//!
//! `--storm N`: the login storm after a restart. `--players` players log
//! in (new players, prefix `<prefix>-live`) and play one action a second;
//! after `--warmup` seconds, `N` players whose files `--seed` wrote (prefix
//! `<prefix>`) all log in at the same instant, each opening its WebSocket
//! and sending a `ping` as soon as its login is answered: it is playing
//! when that ping is answered (through its session, in order). Reported:
//! how long until every one of them plays, the spread of their times,
//! errors by kind, and the latency of the players already playing before,
//! during and after the storm (by the second at which each was sent).
//!
//! `--logouts`: `--players` players whose files `--seed` wrote log in over
//! HTTP, `--concurrency` at a time (each login is journaled, so each
//! session holds a change only its end saves: run the server with a save
//! interval longer than its idle timeout). Then each sends one request
//! over HTTP in a short burst, and every session reaches its idle timeout
//! (`--idle-seconds`, the server's `idle_timeout_seconds`) within the
//! burst's length: saved, lock released, gone. The server's CPU over the
//! wave, from the first session's end to the last, gives logouts with
//! saves per CPU-second; the server's `citadel_sessions` gauge (from
//! `/metrics`, with `--admin-token`) tells when the wave starts and ends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use super::{percentile_ms, post, post_as, process_usage, request, Args, Plan};

/// How long the storm may take before the run gives up on its stragglers.
const STORM_TIME_MAX: Duration = Duration::from_secs(180);
/// Players already playing keep playing this long after the storm, so
/// that its tail is measured too.
const AFTER_STORM: Duration = Duration::from_secs(3);
/// How long the logout wave may take before the run gives up.
const WAVE_TIME_MAX: Duration = Duration::from_secs(600);
/// How often the server's session count is read during the logout wave.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Sends of the players already playing: (sent, latency in µs, ok).
type Sends = Arc<Mutex<Vec<(Instant, u64, bool)>>>;

/// One player already playing: logs in, connects, then sends one action
/// a second from `start` (spread over the first second by `n`) until
/// `stop` says so.
async fn live_player(
    args: Arc<Args>,
    plan: Plan,
    n: usize,
    ready: tokio::sync::mpsc::Sender<bool>,
    start: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
    sends: Sends,
) {
    let name = format!("{}-live-{n}", args.prefix);
    let token = match post(args.addr, &format!("/v1/{}/login", plan.title), &json!({ "player": name })).await {
        Ok(v) => v["token"].as_str().unwrap_or_default().to_string(),
        Err(_) => {
            let _ = ready.send(false).await;
            return;
        }
    };
    let url = format!("ws://{}/v1/{}/ws?token={token}", args.addr, plan.title);
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
        let _ = ready.send(false).await;
        return;
    };
    let _ = ready.send(true).await;
    let (mut tx, mut rx) = ws.split();
    let sent_at: Arc<Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let recv = {
        let (sent_at, sends) = (sent_at.clone(), sends.clone());
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(Ok(m)) = rx.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                let Some(id) = v["id"].as_u64() else { continue };
                if let Some(t0) = sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    mine.push((t0, t0.elapsed().as_micros() as u64, v["ok"] == true));
                }
            }
            sends.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
        })
    };
    let mut next = start + Duration::from_millis((n % 1000) as u64);
    let mut i = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        next += Duration::from_secs(1);
        sent_at.lock().unwrap_or_else(|p| p.into_inner()).insert(i, Instant::now());
        if tx.send(Message::Text(request(i, &args.action, &plan).into())).await.is_err() {
            break;
        }
        i += 1;
    }
    // The last answers, then the close that ends the receiver.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = tx.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), recv).await;
}

/// One player of the storm: log in, connect, ping; the times (from the
/// storm's start) at which the login was answered and the ping came back.
async fn storm_player(args: Arc<Args>, n: usize, t0: Instant) -> Result<(Duration, Duration), String> {
    let name = format!("{}-{n}", args.prefix);
    let v = post(args.addr, &format!("/v1/{}/login", args.title), &json!({ "player": name }))
        .await
        .map_err(|e| format!("login: {e}"))?;
    let logged_in = t0.elapsed();
    let token = v["token"].as_str().unwrap_or_default();
    let url = format!("ws://{}/v1/{}/ws?token={token}", args.addr, args.title);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("websocket: {e}"))?;
    ws.send(Message::Text(json!({ "id": 1, "action": "ping" }).to_string().into()))
        .await
        .map_err(|e| format!("websocket: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).map_err(|e| format!("answer: {e}"))?;
                if v["id"] != 1 {
                    continue;
                }
                if v["ok"] != true {
                    return Err(format!("ping: {}", v["error"]["code"]));
                }
                let playing = t0.elapsed();
                let _ = ws.close(None).await;
                return Ok((logged_in, playing));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("websocket: {e}")),
            None => return Err("websocket: closed".into()),
        }
    }
}

/// p50, p99 and max of some durations, in seconds.
fn spread(mut d: Vec<Duration>) -> Value {
    d.sort_unstable();
    let us: Vec<u64> = d.iter().map(|d| d.as_micros() as u64).collect();
    let s = |p| percentile_ms(&us, p) / 1000.0;
    json!({ "n": us.len(), "p50": s(0.5), "p99": s(0.99), "max": s(1.0) })
}

/// Latencies of the sends in `[from, to)`: n, errors, p50, p99, max (ms).
fn window(sends: &[(Instant, u64, bool)], from: Instant, to: Instant) -> Value {
    let mut us: Vec<u64> = sends.iter().filter(|s| s.0 >= from && s.0 < to).map(|s| s.1).collect();
    let errors = sends.iter().filter(|s| s.0 >= from && s.0 < to && !s.2).count();
    us.sort_unstable();
    let pct = |p| percentile_ms(&us, p);
    json!({ "n": us.len(), "errors": errors, "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) })
}

pub(crate) async fn storm(args: Arc<Args>, storm: usize) -> anyhow::Result<Value> {
    let plan = args.plans.first().context("no plan")?.clone();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.players.max(1));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sends: Sends = Arc::default();
    // The players already playing log in 64 at a time (a population that
    // arrived over time), then all play from the same start.
    let start = Instant::now() + Duration::from_secs(60 * (args.players as u64 / 1000 + 1));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut live = Vec::with_capacity(args.players);
    for n in 0..args.players {
        let (args, plan, ready, stop, sends, gate) =
            (args.clone(), plan.clone(), ready_tx.clone(), stop.clone(), sends.clone(), gate.clone());
        live.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let (inner_tx, mut inner_rx) = tokio::sync::mpsc::channel(1);
            let task = tokio::spawn(live_player(args, plan, n, inner_tx, start, stop, sends));
            let ok = inner_rx.recv().await.unwrap_or(false);
            drop(permit);
            let _ = ready.send(ok).await;
            let _ = task.await;
        }));
    }
    drop(ready_tx);
    let mut connected = 0;
    for _ in 0..args.players {
        match ready_rx.recv().await {
            Some(true) => connected += 1,
            Some(false) => bail!("a player already playing could not log in or connect (see the server's log)"),
            None => break,
        }
    }
    if Instant::now() > start {
        bail!("the players already playing took too long to connect");
    }
    tokio::time::sleep_until(start.into()).await;
    let storm_at = start + Duration::from_secs(args.warmup.max(1));
    tokio::time::sleep_until(storm_at.into()).await;
    let before = args.server_pid.and_then(process_usage);
    let me_before = process_usage(std::process::id());
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..storm).map(|n| tokio::spawn(storm_player(args.clone(), n, t0))).collect();
    let (mut logged_in, mut playing, mut errors) = (Vec::new(), Vec::new(), std::collections::BTreeMap::new());
    for t in tasks {
        match tokio::time::timeout_at((t0 + STORM_TIME_MAX).into(), t).await {
            Ok(Ok(Ok((l, p)))) => {
                logged_in.push(l);
                playing.push(p);
            }
            Ok(Ok(Err(e))) => *errors.entry(e).or_insert(0u64) += 1,
            Ok(Err(e)) => *errors.entry(format!("task: {e}")).or_insert(0u64) += 1,
            Err(_) => *errors.entry("not playing within the time allowed".to_string()).or_insert(0u64) += 1,
        }
    }
    let storm_end = Instant::now();
    let after = args.server_pid.and_then(process_usage);
    let me_after = process_usage(std::process::id());
    tokio::time::sleep(AFTER_STORM).await;
    let end = Instant::now();
    let _ = stop_tx.send(true);
    for t in live {
        let _ = t.await;
    }
    let sends = std::mem::take(&mut *sends.lock().unwrap_or_else(|p| p.into_inner()));
    // The worst latency of the sends of each second from the storm's start.
    let seconds = end.duration_since(t0).as_secs() as usize + 1;
    let mut max_by_second = vec![0u64; seconds];
    for &(at, us, _) in &sends {
        if at >= t0 {
            let s = at.duration_since(t0).as_secs() as usize;
            if s < seconds {
                max_by_second[s] = max_by_second[s].max(us);
            }
        }
    }
    let all_playing = playing.iter().max().copied().unwrap_or_default();
    let cpu = match (before, after) {
        (Some((c0, _)), Some((c1, rss))) => json!({
            "cpu_seconds": c1 - c0,
            "cpu_percent_of_one_core": (c1 - c0) / storm_end.duration_since(t0).as_secs_f64() * 100.0,
            "rss_bytes": rss,
        }),
        _ => Value::Null,
    };
    // The load generator's own CPU: near a whole core, it may be what
    // delays answers, and the latencies are an upper bound.
    let generator = match (me_before, me_after) {
        (Some((c0, _)), Some((c1, _))) => json!((c1 - c0) / storm_end.duration_since(t0).as_secs_f64() * 100.0),
        _ => Value::Null,
    };
    Ok(json!({
        "mode": "storm",
        "title": args.title,
        "storm_players": storm,
        "playing_players": connected,
        "storm": {
            "playing": playing.len(),
            "errors": errors.values().sum::<u64>(),
            "error_kinds": errors,
            "all_playing_seconds": all_playing.as_secs_f64(),
            "logged_in_seconds": spread(logged_in),
            "playing_seconds": spread(playing),
        },
        "already_playing_ms": {
            "before": window(&sends, storm_at - Duration::from_secs(args.warmup.max(1)), t0),
            "during": window(&sends, t0, t0 + all_playing),
            "after": window(&sends, t0 + all_playing, end),
            "max_by_second_from_storm": max_by_second.iter().map(|&us| us as f64 / 1000.0).collect::<Vec<_>>(),
        },
        "server": cpu,
        "load_generator_cpu_percent_of_one_core": generator,
    }))
}

/// GET with the admin token; the body of a 200.
async fn get_as(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// The server's `citadel_sessions` gauge.
async fn sessions(addr: SocketAddr, token: &str) -> anyhow::Result<u64> {
    let text = get_as(addr, "/metrics", token).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("citadel_sessions ").and_then(|v| v.trim().parse::<f64>().ok()))
        .map(|v| v as u64)
        .context("no citadel_sessions in /metrics")
}

pub(crate) async fn logouts(args: Arc<Args>) -> anyhow::Result<Value> {
    let token = args.admin_token.clone().context("--logouts needs --admin-token (to read /metrics)")?;
    let pid = args.server_pid.context("--logouts needs --server-pid")?;
    let idle = Duration::from_secs(args.idle_seconds);
    if sessions(args.addr, &token).await? != 0 {
        bail!("the server already has sessions: start it afresh");
    }
    // Everyone logs in.
    let a = args.clone();
    let (tokens, errors, login_seconds) = super::gateway::phase(args.players, args.concurrency, move |n| {
        let a = a.clone();
        async move {
            let v = post(a.addr, &format!("/v1/{}/login", a.title), &json!({ "player": format!("{}-{n}", a.prefix) }))
                .await?;
            Ok(v["token"].clone())
        }
    })
    .await;
    if !errors.is_empty() {
        bail!("{} logins failed, first: {}", errors.len(), errors[0]);
    }
    // One request each, in a burst: every idle deadline falls within it.
    let tokens = Arc::new(tokens);
    let a = args.clone();
    let burst_at = Instant::now();
    let (_, errors, burst_seconds) = super::gateway::phase(tokens.len(), args.concurrency, move |n| {
        let (a, tokens) = (a.clone(), tokens.clone());
        async move {
            let t = tokens[n].as_str().unwrap_or_default();
            post_as(a.addr, &format!("/v1/{}/request", a.title), Some(t), &json!({ "id": 1, "action": "ping" }), &[200])
                .await
        }
    })
    .await;
    if !errors.is_empty() {
        bail!("{} requests failed, first: {}", errors.len(), errors[0]);
    }
    if burst_at.elapsed() + Duration::from_secs(1) >= idle {
        bail!("the request burst took {burst_seconds:.1} s: longer than the idle timeout allows; raise --idle-seconds");
    }
    let live = sessions(args.addr, &token).await?;
    if live != args.players as u64 {
        bail!("{live} sessions of {} after the burst: some ended before it; raise --idle-seconds", args.players);
    }
    // The server at rest until the first session ends: its idle cost.
    tokio::time::sleep_until((burst_at + idle - Duration::from_millis(900)).into()).await;
    let rest = process_usage(pid).context("reading the server's CPU")?;
    let mut last = (Instant::now(), rest.0);
    let mut first_end: Option<(Instant, f64)> = None;
    let give_up = Instant::now() + WAVE_TIME_MAX;
    let n = args.players as u64;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let left = sessions(args.addr, &token).await?;
        let now = (Instant::now(), process_usage(pid).context("reading the server's CPU")?.0);
        if first_end.is_none() && left < n {
            // The wave began within the last poll: count from the poll before.
            first_end = Some(last);
        }
        if left == 0 {
            let (t1, c1) = first_end.unwrap_or(last);
            let idle_rate =
                (c1 - rest.0) / t1.duration_since(burst_at + idle - Duration::from_millis(900)).as_secs_f64();
            let cpu = now.1 - c1;
            let seconds = now.0.duration_since(t1).as_secs_f64();
            let rss = process_usage(pid).map(|u| u.1);
            return Ok(json!({
                "mode": "logouts",
                "title": args.title,
                "players": n,
                "login_seconds": login_seconds,
                "request_burst_seconds": burst_seconds,
                "wave_seconds": seconds,
                "logouts_per_second": n as f64 / seconds,
                "server_cpu_seconds": cpu,
                "server_cpu_percent_of_one_core_at_rest_before": idle_rate * 100.0,
                "logouts_per_core_second": n as f64 / cpu.max(1e-9),
                "server_rss_bytes_after": rss,
            }));
        }
        if Instant::now() > give_up {
            bail!("{left} sessions were still there after {} s", WAVE_TIME_MAX.as_secs());
        }
        last = now;
    }
}
