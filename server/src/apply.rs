//! Applying operations to a player's state: the one interpreter that
//! answers a player's requests and that journal replay and takeovers run
//! again, record by record. [`Op`] is what the journal stores of each.
//!
//! A leaf of the server: it knows the rules engine and the wire answers,
//! nothing of sessions, storage or the journal.

use citadel_runtime::{rules, Action, PlayerState, Rng, Title};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::protocol::{answer as serialize, Answer, ApiError};

/// An operation on a player's state, as the journal records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Log in: advance, then the title's login hook.
    Login,
    /// Advance timers and production to now (`get_state`).
    Advance,
    /// Advance to now because a timer ended: the session woke itself to
    /// complete it and push the events to the player (no request).
    Wake,
    /// Advance, then one action of the title's rules.
    Act { action: Action },
    /// A raid's result applied to the attacker (the world store took it
    /// before this record was written; see `citadel_runtime::raid::attack`).
    Raid { outcome: citadel_runtime::raid::Outcome },
    /// Pay for moving the base (the world store moved it first).
    Relocate,
    /// Pay for founding a clan (the world store founded it first).
    ClanFounded { clan: String },
    /// Customer support granted or revoked resources and items.
    Adjust { change: citadel_runtime::support::Adjustment },
    /// An item of the player's inbox claimed: its grant (if any) added.
    /// Journaled with the key `inbox:<id>`, so that it applies once even
    /// when the server dies before the world store marks it claimed.
    Inbox { item: InboxGrant },
    /// A gift to clan member `to` (both in `clan`, as the world store said):
    /// its resources taken, the gift kept on its way as `gift`.
    GiftSent { gift: String, to: String, clan: String, resources: citadel_runtime::format::Amounts },
    /// The gift is in its receiver's inbox.
    GiftDelivered { gift: String },
    /// The gift could not be delivered (the receiver's inbox is full): its
    /// resources come back.
    GiftReturned { gift: String },
    /// Customer support put back the player's state from a snapshot
    /// (the whole state is in the record, so replay needs no snapshot).
    Restore { state: Box<citadel_runtime::PlayerState>, snapshot: String },
}

/// What an inbox item brings to the player's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxGrant {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub resources: citadel_runtime::format::Amounts,
    #[serde(default)]
    pub items: citadel_runtime::format::Amounts,
}

/// The result of an operation that returns the player's state.
#[derive(serde::Serialize)]
struct WithState<'a> {
    events: &'a [rules::Event],
    state: &'a PlayerState,
    derived: rules::Derived,
    ready: rules::Ready,
}

/// The result of a rules action.
#[derive(serde::Serialize)]
struct Events<'a> {
    events: &'a [rules::Event],
}

/// Runs one operation on a player: the single place where sessions and
/// journal replay change player state.
pub(crate) fn execute(
    title: &Title,
    state: &mut PlayerState,
    op: &Op,
    now: i64,
    rng: &mut Rng,
) -> Result<Answer, ApiError> {
    let result = run_op(title, state, op, now, rng);
    if result.is_ok() && !matches!(op, Op::Advance | Op::Wake) {
        citadel_runtime::support::remember(state, &op_name(title, op), now);
    }
    result
}

fn run_op(title: &Title, state: &mut PlayerState, op: &Op, now: i64, rng: &mut Rng) -> Result<Answer, ApiError> {
    match op {
        Op::Login => {
            let events = rules::login(title, state, now, rng);
            let ready = rules::ready(title, state, now);
            serialize(&WithState { events: &events, state, derived: rules::derived(title, state), ready })
        }
        Op::Advance => {
            let events = rules::advance(title, state, now, rng);
            let ready = rules::ready(title, state, now);
            serialize(&WithState { events: &events, state, derived: rules::derived(title, state), ready })
        }
        Op::Wake => serialize(&Events { events: &rules::advance(title, state, now, rng) }),
        Op::Act { action } => match rules::apply(title, state, action, now, rng) {
            Ok(events) => serialize(&Events { events: &events }),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Raid { outcome } => match citadel_runtime::raid::attack(title, state, outcome, now, rng) {
            Ok(events) => serialize(&json!({ "events": events, "raid": outcome.raid, "result": outcome.result })),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Relocate => match citadel_runtime::raid::relocate(title, state, now, rng) {
            Ok(events) => serialize(&Events { events: &events }),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::ClanFounded { clan } => match citadel_runtime::clan::pay_founding(title, state, now, rng) {
            Ok(events) => serialize(&json!({ "events": events, "clan": clan })),
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Adjust { change } => match citadel_runtime::support::adjust(title, state, change, now, rng) {
            Ok(events) => {
                let (before, after) = citadel_runtime::support::amounts_changed(state, change);
                serialize(&json!({ "events": events, "before": before, "after": after }))
            }
            Err(e) => Err(ApiError::rules(e)),
        },
        Op::Inbox { item } => {
            // An item takes back (a refund) at most what the player holds.
            let at_most_held = |amounts: &citadel_runtime::format::Amounts, held: &citadel_runtime::format::Amounts| {
                amounts
                    .iter()
                    .map(|(id, &n)| (id.clone(), if n < 0 { n.max(-held.get(id).copied().unwrap_or(0)) } else { n }))
                    .filter(|&(_, n)| n != 0)
                    .collect::<citadel_runtime::format::Amounts>()
            };
            let change = citadel_runtime::support::Adjustment {
                resources: at_most_held(&item.resources, &state.resources),
                items: at_most_held(&item.items, &state.items),
            };
            let events = if change.resources.is_empty() && change.items.is_empty() {
                Vec::new()
            } else {
                citadel_runtime::support::adjust(title, state, &change, now, rng).map_err(ApiError::rules)?
            };
            serialize(&json!({ "events": events, "item": item.id }))
        }
        Op::GiftSent { gift, to, clan, resources } => {
            match citadel_runtime::clan::send_gift(title, state, gift, to, clan, resources, now, rng) {
                Ok(events) => serialize(&json!({ "events": events, "gift": gift })),
                Err(e) => Err(ApiError::rules(e)),
            }
        }
        Op::GiftDelivered { gift } => {
            serialize(&Events { events: &citadel_runtime::clan::gift_delivered(state, gift) })
        }
        Op::GiftReturned { gift } => serialize(&Events { events: &citadel_runtime::clan::gift_returned(state, gift) }),
        Op::Restore { state: earlier, snapshot } => match citadel_runtime::support::restore(state, earlier) {
            Ok(events) => serialize(&json!({ "events": events, "snapshot": snapshot })),
            Err(e) => Err(ApiError::rules(e)),
        },
    }
}

/// Remembers, after operation `state.seq` ran, how a request with an
/// idempotency key ended (live requests and replay alike), so that the
/// request sent again is answered from the record.
pub(crate) fn remember_key(state: &mut PlayerState, key: Option<&str>, result: &Result<Answer, ApiError>) {
    if let Some(k) = key {
        let seq = state.seq;
        state.remember_answer(k, seq, result.as_ref().err().map(|e| e.code));
    }
}

/// An operation's name in the profile: the action, `custom:<name>` for a
/// title's custom action (names the title does not define are
/// `custom:unknown`: a client must not grow the table).
pub(crate) fn op_name(title: &Title, op: &Op) -> String {
    let name = match op {
        Op::Login => "login",
        Op::Advance => "get_state",
        Op::Wake => "wake",
        Op::Raid { .. } => "raid_end",
        Op::Relocate => "relocate",
        Op::ClanFounded { .. } => "clan_create",
        Op::Adjust { .. } => "admin_adjust",
        Op::Inbox { .. } => "inbox_claim",
        Op::GiftSent { .. } => "clan_gift",
        Op::GiftDelivered { .. } => "gift_delivered",
        Op::GiftReturned { .. } => "gift_returned",
        Op::Restore { .. } => "admin_restore",
        Op::Act { action: citadel_runtime::Action::Custom { name, .. } } if title.actions.contains_key(name) => {
            return format!("custom:{name}")
        }
        Op::Act { action: citadel_runtime::Action::Custom { .. } } => "custom:unknown",
        Op::Act { action } => action.name(),
    };
    name.to_string()
}
