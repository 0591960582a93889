//! This server's entry in the world store's server list (what a gateway
//! picks servers from): address, titles with their content versions,
//! players in memory and the runtime's busy ratio, refreshed every
//! [`HEARTBEAT_INTERVAL`]. An entry not refreshed for [`STALE_MS`] is
//! dropped by the next reader; a server shutting down removes its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::deps::Deps;
use crate::session::Sessions;
use citadel_store::world::ServerStatus;

/// How often a server reports itself: often enough that a gateway sees a
/// dead server within seconds, rarely enough to cost nothing.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The busy ratio past which latency is in danger: an event loop busy half
/// the time queues work behind work.
pub const BUSY_WARNING: f64 = 0.5;

/// A server silent for three heartbeats is gone.
pub const STALE_MS: i64 = 3 * HEARTBEAT_INTERVAL.as_millis() as i64;

/// The shortest window a busy ratio is measured over. The first heartbeat
/// goes out as the server starts, microseconds after the sampler: a ratio
/// over so short a window is noise (any wake-up in it reads as a busy
/// server) and steered a gateway's players away from a new server for a
/// whole heartbeat. A shorter window reports the last ratio measured.
const MIN_BUSY_WINDOW: Duration = Duration::from_secs(1);

/// The share of wall time the runtime's workers spent busy since the last
/// sample, 0 to 1 (tokio's per-worker busy time; "unhalted time").
#[derive(Debug)]
struct BusySampler {
    at: Instant,
    busy: Duration,
    /// The last ratio measured over at least [`MIN_BUSY_WINDOW`]; 0 before.
    last: f64,
}

impl BusySampler {
    fn total() -> (Duration, usize) {
        let m = tokio::runtime::Handle::current().metrics();
        let workers = m.num_workers();
        ((0..workers).map(|w| m.worker_total_busy_duration(w)).sum(), workers.max(1))
    }

    fn new() -> BusySampler {
        BusySampler { at: Instant::now(), busy: BusySampler::total().0, last: 0.0 }
    }

    fn sample(&mut self) -> f64 {
        let (busy, workers) = BusySampler::total();
        let now = Instant::now();
        let elapsed = now.duration_since(self.at);
        if elapsed < MIN_BUSY_WINDOW {
            return self.last;
        }
        let wall = elapsed.as_secs_f64() * workers as f64;
        let ratio = busy.saturating_sub(self.busy).as_secs_f64() / wall;
        (self.at, self.busy, self.last) = (now, busy, ratio.clamp(0.0, 1.0));
        self.last
    }
}

/// This server's status now.
fn status(deps: &Deps, sessions: &Sessions, address: &str, busy: f64) -> ServerStatus {
    ServerStatus {
        id: deps.server_id.clone(),
        address: address.to_string(),
        titles: deps.titles.current().iter().map(|t| (t.id().to_string(), t.content_version.clone())).collect(),
        players: sessions.len() as i64,
        busy,
        heartbeat_ms: deps.clock.now_ms(),
        draining: sessions.draining(),
    }
}

/// Reports this server until `stop`, then removes its entry.
pub fn spawn(deps: Arc<Deps>, sessions: Arc<Sessions>, address: String, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut sampler = BusySampler::new();
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let busy = sampler.sample();
                    deps.profiler.set_busy_ratio(busy);
                    if busy >= BUSY_WARNING {
                        tracing::warn!(busy_ratio = busy, "the runtime is busy more than half the time: latency is at risk");
                    }
                    let s = status(&deps, &sessions, &address, busy);
                    if let Err(e) = deps.world.heartbeat(&s).await {
                        tracing::warn!(error = %e, "reporting this server's status failed");
                    }
                }
            }
        }
        if let Err(e) = deps.world.deregister(&deps.server_id).await {
            tracing::warn!(error = %e, "removing this server's status failed; it goes stale");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ratio_needs_a_window_of_a_second_and_counts_busy_workers() {
        let mut sampler = BusySampler::new();
        // Busy right away: the first heartbeat's sample is not a measure.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::spin_loop();
        }
        assert_eq!(sampler.sample(), 0.0, "a 50 ms window reports nothing measured yet");
        tokio::time::sleep(MIN_BUSY_WINDOW).await;
        let idle = sampler.sample();
        assert!(idle > 0.0 && idle < 0.2, "mostly asleep for a second: {idle}");
        assert_eq!(sampler.sample(), idle, "again at once: the last measure");
    }
}
