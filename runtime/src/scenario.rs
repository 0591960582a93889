//! Scenario tests: `titles/<id>/tests/*.json`, each a new player and a list
//! of steps (advance the clock, log in, do an action, expect an error code,
//! expect state values, check an expression). Run by `cargo test` for every
//! title and by `citadel-edit test`.
//!
//! JSON was chosen over a new mini-language so that the same schema,
//! positions and editor completion work for tests as for title data.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::rules::{self, error_codes, Action, Rng};
use crate::schema::{self, FileKind};
use crate::spans::SourceMap;
use crate::title::Title;

/// Default clock of a scenario: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    #[allow(dead_code)]
    format_version: u32,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    given: Option<Given>,
    steps: Vec<Step>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Given {
    #[serde(default)]
    resources: BTreeMap<String, i64>,
    #[serde(default)]
    buildings: Vec<crate::format::StartBuilding>,
    #[serde(default)]
    upgrade: BTreeMap<String, u32>,
    #[serde(default)]
    research: BTreeMap<String, u32>,
    #[serde(default)]
    units: BTreeMap<String, i64>,
    #[serde(default)]
    items: BTreeMap<String, i64>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    xp: i64,
}

/// Applies a scenario's `given` block; returns (pointer, message) on a bad id.
fn apply_given(title: &Title, s: &mut crate::PlayerState, g: &Given, now: i64) -> Result<(), (String, String)> {
    use citadel_dsl::IdKind;
    let bad = |ptr: String, kind: IdKind, id: &str| {
        let help = did_you_mean(id, title.ids(kind)).map(|h| format!("; {h}")).unwrap_or_default();
        Err((ptr, format!("unknown {} `{id}`{help}", kind.noun())))
    };
    for (r, n) in &g.resources {
        if title.resource(r).is_none() {
            return bad(format!("/given/resources/{r}"), IdKind::Resource, r);
        }
        s.resources.insert(r.clone(), *n);
    }
    for (i, b) in g.buildings.iter().enumerate() {
        let Some(def) = title.building(&b.building) else {
            return bad(format!("/given/buildings/{i}/building"), IdKind::Building, &b.building);
        };
        if b.level as usize > def.def.levels.len() {
            return Err((
                format!("/given/buildings/{i}/level"),
                format!("`{}` has {} levels", b.building, def.def.levels.len()),
            ));
        }
        let id = s.next_building_id;
        s.next_building_id += 1;
        s.buildings.push(crate::state::Building::completed(id, &b.building, b.level, b.x, b.y, now));
    }
    for (id, level) in &g.upgrade {
        let Some(b) = id.parse::<u32>().ok().and_then(|n| s.buildings.iter_mut().find(|b| b.id == n)) else {
            return Err((format!("/given/upgrade/{id}"), format!("no building with id {id}")));
        };
        let max = title.building(&b.building).map_or(0, |d| d.def.levels.len());
        if *level as usize > max {
            return Err((format!("/given/upgrade/{id}"), format!("`{}` has {max} levels", b.building)));
        }
        b.level = *level;
    }
    for (r, n) in &g.research {
        if title.research_type(r).is_none() {
            return bad(format!("/given/research/{r}"), IdKind::Research, r);
        }
        s.research.insert(r.clone(), *n);
    }
    for (u, n) in &g.units {
        if title.unit(u).is_none() {
            return bad(format!("/given/units/{u}"), IdKind::Unit, u);
        }
        *s.units.entry(u.clone()).or_default() += n;
    }
    for (it, n) in &g.items {
        if title.item(it).is_none() {
            return bad(format!("/given/items/{it}"), IdKind::Item, it);
        }
        *s.items.entry(it.clone()).or_default() += n;
    }
    s.flags.extend(g.flags.iter().cloned());
    s.xp += g.xp;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    advance: Option<i64>,
    #[serde(default)]
    login: Option<bool>,
    #[serde(default, rename = "do")]
    action: Option<Value>,
    #[serde(default)]
    expect_error: Option<String>,
    #[serde(default)]
    expect: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    check: Option<String>,
}

/// The outcome of one scenario file.
#[derive(Debug)]
pub struct Outcome {
    pub file: String,
    /// Steps that ran and passed.
    pub steps_passed: usize,
    /// Empty when the scenario passed.
    pub failures: Vec<Diagnostic>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every `tests/*.json` of a title's files.
pub fn run_all(title: &Title, files: &crate::TitleFiles) -> Vec<Outcome> {
    files
        .iter()
        .filter(|(p, _)| p.starts_with("tests/") && p.ends_with(".json"))
        .map(|(p, text)| run(title, p, text))
        .collect()
}

/// Runs one scenario file.
pub fn run(title: &Title, file: &str, text: &str) -> Outcome {
    let map = SourceMap::new(text);
    let fail = |pointer: &str, message: String, help: Option<String>| {
        let mut d = Diagnostic::error("scenario", file, message).pointer(pointer).help(help);
        if let Some((l, c, len)) = map.locate(pointer, false) {
            d = d.at(l, c, len);
        }
        d
    };
    let mut out = Outcome { file: file.to_string(), steps_passed: 0, failures: Vec::new() };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.failures.push(Diagnostic::error("json", file, format!("invalid JSON: {e}")).at(
                e.line().max(1),
                e.column().max(1),
                1,
            ));
            return out;
        }
    };
    let violations = schema::validate(FileKind::Scenario, &value);
    if !violations.is_empty() {
        for v in violations {
            out.failures.push(fail(&v.pointer, v.message, None));
        }
        return out;
    }
    let sc: Scenario = match serde_json::from_value(value) {
        Ok(s) => s,
        Err(e) => {
            out.failures.push(fail("", format!("not a scenario: {e}"), None));
            return out;
        }
    };
    let mut now = match &sc.start_time {
        Some(t) => match crate::time::parse_utc(t) {
            Some(ms) => ms,
            None => {
                out.failures.push(fail("/start_time", format!("`{t}` is not a real date and time"), None));
                return out;
            }
        },
        None => DEFAULT_START_MS,
    };
    let mut rng = Rng::new(sc.seed.unwrap_or(1));
    let mut state = rules::new_player(title, now);
    if let Some(g) = &sc.given {
        if let Err((pointer, message)) = apply_given(title, &mut state, g, now) {
            out.failures.push(fail(&pointer, message, None));
            return out;
        }
    }
    for (i, step) in sc.steps.iter().enumerate() {
        let at = |k: &str| format!("/steps/{i}/{k}");
        if let Some(secs) = step.advance {
            now += secs * 1000;
            rules::advance(title, &mut state, now, &mut rng);
        }
        if step.login == Some(true) {
            rules::login(title, &mut state, now, &mut rng);
        }
        if let Some(code) = &step.expect_error {
            if !error_codes().any(|c| c == code) {
                out.failures.push(fail(
                    &at("expect_error"),
                    format!("`{code}` is not an error code"),
                    did_you_mean(code, error_codes()),
                ));
                return out;
            }
            if step.action.is_none() {
                out.failures.push(fail(
                    &at("expect_error"),
                    "expect_error needs a `do` action in the same step".into(),
                    None,
                ));
                return out;
            }
        }
        if let Some(a) = &step.action {
            let action: Action = match serde_json::from_value(a.clone()) {
                Ok(a) => a,
                Err(e) => {
                    out.failures.push(fail(&at("do"), format!("not a valid action: {e}"), None));
                    return out;
                }
            };
            let (before, rng_before) = (state.clone(), rng.clone());
            match (rules::apply(title, &mut state, &action, now, &mut rng), &step.expect_error) {
                (Ok(_), None) => {}
                (Ok(_), Some(code)) => {
                    out.failures.push(fail(
                        &at("do"),
                        format!("expected the action to fail with {code}, it succeeded"),
                        None,
                    ));
                    return out;
                }
                (Err(e), None) => {
                    out.failures.push(fail(
                        &at("do"),
                        format!("action failed: {} ({})", e.message, e.code.as_str()),
                        None,
                    ));
                    return out;
                }
                (Err(e), Some(code)) if e.code.as_str() != code => {
                    out.failures.push(fail(
                        &at("expect_error"),
                        format!("expected error {code}, got {}: {}", e.code.as_str(), e.message),
                        None,
                    ));
                    return out;
                }
                (Err(_), Some(_)) => {
                    // A refused action must leave the state as advancing the
                    // clock alone would: anything else is an engine bug.
                    let mut advanced = before;
                    rules::advance(title, &mut advanced, now, &mut rng_before.clone());
                    if advanced != state {
                        out.failures.push(fail(
                            &at("do"),
                            "the refused action changed the player's state".into(),
                            None,
                        ));
                        return out;
                    }
                }
            }
        }
        if let Some(expect) = &step.expect {
            let mut actual = serde_json::to_value(&state).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut actual {
                // Tests written before player format 5 read the one running
                // research at `/research_active`: still the first one, or null.
                let first = state.research_running.first().map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
                fields.insert("research_active".into(), first.unwrap_or(Value::Null));
            }
            for (pointer, want) in expect {
                let got = actual.pointer(pointer).cloned();
                let ok = match (&got, want) {
                    (None, Value::Null) => true,
                    (Some(g), w) => g == w,
                    (None, _) => false,
                };
                if !ok {
                    let got = got.map_or("nothing".to_string(), |g| g.to_string());
                    let key = format!("{}/{}", at("expect"), crate::spans::escape_segment(pointer));
                    out.failures.push(fail(&key, format!("expected {pointer} to be {want}, it is {got}"), None));
                }
            }
            if !out.failures.is_empty() {
                return out;
            }
        }
        if let Some(src) = &step.check {
            let expr = match title.sandbox.compile_expr(src) {
                Ok(e) => e,
                Err(e) => {
                    out.failures.push(fail(&at("check"), format!("in expression: {}", e.message), None));
                    return out;
                }
            };
            let ctx = crate::view::ctx(title, &state, now, 0);
            match title.sandbox.eval_bool(&expr, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    out.failures.push(fail(&at("check"), format!("check is false: {src}"), None));
                    return out;
                }
                Err(e) => {
                    out.failures.push(fail(&at("check"), format!("check failed: {}", e.with_position()), None));
                    return out;
                }
            }
        }
        out.steps_passed += 1;
    }
    out
}
