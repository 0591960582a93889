//! `citadel-world-bench`: the world store under load, in one process. On a
//! fresh SQLite store (and, with `--mongo URI`, on a MongoDB wire server)
//! it seeds top scores for `--players` players, then measures:
//!
//! - lock acquire + release pairs per second, from 1 task and from 16;
//! - a top score update (`set_score` of a random player, all-time and
//!   weekly windows) and a top-20 query, as latency percentiles;
//! - `rank` of a random player (it counts the rows above the player
//!   through the index, so its cost grows with the rank);
//! - the baseline: the cheapest round trip to the same store (looking up
//!   a lock nobody holds), measured in the same run. Results are reported
//!   as microseconds and as multiples of that baseline, which this noisy
//!   machine moves far less than the absolute numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use citadel_store::world::{Board, MongoConfig, MongoWorld, SqliteWorld, WorldStore};
use clap::Parser;
use serde_json::{json, Value};

/// Most players seeded: a million rows is minutes of seeding.
const PLAYERS_MAX: usize = 1_000_000;

#[derive(Parser, Debug)]
#[command(name = "citadel-world-bench", about = "Benchmarks of the world store (locks, top scores)")]
struct Args {
    /// Players with a top score row (two rows each: all-time and a week).
    #[arg(long, default_value_t = 100_000)]
    players: usize,
    /// Operations timed per measurement.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Also measure a MongoDB wire server at this URI.
    #[arg(long)]
    mongo: Option<String>,
    /// Operations timed per measurement on the MongoDB wire server (the
    /// stand-in answers sorted and counted queries without an index).
    #[arg(long, default_value_t = 100)]
    mongo_samples: usize,
    /// Tasks seeding at once.
    #[arg(long, default_value_t = 16)]
    seeders: usize,
}

const WINDOWS: [&str; 2] = ["all", "week-2026-11-23"];

/// A deterministic pseudo-random sequence (splitmix64), so runs compare.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn percentiles(mut us: Vec<f64>, baseline: f64) -> Value {
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1];
    json!({
        "p50_us": at(0.5).round(), "p99_us": at(0.99).round(),
        "p50_x_baseline": (at(0.5) / baseline * 10.0).round() / 10.0,
    })
}

async fn timed<F, Fut>(samples: usize, mut f: F) -> anyhow::Result<Vec<f64>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        f(i).await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(out)
}

/// Lock pairs per second from `tasks` tasks for about `for_ms`.
async fn lock_rate(w: Arc<dyn WorldStore>, tasks: usize, for_ms: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let w = w.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(for_ms) {
                let name = format!("player:bench/{t}/{}", n % 1000);
                let lease = w.acquire(&name, "bench", 60_000, 1).await?.context("a free lock")?;
                w.release(&lease).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn measure(name: &str, w: Arc<dyn WorldStore>, args: &Args, samples: usize) -> anyhow::Result<Value> {
    let windows: Vec<String> = WINDOWS.iter().map(|s| s.to_string()).collect();
    let seeded = Instant::now();
    let per = args.players.div_ceil(args.seeders.max(1));
    let mut handles = Vec::new();
    for s in 0..args.seeders.max(1) {
        let (w, windows) = (w.clone(), windows.clone());
        let range = (s * per)..((s + 1) * per).min(args.players);
        handles.push(tokio::spawn(async move {
            for p in range {
                let score = (mix(p as u64) % 10_000) as i64;
                w.set_score("bench", "trophies", &format!("p{p:07}"), &windows, 0, score).await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let seed_s = seeded.elapsed().as_secs_f64();
    eprintln!("{name}: seeded {} players in {seed_s:.1} s", args.players);

    let baseline_us = timed(samples, |i| {
        let w = w.clone();
        async move {
            w.holder(&format!("player:nobody/{i}"), 0).await?;
            Ok(())
        }
    })
    .await?;
    let mut sorted = baseline_us.clone();
    sorted.sort_by(f64::total_cmp);
    let baseline = sorted[sorted.len() / 2].max(1.0);

    let updates = timed(samples, |i| {
        let (w, windows) = (w.clone(), windows.clone());
        let players = args.players as u64;
        async move {
            let p = mix(i as u64 + 7) % players;
            let before = (mix(p) % 10_000) as i64;
            w.set_score("bench", "trophies", &format!("p{p:07}"), &windows, before, before + 1 + i as i64).await?;
            Ok(())
        }
    })
    .await?;
    let board = Board { title: "bench", stat: "trophies", window: "all" };
    let tops = timed(samples, |_| {
        let w = w.clone();
        async move {
            anyhow::ensure!(w.top(board, 0, 20).await?.len() == 20);
            Ok(())
        }
    })
    .await?;
    let ranks = timed((samples / 4).max(10), |i| {
        let w = w.clone();
        let players = args.players as u64;
        async move {
            let p = mix(i as u64 + 99) % players;
            w.rank(board, &format!("p{p:07}")).await?.context("a seeded player has a rank")?;
            Ok(())
        }
    })
    .await?;
    let one = lock_rate(w.clone(), 1, 3000).await?;
    let many = lock_rate(w.clone(), 16, 3000).await?;
    Ok(json!({
        "store": name,
        "players": args.players,
        "seed_seconds": (seed_s * 10.0).round() / 10.0,
        "baseline_lookup": percentiles(baseline_us, baseline),
        "lock_pairs_per_second_1_task": one.round(),
        "lock_pairs_per_second_16_tasks": many.round(),
        "lock_pair_us_1_task_x_baseline": ((1e6 / one) / baseline * 10.0).round() / 10.0,
        "score_update": percentiles(updates, baseline),
        "top_20": percentiles(tops, baseline),
        "rank_random_player": percentiles(ranks, baseline),
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.players >= 20 && args.players <= PLAYERS_MAX, "--players is 20 to {PLAYERS_MAX}");
    anyhow::ensure!(args.samples >= 10 && args.mongo_samples >= 10, "samples are at least 10");
    let dir = std::env::temp_dir().join(format!("citadel-world-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite: Arc<dyn WorldStore> = Arc::new(SqliteWorld::open(&dir.join("world.sqlite3"))?);
    println!("{}", measure("sqlite", sqlite, &args, args.samples).await?);
    if let Some(uri) = &args.mongo {
        let config = MongoConfig { uri: uri.clone(), database: format!("bench_{}", std::process::id()) };
        let mongo: Arc<dyn WorldStore> = Arc::new(MongoWorld::connect(&config).await?);
        println!(
            "{}",
            measure("mongodb-wire (nx-27017 stand-in, not MongoDB)", mongo, &args, args.mongo_samples).await?
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
