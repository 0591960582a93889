//! Custom actions' arguments (`title.json` `actions.*.args`): what a player
//! sends is checked against the declaration, and the defaults filled in,
//! before a script sees it. Messages are for players and client developers.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::diagnostic::did_you_mean;
use crate::format::ArgDef;

/// Problems named in one refusal: a request with thousands of stray keys
/// gets a short answer, not one as long as itself.
const PROBLEMS_MAX: usize = 8;

/// Characters of a refused value quoted back.
const QUOTED_CHARS_MAX: usize = 64;

fn quoted(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(QUOTED_CHARS_MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// What `def` accepts, in words: "a whole number from 100 to 10000".
pub fn accepts(def: &ArgDef) -> String {
    match def {
        ArgDef::Integer { min, max, .. } => format!("a whole number from {min} to {max}"),
        ArgDef::Boolean { .. } => "true or false".into(),
        ArgDef::Choice { one_of, .. } => {
            let quoted: Vec<String> = one_of.iter().map(|c| format!("`{c}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}

fn default(def: &ArgDef) -> Option<Value> {
    match def {
        ArgDef::Integer { default, .. } => default.map(Value::from),
        ArgDef::Boolean { default, .. } => default.map(Value::from),
        ArgDef::Choice { default, .. } => default.clone().map(Value::from),
    }
}

fn fits(def: &ArgDef, v: &Value) -> bool {
    match def {
        ArgDef::Integer { min, max, .. } => v.as_i64().is_some_and(|n| (*min..=*max).contains(&n)),
        ArgDef::Boolean { .. } => v.is_boolean(),
        ArgDef::Choice { one_of, .. } => v.as_str().is_some_and(|s| one_of.iter().any(|c| c == s)),
    }
}

/// `args` as sent for action `action`, checked against `decl`: the complete
/// map (defaults filled in), or why not. `null` is no arguments.
pub fn check(action: &str, decl: &BTreeMap<String, ArgDef>, args: &Value) -> Result<Value, String> {
    let none = Map::new();
    let sent = match args {
        Value::Null => &none,
        Value::Object(m) => m,
        _ => return Err(format!("args of `{action}` must be an object of named arguments")),
    };
    let mut errors = Vec::new();
    for name in sent.keys().filter(|n| !decl.contains_key(*n)) {
        errors.push(if decl.is_empty() {
            format!("`{action}` takes no arguments (got `{name}`)")
        } else {
            let help =
                did_you_mean(name, decl.keys().map(String::as_str)).map(|h| format!("; {h}")).unwrap_or_default();
            format!("`{name}` is not an argument of `{action}`{help}")
        });
    }
    let mut out = Map::new();
    for (name, def) in decl {
        match sent.get(name).cloned().or_else(|| default(def)) {
            None => errors.push(format!("`{name}` is missing: {}", accepts(def))),
            Some(v) if !fits(def, &v) => errors.push(format!("`{name}` must be {} (got {})", accepts(def), quoted(&v))),
            Some(v) => {
                out.insert(name.clone(), v);
            }
        }
    }
    if errors.is_empty() {
        return Ok(Value::Object(out));
    }
    let more = errors.len().saturating_sub(PROBLEMS_MAX);
    errors.truncate(PROBLEMS_MAX);
    if more > 0 {
        errors.push(format!("and {more} more"));
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decl() -> BTreeMap<String, ArgDef> {
        serde_json::from_value(json!({
            "amount": { "type": "integer", "min": 100, "max": 10000 },
            "loud": { "type": "boolean", "default": false },
            "to": { "type": "choice", "one_of": ["shrine", "well"], "default": "shrine" }
        }))
        .unwrap()
    }

    #[test]
    fn declared_arguments_are_checked_and_defaults_filled_in() {
        assert_eq!(
            check("donate", &decl(), &json!({ "amount": 500 })),
            Ok(json!({ "amount": 500, "loud": false, "to": "shrine" }))
        );
        assert_eq!(
            check("donate", &decl(), &json!({ "amount": 100, "loud": true, "to": "well" })),
            Ok(json!({ "amount": 100, "loud": true, "to": "well" }))
        );
        let e = check("donate", &decl(), &json!({ "amount": 50 })).unwrap_err();
        assert_eq!(e, "`amount` must be a whole number from 100 to 10000 (got 50)");
        let e = check("donate", &decl(), &json!({ "amount": "lots" })).unwrap_err();
        assert!(e.contains("got \"lots\""), "{e}");
        assert!(check("donate", &decl(), &json!({ "amount": 100.5 })).is_err());
        let e = check("donate", &decl(), &json!({})).unwrap_err();
        assert_eq!(e, "`amount` is missing: a whole number from 100 to 10000");
        let e = check("donate", &decl(), &json!({ "amount": 100, "to": "moon" })).unwrap_err();
        assert_eq!(e, "`to` must be one of `shrine`, `well` (got \"moon\")");
        let e = check("donate", &decl(), &json!({ "amout": 100 })).unwrap_err();
        assert!(e.starts_with("`amout` is not an argument of `donate`; did you mean `amount`?"), "{e}");
        assert!(e.contains("`amount` is missing"), "every problem is named: {e}");
        let e = check("donate", &decl(), &json!([100])).unwrap_err();
        assert_eq!(e, "args of `donate` must be an object of named arguments");
        let many: Map<String, Value> = (0..1000).map(|i| (format!("k{i}"), json!("x".repeat(1000)))).collect();
        let e = check("donate", &decl(), &Value::Object(many)).unwrap_err();
        assert!(e.len() < 1000 && e.ends_with("and 993 more"), "{e}");
        let e = check("donate", &decl(), &json!({ "amount": "y".repeat(5000) })).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn an_action_without_declared_arguments_takes_none() {
        assert_eq!(check("chest", &BTreeMap::new(), &Value::Null), Ok(json!({})));
        assert_eq!(check("chest", &BTreeMap::new(), &json!({})), Ok(json!({})));
        let e = check("chest", &BTreeMap::new(), &json!({ "amount": 1 })).unwrap_err();
        assert_eq!(e, "`chest` takes no arguments (got `amount`)");
    }
}
