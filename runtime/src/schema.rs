//! The JSON Schemas in `schemas/`, compiled once and used to validate every
//! title file before anything else reads it.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::Validator;
use serde_json::Value;

/// The kinds of JSON file a title folder holds, with their schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Title,
    Resources,
    Buildings,
    Units,
    Research,
    Store,
    Quests,
    Loot,
    Modifiers,
    Jobs,
    Achievements,
    Scenario,
}

/// Base URI of our schemas' `$id`s (a reserved domain: never fetched).
const BASE: &str = "https://citadel.invalid/schemas/v1/";

/// Every schema file, embedded at build time so the binary is self-contained.
pub const SCHEMAS: &[(&str, &str)] = &[
    ("defs.schema.json", include_str!("../../schemas/defs.schema.json")),
    ("title.schema.json", include_str!("../../schemas/title.schema.json")),
    ("resources.schema.json", include_str!("../../schemas/resources.schema.json")),
    ("buildings.schema.json", include_str!("../../schemas/buildings.schema.json")),
    ("units.schema.json", include_str!("../../schemas/units.schema.json")),
    ("research.schema.json", include_str!("../../schemas/research.schema.json")),
    ("store.schema.json", include_str!("../../schemas/store.schema.json")),
    ("quests.schema.json", include_str!("../../schemas/quests.schema.json")),
    ("loot.schema.json", include_str!("../../schemas/loot.schema.json")),
    ("modifiers.schema.json", include_str!("../../schemas/modifiers.schema.json")),
    ("jobs.schema.json", include_str!("../../schemas/jobs.schema.json")),
    ("achievements.schema.json", include_str!("../../schemas/achievements.schema.json")),
    ("scenario.schema.json", include_str!("../../schemas/scenario.schema.json")),
];

impl FileKind {
    /// The data files of a title folder, in load order.
    pub const DATA: [(FileKind, &'static str, bool); 11] = [
        (FileKind::Title, "title.json", true),
        (FileKind::Resources, "resources.json", true),
        (FileKind::Buildings, "buildings.json", true),
        (FileKind::Units, "units.json", false),
        (FileKind::Research, "research.json", false),
        (FileKind::Store, "store.json", false),
        (FileKind::Quests, "quests.json", false),
        (FileKind::Loot, "loot.json", false),
        (FileKind::Modifiers, "modifiers.json", false),
        (FileKind::Jobs, "jobs.json", false),
        (FileKind::Achievements, "achievements.json", false),
    ];

    fn schema_file(self) -> &'static str {
        match self {
            FileKind::Title => "title.schema.json",
            FileKind::Resources => "resources.schema.json",
            FileKind::Buildings => "buildings.schema.json",
            FileKind::Units => "units.schema.json",
            FileKind::Research => "research.schema.json",
            FileKind::Store => "store.schema.json",
            FileKind::Quests => "quests.schema.json",
            FileKind::Loot => "loot.schema.json",
            FileKind::Modifiers => "modifiers.schema.json",
            FileKind::Jobs => "jobs.schema.json",
            FileKind::Achievements => "achievements.schema.json",
            FileKind::Scenario => "scenario.schema.json",
        }
    }
}

/// Every embedded schema, parsed once.
fn parsed() -> &'static [(&'static str, Value)] {
    static P: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    P.get_or_init(|| {
        SCHEMAS
            .iter()
            .map(|(name, text)| {
                // The schemas are part of the build; a broken one is a bug
                // caught by every test, so failing loudly at first use is
                // right (TigerStyle: crash on corrupt startup configuration).
                let v =
                    serde_json::from_str(text).unwrap_or_else(|e| panic!("embedded schema {name} is not JSON: {e}"));
                (*name, v)
            })
            .collect()
    })
}

fn schema(name: &str) -> Option<&'static Value> {
    parsed().iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

fn parse(name: &str) -> Value {
    schema(name).cloned().unwrap_or_else(|| panic!("no embedded schema {name}"))
}

fn validators() -> &'static Vec<(FileKind, Validator)> {
    static V: OnceLock<Vec<(FileKind, Validator)>> = OnceLock::new();
    V.get_or_init(|| {
        let defs = parse("defs.schema.json");
        let registry = jsonschema::Registry::new()
            .add(format!("{BASE}defs.schema.json"), defs)
            .and_then(|r| r.prepare())
            .unwrap_or_else(|e| panic!("schema registry: {e}"));
        [
            FileKind::Title,
            FileKind::Resources,
            FileKind::Buildings,
            FileKind::Units,
            FileKind::Research,
            FileKind::Store,
            FileKind::Quests,
            FileKind::Loot,
            FileKind::Modifiers,
            FileKind::Jobs,
            FileKind::Achievements,
            FileKind::Scenario,
        ]
        .into_iter()
        .map(|k| {
            let v = jsonschema::options()
                .with_registry(&registry)
                .build(&parse(k.schema_file()))
                .unwrap_or_else(|e| panic!("schema {}: {e}", k.schema_file()));
            (k, v)
        })
        .collect()
    })
}

/// One schema violation: where (JSON pointer), whether the key itself is
/// wrong (an unexpected property), and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub at_key: bool,
    pub message: String,
    /// Known property names at that place, for "did you mean".
    pub expected_keys: Vec<String>,
    /// A "did you mean" for a misspelt value (one of an enum's values).
    pub help: Option<String>,
}

/// Every violation of `value` against the schema of `kind`.
pub fn validate(kind: FileKind, value: &Value) -> Vec<Violation> {
    let Some((_, validator)) = validators().iter().find(|(k, _)| *k == kind) else { return Vec::new() };
    let mut out = Vec::new();
    for err in validator.iter_errors(value) {
        let pointer = err.instance_path().as_str().to_string();
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let expected_keys = allowed_keys(&err, kind);
                for key in unexpected {
                    out.push(Violation {
                        pointer: format!("{pointer}/{}", crate::spans::escape_segment(key)),
                        at_key: true,
                        message: if expected_keys.is_empty() {
                            format!("unexpected property `{key}`")
                        } else {
                            format!("unexpected property `{key}`; expected one of: {}", expected_keys.join(", "))
                        },
                        expected_keys: expected_keys.clone(),
                        help: None,
                    });
                }
            }
            ValidationErrorKind::Enum { options } => {
                let values: Vec<&str> = options.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let help = err.instance().as_str().and_then(|found| crate::diagnostic::did_you_mean(found, values));
                out.push(Violation {
                    pointer,
                    at_key: false,
                    message: friendly(&err),
                    expected_keys: Vec::new(),
                    help,
                });
            }
            _ => out.push(Violation {
                pointer,
                at_key: false,
                message: friendly(&err),
                expected_keys: Vec::new(),
                help: None,
            }),
        }
    }
    out
}

/// The property names the schema allows where an unexpected one was found:
/// the `properties` beside the `additionalProperties` keyword that failed,
/// in the schema document that keyword is in (a shared definition or the
/// file's own schema).
fn allowed_keys(err: &jsonschema::ValidationError<'_>, kind: FileKind) -> Vec<String> {
    let (doc, pointer) = match err.absolute_keyword_location() {
        Some(uri) => {
            let (base, fragment) = uri.as_str().split_once('#').unwrap_or((uri.as_str(), ""));
            (base.rsplit('/').next().unwrap_or("").to_string(), fragment.replace("%24", "$"))
        }
        None => (kind.schema_file().to_string(), err.schema_path().as_str().to_string()),
    };
    let Some(parent) = pointer.strip_suffix("/additionalProperties") else { return Vec::new() };
    match schema(&doc).and_then(|s| s.pointer(&format!("{parent}/properties"))) {
        Some(Value::Object(props)) => props.keys().filter(|k| *k != "$schema").cloned().collect(),
        _ => Vec::new(),
    }
}

fn friendly(err: &jsonschema::ValidationError<'_>) -> String {
    use ValidationErrorKind as K;
    let msg = match err.kind() {
        K::Required { property } => format!("missing required property {property}"),
        K::Type { kind } => format!("expected {}, found {}", type_words(kind), json_type(err.instance())),
        K::Pattern { pattern } if pattern.contains("[a-z][a-z0-9_]{0,31}") => {
            format!("{} is not a valid id: use lowercase letters, digits and _, starting with a letter, at most 32 characters", err.instance())
        }
        K::Enum { options } => format!("{} is not one of {options}", err.instance()),
        K::Constant { expected_value } => format!("expected {expected_value}, found {}", err.instance()),
        // A field a sibling rules out (`"min": false` beside `"type": "boolean"`).
        K::FalseSchema => {
            let key = err.instance_path().as_str().rsplit('/').next().unwrap_or("").to_string();
            format!(
                "`{key}` does not go with the other fields here (docs/title-format.md says which fields go together)"
            )
        }
        K::OneOfNotValid { .. } => {
            format!("{} fits none of this field's forms (docs/title-format.md lists them)", json_type(err.instance()))
        }
        _ => lower(&err.to_string()),
    };
    msg
}

fn type_words(kind: &TypeKind) -> String {
    let word = |t: String| match t.to_lowercase().as_str() {
        "integer" => "an integer".to_string(),
        "object" => "an object".to_string(),
        "array" => "an array".to_string(),
        "string" => "a string".to_string(),
        "boolean" => "a boolean".to_string(),
        "number" => "a number".to_string(),
        other => other.to_string(),
    };
    match kind {
        TypeKind::Single(t) => word(t.to_string()),
        TypeKind::Multiple(ts) => ts.iter().map(|t| word(t.to_string())).collect::<Vec<_>>().join(" or "),
    }
}

fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("the integer {n}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn lower(s: &str) -> String {
    let s = s.trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The schema files that describe title files, in the order the reference lists them.
const REFERENCE_ORDER: &[&str] = &[
    "title.schema.json",
    "resources.schema.json",
    "buildings.schema.json",
    "units.schema.json",
    "research.schema.json",
    "store.schema.json",
    "quests.schema.json",
    "loot.schema.json",
    "modifiers.schema.json",
    "jobs.schema.json",
    "achievements.schema.json",
    "scenario.schema.json",
];

/// The field reference of `docs/title-format.md`, generated from the
/// schemas so that the docs cannot drift from them (a test compares).
pub fn reference_markdown() -> String {
    let defs = parse("defs.schema.json");
    let mut out = String::new();
    for name in REFERENCE_ORDER {
        let schema = parse(name);
        // The shared definitions and this schema's own (`#/$defs/...`).
        let mut defs = defs.clone();
        if let (Some(all), Some(own)) =
            (defs.get_mut("$defs").and_then(Value::as_object_mut), schema.get("$defs").and_then(Value::as_object))
        {
            all.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let defs = &defs;
        let title = schema.get("title").and_then(Value::as_str).unwrap_or(name);
        let description = schema.get("description").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("### `{title}`\n\n{description} Schema: `schemas/{name}`.\n\n"));
        out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
        let mut rows = Vec::new();
        fields(&schema, defs, "", &mut rows);
        for (path, ty, required, desc) in rows {
            out.push_str(&format!(
                "| `{path}` | {ty} | {} | {} |\n",
                if required { "yes" } else { "" },
                desc.replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    out
}

/// Follows a `$ref` into the shared definitions (or the same document).
fn resolve<'a>(node: &'a Value, defs: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.split_once('#').map_or("", |(_, p)| p);
            defs.pointer(ptr).map_or(node, |target| resolve(target, defs))
        }
        None => node,
    }
}

fn describe(node: &Value, defs: &Value) -> (String, String) {
    let target = resolve(node, defs);
    let desc =
        node.get("description").or_else(|| target.get("description")).and_then(Value::as_str).unwrap_or("").to_string();
    let reference = node.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()).map(str::to_string);
    let ty = if let Some(c) = target.get("const") {
        format!("`{c}`")
    } else if let Some(e) = target.get("enum").and_then(Value::as_array) {
        e.iter().map(|v| format!("`{}`", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(", ")
    } else {
        let base = target.get("type").and_then(Value::as_str).unwrap_or("any").to_string();
        let range = match (target.get("minimum"), target.get("maximum")) {
            (Some(a), Some(b)) => format!(" {a} to {b}"),
            (Some(a), None) => format!(" ≥ {a}"),
            _ => String::new(),
        };
        match (reference.as_deref(), base.as_str()) {
            (Some("id"), _) => "id".into(),
            (Some("expression"), _) => "expression".into(),
            (Some("hook_ref"), _) => "`module::function`".into(),
            (Some("timestamp"), _) => "UTC time".into(),
            (Some("cost"), _) => "map of resource id → amount".into(),
            (Some("counts"), _) => "map of id → count".into(),
            (Some("seconds"), _) => "seconds".into(),
            (Some("speed_up"), _) => "`true`, `false` or `{\"seconds_per_premium\": n}`".into(),
            (_, "array") => {
                let items = target.get("items").map(|i| describe(i, defs).0).unwrap_or_default();
                format!("array of {items}")
            }
            (_, "object")
                if target.get("properties").is_none()
                    && target.get("additionalProperties").is_some_and(Value::is_object) =>
            {
                let v = target.get("additionalProperties").map(|i| describe(i, defs).0).unwrap_or_default();
                format!("map of name → {v}")
            }
            _ => format!("{base}{range}"),
        }
    };
    (ty, desc)
}

fn fields(node: &Value, defs: &Value, path: &str, rows: &mut Vec<(String, String, bool, String)>) {
    let node = resolve(node, defs);
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (key, child) in props {
            if key == "$schema" {
                continue;
            }
            let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            let (ty, desc) = describe(child, defs);
            rows.push((p.clone(), ty, required.contains(&key.as_str()), desc));
            let target = resolve(child, defs);
            match target.get("type").and_then(Value::as_str) {
                Some("object") => {
                    fields(target, defs, &p, rows);
                    if let Some(ap) = target.get("additionalProperties").filter(|v| v.is_object()) {
                        if resolve(ap, defs).get("properties").is_some() {
                            fields(ap, defs, &format!("{p}.<name>"), rows);
                        }
                    }
                }
                Some("array") => {
                    if let Some(items) = target.get("items") {
                        if resolve(items, defs).get("properties").is_some() {
                            fields(items, defs, &format!("{p}[]"), rows);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unknown keys list what is allowed in the schema document where the
    /// failing keyword lives: a file's own schema or a shared definition.
    #[test]
    fn unexpected_properties_name_the_allowed_ones() {
        let q = serde_json::json!({"format_version": 1, "quests": [{"id": "a", "name": "A", "goal": "true", "rewards": {"resource": {}}}]});
        let v = validate(FileKind::Quests, &q);
        assert_eq!(v[0].pointer, "/quests/0/rewards/resource");
        assert_eq!(v[0].expected_keys, ["resources", "items", "units", "xp", "loot", "modifiers"]);
        let b = serde_json::json!({"format_version": 1, "buildings": [{"id": "a", "name": "A", "size": {"w": 1, "h": 1}, "max_count": [1], "levels": [{"cost": {}, "build_seconds": 1, "biuld": 2}]}]});
        let v = validate(FileKind::Buildings, &b);
        assert!(v[0].at_key && v[0].expected_keys.contains(&"build_seconds".to_string()), "{v:?}");
        let t = serde_json::json!({"format_version": 1, "titel": "x"});
        let v = validate(FileKind::Resources, &t);
        assert!(
            v.iter().any(|x| x.pointer == "/titel" && x.expected_keys == ["format_version", "resources", "capacities"]),
            "{v:?}"
        );
    }
}
