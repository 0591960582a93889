//! Engine benchmarks (a bench binary, not a timed test): title load and
//! validation, and rules-engine throughput for typical actions.
//!
//! Run: `cargo bench -p citadel-runtime --bench engine` (pin it to one core
//! with `taskset -c 1` for stable numbers). Each result is reported as an
//! absolute time and as a ratio to a baseline measured in the same process,
//! because these machines are noisy; the method and results are recorded
//! in docs/benchmarks.md.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use citadel_runtime::{apply, new_player, Action, PlayerState, Rng, Title};

/// Runs `f` repeatedly for about `budget` and returns the median time of one
/// call over `rounds` rounds (median of rounds resists noise).
fn measure(budget: Duration, rounds: usize, mut f: impl FnMut()) -> Duration {
    // Warm up and size a round.
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget / (rounds as u32 * 4) {
        f();
        n += 1;
    }
    let per_round = n.max(1);
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                f();
            }
            t.elapsed() / per_round as u32
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

fn report(name: &str, t: Duration, baseline_name: &str, baseline: Duration) {
    let per_s = 1.0 / t.as_secs_f64();
    println!(
        "{name:<44} {:>10.2} us  {:>12.0} /s  {:>7.2}x {baseline_name}",
        t.as_secs_f64() * 1e6,
        per_s,
        t.as_secs_f64() / baseline.as_secs_f64()
    );
}

/// A mid-game player: headquarters 3, a full set of level-2 buildings,
/// plenty of every resource (above caps is fine for a benchmark).
fn mid_game(t: &Title, now: i64) -> PlayerState {
    let mut s = new_player(t, now);
    s.buildings[0].level = 3;
    let mut rng = Rng::new(1);
    for v in s.resources.values_mut() {
        *v = 1_000_000_000;
    }
    let layout = [
        ("gold_mine", 6, 2),
        ("lumber_mill", 10, 2),
        ("lumber_mill", 14, 2),
        ("quarry", 18, 2),
        ("vault", 22, 2),
        ("vault", 26, 2),
        ("warehouse", 30, 2),
        ("warehouse", 34, 2),
        ("camp", 2, 6),
        ("camp", 6, 6),
        ("barracks", 10, 6),
        ("academy", 14, 6),
        ("watchtower", 18, 6),
        ("watchtower", 22, 6),
    ];
    let mut at = now;
    for (b, x, y) in layout {
        apply(t, &mut s, &Action::Build { building: b.into(), x, y }, at, &mut rng).expect("layout builds");
        at += 3_600_000;
    }
    for i in 0..20 {
        let _ = apply(t, &mut s, &Action::Build { building: "wall".into(), x: 2 + i, y: 30 }, at, &mut rng);
    }
    citadel_runtime::advance(t, &mut s, at + 3_600_000, &mut rng);
    s
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../titles/ironhold");
    let budget = Duration::from_secs(2);
    let rounds = 9;
    println!("citadel-runtime engine benchmark (median of {rounds} rounds, ~{budget:?} per measurement)\n");

    // 1. Load + validate the first title, against reading and JSON-parsing
    //    the same files (the least any loader must do).
    let (files, _) = citadel_runtime::read_dir(&dir);
    let read_parse = measure(budget, rounds, || {
        let (files, _) = citadel_runtime::read_dir(&dir);
        for (name, text) in &files {
            if name.ends_with(".json") {
                black_box(serde_json::from_str::<serde_json::Value>(text).ok());
            }
        }
    });
    let load = measure(budget, rounds, || {
        black_box(citadel_runtime::load(&dir));
    });
    let load_mem = measure(budget, rounds, || {
        black_box(citadel_runtime::load_files("ironhold", &files));
    });
    report("read + parse JSON (baseline)", read_parse, "baseline", read_parse);
    report("load + validate ironhold (from disk)", load, "read+parse", read_parse);
    report("load + validate ironhold (files in memory)", load_mem, "read+parse", read_parse);
    println!();

    // 2. Rules-engine throughput on one core, against decoding the action
    //    from JSON (which every request pays anyway).
    let t = citadel_runtime::load(&dir).0.expect("ironhold loads");
    let now = 1_767_225_600_000;
    let base = mid_game(&t, now);
    let at = base.clock_ms;
    let json = r#"{"action":"upgrade","id":4}"#;
    let decode = measure(budget, rounds, || {
        black_box(serde_json::from_str::<Action>(black_box(json)).ok());
    });
    report("decode action JSON (baseline)", decode, "decode", decode);

    // upgrade (evaluates `level("headquarters") >= 2`) then cancel: the
    // state returns to where it was, minus half a cost.
    let mine = base.buildings.iter().find(|b| b.building == "gold_mine").map(|b| b.id).unwrap_or(4);
    let (up, cancel) = (Action::Upgrade { id: mine }, Action::Cancel { id: mine });
    let mut s = base.clone();
    let mut rng = Rng::new(7);
    let pair = measure(budget, rounds, || {
        apply(&t, &mut s, &up, at, &mut rng).expect("upgrade");
        apply(&t, &mut s, &cancel, at, &mut rng).expect("cancel");
    });
    report("upgrade (with requirement) + cancel, per action", pair / 2, "decode", decode);

    let mut s = base.clone();
    let (m1, m2) = (Action::Move { id: mine, x: 2, y: 34 }, Action::Move { id: mine, x: 2, y: 2 });
    let moves = measure(budget, rounds, || {
        apply(&t, &mut s, &m1, at, &mut rng).expect("move");
        apply(&t, &mut s, &m2, at, &mut rng).expect("move back");
    });
    report("move (grid collision check), per action", moves / 2, "decode", decode);

    let mut s = base.clone();
    let mut clock = at;
    let collect = measure(budget, rounds, || {
        clock += 60_000;
        black_box(apply(&t, &mut s, &Action::CollectAll {}, clock, &mut rng).ok());
    });
    report("collect_all (advance + 5 producers)", collect, "decode", decode);

    let mut s = base.clone();
    let refused = measure(budget, rounds, || {
        black_box(apply(&t, &mut s, &Action::Build { building: "vault".into(), x: 2, y: 2 }, at, &mut rng).err());
    });
    report("refused build (collision)", refused, "decode", decode);

    let mut s = base.clone();
    let custom = Action::Custom { name: "donate".into(), args: serde_json::json!({ "amount": 500 }) };
    let script = measure(budget, rounds, || {
        black_box(apply(&t, &mut s, &custom, at, &mut rng).ok());
    });
    report("custom action (Rhai script + 3 effects)", script, "decode", decode);
}
