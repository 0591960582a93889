//! The title loader never panics, whatever the files hold: random edits of
//! a real title and random bytes give diagnostics, never a crash.

use citadel_runtime::{load_files, TitleFiles};
use citadel_tests::{mini_files, root};
use proptest::prelude::*;

fn fort() -> TitleFiles {
    citadel_runtime::read_dir(&root().join("tests/fixtures/fort")).0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Replace a span of one file with random text.
    #[test]
    fn random_splices_never_panic(which in 0usize..64, at in 0.0f64..1.0, len in 0usize..40, junk in ".{0,40}") {
        let mut files = if which % 2 == 0 { mini_files() } else { fort() };
        let keys: Vec<String> = files.keys().cloned().collect();
        let key = &keys[which % keys.len()];
        let text = files[key].clone();
        let mut start = ((text.len() as f64) * at) as usize;
        while !text.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        files.insert(key.clone(), format!("{}{}{}", &text[..start], junk, &text[end..]));
        let (title, diags) = load_files("mini", &files);
        prop_assert!(title.is_some() || !diags.is_empty());
    }

    /// Swap a JSON value somewhere for another JSON value of any type.
    #[test]
    fn random_value_swaps_never_panic(which in 0usize..8, pick in 0usize..10_000, value in prop_oneof![
        Just(serde_json::json!(null)), Just(serde_json::json!(-1)), Just(serde_json::json!(1e300)),
        Just(serde_json::json!("")), Just(serde_json::json!("level(\"hq\") >=")), Just(serde_json::json!([])),
        Just(serde_json::json!({})), Just(serde_json::json!(u64::MAX)), Just(serde_json::json!(true)),
    ]) {
        let mut files = mini_files();
        let json_keys: Vec<String> = files.keys().filter(|k| k.ends_with(".json") && !k.starts_with("tests/")).cloned().collect();
        let key = &json_keys[which % json_keys.len()];
        let mut doc: serde_json::Value = serde_json::from_str(&files[key]).unwrap();
        let mut pointers = Vec::new();
        collect(&doc, String::new(), &mut pointers);
        let p = &pointers[pick % pointers.len()];
        if let Some(slot) = doc.pointer_mut(p) { *slot = value; }
        files.insert(key.clone(), serde_json::to_string_pretty(&doc).unwrap());
        let (title, diags) = load_files("mini", &files);
        prop_assert!(title.is_some() || !diags.is_empty());
    }

    /// Arbitrary bytes as any file.
    #[test]
    fn random_text_files_never_panic(which in 0usize..16, text in ".{0,200}") {
        let mut files = mini_files();
        let keys: Vec<String> = files.keys().cloned().collect();
        files.insert(keys[which % keys.len()].clone(), text);
        let _ = load_files("mini", &files);
    }
}

fn collect(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Object(m) => {
            m.iter().for_each(|(k, x)| collect(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| collect(x, format!("{at}/{i}"), out)),
        _ => {}
    }
}
