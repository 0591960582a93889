//! Player migration across title versions: a player saved under one
//! version of the fort fixture's data plays on under an edited version. The
//! engine's reconciliation policy (`citadel_runtime::reconcile`) and the
//! title's `on_migrate` hook bring the state to the new data; logging in
//! never fails because data changed.

use citadel_runtime::state::{Building, TrainingOrder, Upgrade};
use citadel_runtime::{login, new_player, Event, PlayerState, Rng, Title, TitleFiles};
use citadel_tests::root;
use serde_json::{json, Value};

const NOW: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;

fn fort_files() -> TitleFiles {
    citadel_runtime::read_dir(&root().join("tests/fixtures/fort")).0
}

fn load(files: &TitleFiles) -> Title {
    let (title, diags) = citadel_runtime::load_files("fort", files);
    title.unwrap_or_else(|| panic!("does not load: {diags:#?}"))
}

/// Edits one JSON file of a title in memory.
fn edit(files: &mut TitleFiles, file: &str, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&files[file]).unwrap();
    f(&mut v);
    files.insert(file.into(), serde_json::to_string_pretty(&v).unwrap());
}

/// Points the requirements and quest goals that name the watchtower at
/// another building, so the watchtower can go or be cut down.
fn retarget_watchtower(files: &mut TitleFiles, to: &str) {
    for f in ["buildings.json", "quests.json"] {
        let text = files[f].replace(r#"level(\"watchtower\")"#, &format!(r#"level(\"{to}\")"#));
        files.insert(f.into(), text);
    }
}

fn remove_by_id(list: &mut Value, id: &str) {
    list.as_array_mut().unwrap().retain(|x| x["id"] != id);
}

/// A player of the unedited title with a bit of everything: a watchtower
/// (level 3, upgrading to 4), walls at level 5, militia in training at the
/// barracks, stone, a purchase of the winter festival offer.
fn veteran(title: &Title) -> PlayerState {
    let mut s = new_player(title, NOW);
    let next = s.next_building_id;
    let mut tower = Building::completed(next, "watchtower", 3, 30, 30, NOW);
    tower.upgrade = Some(Upgrade { to_level: 4, started_ms: NOW, ends_ms: NOW + 10 * HOUR });
    s.buildings.push(tower);
    s.buildings.push(Building::completed(next + 1, "wall", 5, 0, 0, NOW));
    s.buildings.push(Building::completed(next + 2, "barracks", 1, 5, 5, NOW));
    s.next_building_id = next + 3;
    s.training.push(TrainingOrder {
        unit: "militia".into(),
        building: "barracks".into(),
        building_id: None,
        ends_ms: NOW + 10 * HOUR,
    });
    s.resources.insert("stone".into(), 400);
    s.units.insert("scout".into(), 3);
    s.purchases.insert("winter_festival".into(), 1);
    s.research.insert("masonry".into(), 1);
    s
}

fn migrated(events: &[Event]) -> Option<(&str, &str, u32)> {
    events.iter().find_map(|e| match e {
        Event::Migrated { from, to, changes } => Some((from.as_str(), to.as_str(), *changes)),
        _ => None,
    })
}

#[test]
fn an_unchanged_title_migrates_nothing() {
    let title = load(&fort_files());
    let mut s = veteran(&title);
    let events = login(&title, &mut s, NOW + 1000, &mut Rng::new(7));
    assert_eq!(migrated(&events), None);
}

#[test]
fn removed_ids_are_dropped_and_the_player_logs_in() {
    let old = load(&fort_files());
    let mut files = fort_files();
    retarget_watchtower(&mut files, "wall");
    edit(&mut files, "buildings.json", |v| remove_by_id(&mut v["buildings"], "watchtower"));
    edit(&mut files, "units.json", |v| remove_by_id(&mut v["units"], "scout"));
    edit(&mut files, "store.json", |v| remove_by_id(&mut v["offers"], "winter_festival"));
    let new = load(&files);
    let mut s = veteran(&old);
    let before = s.buildings.len();

    let events = login(&new, &mut s, NOW + 1000, &mut Rng::new(7));

    let (from, to, changes) = migrated(&events).expect("a migrated event");
    assert_eq!((from, to), (old.content_version.as_str(), new.content_version.as_str()));
    assert!(changes >= 3, "{changes}");
    assert_eq!(s.content_version, new.content_version);
    assert!(s.buildings.iter().all(|b| b.building != "watchtower"));
    assert_eq!(s.buildings.len(), before - 1);
    assert!(!s.units.contains_key("scout"));
    assert!(!s.purchases.contains_key("winter_festival"));
    // The rest of the base is untouched and the game goes on.
    assert!(s.buildings.iter().any(|b| b.building == "wall" && b.level == 5));
}

#[test]
fn renamed_ids_carry_the_players_state_over() {
    let old = load(&fort_files());
    let mut files = fort_files();
    // The watchtower becomes the lookout; stone becomes granite.
    retarget_watchtower(&mut files, "lookout");
    edit(&mut files, "buildings.json", |v| {
        for b in v["buildings"].as_array_mut().unwrap() {
            if b["id"] == "watchtower" {
                b["id"] = json!("lookout");
            }
        }
    });
    let text = files["buildings.json"].replace("\"stone\"", "\"granite\"");
    files.insert("buildings.json".into(), text);
    let data: Vec<String> =
        files.keys().filter(|f| f.ends_with(".json") && !f.contains('/') && *f != "buildings.json").cloned().collect();
    for f in data {
        // Ids as JSON strings, and inside expressions (raid loot formulas).
        let text = files[&f].replace("\"stone\"", "\"granite\"").replace(r#"\"stone\""#, r#"\"granite\""#);
        files.insert(f, text);
    }
    for (path, text) in files.clone() {
        if path.ends_with(".rhai") {
            files.insert(path, text.replace("\"stone\"", "\"granite\""));
        }
    }
    edit(&mut files, "title.json", |v| {
        v["renamed"] = json!({ "buildings": { "watchtower": "lookout" }, "resources": { "stone": "granite" } });
    });
    let new = load(&files);
    let mut s = veteran(&old);
    let tower = s.buildings.iter().find(|b| b.building == "watchtower").unwrap().clone();

    login(&new, &mut s, NOW + 1000, &mut Rng::new(7));

    let lookout = s.buildings.iter().find(|b| b.id == tower.id).expect("the same building, renamed");
    assert_eq!(lookout.building, "lookout");
    assert_eq!(lookout.level, 3);
    assert_eq!(lookout.upgrade, tower.upgrade, "the upgrade in progress keeps its meaning");
    assert!(!s.resources.contains_key("stone"));
    assert!(s.resources["granite"] >= 400, "{:?}", s.resources);
}

#[test]
fn fewer_levels_lower_the_level_and_cancel_the_upgrade() {
    let old = load(&fort_files());
    let mut files = fort_files();
    retarget_watchtower(&mut files, "quarry");
    // Walls and watchtowers keep 3 levels.
    edit(&mut files, "buildings.json", |v| {
        for b in v["buildings"].as_array_mut().unwrap() {
            if b["id"] == "wall" || b["id"] == "watchtower" {
                b["levels"].as_array_mut().unwrap().truncate(3);
            }
        }
    });
    let new = load(&files);
    let mut s = veteran(&old);

    login(&new, &mut s, NOW + 1000, &mut Rng::new(7));

    let wall = s.buildings.iter().find(|b| b.building == "wall").unwrap();
    assert_eq!(wall.level, 3);
    let tower = s.buildings.iter().find(|b| b.building == "watchtower").unwrap();
    assert_eq!((tower.level, tower.upgrade.is_none()), (3, true), "upgrade to a level that is gone: cancelled");
}

#[test]
fn removed_resources_go_and_new_ones_start_at_zero() {
    let old = load(&fort_files());
    let mut files = fort_files();
    edit(&mut files, "resources.json", |v| {
        v["resources"].as_array_mut().unwrap().push(json!({ "id": "iron", "name": "Iron" }));
    });
    let new = load(&files);
    let mut s = veteran(&old);
    s.resources.insert("mana".into(), 5);

    login(&new, &mut s, NOW + 1000, &mut Rng::new(7));

    assert_eq!(s.resources.get("iron"), Some(&0));
    assert!(!s.resources.contains_key("mana"));
}

/// The title's hook sees every change and can compensate: here, 10 gems
/// for each cancelled upgrade.
#[test]
fn the_on_migrate_hook_sees_the_changes_and_compensates() {
    let old = load(&fort_files());
    let mut files = fort_files();
    retarget_watchtower(&mut files, "wall");
    edit(&mut files, "buildings.json", |v| {
        for b in v["buildings"].as_array_mut().unwrap() {
            if b["id"] == "watchtower" {
                b["levels"].as_array_mut().unwrap().truncate(3);
            }
        }
    });
    edit(&mut files, "title.json", |v| v["hooks"]["on_migrate"] = json!("migrate::on_migrate"));
    files.insert(
        "scripts/migrate.rhai".into(),
        "fn on_migrate(ev) {\n    let fx = [];\n    for c in ev.changes {\n        if c.kind == \"upgrade_cancelled\" { fx.push(grant(\"gems\", 10)); }\n    }\n    fx\n}\n"
            .into(),
    );
    let new = load(&files);
    let mut s = veteran(&old);
    let gems = s.resources["gems"];

    let events = login(&new, &mut s, NOW + 1000, &mut Rng::new(7));

    assert!(migrated(&events).is_some());
    assert_eq!(s.resources["gems"], gems + 10, "{events:?}");
}

#[test]
fn a_failing_on_migrate_hook_is_reported_and_the_policy_stands() {
    let old = load(&fort_files());
    let mut files = fort_files();
    retarget_watchtower(&mut files, "wall");
    edit(&mut files, "buildings.json", |v| remove_by_id(&mut v["buildings"], "watchtower"));
    edit(&mut files, "title.json", |v| v["hooks"]["on_migrate"] = json!("migrate::on_migrate"));
    files.insert("scripts/migrate.rhai".into(), "fn on_migrate(ev) { loop { } }\n".into());
    let new = load(&files);
    let mut s = veteran(&old);

    let events = login(&new, &mut s, NOW + 1000, &mut Rng::new(7));

    assert!(events.iter().any(|e| matches!(e, Event::HookFailed { hook, .. } if hook == "on_migrate")), "{events:?}");
    assert!(s.buildings.iter().all(|b| b.building != "watchtower"));
    assert_eq!(s.content_version, new.content_version);
}

/// Replay after a crash re-runs the same operation on the same data: the
/// migration must come out the same every time.
#[test]
fn migration_is_deterministic() {
    let old = load(&fort_files());
    let mut files = fort_files();
    retarget_watchtower(&mut files, "wall");
    edit(&mut files, "buildings.json", |v| remove_by_id(&mut v["buildings"], "watchtower"));
    edit(&mut files, "title.json", |v| v["hooks"]["on_migrate"] = json!("migrate::on_migrate"));
    files.insert("scripts/migrate.rhai".into(), "fn on_migrate(ev) { [grant(\"gold\", random(1, 1000))] }\n".into());
    let new = load(&files);
    let run = || {
        let mut s = veteran(&old);
        let events = login(&new, &mut s, NOW + 1000, &mut Rng::new(42));
        (s, events)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_renamed_id_must_exist_and_the_old_one_be_gone() {
    let mut files = fort_files();
    edit(&mut files, "title.json", |v| {
        v["renamed"] = json!({ "buildings": { "gold_mine": "lookout", "tower": "watchtowr" } });
    });
    let (title, diags) = citadel_runtime::load_files("fort", &files);
    assert!(title.is_none());
    let text: Vec<String> = diags.iter().map(|d| format!("{} {} {:?}", d.location(), d.message, d.help)).collect();
    let all = text.join("\n");
    assert!(all.contains("renamed to `lookout`, which is not defined"), "{all}");
    assert!(all.contains("`gold_mine` is renamed to `lookout` but is still defined"), "{all}");
    assert!(all.contains("did you mean `watchtower`?"), "{all}");
    assert!(all.contains("title.json"), "{all}");
}
