//! A strict reader of unified diffs (`diff -ruN` or `git diff` output), for
//! the invalid-title corpus: each case is the `mini` fixture plus the
//! change that breaks it. Strict on purpose: every context and removed
//! line must match the fixture at the stated line, with no fuzz and no
//! offset, so a case whose fixture has drifted fails loudly instead of
//! testing something else.

use std::collections::BTreeMap;

/// One file's change: the whole new text, or `None` when the file goes.
pub(crate) type Changes = BTreeMap<String, Option<String>>;

/// Applies `patch` to `files` (path relative to the title folder → text).
/// Paths in the patch are `a/<path>` and `b/<path>` (any first folder); a
/// file that does not exist is created, and a file whose new side is empty
/// (`+0,0`) removed.
pub(crate) fn apply(files: &BTreeMap<String, String>, patch: &str) -> Result<Changes, String> {
    let mut out = Changes::new();
    let mut lines = patch.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(old) = line.strip_prefix("--- ") else { continue };
        let new =
            lines.next().and_then(|l| l.strip_prefix("+++ ")).ok_or(format!("`{line}` is not followed by `+++`"))?;
        let path = in_folder(new).or_else(|| in_folder(old)).ok_or(format!("no path in `{new}`"))?;
        let before = files.get(&path).map(String::as_str).unwrap_or("");
        let source: Vec<&str> = before.lines().collect();
        let mut result: Vec<String> = Vec::new();
        let mut at = 0; // lines of `source` copied so far
        let mut removed = false;
        while let Some(header) = lines.peek().copied().filter(|l| l.starts_with("@@ ")) {
            let (start, old_len, new_len) = hunk_header(header)?;
            lines.next();
            // `-0,0` (a new file) starts before line 1.
            let start = start.saturating_sub(1);
            if start < at || start > source.len() {
                return Err(format!("{path}: hunk `{header}` is out of order or past the end"));
            }
            result.extend(source[at..start].iter().map(|s| s.to_string()));
            at = start;
            removed |= new_len == 0;
            // The header's counts say where the hunk ends.
            let (mut old_left, mut new_left) = (old_len, new_len);
            while old_left + new_left > 0 {
                let body = lines.next().ok_or(format!("{path}: hunk `{header}` ends early"))?;
                if body.starts_with('\\') {
                    continue; // "\ No newline at end of file"
                }
                // An empty line is an empty context line (some editors strip the space).
                let (mark, text) = match body.as_bytes().first() {
                    Some(b'+' | b'-' | b' ') => (body.as_bytes()[0], &body[1..]),
                    None => (b' ', ""),
                    Some(_) => return Err(format!("{path}: `{body}` is not a diff line")),
                };
                if mark == b'+' {
                    new_left = new_left.checked_sub(1).ok_or(format!("{path}: hunk `{header}` adds too many lines"))?;
                    result.push(text.to_string());
                    continue;
                }
                old_left = old_left.checked_sub(1).ok_or(format!("{path}: hunk `{header}` has too many lines"))?;
                let found = source.get(at).copied();
                if found != Some(text) {
                    return Err(format!(
                        "{path}:{}: the patch expects `{text}` but the fixture has `{}`",
                        at + 1,
                        found.unwrap_or("<end of file>")
                    ));
                }
                at += 1;
                if mark == b' ' {
                    new_left = new_left.checked_sub(1).ok_or(format!("{path}: hunk `{header}` has too many lines"))?;
                    result.push(text.to_string());
                }
            }
            // `diff -ruN` puts its command line before the next file.
            while lines.peek().is_some_and(|l| l.starts_with("diff ") || l.starts_with("index ")) {
                lines.next();
            }
        }
        if removed && result.is_empty() {
            out.insert(path, None);
            continue;
        }
        result.extend(source[at..].iter().map(|s| s.to_string()));
        let mut text = result.join("\n");
        if before.ends_with('\n') || before.is_empty() {
            text.push('\n');
        }
        out.insert(path, Some(text));
    }
    if out.is_empty() {
        return Err("the patch changes no file".into());
    }
    Ok(out)
}

/// The path in a `---`/`+++` line without its first folder (`a/`, `b/`,
/// or the folders `diff -ruN` compared), like `patch -p1`; `None` for
/// `/dev/null`.
fn in_folder(header: &str) -> Option<String> {
    let path = header.split('\t').next()?.trim_end();
    if path == "/dev/null" {
        return None;
    }
    path.split_once('/').map(|(_, rest)| rest.to_string())
}

/// `@@ -l,n +l,n @@` → (old start line, old length, new length); a count
/// left out is 1.
fn hunk_header(header: &str) -> Result<(usize, usize, usize), String> {
    let bad = || format!("`{header}` is not a hunk header");
    let mut parts = header.split_whitespace().skip(1);
    let old = parts.next().and_then(|p| p.strip_prefix('-')).ok_or_else(bad)?;
    let new = parts.next().and_then(|p| p.strip_prefix('+')).ok_or_else(bad)?;
    let range = |r: &str| -> Result<(usize, usize), String> {
        let (start, len) = r.split_once(',').unwrap_or((r, "1"));
        Ok((start.parse().map_err(|_| bad())?, len.parse().map_err(|_| bad())?))
    };
    let ((start, old_len), (_, new_len)) = (range(old)?, range(new)?);
    Ok((start, old_len, new_len))
}

#[test]
fn applies_a_change_and_refuses_one_that_does_not_match() {
    let files = BTreeMap::from([("a.json".to_string(), "one\ntwo\nthree\n".to_string())]);
    let patch = "--- a/a.json\n+++ b/a.json\n@@ -1,3 +1,3 @@\n one\n-two\n+deux\n three\n";
    let got = apply(&files, patch).unwrap();
    assert_eq!(got["a.json"].as_deref(), Some("one\ndeux\nthree\n"));
    let drifted = BTreeMap::from([("a.json".to_string(), "one\nTWO\nthree\n".to_string())]);
    assert!(apply(&drifted, patch).unwrap_err().contains("a.json:2"), "a drifted fixture is refused");
    let gone = "--- a/a.json\n+++ b/a.json\n@@ -1,3 +0,0 @@\n-one\n-two\n-three\n";
    assert_eq!(apply(&files, gone).unwrap()["a.json"], None);
    let created = "diff -ruN a/b.rhai b/b.rhai\n--- a/b.rhai\n+++ b/b.rhai\n@@ -0,0 +1,2 @@\n+fn f() {\n+}\n";
    assert_eq!(apply(&files, created).unwrap()["b.rhai"].as_deref(), Some("fn f() {\n}\n"));
    // Two files, `diff -ruN` style, with a removed line that looks like a header.
    let files = BTreeMap::from([
        ("a.json".to_string(), "one\n-- two\nthree\n".to_string()),
        ("c.json".to_string(), "x\n".to_string()),
    ]);
    let both = "diff -ruN m/a.json c/a.json\n--- m/a.json\t2026-12-01\n+++ c/a.json\t2026-12-01\n@@ -1,3 +1,2 @@\n one\n--- two\n three\ndiff -ruN m/c.json c/c.json\n--- m/c.json\n+++ c/c.json\n@@ -1 +1 @@\n-x\n+y\n";
    let got = apply(&files, both).unwrap();
    assert_eq!(got["a.json"].as_deref(), Some("one\nthree\n"));
    assert_eq!(got["c.json"].as_deref(), Some("y\n"));
}
