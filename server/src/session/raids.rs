//! Raids, run inside the attacker's session: `raid_start` locks an offline
//! defender and records the raid; `raid_end` decides or checks the battle
//! and commits its result once in the world store (the order of every step
//! is in `world.rs`'s module docs).

use citadel_runtime::raid::{self, Outcome, RaidResult};
use citadel_runtime::{rules, Rng, Title};
use serde_json::json;

use super::world::{apply_pending_defenses, internal, new_raid_id, outcome_of, raid_owner, RAID_WRITE_MS};
use super::{Next, Session};
use crate::apply::Op;
use crate::deps::Deps;
use crate::player_file::{player_lock, read_player};
use crate::protocol::{answer as serialize, Answer, ApiError, Code};
use citadel_store::world::{Lease, RaidRecord, RaidStatus};

/// How a raid's battle is decided: the client reports it, or the server
/// fights it with the units the attacker sent.
enum Army {
    Reported(RaidResult),
    Sent(citadel_runtime::format::Amounts),
}

impl Session {
    pub(super) async fn raid_start(
        &mut self,
        deps: &Deps,
        title: &Title,
        defender: &str,
        now: i64,
    ) -> Result<Answer, ApiError> {
        let Some(lock_ms) = raid::lock_ms(title) else {
            return Err(ApiError::rules(citadel_runtime::ActionError {
                code: citadel_runtime::ErrorCode::NotAvailable,
                message: format!("title `{}` has no raids", title.id()),
            }));
        };
        ApiError::check_player_id(defender)?;
        if defender == self.key.1 {
            return Err(ApiError::new(Code::InvalidArgument, "a player cannot raid their own base"));
        }
        let me = self.key.1.clone();
        if let Some(last) = deps.world.last_raid(title.id(), &me).await.map_err(internal)? {
            if last.status == RaidStatus::Started && last.expires_ms > now {
                return Err(ApiError::new(Code::RaidInProgress, "your previous raid is still running")
                    .details(json!({ "raid": last.id, "expires_ms": last.expires_ms })));
            }
        }
        let id = new_raid_id(deps, now);
        let lock = player_lock(title.id(), defender);
        let Some(lease) = deps.world.acquire(&lock, &raid_owner(&id), lock_ms, now).await.map_err(internal)? else {
            let holder = deps.world.holder(&lock, now).await.map_err(internal)?;
            return Err(match holder {
                Some(h) if h.owner.starts_with("raid:") => {
                    ApiError::new(Code::DefenderUnderAttack, format!("`{defender}` is being raided by someone else"))
                        .details(json!({ "until_ms": h.expires_ms }))
                }
                _ => ApiError::new(Code::DefenderOnline, format!("`{defender}` is playing now")),
            });
        };
        // From here every refusal gives the defender back at once. A
        // defender whose last server died holding them is first brought up
        // to date from its journal, as a login would.
        let key = (title.id().to_string(), defender.to_string());
        let (started, lease) = match crate::replay::take_over(deps, &key, lease.clone()).await {
            Ok(lease) => (self.raid_snapshot(deps, title, defender, &lease, id, now).await, lease),
            Err(e) => (Err(e), lease),
        };
        if started.is_err() {
            if let Err(e) = deps.world.release(&lease).await {
                tracing::warn!(lock = %lease.name, error = %e, "releasing a refused raid's lock failed; it expires");
            }
        }
        started
    }

    async fn raid_snapshot(
        &mut self,
        deps: &Deps,
        title: &Title,
        defender: &str,
        lease: &Lease,
        id: String,
        now: i64,
    ) -> Result<Answer, ApiError> {
        let Some((state, etag)) = read_player(&*deps.blobs, title.id(), defender).await? else {
            return Err(ApiError::new(Code::UnknownPlayer, format!("no player `{defender}` in {}", title.id())));
        };
        let (state, _) = apply_pending_defenses(deps, title, defender, state, etag, now).await?;
        // What the attacker fights: the base as of now (not written).
        let mut view = state;
        rules::advance(title, &mut view, now, &mut Rng::new(0));
        if let Some(until) = raid::shielded_until(&view, now) {
            return Err(ApiError::new(Code::DefenderShielded, format!("`{defender}` is shielded"))
                .details(json!({ "until_ms": until })));
        }
        let duration_ms = title.manifest.world.raids.as_ref().map_or(0, |r| r.duration_seconds * 1000);
        let record = RaidRecord {
            id: id.clone(),
            title: title.id().to_string(),
            attacker: self.key.1.clone(),
            defender: defender.to_string(),
            token: lease.token,
            started_ms: now,
            expires_ms: lease.expires_ms,
            status: RaidStatus::Started,
            defender_level: title.player_level(view.xp),
            lootable: raid::lootable(title, &view, now),
            result: None,
            defender_applied: false,
        };
        deps.world.insert_raid(&record).await.map_err(internal)?;
        raid_on_map(deps, title, "raid_started", defender).await;
        serialize(&json!({
            "raid": id,
            "defender": defender,
            "battle_ends_ms": now + duration_ms,
            "expires_ms": record.expires_ms,
            "lootable": record.lootable,
            "base": {
                "level": record.defender_level,
                "buildings": view.buildings,
                "units": view.units,
                "scores": view.scores,
            },
        }))
    }

    pub(super) async fn raid_end(
        &mut self,
        deps: &Deps,
        title: &Title,
        id: &str,
        result: Option<RaidResult>,
        units: Option<citadel_runtime::format::Amounts>,
        now: i64,
    ) -> Next {
        let invalid = |m: &str| Next::Answer(Err(ApiError::new(Code::InvalidArgument, m)));
        let army = match (raid::resolves(title), result, units) {
            (true, None, Some(units)) => Army::Sent(units),
            (true, ..) => {
                return invalid("raid_end: this title decides raids on the server: send `units`, not a `result`")
            }
            (false, Some(result), None) => Army::Reported(result),
            (false, ..) => return invalid("raid_end: send the battle's `result` (this title has no `resolve`)"),
        };
        match self.raid_commit(deps, title, id, army, now).await {
            Ok(outcome) => Next::Op(Op::Raid { outcome }),
            Err(e) => Next::Answer(Err(e)),
        }
    }

    /// Everything of `raid_end` up to and including the defender's side;
    /// returns the outcome to apply to the attacker.
    async fn raid_commit(
        &mut self,
        deps: &Deps,
        title: &Title,
        id: &str,
        army: Army,
        now: i64,
    ) -> Result<Outcome, ApiError> {
        let unknown = || ApiError::new(Code::UnknownRaid, format!("you started no raid `{id}`"));
        let record = deps.world.raid(id).await.map_err(internal)?.ok_or_else(unknown)?;
        if record.attacker != self.key.1 || record.title != title.id() {
            return Err(unknown());
        }
        if record.status == RaidStatus::Ended {
            // A result sent again (the answer was lost): the one taken is
            // applied, once (`attack` skips a raid already applied).
            return outcome_of(&record).ok_or_else(|| ApiError::new(Code::Internal, "an ended raid without a result"));
        }
        if now > record.expires_ms {
            return Err(ApiError::new(Code::RaidExpired, "the raid's time ran out; the result is not taken"));
        }
        let read_defender = || async {
            read_player(&*deps.blobs, title.id(), &record.defender)
                .await?
                .ok_or_else(|| ApiError::new(Code::Internal, "the defender's file vanished"))
        };
        // A battle fought here reads the defender's file first; the commit
        // below writes the defense on that same read.
        let mut defender_file = None;
        let result = match army {
            Army::Reported(result) => result,
            Army::Sent(units) => {
                // The battle is fought here, against the defender's base as
                // it stands (locked since the start: only time moved).
                let (defender, etag) = read_defender().await?;
                let mut view = defender.clone();
                defender_file = Some((defender, etag));
                rules::advance(title, &mut view, now, &mut Rng::new(0));
                let mut attacker = self.state.clone();
                rules::advance(title, &mut attacker, now, &mut self.rng.clone());
                raid::resolve(title, &attacker, &view, id, &record.lootable, &units, now).map_err(ApiError::rules)?
            }
        };
        let outcome = Outcome {
            raid: record.id.clone(),
            attacker: record.attacker.clone(),
            defender: record.defender.clone(),
            defender_level: record.defender_level,
            lootable: record.lootable.clone(),
            result: result.clone(),
        };
        // The whole check, on a copy: a refused result changes nothing.
        let mut trial = self.state.clone();
        raid::attack(title, &mut trial, &outcome, now, &mut self.rng.clone()).map_err(ApiError::rules)?;
        // Still ours? The same lease (owner and fencing token) is extended
        // for the writes; a raid whose lock expired and was taken fails here.
        let lock = player_lock(title.id(), &record.defender);
        let lease = Lease {
            name: lock,
            owner: raid_owner(id),
            token: record.token,
            expires_ms: record.expires_ms,
            recover_from: None,
        };
        let expired =
            || ApiError::new(Code::RaidExpired, "the raid's lock on the defender was lost; the result is not taken");
        let lease = deps.world.renew(&lease, RAID_WRITE_MS, now).await.map_err(internal)?.ok_or_else(expired)?;
        let (defender_state, etag) = match defender_file {
            Some(file) => file,
            None => read_defender().await?,
        };
        let ended = RaidRecord { status: RaidStatus::Ended, result: Some(result), ..record };
        if !deps.world.end_raid(&ended).await.map_err(internal)? {
            return Err(ApiError::new(Code::Internal, "the raid was ended elsewhere"));
        }
        raid_on_map(deps, title, "raid_ended", &ended.defender).await;
        report_to_defender(deps, title, &ended, now).await;
        // Committed: the rest is finished later if it fails now.
        if let Err(e) = apply_pending_defenses(deps, title, &ended.defender, defender_state, etag, now).await {
            tracing::warn!(raid = %id, error = %e.message, "applying a raid to its defender failed; their next load does");
        }
        if let Err(e) = deps.world.release(&lease).await {
            tracing::warn!(raid = %id, error = %e, "releasing the defender failed; the lock expires");
        }
        Ok(outcome)
    }
}

/// Tells map watchers of a raid on `defender`'s base (if it is on a map).
async fn raid_on_map(deps: &Deps, title: &Title, change: &str, defender: &str) {
    match deps.world.position(title.id(), defender).await {
        Ok(Some(at)) => crate::relay::map_change(deps, title.id(), change, defender, &at, None).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(defender, error = %e, "cannot find a raided base on the map"),
    }
}

/// Puts the raid's report in the defender's inbox (they read it wherever
/// they play next, or at once if they are online on any server). The
/// defense itself is applied to their file by the commit, not by this.
async fn report_to_defender(deps: &Deps, title: &Title, raid: &citadel_store::world::RaidRecord, now: i64) {
    let report = citadel_store::world::InboxItem {
        id: format!("raid-{}", raid.id),
        title: title.id().to_string(),
        player: raid.defender.clone(),
        kind: "raid_report".into(),
        from: raid.attacker.clone(),
        body: json!({ "raid": raid.id, "attacker": raid.attacker, "result": raid.result }),
        resources: Default::default(),
        items: Default::default(),
        created_ms: now,
        expires_ms: now + super::inbox::INBOX_TTL_MS,
        claimed_ms: None,
        revoked_ms: None,
    };
    if let Err(e) = super::inbox::send(deps, &report).await {
        tracing::warn!(raid = %raid.id, error = %e.message, "the raid report did not reach the defender's inbox");
    }
}
