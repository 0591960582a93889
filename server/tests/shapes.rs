//! The JSON shapes that outlive a release: actions (clients send them, the
//! journal stores them), events (clients read them) and journal records
//! (a restarted or newer server replays them). Each kind has one example
//! in `server/tests/golden/shapes.jsonl`; a change to any shape fails here
//! until it is deliberate: run with `UPDATE_GOLDEN=1`, review the diff, and
//! bump the format's `format_version` with a migration if stored data
//! changes. Every golden line must also still read back as it was.

use std::collections::BTreeMap;
use std::path::Path;

use citadel_runtime::raid::{Outcome, RaidResult};
use citadel_runtime::rules::{Action, Event, ACTION_NAMES, EVENT_NAMES};
use citadel_runtime::support::Adjustment;
use citadel_runtime::PlayerState;
use citadel_server::apply::Op;
use citadel_server::journal::{Record, JOURNAL_FORMAT_VERSION};

fn amounts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn actions() -> Vec<Action> {
    vec![
        Action::Build { building: "farm".into(), x: 3, y: 4 },
        Action::Upgrade { id: 7 },
        Action::Cancel { id: 7 },
        Action::SpeedUp { id: 7 },
        Action::SpeedUpResearch { research: Some("masonry".into()) },
        Action::CancelResearch { research: "masonry".into() },
        Action::SpeedUpTraining { building: "barracks".into(), building_id: Some(9) },
        Action::Move { id: 7, x: 5, y: 6 },
        Action::Collect { id: 7 },
        Action::CollectAll {},
        Action::Train { unit: "archer".into(), count: 3, building_id: Some(9) },
        Action::Research { research: "masonry".into(), building_id: None },
        Action::Buy { offer: "starter_pack".into() },
        Action::UseItem { item: "gold_chest".into() },
        Action::ClaimQuest { quest: "first_farm".into() },
        Action::ClaimAchievement { achievement: "master_builder".into() },
        Action::ClaimDaily {},
        Action::StartJob { job: "crater_run".into(), building_id: Some(9) },
        Action::CancelJob { building_id: 9 },
        Action::SpeedUpJob { building_id: 9 },
        Action::Custom { name: "tithe".into(), args: serde_json::json!({ "amount": 2 }) },
    ]
}

fn events() -> Vec<Event> {
    vec![
        Event::BuildingCompleted { id: 4, building: "farm".into(), level: 2 },
        Event::ResearchCompleted { research: "masonry".into(), level: 1 },
        Event::UnitTrained { unit: "archer".into(), building: "barracks".into() },
        Event::JobCompleted { job: "crater_run".into(), building_id: 9 },
        Event::TimerEnded { name: "festival".into() },
        Event::Collected { resource: "gold".into(), amount: 40 },
        Event::Looted {
            table: "supply_crate".into(),
            grants: citadel_runtime::format::Grants {
                resources: amounts(&[("gold", 500)]),
                items: amounts(&[("speed_token", 1)]),
                ..Default::default()
            },
        },
        Event::ModifierApplied { modifier: "harvest_blessing".into(), stacks: 2, ends_ms: 1_764_536_400_000 },
        Event::ModifierEnded { modifier: "harvest_blessing".into() },
        Event::Refunded { resources: amounts(&[("gold", 25), ("wood", 10)]) },
        Event::Notify { text: "welcome back".into() },
        Event::Migrated { from: "v1".into(), to: "v2".into(), changes: 3 },
        Event::HookFailed { hook: "on_login".into(), message: "script_ops_max reached".into() },
        Event::Adjusted { resources: amounts(&[("gems", -5)]), items: amounts(&[("gold_chest", 1)]) },
        Event::GiftSent {
            gift: "gift:9f86d081884c7d659a2feaa0c55ad015:42".into(),
            to: "bob".into(),
            resources: amounts(&[("gold", 60)]),
        },
        Event::GiftDelivered { gift: "gift:9f86d081884c7d659a2feaa0c55ad015:42".into(), to: "bob".into() },
        Event::GiftReturned {
            gift: "gift:9f86d081884c7d659a2feaa0c55ad015:43".into(),
            to: "bob".into(),
            resources: amounts(&[("gold", 40)]),
        },
        Event::Restored { clock_ms: 1_764_532_800_000 },
    ]
}

fn ops() -> Vec<Op> {
    let outcome = Outcome {
        raid: "r-1".into(),
        attacker: "alice".into(),
        defender: "bob".into(),
        defender_level: 4,
        lootable: amounts(&[("gold", 300)]),
        result: RaidResult {
            victory: true,
            destruction_percent: 60,
            loot: amounts(&[("gold", 120)]),
            units_used: amounts(&[("archer", 5)]),
            seconds: 90,
            units_sent: amounts(&[("archer", 12)]),
            log: vec![serde_json::json!({ "t": 15, "kind": "strike", "text": "The gate falls." })],
        },
    };
    vec![
        Op::Login,
        Op::Advance,
        Op::Wake,
        Op::Act { action: Action::Collect { id: 2 } },
        Op::Raid { outcome },
        Op::Relocate,
        Op::ClanFounded { clan: "wolves".into() },
        Op::Adjust { change: Adjustment { resources: amounts(&[("gems", 50)]), items: amounts(&[]) } },
        Op::Inbox {
            item: citadel_server::apply::InboxGrant {
                id: "raid-0019b7a2c4e1f0a9d3c2b1e4f5".into(),
                kind: "gift".into(),
                resources: amounts(&[("gold", 100)]),
                items: amounts(&[]),
            },
        },
        Op::GiftSent {
            gift: "gift:9f86d081884c7d659a2feaa0c55ad015:42".into(),
            to: "bob".into(),
            clan: "wolves".into(),
            resources: amounts(&[("gold", 60)]),
        },
        Op::GiftDelivered { gift: "gift:9f86d081884c7d659a2feaa0c55ad015:42".into() },
        Op::GiftReturned { gift: "gift:9f86d081884c7d659a2feaa0c55ad015:43".into() },
        Op::Restore { state: Box::new(PlayerState::default()), snapshot: "1764532800000-0000000042.json".into() },
    ]
}

fn record(seq: u64, op: Op) -> Record {
    Record {
        format_version: JOURNAL_FORMAT_VERSION,
        title: "mini".into(),
        player: "alice".into(),
        seq,
        now_ms: 1_764_532_800_000 + seq as i64,
        rng: 42,
        content_version: "c0ffee".into(),
        op,
        key: Some("k-7".into()),
    }
}

/// Every name serde knows for a tagged enum, from the error it gives for an
/// unknown one.
fn variants<T: serde::de::DeserializeOwned>(tag: &str) -> Vec<String> {
    let err = serde_json::from_value::<T>(serde_json::json!({ tag: "zzz" })).err().expect("zzz is no variant");
    err.to_string().split('`').skip(3).step_by(2).map(String::from).collect()
}

#[test]
fn stored_and_wire_shapes_are_as_in_the_golden_file() {
    let mut lines = Vec::new();
    for a in actions() {
        lines.push(format!("action {}", serde_json::to_string(&a).unwrap()));
    }
    for e in events() {
        lines.push(format!("event {}", serde_json::to_string(&e).unwrap()));
    }
    for (i, op) in ops().into_iter().enumerate() {
        lines.push(format!("record {}", serde_json::to_string(&record(i as u64 + 1, op)).unwrap()));
    }
    let text = lines.join("\n") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/shapes.jsonl");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    // Old shapes still read: every golden line parses and writes back as it was.
    for line in golden.lines() {
        let (kind, json) = line.split_once(' ').unwrap();
        let again = match kind {
            "action" => serde_json::to_string(&serde_json::from_str::<Action>(json).unwrap()),
            "event" => serde_json::to_string(&serde_json::from_str::<Event>(json).unwrap()),
            "record" => serde_json::to_string(&serde_json::from_str::<Record>(json).unwrap()),
            other => panic!("unknown kind `{other}` in {}", path.display()),
        }
        .unwrap();
        assert_eq!(again, json, "a golden {kind} no longer reads back as written");
    }
    assert!(
        golden == text,
        "a stored or wire JSON shape changed (see {}): if that is meant, version the format, \
         run with UPDATE_GOLDEN=1 and review the diff\n--- golden\n{golden}\n--- now\n{text}",
        path.display()
    );
}

#[test]
fn the_golden_file_has_every_action_event_and_operation() {
    let actions: Vec<&str> = actions().iter().map(Action::name).collect();
    assert_eq!(actions, ACTION_NAMES, "one example per action, in declaration order");
    let events: Vec<&str> = events().iter().map(Event::name).collect();
    assert_eq!(events, EVENT_NAMES, "one example per event, in declaration order");
    let ops: Vec<String> =
        ops().iter().map(|op| serde_json::to_value(op).unwrap()["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(ops, variants::<Op>("kind"), "one example per journal operation, in declaration order");
}
