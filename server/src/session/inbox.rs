//! The player's inbox (see `citadel_store::world::Inbox`): a session
//! claims every unclaimed item when it starts and when the bus says one
//! arrived, applies each as a journaled operation, then marks it claimed
//! in the world store and pushes it to the player.
//!
//! Exactly once: the operation carries the key `inbox:<id>`, which the
//! player's state remembers; an item whose claim the world store missed
//! (the server died in between) is only marked claimed the next time.

use std::sync::Arc;

use citadel_runtime::Title;
use citadel_store::world::{InboxItem, InboxPut};
use serde_json::json;

use super::Session;
use crate::apply::{InboxGrant, Op};
use crate::deps::Deps;
use crate::protocol::{answer as serialize, Answer, ApiError, Push};

/// Unclaimed items one player may have waiting: a month of raid reports
/// and gifts for an active player; beyond it a sender is told `Full`.
pub const INBOX_UNCLAIMED_MAX: usize = 100;

/// How long an item waits to be claimed (and is listed after): 30 days.
pub const INBOX_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// The longest item id: with `inbox:` it must fit an idempotency key.
pub const INBOX_ID_BYTES_MAX: usize = crate::protocol::KEY_BYTES_MAX - "inbox:".len();

/// Puts an item in a player's inbox and wakes the server holding the
/// player, wherever it is. The item is the record: a lost wake-up only
/// delays it to the player's next session.
pub async fn send(deps: &Deps, item: &InboxItem) -> Result<InboxPut, ApiError> {
    if item.id.is_empty() || item.id.len() > INBOX_ID_BYTES_MAX {
        return Err(ApiError::new(crate::protocol::Code::Internal, format!("inbox item id `{}` is too long", item.id)));
    }
    let put = deps
        .world
        .put_inbox(item, INBOX_UNCLAIMED_MAX)
        .await
        .map_err(|e| ApiError::new(crate::protocol::Code::Internal, e.to_string()))?;
    match put {
        InboxPut::Added => crate::relay::inbox_wake(deps, &item.title, &item.player).await,
        InboxPut::Exists => {}
        InboxPut::Full => {
            tracing::warn!(title = %item.title, player = %item.player, id = %item.id, "inbox full; item dropped")
        }
    }
    Ok(put)
}

impl Session {
    /// Claims every unclaimed item of the player, oldest first. Skipped
    /// when the session may not change the player (the next start claims).
    pub(super) async fn claim_inbox(&mut self, deps: &Deps, title: &Title) {
        let now = deps.clock.now_ms();
        if self.fenced || deps.journal.failed() || self.hold_lease(deps, now).await.is_err() {
            return;
        }
        let items = match deps.world.unclaimed(&self.key.0, &self.key.1, now, INBOX_UNCLAIMED_MAX).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(player = %self.key.1, error = %e, "cannot read the inbox; the next start tries again");
                return;
            }
        };
        for item in items {
            let key = format!("inbox:{}", item.id);
            if self.state.answered(&key).is_some() {
                // Applied before the server died; only the mark was missing.
                mark_claimed(deps.world.clone(), item, now);
                continue;
            }
            let grant = InboxGrant {
                id: item.id.clone(),
                kind: item.kind.clone(),
                resources: item.resources.clone(),
                items: item.items.clone(),
            };
            let (world, connections) = (deps.world.clone(), deps.connections.clone());
            let done = Box::new(move |r: Result<Answer, ApiError>| {
                if let Err(e) = &r {
                    // A grant the title no longer knows: claimed all the same,
                    // never tried again at every login.
                    tracing::warn!(player = %item.player, id = %item.id, error = %e.message, "an inbox item did not apply");
                }
                if r.as_ref().err().is_some_and(|e| e.code == crate::protocol::Code::NotDurable.as_str()) {
                    return;
                }
                let push = Push::Inbox { item: json!(item) };
                connections.push(&item.title, &item.player, &push);
                mark_claimed(world, item, now);
            });
            self.run(deps, title, Op::Inbox { item: grant }, Some(key), now, None, done).await;
        }
    }

    /// The `inbox` request: the player's items, newest first.
    pub(super) async fn read_inbox(&self, deps: &Deps, limit: usize, now: i64) -> Result<Answer, ApiError> {
        let items = deps
            .world
            .inbox(&self.key.0, &self.key.1, now, limit)
            .await
            .map_err(|e| ApiError::new(crate::protocol::Code::Internal, e.to_string()))?;
        serialize(&json!({ "items": items }))
    }
}

/// Marks an applied item claimed in the world store, beside the session.
fn mark_claimed(world: Arc<dyn citadel_store::world::WorldStore>, item: InboxItem, now: i64) {
    tokio::spawn(async move {
        if let Err(e) = world.claim(&item.title, &item.player, &item.id, now).await {
            tracing::warn!(player = %item.player, id = %item.id, error = %e, "marking an inbox item claimed failed; the next start does");
        }
    });
}
