//! Every title in `titles/` (and the test fixture) loads without a single
//! diagnostic and passes all of its scenario tests.

use citadel_runtime::scenario;
use citadel_tests::{load_valid, render, root, title_dirs};

#[test]
fn every_title_loads_cleanly_and_passes_its_scenarios() {
    let mut dirs = title_dirs();
    assert!(!dirs.is_empty(), "titles/ has no title");
    dirs.push(root().join("tests/fixtures/mini"));
    for dir in dirs {
        let (files, read) = citadel_runtime::read_dir(&dir);
        assert!(read.is_empty(), "{}", render(&dir, &files, &read));
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (title, diags) = citadel_runtime::load_files(name, &files);
        assert!(diags.is_empty(), "{} has diagnostics:\n{}", dir.display(), render(&dir, &files, &diags));
        let title = title.expect("no diagnostics means a title");
        let outcomes = scenario::run_all(&title, &files);
        assert!(!outcomes.is_empty(), "{} has no scenario tests", dir.display());
        for o in outcomes {
            assert!(o.passed(), "{}/{} failed:\n{}", dir.display(), o.file, render(&dir, &files, &o.failures));
        }
    }
}

#[test]
fn every_title_meets_the_content_bar() {
    for dir in title_dirs() {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let (t, files) = load_valid(&dir);
        let five_levels = t.buildings.iter().filter(|b| b.def.levels.len() >= 5).count();
        assert!(five_levels >= 12, "{name}: needs 12 building types with 5+ levels, has {five_levels}");
        let plain = t.resources.iter().filter(|r| r.id != t.premium()).count();
        assert!(plain >= 3 && t.resource(t.premium()).is_some(), "{name}: 3 resources and a premium one");
        assert!(t.units.len() >= 5, "{name}: 5 units, has {}", t.units.len());
        assert!(t.research.len() >= 8, "{name}: 8 research, has {}", t.research.len());
        assert!(t.quests.len() >= 15, "{name}: 15 quests, has {}", t.quests.len());
        assert!(!t.offers.is_empty() && !t.items.is_empty(), "{name}: a store");
        assert!(t.hooks.len() >= 3 && !t.actions.is_empty(), "{name}: hooks and custom actions");
        let scripts = files.keys().filter(|f| f.starts_with("scripts/")).count();
        assert!(scripts >= 2, "{name}: scripts");
        assert!(dir.join("README.md").is_file(), "{name}: a README.md for its designers");
        let tests = files.keys().filter(|f| f.starts_with("tests/")).count();
        assert!(tests >= 5, "{name}: 5 scenario tests, has {tests}");
        // The titles that came with the generic mechanics each use two in
        // earnest; Ironhold, written before them, uses none.
        let mechanics = [
            ("capacities", !t.capacities.is_empty()),
            ("production chains", t.chains),
            ("parallel work", t.manifest.work != citadel_runtime::format::WorkDef::default()),
            ("loot tables", !t.loot.is_empty()),
            ("timed modifiers", !t.modifiers.is_empty()),
        ];
        let used: Vec<&str> = mechanics.iter().filter(|(_, on)| *on).map(|(m, _)| *m).collect();
        assert!(name == "ironhold" || used.len() >= 2, "{name}: uses {used:?}, needs two of the new mechanics");
    }
}

#[test]
fn content_version_changes_with_any_data_or_script_byte_and_not_with_tests() {
    let dir = root().join("tests/fixtures/fort");
    let (files, _) = citadel_runtime::read_dir(&dir);
    let v = citadel_runtime::load::content_version(&files);
    for key in ["buildings.json", "scripts/hooks.rhai"] {
        let mut changed = files.clone();
        changed.get_mut(key).expect("file exists").push(' ');
        assert_ne!(citadel_runtime::load::content_version(&changed), v, "{key}");
    }
    let mut tests_only = files.clone();
    tests_only.insert("tests/extra.json".into(), "{}".into());
    assert_eq!(citadel_runtime::load::content_version(&tests_only), v);
}

#[test]
fn player_state_json_round_trips_exactly_and_refuses_future_versions() {
    let (t, _) = load_valid(&root().join("tests/fixtures/fort"));
    let s = citadel_runtime::new_player(&t, 1_767_225_600_000);
    let text = s.to_json();
    let back = citadel_runtime::PlayerState::from_json(&text).expect("round trip");
    assert_eq!(back, s);
    assert_eq!(back.to_json(), text);
    let current = format!("\"format_version\":{}", citadel_runtime::STATE_FORMAT_VERSION);
    assert!(text.contains(&current));
    let future = text.replace(&current, "\"format_version\":99");
    assert!(matches!(citadel_runtime::PlayerState::from_json(&future), Err(citadel_runtime::StateError::TooNew(99))));
    assert!(citadel_runtime::PlayerState::from_json("[1,2]").is_err());
    assert!(citadel_runtime::PlayerState::from_json("{\"title\":\"x\"}").is_err());
}

#[test]
fn version_1_player_files_migrate_to_the_current_format() {
    let (t, _) = load_valid(&root().join("tests/fixtures/fort"));
    let mut s = citadel_runtime::new_player(&t, 1_767_225_600_000);
    s.seq = 7;
    // A version 1 file: no `seq` yet.
    let mut v1: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    v1["format_version"] = 1.into();
    v1.as_object_mut().unwrap().remove("seq");
    let migrated = citadel_runtime::PlayerState::from_json(&v1.to_string()).expect("a version 1 file loads");
    assert_eq!(migrated.format_version, citadel_runtime::STATE_FORMAT_VERSION);
    assert_eq!(migrated.seq, 0, "a version 1 file has absorbed no journaled operation");
    assert_eq!(citadel_runtime::PlayerState { seq: 7, ..migrated }, s);
}

/// A version 4 file keeps its one running research (`research_active`) as
/// the one entry of `research_running`, tied to no building; it has no
/// timed modifiers.
#[test]
fn version_4_player_files_keep_their_running_research() {
    let (t, _) = load_valid(&root().join("tests/fixtures/fort"));
    let s = citadel_runtime::new_player(&t, 1_767_225_600_000);
    let mut v4: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    v4["format_version"] = 4.into();
    let obj = v4.as_object_mut().unwrap();
    obj.remove("research_running");
    obj.remove("modifiers");
    let order = serde_json::json!({ "research": "masonry", "level": 1, "started_ms": 1, "ends_ms": 2 });
    obj.insert("research_active".into(), order);
    let migrated = citadel_runtime::PlayerState::from_json(&v4.to_string()).expect("a version 4 file loads");
    assert_eq!(migrated.research_running.len(), 1);
    let r = &migrated.research_running[0];
    assert_eq!((r.research.as_str(), r.level, r.building_id, r.ends_ms), ("masonry", 1, None, 2));
    assert!(migrated.modifiers.is_empty());
    // Without a running research, the list is empty.
    let mut idle: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    idle["format_version"] = 4.into();
    idle.as_object_mut().unwrap().remove("research_running");
    let migrated = citadel_runtime::PlayerState::from_json(&idle.to_string()).expect("loads");
    assert!(migrated.research_running.is_empty());
}

/// Every requirement of every title reads in words for players ("needs
/// Barracks level 3"): none falls back to its expression's text, which a
/// client would have to show as code.
#[test]
fn every_requirement_of_every_title_reads_in_words() {
    use citadel_runtime::words::requirement_text;
    for dir in title_dirs() {
        let (t, _) = load_valid(&dir);
        let mut exprs: Vec<(String, &citadel_dsl::Expr)> = Vec::new();
        for b in &t.buildings {
            exprs.extend(b.requires.iter().flatten().map(|e| (format!("building {}", b.def.id), e)));
        }
        for r in &t.research {
            exprs.extend(r.requires.iter().flatten().map(|e| (format!("research {}", r.def.id), e)));
        }
        for u in &t.units {
            exprs.extend(u.requires.iter().map(|e| (format!("unit {}", u.def.id), e)));
        }
        for q in &t.quests {
            exprs.extend(q.requires.iter().map(|e| (format!("quest {}", q.def.id), e)));
        }
        for o in &t.offers {
            exprs.extend(o.requires.iter().map(|e| (format!("offer {}", o.def.id), e)));
        }
        for (id, a) in &t.actions {
            exprs.extend(a.requires.iter().map(|e| (format!("action {id}"), e)));
        }
        assert!(!exprs.is_empty(), "{}: no requirement at all", t.id());
        for (what, e) in exprs {
            let text = requirement_text(&t, e);
            assert!(
                !text.contains('(') && !text.contains("&&") && !text.contains("\\\""),
                "{} {what}: `{}` reads as code: {text}",
                t.id(),
                e.source()
            );
        }
    }
}

/// The words of requirements, on the fort fixture: names from the title's
/// data, a lower bound as a level, and anything not simple as its text.
#[test]
fn requirements_read_in_words_with_the_titles_names() {
    use citadel_runtime::words::requirement_text;
    let (t, _) = load_valid(&root().join("tests/fixtures/fort"));
    let sb = citadel_dsl::Sandbox::new(Default::default());
    let words = |src: &str| requirement_text(&t, &sb.compile_expr(src).expect("compiles"));
    let barracks = &t.building("barracks").expect("barracks").def.name;
    let academy = &t.building("academy").expect("academy").def.name;
    let masonry = &t.research_type("masonry").expect("masonry").def.name;
    assert_eq!(
        words(r#"level("barracks") >= 2 && level("academy") >= 1"#),
        format!("needs {barracks} level 2 and {academy}")
    );
    assert_eq!(words(r#"has_research("masonry", 2)"#), format!("needs {masonry} level 2"));
    assert_eq!(words(r#"level("barracks") > 2"#), format!("needs {barracks} level 3"));
    assert_eq!(words(r#"level("barracks") < 2"#), format!("needs {barracks} level below 2"));
    assert_eq!(words(r#"!flag("chest_taken")"#), "needs `chest_taken` not set");
    assert_eq!(words(r#"level("barracks") >= 2 || flag("vip")"#), r#"needs level("barracks") >= 2 || flag("vip")"#);
}

/// The client's view of every title: every requirement also in words, and
/// nothing of what only the server runs (script functions, hooks).
#[test]
fn the_client_view_of_every_title_explains_requirements_and_hides_scripts() {
    fn walk(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    if matches!(k.as_str(), "hook" | "hooks" | "function" | "check" | "resolve") {
                        out.push(format!("{at}/{k} is a script's"));
                    }
                    if k == "requires" && !x.is_null() && !o.contains_key("requires_text") {
                        out.push(format!("{at}/requires has no requires_text"));
                    }
                    if k == "goal" && !o.contains_key("goal_text") {
                        out.push(format!("{at}/goal has no goal_text"));
                    }
                    walk(x, &format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    for dir in title_dirs() {
        let (t, _) = load_valid(&dir);
        let view = citadel_runtime::client::client_view(&t);
        let mut problems = Vec::new();
        walk(&view, "", &mut problems);
        assert!(problems.is_empty(), "{}: {problems:#?}", t.id());
        assert_eq!(view["buildings"].as_array().map(Vec::len), Some(t.buildings.len()), "{}", t.id());
        assert_eq!(view["content_version"], t.content_version.as_str());
        assert_eq!(view["world"]["raids"].is_object(), t.manifest.world.raids.is_some(), "{}", t.id());
    }
}
