//! What a client is told of a title: its data as designers wrote it, less
//! what only the server runs (scripts, hooks, the functions behind custom
//! actions), with every requirement also in words (`requires_text`), so that
//! a generic client can show any title from its data alone.

use serde_json::{json, Map, Value};

use crate::title::Title;
use crate::words::requirement_text;

fn value<T: serde::Serialize>(v: &T) -> Value {
    // The format types are plain data: serializing them cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `v` without its field `key` (a script function only the server calls).
fn without(mut v: Value, key: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
    v
}

/// Sets `requires_text` beside `requires` in `v` when there is a requirement.
fn with_text(title: &Title, mut v: Value, expr: Option<&citadel_dsl::Expr>) -> Value {
    if let (Some(e), Some(o)) = (expr, v.as_object_mut()) {
        o.insert("requires_text".into(), requirement_text(title, e).into());
    }
    v
}

/// A kind with levels (a building, a research), each level's requirement
/// also in words.
fn with_level_texts(title: &Title, def: &impl serde::Serialize, requires: &[Option<citadel_dsl::Expr>]) -> Value {
    let mut v = value(def);
    if let Some(levels) = v.get_mut("levels").and_then(Value::as_array_mut) {
        for (l, e) in levels.iter_mut().zip(requires) {
            *l = with_text(title, l.take(), e.as_ref());
        }
    }
    v
}

/// The shared world's settings (map, raids, clans, season), less the raid
/// formulas and script functions only the server runs.
fn world(w: &crate::format::WorldDef) -> Value {
    let mut v = value(w);
    if let Some(raids) = v.get_mut("raids").and_then(Value::as_object_mut) {
        let decided = raids.get("resolve").is_some_and(|r| !r.is_null());
        raids.retain(|k, _| !matches!(k.as_str(), "check" | "resolve" | "lootable"));
        // Whether the server fights the battles (`raid_end` sends units).
        raids.insert("server_decides".into(), decided.into());
    }
    v
}

/// A quest, with its requirement and its goal in words (`goal_text`).
fn quest(title: &Title, q: &crate::title::Quest) -> Value {
    let mut v = with_text(title, value(&q.def), q.requires.as_ref());
    if let Some(o) = v.as_object_mut() {
        o.insert("goal_text".into(), crate::words::conditions_text(title, &q.goal).into());
    }
    v
}

/// The client's view of a title (served as `GET /v1/{title}/data/{version}`).
pub fn client_view(title: &Title) -> Value {
    let m = &title.manifest;
    let buildings: Vec<Value> = title.buildings.iter().map(|b| with_level_texts(title, &b.def, &b.requires)).collect();
    let research: Vec<Value> = title.research.iter().map(|r| with_level_texts(title, &r.def, &r.requires)).collect();
    let actions: Map<String, Value> = title
        .actions
        .iter()
        .map(|(id, a)| {
            let args: Map<String, Value> = a
                .def
                .args
                .iter()
                .map(|(n, d)| {
                    let mut v = value(d);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("accepts".into(), crate::args::accepts(d).into());
                    }
                    (n.clone(), v)
                })
                .collect();
            let v = json!({ "name": a.def.name, "description": a.def.description, "requires": a.def.requires, "args": args });
            (id.clone(), with_text(title, v, a.requires.as_ref()))
        })
        .collect();
    json!({
        "id": title.id(),
        "content_version": title.content_version,
        "name": m.name,
        "description": m.description,
        "grid": value(&m.grid),
        "premium_resource": m.premium_resource,
        "headquarters": m.headquarters,
        "builders": m.builders,
        "training_queue": m.training_queue,
        "work": value(&m.work),
        "daily": value(&m.daily),
        "cancel_refund_percent": m.cancel_refund_percent,
        "speed_up_seconds_per_premium": m.speed_up_seconds_per_premium,
        "xp_levels": m.xp_levels,
        "scores": m.scores,
        "world": world(&m.world),
        "actions": actions,
        "resources": value(&title.resources),
        "capacities": value(&title.capacities),
        "buildings": buildings,
        "units": title.units.iter().map(|u| with_text(title, value(&u.def), u.requires.as_ref())).collect::<Vec<_>>(),
        "research": research,
        "items": title.items.iter().map(|i| without(value(&i.def), "hook")).collect::<Vec<_>>(),
        "offers": title.offers.iter().map(|o| with_text(title, value(&o.def), o.requires.as_ref())).collect::<Vec<_>>(),
        "products": title.products.iter().map(value).collect::<Vec<_>>(),
        "quests": title.quests.iter().map(|q| quest(title, q)).collect::<Vec<_>>(),
        "loot": value(&title.loot),
        "modifiers": value(&title.modifiers),
        "jobs": title.jobs.iter().map(|j| with_text(title, value(&j.def), j.requires.as_ref())).collect::<Vec<_>>(),
        "achievements": value(&title.achievements),
        "events": title.events.iter().map(|e| value(&e.def)).collect::<Vec<_>>(),
    })
}
