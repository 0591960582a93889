//! Raid rules as pure functions on the fort fixture: what a defender may lose, how
//! a submitted result is checked, and that applying it to either side
//! twice changes nothing the second time.

use std::collections::BTreeMap;

use citadel_runtime::raid::{self, Outcome, RaidResult};
use citadel_runtime::{new_player, ErrorCode, PlayerState, Rng, Title};
use citadel_tests::{load_valid, root};

const NOW: i64 = 1_767_225_600_000;

fn fort() -> Title {
    load_valid(&root().join("tests/fixtures/fort")).0
}

fn attacker(t: &Title) -> PlayerState {
    let mut s = new_player(t, NOW);
    s.units.insert("militia".into(), 10);
    s.units.insert("archer".into(), 4);
    s.resources.insert("gold".into(), 100);
    s
}

fn defender(t: &Title) -> PlayerState {
    let mut s = new_player(t, NOW);
    s.resources.insert("gold".into(), 1000);
    s.resources.insert("wood".into(), 500);
    s.resources.insert("stone".into(), 0);
    s.scores.insert("trophies".into(), 100);
    s
}

fn result(victory: bool, gold: i64) -> RaidResult {
    RaidResult {
        victory,
        destruction_percent: if victory { 70 } else { 20 },
        loot: if gold != 0 { BTreeMap::from([("gold".to_string(), gold)]) } else { BTreeMap::new() },
        units_used: BTreeMap::from([("militia".to_string(), 6)]),
        seconds: 95,
        units_sent: BTreeMap::new(),
        log: Vec::new(),
    }
}

fn outcome(t: &Title, d: &PlayerState, r: RaidResult) -> Outcome {
    Outcome {
        raid: "r1".into(),
        attacker: "att".into(),
        defender: "def".into(),
        defender_level: 1,
        lootable: raid::lootable(t, d, NOW),
        result: r,
    }
}

#[test]
fn lootable_follows_the_titles_formulas_and_what_the_defender_holds() {
    let t = fort();
    let d = defender(&t);
    let l = raid::lootable(&t, &d, NOW);
    assert_eq!(l, BTreeMap::from([("gold".into(), 200), ("wood".into(), 100), ("stone".into(), 0)]));
}

#[test]
fn a_victory_moves_loot_units_and_trophies_once() {
    let t = fort();
    let (mut a, mut d) = (attacker(&t), defender(&t));
    a.scores.insert("trophies".into(), 50);
    let o = outcome(&t, &d, result(true, 150));
    raid::attack(&t, &mut a, &o, NOW + 1000, &mut Rng::new(1)).unwrap();
    assert_eq!(a.resources["gold"], 250);
    assert_eq!(a.units["militia"], 4, "units used do not come back");
    assert_eq!(a.scores["trophies"], 80);
    assert_eq!(a.scores["gold_raided"], 150, "the title's check hook awarded it");
    assert_eq!(a.xp, 7, "the hook's xp: destruction / 10");
    let before = a.clone();
    raid::attack(&t, &mut a, &o, NOW + 2000, &mut Rng::new(1)).unwrap();
    assert_eq!(
        (a.resources.clone(), a.units.clone(), a.scores.clone()),
        (before.resources, before.units, before.scores)
    );

    raid::defend(&t, &mut d, &o, NOW + 1000, &mut Rng::new(2));
    assert_eq!(d.resources["gold"], 850);
    assert_eq!(d.scores["trophies"], 70);
    assert_eq!(d.shield_until_ms, NOW + 1000 + 43_200_000, "a shield after a defeat");
    assert_eq!(d.battle_log.len(), 1);
    assert_eq!(d.battle_log[0].loot["gold"], 150);
    raid::defend(&t, &mut d, &o, NOW + 3000, &mut Rng::new(2));
    assert_eq!((d.resources["gold"], d.battle_log.len()), (850, 1), "a defender never loses twice for one raid");
    assert_eq!(raid::shielded_until(&d, NOW + 5000), Some(d.shield_until_ms));
}

#[test]
fn a_failed_raid_takes_nothing_and_gives_the_defender_trophies() {
    let t = fort();
    let (mut a, mut d) = (attacker(&t), defender(&t));
    let o = outcome(&t, &d, result(false, 0));
    raid::attack(&t, &mut a, &o, NOW, &mut Rng::new(1)).unwrap();
    assert_eq!(a.scores.get("trophies").copied().unwrap_or(0), 0, "never below 0");
    raid::defend(&t, &mut d, &o, NOW, &mut Rng::new(2));
    assert_eq!((d.resources["gold"], d.scores["trophies"], d.shield_until_ms), (1000, 115, 0));
}

#[test]
fn implausible_results_are_refused_and_change_nothing() {
    let t = fort();
    let d = defender(&t);
    let cases: Vec<(&str, RaidResult)> = vec![
        ("more loot than lootable", result(true, 201)),
        ("units not owned", RaidResult { units_used: BTreeMap::from([("militia".into(), 11)]), ..result(true, 10) }),
        ("no units", RaidResult { units_used: BTreeMap::new(), ..result(true, 10) }),
        ("an unknown unit", RaidResult { units_used: BTreeMap::from([("dragon".into(), 1)]), ..result(true, 10) }),
        ("too long a battle", RaidResult { seconds: 181, ..result(true, 10) }),
        ("over 100% destroyed", RaidResult { destruction_percent: 101, ..result(true, 10) }),
        ("loot from a lost battle", RaidResult { victory: false, ..result(true, 10) }),
        ("negative loot", result(true, -5)),
        // The title's check: a victory needs half the base destroyed.
        ("the title's check", RaidResult { destruction_percent: 30, ..result(true, 10) }),
        ("the title's check (too fast)", RaidResult { seconds: 3, ..result(true, 10) }),
    ];
    for (why, r) in cases {
        let mut a = attacker(&t);
        let before = a.clone();
        let e = raid::attack(&t, &mut a, &outcome(&t, &d, r), NOW, &mut Rng::new(1)).expect_err(why);
        assert_eq!(e.code, ErrorCode::ImplausibleResult, "{why}: {e:?}");
        assert_eq!(a, before, "{why}: nothing applied");
    }
}

#[test]
fn relocation_pays_and_waits_for_its_cooldown() {
    let t = fort();
    let mut s = new_player(&t, NOW);
    raid::relocate(&t, &mut s, NOW, &mut Rng::new(1)).unwrap();
    assert_eq!(s.resources["gems"], 80);
    let e = raid::relocate(&t, &mut s, NOW + 3_600_000, &mut Rng::new(1)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotAvailable);
    assert_eq!(s.resources["gems"], 80);
    raid::relocate(&t, &mut s, NOW + 86_400_000, &mut Rng::new(1)).unwrap();
    s.resources.insert("gems".into(), 5);
    let e = raid::relocate(&t, &mut s, NOW + 3 * 86_400_000, &mut Rng::new(1)).unwrap_err();
    assert_eq!(e.code, ErrorCode::InsufficientResources);
}

#[test]
fn score_windows_are_all_time_the_week_and_the_season() {
    let t = fort();
    // 2026-11-25 is a Wednesday; the season started 2026-11-02 (28 days).
    let wed = citadel_runtime::time::parse_utc("2026-11-25T13:00:00Z").unwrap();
    assert_eq!(raid::score_windows(&t, wed), ["all", "week-2026-11-23", "season-1"]);
    let later = citadel_runtime::time::parse_utc("2026-12-01T00:00:00Z").unwrap();
    assert_eq!(raid::score_windows(&t, later), ["all", "week-2026-11-30", "season-2"]);
    let sunday_night = citadel_runtime::time::parse_utc("2026-11-29T23:59:59Z").unwrap();
    assert_eq!(raid::week_of(sunday_night), "week-2026-11-23");
}

/// A title's `resolve` script decides a raid from both sides: the same raid
/// (its id seeds the battle) always ends the same way, another raid may
/// not; the result is within what the rules allow, with a log to play back.
#[test]
fn resolve_decides_a_raid_the_same_way_every_time() {
    let t = load_valid(&root().join("titles/ironhold")).0;
    assert!(raid::resolves(&t));
    let mut a = new_player(&t, NOW);
    a.units.insert("militia".into(), 40);
    let mut d = new_player(&t, NOW);
    d.resources.insert("gold".into(), 900);
    let lootable = raid::lootable(&t, &d, NOW);
    let sent = BTreeMap::from([("militia".to_string(), 40)]);
    let first = raid::resolve(&t, &a, &d, "r-7", &lootable, &sent, NOW).unwrap();
    assert_eq!(
        raid::resolve(&t, &a, &d, "r-7", &lootable, &sent, NOW).unwrap(),
        first,
        "the same raid, the same battle"
    );
    assert_eq!(first.units_sent, sent);
    assert!(first.log.len() >= 3, "{first:?}");
    assert!(first.units_used.get("militia").copied().unwrap_or(0) <= 40);
    for (r, n) in &first.loot {
        assert!(*n <= lootable[r], "{r}: {n} within {lootable:?}");
    }
    let others: Vec<RaidResult> =
        (0..20).map(|i| raid::resolve(&t, &a, &d, &format!("r-{i}"), &lootable, &sent, NOW).unwrap()).collect();
    assert!(others.iter().any(|o| o.log != first.log), "raids differ by their seed");
    // Units the attacker does not have cannot be sent.
    let too_many = BTreeMap::from([("militia".to_string(), 41)]);
    let e = raid::resolve(&t, &a, &d, "r-7", &lootable, &too_many, NOW).unwrap_err();
    assert_eq!(e.code, ErrorCode::ImplausibleResult, "{e:?}");
    assert!(e.message.contains("41 militia sent"), "{}", e.message);
}
