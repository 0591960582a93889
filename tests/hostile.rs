//! Hostile scripts inside a loaded title: an endless loop, unbounded
//! recursion or a runaway string in a hook fails that one action (or that
//! one hook) with a clear error within a bounded time, leaves the player's
//! state as it was, and the process carries on.

use std::time::{Duration, Instant};

use citadel_runtime::{apply, new_player, Action, ErrorCode, Event, Rng, Title};
use citadel_tests::mini_files;

const NOW: i64 = 1_767_225_600_000;

/// The mini title with its hooks script replaced.
fn title_with_hooks(script: &str) -> Title {
    let mut files = mini_files();
    files.insert("scripts/hooks.rhai".into(), script.into());
    let (title, diags) = citadel_runtime::load_files("mini", &files);
    title.unwrap_or_else(|| panic!("{diags:?}"))
}

/// Runs the custom `tithe` action (bound to `hooks::tithe`) on a fresh
/// thread with a 2 MiB stack, as a server worker would.
fn tithe(script: &'static str) -> (Result<Vec<Event>, citadel_runtime::ActionError>, bool, Duration) {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let title = title_with_hooks(script);
            let mut s = new_player(&title, NOW);
            let before = s.clone();
            let start = Instant::now();
            let r = apply(
                &title,
                &mut s,
                &Action::Custom { name: "tithe".into(), args: serde_json::Value::Null },
                NOW,
                &mut Rng::new(1),
            );
            (r, s == before, start.elapsed())
        })
        .unwrap()
        .join()
        .expect("a hostile script must not panic the thread")
}

const OK_BUILD_HOOK: &str = "fn on_build_complete(ev) { }\n";

#[test]
fn endless_loop_in_custom_action_fails_that_action_only() {
    let (r, unchanged, took) = tithe("fn on_build_complete(ev) { } fn tithe(args) { loop { } }");
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::ScriptError);
    assert!(e.message.contains("endless loop"), "{}", e.message);
    assert!(unchanged, "state must be untouched");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn unbounded_recursion_in_custom_action_fails_cleanly() {
    let (r, unchanged, _) =
        tithe("fn on_build_complete(ev) { } fn deeper(n) { deeper(n + 1) } fn tithe(args) { deeper(0) }");
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::ScriptError);
    assert!(e.message.contains("call depth"), "{}", e.message);
    assert!(unchanged);
}

#[test]
fn runaway_string_in_custom_action_fails_cleanly() {
    let (r, unchanged, _) = tithe(r#"fn on_build_complete(ev) { } fn tithe(args) { let s = "ab"; loop { s += s; } }"#);
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::ScriptError);
    assert!(e.message.contains("too large"), "{}", e.message);
    assert!(unchanged);
}

#[test]
fn invalid_effect_applies_nothing() {
    // The first effect is fine, the second spends more than the player has:
    // neither may be applied.
    let (r, unchanged, _) =
        tithe(r#"fn on_build_complete(ev) { } fn tithe(args) { [grant("gems", 5), spend("gold", 999999)] }"#);
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::ScriptError);
    assert!(e.message.contains("effect 1 (spend)"), "{}", e.message);
    assert!(unchanged);
}

#[test]
fn hostile_completion_hook_fails_the_hook_not_the_game() {
    let title = title_with_hooks("fn on_build_complete(ev) { loop { } } fn tithe(args) { }");
    let mut s = new_player(&title, NOW);
    let mut rng = Rng::new(1);
    apply(&title, &mut s, &Action::Build { building: "mine".into(), x: 1, y: 1 }, NOW, &mut rng).unwrap();
    let start = Instant::now();
    let events = citadel_runtime::advance(&title, &mut s, NOW + 10_000, &mut rng);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(events.iter().any(|e| matches!(e, Event::BuildingCompleted { level: 1, .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::HookFailed { hook, message } if hook == "on_build_complete" && message.contains("endless loop"))), "{events:?}");
    assert_eq!(s.buildings.iter().find(|b| b.building == "mine").map(|b| b.level), Some(1));
    assert!(s.scores.is_empty(), "no effect of the failed hook applied");
}

#[test]
fn self_restarting_timer_is_bounded_per_advance() {
    let mut files = mini_files();
    files.insert(
        "scripts/hooks.rhai".into(),
        format!("{OK_BUILD_HOOK} fn tithe(args) {{ start_timer(\"tick\", 1) }} fn on_timer(ev) {{ start_timer(\"tick\", 1) }}"),
    );
    let manifest = files["title.json"].replace(
        "\"on_build_complete\": \"hooks::on_build_complete\"",
        "\"on_build_complete\": \"hooks::on_build_complete\", \"on_timer\": \"hooks::on_timer\"",
    );
    files.insert("title.json".into(), manifest);
    let (title, diags) = citadel_runtime::load_files("mini", &files);
    let title = title.unwrap_or_else(|| panic!("{diags:?}"));
    let mut s = new_player(&title, NOW);
    let mut rng = Rng::new(1);
    apply(&title, &mut s, &Action::Custom { name: "tithe".into(), args: serde_json::Value::Null }, NOW, &mut rng)
        .unwrap();
    // A month offline would be 2.6 million firings; one advance does at most the limit.
    let events = citadel_runtime::advance(&title, &mut s, NOW + 30 * 86_400_000, &mut rng);
    let fired = events.iter().filter(|e| matches!(e, Event::TimerEnded { .. })).count();
    assert_eq!(fired, citadel_runtime::rules::TIMER_FIRINGS_PER_ADVANCE_MAX);
    assert_eq!(s.clock_ms, NOW + 30 * 86_400_000);
    assert_eq!(s.timers.len(), 1, "the timer is still running, to fire at the next advance");
}

#[test]
fn oversized_and_deep_action_args_are_refused() {
    let title = title_with_hooks("fn on_build_complete(ev) { } fn tithe(args) { }");
    let mut s = new_player(&title, NOW);
    let before = s.clone();
    let deep = (0..50).fold(serde_json::json!(1), |v, _| serde_json::json!([v]));
    let e =
        apply(&title, &mut s, &Action::Custom { name: "tithe".into(), args: deep }, NOW, &mut Rng::new(1)).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let huge = serde_json::json!({ "text": "x".repeat(1 << 20) });
    let e =
        apply(&title, &mut s, &Action::Custom { name: "tithe".into(), args: huge }, NOW, &mut Rng::new(1)).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(s, before);
}

#[test]
fn a_failing_effect_undoes_every_effect_of_its_hook() {
    // Every kind of effect (but units: the mini base has no housing), then
    // one that cannot apply: none may stay.
    let failing = title_with_hooks(
        r#"fn on_build_complete(ev) {
            [grant("gold", 5), grant_item("purse", 1), set_flag("seen"), clear_flag("old"),
             start_timer("t", 60), award_score("power", 9), grant_xp(3), notify("hi"), spend("gold", 1000000000)]
        }
        fn tithe(args) { }"#,
    );
    let quiet = title_with_hooks("fn on_build_complete(ev) { } fn tithe(args) { }");
    let run = |title: &Title| {
        let mut s = new_player(title, NOW);
        s.flags.insert("old".into());
        let mut rng = Rng::new(1);
        apply(title, &mut s, &Action::Build { building: "mine".into(), x: 1, y: 1 }, NOW, &mut rng).unwrap();
        let events = citadel_runtime::advance(title, &mut s, NOW + 10_000, &mut rng);
        s.content_version.clear();
        (s, events)
    };
    let (after_failure, events) = run(&failing);
    let (after_nothing, _) = run(&quiet);
    assert!(
        events.iter().any(|e| matches!(e, Event::HookFailed { message, .. } if message.contains("effect 8 (spend)"))),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Notify { .. })), "no event of the failed batch: {events:?}");
    assert_eq!(after_failure, after_nothing, "the completion applied, and nothing of its hook");
}
