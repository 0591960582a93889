//! The first title's pacing: a simple greedy player (no premium speed-ups)
//! always has something to do every few minutes in its first hour. The
//! timeline it prints (`cargo test --test pacing -- --nocapture`) is the
//! one documented in `titles/ironhold/README.md`.

use citadel_runtime::{apply, login, new_player, Action, ErrorCode, Rng, Title};
use citadel_tests::{load_valid, root};

const START: i64 = 1_767_225_600_000;
/// "Something to do every few minutes": the longest a greedy player may
/// wait between two actions that make progress, in the first half hour...
const IDLE_SECONDS_MAX_FIRST_HALF: i64 = 5 * 60;
/// ...and in the second, when saving up for headquarters level 3 starts
/// (the intended curve, documented in titles/ironhold/README.md).
const IDLE_SECONDS_MAX_SECOND_HALF: i64 = 10 * 60;

/// What a new player builds first, in order of preference.
const PRIORITY: &[&str] =
    &["lumber_mill", "vault", "warehouse", "camp", "barracks", "gold_mine", "quarry", "academy", "watchtower"];

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
        'types: for b in PRIORITY {
            for y in (2..38).step_by(4) {
                for x in (2..38).step_by(4) {
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
        let mut ids: Vec<(u32, u32, String)> =
            s.buildings.iter().map(|b| (b.level, b.id, b.building.clone())).collect();
        ids.sort();
        for (level, id, kind) in ids {
            if kind != "wall" && try_act(t, s, Action::Upgrade { id }, now, rng).is_ok() {
                done.push(format!("upgrade {kind} to {}", level + 1));
            }
        }
        if try_act(t, s, Action::Train { unit: "militia".into(), count: 5, building_id: None }, now, rng).is_ok() {
            done.push("train 5 militia".into());
        }
        for r in ["masonry", "prospecting", "forestry"] {
            if try_act(t, s, Action::Research { research: r.into(), building_id: None }, now, rng).is_ok() {
                done.push(format!("research {r}"));
            }
        }
        if done.len() == before {
            break;
        }
    }
    done
}

#[test]
fn first_hour_has_something_to_do_every_few_minutes() {
    let (t, _) = load_valid(&root().join("titles/ironhold"));
    let mut s = new_player(&t, START);
    let mut rng = Rng::new(1);
    login(&t, &mut s, START, &mut rng);
    let (mut last_progress, mut total) = (0i64, 0usize);
    let mut gaps = Vec::new();
    for minute in 0..=60 {
        let now = START + minute * 60_000;
        let done = play_minute(&t, &mut s, now, &mut rng);
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
    assert!(
        first <= IDLE_SECONDS_MAX_FIRST_HALF,
        "a new player waits {first} s with nothing to do in the first half hour"
    );
    assert!(
        second <= IDLE_SECONDS_MAX_SECOND_HALF,
        "a new player waits {second} s with nothing to do in the second half hour"
    );
    assert!(total >= 40, "only {total} progress actions in the first hour");
    assert!(s.buildings[0].level >= 2, "the headquarters should reach level 2 in the first hour");
}
