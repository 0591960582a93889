//! Hot reload triggers: the titles folder watcher
//! ([`citadel_runtime::watch`], debounced) and SIGHUP. Both go through
//! [`Titles::reload`], the validation gate.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::titles::Titles;

/// Batches of changes waiting for the reloader. The watcher thread waits
/// while it is full, merging what arrives meanwhile, so nothing is lost.
const BATCHES_QUEUE_MAX: usize = 4;

/// Watches `folder` until `stop`, reloading titles as their folders change.
pub fn spawn(titles: Arc<Titles>, folder: &Path, stop: CancellationToken) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(BATCHES_QUEUE_MAX);
    let watcher = citadel_runtime::watch::watch(folder, move |changed| {
        // Fails only once the reloader has stopped (shutdown).
        let _ = tx.blocking_send(changed);
    })
    .with_context(|| format!("watching {}", folder.display()))?;
    tracing::info!(folder = %folder.display(), "watching titles for changes");
    tokio::spawn(async move {
        // The watcher stops when dropped: keep it for the task's life.
        let _watcher = watcher;
        loop {
            let changed = tokio::select! {
                _ = stop.cancelled() => return,
                c = rx.recv() => match c { Some(c) => c, None => return },
            };
            // `None`: every title (new folders included).
            let ids: Vec<String> = changed.map(|set| set.into_iter().collect()).unwrap_or_default();
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
