//! What customer support does to a player, as pure functions like every
//! other change: grant or revoke resources and items (`adjust`), put back
//! an earlier saved state (`restore`), and the short history of
//! operations kept in the player file for support to read.

use citadel_dsl::IdKind;
use serde::{Deserialize, Serialize};

use crate::format::Amounts;
use crate::rules::{advance, err, unknown, ActionError, ErrorCode, Event, Rng};
use crate::state::{HistoryEntry, PlayerState, HISTORY_MAX};
use crate::title::Title;

/// The largest amount support may grant or revoke in one change, per id:
/// far above any economy's numbers, far below where sums could overflow.
pub const ADJUST_AMOUNT_MAX: i64 = 1_000_000_000_000;

/// A change made by support: signed amounts (negative revokes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    #[serde(default)]
    pub resources: Amounts,
    #[serde(default)]
    pub items: Amounts,
}

impl Adjustment {
    pub fn is_empty(&self) -> bool {
        self.resources.values().chain(self.items.values()).all(|&n| n == 0)
    }
}

/// Advances `s` to `now_ms`, then adds every amount of `change` (granted
/// amounts are not capped by storage: support compensates in full). All or
/// nothing: every unknown id and every amount that would go below zero is
/// reported in one error, and the state is left as advancing alone leaves it.
pub fn adjust(
    title: &Title,
    s: &mut PlayerState,
    change: &Adjustment,
    now_ms: i64,
    rng: &mut Rng,
) -> Result<Vec<Event>, ActionError> {
    let mut events = advance(title, s, now_ms, rng);
    let mut problems = Vec::new();
    let checks = [(IdKind::Resource, &change.resources, &s.resources), (IdKind::Item, &change.items, &s.items)];
    for (kind, amounts, held) in checks {
        for (id, &delta) in amounts {
            let known = match kind {
                IdKind::Resource => title.resource(id).is_some(),
                _ => title.item(id).is_some(),
            };
            if !known {
                problems.push(unknown(title, kind, id).message);
                continue;
            }
            if delta.unsigned_abs() > ADJUST_AMOUNT_MAX as u64 {
                problems.push(format!("{id}: {delta} is beyond ±{ADJUST_AMOUNT_MAX}"));
                continue;
            }
            let have = held.get(id).copied().unwrap_or(0);
            if have + delta < 0 {
                problems.push(format!("cannot revoke {} {id}: the player has {have}", -delta));
            }
        }
    }
    if change.is_empty() && problems.is_empty() {
        problems.push("nothing to change: every amount is zero".to_string());
    }
    if !problems.is_empty() {
        let code = if problems.iter().any(|p| p.starts_with("unknown")) {
            ErrorCode::UnknownId
        } else {
            ErrorCode::InvalidArgument
        };
        return err(code, problems.join("; "));
    }
    for (id, &delta) in &change.resources {
        *s.resources.entry(id.clone()).or_insert(0) += delta;
    }
    for (id, &delta) in &change.items {
        let n = s.items.entry(id.clone()).or_insert(0);
        *n += delta;
        if *n == 0 {
            s.items.remove(id);
        }
    }
    events.push(Event::Adjusted { resources: change.resources.clone(), items: change.items.clone() });
    Ok(events)
}

/// Puts back an earlier saved state of the same player, keeping what must
/// only ever grow: the operation count (`seq`, which the journal numbers
/// by), the history (so that the restore itself shows in it) and the time
/// of the last snapshot.
pub fn restore(s: &mut PlayerState, earlier: &PlayerState) -> Result<Vec<Event>, ActionError> {
    if earlier.title != s.title {
        return err(
            ErrorCode::InvalidArgument,
            format!("the saved state is of title `{}`, not `{}`", earlier.title, s.title),
        );
    }
    let (seq, snapshot_ms) = (s.seq, s.snapshot_ms);
    let history = std::mem::take(&mut s.history);
    *s = earlier.clone();
    s.seq = seq;
    s.history = history;
    s.snapshot_ms = snapshot_ms;
    Ok(vec![Event::Restored { clock_ms: earlier.clock_ms }])
}

/// Notes a successful operation in the player's history (the newest last,
/// at most [`HISTORY_MAX`]).
pub fn remember(s: &mut PlayerState, op: &str, at_ms: i64) {
    if s.history.len() >= HISTORY_MAX {
        let extra = s.history.len() + 1 - HISTORY_MAX;
        s.history.drain(..extra);
    }
    s.history.push(HistoryEntry { seq: s.seq + 1, at_ms, op: op.to_string() });
}

/// The amounts of `change`'s ids in `s` after it was applied, and before
/// (after less the change), for an audit record: resources by id, items as
/// `item:<id>`.
pub fn amounts_changed(s: &PlayerState, change: &Adjustment) -> (Amounts, Amounts) {
    let held = |map: &Amounts, id: &str| map.get(id).copied().unwrap_or(0);
    let resources = change.resources.iter().map(|(id, d)| (id.clone(), held(&s.resources, id), *d));
    let items = change.items.iter().map(|(id, d)| (format!("item:{id}"), held(&s.items, id), *d));
    let all: Vec<(String, i64, i64)> = resources.chain(items).collect();
    let before = all.iter().map(|(k, now, d)| (k.clone(), now - d)).collect();
    let after = all.into_iter().map(|(k, now, _)| (k, now)).collect();
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::new_player;

    fn mini() -> Title {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mini");
        let (title, diags) = crate::load(&dir);
        title.unwrap_or_else(|| panic!("{diags:?}"))
    }

    fn amounts(pairs: &[(&str, i64)]) -> Amounts {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_grant_adds_beyond_storage_and_a_revoke_takes_away() {
        let title = mini();
        let mut s = new_player(&title, 0);
        let gold = s.resources["gold"];
        let change = Adjustment { resources: amounts(&[("gold", 1_000_000)]), items: Amounts::new() };
        let events = adjust(&title, &mut s, &change, 0, &mut Rng::new(1)).unwrap();
        assert_eq!(s.resources["gold"], gold + 1_000_000);
        let (before, after) = amounts_changed(&s, &change);
        assert_eq!((before["gold"], after["gold"]), (gold, gold + 1_000_000));
        assert!(events.iter().any(|e| matches!(e, Event::Adjusted { .. })));
        let back = Adjustment { resources: amounts(&[("gold", -1_000_000)]), items: Amounts::new() };
        adjust(&title, &mut s, &back, 0, &mut Rng::new(1)).unwrap();
        assert_eq!(s.resources["gold"], gold);
    }

    #[test]
    fn every_problem_is_reported_and_nothing_changes() {
        let title = mini();
        let mut s = new_player(&title, 0);
        let before = s.clone();
        let change = Adjustment {
            resources: amounts(&[("gld", 5), ("gold", -1_000_000_000), ("gems", 3)]),
            items: amounts(&[("no_such_item", 1)]),
        };
        let e = adjust(&title, &mut s, &change, 0, &mut Rng::new(1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownId);
        assert!(e.message.contains("unknown resource `gld`; did you mean `gold`?"), "{}", e.message);
        assert!(e.message.contains("cannot revoke 1000000000 gold"), "{}", e.message);
        assert!(e.message.contains("no_such_item"), "{}", e.message);
        assert_eq!(s, before);
        let nothing = adjust(&title, &mut s, &Adjustment::default(), 0, &mut Rng::new(1)).unwrap_err();
        assert_eq!(nothing.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn a_restore_keeps_the_operation_count_and_the_history() {
        let title = mini();
        let earlier = new_player(&title, 0);
        let mut s = earlier.clone();
        s.resources.insert("gold".into(), 1);
        s.seq = 7;
        remember(&mut s, "build", 5);
        restore(&mut s, &earlier).unwrap();
        assert_eq!(s.resources, earlier.resources);
        assert_eq!(s.seq, 7);
        assert_eq!(s.history.len(), 1);
        let mut other = earlier.clone();
        other.title = "other".into();
        assert!(restore(&mut s, &other).is_err());
    }

    #[test]
    fn the_history_keeps_the_newest_entries() {
        let mut s = PlayerState::default();
        for i in 0..(HISTORY_MAX as i64 + 5) {
            remember(&mut s, "collect", i);
            s.seq += 1;
        }
        assert_eq!(s.history.len(), HISTORY_MAX);
        assert_eq!(s.history.last().unwrap().at_ms, HISTORY_MAX as i64 + 4);
        assert_eq!(s.history[0].at_ms, 5);
    }
}
