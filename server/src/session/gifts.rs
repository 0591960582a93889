//! Gifts between clan members, delivered exactly once. The giver's
//! `clan_gift` is a journaled operation that takes the resources and keeps
//! the gift in the player's `gifts.outgoing`; once its record is durable
//! the session puts the gift in the receiver's inbox (an insert keyed by
//! the gift's id, so doing it twice adds nothing) and then journals that
//! it was delivered, or, when the receiver's inbox is full, gives the
//! resources back. A server that dies between the two leaves the gift in
//! the player's state (file or journal): the player's next session, on any
//! server, delivers it. The receiver claims it like any inbox item.

use std::sync::{Arc, Mutex};

use citadel_runtime::Title;
use citadel_store::world::{InboxItem, InboxPut};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::inbox::INBOX_TTL_MS;
use super::Session;
use crate::apply::Op;
use crate::deps::Deps;

/// A gift's id: unique among every gift any player receives, short enough
/// for an inbox item id whatever the giver's id (a hash of the giver, and
/// the number of the operation that sent it).
pub(super) fn gift_id(giver: &str, seq: u64) -> String {
    let hash = Sha256::digest(giver.as_bytes());
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("gift:{hex}:{seq}")
}

/// Gifts whose records are durable, waiting to be delivered, and the
/// session's wake-up for them.
#[derive(Default)]
pub(super) struct Ready {
    ids: Mutex<Vec<String>>,
    pub(super) notify: tokio::sync::Notify,
}

impl Ready {
    /// Every gift of a state just loaded: what a file or a replayed journal
    /// holds is durable.
    pub(super) fn of(state: &citadel_runtime::PlayerState) -> Arc<Ready> {
        let ready = Ready::default();
        *ready.ids.lock().unwrap_or_else(|p| p.into_inner()) =
            state.gifts.outgoing.iter().map(|g| g.id.clone()).collect();
        Arc::new(ready)
    }

    /// The gift's record is durable: the session may deliver it.
    pub(super) fn durable(&self, id: String) {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<String> {
        // One push or take at a time; a poisoned lock still holds a whole list.
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Session {
    /// Delivers every gift whose record is durable. A gift the world store
    /// could not take (it is down) stays on its way, for the player's next
    /// session. Skipped while the session may not change the player.
    pub(super) async fn deliver_gifts(&mut self, deps: &Deps, title: &Title) {
        let now = deps.clock.now_ms();
        if self.fenced || deps.journal.failed() || self.hold_lease(deps, now).await.is_err() {
            return;
        }
        for id in self.gifts_ready.take() {
            let Some(g) = self.state.gifts.outgoing.iter().find(|g| g.id == id).cloned() else { continue };
            let item = InboxItem {
                id: g.id.clone(),
                title: self.key.0.clone(),
                player: g.to.clone(),
                kind: "gift".to_string(),
                from: self.key.1.clone(),
                body: json!({ "clan": g.clan, "sent_ms": g.sent_ms }),
                resources: g.resources.clone(),
                items: Default::default(),
                created_ms: now,
                expires_ms: now.saturating_add(INBOX_TTL_MS),
                claimed_ms: None,
                revoked_ms: None,
            };
            let op = match super::inbox::send(deps, &item).await {
                Ok(InboxPut::Added | InboxPut::Exists) => Op::GiftDelivered { gift: g.id },
                Ok(InboxPut::Full) => Op::GiftReturned { gift: g.id },
                Err(e) => {
                    tracing::warn!(player = %self.key.1, gift = %g.id, error = %e.message, "a gift could not be delivered; the player's next session tries again");
                    continue;
                }
            };
            let done = self.push_events(deps, now);
            self.run(deps, title, op, None, now, None, done).await;
        }
    }
}
