//! The compiler never panics or hangs on any source text: random text and
//! random soups of Rhai tokens give a compile error or a script, and a
//! compiled script run under the sandbox ends (with a value or an error).

use std::collections::BTreeMap;

use citadel_dsl::Sandbox;
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "fn",
    "f",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "let",
    "x",
    "=",
    "+",
    "*",
    "-",
    "/",
    "%",
    "==",
    ">=",
    "&&",
    "||",
    "!",
    "if",
    "else",
    "while",
    "loop",
    "for",
    "in",
    "..",
    "return",
    "throw",
    "import",
    "\"util\"",
    "as",
    "u",
    "::",
    ";",
    ",",
    ".",
    "1",
    "0",
    "999999999999999999999",
    "1.5",
    "\"s\"",
    "`${x}`",
    "|a|",
    "switch",
    "=>",
    "_",
    "level",
    "grant",
    "\"gold\"",
    "random",
    "#{",
    "this",
    "Fn",
    "call",
    "eval",
    "e",
    "\n",
];

fn soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..80).prop_map(|t| t.join(" "))
}

fn sandbox() -> Sandbox {
    Sandbox::new(BTreeMap::from([("util".to_string(), "fn n() { 1 }".to_string())]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_text_compiles_or_errors(src in ".{0,300}") {
        let sb = sandbox();
        let _ = sb.compile_expr(&src);
        let _ = sb.compile_script("h", &src);
    }

    #[test]
    fn token_soup_compiles_or_errors_and_runs_bounded(src in soup()) {
        let sb = sandbox();
        let _ = sb.compile_expr(&src);
        if let Ok(script) = sb.compile_script("h", &format!("fn e(ev) {{ {src} }}")) {
            let _ = sb.link(&script);
            let ctx = citadel_dsl::Ctx::new(std::sync::Arc::new(NoState), 1);
            let _ = sb.call(&script, "e", citadel_dsl::Dynamic::UNIT, &ctx);
        }
    }
}

/// A state view where every id is unknown.
struct NoState;

impl citadel_dsl::StateView for NoState {
    fn level(&self, _: &str) -> Option<i64> {
        None
    }
    fn count(&self, _: &str) -> Option<i64> {
        None
    }
    fn count_at_least(&self, _: &str, _: i64) -> Option<i64> {
        None
    }
    fn resource(&self, _: &str) -> Option<i64> {
        None
    }
    fn cap(&self, _: &str) -> Option<i64> {
        None
    }
    fn research_level(&self, _: &str) -> Option<i64> {
        None
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
        1
    }
    fn xp(&self) -> i64 {
        0
    }
    fn flag(&self, _: &str) -> bool {
        false
    }
    fn score(&self, _: &str) -> i64 {
        0
    }
    fn now_ms(&self) -> i64 {
        0
    }
    fn event_active(&self, _: &str) -> Option<bool> {
        None
    }
    fn modifier_stacks(&self, _: &str) -> Option<i64> {
        None
    }
    fn modifier_seconds_left(&self, _: &str) -> Option<i64> {
        None
    }
    fn capacity(&self, _: &str) -> Option<(i64, i64)> {
        None
    }
    fn counter(&self, _: &str) -> i64 {
        0
    }
    fn daily_streak(&self) -> i64 {
        0
    }
}
