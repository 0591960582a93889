//! The titles this server serves, and every change to them while it runs.
//!
//! A change (a reload from the titles folder, a title pushed to the admin
//! API, a rollback) goes through one gate: the title is loaded and
//! validated in full, and only a title without errors replaces the one
//! served; on errors the running version stays and the diagnostics are
//! reported (log, [`Titles::reports`], the admin API). The swap is one
//! pointer write under a lock: a request takes the current version once, at
//! its start ([`Titles::get`]), and runs entirely on it.
//!
//! Every version served is also written to the version store (the blob
//! store every server of a cluster shares, S3 or the data folder, under
//! `title-versions/<title>/<content_version>.json`) before it is swapped
//! in, so that journal replay after a crash re-runs each record on the
//! exact data it first ran on, so that a rollback can return to a version
//! this process never loaded, and so that every other server can load a
//! version one of them served. A title is never unloaded while the
//! server runs: a folder that disappears is reported and its last version
//! stays served (players in the middle of a session keep playing).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::Context;
use citadel_runtime::{Diagnostic, Severity, Title, TitleFiles};
use citadel_store::blob::{BlobError, BlobStore, Precondition};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Versions of each title kept in memory, newest first, current included:
/// what a rollback returns to without reading the store, and what replay
/// and pinned requests find at once.
pub const HISTORY_MAX: usize = 8;
/// Versions of each title kept in the version store. Journal replay needs
/// the versions of records not yet saved (minutes old at most); the rest
/// are rollback targets. Older files are deleted.
pub const STORED_VERSIONS_MAX: usize = 32;
/// Versions stored beyond [`STORED_VERSIONS_MAX`] before the oldest are
/// deleted: pruning reads every stored version's time, so it runs once in
/// so many new versions, not at every one.
const PRUNE_SLACK: usize = 8;
/// The version store's folder in the blob store.
const STORE_DIR: &str = "title-versions";
/// Reports waiting for a slow subscriber (an admin console); a subscriber
/// further behind misses the oldest and is told how many it missed.
const REPORTS_QUEUE_MAX: usize = 64;
/// Niceness of the thread that loads and validates a new version (Linux
/// nice values run from -20 to 19). A reload is milliseconds of CPU; on a
/// busy core at normal priority it takes half the core from the threads
/// answering players for that long. At +10 the scheduler gives it about a
/// tenth while they are busy, so players barely notice and the reload
/// takes a little longer (docs/benchmarks.md).
const RELOAD_NICENESS: i32 = 10;
/// The version store's file format.
const STORED_FORMAT_VERSION: u32 = 1;

/// What started a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Start,
    Folder,
    Push,
    Rollback,
    /// Another server of the cluster changed the title (a push, a reload,
    /// a rollback): this one serves the same version, or notes its refusal.
    Cluster,
}

/// How a change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new version is served.
    Swapped,
    /// The new content is the version already served.
    Unchanged,
    /// The new content has errors (or could not be read): the running
    /// version stays.
    Refused,
}

/// The result of one change, as the log, the admin API and `citadel-edit
/// push` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    pub source: Source,
    pub outcome: Outcome,
    /// Epoch milliseconds.
    pub at_ms: i64,
    /// The version served after the change (none if the title is not served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_version: Option<String>,
    /// The version served before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// How long reading and validating took.
    pub load_ms: f64,
    /// Every error and warning of the new content.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
}

/// One title: the version served and the ones before it.
#[derive(Debug)]
struct Slot {
    /// Newest first; `history[0]` is served. Empty for a title that has
    /// never loaded without errors (it is listed, with why, but not served).
    history: VecDeque<Title>,
    last: Option<Report>,
}

/// What the admin API shows of a title.
#[derive(Debug, Clone, Serialize)]
pub struct TitleInfo {
    pub id: String,
    /// None while the title has never loaded without errors (not served).
    pub name: Option<String>,
    pub content_version: Option<String>,
    /// Versions in memory, newest first (the served one first).
    pub history: Vec<String>,
    /// The last change tried, if any since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Report>,
}

/// A version as the store keeps it: the files it was loaded from.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format_version: u32,
    title: String,
    content_version: String,
    /// When it was stored (epoch ms; 0 in versions stored before this was
    /// kept): the oldest are pruned first.
    #[serde(default)]
    stored_ms: i64,
    files: TitleFiles,
}

/// Every title served, with history; see the module docs.
#[derive(Debug)]
pub struct Titles {
    slots: RwLock<BTreeMap<String, Slot>>,
    folder: PathBuf,
    store: Option<Arc<dyn BlobStore>>,
    /// One change at a time, so two reloads never race to swap.
    gate: tokio::sync::Mutex<()>,
    reports: broadcast::Sender<Report>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn log(report: &Report) {
    for d in &report.diagnostics {
        match d.severity {
            Severity::Error => tracing::error!(title = %report.title, at = %d.location(), "{}", d.message),
            Severity::Warning => tracing::warn!(title = %report.title, at = %d.location(), "{}", d.message),
        }
    }
    match report.outcome {
        Outcome::Swapped => tracing::info!(
            title = %report.title, source = ?report.source,
            content_version = report.content_version.as_deref().unwrap_or(""),
            previous = report.previous.as_deref().unwrap_or(""),
            load_ms = report.load_ms, "serving title version"
        ),
        Outcome::Unchanged => {
            tracing::info!(title = %report.title, source = ?report.source, "title content unchanged")
        }
        Outcome::Refused => tracing::error!(
            title = %report.title, source = ?report.source, errors = report.errors(),
            serving = report.content_version.as_deref().unwrap_or("nothing"),
            "title change refused; the running version stays"
        ),
    }
}

/// The title folders under `dir`, by folder name.
fn folders(dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read titles folder {}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

impl Titles {
    /// Loads every title folder under `dir` and writes each version served
    /// to the version store, when there is one. A title with errors is
    /// reported and not served; the others are.
    pub async fn open(dir: &Path, store: Option<Arc<dyn BlobStore>>) -> anyhow::Result<Titles> {
        let titles = Titles {
            slots: RwLock::new(BTreeMap::new()),
            folder: dir.to_path_buf(),
            store,
            gate: tokio::sync::Mutex::new(()),
            reports: broadcast::channel(REPORTS_QUEUE_MAX).0,
        };
        for name in folders(dir)? {
            let started = Instant::now();
            let (files, title, diags) = citadel_runtime::load::load_with_files(&dir.join(&name));
            titles.finish(&name, Source::Start, files, (title, diags, started)).await;
        }
        Ok(titles)
    }

    /// The version served now. A request calls this once and keeps the
    /// result for its whole run.
    pub fn get(&self, id: &str) -> Option<Title> {
        self.read().get(id).and_then(|s| s.history.front().cloned())
    }

    /// A version of a title held in memory (served now, or recently and
    /// kept for requests still running on it); never read from the version
    /// store, so cheap enough to answer for anyone.
    pub fn held(&self, id: &str, content_version: &str) -> Option<Title> {
        self.read().get(id)?.history.iter().find(|t| t.content_version == content_version).cloned()
    }

    /// Ids of the titles known (served, or refused since start).
    pub fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The versions served now, one per title.
    pub fn current(&self) -> Vec<Title> {
        self.read().values().filter_map(|s| s.history.front().cloned()).collect()
    }

    /// A given version of a title: from memory, else from the version
    /// store (read, then validated again on a thread of its own).
    pub async fn version(&self, id: &str, content_version: &str) -> Option<Title> {
        if let Some(t) = self.held(id, content_version) {
            return Some(t);
        }
        let stored = self.read_stored(id, content_version).await?;
        let (id, version) = (id.to_string(), content_version.to_string());
        background(move || {
            let (title, _) = citadel_runtime::load_files(&id, &stored.files);
            title.filter(|t| t.content_version == version)
        })
        .await
        .ok()
        .flatten()
    }

    /// Every title with its history and last change, for the admin API.
    pub fn info(&self) -> Vec<TitleInfo> {
        self.read()
            .iter()
            .map(|(id, s)| {
                let t = s.history.front();
                TitleInfo {
                    id: id.clone(),
                    name: t.map(|t| t.manifest.name.clone()),
                    content_version: t.map(|t| t.content_version.clone()),
                    history: s.history.iter().map(|t| t.content_version.clone()).collect(),
                    last_change: s.last.clone(),
                }
            })
            .collect()
    }

    /// Every change's report, as it happens.
    pub fn reports(&self) -> broadcast::Receiver<Report> {
        self.reports.subscribe()
    }

    /// Reloads the named titles from the folder, or every title folder
    /// (new ones included) when `ids` is empty.
    pub async fn reload(self: &Arc<Self>, ids: &[String]) -> anyhow::Result<Vec<Report>> {
        let _one = self.gate.lock().await;
        let names = if ids.is_empty() {
            let mut all = folders(&self.folder)?;
            // A served title whose folder is gone is reported, not dropped.
            for id in self.ids() {
                if !all.contains(&id) {
                    all.push(id);
                }
            }
            all
        } else {
            ids.to_vec()
        };
        let mut reports = Vec::new();
        for name in names {
            let (started, dir) = (Instant::now(), self.folder.join(&name));
            if !dir.is_dir() {
                let d = Diagnostic::error("folder", "", format!("title folder {} does not exist", dir.display()));
                reports.push(self.refuse(&name, Source::Folder, vec![d], started));
                continue;
            }
            let (files, title, diags) = background(move || citadel_runtime::load::load_with_files(&dir)).await?;
            reports.push(self.finish(&name, Source::Folder, files, (title, diags, started)).await);
        }
        Ok(reports)
    }

    /// Validates a title sent as files (the admin API) and serves it if it
    /// has no errors.
    pub async fn push(self: &Arc<Self>, id: &str, files: TitleFiles) -> anyhow::Result<Report> {
        let _one = self.gate.lock().await;
        let started = Instant::now();
        let id2 = id.to_string();
        let (files, title, diags) = background(move || {
            let (title, diags) = citadel_runtime::load_files(&id2, &files);
            (files, title, diags)
        })
        .await?;
        Ok(self.finish(id, Source::Push, files, (title, diags, started)).await)
    }

    /// Serves an earlier version again: `to`, or the one before the current.
    pub async fn rollback(self: &Arc<Self>, id: &str, to: Option<&str>) -> Result<Report, RollbackError> {
        let _one = self.gate.lock().await;
        let started = Instant::now();
        let (current, target) = {
            let slots = self.read();
            let slot = slots.get(id).ok_or(RollbackError::UnknownTitle)?;
            let current = slot.history.front().map(|t| t.content_version.clone());
            let target = match to {
                Some(v) => v.to_string(),
                None => slot.history.get(1).map(|t| t.content_version.clone()).ok_or(RollbackError::NoEarlier)?,
            };
            (current, target)
        };
        if current.as_deref() == Some(target.as_str()) {
            let r = self.report(id, Source::Rollback, Outcome::Unchanged, current.clone(), current, vec![], started);
            return Ok(self.publish(id, r));
        }
        let title = self.version(id, &target).await.ok_or(RollbackError::UnknownVersion(target))?;
        Ok(self.install(id, Source::Rollback, title, vec![], started, None).await)
    }

    /// Serves a version another server of the cluster serves now, read
    /// from the version store they share and validated here again.
    pub async fn follow(self: &Arc<Self>, id: &str, version: &str) -> Report {
        let _one = self.gate.lock().await;
        let started = Instant::now();
        match self.version(id, version).await {
            Some(title) => self.install(id, Source::Cluster, title, vec![], started, None).await,
            None => {
                let d = Diagnostic::error(
                    "store",
                    "",
                    format!(
                        "version {version} is not in the version store this server reads (or does not validate here)"
                    ),
                );
                self.refuse(id, Source::Cluster, vec![d], started)
            }
        }
    }

    /// Notes that another server of the cluster refused a change of the
    /// title (this one keeps serving what it served, and says why).
    pub fn note_refusal(&self, id: &str, server: &str, mut diagnostics: Vec<Diagnostic>) -> Report {
        let note = format!("refused on {server}; not served here either");
        diagnostics.insert(0, Diagnostic::error("cluster", "", note).warning());
        self.refuse(id, Source::Cluster, diagnostics, Instant::now())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        // Critical sections swap or clone an `Arc`; they cannot leave the
        // map half-changed, so a poisoned lock is still consistent.
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a load: swap in on success, keep the running version otherwise.
    async fn finish(
        &self,
        id: &str,
        source: Source,
        files: TitleFiles,
        (title, diags, started): (Option<Title>, Vec<Diagnostic>, Instant),
    ) -> Report {
        match title {
            Some(t) => self.install(id, source, t, diags, started, Some(files)).await,
            None => self.refuse(id, source, diags, started),
        }
    }

    fn refuse(&self, id: &str, source: Source, diags: Vec<Diagnostic>, started: Instant) -> Report {
        let current = self.get(id).map(|t| t.content_version.clone());
        let r = self.report(id, source, Outcome::Refused, current.clone(), current, diags, started);
        self.publish(id, r)
    }

    /// Stores (when `files` are new content) and swaps in a valid title.
    async fn install(
        &self,
        id: &str,
        source: Source,
        title: Title,
        diags: Vec<Diagnostic>,
        started: Instant,
        files: Option<TitleFiles>,
    ) -> Report {
        let previous = self.get(id).map(|t| t.content_version.clone());
        let version = title.content_version.clone();
        if previous.as_deref() == Some(version.as_str()) {
            let r = self.report(id, source, Outcome::Unchanged, previous.clone(), previous, diags, started);
            return self.publish(id, r);
        }
        // Stored before it is served: a journal record naming this version
        // must always find it again after a crash.
        if let Some(files) = files {
            if let Err(e) = self.store_version(id, &version, files).await {
                let mut diags = diags;
                diags.push(Diagnostic::error("store", "", format!("could not keep the version: {e:#}")));
                let r = self.report(id, source, Outcome::Refused, previous.clone(), previous, diags, started);
                return self.publish(id, r);
            }
        }
        {
            let mut slots = self.write();
            let slot = slots.entry(id.to_string()).or_insert_with(|| Slot { history: VecDeque::new(), last: None });
            slot.history.retain(|t| t.content_version != version);
            slot.history.push_front(title);
            slot.history.truncate(HISTORY_MAX);
        }
        let r = self.report(id, source, Outcome::Swapped, Some(version), previous, diags, started);
        self.publish(id, r)
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        id: &str,
        source: Source,
        outcome: Outcome,
        content_version: Option<String>,
        previous: Option<String>,
        diagnostics: Vec<Diagnostic>,
        started: Instant,
    ) -> Report {
        Report {
            title: id.to_string(),
            source,
            outcome,
            at_ms: now_ms(),
            content_version,
            previous,
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
            diagnostics,
        }
    }

    /// Logs, remembers and broadcasts a report.
    fn publish(&self, id: &str, r: Report) -> Report {
        log(&r);
        // A title refused at start (or a refused push of a new id) is
        // listed with its diagnostics, unserved.
        self.write().entry(id.to_string()).or_insert_with(|| Slot { history: VecDeque::new(), last: None }).last =
            Some(r.clone());
        // No subscriber is fine.
        let _ = self.reports.send(r.clone());
        r
    }

    /// The version's key in the store; `None` without a store, or for an
    /// id or version that is not plain (ids as the title schema allows
    /// them, versions hex), so nothing else is ever read or written.
    fn stored_key(&self, id: &str, version: &str) -> Option<(&Arc<dyn BlobStore>, String)> {
        if !citadel_runtime::load::valid_title_id(id)
            || !version.bytes().all(|b| b.is_ascii_hexdigit())
            || version.is_empty()
        {
            return None;
        }
        Some((self.store.as_ref()?, format!("{STORE_DIR}/{id}/{version}.json")))
    }

    async fn store_version(&self, id: &str, version: &str, files: TitleFiles) -> anyhow::Result<()> {
        let Some((store, key)) = self.stored_key(id, version) else { return Ok(()) };
        let stored = Stored {
            format_version: STORED_FORMAT_VERSION,
            title: id.into(),
            content_version: version.into(),
            stored_ms: now_ms(),
            files,
        };
        match store.put(&key, serde_json::to_vec(&stored)?, Precondition::Absent).await {
            // Stored before (by this server or another): the same content.
            Ok(_) | Err(BlobError::PreconditionFailed) => {}
            Err(e) => return Err(anyhow::anyhow!("writing {key}: {e}")),
        }
        self.prune(store, id).await;
        Ok(())
    }

    /// Deletes the oldest stored versions beyond `STORED_VERSIONS_MAX`,
    /// except those held in memory.
    async fn prune(&self, store: &Arc<dyn BlobStore>, id: &str) {
        let dir = format!("{STORE_DIR}/{id}");
        let Ok(keys) = store.list(&dir).await else { return };
        let keys: Vec<String> = keys.into_iter().filter(|k| k.ends_with(".json")).collect();
        if keys.len() <= STORED_VERSIONS_MAX + PRUNE_SLACK {
            return;
        }
        let mut aged = Vec::new();
        for key in keys {
            let at = match store.get(&key).await {
                Ok(Some((bytes, _))) => serde_json::from_slice::<Stored>(&bytes).map_or(0, |s| s.stored_ms),
                _ => 0,
            };
            aged.push((at, key));
        }
        aged.sort();
        let keep: Vec<String> = self
            .read()
            .get(id)
            .map_or_else(Vec::new, |s| s.history.iter().map(|t| format!("{dir}/{}.json", t.content_version)).collect());
        for (_, key) in &aged[..aged.len() - STORED_VERSIONS_MAX] {
            if !keep.contains(key) {
                if let Err(e) = store.delete(key).await {
                    tracing::warn!(%key, error = %e, "could not delete an old title version");
                }
            }
        }
    }

    async fn read_stored(&self, id: &str, version: &str) -> Option<Stored> {
        let (store, key) = self.stored_key(id, version)?;
        let read = async {
            let Some((bytes, _)) = store.get(&key).await? else { return Ok(None) };
            let s: Stored = serde_json::from_slice(&bytes)?;
            anyhow::ensure!(s.format_version == STORED_FORMAT_VERSION, "format_version {}", s.format_version);
            anyhow::ensure!(s.title == id && s.content_version == version, "names another version");
            Ok(Some(s))
        };
        match read.await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%key, error = %e, "unreadable stored title version");
                None
            }
        }
    }
}

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no such title")]
    UnknownTitle,
    #[error("no earlier version of this title is kept")]
    NoEarlier,
    #[error("version {0} of this title is not kept")]
    UnknownVersion(String),
    #[error("{0}")]
    Internal(String),
}

/// Runs `f` on a thread of its own at low priority (see
/// [`RELOAD_NICENESS`]) and waits for it without blocking the runtime.
async fn background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("title-reload".into()).spawn(move || {
        // On Linux this sets the calling thread's priority only. Failing
        // to lower it only costs latency, never correctness.
        let _ = rustix::process::setpriority_process(None, RELOAD_NICENESS);
        let _ = tx.send(f());
    })?;
    Ok(rx.await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fort() -> TitleFiles {
        citadel_runtime::read_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fort")).0
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("citadel-titles-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn fs_store(dir: &Path) -> Arc<dyn BlobStore> {
        Arc::new(citadel_store::blob::FsBlobStore::new(dir))
    }

    fn write(dir: &Path, files: &TitleFiles) {
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    /// After a restart, journal replay finds the version a record ran on
    /// even though the folder now holds another one, and a rollback can
    /// return to it.
    #[tokio::test]
    async fn a_version_served_once_is_found_again_after_a_restart() {
        let (folder, store) = (temp("folder"), temp("store"));
        let first = fort();
        write(&folder.join("fort"), &first);
        let titles = Arc::new(Titles::open(&folder, Some(fs_store(&store))).await.unwrap());
        let v1 = titles.get("fort").unwrap().content_version.clone();
        let mut second = first.clone();
        let text = second["title.json"].replace("\"builders\": 1", "\"builders\": 2");
        second.insert("title.json".into(), text);
        let report = titles.push("fort", second.clone()).await.unwrap();
        assert_eq!(report.outcome, Outcome::Swapped);
        let v2 = report.content_version.clone().unwrap();
        assert_ne!(v1, v2);
        drop(titles);

        // The folder still holds the first version; the process restarts.
        let titles = Arc::new(Titles::open(&folder, Some(fs_store(&store))).await.unwrap());
        assert_eq!(titles.get("fort").unwrap().content_version, v1);
        let found = titles.version("fort", &v2).await.expect("kept in the version store");
        assert_eq!(found.manifest.builders, 2);
        let back = titles.rollback("fort", Some(&v2)).await.unwrap();
        assert_eq!((back.outcome, back.content_version.as_deref()), (Outcome::Swapped, Some(v2.as_str())));
        assert!(titles.version("fort", "0123456789abcdef").await.is_none());
        assert!(titles.version("fort", "../../etc").await.is_none(), "versions are hex, never a path");
    }

    /// A title with errors at start is not served, the others are; it is
    /// listed with its diagnostics, and served once fixed.
    #[tokio::test]
    async fn a_title_failing_at_start_is_listed_not_served_and_served_once_fixed() {
        let folder = temp("start");
        write(&folder.join("fort"), &fort());
        let mut broken = fort();
        let text = broken["title.json"].replace("\"id\": \"fort\"", "\"id\": \"second\"");
        broken.insert("title.json".into(), text.replace("\"builders\": 1", "\"builders\": \"x\""));
        write(&folder.join("second"), &broken);
        let titles = Arc::new(Titles::open(&folder, None).await.unwrap());
        assert!(titles.get("fort").is_some());
        assert!(titles.get("second").is_none());
        let info = titles.info();
        let second = info.iter().find(|t| t.id == "second").expect("listed");
        assert_eq!(second.content_version, None);
        let change = second.last_change.as_ref().unwrap();
        assert_eq!((change.source, change.outcome), (Source::Start, Outcome::Refused));
        assert!(change.diagnostics.iter().any(|d| d.pointer.as_deref() == Some("/builders")), "{change:?}");

        let fixed = folder.join("second/title.json");
        let text = std::fs::read_to_string(&fixed).unwrap();
        std::fs::write(&fixed, text.replace("\"builders\": \"x\"", "\"builders\": 1")).unwrap();
        let reports = titles.reload(&["second".to_string()]).await.unwrap();
        assert_eq!(reports[0].outcome, Outcome::Swapped);
        assert!(titles.get("second").is_some());
    }

    #[tokio::test]
    async fn an_invalid_change_keeps_the_running_version_and_reports_why() {
        let folder = temp("invalid");
        write(&folder.join("fort"), &fort());
        let titles = Arc::new(Titles::open(&folder, None).await.unwrap());
        let before = titles.get("fort").unwrap().content_version.clone();
        let mut reports = titles.reports();
        let mut broken = fort();
        broken.insert("title.json".into(), "{".into());
        let r = titles.push("fort", broken).await.unwrap();
        assert_eq!(r.outcome, Outcome::Refused);
        assert!(r.errors() > 0);
        assert_eq!(r.content_version.as_deref(), Some(before.as_str()));
        assert_eq!(titles.get("fort").unwrap().content_version, before);
        assert_eq!(reports.recv().await.unwrap().outcome, Outcome::Refused, "subscribers hear of it");
        assert!(matches!(titles.rollback("fort", None).await, Err(RollbackError::NoEarlier)));
        assert!(matches!(titles.rollback("nope", None).await, Err(RollbackError::UnknownTitle)));
    }

    /// The store keeps the newest versions (and every one held in memory),
    /// deleting the oldest once it holds `PRUNE_SLACK` more than
    /// `STORED_VERSIONS_MAX`.
    #[tokio::test]
    async fn the_version_store_keeps_the_newest_versions() {
        let (folder, store) = (temp("prune-folder"), temp("prune-store"));
        write(&folder.join("fort"), &fort());
        let titles = Arc::new(Titles::open(&folder, Some(fs_store(&store))).await.unwrap());
        let first = titles.get("fort").unwrap().content_version.clone();
        let mut versions = vec![first];
        for n in 0..(STORED_VERSIONS_MAX + PRUNE_SLACK) {
            let mut files = fort();
            let text = files["title.json"].replace("\"name\": \"", &format!("\"name\": \"v{n} "));
            files.insert("title.json".into(), text);
            let r = titles.push("fort", files).await.unwrap();
            assert_eq!(r.outcome, Outcome::Swapped, "{r:?}");
            versions.push(r.content_version.unwrap());
        }
        let stored: Vec<String> = std::fs::read_dir(store.join(STORE_DIR).join("fort"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".json").to_string())
            .collect();
        assert_eq!(stored.len(), STORED_VERSIONS_MAX, "pruned once past the slack: {stored:?}");
        for v in &versions[versions.len() - STORED_VERSIONS_MAX..] {
            assert!(stored.contains(v), "the newest are kept: {v}");
        }
        assert!(!stored.contains(&versions[0]), "the oldest went");
        // What was kept is found by another server sharing the store.
        let other = Arc::new(Titles::open(&temp("prune-other"), Some(fs_store(&store))).await.unwrap());
        let v = &versions[versions.len() - 3];
        assert_eq!(other.version("fort", v).await.map(|t| t.content_version.clone()), Some(v.clone()));
    }
}
