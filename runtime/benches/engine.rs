//! Engine benchmarks (a bench binary, not a timed test): title load and
//! validation, rules-engine throughput for typical actions, and player
//! file encoding and decoding in every format against serde_json.
//!
//! Run: `cargo bench -p citadel-runtime --bench engine` (pin it to one core
//! with `taskset -c 1` for stable numbers). Each result is reported as an
//! absolute time and as a ratio to a baseline measured in the same process,
//! because these machines are noisy; the method and results are recorded
//! in docs/benchmarks.md.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use citadel_runtime::{apply, new_player, Action, FileFormat, PlayerState, Rng, Title};

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
    println!();

    // 3. Every title of titles/: load + validate (files in memory) against
    //    reading and parsing its files, and a typical upgrade (+ cancel) on
    //    a mid-game player with the title's mechanics running (research in
    //    its labs, a job, units training, a timed modifier, chains and
    //    capacities settling on every advance), against decoding the action.
    let titles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../titles");
    let mut dirs: Vec<_> = std::fs::read_dir(&titles).expect("titles/").filter_map(|e| Some(e.ok()?.path())).collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let (files, _) = citadel_runtime::read_dir(dir);
        let parse = measure(budget, rounds, || {
            for (name, text) in &files {
                if name.ends_with(".json") {
                    black_box(serde_json::from_str::<serde_json::Value>(text).ok());
                }
            }
        });
        let load = measure(budget, rounds, || {
            black_box(citadel_runtime::load_files(&id, &files));
        });
        report(&format!("{id}: load + validate (in memory)"), load, "parse", parse);
        let t = citadel_runtime::load_files(&id, &files).0.expect("every title loads");
        let (mut s, building) = busy_mid_game(&t, now);
        let (up, cancel) = (Action::Upgrade { id: building }, Action::Cancel { id: building });
        let at = s.clock_ms;
        let pair = measure(budget, rounds, || {
            apply(&t, &mut s, &up, at, &mut rng).expect("upgrade");
            apply(&t, &mut s, &cancel, at, &mut rng).expect("cancel");
        });
        report(&format!("{id}: upgrade + cancel, per action"), pair / 2, "decode", decode);
    }
    println!();

    // 4. Player files: encoding and decoding a small (new player) and a
    //    50 KB file (a big base, as scripts/bench-server seeds it) in every
    //    format, against serde_json on the same state (JSON without a
    //    header, as files were before headers).
    for (name, state) in [("new player", new_player(&t, now)), ("50 KB base", big_base(&t, now, 50))] {
        let json = state.to_json();
        let json_encode = measure(budget, rounds, || {
            black_box(black_box(&state).to_json());
        });
        let json_decode = measure(budget, rounds, || {
            black_box(PlayerState::from_json(black_box(&json)).ok());
        });
        report(&format!("{name}: serde_json encode ({} B, baseline)", json.len()), json_encode, "json", json_encode);
        report(&format!("{name}: serde_json decode (baseline)"), json_decode, "json", json_decode);
        for format in FileFormat::ALL {
            let bytes = state.encode(format);
            let encode = measure(budget, rounds, || {
                black_box(black_box(&state).encode(format));
            });
            let decode = measure(budget, rounds, || {
                black_box(PlayerState::decode(black_box(&bytes)).ok());
            });
            report(&format!("{name}: {format} encode ({} B)", bytes.len()), encode, "json", json_encode);
            report(&format!("{name}: {format} decode"), decode, "json", json_decode);
        }
    }
}

/// A base of about `kb` KB of JSON, made as scripts/bench-server seeds its
/// player files: the title's smallest building on every free cell of the
/// grid's first rows, then flags for whatever size is left.
fn big_base(t: &Title, now: i64, kb: usize) -> PlayerState {
    let mut s = new_player(t, now);
    let smallest = t.buildings.iter().min_by_key(|b| b.def.size.w * b.def.size.h).expect("buildings");
    let (w, h) = (smallest.def.size.w, smallest.def.size.h);
    let grid = &t.manifest.grid;
    let mut y = grid.height - h;
    'fill: while y >= 0 {
        for x in (0..grid.width - w + 1).step_by(w as usize) {
            if s.to_json().len() >= kb * 1024 {
                break 'fill;
            }
            let id = s.next_building_id;
            s.next_building_id += 1;
            s.buildings.push(citadel_runtime::state::Building::completed(id, &smallest.def.id, 1, x, y, now));
        }
        y -= h;
    }
    let mut n = 0;
    while s.to_json().len() < kb * 1024 {
        s.flags.insert(format!("bench_padding_{n:06}"));
        n += 1;
    }
    s
}

/// A mid-game player of any title: headquarters at level 3 (or its top),
/// every building type at level 2 (or its top) on the first free spots,
/// resources plenty, and the title's mechanics running: a research in each
/// lab that takes one, a job where one starts, units training, a timed
/// modifier. Returns it with a building whose upgrade (and cancel) works.
fn busy_mid_game(t: &Title, now: i64) -> (PlayerState, u32) {
    let mut s = new_player(t, now);
    s.buildings[0].level = s.buildings[0]
        .level
        .max(3.min(t.buildings.iter().find(|b| b.def.id == t.headquarters()).map_or(1, |b| b.def.levels.len() as u32)));
    for v in s.resources.values_mut() {
        *v = 1_000_000_000;
    }
    let grid = &t.manifest.grid;
    let taken = |s: &PlayerState, x: i32, y: i32, w: i32, h: i32| {
        s.buildings.iter().any(|b| {
            let d = t.building(&b.building).map_or((1, 1), |d| (d.def.size.w, d.def.size.h));
            x < b.x + d.0 && b.x < x + w && y < b.y + d.1 && b.y < y + h
        })
    };
    for b in &t.buildings {
        let (w, h) = (b.def.size.w, b.def.size.h);
        let spot = (0..=grid.height - h)
            .flat_map(|y| (0..=grid.width - w).map(move |x| (x, y)))
            .find(|&(x, y)| !taken(&s, x, y, w, h));
        if let Some((x, y)) = spot {
            let id = s.next_building_id;
            s.next_building_id += 1;
            let level = (b.def.levels.len() as u32).min(2);
            s.buildings.push(citadel_runtime::state::Building::completed(id, &b.def.id, level, x, y, now));
        }
    }
    let mut rng = Rng::new(1);
    for r in &t.research {
        let _ = apply(t, &mut s, &Action::Research { research: r.def.id.clone(), building_id: None }, now, &mut rng);
    }
    for j in &t.jobs {
        let _ = apply(t, &mut s, &Action::StartJob { job: j.def.id.clone(), building_id: None }, now, &mut rng);
    }
    for u in &t.units {
        let _ = apply(t, &mut s, &Action::Train { unit: u.def.id.clone(), count: 1, building_id: None }, now, &mut rng);
    }
    if let Some(m) = t.modifiers.first() {
        s.modifiers
            .insert(m.id.clone(), citadel_runtime::state::ActiveModifier { stacks: 1, ends_ms: now + 86_400_000 });
    }
    let ids: Vec<u32> = s.buildings.iter().skip(1).map(|b| b.id).collect();
    for id in ids {
        let mut probe = s.clone();
        if apply(t, &mut probe, &Action::Upgrade { id }, now, &mut rng).is_ok()
            && apply(t, &mut probe, &Action::Cancel { id }, now, &mut rng).is_ok()
        {
            return (s, id);
        }
    }
    panic!("{}: no building of the mid-game base can be upgraded", t.id());
}
