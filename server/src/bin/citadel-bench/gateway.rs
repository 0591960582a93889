//! `--gateway-logins`: logins per second per core at a gateway (docs/gateway.md).
//!
//! First `--players` new guests (a device and its secret made, an account,
//! a player, a server and a game token each), then each device logs back
//! in once: the login of every day. Both `--concurrency` at a time, each
//! on a new connection, as clients do. The gateway's CPU (`--server-pid`)
//! over each phase gives logins per CPU-second. The baseline, in the same
//! run: signing the same game token alone, on one core of this process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{post, process_usage, Args};

/// How long the token-signing baseline runs.
const BASELINE_TIME: Duration = Duration::from_secs(2);

/// Tokens signed per second on one core: the floor of a login's cost.
fn signing_baseline() -> f64 {
    let signer = citadel_server::auth::Signer::new(b"a benchmark secret of 32 bytes..");
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < BASELINE_TIME {
        for i in 0..256 {
            let c = citadel_server::auth::Claims {
                t: "ironhold".into(),
                p: format!("p{:020x}", n + i),
                e: 1_767_225_660_000,
                i: 1_767_225_600_000,
            };
            std::hint::black_box(signer.issue(&c));
        }
        n += 256;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Runs `n` calls of `one` (given the index) `concurrency` at a time; the
/// answers that came back, the errors, and the wall time.
pub(crate) async fn phase<F, Fut>(n: usize, concurrency: usize, one: F) -> (Vec<Value>, Vec<String>, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Value>> + Send,
{
    let one = Arc::new(one);
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (one, next, out) = (one.clone(), next.clone(), out.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = one(i).await;
                    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                    match r {
                        Ok(v) => o.0.push(v),
                        Err(e) => o.1.push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (ok, errors) = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    (ok, errors, seconds)
}

/// What one phase cost the gateway.
fn report(what: &str, ok: usize, errors: &[String], seconds: f64, cpu: Option<f64>, tokens_per_core: f64) -> Value {
    let per_core = cpu.filter(|c| *c > 0.0).map(|c| ok as f64 / c);
    let mut codes = std::collections::BTreeMap::<&str, usize>::new();
    for e in errors {
        *codes.entry(e.as_str()).or_default() += 1;
    }
    json!({
        "phase": what,
        "logins": ok,
        "errors": errors.len(),
        "error_kinds": codes,
        "seconds": seconds,
        "logins_per_second": ok as f64 / seconds,
        "gateway_cpu_seconds": cpu,
        "logins_per_core_second": per_core,
        "login_cost_in_token_signings": per_core.map(|p| tokens_per_core / p),
    })
}

pub(crate) async fn logins(args: &Args) -> anyhow::Result<Value> {
    let tokens_per_core = tokio::task::spawn_blocking(signing_baseline).await?;
    let addr = args.addr;
    let title = args.title.trim().to_string();
    let cpu = || args.server_pid.and_then(process_usage).map(|(c, _)| c);
    let path = format!("/v1/{title}/login/guest");
    let c0 = cpu();
    let p = path.clone();
    let (new, errors, seconds) = phase(args.players, args.concurrency, move |_| {
        let p = p.clone();
        async move { post(addr, &p, &json!({})).await }
    })
    .await;
    let c1 = cpu();
    let first = report("new guests", new.len(), &errors, seconds, c0.zip(c1).map(|(a, b)| b - a), tokens_per_core);
    let devices: Arc<Vec<(Value, Value)>> =
        Arc::new(new.iter().map(|v| (v["device"].clone(), v["secret"].clone())).collect());
    let servers: std::collections::BTreeMap<String, usize> = new.iter().fold(Default::default(), |mut m, v| {
        *m.entry(v["server"]["id"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        m
    });
    let d = devices.clone();
    let (again, errors, seconds) = phase(devices.len(), args.concurrency, move |i| {
        let (p, d) = (path.clone(), d.clone());
        async move { post(addr, &p, &json!({ "device": d[i].0, "secret": d[i].1 })).await }
    })
    .await;
    let c2 = cpu();
    let second =
        report("returning guests", again.len(), &errors, seconds, c1.zip(c2).map(|(a, b)| b - a), tokens_per_core);
    Ok(json!({
        "mode": "gateway logins",
        "title": title,
        "concurrency": args.concurrency,
        "token_signings_per_core_second": tokens_per_core,
        "phases": [first, second],
        "assigned": servers,
        "gateway_rss_bytes": args.server_pid.and_then(process_usage).map(|(_, rss)| rss),
    }))
}
