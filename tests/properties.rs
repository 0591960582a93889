//! Property test: random action sequences never break the game's
//! invariants, and replays are deterministic: on the fort fixture (the
//! engine's test), and on every title of `titles/` (each title's own run,
//! so that a designer's data is held to the same invariants).

use citadel_runtime::format::{ResearchSlots, TrainingQueues};
use citadel_runtime::{advance, apply, new_player, rules, Action, PlayerState, Rng, Title};
use citadel_tests::{load_valid, render, root, title_dirs};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const NOW: i64 = 1_767_225_600_000;

fn title() -> Title {
    load_valid(&root().join("tests/fixtures/fort")).0
}

/// Fort with every building working on its own: a research per academy
/// (up to three of them), a training queue per building, and no work in a
/// building while it upgrades. Derived from the fixture in memory, so that
/// it cannot drift from it.
fn title_working_apart() -> Title {
    let dir = root().join("tests/fixtures/fort");
    let (mut files, read) = citadel_runtime::read_dir(&dir);
    assert!(read.is_empty(), "{}", render(&dir, &files, &read));
    let mut manifest: serde_json::Value = serde_json::from_str(&files["title.json"]).expect("fort title.json");
    manifest["work"] =
        serde_json::json!({ "research": "per_building", "training": "per_building", "while_upgrading": false });
    let mut buildings: serde_json::Value = serde_json::from_str(&files["buildings.json"]).expect("fort buildings.json");
    for b in buildings["buildings"].as_array_mut().expect("a list of buildings") {
        if b["id"] == "academy" {
            b["max_count"] = serde_json::json!([0, 2, 2, 3, 3, 3]);
        }
    }
    files.insert("title.json".into(), manifest.to_string());
    files.insert("buildings.json".into(), buildings.to_string());
    let (title, diags) = citadel_runtime::load_files("fort", &files);
    title.unwrap_or_else(|| panic!("fort working apart does not load:\n{}", render(&dir, &files, &diags)))
}

thread_local! {
    /// Kinds of action accepted on this thread since the last [`take_accepted`].
    static ACCEPTED: std::cell::RefCell<std::collections::BTreeSet<String>> = Default::default();
}

fn accepted(a: &Action) {
    ACCEPTED.with(|k| k.borrow_mut().insert(a.name().to_string()));
}

fn take_accepted() -> std::collections::BTreeSet<String> {
    ACCEPTED.with(|k| std::mem::take(&mut *k.borrow_mut()))
}

/// One step: move the clock, then try an action (most will be refused).
#[derive(Debug, Clone)]
struct Step {
    advance_s: i64,
    action: Action,
}

fn action(t: &Title) -> impl Strategy<Value = Action> {
    let buildings: Vec<String> = t.buildings.iter().map(|b| b.def.id.clone()).chain(["castle".to_string()]).collect();
    let units: Vec<String> = t.units.iter().map(|u| u.def.id.clone()).collect();
    let research: Vec<String> = t.research.iter().map(|r| r.def.id.clone()).collect();
    let offers: Vec<String> = t.offers.iter().map(|o| o.def.id.clone()).collect();
    let items: Vec<String> = t.items.iter().map(|i| i.def.id.clone()).collect();
    let quests: Vec<String> = t.quests.iter().map(|q| q.def.id.clone()).collect();
    let achievements: Vec<String> =
        t.achievements.iter().map(|a| a.id.clone()).chain(["no_such_achievement".to_string()]).collect();
    let jobs: Vec<String> = t.jobs.iter().map(|j| j.def.id.clone()).chain(["no_such_job".to_string()]).collect();
    let customs: Vec<String> = t.actions.keys().cloned().chain(["no_such_action".to_string()]).collect();
    // Low ids (the start buildings and the first few built) most of the time.
    let id = prop_oneof![3 => 1u32..7, 1 => 1u32..16];
    // Mostly spots on a sparse lattice (where buildings usually fit), some
    // anywhere, including off the grid.
    let side = t.manifest.grid.width.max(t.manifest.grid.height);
    let xy = prop_oneof![3 => (0i32..side / 4).prop_map(|i| i * 4), 1 => -2i32..side + 2];
    prop_oneof![
        4 => (proptest::sample::select(buildings.clone()), xy.clone(), xy.clone()).prop_map(|(building, x, y)| Action::Build { building, x, y }),
        5 => id.clone().prop_map(|id| Action::Upgrade { id }),
        1 => id.clone().prop_map(|id| Action::Cancel { id }),
        3 => id.clone().prop_map(|id| Action::SpeedUp { id }),
        1 => proptest::option::of(proptest::sample::select(research.clone())).prop_map(|research| Action::SpeedUpResearch { research }),
        1 => (proptest::sample::select(buildings), proptest::option::of(id.clone())).prop_map(|(building, building_id)| Action::SpeedUpTraining { building, building_id }),
        1 => (id.clone(), xy.clone(), xy).prop_map(|(id, x, y)| Action::Move { id, x, y }),
        2 => id.clone().prop_map(|id| Action::Collect { id }),
        2 => Just(Action::CollectAll {}),
        2 => (proptest::sample::select(units), prop_oneof![3 => 1i64..4, 1 => -1i64..25], proptest::option::of(id.clone())).prop_map(|(unit, count, building_id)| Action::Train { unit, count, building_id }),
        2 => (proptest::sample::select(research.clone()), proptest::option::of(id.clone())).prop_map(|(research, building_id)| Action::Research { research, building_id }),
        1 => proptest::sample::select(research).prop_map(|research| Action::CancelResearch { research }),
        1 => proptest::sample::select(offers).prop_map(|offer| Action::Buy { offer }),
        1 => proptest::sample::select(items).prop_map(|item| Action::UseItem { item }),
        2 => proptest::sample::select(quests).prop_map(|quest| Action::ClaimQuest { quest }),
        1 => (proptest::sample::select(jobs), proptest::option::of(id.clone())).prop_map(|(job, building_id)| Action::StartJob { job, building_id }),
        1 => id.clone().prop_map(|building_id| Action::CancelJob { building_id }),
        1 => id.clone().prop_map(|building_id| Action::SpeedUpJob { building_id }),
        1 => Just(Action::ClaimDaily {}),
        1 => proptest::sample::select(achievements).prop_map(|achievement| Action::ClaimAchievement { achievement }),
        2 => (proptest::sample::select(customs), custom_args()).prop_map(|(name, args)| Action::Custom { name, args }),
    ]
}

/// Arguments for a title's custom actions: none, or one of the numbers
/// the titles' scripts read, in and out of their ranges.
fn custom_args() -> impl Strategy<Value = serde_json::Value> {
    let n = prop_oneof![3 => 0i64..20_000, 1 => any::<i64>()];
    prop_oneof![
        1 => Just(serde_json::Value::Null),
        2 => n.clone().prop_map(|amount| serde_json::json!({ "amount": amount })),
        1 => n.prop_map(|pounds| serde_json::json!({ "pounds": pounds })),
        1 => Just(serde_json::json!({ "amount": "lots" })),
    ]
}

fn steps(t: &Title) -> impl Strategy<Value = Vec<Step>> {
    let advance = prop_oneof![3 => Just(0i64), 3 => 1i64..120, 2 => 120i64..4000, 1 => 4000i64..90_000];
    proptest::collection::vec((advance, action(t)).prop_map(|(advance_s, action)| Step { advance_s, action }), 1..80)
}

fn check_invariants(t: &Title, s: &PlayerState, prev_clock: i64) -> Result<(), String> {
    if s.clock_ms < prev_clock {
        return Err("clock went backwards".into());
    }
    for (r, &v) in &s.resources {
        if v < 0 {
            return Err(format!("negative {r}: {v}"));
        }
        let cap = rules::cap(t, s, r);
        if v > cap {
            return Err(format!("{r} = {v} above its cap {cap}"));
        }
    }
    let grid = &t.manifest.grid;
    let mut cells = std::collections::HashSet::new();
    let hq = s.buildings.iter().filter(|b| b.building == t.headquarters()).map(|b| b.level).max().unwrap_or(0);
    for b in &s.buildings {
        let def = t.building(&b.building).ok_or("unknown building type")?;
        let levels = def.def.levels.len() as u32;
        if b.level > levels {
            return Err(format!("building {} at level {} of {levels}", b.id, b.level));
        }
        match &b.upgrade {
            Some(u) if u.to_level != b.level + 1 || u.to_level > levels => {
                return Err(format!("bad upgrade on {}", b.id))
            }
            None if b.level == 0 => return Err(format!("building {} at level 0 with no construction", b.id)),
            _ => {}
        }
        if b.x < 0 || b.y < 0 || b.x + def.def.size.w > grid.width || b.y + def.def.size.h > grid.height {
            return Err(format!("building {} out of bounds", b.id));
        }
        for x in b.x..b.x + def.def.size.w {
            for y in b.y..b.y + def.def.size.h {
                if !cells.insert((x, y)) {
                    return Err(format!("overlap at ({x}, {y})"));
                }
            }
        }
        let count = s.buildings.iter().filter(|o| o.building == b.building).count() as u32;
        let max = def.def.max_count[hq.max(1) as usize - 1];
        if count > max {
            return Err(format!("{count} {} above the limit {max} at headquarters {hq}", b.building));
        }
    }
    let busy = s.buildings.iter().filter(|b| b.upgrade.is_some()).count() as u32;
    let builders = t.manifest.builders
        + s.buildings
            .iter()
            .filter(|b| b.level > 0)
            .map(|b| t.building(&b.building).map_or(0, |d| d.def.levels[b.level as usize - 1].builders))
            .sum::<u32>();
    if busy > builders {
        return Err(format!("{busy} constructions with {builders} builders"));
    }
    let work = &t.manifest.work;
    let queue_max = t.manifest.training_queue as usize;
    match work.training {
        TrainingQueues::PerBuildingType if s.training.len() > queue_max => {
            return Err("training queue over its limit".into());
        }
        TrainingQueues::PerBuilding => {
            for b in &s.buildings {
                if s.training.iter().filter(|o| o.building_id == Some(b.id)).count() > queue_max {
                    return Err(format!("training queue of building {} over its limit", b.id));
                }
            }
            if let Some(o) = s.training.iter().find(|o| o.building_id.is_none()) {
                return Err(format!("{} queued in no building", o.unit));
            }
        }
        _ => {}
    }
    let housing: i64 = s
        .buildings
        .iter()
        .filter(|b| b.level > 0)
        .map(|b| t.building(&b.building).map_or(0, |d| d.def.levels[b.level as usize - 1].housing))
        .sum();
    let used: i64 = s.units.iter().map(|(u, n)| t.unit(u).map_or(0, |d| d.def.housing) * n).sum::<i64>()
        + s.training.iter().map(|o| t.unit(&o.unit).map_or(0, |d| d.def.housing)).sum::<i64>();
    if used > housing {
        return Err(format!("housing {used} of {housing}"));
    }
    for (r, &l) in &s.research {
        if l as usize > t.research_type(r).ok_or("unknown research")?.def.levels.len() {
            return Err(format!("research {r} at level {l}"));
        }
    }
    if work.research == ResearchSlots::OneAtATime && s.research_running.len() > 1 {
        return Err(format!("{} research running at once", s.research_running.len()));
    }
    for (i, a) in s.research_running.iter().enumerate() {
        if a.level != s.research.get(&a.research).copied().unwrap_or(0) + 1 {
            return Err("running research skips a level".into());
        }
        let lab = a.building_id.and_then(|id| s.building(id)).ok_or("research running in no building")?;
        if lab.building != t.research_type(&a.research).ok_or("unknown research")?.def.building {
            return Err(format!("{} running in a {}", a.research, lab.building));
        }
        let later = &s.research_running[i + 1..];
        if later.iter().any(|b| b.research == a.research || b.building_id == a.building_id) {
            return Err(format!("{} twice, or two research in building {}", a.research, lab.id));
        }
        if !work.while_upgrading && lab.upgrade.is_some() {
            return Err(format!("building {} upgrades while it researches", lab.id));
        }
    }
    if s.items.values().any(|&n| n < 0) || s.units.values().any(|&n| n < 0) {
        return Err("negative items or units".into());
    }
    let text = s.to_json();
    let back = PlayerState::from_json(&text).map_err(|e| e.to_string())?;
    if &back != s || back.to_json() != text {
        return Err("JSON round trip is not exact".into());
    }
    for format in citadel_runtime::FileFormat::ALL {
        let (back, found) = PlayerState::decode(&s.encode(format)).map_err(|e| format!("{format}: {e}"))?;
        if &back != s || found != Some(format) {
            return Err(format!("{format} round trip is not exact"));
        }
    }
    Ok(())
}

fn run(t: &Title, seq: &[Step], seed: u64) -> Result<PlayerState, TestCaseError> {
    play_from(t, new_player(t, NOW), seq, seed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_play_keeps_invariants_and_replays_identically(seq in steps(&title()), seed in any::<u64>()) {
        let t = title();
        let first = run(&t, &seq, seed)?;
        let again = run(&t, &seq, seed)?;
        prop_assert_eq!(first, again, "same actions, same seed, different state");
    }
}

/// A wealthy player: every resource at its cap, plenty of premium.
fn wealthy(t: &Title) -> PlayerState {
    let mut s = new_player(t, NOW);
    fill(t, &mut s);
    s
}

fn fill(t: &Title, s: &mut PlayerState) {
    let full = s.clone();
    for (r, v) in s.resources.iter_mut() {
        *v = if *r == t.manifest.premium_resource { 100_000 } else { rules::cap(t, &full, r).min(1_000_000_000) };
    }
}

/// A developed, wealthy base: headquarters at level 3 (or its top), one of
/// every building type the headquarters allows at level 2 (or its top) on
/// the first free spots, resources at their caps, so that random play
/// reaches every lab, barracks and workshop of a title.
fn developed(t: &Title) -> PlayerState {
    let mut s = new_player(t, NOW);
    let hq = t.building(t.headquarters()).expect("headquarters");
    for b in s.buildings.iter_mut().filter(|b| b.building == t.headquarters()) {
        b.level = b.level.max(3.min(hq.def.levels.len() as u32));
    }
    let level = s.buildings.iter().filter(|b| b.building == t.headquarters()).map(|b| b.level).max().unwrap_or(1);
    let grid = &t.manifest.grid;
    for b in t.buildings.iter().filter(|b| b.def.id != t.headquarters()) {
        let count = s.buildings.iter().filter(|o| o.building == b.def.id).count() as u32;
        if b.def.max_count.get(level as usize - 1).copied().unwrap_or(0) <= count {
            continue;
        }
        let (w, h) = (b.def.size.w, b.def.size.h);
        let free = |x: i32, y: i32| {
            s.buildings.iter().all(|o| {
                let d = t.building(&o.building).map_or((1, 1), |d| (d.def.size.w, d.def.size.h));
                x >= o.x + d.0 || o.x >= x + w || y >= o.y + d.1 || o.y >= y + h
            })
        };
        let spot =
            (0..=grid.height - h).flat_map(|y| (0..=grid.width - w).map(move |x| (x, y))).find(|&(x, y)| free(x, y));
        if let Some((x, y)) = spot {
            let id = s.next_building_id;
            s.next_building_id += 1;
            let top = (b.def.levels.len() as u32).min(2);
            s.buildings.push(citadel_runtime::state::Building::completed(id, &b.def.id, top, x, y, NOW));
        }
    }
    fill(t, &mut s);
    // A few of every unit where housing allows, for jobs that send units.
    for u in &t.units {
        let housing = rules::derived(t, &s).housing;
        if housing.used + 3 * u.def.housing <= housing.total / 2 {
            *s.units.entry(u.def.id.clone()).or_default() += 3;
        }
    }
    s
}

/// Random play from a wealthy player, so that the later content (upgrades,
/// research, training) is actually reached.
fn wealthy_play(t: &Title, seq: &[Step], seed: u64) -> Result<(), TestCaseError> {
    play_from(t, wealthy(t), seq, seed).map(drop)
}

/// Random play from `start`, checking the invariants after every step.
fn play_from(t: &Title, start: PlayerState, seq: &[Step], seed: u64) -> Result<PlayerState, TestCaseError> {
    let mut s = start;
    check_invariants(t, &s, NOW).map_err(|m| TestCaseError::fail(format!("at the start: {m}")))?;
    let mut rng = Rng::new(seed);
    let mut now = NOW;
    for (i, step) in seq.iter().enumerate() {
        now += step.advance_s * 1000;
        let prev = s.clock_ms;
        // What the state would be if the action were refused: advanced only.
        let mut advanced = s.clone();
        advance(t, &mut advanced, now, &mut rng.clone());
        match apply(t, &mut s, &step.action, now, &mut rng) {
            Ok(_) => accepted(&step.action),
            Err(e) => prop_assert_eq!(
                &s,
                &advanced,
                "step {}: refused {:?} ({}) changed the state",
                i,
                step.action,
                e.message
            ),
        }
        check_invariants(t, &s, prev)
            .map_err(|m| TestCaseError::fail(format!("step {i} after {:?}: {m}", step.action)))?;
    }
    Ok(s)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn wealthy_random_play_keeps_invariants(seq in steps(&title()), seed in any::<u64>()) {
        wealthy_play(&title(), &seq, seed)?;
    }

    #[test]
    fn wealthy_random_play_with_parallel_work_keeps_invariants(seq in steps(&title()), seed in any::<u64>()) {
        wealthy_play(&title_working_apart(), &seq, seed)?;
    }
}

/// Cases per title of `titles/` for each of the two runs below: fewer than
/// the fixture's, since there are five titles (each case is a whole game of
/// up to 80 steps).
const TITLE_CASES: u32 = 32;

/// Every title of `titles/`: random play from a new player (with replays
/// identical) and from a developed base keeps the invariants.
#[test]
fn every_title_keeps_invariants_under_random_play() {
    let dirs = title_dirs();
    assert!(dirs.len() >= 5, "titles/ holds {} titles", dirs.len());
    for dir in dirs {
        let t = load_valid(&dir).0;
        take_accepted();
        let config =
            Config { cases: TITLE_CASES, max_shrink_iters: 2000, failure_persistence: None, ..Config::default() };
        // A fixed seed: the same games on every run, so that whether the
        // play reaches the content below does not vary from run to run.
        let mut runner = TestRunner::new_with_rng(config.clone(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let fresh = runner.run(&(steps(&t), any::<u64>()), |(seq, seed)| {
            let first = run(&t, &seq, seed)?;
            let again = run(&t, &seq, seed)?;
            prop_assert_eq!(first, again, "same actions, same seed, different state");
            Ok(())
        });
        if let Err(e) = fresh {
            panic!("{}: random play from a new player: {e}", t.id());
        }
        let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let base = developed(&t);
        if let Err(e) =
            runner.run(&(steps(&t), any::<u64>()), |(seq, seed)| play_from(&t, base.clone(), &seq, seed).map(drop))
        {
            panic!("{}: random play from a developed base: {e}", t.id());
        }
        // The play reached the title's content, so that the invariants
        // were checked on more than a base that refuses everything.
        let seen = take_accepted();
        for kind in ["build", "upgrade", "research", "train", "custom"] {
            assert!(seen.contains(kind), "{}: random play never got a {kind} accepted (accepted: {seen:?})", t.id());
        }
        if !t.jobs.is_empty() {
            assert!(seen.contains("start_job"), "{}: random play never started a job (accepted: {seen:?})", t.id());
        }
    }
}
