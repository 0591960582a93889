//! Requirements in words, for players: `level("barracks") >= 3 &&
//! has_research("masonry", 2)` reads "needs Barracks level 3 and Masonry
//! level 2", with the names of the title's data. A requirement that is not
//! a conjunction of simple conditions (`||`, arithmetic) reads as its text.

use citadel_dsl::analyze::{expr_needs, Need};
use citadel_dsl::Expr;

use crate::title::Title;

/// What a requirement asks for, in words, beginning with "needs".
pub fn requirement_text(title: &Title, expr: &Expr) -> String {
    format!("needs {}", conditions_text(title, expr))
}

/// The conditions of an expression in words ("Barracks level 2 and
/// Academy"), or its source when it is not a conjunction of simple ones.
pub fn conditions_text(title: &Title, expr: &Expr) -> String {
    match expr_needs(expr) {
        Some(needs) if !needs.is_empty() => {
            let parts: Vec<String> = needs.iter().map(|n| condition(title, n)).collect();
            parts.join(" and ")
        }
        _ => expr.source().trim().to_string(),
    }
}

/// The display name of an id of the kind `function` queries.
fn name(title: &Title, function: &str, id: &str) -> Option<String> {
    let name = match function {
        "level" | "count" | "count_at_least" => &title.building(id)?.def.name,
        "has_research" | "research_level" => &title.research_type(id)?.def.name,
        "resource" | "cap" => &title.resource(id)?.name,
        "unit_count" => &title.unit(id)?.def.name,
        "item_count" => &title.item(id)?.def.name,
        "quest_claimed" => &title.quest(id)?.def.name,
        "event_active" => &title.event(id)?.def.name,
        "modifier_stacks" | "modifier_seconds_left" => &title.modifier(id)?.name,
        "capacity_provided" | "capacity_drawn" => &title.capacity(id)?.name,
        _ => return None,
    };
    Some(name.clone())
}

/// The least value a comparison allows, when it is a lower bound.
fn at_least(n: &Need) -> Option<i64> {
    match (n.op.as_deref(), n.value) {
        (Some(">="), Some(v)) => Some(v),
        (Some(">"), Some(v)) => Some(v.saturating_add(1)),
        _ => None,
    }
}

/// `subject` compared as the condition says, for comparisons that are not
/// a plain lower bound.
fn compared(subject: &str, n: &Need) -> String {
    let v = n.value.unwrap_or(0);
    match n.op.as_deref() {
        Some("==") => format!("{subject} exactly {v}"),
        Some("!=") => format!("{subject} other than {v}"),
        Some("<") => format!("{subject} below {v}"),
        Some("<=") => format!("{subject} at most {v}"),
        Some(">") => format!("{subject} above {v}"),
        Some(">=") => format!("{subject} at least {v}"),
        _ => subject.to_string(),
    }
}

fn condition(title: &Title, n: &Need) -> String {
    let id = n.id.as_deref().unwrap_or_default();
    let named = name(title, &n.function, id).unwrap_or_else(|| id.to_string());
    let not = if n.negated { "no " } else { "" };
    match (n.function.as_str(), at_least(n)) {
        ("level" | "research_level", Some(v)) if v <= 1 => named,
        ("level" | "research_level", Some(v)) => format!("{named} level {v}"),
        ("level" | "research_level", None) if n.op.is_some() => compared(&format!("{named} level"), n),
        ("has_research", _) => {
            let level = n.numbers.first().copied().unwrap_or(1);
            let what = if level <= 1 { named } else { format!("{named} level {level}") };
            format!("{not}{what}")
        }
        ("quest_claimed", _) if n.op.is_none() => {
            if n.negated {
                format!("the quest {named} not yet claimed")
            } else {
                format!("the quest {named} claimed")
            }
        }
        ("event_active", _) if n.op.is_none() => {
            if n.negated {
                format!("{named} not running")
            } else {
                format!("{named} running")
            }
        }
        ("flag", _) if n.op.is_none() => {
            if n.negated {
                format!("`{id}` not set")
            } else {
                format!("`{id}` set")
            }
        }
        ("player_level", Some(v)) => format!("player level {v}"),
        ("resource" | "unit_count" | "item_count" | "count", Some(v)) => format!("{v} {named}"),
        ("count_at_least", Some(v)) => {
            let level = n.numbers.first().copied().unwrap_or(1);
            format!("{v} {named} at level {level} or higher")
        }
        _ => {
            // Any other query: its call, compared as written.
            let mut args: Vec<String> = n.id.iter().map(|i| format!("\"{i}\"")).collect();
            args.extend(n.numbers.iter().map(i64::to_string));
            let call = format!("{}{}({})", if n.negated { "!" } else { "" }, n.function, args.join(", "));
            compared(&call, n)
        }
    }
}
