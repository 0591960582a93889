//! The server's shape, as ARCHITECTURE.md states it: no import cycle
//! between the files of `server/` (the store crate included), and no file
//! of the session over 600 lines. Read from the source, so that the next
//! change that breaks either says so here rather than in a review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file of `server/src/session/`: a session file that grows past
/// this holds more than one job again.
const SESSION_FILE_LINES_MAX: usize = 600;

/// A crate's modules: module path (`session::task`) to its source text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if matches!(name.as_str(), "lib" | "main") {
                continue;
            }
            out.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The source without comments and without its unit tests (tests may use
/// anything of the file they test).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The paths a file names from its crate: `crate::a::b`, `super::x` and
/// the members of `use crate::{a, b::c}` groups, as absolute module paths.
fn paths_named(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let this: Vec<&str> = module.split("::").collect();
    let word = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|m| word(m.trim())).filter(|m| !m.is_empty()));
        } else {
            out.push(word(rest));
        }
    }
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("super::") {
            continue;
        }
        let mut rest = &code[i..];
        let mut base = this.clone();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let names: Vec<String> = match rest.strip_prefix('{') {
            Some(group) => {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(|m| word(m.trim())).collect()
            }
            None => vec![word(rest)],
        };
        for n in names.into_iter().filter(|n| !n.is_empty()) {
            let mut full = base.join("::");
            if !full.is_empty() {
                full.push_str("::");
            }
            full.push_str(&n);
            out.push(full);
        }
    }
    out
}

/// The module a path points into: its longest prefix that is a module.
fn resolve<'a>(path: &str, known: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len()).rev().find_map(|n| known.get_key_value(&parts[..n].join("::")).map(|(k, _)| k.as_str()))
}

/// File-level dependencies: a file depends on the files whose items it
/// names, except its own descendants (a module contains its children).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let known = modules(src);
    let mut g = BTreeMap::new();
    for (module, text) in &known {
        let mut deps = BTreeSet::new();
        for path in paths_named(module, &code(text)) {
            if let Some(to) = resolve(&path, &known) {
                let descendant = to.starts_with(&format!("{module}::"));
                if to != module && !descendant {
                    deps.insert(to.to_string());
                }
            }
        }
        g.insert(module.clone(), deps);
    }
    g
}

/// A cycle through the graph, if there is one (depth-first search).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
}

fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn no_file_of_the_server_imports_one_that_imports_it_back() {
    for src in [server_dir().join("src"), server_dir().join("store/src")] {
        let g = graph(&src);
        assert!(
            g.contains_key("session::task") || g.contains_key("world"),
            "the modules of {} were read",
            src.display()
        );
        if let Some(c) = cycle(&g) {
            panic!("an import cycle in {}: {}", src.display(), c.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    // The check itself, on a graph with one cycle through a sibling.
    let dir = std::env::temp_dir().join(format!("citadel-architecture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "mod c;\nuse crate::b::B; // crate::c in a comment\n").unwrap();
    std::fs::write(dir.join("a/c.rs"), "use super::super::b;\n").unwrap();
    std::fs::write(dir.join("b.rs"), "use crate::{a::c::C, x};\n").unwrap();
    let g = graph(&dir);
    assert_eq!(g["a"], BTreeSet::from(["b".to_string()]), "a uses b; its child c does not count");
    assert_eq!(g["b"], BTreeSet::from(["a::c".to_string()]));
    let c = cycle(&g).expect("b -> a::c -> b");
    assert!(c.contains(&"b".to_string()) && c.contains(&"a::c".to_string()), "{c:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_session_file_holds_more_than_one_job() {
    let dir = server_dir().join("src/session");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            lines <= SESSION_FILE_LINES_MAX,
            "{} has {lines} lines (at most {SESSION_FILE_LINES_MAX})",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 4, "the session is split by job");
}
