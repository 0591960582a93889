//! Watching a folder of title folders for changes, debounced: what the
//! server's hot reload and `citadel-edit watch` both run on.
//!
//! Editors save in many ways (write in place; write a temporary file and
//! rename it over the old one; delete and create), and tools replace whole
//! folders. The watcher does not interpret any of it: a change anywhere in
//! a title's folder marks that title, and once the folder has been quiet
//! for [`DEBOUNCE`] the marked titles are handed to the caller, who reads
//! the folders as they are then. A folder replaced by a new one is watched
//! again (recursive watching adds new folders as they appear). Names that
//! start with `.` (editor swap files, folders being prepared) are ignored.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

/// Quiet time after the last change before the titles are handed over:
/// long enough for an editor's save (temp file, rename) or a copy of a
/// folder to finish, short enough that a change is seen well within a second.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A steady stream of changes (a slow copy) is handed over at least this
/// often, so it never postpones a reload for good.
pub const DEBOUNCE_MAX: Duration = Duration::from_millis(500);

/// Which titles changed: folder names under the watched folder, or `None`
/// for all of them (the watched folder itself changed, or events were lost).
pub type Changed = Option<BTreeSet<String>>;

/// A running watcher; it stops when dropped.
#[derive(Debug)]
pub struct TitleWatcher {
    _inner: notify::RecommendedWatcher,
}

fn touched(root: &Path, event: &notify::Event) -> Changed {
    if event.need_rescan() {
        return None;
    }
    let mut names = BTreeSet::new();
    for p in &event.paths {
        let rel = p.strip_prefix(root).ok()?;
        match rel.components().next() {
            Some(Component::Normal(name)) => {
                let name = name.to_str()?;
                let hidden =
                    rel.components().any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')));
                if !hidden {
                    names.insert(name.to_string());
                }
            }
            _ => return None,
        }
    }
    Some(names)
}

/// Changes that can alter a title's files. Opening, reading and closing
/// without writing (a reload itself reads every file) are not changes.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn merge(a: Changed, b: Changed) -> Changed {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.extend(b);
            Some(a)
        }
        _ => None,
    }
}

/// Watches `root` (a folder of title folders) and calls `on_change` on a
/// thread of its own, once per quiet period, with the titles that changed.
/// The calls never overlap: changes during one are handed to the next.
pub fn watch(root: &Path, mut on_change: impl FnMut(Changed) + Send + 'static) -> notify::Result<TitleWatcher> {
    let root: PathBuf = root.canonicalize().map_err(notify::Error::io)?;
    let (tx, rx) = mpsc::channel::<Changed>();
    let events_root = root.clone();
    let mut inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let changed = match res {
            Ok(e) if !is_change(&e.kind) => return,
            Ok(e) => touched(&events_root, &e),
            // An error may mean lost events: look at everything again.
            Err(_) => None,
        };
        // The receiver is gone only when the watcher is being dropped.
        let _ = tx.send(changed);
    })?;
    inner.watch(&root, RecursiveMode::Recursive)?;
    std::thread::Builder::new()
        .name("title-watch".into())
        .spawn(move || {
            // Ends when the watcher (and with it the sender) is dropped.
            while let Ok(first) = rx.recv() {
                let mut pending = first;
                let started = Instant::now();
                while started.elapsed() < DEBOUNCE_MAX {
                    match rx.recv_timeout(DEBOUNCE) {
                        Ok(more) => pending = merge(pending, more),
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                if pending.as_ref().is_some_and(BTreeSet::is_empty) {
                    continue;
                }
                on_change(pending);
            }
        })
        .map_err(notify::Error::io)?;
    Ok(TitleWatcher { _inner: inner })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(EventKind::Any);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn a_change_marks_the_title_folder_it_is_in() {
        let root = Path::new("/t");
        let names = |c: Changed| c.map(|s| s.into_iter().collect::<Vec<_>>());
        assert_eq!(
            names(touched(root, &event(&["/t/a/title.json", "/t/b/scripts/x.rhai"]))),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(names(touched(root, &event(&["/t/a/.title.json.swp"]))), Some(vec![]));
        assert_eq!(names(touched(root, &event(&["/t/.new/title.json"]))), Some(vec![]));
        assert_eq!(touched(root, &event(&["/t"])), None, "the folder of titles itself: everything");
        assert_eq!(touched(root, &event(&["/elsewhere/x"])), None);
    }
}
