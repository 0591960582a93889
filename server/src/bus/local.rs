//! The in-process bus: the embedded default, for one server. Publishing
//! hands a message to every matching subscription's bounded queue and
//! never waits: a full queue drops the message and counts it.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{check_pattern, check_subject, matches, Bus, BusError, Dropped, Message, Subscription, MESSAGE_BYTES_MAX};

#[derive(Debug)]
struct Sub {
    id: u64,
    pattern: String,
    tx: mpsc::Sender<Message>,
}

#[derive(Debug, Default)]
struct Inner {
    subs: Mutex<Vec<Sub>>,
    next_id: std::sync::atomic::AtomicU64,
    dropped: Dropped,
}

/// The in-process bus.
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    inner: Arc<Inner>,
    queue: usize,
}

/// Removes its subscription from the bus when dropped.
struct Unsubscribe {
    bus: Weak<Inner>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.subs.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| s.id != self.id);
        }
    }
}

impl LocalBus {
    pub fn new() -> LocalBus {
        LocalBus::with_queue(super::SUBSCRIPTION_QUEUE_MAX)
    }

    /// A bus whose subscriptions queue at most `queue` messages (tests).
    pub fn with_queue(queue: usize) -> LocalBus {
        LocalBus { inner: Arc::default(), queue: queue.max(1) }
    }

    /// Subscriptions open now.
    pub fn subscriptions(&self) -> usize {
        self.inner.subs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[async_trait::async_trait]
impl Bus for LocalBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        check_subject(subject)?;
        if payload.len() > MESSAGE_BYTES_MAX {
            return Err(BusError::TooLarge(payload.len()));
        }
        let subs = self.inner.subs.lock().unwrap_or_else(|p| p.into_inner());
        for s in subs.iter().filter(|s| matches(&s.pattern, subject)) {
            let m = Message { subject: subject.to_string(), payload: payload.clone() };
            if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(m) {
                self.inner.dropped.add();
            }
        }
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        check_pattern(pattern)?;
        let (tx, rx) = mpsc::channel(self.queue);
        let id = self.inner.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.subs.lock().unwrap_or_else(|p| p.into_inner()).push(Sub { id, pattern: pattern.to_string(), tx });
        let guard = Unsubscribe { bus: Arc::downgrade(&self.inner), id };
        Ok(Subscription::new(rx, Some(Box::new(guard))))
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_reaches_every_matching_subscription_only() {
        let bus = LocalBus::new();
        let mut chat = bus.subscribe("c.t.clan.*.chat").await.unwrap();
        let mut all = bus.subscribe("c.t.>").await.unwrap();
        let mut other = bus.subscribe("c.u.>").await.unwrap();
        bus.publish("c.t.clan.k1.chat", Bytes::from_static(b"hello")).await.unwrap();
        bus.publish("c.t.map.r.1.2", Bytes::from_static(b"moved")).await.unwrap();
        assert_eq!(chat.next().await.unwrap().payload, Bytes::from_static(b"hello"));
        assert!(chat.try_next().is_none());
        assert_eq!(all.next().await.unwrap().subject, "c.t.clan.k1.chat");
        assert_eq!(all.next().await.unwrap().subject, "c.t.map.r.1.2");
        assert!(other.try_next().is_none());
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_messages_counted_and_blocks_nobody() {
        let bus = LocalBus::with_queue(3);
        let mut slow = bus.subscribe("a.>").await.unwrap();
        let mut fast = bus.subscribe("a.>").await.unwrap();
        for i in 0..5u8 {
            bus.publish("a.b", Bytes::from(vec![i])).await.unwrap();
            assert_eq!(fast.next().await.unwrap().payload[0], i, "in order");
        }
        assert_eq!(bus.dropped(), 2);
        let kept: Vec<u8> = std::iter::from_fn(|| slow.try_next()).map(|m| m.payload[0]).collect();
        assert_eq!(kept, vec![0, 1, 2], "the oldest kept, the newest dropped");
    }

    #[tokio::test]
    async fn bad_input_is_refused_and_a_dropped_subscription_goes() {
        let bus = LocalBus::new();
        assert!(matches!(bus.publish("a.*", Bytes::new()).await, Err(BusError::BadSubject(_))));
        assert!(matches!(bus.subscribe("a.>.b").await, Err(BusError::BadSubject(_))));
        let big = Bytes::from(vec![0; MESSAGE_BYTES_MAX + 1]);
        assert_eq!(bus.publish("a.b", big).await, Err(BusError::TooLarge(MESSAGE_BYTES_MAX + 1)));
        let s = bus.subscribe("a.b").await.unwrap();
        assert_eq!(bus.subscriptions(), 1);
        drop(s);
        assert_eq!(bus.subscriptions(), 0);
        bus.publish("a.b", Bytes::new()).await.unwrap();
    }
}
