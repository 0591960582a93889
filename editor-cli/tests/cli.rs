//! The designer's command line as designers use it: real processes, real
//! folders, exit codes and printed diagnostics.
//!
//! The invalid-title corpus: each case is the `mini` fixture plus the change
//! that breaks it (`tests/invalid/<case>.patch`, a unified diff), and
//! `tests/invalid/<case>.txt` holds what `citadel-edit validate
//! tests/invalid/<case>` prints for the fixture so changed. The test writes
//! each case out under `target/tmp/invalid-corpus/all/` (kept, to look at or
//! validate by hand). Run with `UPDATE_GOLDEN=1` to rewrite the `.txt` files
//! after an intended change, then review the diff.

mod patch;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The corpus case `name`, written out as `<base>/tests/invalid/<name>`:
/// the `mini` fixture under the case's name (a title's id is its folder's
/// name), then the case's patch. Returns `<base>`, to run the CLI from;
/// `test` names the calling test, so that tests running at once never
/// write the same folder.
fn invalid_case(test: &str, name: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("invalid-corpus").join(test);
    let dir = base.join("tests/invalid").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let (mut files, problems) = citadel_runtime::read_dir(&root().join("tests/fixtures/mini"));
    assert!(problems.is_empty(), "the mini fixture reads: {problems:?}");
    let title = files.get_mut("title.json").unwrap();
    assert!(title.contains("\"id\": \"mini\""), "the mini fixture names itself");
    *title = title.replace("\"id\": \"mini\"", &format!("\"id\": \"{name}\""));
    let change = std::fs::read_to_string(root().join(format!("tests/invalid/{name}.patch"))).unwrap();
    let changes = patch::apply(&files, &change).unwrap_or_else(|e| panic!("tests/invalid/{name}.patch: {e}"));
    for (path, text) in changes {
        match text {
            Some(text) => drop(files.insert(path, text)),
            None => drop(files.remove(&path)),
        }
    }
    for (path, text) in &files {
        let to = dir.join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, text).unwrap();
    }
    base
}

fn edit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_citadel-edit")).args(args).current_dir(dir).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn every_title_in_titles_validates() {
    let o = edit(&root(), &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("titles/ironhold: ok"), "{}", text(&o));
}

#[test]
fn every_title_in_titles_passes_its_scenarios() {
    let o = edit(&root(), &["test"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(" 0 failed"), "{}", text(&o));
}

#[test]
fn each_invalid_fixture_exits_1_with_its_golden_diagnostics() {
    let cases = root().join("tests/invalid");
    let mut names: Vec<String> = std::fs::read_dir(&cases)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".patch").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "the corpus must cover at least 15 diagnostic classes");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for name in &names {
        let rel = format!("tests/invalid/{name}");
        let o = edit(&invalid_case("all", name), &["validate", &rel]);
        assert_eq!(o.status.code(), Some(1), "{name} must be invalid:\n{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        // Every diagnostic names its file; those inside a file also a line:col.
        let errors = out.lines().filter(|l| l.starts_with("error[")).count();
        let diags = errors + out.lines().filter(|l| l.starts_with("warning[")).count();
        let located = out.lines().filter(|l| l.starts_with(&format!("  --> {rel}/"))).count();
        assert!(errors >= 1 && located == diags, "{name}: {diags} diagnostics, {located} located:\n{out}");
        let golden = cases.join(format!("{name}.txt"));
        if update {
            std::fs::write(&golden, &out).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if want != out {
                mismatches.push(format!("--- {name}: expected\n{want}\n--- got\n{out}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "golden mismatch (UPDATE_GOLDEN=1 to accept):\n{}", mismatches.join("\n"));
}

#[test]
fn json_format_lists_diagnostics_with_pointers() {
    let o = edit(
        &invalid_case("json", "unknown_id_cost"),
        &["validate", "--format", "json", "tests/invalid/unknown_id_cost"],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &v[0]["diagnostics"][0];
    assert_eq!(v[0]["ok"], false);
    assert_eq!(d["code"], "unknown-id");
    assert_eq!(d["file"], "buildings.json");
    assert_eq!(d["pointer"], "/buildings/2/levels/0/cost/gld");
    assert!(d["line"].as_u64().is_some() && d["column"].as_u64().is_some());
    assert_eq!(d["help"], "did you mean `gold`?");
}

#[test]
fn new_title_validates_and_passes_its_own_test() {
    let tmp = std::env::temp_dir().join(format!("citadel-edit-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("titles")).unwrap();
    let o = edit(&tmp, &["new", "demo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(tmp.join("titles/demo/title.json").is_file());
    let o = edit(&tmp, &["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = edit(&tmp, &["test", "demo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
    // A second `new` with the same id refuses to overwrite.
    let o = edit(&tmp, &["new", "demo"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn usage_and_io_errors_exit_2() {
    let r = root();
    assert_eq!(edit(&r, &["validate", "no/such/folder"]).status.code(), Some(2));
    assert_eq!(edit(&r, &["frobnicate"]).status.code(), Some(2));
    assert_eq!(edit(&r, &["new", "Bad Id"]).status.code(), Some(2));
    assert_eq!(edit(&r, &["test", "no_such_title"]).status.code(), Some(2));
}

#[test]
fn failing_scenario_exits_1_and_names_the_step() {
    let tmp = std::env::temp_dir().join(format!("citadel-edit-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    assert_eq!(edit(&tmp, &["new", "broken", "--dir", "."]).status.code(), Some(0));
    let test = tmp.join("broken/tests/basics.json");
    let t = std::fs::read_to_string(&test).unwrap().replace("\"/resources/gold\": 200", "\"/resources/gold\": 201");
    std::fs::write(&test, t).unwrap();
    let o = edit(&tmp, &["test", "./broken"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("expected /resources/gold to be 201, it is 200"), "{out}");
    assert!(out.contains("broken/tests/basics.json:6:"), "{out}");
    assert!(out.contains("0 passed, 1 failed"), "{out}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A requirement that fails when tried on a new player (division by zero)
/// is a warning placed once, at the part of the expression that failed,
/// with no second position in its message.
#[test]
fn an_expression_warning_points_at_the_part_that_failed() {
    let dir = std::env::temp_dir().join(format!("citadel-cli-divzero-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let title = dir.join("mini");
    for sub in ["", "scripts"] {
        std::fs::create_dir_all(title.join(sub)).unwrap();
        for e in std::fs::read_dir(root().join("tests/fixtures/mini").join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, title.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let buildings = title.join("buildings.json");
    let text_before = std::fs::read_to_string(&buildings).unwrap();
    let edited =
        text_before.replace(r#""requires": "level(\"mine\") >= 1""#, r#""requires": "10 / level(\"barracks\") > 1""#);
    assert_ne!(edited, text_before, "the fixture's hq level 2 requirement");
    std::fs::write(&buildings, &edited).unwrap();
    let (line_no, line) = edited.lines().enumerate().find(|(_, l)| l.contains("10 / level")).unwrap();
    let column = line.find("/ level").unwrap() + 1;

    let o = edit(&dir, &["validate", "mini"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "a warning only: {out}");
    assert!(out.contains("warning[expression]: fails for a new player: division by zero: 10 / 0\n"), "{out}");
    assert!(!out.contains("(line "), "the position is given once, in the location: {out}");
    assert!(
        out.contains(&format!("mini/buildings.json:{}:{column} (/buildings/0/levels/1/requires)", line_no + 1)),
        "{out}"
    );
    let marker = out.lines().find(|l| l.trim_start().starts_with('|') && l.contains('^')).unwrap();
    assert_eq!(marker.matches('^').count(), 1, "one character underlined: {out}");
}
