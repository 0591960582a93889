//! Generated sections of `docs/protocol.md` and `docs/configuration.md`
//! (error codes, actions, events, configuration options), so the docs cannot drift from the
//! code; a test compares and `UPDATE_GOLDEN=1` rewrites.

use crate::config::{Config, ENV_VARS};
use crate::protocol::SERVER_CODES;

/// `(marker, content)` for the protocol document.
pub fn protocol_sections() -> Vec<(&'static str, String)> {
    let mut server = String::from("| code | HTTP status | meaning |\n|---|---|---|\n");
    for (_, code, status, meaning) in SERVER_CODES {
        server.push_str(&format!("| `{code}` | {status} | {meaning} |\n"));
    }
    let mut rules = String::from("| code | meaning |\n|---|---|\n");
    for (code, meaning) in citadel_runtime::rules::ERROR_CODE_DOCS {
        rules.push_str(&format!("| `{code}` | {meaning} |\n"));
    }
    let mut actions = String::from("| action | what it does |\n|---|---|\n");
    for (name, doc) in citadel_runtime::rules::ACTION_DOCS {
        actions.push_str(&format!("| `{name}` | {} |\n", doc.trim()));
    }
    let mut events = String::from("| event | meaning |\n|---|---|\n");
    for (name, doc) in citadel_runtime::rules::EVENT_DOCS {
        events.push_str(&format!("| `{name}` | {} |\n", doc.trim()));
    }
    vec![("server-codes", server), ("rules-codes", rules), ("actions", actions), ("events", events)]
}

/// `(marker, content)` for the configuration document: every option with
/// its default, taken from `Config::default()` itself.
pub fn configuration_sections() -> Vec<(&'static str, String)> {
    let defaults = toml::to_string(&Config::default()).unwrap_or_default();
    let mut env = String::from("| variable | option |\n|---|---|\n");
    for (var, option) in ENV_VARS {
        env.push_str(&format!("| `{var}` | `{option}` |\n"));
    }
    vec![("defaults", format!("```toml\n{defaults}```\n")), ("env", env)]
}

/// Replaces the text between `<!-- generated:NAME -->` and `<!-- end:NAME -->`.
pub fn fill(doc: &str, sections: &[(&'static str, String)]) -> String {
    let mut out = doc.to_string();
    for (name, content) in sections {
        let (open, close) = (format!("<!-- generated:{name} -->\n"), format!("<!-- end:{name} -->"));
        if let (Some(a), Some(b)) = (out.find(&open), out.find(&close)) {
            if a < b {
                out.replace_range(a + open.len()..b, content);
            }
        }
    }
    out
}
