//! `watch`: validates titles on every save and prints the diagnostics
//! (within a second: the watcher waits `citadel_runtime::watch::DEBOUNCE`
//! of quiet, then loads the title).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{load_dir, print_human};
use anyhow::Context;

/// Validates one title folder and prints the outcome, prefixed with the time.
fn check(dir: &Path) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let clock = format!("{:02}:{:02}:{:02}", now / 3600 % 24, now / 60 % 60, now % 60);
    match load_dir(dir) {
        Err(e) => println!("[{clock}] {}: {e:#}", dir.display()),
        Ok((files, title, diags)) => {
            let (errors, warnings) = print_human(dir, &files, &diags);
            match title {
                Some(t) => println!(
                    "[{clock}] {}: ok, content version {} ({warnings} warning(s))",
                    dir.display(),
                    t.content_version
                ),
                _ => println!("[{clock}] {}: invalid, {errors} error(s), {warnings} warning(s)", dir.display()),
            }
        }
    }
}

/// Watches the given title folders (all under ./titles when none) until
/// interrupted.
pub(crate) fn watch(dirs: Vec<PathBuf>) -> anyhow::Result<bool> {
    // One watcher per folder of titles; each knows which of its titles to check.
    let mut by_root: BTreeMap<PathBuf, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for dir in dirs {
        let full = dir.canonicalize().with_context(|| format!("{} is not a folder", dir.display()))?;
        let name = full.file_name().and_then(|n| n.to_str()).context("a title folder needs a name")?.to_string();
        let root = full.parent().context("a title folder needs a parent folder")?.to_path_buf();
        by_root.entry(root).or_default().insert(name, dir);
    }
    let mut watchers = Vec::new();
    for (root, titles) in by_root {
        for dir in titles.values() {
            check(dir);
        }
        let watcher = citadel_runtime::watch::watch(&root, move |changed| {
            for (name, dir) in &titles {
                if changed.as_ref().is_none_or(|c| c.contains(name)) {
                    check(dir);
                }
            }
        })
        .with_context(|| format!("watching {}", root.display()))?;
        watchers.push(watcher);
    }
    println!("watching; press Ctrl-C to stop");
    loop {
        std::thread::park();
    }
}
