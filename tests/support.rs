//! Shared helpers for the workspace-level tests: where things are, and
//! loading titles with their diagnostics printed on failure.

use std::path::{Path, PathBuf};

use citadel_runtime::{Diagnostic, Title, TitleFiles};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Every title folder under `titles/`.
pub fn title_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("titles"))
        .expect("titles/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Renders diagnostics for an assertion message.
pub fn render(dir: &Path, files: &TitleFiles, diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| d.render(&dir.display().to_string(), files.get(&d.file).map(String::as_str))).collect()
}

/// Loads a title folder that must be valid, returning it with its files.
pub fn load_valid(dir: &Path) -> (Title, TitleFiles) {
    let (files, read) = citadel_runtime::read_dir(dir);
    assert!(read.is_empty(), "{}", render(dir, &files, &read));
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (title, diags) = citadel_runtime::load_files(name, &files);
    match title {
        Some(t) => (t, files),
        None => panic!("{} does not load:\n{}", dir.display(), render(dir, &files, &diags)),
    }
}

/// The files of the `mini` fixture, to modify in memory.
pub fn mini_files() -> TitleFiles {
    citadel_runtime::read_dir(&root().join("tests/fixtures/mini")).0
}
