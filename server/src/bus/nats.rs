//! The bus on NATS (`[nats]` in the configuration): many game servers on
//! one NATS share chat, map updates and cluster operations. Subjects get
//! the configured prefix on the wire, so that several deployments can share
//! one NATS; callers use the same subjects as on the in-process bus.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{check_pattern, check_subject, Bus, BusError, Dropped, Message, Subscription, MESSAGE_BYTES_MAX};

/// The bus on a NATS connection.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    prefix: String,
    dropped: Arc<Dropped>,
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
    /// connection `name`; subjects go out under `prefix`.
    pub async fn connect(url: &str, credentials: Option<&Path>, prefix: &str, name: &str) -> Result<NatsBus, BusError> {
        check_subject(prefix)?;
        let mut options = async_nats::ConnectOptions::new().name(name);
        if let Some(path) = credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| BusError::Unreachable(format!("reading credentials {}: {e}", path.display())))?;
        }
        let client = options.connect(url).await.map_err(|e| BusError::Unreachable(e.to_string()))?;
        Ok(NatsBus {
            client,
            prefix: prefix.to_string(),
            dropped: Arc::default(),
            queue: super::SUBSCRIPTION_QUEUE_MAX,
        })
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        check_subject(subject)?;
        if payload.len() > MESSAGE_BYTES_MAX {
            return Err(BusError::TooLarge(payload.len()));
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
        // "From now on": the server has the subscription before this returns.
        self.client.flush().await.map_err(|e| BusError::Unreachable(e.to_string()))?;
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
}
