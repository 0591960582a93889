//! Behaviour of the sandbox as a title author and a server operator rely on
//! it: hostile scripts end in clear errors, expressions stay pure, imports
//! stay inside the title.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel_dsl::{Ctx, Dynamic, Effect, EvalErrorKind, Sandbox, StateView};

struct Fixed;

impl StateView for Fixed {
    fn level(&self, b: &str) -> Option<i64> {
        match b {
            "hq" => Some(3),
            "mine" => Some(1),
            _ => None,
        }
    }
    fn count(&self, b: &str) -> Option<i64> {
        self.level(b).map(|_| 2)
    }
    fn count_at_least(&self, b: &str, l: i64) -> Option<i64> {
        self.level(b).map(|lv| i64::from(lv >= l))
    }
    fn resource(&self, r: &str) -> Option<i64> {
        (r == "gold").then_some(750)
    }
    fn cap(&self, r: &str) -> Option<i64> {
        (r == "gold").then_some(1000)
    }
    fn research_level(&self, r: &str) -> Option<i64> {
        (r == "masonry").then_some(2)
    }
    fn unit_count(&self, _: &str) -> Option<i64> {
        None
    }
    fn item_count(&self, _: &str) -> Option<i64> {
        None
    }
    fn quest_claimed(&self, _: &str) -> Option<bool> {
        None
    }
    fn player_level(&self) -> i64 {
        4
    }
    fn xp(&self) -> i64 {
        120
    }
    fn flag(&self, f: &str) -> bool {
        f == "tutorial_done"
    }
    fn score(&self, _: &str) -> i64 {
        0
    }
    fn now_ms(&self) -> i64 {
        1_700_000_000_123
    }
    fn event_active(&self, e: &str) -> Option<bool> {
        (e == "harvest").then_some(true)
    }
    fn modifier_stacks(&self, m: &str) -> Option<i64> {
        (m == "blessing").then_some(2)
    }
    fn modifier_seconds_left(&self, m: &str) -> Option<i64> {
        (m == "blessing").then_some(90)
    }
    fn capacity(&self, c: &str) -> Option<(i64, i64)> {
        (c == "power").then_some((120, 150))
    }
    fn counter(&self, c: &str) -> i64 {
        if c == "logins" {
            7
        } else {
            0
        }
    }
    fn daily_streak(&self) -> i64 {
        3
    }
}

fn ctx() -> Ctx {
    Ctx::new(Arc::new(Fixed), 42)
}

fn sandbox(scripts: &[(&str, &str)]) -> Sandbox {
    Sandbox::new(scripts.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect::<BTreeMap<_, _>>())
}

/// Runs `f` on a thread with the default 2 MiB stack (what test and tokio
/// worker threads get) and fails if it does not finish in time.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let start = Instant::now();
    let handle = std::thread::Builder::new().stack_size(2 * 1024 * 1024).spawn(f).unwrap();
    let out = handle.join().expect("evaluation must not panic");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "evaluation took {took:?}");
    (out, took)
}

#[test]
fn requirement_reads_player_state() {
    let sb = sandbox(&[]);
    let e = sb.compile_expr(r#"level("hq") >= 3 && resource("gold") >= 500 && has_research("masonry", 2)"#).unwrap();
    assert!(sb.eval_bool(&e, &ctx()).unwrap());
    let e = sb.compile_expr(r#"resource("gold") > cap("gold")"#).unwrap();
    assert!(!sb.eval_bool(&e, &ctx()).unwrap());
    let e = sb.compile_expr(r#"flag("tutorial_done") && player_level() == 4 && now() == 1700000000"#).unwrap();
    assert!(sb.eval_bool(&e, &ctx()).unwrap());
}

#[test]
fn formula_evaluates_to_integer() {
    let sb = sandbox(&[]);
    let e = sb.compile_expr(r#"100 * level("hq") + 5"#).unwrap();
    assert_eq!(sb.eval_int(&e, &ctx()).unwrap(), 305);
    let err = sb.eval_bool(&e, &ctx()).unwrap_err();
    assert_eq!(err.kind, EvalErrorKind::WrongType);
}

#[test]
fn unknown_id_at_run_time_is_an_error_naming_it() {
    let sb = sandbox(&[]);
    let e = sb.compile_expr(r#"level("castle") > 0"#).unwrap();
    let err = sb.eval_bool(&e, &ctx()).unwrap_err();
    assert!(err.message.contains("unknown building `castle`"), "{}", err.message);
}

#[test]
fn expressions_cannot_loop_define_closures_or_use_variables() {
    let sb = sandbox(&[]);
    for src in
        ["loop { }", "while true { }", "for x in 0..10 { }", "|x| x + 1", "gold > 3", "let x = 1", r#"eval("1")"#]
    {
        let err = sb.compile_expr(src).expect_err(src);
        assert!(err.line.is_some() || !err.message.is_empty(), "{src}: {err:?}");
    }
}

#[test]
fn compile_errors_carry_line_and_column() {
    let sb = sandbox(&[]);
    let err = sb.compile_expr(r#"level("hq") >= "#).unwrap_err();
    assert_eq!(err.line, Some(1));
    assert!(err.column.is_some());
    let err = sb.compile_script("hooks", "fn on_login(e) {\n  let x = ;\n}\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err:?}");
}

#[test]
fn hook_returns_effects() {
    let sb = sandbox(&[]);
    let s = sb
        .compile_script(
            "hooks",
            r#"
            fn on_build_complete(ev) {
                let fx = [grant("gold", 10 * ev.level)];
                if ev.building == "hq" { fx.push(set_flag("hq_up")); }
                fx
            }
            fn nothing(ev) { }
            fn one(ev) { grant_xp(5) }
            "#,
        )
        .unwrap();
    let mut ev = rhai::Map::new();
    ev.insert("building".into(), "hq".into());
    ev.insert("level".into(), Dynamic::from(3_i64));
    let fx = sb.call(&s, "on_build_complete", ev.into(), &ctx()).unwrap();
    assert_eq!(
        fx,
        vec![Effect::Grant { resource: "gold".into(), amount: 30 }, Effect::SetFlag { flag: "hq_up".into() }]
    );
    assert!(sb.call(&s, "nothing", Dynamic::UNIT, &ctx()).unwrap().is_empty());
    assert_eq!(sb.call(&s, "one", Dynamic::UNIT, &ctx()).unwrap(), vec![Effect::GrantXp { amount: 5 }]);
}

#[test]
fn hook_returning_non_effects_is_an_error() {
    let sb = sandbox(&[]);
    let s = sb.compile_script("h", r#"fn a(e) { 42 } fn b(e) { [grant("gold", 1), "oops"] }"#).unwrap();
    assert_eq!(sb.call(&s, "a", Dynamic::UNIT, &ctx()).unwrap_err().kind, EvalErrorKind::WrongType);
    let err = sb.call(&s, "b", Dynamic::UNIT, &ctx()).unwrap_err();
    assert!(err.message.contains("element 1"), "{}", err.message);
}

#[test]
fn effect_amounts_must_be_positive() {
    let sb = sandbox(&[]);
    let s = sb.compile_script("h", r#"fn a(e) { grant("gold", -5) }"#).unwrap();
    let err = sb.call(&s, "a", Dynamic::UNIT, &ctx()).unwrap_err();
    assert!(err.message.contains("between 1 and"), "{}", err.message);
}

#[test]
fn random_is_deterministic_for_a_seed() {
    let sb = sandbox(&[]);
    let s = sb.compile_script("h", r#"fn a(e) { grant("gold", random(1, 1000)) }"#).unwrap();
    let a = sb.call(&s, "a", Dynamic::UNIT, &Ctx::new(Arc::new(Fixed), 7)).unwrap();
    let b = sb.call(&s, "a", Dynamic::UNIT, &Ctx::new(Arc::new(Fixed), 7)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn endless_loop_ends_with_operations_error() {
    let (err, _) = bounded(|| {
        let sb = sandbox(&[]);
        let s = sb.compile_script("h", "fn on_login(e) { loop { } }").unwrap();
        sb.call(&s, "on_login", Dynamic::UNIT, &ctx()).unwrap_err()
    });
    assert_eq!(err.kind, EvalErrorKind::TooManyOperations);
    assert!(err.message.contains("endless loop"), "{}", err.message);
}

#[test]
fn deep_recursion_ends_with_depth_error_not_abort() {
    let (err, _) = bounded(|| {
        let sb = sandbox(&[]);
        let s = sb.compile_script("h", "fn down(n) { down(n + 1) } fn on_login(e) { down(0) }").unwrap();
        sb.call(&s, "on_login", Dynamic::UNIT, &ctx()).unwrap_err()
    });
    assert_eq!(err.kind, EvalErrorKind::TooDeep, "{err:?}");
}

#[test]
fn mutual_recursion_with_big_frames_is_bounded() {
    let (err, _) = bounded(|| {
        let sb = sandbox(&[]);
        let s = sb
            .compile_script(
                "h",
                "fn a(n) { let x = [1,2,3,4,5,6,7,8]; let y = #{a: x, b: x}; b(n + 1) + y.a.len() }
                 fn b(n) { let s = \"abcdefgh\"; a(n + 1) + s.len() }
                 fn on_login(e) { a(0) }",
            )
            .unwrap();
        sb.call(&s, "on_login", Dynamic::UNIT, &ctx()).unwrap_err()
    });
    assert_eq!(err.kind, EvalErrorKind::TooDeep, "{err:?}");
}

#[test]
fn huge_string_ends_with_size_error() {
    let (err, _) = bounded(|| {
        let sb = sandbox(&[]);
        let s = sb.compile_script("h", r#"fn on_login(e) { let s = "xxxxxxxx"; loop { s += s; } }"#).unwrap();
        sb.call(&s, "on_login", Dynamic::UNIT, &ctx()).unwrap_err()
    });
    assert_eq!(err.kind, EvalErrorKind::TooLarge, "{err:?}");
}

#[test]
fn huge_array_ends_with_size_error() {
    let (err, _) = bounded(|| {
        let sb = sandbox(&[]);
        let s = sb.compile_script("h", "fn on_login(e) { let a = [1]; loop { a += a; } }").unwrap();
        sb.call(&s, "on_login", Dynamic::UNIT, &ctx()).unwrap_err()
    });
    assert_eq!(err.kind, EvalErrorKind::TooLarge, "{err:?}");
}

#[test]
fn deeply_nested_source_is_a_compile_error_not_a_crash() {
    let (res, _) = bounded(|| {
        let sb = sandbox(&[]);
        let src = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        (sb.compile_expr(&src).is_err(), sb.compile_script("h", &format!("fn f(e) {{ {src} }}")).is_err())
    });
    assert_eq!(res, (true, true));
}

#[test]
fn oversized_sources_are_refused() {
    let sb = sandbox(&[]);
    assert!(sb.compile_expr(&"1+".repeat(5000)).unwrap_err().message.contains("limit"));
    let big = format!("fn f(e) {{ \"{}\" }}", "x".repeat(300 * 1024));
    assert!(sb.compile_script("h", &big).unwrap_err().message.contains("limit"));
}

#[test]
fn imports_resolve_to_the_titles_own_scripts_only() {
    let sb = sandbox(&[
        ("util", "fn bonus(n) { n * 2 }"),
        ("hooks", r#"import "util" as u; fn f(e) { grant("gold", u::bonus(5)) }"#),
    ]);
    let hooks = sb.compile_script("hooks", r#"import "util" as u; fn f(e) { grant("gold", u::bonus(5)) }"#).unwrap();
    sb.link(&hooks).unwrap();
    assert_eq!(
        sb.call(&hooks, "f", Dynamic::UNIT, &ctx()).unwrap(),
        vec![Effect::Grant { resource: "gold".into(), amount: 10 }]
    );

    for path in ["../util", "/etc/passwd", "../../secrets/key", "util.rhai", "nope"] {
        let s = sb.compile_script("evil", &format!(r#"import "{path}" as m; fn f(e) {{ }}"#)).unwrap();
        let err = sb.link(&s).expect_err(path);
        assert!(err.message.contains("only scripts of this title's scripts/ folder"), "{path}: {}", err.message);
        let err = sb.call(&s, "f", Dynamic::UNIT, &ctx()).expect_err(path);
        assert!(err.message.contains("only scripts"), "{path}: {}", err.message);
    }
}

#[test]
fn import_cycle_is_reported() {
    let sb = sandbox(&[("a", r#"import "b" as b; fn x() { 1 }"#), ("b", r#"import "a" as a; fn y() { 2 }"#)]);
    let s = sb.compile_script("main", r#"import "a" as a; fn f(e) { }"#).unwrap();
    let err = sb.link(&s).unwrap_err();
    assert!(err.message.contains("import cycle"), "{}", err.message);
}

#[test]
fn imports_do_not_leak_between_sandboxes() {
    // Two versions of one title: the second must see its own util, not a cached one.
    let hooks = r#"import "util" as u; fn f(e) { grant("gold", u::n()) }"#;
    let v1 = sandbox(&[("util", "fn n() { 1 }")]);
    let v2 = sandbox(&[("util", "fn n() { 2 }")]);
    let s1 = v1.compile_script("hooks", hooks).unwrap();
    let s2 = v2.compile_script("hooks", hooks).unwrap();
    assert_eq!(
        v1.call(&s1, "f", Dynamic::UNIT, &ctx()).unwrap(),
        vec![Effect::Grant { resource: "gold".into(), amount: 1 }]
    );
    assert_eq!(
        v2.call(&s2, "f", Dynamic::UNIT, &ctx()).unwrap(),
        vec![Effect::Grant { resource: "gold".into(), amount: 2 }]
    );
}

#[test]
fn scripts_cannot_reach_undeclared_variables() {
    let sb = sandbox(&[]);
    assert!(sb.compile_script("h", "fn f(e) { player.gold = 5 }").is_err());
}

#[test]
fn json_args_are_bounded() {
    let deep = (0..20).fold(serde_json::json!(1), |v, _| serde_json::json!([v]));
    assert!(citadel_dsl::json_to_dynamic(&deep).is_err());
    let ok = serde_json::json!({"target": "hq", "n": 3});
    assert!(citadel_dsl::json_to_dynamic(&ok).is_ok());
}

/// Every documented signature compiles and runs with sample arguments, so
/// `docs/title-format.md` (generated from these lists) lists only real functions.
#[test]
fn every_documented_function_exists() {
    let sample = |param: &str| match param {
        "building" => "\"hq\"",
        "resource" => "\"gold\"",
        "research" => "\"masonry\"",
        "unit" | "item" | "quest" | "event" | "modifier" | "capacity" => "\"nope\"",
        "name" | "stat" | "text" => "\"x\"",
        "low" => "1",
        "high" => "6",
        _ => "1",
    };
    let sb = sandbox(&[]);
    for (sig, _) in citadel_dsl::api::QUERY_DOCS.iter().chain(citadel_dsl::api::EFFECT_DOCS) {
        let (name, params) = sig.split_once('(').unwrap();
        let args: Vec<&str> = params.trim_end_matches(')').split(", ").filter(|p| !p.is_empty()).map(sample).collect();
        let call = format!("{name}({})", args.join(", "));
        let s = sb.compile_script("h", &format!("fn f(e) {{ let v = {call}; }}")).unwrap();
        match sb.call(&s, "f", Dynamic::UNIT, &ctx()) {
            Ok(_) => {}
            // Unknown ids in the fixed view are fine: the function exists.
            Err(e) if e.message.starts_with("unknown ") => {}
            Err(e) => panic!("{call}: {}", e.message),
        }
    }
}

#[test]
fn simple_requirements_are_read_as_conditions_for_clients() {
    use citadel_dsl::analyze::expr_needs;
    let sb = sandbox(&[]);
    let needs = |src: &str| expr_needs(&sb.compile_expr(src).unwrap()).map(|n| serde_json::to_value(n).unwrap());
    assert_eq!(
        needs(r#"level("barracks") >= 3 && 2 <= level("academy")"#),
        Some(serde_json::json!([
            { "function": "level", "id": "barracks", "op": ">=", "value": 3 },
            { "function": "level", "id": "academy", "op": ">=", "value": 2 }
        ]))
    );
    assert_eq!(
        needs(r#"!flag("probe_out") && (has_research("lateen_rig", 2) && quest_claimed("first_lab"))"#),
        Some(serde_json::json!([
            { "function": "flag", "id": "probe_out", "negated": true },
            { "function": "has_research", "id": "lateen_rig", "numbers": [2] },
            { "function": "quest_claimed", "id": "first_lab" }
        ]))
    );
    assert_eq!(
        needs("player_level() > 4"),
        Some(serde_json::json!([{ "function": "player_level", "op": ">", "value": 4 }]))
    );
    // Anything else is shown as its text.
    assert_eq!(needs(r#"level("hq") >= 3 || flag("vip")"#), None);
    assert_eq!(needs(r#"resource("gold") > cap("gold") / 2"#), None);
    assert_eq!(needs(r#"level("hq") + level("barracks") >= 4"#), None);
}
