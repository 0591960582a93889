//! Sections of `docs/title-format.md` generated from the code and schemas
//! (the field reference, the builder API, the error codes). A test checks
//! that the committed document matches; `UPDATE_GOLDEN=1` rewrites it.

use citadel_dsl::api::{EFFECT_DOCS, QUERY_DOCS};

use crate::rules::ERROR_CODE_DOCS;

/// `(marker, content)` for every generated section.
pub fn generated_sections() -> Vec<(&'static str, String)> {
    let table = |rows: &[(&str, &str)], head: &str| {
        let mut s = format!("| {head} | meaning |\n|---|---|\n");
        for (a, b) in rows {
            s.push_str(&format!("| `{a}` | {b} |\n"));
        }
        s
    };
    vec![
        ("queries", table(QUERY_DOCS, "function")),
        ("effects", table(EFFECT_DOCS, "function")),
        ("error-codes", table(ERROR_CODE_DOCS, "code")),
        ("reference", crate::schema::reference_markdown()),
    ]
}

/// Replaces the text between `<!-- generated:NAME -->` and
/// `<!-- end:NAME -->` in `doc` with each section's content.
pub fn fill(doc: &str) -> String {
    let mut out = doc.to_string();
    for (name, content) in generated_sections() {
        let (open, close) = (format!("<!-- generated:{name} -->\n"), format!("<!-- end:{name} -->"));
        if let (Some(a), Some(b)) = (out.find(&open), out.find(&close)) {
            if a < b {
                out.replace_range(a + open.len()..b, &content);
            }
        }
    }
    out
}
