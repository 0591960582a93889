//! The bus on NATS (`[nats]` in the configuration): many game servers on
//! one NATS share chat, map updates and cluster operations. Subjects get
//! the configured prefix on the wire, so that several deployments can share
//! one NATS; callers use the same subjects as on the in-process bus.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{check_pattern, check_subject, Bus, BusError, Dropped, Message, Subscription, MESSAGE_BYTES_MAX};

/// The longest pause between two attempts to reach NATS again: pushes
/// between servers flow again within a second or so of NATS returning.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// How long subscribing waits for NATS to confirm: NATS down at start must
/// not hold up a server; the client subscribes again when it is back.
const SUBSCRIBE_CONFIRM_WAIT: Duration = Duration::from_secs(2);

/// The bus on a NATS connection.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    prefix: String,
    dropped: Arc<Dropped>,
    lost: Arc<Dropped>,
    queue: usize,
}

/// Stops forwarding a subscription (and so unsubscribes) when dropped.
struct Forwarder(tokio::task::JoinHandle<()>);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl NatsBus {
    /// Connects to `url` (with a credentials file if given), naming this
    /// connection `name`; subjects go out under `prefix`. Returns at once
    /// even when NATS is down: the connection is made, and made again
    /// after every loss, in the background, for as long as the server runs.
    pub async fn connect(url: &str, credentials: Option<&Path>, prefix: &str, name: &str) -> Result<NatsBus, BusError> {
        check_subject(prefix)?;
        let client =
            client(url, credentials, name, "the bus (NATS)", "pushes between servers are lost until it is back")
                .await?;
        Ok(NatsBus {
            client,
            prefix: prefix.to_string(),
            dropped: Arc::default(),
            lost: Arc::default(),
            queue: super::SUBSCRIPTION_QUEUE_MAX,
        })
    }
}

/// A NATS connection named `name` that retries at start and reconnects
/// forever (at most [`RECONNECT_DELAY_MAX`] apart), logging each change
/// once as `what` (and, when lost, `meanwhile`: what stops working). Returns
/// at once even when NATS is down.
pub(crate) async fn client(
    url: &str,
    credentials: Option<&Path>,
    name: &str,
    what: &'static str,
    meanwhile: &'static str,
) -> Result<async_nats::Client, BusError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            RECONNECT_DELAY_MAX.min(Duration::from_millis(50u64.saturating_mul(attempts as u64)))
        })
        .event_callback(move |event| async move {
            // Logged once per change, not per message lost meanwhile.
            match event {
                async_nats::Event::Connected => tracing::info!("{what} is connected"),
                async_nats::Event::Disconnected => tracing::warn!("{what} is unreachable: {meanwhile}"),
                other => tracing::info!(event = %other, "{what}"),
            }
        });
    if let Some(path) = credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| BusError::Unreachable(format!("reading credentials {}: {e}", path.display())))?;
    }
    options.connect(url).await.map_err(|e| BusError::Unreachable(e.to_string()))
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        check_subject(subject)?;
        if payload.len() > MESSAGE_BYTES_MAX {
            return Err(BusError::TooLarge(payload.len()));
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
            // Not queued for later: a chat line or a wake-up hours late is
            // worse than none (the inbox and the world store keep the record).
            self.lost.add();
            return Err(BusError::Unreachable("not connected".into()));
        }
        self.client
            .publish(format!("{}.{subject}", self.prefix), payload)
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        check_pattern(pattern)?;
        let mut sub = self
            .client
            .subscribe(format!("{}.{pattern}", self.prefix))
            .await
            .map_err(|e| BusError::Unreachable(e.to_string()))?;
        // "From now on": the server has the subscription before this returns
        // (when NATS is up; the client subscribes again once it is back).
        match tokio::time::timeout(SUBSCRIBE_CONFIRM_WAIT, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(pattern, error = %e, "subscribed while the bus is unreachable"),
            Err(_) => tracing::warn!(pattern, "subscribed while the bus is unreachable"),
        }
        let (tx, rx) = mpsc::channel(self.queue);
        let dropped = self.dropped.clone();
        let strip = self.prefix.len() + 1;
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let subject = m.subject.as_str().get(strip..).unwrap_or_default().to_string();
                match tx.try_send(Message { subject, payload: m.payload }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => dropped.add(),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Ok(Subscription::new(rx, Some(Box::new(Forwarder(task)))))
    }

    fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    fn lost(&self) -> u64 {
        self.lost.get()
    }

    fn up(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}
