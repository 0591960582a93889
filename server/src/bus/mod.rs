//! The message bus between game servers (issue 18): publish a message to a
//! subject, subscribe to a pattern. Subjects are dot-separated tokens
//! (`citadel.ironhold.clan.c42.chat`); a pattern may use `*` for one token
//! and `>` (last) for one or more, as NATS does, so that the in-process
//! bus (the embedded default, one server) and NATS (many servers) mean the
//! same thing by the same subject.
//!
//! A subscriber that falls behind loses messages rather than slow anyone
//! down: each subscription has a bounded queue, and a message that finds it
//! full is dropped and counted (`Bus::dropped`). Publishing never waits for
//! a subscriber.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

pub mod local;
pub mod nats;

/// The largest message: a chat line, a map cell's change, an admin
/// operation or a wake-up are small; NATS refuses more than its
/// `max_payload` (1 MiB by default) anyway.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// Messages one subscription may have waiting before new ones are dropped:
/// a second of chat for a busy server's every clan, not an unbounded
/// backlog behind a stuck consumer.
pub const SUBSCRIPTION_QUEUE_MAX: usize = 4096;

/// The longest subject: prefix, title, purpose and ids, with room.
pub const SUBJECT_BYTES_MAX: usize = 256;

/// One message as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub payload: Bytes,
}

/// Why the bus refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("message of {0} bytes is over the bus limit of {MESSAGE_BYTES_MAX}")]
    TooLarge(usize),
    #[error("invalid subject `{0}`: dot-separated tokens of letters, digits, _ and -, wildcards only in patterns")]
    BadSubject(String),
    #[error("the bus is unreachable: {0}")]
    Unreachable(String),
}

/// Messages arriving for one subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Message>,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Subscription {
    pub(crate) fn new(
        rx: mpsc::Receiver<Message>,
        guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Subscription {
        Subscription { rx, _guard: guard }
    }

    /// The next message, or `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// A message if one is waiting now.
    pub fn try_next(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

/// Publish and subscribe.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + std::fmt::Debug {
    /// Sends `payload` to every subscription whose pattern matches
    /// `subject`. Returns once the bus has it, not once it is delivered.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;
    /// Messages on subjects matching `pattern`, from now on.
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError>;
    /// Messages dropped because a subscription's queue was full, since start.
    fn dropped(&self) -> u64;
    /// Messages not sent because the bus was unreachable, since start.
    fn lost(&self) -> u64 {
        0
    }
    /// Whether the bus is reachable now.
    fn up(&self) -> bool {
        true
    }
}

/// A count of dropped messages shared by a bus and its subscriptions.
#[derive(Debug, Default)]
pub struct Dropped(AtomicU64);

impl Dropped {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn token_ok(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a subject to publish to: tokens only, no wildcards.
pub fn check_subject(subject: &str) -> Result<(), BusError> {
    if subject.len() > SUBJECT_BYTES_MAX || !subject.split('.').all(token_ok) {
        return Err(BusError::BadSubject(subject.chars().take(SUBJECT_BYTES_MAX).collect()));
    }
    Ok(())
}

/// Checks a pattern to subscribe to: tokens, `*` for one, `>` last.
pub fn check_pattern(pattern: &str) -> Result<(), BusError> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    let ok = pattern.len() <= SUBJECT_BYTES_MAX
        && tokens.iter().enumerate().all(|(i, t)| token_ok(t) || *t == "*" || (*t == ">" && i == tokens.len() - 1));
    if ok {
        Ok(())
    } else {
        Err(BusError::BadSubject(pattern.chars().take(SUBJECT_BYTES_MAX).collect()))
    }
}

/// Whether `subject` (checked) matches `pattern` (checked), as NATS
/// matches them.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for pt in pattern.split('.') {
        if pt == ">" {
            return s.next().is_some();
        }
        match s.next() {
            Some(st) if pt == "*" || pt == st => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

/// An id as one subject token: plain ids as they are, any other as `_x`
/// and its bytes in hex (dots, spaces and wildcards never reach a subject).
pub fn token(id: &str) -> String {
    let plain = !id.is_empty()
        && !id.starts_with("_x")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        id.to_string()
    } else {
        let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("_x{hex}")
    }
}

/// A shared bus.
pub type SharedBus = Arc<dyn Bus>;

/// The bus the configuration names: NATS when `[nats]` is set, else the
/// in-process bus (one server). Publishes are timed by the profiler.
pub async fn connect(config: &crate::Config, profiler: &Arc<crate::profile::Profiler>) -> anyhow::Result<SharedBus> {
    let bus: SharedBus = match &config.nats {
        None => Arc::new(local::LocalBus::new()),
        Some(n) => {
            let name = format!("citadel {}", config.listen);
            let bus = nats::NatsBus::connect(&n.url, n.credentials.as_deref(), &n.subject_prefix, &name)
                .await
                .map_err(|e| anyhow::anyhow!("nats: {e}"))?;
            tracing::info!(url = %n.url, prefix = %n.subject_prefix, "the bus is NATS");
            Arc::new(bus)
        }
    };
    Ok(if profiler.enabled() { Arc::new(Timed { bus, profiler: profiler.clone() }) } else { bus })
}

/// A bus whose publishes show in the profile (`kind="bus"`).
#[derive(Debug)]
struct Timed {
    bus: SharedBus,
    profiler: Arc<crate::profile::Profiler>,
}

#[async_trait::async_trait]
impl Bus for Timed {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.profiler.time(crate::profile::Kind::Bus, "publish", "", self.bus.publish(subject, payload)).await
    }
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.bus.subscribe(pattern).await
    }
    fn dropped(&self) -> u64 {
        self.bus.dropped()
    }
    fn lost(&self) -> u64 {
        self.bus.lost()
    }
    fn up(&self) -> bool {
        self.bus.up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_nats_does() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*.c", "a.x.c"));
        assert!(!matches("a.*.c", "a.x.y.c"));
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c.d"));
        assert!(!matches("a.>", "a"));
        assert!(matches("*.>", "x.y"));
        assert!(!matches("a.*", "b.c"));
    }

    #[test]
    fn subjects_and_patterns_are_checked() {
        assert!(check_subject("citadel.ironhold.clan.c1.chat").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a.", "a.b\n", &"x".repeat(300)] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        for good in ["a.*.c", "a.>", "*", ">", "a.b"] {
            assert!(check_pattern(good).is_ok(), "{good:?}");
        }
        for bad in ["a.>.c", "a.**", "", "a..b", "a.b*"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }
}
