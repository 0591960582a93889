//! The schemas are the single source of truth for the title format: the
//! docs are generated from them (and checked here), every property is
//! described, and the designer guide's worked example really loads.

use std::collections::BTreeMap;

use citadel_runtime::rules::{error_codes, ErrorCode};
use citadel_runtime::schema::SCHEMAS;
use citadel_tests::root;
use serde_json::Value;

#[test]
fn title_format_doc_matches_the_schemas_and_code() {
    let path = root().join("docs/title-format.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let filled = citadel_runtime::docs::fill(&doc);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &filled).unwrap();
    } else {
        assert!(filled == doc, "docs/title-format.md is out of date with the schemas or code: run the tests with UPDATE_GOLDEN=1 and review the diff");
    }
    for (name, _) in citadel_runtime::docs::generated_sections() {
        assert!(doc.contains(&format!("<!-- generated:{name} -->")), "section {name} missing");
    }
}

fn resolve<'a>(node: &'a Value, defs: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => defs.pointer(r.split_once('#').map_or("", |(_, p)| p)).map_or(node, |t| resolve(t, defs)),
        None => node,
    }
}

fn undescribed(node: &Value, defs: &Value, at: &str, out: &mut Vec<String>) {
    let node = resolve(node, defs);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            let described = child.get("description").is_some() || resolve(child, defs).get("description").is_some();
            if !described && k != "$schema" {
                out.push(format!("{at}/{k}"));
            }
            undescribed(child, defs, &format!("{at}/{k}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|v| v.is_object()) {
            undescribed(child, defs, &format!("{at}/{key}"), out);
        }
    }
}

#[test]
fn every_schema_property_has_a_description() {
    let defs: Value = serde_json::from_str(SCHEMAS[0].1).unwrap();
    let mut missing = Vec::new();
    for (name, text) in SCHEMAS {
        let schema: Value = serde_json::from_str(text).unwrap();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
        undescribed(&schema, &defs, name, &mut missing);
    }
    assert!(missing.is_empty(), "properties without a description: {missing:?}");
}

#[test]
fn error_code_lists_agree_with_the_enum() {
    let codes: Vec<&str> = error_codes().collect();
    let unique: std::collections::BTreeSet<&&str> = codes.iter().collect();
    assert_eq!(unique.len(), codes.len(), "duplicate error codes");
    for code in &codes {
        let parsed: ErrorCode = serde_json::from_value(Value::String(code.to_string()))
            .unwrap_or_else(|_| panic!("{code} is not an ErrorCode"));
        assert_eq!(parsed.as_str(), *code);
    }
}

/// The code block that follows a bold step heading in the worked example.
fn block_after<'a>(doc: &'a str, heading: &str) -> &'a str {
    let at = doc.find(heading).unwrap_or_else(|| panic!("no step {heading}"));
    let rest = &doc[at..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let start = body.find('\n').unwrap() + 1;
    let end = body[start..].find("```").unwrap();
    &body[start..start + end]
}

#[test]
fn the_worked_example_in_the_guide_loads_and_passes_its_test() {
    let doc = std::fs::read_to_string(root().join("docs/title-format.md")).unwrap();
    let mut files = BTreeMap::new();
    files.insert("resources.json".to_string(), block_after(&doc, "**2. Resources**").to_string());
    files.insert("buildings.json".to_string(), block_after(&doc, "**3. Buildings**").to_string());
    files.insert("title.json".to_string(), block_after(&doc, "**4. The manifest**").to_string());
    files.insert("scripts/market.rhai".to_string(), block_after(&doc, "**5. A script**").to_string());
    files.insert("tests/selling.json".to_string(), block_after(&doc, "**6. A scenario test**").to_string());
    let (title, diags) = citadel_runtime::load_files("orchard", &files);
    let title = title.unwrap_or_else(|| panic!("the guide's example does not load: {diags:#?}"));
    assert!(diags.is_empty(), "{diags:#?}");
    let outcomes = citadel_runtime::scenario::run_all(&title, &files);
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].passed(), "{:#?}", outcomes[0].failures);
}

/// The nth fenced block after `heading` (0 for the first).
fn nth_block_after<'a>(doc: &'a str, heading: &str, n: usize) -> &'a str {
    let at = doc.find(heading).unwrap_or_else(|| panic!("no step {heading}"));
    let fenced = doc[at..].split("```").nth(2 * n + 1).unwrap_or_else(|| panic!("no block {n} after {heading}"));
    &fenced[fenced.find('\n').map_or(0, |i| i + 1)..]
}

/// Part two of the worked example: every file of part two loads, and its
/// scenario (bees, the press, a cart to town, the harvest moon, the press
/// master, the daily basket) passes.
#[test]
fn part_two_of_the_worked_example_loads_and_passes_its_test() {
    let doc = std::fs::read_to_string(root().join("docs/title-format.md")).unwrap();
    let mut files = BTreeMap::new();
    files.insert("resources.json".to_string(), block_after(&doc, "**8. Resources**").to_string());
    files.insert("buildings.json".to_string(), block_after(&doc, "**9. Buildings**").to_string());
    for (i, name) in ["jobs.json", "loot.json", "modifiers.json", "achievements.json"].iter().enumerate() {
        files.insert(name.to_string(), nth_block_after(&doc, "**10. A job", i).to_string());
    }
    files.insert("store.json".to_string(), nth_block_after(&doc, "**11. Items and the manifest**", 0).to_string());
    files.insert("title.json".to_string(), nth_block_after(&doc, "**11. Items and the manifest**", 1).to_string());
    files.insert("tests/growing.json".to_string(), block_after(&doc, "**12. A scenario test**").to_string());
    let (title, diags) = citadel_runtime::load_files("orchard", &files);
    let title = title.unwrap_or_else(|| panic!("part two does not load: {diags:#?}"));
    assert!(diags.is_empty(), "{diags:#?}");
    let outcomes = citadel_runtime::scenario::run_all(&title, &files);
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].passed(), "{:#?}", outcomes[0].failures);
}

/// Data ported from other games lists free levels with a cost of 0: such a
/// cost loads, and building that level charges nothing.
#[test]
fn a_cost_of_zero_is_accepted_and_free() {
    let mut files = citadel_tests::mini_files();
    let buildings = files.get_mut("buildings.json").unwrap();
    let before = buildings.clone();
    *buildings = buildings.replace(
        r#"{ "cost": { "gold": 150 }, "build_seconds": 20"#,
        r#"{ "cost": { "gold": 0 }, "build_seconds": 20"#,
    );
    assert_ne!(*buildings, before, "the fixture's barracks cost");
    let (title, diags) = citadel_runtime::load::load_files("mini", &files);
    assert!(diags.is_empty(), "{diags:?}");
    let title = title.unwrap();
    let mut state = citadel_runtime::rules::new_player(&title, 0);
    let gold = state.resources["gold"];
    let action: citadel_runtime::Action =
        serde_json::from_value(serde_json::json!({ "action": "build", "building": "barracks", "x": 1, "y": 1 }))
            .unwrap();
    citadel_runtime::rules::apply(&title, &mut state, &action, 0, &mut citadel_runtime::Rng::new(1)).unwrap();
    assert_eq!(state.resources["gold"], gold, "nothing charged");
}

/// Loads the mini fixture after `edit` (file, text to find, replacement),
/// each of which must apply.
fn mini_with(edits: &[(&str, &str, &str)]) -> citadel_runtime::Title {
    mini_with_files(&[], edits)
}

/// Like [`mini_with`], with files added first (name, text).
fn mini_with_files(added: &[(&str, &str)], edits: &[(&str, &str, &str)]) -> citadel_runtime::Title {
    let mut files = citadel_tests::mini_files();
    for (name, text) in added {
        files.insert(name.to_string(), text.to_string());
    }
    for (file, from, to) in edits {
        let text = files.get_mut(*file).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        *text = text.replacen(from, to, 1);
    }
    let (title, diags) = citadel_runtime::load::load_files("mini", &files);
    assert!(diags.is_empty(), "{diags:?}");
    title.unwrap()
}

fn act(
    title: &citadel_runtime::Title,
    s: &mut citadel_runtime::PlayerState,
    action: Value,
    now: i64,
) -> Result<(), ErrorCode> {
    let action: citadel_runtime::Action = serde_json::from_value(action).unwrap();
    citadel_runtime::rules::apply(title, s, &action, now, &mut citadel_runtime::Rng::new(1))
        .map(|_| ())
        .map_err(|e| e.code)
}

/// A title can start its players past the tutorial: finished research
/// (whose effects count at once) and xp.
#[test]
fn a_new_player_starts_with_the_titles_research_and_xp() {
    let title = mini_with(&[(
        "title.json",
        r#""buildings": [{ "building": "hq", "x": 6, "y": 6 }]"#,
        r#""buildings": [{ "building": "hq", "x": 6, "y": 6 }], "research": { "tools": 1 }, "xp": 25"#,
    )]);
    let s = citadel_runtime::rules::new_player(&title, 0);
    assert_eq!(s.research.get("tools"), Some(&1));
    assert_eq!(s.xp, 25);
    let bonus = citadel_runtime::rules::research_bonus(
        &title,
        &s,
        citadel_runtime::format::ResearchEffectKind::ProductionPercent,
        Some("gold"),
    );
    assert_eq!(bonus, 20, "the starting level's effect applies");
}

/// A level may set its own speed-up price, or forbid speeding it up; a
/// refused speed-up changes nothing.
#[test]
fn a_level_sets_its_own_speed_up_price_or_forbids_it() {
    let title = mini_with(&[
        (
            "buildings.json",
            r#"{ "cost": { "gold": 150 }, "build_seconds": 20, "housing": 10 }"#,
            r#"{ "cost": { "gold": 150 }, "build_seconds": 20, "housing": 10, "speed_up": { "seconds_per_premium": 5 } }"#,
        ),
        (
            "research.json",
            r#"{ "cost": { "gold": 200 }, "research_seconds": 60,"#,
            r#"{ "cost": { "gold": 200 }, "research_seconds": 60, "speed_up": false,"#,
        ),
    ]);
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    let gems = s.resources["gems"];
    act(&title, &mut s, serde_json::json!({ "action": "build", "building": "barracks", "x": 1, "y": 1 }), 0).unwrap();
    act(&title, &mut s, serde_json::json!({ "action": "speed_up", "id": 2 }), 0).unwrap();
    assert_eq!(s.resources["gems"], gems - 4, "20 s at 5 s per gem");
    act(&title, &mut s, serde_json::json!({ "action": "research", "research": "tools" }), 0).unwrap();
    let before = s.clone();
    assert_eq!(act(&title, &mut s, serde_json::json!({ "action": "speed_up_research" }), 0), Err(ErrorCode::NoSpeedUp));
    assert_eq!(s, before, "a refused speed-up changes nothing");
}

/// A chest of three outcomes (70, 25 and 5 in 100) and a summons that may
/// bring 12 guards (more than the barracks houses), each opened by an item.
fn mini_with_loot() -> citadel_runtime::Title {
    let loot = r#"{
      "format_version": 1,
      "loot": [
        { "id": "chest", "name": "Chest", "entries": [
          { "weight": 70, "grants": { "resources": { "gold": 1 } } },
          { "weight": 25, "grants": { "items": { "purse": 1 } } },
          { "weight": 5, "grants": { "xp": 1 } }
        ] },
        { "id": "summons", "name": "Summons", "rolls": 2, "entries": [
          { "weight": 9, "grants": { "units": { "guard": 1 } } },
          { "weight": 1, "grants": { "units": { "guard": 6 } } }
        ] }
      ]
    }"#;
    mini_with_file_and_items(
        ("loot.json", loot),
        r#"{ "id": "chest_key", "name": "Chest key", "use": { "loot": ["chest"] } },
    { "id": "summoning_stone", "name": "Summoning stone", "use": { "loot": ["summons"] } }"#,
    )
}

/// Mini with a file added and items (JSON objects) added to its store.
fn mini_with_file_and_items(file: (&str, &str), items: &str) -> citadel_runtime::Title {
    const PURSE: &str = r#"{ "id": "purse", "name": "Purse", "use": { "resources": { "gold": 100 } } }"#;
    mini_with_files(&[file], &[("store.json", PURSE, &format!("{PURSE},\n    {items}"))])
}

/// A loot table's entries come out as often as its stated odds say: over
/// 10,000 seeded rolls, each entry within 2 points of its percent; the
/// odds clients are shown are the stated ones; the same seed rolls the same.
#[test]
fn loot_rolls_match_their_stated_odds() {
    let title = mini_with_loot();
    let table = title.loot_table("chest").unwrap();
    let shown: Vec<f64> = table.odds().iter().map(|o| o.percent).collect();
    assert_eq!(shown, vec![70.0, 25.0, 5.0]);
    const ROLLS: usize = 10_000;
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    s.items.insert("chest_key".into(), ROLLS as i64);
    let mut rng = citadel_runtime::Rng::new(20261201);
    let mut seen = [0usize; 3];
    let use_key = citadel_runtime::Action::UseItem { item: "chest_key".into() };
    for _ in 0..ROLLS {
        let events = citadel_runtime::rules::apply(&title, &mut s, &use_key, 0, &mut rng).unwrap();
        let rolled: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                citadel_runtime::Event::Looted { table, grants } => Some((table.as_str(), grants)),
                _ => None,
            })
            .collect();
        assert_eq!(rolled.len(), 1, "one roll per key: {events:?}");
        let (id, grants) = rolled[0];
        assert_eq!(id, "chest");
        let entry = table.entries.iter().position(|e| &e.grants == grants).expect("the grants of an entry");
        seen[entry] += 1;
    }
    for (i, odds) in shown.iter().enumerate() {
        let observed = seen[i] as f64 * 100.0 / ROLLS as f64;
        assert!((observed - odds).abs() <= 2.0, "entry {i}: stated {odds}%, observed {observed}% ({seen:?})");
    }
    assert_eq!(s.items.get("chest_key"), Some(&0));
    assert_eq!(s.xp, seen[2] as i64, "each xp entry gave its 1 xp");
    // Same seed, same rolls.
    let mut again = citadel_runtime::rules::new_player(&title, 0);
    again.items.insert("chest_key".into(), 50);
    let mut other = again.clone();
    for _ in 0..50 {
        citadel_runtime::rules::apply(&title, &mut again, &use_key, 0, &mut citadel_runtime::Rng::new(7)).unwrap();
        citadel_runtime::rules::apply(&title, &mut other, &use_key, 0, &mut citadel_runtime::Rng::new(7)).unwrap();
    }
    assert_eq!(again, other);
}

/// A roll that could bring more units than the free housing holds is
/// refused before it is rolled, and changes nothing: the item is kept.
#[test]
fn a_loot_roll_that_might_not_fit_in_housing_is_refused_whole() {
    let title = mini_with_loot();
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    s.items.insert("summoning_stone".into(), 1);
    let stone = serde_json::json!({ "action": "use_item", "item": "summoning_stone" });
    // No barracks: no housing at all.
    let before = s.clone();
    assert_eq!(act(&title, &mut s, stone.clone(), 0), Err(ErrorCode::HousingFull));
    assert_eq!(s, before);
    // A barracks houses 10; two rolls of up to 6 guards need 12.
    s.resources.insert("gold".into(), 1000);
    act(&title, &mut s, serde_json::json!({ "action": "build", "building": "barracks", "x": 1, "y": 1 }), 0).unwrap();
    let done = 3_600_000;
    citadel_runtime::advance(&title, &mut s, done, &mut citadel_runtime::Rng::new(1));
    assert_eq!(s.buildings[1].level, 1, "the barracks stands");
    let before = s.clone();
    assert_eq!(act(&title, &mut s, stone, done), Err(ErrorCode::HousingFull));
    assert_eq!(s, before);
}

/// Mini where research runs in mines (one per mine), every barracks has a
/// queue of its own of 5 units, and a building that upgrades takes no work.
fn mini_working_apart() -> citadel_runtime::Title {
    mini_with(&[
        (
            "title.json",
            r#""builders": 1,"#,
            r#""builders": 1, "training_queue": 5, "work": { "research": "per_building", "training": "per_building", "while_upgrading": false },"#,
        ),
        ("research.json", r#""building": "hq","#, r#""building": "mine","#),
        ("research.json", r#""building": "hq","#, r#""building": "mine","#),
        (
            "buildings.json",
            r#""max_count": [1, 1, 1],
      "levels": [
        { "cost": { "gold": 150 }"#,
            r#""max_count": [2, 2, 2],
      "levels": [
        { "cost": { "gold": 150 }"#,
        ),
    ])
}

/// A player of [`mini_working_apart`] with headquarters level 2, two mines
/// (ids 2, 3), two barracks (ids 4, 5), Tools 1 researched and gold.
fn working_player(title: &citadel_runtime::Title) -> citadel_runtime::PlayerState {
    use citadel_runtime::state::Building;
    let mut s = citadel_runtime::rules::new_player(title, 0);
    s.buildings[0].level = 2;
    for (id, kind, x) in [(2, "mine", 0), (3, "mine", 1), (4, "barracks", 2), (5, "barracks", 4)] {
        s.buildings.push(Building::completed(id, kind, 1, x, 0, 0));
    }
    s.next_building_id = 6;
    s.research.insert("tools".into(), 1);
    s.resources.insert("gold".into(), 1000);
    s
}

/// Two labs research two things at once; a busy lab refuses a second
/// research and the refusal changes nothing; a lab with work cannot start
/// an upgrade until the work is done.
#[test]
fn each_lab_runs_one_research_of_its_own() {
    let title = mini_working_apart();
    let mut s = working_player(&title);
    act(&title, &mut s, serde_json::json!({ "action": "research", "research": "tools", "building_id": 2 }), 0).unwrap();
    let before = s.clone();
    let second_in_same_lab = serde_json::json!({ "action": "research", "research": "drills", "building_id": 2 });
    assert_eq!(act(&title, &mut s, second_in_same_lab, 0), Err(ErrorCode::Busy));
    assert_eq!(s, before, "a refused research changes nothing");
    act(&title, &mut s, serde_json::json!({ "action": "research", "research": "drills" }), 0).unwrap();
    let labs: Vec<Option<u32>> = s.research_running.iter().map(|r| r.building_id).collect();
    assert_eq!(labs, vec![Some(2), Some(3)], "drills went to the free mine");
    // Both mines busy: a third research would have nowhere to go; a mine
    // with work does not upgrade (while_upgrading is false).
    assert_eq!(act(&title, &mut s, serde_json::json!({ "action": "upgrade", "id": 3 }), 0), Err(ErrorCode::Busy));
    // Tools 2 takes 120 s, drills 60 s: both run at once.
    act(&title, &mut s, serde_json::json!({ "action": "upgrade", "id": 3 }), 60_000).unwrap();
    assert_eq!(s.research.get("drills"), Some(&1));
    assert_eq!(s.research_running.len(), 1, "tools still runs");
    // An upgrading mine takes no research.
    s.research.insert("drills".into(), 0);
    let in_upgrading = serde_json::json!({ "action": "research", "research": "drills", "building_id": 3 });
    assert_eq!(act(&title, &mut s, in_upgrading, 60_000), Err(ErrorCode::Busy));
    advance_to(&title, &mut s, 120_000);
    assert_eq!(s.research.get("tools"), Some(&2));
}

/// Every barracks trains from a queue of its own, all at once; a full
/// queue refuses more, and units without a named barracks go to the one
/// that is free first.
#[test]
fn each_barracks_trains_from_a_queue_of_its_own() {
    let title = mini_working_apart();
    let mut s = working_player(&title);
    for b in &mut s.buildings {
        if b.building == "hq" {
            b.level = 1;
        }
    }
    let train = |n: i64, at: Option<u32>| {
        let mut a = serde_json::json!({ "action": "train", "unit": "guard", "count": n });
        if let Some(id) = at {
            a["building_id"] = id.into();
        }
        a
    };
    act(&title, &mut s, train(5, Some(4)), 0).unwrap();
    let before = s.clone();
    assert_eq!(act(&title, &mut s, train(1, Some(4)), 0), Err(ErrorCode::QueueFull));
    assert_eq!(s, before, "a refused train changes nothing");
    act(&title, &mut s, train(5, None), 0).unwrap();
    assert!(s.training[5..].iter().all(|o| o.building_id == Some(5)), "the free barracks took them");
    assert_eq!(act(&title, &mut s, train(1, None), 0), Err(ErrorCode::QueueFull));
    // Both queues train at once: ten guards in 50 s, not 100 s.
    advance_to(&title, &mut s, 50_000);
    assert_eq!(s.units.get("guard"), Some(&10));
    assert!(s.training.is_empty());
}

fn advance_to(title: &citadel_runtime::Title, s: &mut citadel_runtime::PlayerState, now: i64) {
    citadel_runtime::advance(title, s, now, &mut citadel_runtime::Rng::new(1));
}

/// Mini with a blessing (+50% gold production per stack, 10 minutes, up to
/// two stacks) that incense grants.
fn mini_with_modifiers() -> citadel_runtime::Title {
    let modifiers = r#"{
      "format_version": 1,
      "modifiers": [
        { "id": "blessing", "name": "Blessing", "duration_seconds": 600, "stacking": "stack", "max_stacks": 2,
          "effects": [{ "kind": "production_percent", "target": "gold", "value": 50 }] }
      ]
    }"#;
    mini_with_file_and_items(
        ("modifiers.json", modifiers),
        r#"{ "id": "incense", "name": "Incense", "use": { "modifiers": ["blessing"] } }"#,
    )
}

/// A timed modifier raises production while it lasts and ends at its time,
/// even with nobody there to see it: production is banked at the boosted
/// rate up to the end and at the base rate after. Stacks add up to their
/// limit and no further.
#[test]
fn a_timed_modifier_lasts_until_its_time_and_stacks_to_its_limit() {
    use citadel_runtime::state::Building;
    const MIN: i64 = 60_000;
    let title = mini_with_modifiers();
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    s.buildings.push(Building::completed(2, "mine", 1, 0, 0, 0));
    s.next_building_id = 3;
    s.items.insert("incense".into(), 5);
    let incense = serde_json::json!({ "action": "use_item", "item": "incense" });
    act(&title, &mut s, incense.clone(), 0).unwrap();
    assert_eq!(s.modifiers["blessing"].ends_ms, 10 * MIN);
    // 600 gold an hour: 150 in the blessed ten minutes, 100 in the next ten.
    let gold = s.resources["gold"];
    let events = citadel_runtime::rules::apply(
        &title,
        &mut s,
        &citadel_runtime::Action::Collect { id: 2 },
        20 * MIN,
        &mut citadel_runtime::Rng::new(1),
    )
    .unwrap();
    assert!(events.contains(&citadel_runtime::Event::ModifierEnded { modifier: "blessing".into() }), "{events:?}");
    assert_eq!(s.resources["gold"] - gold, 250);
    assert!(s.modifiers.is_empty(), "the blessing has ended");
    // Three uses: two stacks (the limit), +100% for ten minutes.
    for _ in 0..3 {
        act(&title, &mut s, incense.clone(), 20 * MIN).unwrap();
    }
    assert_eq!(s.modifiers["blessing"].stacks, 2);
    let gold = s.resources["gold"];
    act(&title, &mut s, serde_json::json!({ "action": "collect", "id": 2 }), 30 * MIN).unwrap();
    assert_eq!(s.resources["gold"] - gold, 200);
}

/// Mini where the headquarters provides 10 power, a mine draws 20, and a
/// shortfall blocks training: one mine alone runs at half rate.
fn mini_with_power(production: &str) -> citadel_runtime::Title {
    let capacities = format!(
        r#"{{ "id": "gems", "name": "Gems" }}
  ],
  "capacities": [
    {{ "id": "power", "name": "Power", "shortfall": {{ "production": "{production}", "blocks": ["train"] }} }}
  ]"#
    );
    mini_with(&[
        (
            "resources.json",
            r#"{ "id": "gems", "name": "Gems" }
  ]"#,
            &capacities,
        ),
        (
            "buildings.json",
            r#""storage": { "gold": 500 } }"#,
            r#""storage": { "gold": 500 }, "provides": { "power": 10 } }"#,
        ),
        (
            "buildings.json",
            r#""production": { "resource": "gold", "per_hour": 600, "capacity": 300 } }"#,
            r#""production": { "resource": "gold", "per_hour": 600, "capacity": 300 }, "draws": { "power": 20 } }"#,
        ),
    ])
}

/// A power shortfall slows the producers that draw power in proportion
/// (or stops them), and blocks the actions the title names; the figures
/// are in `derived` for clients.
#[test]
fn a_power_shortfall_slows_production_and_blocks_what_the_title_names() {
    use citadel_runtime::state::Building;
    const HOUR: i64 = 3_600_000;
    for (rule, made) in [("proportional", 150), ("stop", 0), ("none", 300)] {
        let title = mini_with_power(rule);
        let mut s = citadel_runtime::rules::new_player(&title, 0);
        s.buildings.push(Building::completed(2, "mine", 1, 0, 0, 0));
        s.buildings.push(Building::completed(3, "barracks", 1, 2, 0, 0));
        s.next_building_id = 4;
        let d = citadel_runtime::rules::derived(&title, &s);
        assert_eq!((d.capacities["power"].used, d.capacities["power"].total), (20, 10));
        let gold = s.resources["gold"];
        // 600 an hour at full power; half an hour at half power is 150.
        act(&title, &mut s, serde_json::json!({ "action": "collect", "id": 2 }), HOUR / 2).ok();
        assert_eq!(s.resources["gold"] - gold, made, "{rule}");
        let before = s.clone();
        let train = serde_json::json!({ "action": "train", "unit": "guard", "count": 1 });
        assert_eq!(act(&title, &mut s, train, HOUR / 2), Err(ErrorCode::CapacityShort), "{rule}");
        assert_eq!(s, before, "a blocked action changes nothing");
    }
}

/// Mini with a forge that turns gold from the player's stock into gems: 120
/// gold an hour in, 60 gems an hour out, holding at most 100 gems.
fn mini_with_forge() -> citadel_runtime::Title {
    let forge = r#"{
      "id": "forge",
      "name": "Forge",
      "size": { "w": 1, "h": 1 },
      "max_count": [1, 1, 1],
      "levels": [
        { "cost": { "gold": 100 }, "build_seconds": 10,
          "production": { "resource": "gems", "per_hour": 60, "capacity": 100, "consumes": { "gold": 120 } } }
      ]
    },
    {
      "id": "barracks","#;
    mini_with(&[(
        "buildings.json",
        r#"{
      "id": "barracks","#,
        forge,
    )])
}

/// A producer of a chain draws its input from the stock while it works and
/// stalls when the stock runs out, however long the player was away; it
/// picks up again once there is input, and a stalled producer is listed in
/// `derived`.
#[test]
fn a_chain_draws_its_input_and_stalls_when_it_runs_out() {
    use citadel_runtime::state::Building;
    const MIN: i64 = 60_000;
    let title = mini_with_forge();
    assert!(title.chains);
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    s.buildings.push(Building::completed(2, "forge", 1, 0, 0, 0));
    s.next_building_id = 3;
    s.resources.insert("gold".into(), 50);
    let gems = s.resources["gems"];
    // 50 gold last 25 minutes at 120 an hour: 25 gems, then nothing.
    advance_to(&title, &mut s, 60 * MIN);
    assert_eq!(s.resources["gold"], 0);
    assert_eq!(s.buildings[1].stored, 25);
    assert_eq!(citadel_runtime::rules::derived(&title, &s).stalled, vec![2]);
    act(&title, &mut s, serde_json::json!({ "action": "collect", "id": 2 }), 60 * MIN).unwrap();
    assert_eq!(s.resources["gems"] - gems, 25);
    // Gold again: it works again, from now.
    s.resources.insert("gold".into(), 60);
    advance_to(&title, &mut s, 90 * MIN);
    assert_eq!((s.resources["gold"], s.buildings[1].stored), (0, 30));
    // Full, it draws nothing: 100 gems take 100 minutes and 200 gold.
    s.resources.insert("gold".into(), 1000);
    advance_to(&title, &mut s, 90 * MIN + 24 * 60 * MIN);
    assert_eq!(s.buildings[1].stored, 100);
    assert_eq!(s.resources["gold"], 1000 - 140, "70 gems more at 2 gold each, then full");
    assert!(citadel_runtime::rules::derived(&title, &s).stalled.is_empty(), "full is not stalled");
}

/// Mini where the barracks sends two guards on a ten-minute patrol that
/// costs 50 gold and brings back 200 gold and a purse.
fn mini_with_patrol() -> citadel_runtime::Title {
    let jobs = r#"{
      "format_version": 1,
      "jobs": [
        { "id": "patrol", "name": "Patrol", "building": "barracks", "seconds": 600,
          "inputs": { "resources": { "gold": 50 }, "units": { "guard": 2 } },
          "outputs": { "resources": { "gold": 200 }, "items": { "purse": 1 } } }
      ]
    }"#;
    mini_with_files(&[("jobs.json", jobs)], &[])
}

/// A job takes its inputs at the start (units go away, still housed) and
/// gives its outputs at its end; a building runs one job at a time; a
/// cancelled job brings its units back and refunds half its cost.
#[test]
fn a_job_sends_units_away_and_brings_them_back_with_its_outputs() {
    use citadel_runtime::state::Building;
    let title = mini_with_patrol();
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    s.buildings.push(Building::completed(2, "barracks", 1, 0, 0, 0));
    s.next_building_id = 3;
    s.units.insert("guard".into(), 3);
    let gold = s.resources["gold"];
    let patrol = serde_json::json!({ "action": "start_job", "job": "patrol" });
    act(&title, &mut s, patrol.clone(), 0).unwrap();
    assert_eq!((s.units["guard"], s.resources["gold"]), (1, gold - 50));
    assert_eq!(citadel_runtime::rules::derived(&title, &s).housing.used, 3, "guards away keep their beds");
    let before = s.clone();
    assert_eq!(act(&title, &mut s, patrol.clone(), 0), Err(ErrorCode::Busy), "one job per barracks");
    assert_eq!(s, before);
    let events = citadel_runtime::rules::apply(
        &title,
        &mut s,
        &citadel_runtime::Action::CollectAll {},
        600_000,
        &mut citadel_runtime::Rng::new(1),
    )
    .err();
    assert!(events.is_some_and(|e| e.code == ErrorCode::NothingToCollect));
    assert_eq!((s.units["guard"], s.items.get("purse").copied()), (3, Some(1)));
    assert_eq!(s.resources["gold"], gold + 150);
    act(&title, &mut s, patrol, 600_000).unwrap();
    act(&title, &mut s, serde_json::json!({ "action": "cancel_job", "building_id": 2 }), 600_000).unwrap();
    assert_eq!((s.units["guard"], s.resources["gold"]), (3, gold + 125), "guards home, half the gold back");
    let none = serde_json::json!({ "action": "cancel_job", "building_id": 2 });
    assert_eq!(act(&title, &mut s, none, 600_000), Err(ErrorCode::NotBusy));
    let unknown = serde_json::json!({ "action": "start_job", "job": "patrl" });
    assert_eq!(act(&title, &mut s, unknown, 600_000), Err(ErrorCode::UnknownId));
}

/// Mini with a daily reward list of three days (then the last again) and an
/// achievement of two tiers on the gold collected.
fn mini_with_daily_and_achievements() -> citadel_runtime::Title {
    let achievements = r#"{
      "format_version": 1,
      "achievements": [
        { "id": "prospector", "name": "Prospector", "counter": "collected:gold",
          "tiers": [ { "at": 100, "rewards": { "resources": { "gems": 1 } } }, { "at": 500, "rewards": { "items": { "purse": 1 } } } ] }
      ]
    }"#;
    mini_with_files(
        &[("achievements.json", achievements)],
        &[(
            "title.json",
            r#""builders": 1,"#,
            r#""builders": 1, "daily": { "rewards": [ { "resources": { "gems": 1 } }, { "resources": { "gems": 2 } }, { "resources": { "gems": 5 } } ] },"#,
        )],
    )
}

/// The daily reward follows the streak: once per UTC day, the next day's
/// reward the day after, the last one again past the list, and day 1 once
/// a day is missed. Achievement tiers are claimed in order once their
/// counter gets there.
#[test]
fn daily_rewards_follow_the_streak_and_achievements_their_counters() {
    use citadel_runtime::state::Building;
    const DAY: i64 = 86_400_000;
    let title = mini_with_daily_and_achievements();
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    let daily = serde_json::json!({ "action": "claim_daily" });
    let mut gems = s.resources["gems"];
    for (day, reward) in [(0, 1), (1, 2), (2, 5), (3, 5), (5, 1)] {
        act(&title, &mut s, daily.clone(), day * DAY + 3_600_000).unwrap();
        assert_eq!(s.resources["gems"] - gems, reward, "day {day}");
        gems = s.resources["gems"];
        assert_eq!(act(&title, &mut s, daily.clone(), day * DAY + 20 * 3_600_000), Err(ErrorCode::AlreadyClaimed));
    }
    assert_eq!(s.daily.streak, 1, "day 4 was missed");
    // Collected gold counts towards the achievement.
    s.buildings.push(Building::completed(2, "mine", 1, 0, 0, 6 * DAY));
    let claim = serde_json::json!({ "action": "claim_achievement", "achievement": "prospector" });
    assert_eq!(act(&title, &mut s, claim.clone(), 6 * DAY), Err(ErrorCode::GoalNotMet));
    act(&title, &mut s, serde_json::json!({ "action": "collect", "id": 2 }), 6 * DAY + 1_800_000).unwrap();
    assert_eq!(s.counters["collected:gold"], 300);
    act(&title, &mut s, claim.clone(), 6 * DAY + 1_800_000).unwrap();
    assert_eq!(s.resources["gems"] - gems, 1);
    assert_eq!(act(&title, &mut s, claim.clone(), 6 * DAY + 1_800_000), Err(ErrorCode::GoalNotMet), "tier 2 needs 500");
    act(&title, &mut s, serde_json::json!({ "action": "collect", "id": 2 }), 6 * DAY + 3_600_000).unwrap();
    act(&title, &mut s, claim.clone(), 6 * DAY + 3_600_000).unwrap();
    assert_eq!((s.items.get("purse").copied(), s.achievements["prospector"]), (Some(1), 2));
    assert_eq!(act(&title, &mut s, claim, 6 * DAY + 3_600_000), Err(ErrorCode::AlreadyClaimed));
}

/// A unit's stats grow with its research: clients read the current ones in
/// `derived.unit_stats`.
#[test]
fn unit_stats_follow_the_level_of_their_research() {
    let title = mini_with(&[(
        "units.json",
        r#""train_seconds": 10, "housing": 1 }"#,
        r#""train_seconds": 10, "housing": 1, "stats": { "armour": 1, "speed": 3 },
      "stats_by": { "research": "tools", "levels": [{ "armour": 2 }, { "armour": 4, "speed": 4 }] } }"#,
    )]);
    let mut s = citadel_runtime::rules::new_player(&title, 0);
    let stats =
        |s: &citadel_runtime::PlayerState| citadel_runtime::rules::derived(&title, s).unit_stats["guard"].clone();
    let pairs =
        |a: i64, b: i64| citadel_runtime::format::Amounts::from([("armour".to_string(), a), ("speed".to_string(), b)]);
    assert_eq!(stats(&s), pairs(1, 3));
    s.research.insert("tools".into(), 1);
    assert_eq!(stats(&s), pairs(2, 3));
    s.research.insert("tools".into(), 2);
    assert_eq!(stats(&s), pairs(4, 4));
}
