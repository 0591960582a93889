//! Hot reload triggers: a debounced watcher over the titles folder, and
//! SIGHUP. Both go through [`Titles::reload`], the validation gate.
//!
//! Editors save in many ways (write in place; write a temporary file and
//! rename it over the old one; delete and create), and tools replace whole
//! folders. The watcher does not interpret any of it: a change anywhere in
//! a title's folder marks that title, and once the folder has been quiet
//! for [`DEBOUNCE`] the marked titles reload from what is on disk then. A
//! folder replaced by a new one is watched again (recursive watching adds
//! new folders as they appear).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::titles::Titles;

/// Quiet time after the last change before reloading: long enough for an
/// editor's save (temp file, rename) or a copy of a folder to finish, short
/// enough that a change is served well within a second.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A steady stream of changes (a slow copy) reloads at least this often,
/// so it never postpones a reload for good.
pub const DEBOUNCE_MAX: Duration = Duration::from_millis(500);
/// Changes waiting for the debouncer. Beyond this the watcher stops
/// queueing and reloads every title once the folder is quiet.
const EVENTS_QUEUE_MAX: usize = 1024;

/// Which titles a change touches: `None` for all (a change of the titles
/// folder itself, or events lost).
type Touched = Option<BTreeSet<String>>;

fn touched(root: &Path, event: &notify::Event) -> Touched {
    if event.need_rescan() {
        return None;
    }
    let mut names = BTreeSet::new();
    for p in &event.paths {
        let rel = p.strip_prefix(root).ok()?;
        match rel.components().next() {
            Some(Component::Normal(name)) => {
                let name = name.to_str()?;
                if !name.starts_with('.') {
                    names.insert(name.to_string());
                }
            }
            _ => return None,
        }
    }
    Some(names)
}

/// Changes that can alter a title's files. Opening, reading and closing
/// without writing (the reload itself reads every file) are not changes.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `folder` until `stop`, reloading titles as their folders change.
pub fn spawn(titles: Arc<Titles>, folder: &Path, stop: CancellationToken) -> anyhow::Result<()> {
    let root: PathBuf = folder.canonicalize().with_context(|| format!("resolving {}", folder.display()))?;
    let (tx, mut rx) = mpsc::channel::<Touched>(EVENTS_QUEUE_MAX);
    let overflow = Arc::new(AtomicBool::new(false));
    let lost = overflow.clone();
    let watch_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let t = match res {
            Ok(e) if !is_change(&e.kind) => return,
            Ok(e) => touched(&watch_root, &e),
            Err(e) => {
                tracing::warn!(error = %e, "title watcher error; reloading every title");
                None
            }
        };
        if tx.try_send(t).is_err() {
            lost.store(true, Ordering::Relaxed);
        }
    })
    .context("starting the title watcher")?;
    watcher.watch(&root, RecursiveMode::Recursive).with_context(|| format!("watching {}", root.display()))?;
    tracing::info!(folder = %root.display(), "watching titles for changes");
    tokio::spawn(async move {
        // The watcher stops when dropped: keep it for the task's life.
        let _watcher = watcher;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            let mut pending = first;
            let started = Instant::now();
            while started.elapsed() < DEBOUNCE_MAX {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(more)) => {
                        pending = match (pending, more) {
                            (Some(mut a), Some(b)) => {
                                a.extend(b);
                                Some(a)
                            }
                            _ => None,
                        }
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if overflow.swap(false, Ordering::Relaxed) {
                pending = None;
            }
            let ids: Vec<String> = match pending {
                Some(set) if set.is_empty() => continue,
                Some(set) => set.into_iter().collect(),
                None => Vec::new(),
            };
            if let Err(e) = titles.reload(&ids).await {
                tracing::error!(error = %format!("{e:#}"), "reloading titles failed");
            }
        }
    });
    Ok(())
}

/// Reloads every title on SIGHUP until `stop`.
pub fn on_sighup(titles: Arc<Titles>, stop: CancellationToken) -> anyhow::Result<()> {
    let mut hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                s = hup.recv() => if s.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading every title");
            if let Err(e) = titles.reload(&[]).await {
                tracing::error!(error = %format!("{e:#}"), "reloading titles failed");
            }
        }
    });
    Ok(())
}
