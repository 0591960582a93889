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
    let mut files = citadel_tests::mini_files();
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
