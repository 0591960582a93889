//! Every title's pacing: a simple greedy player (no premium speed-ups)
//! always has something to do every few minutes in its first hour. The
//! timeline it prints for each title (`cargo test --test pacing --
//! --nocapture`) is the one documented in the title's `README.md`.

use citadel_runtime::{apply, login, new_player, Action, ErrorCode, Rng, Title};
use citadel_tests::{load_valid, title_dirs};

const START: i64 = 1_767_225_600_000;
/// "Something to do every few minutes": the longest a greedy player may
/// wait between two actions that make progress, in the first half hour...
const IDLE_SECONDS_MAX_FIRST_HALF: i64 = 5 * 60;
/// ...and in the second, when saving up for the next headquarters level
/// starts (the intended curve, documented in each title's README.md).
const IDLE_SECONDS_MAX_SECOND_HALF: i64 = 10 * 60;

fn try_act(
    t: &Title,
    s: &mut citadel_runtime::PlayerState,
    a: Action,
    now: i64,
    rng: &mut Rng,
) -> Result<(), ErrorCode> {
    apply(t, s, &a, now, rng).map(|_| ()).map_err(|e| e.code)
}

/// One minute of greedy play; returns the progress actions taken.
fn play_minute(t: &Title, s: &mut citadel_runtime::PlayerState, now: i64, rng: &mut Rng) -> Vec<String> {
    let mut done = Vec::new();
    for _ in 0..20 {
        let before = done.len();
        let _ = try_act(t, s, Action::CollectAll {}, now, rng);
        for q in &t.quests {
            if try_act(t, s, Action::ClaimQuest { quest: q.def.id.clone() }, now, rng).is_ok() {
                done.push(format!("claim {}", q.def.id));
            }
        }
        // Every building type in the order of buildings.json, each at the
        // first free spot of a coarse lattice over the grid.
        let grid = &t.manifest.grid;
        'types: for b in t.buildings.iter().map(|b| b.def.id.as_str()).filter(|b| *b != t.headquarters()) {
            for y in (2..grid.height - 2).step_by(4) {
                for x in (2..grid.width - 2).step_by(4) {
                    match try_act(t, s, Action::Build { building: b.to_string(), x, y }, now, rng) {
                        Ok(()) => {
                            done.push(format!("build {b}"));
                            continue 'types;
                        }
                        Err(ErrorCode::Collision | ErrorCode::OutOfBounds) => continue,
                        Err(_) => continue 'types,
                    }
                }
            }
        }
        // Lowest levels first; buildings with no storage, production,
        // housing, builders or capacity (walls) are not worth it early.
        let mut ids: Vec<(u32, u32, String)> = s
            .buildings
            .iter()
            .filter(|b| worth_upgrading(t, &b.building))
            .map(|b| (b.level, b.id, b.building.to_string()))
            .collect();
        ids.sort();
        for (level, id, kind) in ids {
            if try_act(t, s, Action::Upgrade { id }, now, rng).is_ok() {
                done.push(format!("upgrade {kind} to {}", level + 1));
            }
        }
        if let Some(u) = t.units.first() {
            let train = Action::Train { unit: u.def.id.clone(), count: 5, building_id: None };
            if try_act(t, s, train, now, rng).is_ok() {
                done.push(format!("train 5 {}", u.def.id));
            }
        }
        for j in t.jobs.iter().map(|j| j.def.id.clone()) {
            if try_act(t, s, Action::StartJob { job: j.clone(), building_id: None }, now, rng).is_ok() {
                done.push(format!("start {j}"));
            }
        }
        for a in t.achievements.iter().map(|a| a.id.clone()) {
            if try_act(t, s, Action::ClaimAchievement { achievement: a.clone() }, now, rng).is_ok() {
                done.push(format!("claim achievement {a}"));
            }
        }
        if try_act(t, s, Action::ClaimDaily {}, now, rng).is_ok() {
            done.push("claim the daily reward".into());
        }
        for r in t.research.iter().map(|r| r.def.id.clone()) {
            if try_act(t, s, Action::Research { research: r.clone(), building_id: None }, now, rng).is_ok() {
                done.push(format!("research {r}"));
            }
        }
        if done.len() == before {
            break;
        }
    }
    done
}

/// Whether upgrading a building type does something for a new economy.
fn worth_upgrading(t: &Title, kind: &str) -> bool {
    t.building(kind).is_some_and(|b| {
        b.def.levels.iter().any(|l| {
            l.production.is_some() || !l.storage.is_empty() || l.housing > 0 || l.builders > 0 || !l.provides.is_empty()
        }) || kind == t.headquarters()
    })
}

#[test]
fn every_title_has_something_to_do_every_few_minutes_of_its_first_hour() {
    for dir in title_dirs() {
        let (t, _) = load_valid(&dir);
        println!("{}:", t.id());
        first_hour(&t);
    }
}

fn first_hour(t: &Title) {
    let mut s = new_player(t, START);
    let mut rng = Rng::new(1);
    login(t, &mut s, START, &mut rng);
    let (mut last_progress, mut total) = (0i64, 0usize);
    let mut gaps = Vec::new();
    for minute in 0..=60 {
        let now = START + minute * 60_000;
        let done = play_minute(t, &mut s, now, &mut rng);
        if !done.is_empty() {
            println!("{minute:>3} min: {}", done.join(", "));
            gaps.push((last_progress, minute * 60));
            last_progress = minute * 60;
            total += done.len();
        }
    }
    gaps.push((last_progress, 3600));
    let longest =
        |from: i64, to: i64| gaps.iter().filter(|(a, _)| *a >= from && *a < to).map(|(a, b)| b - a).max().unwrap_or(0);
    let (first, second) = (longest(0, 1800), longest(1800, 3600));
    println!("longest wait: {first} s in the first half hour, {second} s in the second; {total} progress actions");
    let id = t.id();
    assert!(
        first <= IDLE_SECONDS_MAX_FIRST_HALF,
        "{id}: a new player waits {first} s with nothing to do in the first half hour"
    );
    assert!(
        second <= IDLE_SECONDS_MAX_SECOND_HALF,
        "{id}: a new player waits {second} s with nothing to do in the second half hour"
    );
    assert!(total >= 40, "{id}: only {total} progress actions in the first hour");
    let hq = s.buildings.iter().filter(|b| b.building == t.headquarters()).map(|b| b.level).max().unwrap_or(0);
    assert!(hq >= 2, "{id}: the headquarters should reach level 2 in the first hour");
}
