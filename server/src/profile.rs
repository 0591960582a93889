//! Latency profiling of every entry point: HTTP routes, WebSocket message
//! kinds, actions per title, blob store operations, journal commits and
//! world store calls.
//! For each: count, sum, max and an HDR histogram (p50, p90, p99), since
//! start and over a sliding window of the last minute. Exported as
//! Prometheus text (`/metrics`) and as JSON on the admin API.
//!
//! [`Flights`] lists the requests in flight (age, stage, player) and keeps
//! the slow ones with the time each spent per stage.
//!
//! For a game server the metric that matters is request latency, not CPU:
//! the mean finds performance hotspots, the max finds latency hotspots.
//! Recording is a map lookup under a read lock and a histogram update
//! under a per-entry lock (benchmarked in docs/benchmarks.md).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use citadel_store::decorate::{Around, BoxFuture};
use serde::Serialize;

/// Slots of the sliding window and the length of each: the last minute,
/// in ten-second steps.
const WINDOW_SLOTS: usize = 6;
const SLOT: Duration = Duration::from_secs(10);
/// Longest latency a histogram holds, in µs (a minute); longer ones count
/// as a minute.
const HIGHEST_US: u64 = 60_000_000;
/// Entry points tracked at most: route templates, message kinds and
/// action names are few, but a title's custom action names come from
/// data; past this, new names share one `other` entry.
const ENTRIES_MAX: usize = 4096;

/// What kind of entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An HTTP route (the route template).
    Http,
    /// A WebSocket message, by action.
    Ws,
    /// An operation on a player, by action, per title (the rules engine
    /// and its scripts).
    Action,
    /// A blob store operation (`get`, `put`).
    Blob,
    /// A journal commit (write and fsync of one batch).
    Journal,
    /// A world store call (locks, top scores, raids, clans...), by method.
    World,
    /// A script function of a title (`module::function`: hooks, custom
    /// actions, item uses, raid checks), per title.
    Script,
    /// The message bus: publishing (`publish`) and handling a delivered
    /// message (`deliver:<purpose>`).
    Bus,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Ws => "ws",
            Kind::Action => "action",
            Kind::Blob => "blob",
            Kind::Journal => "journal",
            Kind::World => "world",
            Kind::Script => "script",
            Kind::Bus => "bus",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    kind: Kind,
    name: String,
    title: String,
}

fn histogram() -> Histogram<u64> {
    // 3 significant digits from 1 µs to a minute: about 30 KB each.
    Histogram::new_with_bounds(1, HIGHEST_US, 3).unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

#[derive(Debug)]
struct Entry {
    total: Histogram<u64>,
    sum_us: u64,
    max_us: u64,
    /// Window slots, newest last, each with the slot number it counts.
    window: VecDeque<(u64, Histogram<u64>, u64)>,
}

impl Entry {
    fn new() -> Entry {
        Entry { total: histogram(), sum_us: 0, max_us: 0, window: VecDeque::new() }
    }

    fn record(&mut self, us: u64, slot: u64) {
        let us = us.clamp(1, HIGHEST_US);
        self.total.saturating_record(us);
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
        if self.window.back().is_none_or(|(s, ..)| *s != slot) {
            self.window.push_back((slot, histogram(), 0));
            while self.window.len() > WINDOW_SLOTS {
                self.window.pop_front();
            }
        }
        if let Some((_, h, max)) = self.window.back_mut() {
            h.saturating_record(us);
            *max = (*max).max(us);
        }
    }
}

/// Latency statistics of one entry point over some span, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    fn of(h: &Histogram<u64>, sum_us: u64, max_us: u64) -> Stats {
        let ms = |us: u64| us as f64 / 1000.0;
        let count = h.len();
        Stats {
            count,
            mean_ms: if count == 0 { 0.0 } else { sum_us as f64 / count as f64 / 1000.0 },
            max_ms: ms(max_us),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
        }
    }
}

/// One entry point's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kind: Kind,
    pub name: String,
    /// The title, for actions; empty for the rest.
    pub title: String,
    pub since_start: Stats,
    pub last_minute: Stats,
}

/// Every entry point's latency. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Profiler {
    enabled: bool,
    started: Instant,
    entries: RwLock<HashMap<Key, Arc<Mutex<Entry>>>>,
    /// The runtime's last sampled busy ratio, as f64 bits.
    busy: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A histogram update cannot leave an entry half-written in a way that
    // matters; a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Profiler {
    /// A profiler; `enabled = false` records nothing (to measure what
    /// profiling costs).
    pub fn new(enabled: bool) -> Profiler {
        Profiler { enabled, started: Instant::now(), entries: RwLock::new(HashMap::new()), busy: Default::default() }
    }

    /// The runtime's busy ratio, as last sampled by the status task.
    pub fn busy_ratio(&self) -> f64 {
        f64::from_bits(self.busy.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn set_busy_ratio(&self, ratio: f64) {
        self.busy.store(ratio.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records one call of an entry point that took `took`.
    pub fn record(&self, kind: Kind, name: &str, title: &str, took: Duration) {
        if !self.enabled {
            return;
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = self.started.elapsed().as_secs() / SLOT.as_secs();
        let key = Key { kind, name: name.to_string(), title: title.to_string() };
        let found = self.entries.read().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let entry = match found {
            Some(e) => e,
            None => {
                let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
                let key = if map.len() >= ENTRIES_MAX && !map.contains_key(&key) {
                    Key { kind, name: "other".into(), title: String::new() }
                } else {
                    key
                };
                map.entry(key).or_insert_with(|| Arc::new(Mutex::new(Entry::new()))).clone()
            }
        };
        lock(&entry).record(us, slot);
    }

    /// Times `f` as one call of an entry point.
    pub async fn time<T>(&self, kind: Kind, name: &str, title: &str, f: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = f.await;
        self.record(kind, name, title, start.elapsed());
        out
    }

    /// Every entry point's statistics, by kind, name and title.
    pub fn rows(&self) -> Vec<Row> {
        let now_slot = self.started.elapsed().as_secs() / SLOT.as_secs();
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<Row> = map
            .iter()
            .map(|(k, e)| {
                let e = lock(e);
                let mut recent = histogram();
                let (mut sum, mut max) = (0u64, 0u64);
                for (slot, h, m) in &e.window {
                    if now_slot.saturating_sub(*slot) < WINDOW_SLOTS as u64 {
                        let _ = recent.add(h);
                        // The window's mean from its histogram (sums are kept per entry only).
                        sum = sum.saturating_add(h.mean().round() as u64 * h.len());
                        max = max.max(*m);
                    }
                }
                Row {
                    kind: k.kind,
                    name: k.name.clone(),
                    title: k.title.clone(),
                    since_start: Stats::of(&e.total, e.sum_us, e.max_us),
                    last_minute: Stats::of(&recent, sum, max),
                }
            })
            .collect();
        rows.sort_by(|a, b| (a.kind, &a.name, &a.title).cmp(&(b.kind, &b.name, &b.title)));
        rows
    }
}

/// Times every call of a store it decorates (`Decorated<dyn BlobStore,
/// Timing>`, `Decorated<dyn WorldStore, Timing>`), as entries of `kind`
/// named by method.
#[derive(Debug)]
pub struct Timing {
    pub profiler: Arc<Profiler>,
    pub kind: Kind,
}

impl Around for Timing {
    fn around<'a, T: Send + 'a>(&'a self, method: &'static str, call: BoxFuture<'a, T>) -> BoxFuture<'a, T> {
        Box::pin(self.profiler.time(self.kind, method, "", call))
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Gauges beside the latency table in `/metrics`.
#[derive(Debug, Clone)]
pub struct Gauges {
    pub sessions: usize,
    pub busy_ratio: f64,
    /// Connections the server closed itself, by reason, since start.
    pub closes: Vec<(&'static str, u64)>,
    /// Whether the message bus is reachable.
    pub bus_up: bool,
    /// Messages dropped since start, by where: `pushes` (a player's socket
    /// queue or pending list was full), `bus_queue` (a bus subscription's
    /// queue was full), `bus_unreachable` (published while the bus was down).
    pub dropped: Vec<(&'static str, u64)>,
}

/// The Prometheus text exposition of every entry point's latency since
/// start (a summary with p50, p90 and p99, `_sum` and `_count`), its max,
/// and the gauges.
pub fn prometheus(rows: &[Row], g: Gauges) -> String {
    let mut out = String::new();
    let name = "citadel_entry_latency_seconds";
    let _ = writeln!(out, "# HELP {name} Latency of each entry point since the server started.");
    let _ = writeln!(out, "# TYPE {name} summary");
    for r in rows {
        let labels = format!("kind=\"{}\",entry=\"{}\",title=\"{}\"", r.kind.as_str(), label(&r.name), label(&r.title));
        let s = &r.since_start;
        for (q, v) in [("0.5", s.p50_ms), ("0.9", s.p90_ms), ("0.99", s.p99_ms)] {
            let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {}", v / 1000.0);
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.mean_ms * s.count as f64 / 1000.0);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.count);
    }
    let max = "citadel_entry_latency_max_seconds";
    let _ = writeln!(out, "# HELP {max} Longest call of each entry point since the server started.");
    let _ = writeln!(out, "# TYPE {max} gauge");
    for r in rows {
        let labels = format!("kind=\"{}\",entry=\"{}\",title=\"{}\"", r.kind.as_str(), label(&r.name), label(&r.title));
        let _ = writeln!(out, "{max}{{{labels}}} {}", r.since_start.max_ms / 1000.0);
    }
    let _ = writeln!(out, "# HELP citadel_sessions Players in memory.");
    let _ = writeln!(out, "# TYPE citadel_sessions gauge");
    let _ = writeln!(out, "citadel_sessions {}", g.sessions);
    let _ = writeln!(
        out,
        "# HELP citadel_runtime_busy_ratio Share of time the runtime's workers were busy (danger near 0.5)."
    );
    let _ = writeln!(out, "# TYPE citadel_runtime_busy_ratio gauge");
    let _ = writeln!(out, "citadel_runtime_busy_ratio {}", g.busy_ratio);
    let closed = "citadel_connections_closed_total";
    let _ =
        writeln!(out, "# HELP {closed} Connections the server closed itself, by reason (timeouts, per-address limit).");
    let _ = writeln!(out, "# TYPE {closed} counter");
    for (reason, n) in &g.closes {
        let _ = writeln!(out, "{closed}{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP citadel_bus_up Whether the message bus between servers is reachable (1) or not (0).");
    let _ = writeln!(out, "# TYPE citadel_bus_up gauge");
    let _ = writeln!(out, "citadel_bus_up {}", u8::from(g.bus_up));
    let dropped = "citadel_messages_dropped_total";
    let _ = writeln!(
        out,
        "# HELP {dropped} Messages dropped, by where: pushes to players, bus subscriptions, publishes while the bus was down."
    );
    let _ = writeln!(out, "# TYPE {dropped} counter");
    for (place, n) in &g.dropped {
        let _ = writeln!(out, "{dropped}{{where=\"{place}\"}} {n}");
    }
    out
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for the player's session: behind the player's earlier
    /// requests, or while the session loads the player (lock, file).
    Queued,
    /// In the rules engine, outside the title's scripts.
    Rules,
    /// In one of the title's script functions.
    Script,
    /// In the world store (raids, clans, top scores, the map).
    World,
    /// Waiting for its journal record to be on disk.
    Journal,
    /// Waiting for the player's lock, held by another server (a binary
    /// upgrade hands the player over; a crashed server's lease runs out).
    /// Not the server's own slowness: it does not make a request slow.
    Lock,
}

const STAGES: [Stage; 6] = [Stage::Queued, Stage::Rules, Stage::Script, Stage::World, Stage::Journal, Stage::Lock];

fn stage_index(s: Stage) -> usize {
    STAGES.iter().position(|x| *x == s).unwrap_or(0)
}

/// One request in flight: who, what, since when, where it is, and the
/// time it spent in each stage so far.
#[derive(Debug)]
pub struct InFlight {
    id: u64,
    started: Instant,
    started_ms: i64,
    title: String,
    player: String,
    action: &'static str,
    at: Mutex<(Stage, Instant, [Duration; STAGES.len()])>,
}

impl InFlight {
    /// Moves the request to `stage`.
    pub fn enter(&self, stage: Stage) {
        let mut at = lock(&self.at);
        let now = Instant::now();
        let (current, since, ref mut spent) = *at;
        spent[stage_index(current)] += now - since;
        *at = (stage, now, *spent);
    }

    fn stages(&self) -> (Stage, BTreeMap<&'static str, f64>) {
        let at = lock(&self.at);
        let mut spent = at.2;
        spent[stage_index(at.0)] += at.1.elapsed();
        let names = ["queued", "rules", "script", "world", "journal", "lock"];
        (at.0, names.iter().zip(spent).filter(|(_, d)| !d.is_zero()).map(|(n, d)| (*n, ms(d))).collect())
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// Script functions timed during one operation: at most this many are
/// kept by name (an advance over a long absence may run hundreds of
/// hooks); the time of the rest still counts in the `script` stage.
const SCRIPTS_NAMED_MAX: usize = 64;

/// Hears the scripts of one operation: moves its request between the
/// `rules` and `script` stages, and keeps each script's time for the profile.
#[derive(Debug)]
pub struct ScriptTimes {
    flight: Arc<InFlight>,
    times: Mutex<Vec<(String, Duration)>>,
}

impl ScriptTimes {
    pub fn new(flight: Arc<InFlight>) -> Arc<ScriptTimes> {
        Arc::new(ScriptTimes { flight, times: Mutex::new(Vec::new()) })
    }

    /// Records every script timed into the profile, under `title`.
    pub fn record(&self, profiler: &Profiler, title: &str) {
        for (name, took) in lock(&self.times).drain(..) {
            profiler.record(Kind::Script, &name, title, took);
        }
    }
}

impl citadel_runtime::timing::ScriptObserver for ScriptTimes {
    fn started(&self, _function: &str) {
        self.flight.enter(Stage::Script);
    }

    fn finished(&self, function: &str, took: Duration) {
        self.flight.enter(Stage::Rules);
        let mut times = lock(&self.times);
        if times.len() < SCRIPTS_NAMED_MAX {
            times.push((function.to_string(), took));
        }
    }
}

/// A request in flight, as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct InFlightRow {
    pub id: u64,
    pub title: String,
    pub player: String,
    pub action: &'static str,
    pub age_ms: f64,
    pub stage: Stage,
}

/// A request that took longer than `slow_request_ms`, with where its time went.
#[derive(Debug, Clone, Serialize)]
pub struct SlowRequest {
    pub at_ms: i64,
    pub title: String,
    pub player: String,
    pub action: &'static str,
    pub total_ms: f64,
    pub stages: BTreeMap<&'static str, f64>,
}

/// Slow requests kept for the admin API (the log has all of them).
pub const SLOW_KEPT: usize = 100;

/// Requests in flight and the last slow ones.
#[derive(Debug)]
pub struct Flights {
    next: std::sync::atomic::AtomicU64,
    live: Mutex<HashMap<u64, Arc<InFlight>>>,
    slow: Mutex<VecDeque<SlowRequest>>,
    slow_after: Duration,
}

/// Ends a request's flight when dropped (answered, or given up).
#[derive(Debug)]
pub struct Flight {
    flights: Arc<Flights>,
    pub inflight: Arc<InFlight>,
}

impl Flights {
    pub fn new(slow_after: Duration) -> Arc<Flights> {
        Arc::new(Flights {
            next: Default::default(),
            live: Mutex::new(HashMap::new()),
            slow: Mutex::new(VecDeque::new()),
            slow_after,
        })
    }

    /// A request starts: queued for `player`'s session.
    pub fn begin(self: &Arc<Self>, title: &str, player: &str, action: &'static str, now_ms: i64) -> Flight {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let inflight = Arc::new(InFlight {
            id,
            started: now,
            started_ms: now_ms,
            title: title.to_string(),
            player: player.to_string(),
            action,
            at: Mutex::new((Stage::Queued, now, [Duration::ZERO; STAGES.len()])),
        });
        lock(&self.live).insert(id, inflight.clone());
        Flight { flights: self.clone(), inflight }
    }

    /// The player's queued requests wait for their lock (`waiting`), or
    /// stop waiting for it.
    pub fn waiting_for_lock(&self, title: &str, player: &str, waiting: bool) {
        let (from, to) = if waiting { (Stage::Queued, Stage::Lock) } else { (Stage::Lock, Stage::Queued) };
        for f in lock(&self.live).values().filter(|f| f.title == title && f.player == player) {
            if lock(&f.at).0 == from {
                f.enter(to);
            }
        }
    }

    /// Requests in flight, oldest first.
    pub fn in_flight(&self) -> Vec<InFlightRow> {
        let live = lock(&self.live);
        let mut rows: Vec<InFlightRow> = live
            .values()
            .map(|f| InFlightRow {
                id: f.id,
                title: f.title.clone(),
                player: f.player.clone(),
                action: f.action,
                age_ms: ms(f.started.elapsed()),
                stage: f.stages().0,
            })
            .collect();
        rows.sort_by(|a, b| b.age_ms.total_cmp(&a.age_ms));
        rows
    }

    /// The last slow requests, newest last.
    pub fn slow(&self) -> Vec<SlowRequest> {
        lock(&self.slow).iter().cloned().collect()
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let f = &self.inflight;
        lock(&self.flights.live).remove(&f.id);
        let total = f.started.elapsed();
        if total < self.flights.slow_after {
            return;
        }
        // Time waiting for another server's lock is not this server's.
        let waited = {
            let at = lock(&f.at);
            let mut w = at.2[stage_index(Stage::Lock)];
            if at.0 == Stage::Lock {
                w += at.1.elapsed();
            }
            w
        };
        if total.saturating_sub(waited) < self.flights.slow_after {
            return;
        }
        let (_, stages) = f.stages();
        tracing::warn!(
            title = %f.title, player = %f.player, action = f.action, total_ms = ms(total), stages = ?stages,
            "slow request"
        );
        let mut slow = lock(&self.flights.slow);
        if slow.len() >= SLOW_KEPT {
            slow.pop_front();
        }
        slow.push_back(SlowRequest {
            at_ms: f.started_ms,
            title: f.title.clone(),
            player: f.player.clone(),
            action: f.action,
            total_ms: ms(total),
            stages,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_counts_percentiles_and_max() {
        let p = Profiler::new(true);
        for ms in 1..=100u64 {
            p.record(Kind::Action, "build", "fort", Duration::from_millis(ms));
        }
        p.record(Kind::Http, "/health", "", Duration::from_micros(10));
        let rows = p.rows();
        assert_eq!(rows.len(), 2);
        let build = rows.iter().find(|r| r.name == "build").unwrap();
        let s = &build.since_start;
        assert_eq!((s.count, s.max_ms), (100, 100.0));
        assert!((s.p50_ms - 50.0).abs() < 0.5 && (s.p99_ms - 99.0).abs() < 0.5, "{s:?}");
        assert!((s.mean_ms - 50.5).abs() < 0.01);
        assert_eq!(build.last_minute.count, 100);
        let off = Profiler::new(false);
        off.record(Kind::Http, "/health", "", Duration::from_micros(10));
        assert!(off.rows().is_empty());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
