//! Requests on the shared world, run inside the player's session (one at a
//! time with the player's other requests): raids, the map, top scores and
//! other players' profiles; and what a session does with the world store
//! when it starts (placing a new base, finishing raids a crash left half
//! applied) and whenever the player's public profile changes.
//!
//! A raid, in order: `raid_start` takes the defender's player lock for the
//! raid (so the defender is offline and nobody else raids them), reads
//! their file, applies any result still pending for them, checks the
//! shield, and records the raid with the lock's fencing token. `raid_end`
//! checks the result on a copy of the attacker, renews that same lease
//! (proving the raid still holds the defender), reads the defender's file,
//! then **commits** in the world store: the raid record goes from started
//! to ended with its result, once. Only then are both players changed: the
//! defender's file is written under the lock, conditional on the version
//! read, and the attacker's change is journaled like any action. Whatever
//! fails after the commit is finished later from the record (the defender
//! at their next load or raid, the attacker at their next session start),
//! and both changes are idempotent per raid id. An attacker who vanishes
//! before the commit leaves the defender untouched; the lock expires.

use std::collections::BTreeMap;

use citadel_runtime::raid::{self, Outcome, RaidResult};
use citadel_runtime::{rules, PlayerState, Rng, Title};
use serde_json::json;

use super::{Next, Session};
use crate::apply::Op;
use crate::deps::Deps;
use crate::player_file::{player_lock, read_player, write_player};
use crate::protocol::{answer as serialize, Answer, ApiError, Code, WindowKind, WorldCommand};
use citadel_store::blob::Etag;
use citadel_store::world::{Board, Lease, PlayerInfo, Position, RaidRecord, RaidStatus, WorldError};

/// Longest name prefix `search_players` takes (names are short).
const PREFIX_BYTES_MAX: usize = 64;
/// Random spots tried when placing a new base before giving up for now
/// (the next session start tries again).
const PLACE_TRIES: usize = 64;
/// How long `raid_end` extends the raid's lock for its writes: enough for
/// a defender file read, a world commit and a write on slow storage.
const RAID_WRITE_MS: i64 = 30_000;

pub(super) fn internal(e: WorldError) -> ApiError {
    ApiError::new(Code::Internal, e.to_string())
}

/// The owner name of a raid's lock on its defender.
fn raid_owner(raid: &str) -> String {
    format!("raid:{raid}")
}

fn outcome_of(r: &RaidRecord) -> Option<Outcome> {
    Some(Outcome {
        raid: r.id.clone(),
        attacker: r.attacker.clone(),
        defender: r.defender.clone(),
        defender_level: r.defender_level,
        lootable: r.lootable.clone(),
        result: r.result.clone()?,
    })
}

/// Publishes score changes to the top score lists.
async fn publish_scores(
    deps: &Deps,
    title: &Title,
    player: &str,
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    now: i64,
) -> Result<(), WorldError> {
    let windows = raid::score_windows(title, now);
    for stat in &title.manifest.scores {
        let (b, a) = (before.get(stat).copied().unwrap_or(0), after.get(stat).copied().unwrap_or(0));
        if a != b {
            deps.world.set_score(title.id(), stat, player, &windows, b, a).await?;
        }
    }
    Ok(())
}

fn info_of(
    title: &Title,
    player: &str,
    name: &str,
    s: &PlayerState,
    position: Option<Position>,
    now: i64,
) -> PlayerInfo {
    PlayerInfo {
        title: title.id().to_string(),
        player: player.to_string(),
        name: name.to_string(),
        level: title.player_level(s.xp),
        scores: s.scores.clone(),
        clan: None,
        position,
        last_seen_ms: now,
    }
}

/// Applies every ended raid still pending for `defender` to their state
/// and writes the file (the caller holds the defender's lock). Returns the
/// state and the file's version after.
async fn apply_pending_defenses(
    deps: &Deps,
    title: &Title,
    defender: &str,
    mut state: PlayerState,
    mut etag: Etag,
    now: i64,
) -> Result<(PlayerState, Etag), ApiError> {
    let pending = deps.world.pending_defenses(title.id(), defender).await.map_err(internal)?;
    if pending.is_empty() {
        return Ok((state, etag));
    }
    let before = state.scores.clone();
    for r in &pending {
        if let Some(o) = outcome_of(r) {
            raid::defend(title, &mut state, &o, now, &mut Rng::new(r.token as u64));
        }
    }
    etag = write_player(&*deps.blobs, title.id(), defender, &state, etag).await?;
    for r in &pending {
        deps.world.defense_applied(&r.id).await.map_err(internal)?;
    }
    let world = async {
        publish_scores(deps, title, defender, &before, &state.scores, now).await?;
        // The profile keeps its name, position and last seen time.
        let known = deps.world.info(title.id(), defender).await?;
        let (name, position, last_seen) = match known {
            Some(i) => (i.name, i.position, i.last_seen_ms),
            None => (defender.to_string(), None, state.last_login_ms.unwrap_or(state.created_ms)),
        };
        deps.world.put_info(&info_of(title, defender, &name, &state, position, last_seen)).await
    };
    // The file holds the result; the lists catch up at the next change.
    if let Err(e) = world.await {
        tracing::warn!(player = %defender, error = %e, "publishing a defender's scores failed");
    }
    Ok((state, etag))
}

/// A raid id: unique enough across servers and restarts.
fn new_raid_id(deps: &Deps, now: i64) -> String {
    use std::hash::BuildHasher;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let h = std::collections::hash_map::RandomState::new().hash_one((deps.server_id.as_str(), now, n));
    format!("{now:011x}{h:016x}")
}

impl Session {
    /// What a session does with the world store once it holds the player:
    /// finish raids a crash left half applied (as defender and as
    /// attacker), place a new base on the map, publish the profile.
    pub(super) async fn join_world(&mut self, deps: &Deps, title: &Title) -> Result<(), ApiError> {
        let now = deps.clock.now_ms();
        let (tid, me) = (self.key.0.clone(), self.key.1.clone());
        if raid::enabled(title) {
            let (state, etag) =
                apply_pending_defenses(deps, title, &me, self.state.clone(), self.etag.clone(), now).await?;
            (self.state, self.etag) = (state, etag);
            let last = deps.world.last_raid(&tid, &me).await.map_err(internal)?;
            if let Some(o) = last.as_ref().filter(|r| r.status == RaidStatus::Ended).and_then(outcome_of) {
                if self.state.last_raid.as_deref() != Some(o.raid.as_str()) {
                    let mut next = self.state.clone();
                    match raid::attack(title, &mut next, &o, now, &mut Rng::new(0)) {
                        Ok(_) => {
                            self.etag = write_player(&*deps.blobs, &tid, &me, &next, self.etag.clone()).await?;
                            self.state = next;
                        }
                        Err(e) => {
                            tracing::error!(raid = %o.raid, error = %e, "a committed raid no longer applies to its attacker")
                        }
                    }
                }
            }
        }
        if let Some(info) = deps.world.info(&tid, &me).await.map_err(internal)? {
            self.name = info.name;
        }
        self.position = deps.world.position(&tid, &me).await.map_err(internal)?;
        if self.position.is_none() {
            self.position = self.place(deps, title).await?;
        }
        self.publish(deps, title, true).await;
        Ok(())
    }

    /// Puts a new base in the least crowded region, on a random free spot.
    pub(super) async fn place(&mut self, deps: &Deps, title: &Title) -> Result<Option<Position>, ApiError> {
        let Some(map) = &title.manifest.world.map else { return Ok(None) };
        let ids: Vec<String> = map.regions.iter().map(|r| r.id.clone()).collect();
        let counts = deps.world.region_counts(title.id(), &ids).await.map_err(internal)?;
        let mut regions: Vec<_> = map.regions.iter().collect();
        regions.sort_by_key(|r| {
            counts.get(&r.id).copied().unwrap_or(0) * 1000 / (i64::from(r.width) * i64::from(r.height))
        });
        let mut rng = Rng::new(self.rng.clone().next_u64() ^ 0x006d_6170);
        for region in regions {
            for _ in 0..PLACE_TRIES {
                let x = (rng.next_u64() % region.width as u64) as i32;
                let y = (rng.next_u64() % region.height as u64) as i32;
                let at = Position { region: region.id.clone(), x, y };
                if deps.world.place(title.id(), &self.key.1, &at).await.map_err(internal)? {
                    return Ok(Some(at));
                }
            }
        }
        tracing::warn!(title = %title.id(), player = %self.key.1, "no free spot found on the map");
        Ok(None)
    }

    /// Writes the public profile and score changes, if anything public
    /// changed since the last time (or always, with `seen`: the login time).
    pub(super) async fn publish(&mut self, deps: &Deps, title: &Title, seen: bool) {
        let level = title.player_level(self.state.xp);
        let unchanged = self
            .published
            .as_ref()
            .is_some_and(|(l, s, p)| *l == level && *s == self.state.scores && *p == self.position);
        if unchanged && !seen {
            return;
        }
        let now = deps.clock.now_ms();
        let before = self.published.as_ref().map_or_else(|| self.loaded_scores.clone(), |(_, s, _)| s.clone());
        let info = info_of(title, &self.key.1, &self.name, &self.state, self.position.clone(), now);
        let result = async {
            publish_scores(deps, title, &self.key.1, &before, &self.state.scores, now).await?;
            deps.world.put_info(&info).await
        };
        match result.await {
            Ok(()) => self.published = Some((level, self.state.scores.clone(), self.position.clone())),
            Err(e) => tracing::warn!(player = %self.key.1, error = %e, "publishing the player's profile failed"),
        }
    }

    /// Runs one world request.
    pub(super) async fn world(&mut self, deps: &Deps, title: &Title, cmd: WorldCommand, now: i64) -> Next {
        match cmd {
            WorldCommand::RaidEnd { raid, result } => self.raid_end(deps, title, &raid, result, now).await,
            WorldCommand::Relocate { region, x, y } => self.relocate(deps, title, Position { region, x, y }, now).await,
            other => Next::Answer(self.world_answer(deps, title, other, now).await),
        }
    }

    /// The world requests answered at once (no operation on the player's state).
    async fn world_answer(
        &mut self,
        deps: &Deps,
        title: &Title,
        cmd: WorldCommand,
        now: i64,
    ) -> Result<Answer, ApiError> {
        match cmd {
            WorldCommand::RaidStart { defender } => self.raid_start(deps, title, &defender, now).await,
            WorldCommand::MapNear { region, x, y, radius, limit } => {
                let at = match (region, x, y) {
                    (Some(region), Some(x), Some(y)) => Position { region, x, y },
                    (None, None, None) => self.position.clone().ok_or_else(|| {
                        ApiError::rules(citadel_runtime::ActionError {
                            code: citadel_runtime::ErrorCode::NotAvailable,
                            message: "this base has no place on a map".into(),
                        })
                    })?,
                    _ => {
                        let msg = "map_near: give region, x and y together, or none";
                        return Err(ApiError::new(Code::InvalidArgument, msg));
                    }
                };
                // The decoder refused radii outside 0..=MAP_RADIUS_MAX.
                let bases = deps.world.near(title.id(), &at, radius, limit).await.map_err(internal)?;
                serialize(&json!({ "at": at, "radius": radius, "bases": bases }))
            }
            WorldCommand::TopScores { stat, window, offset, limit } => {
                let w = board_window(title, &stat, window, now)?;
                let board = Board { title: title.id(), stat: &stat, window: &w };
                let rows = deps.world.top(board, offset, limit).await.map_err(internal)?;
                serialize(&json!({ "stat": stat, "window": w, "rows": rows }))
            }
            WorldCommand::MyRank { stat, window, around } => {
                let w = board_window(title, &stat, window, now)?;
                self.my_rank(deps, Board { title: title.id(), stat: &stat, window: &w }, around).await
            }
            WorldCommand::SetName { name } => {
                if !valid_display_name(&name) {
                    let msg = "a name is 3 to 24 letters, digits, spaces, _ or -, without spaces at either end";
                    return Err(ApiError::new(Code::InvalidArgument, msg));
                }
                self.name = name.clone();
                // Written now, so that searches find the new name at once.
                self.published = None;
                self.publish(deps, title, true).await;
                serialize(&json!({ "name": name }))
            }
            WorldCommand::PlayerInfo { player } => {
                let unknown = || ApiError::new(Code::UnknownPlayer, format!("no player `{player}` in {}", title.id()));
                let mut info = deps.world.info(title.id(), &player).await.map_err(internal)?.ok_or_else(unknown)?;
                // Clan membership is read where it is kept, never stale.
                info.clan = deps.world.membership(title.id(), &player).await.map_err(internal)?.map(|m| m.clan);
                serialize(&info)
            }
            WorldCommand::SearchPlayers { prefix, after, limit } => {
                if prefix.len() > PREFIX_BYTES_MAX {
                    let msg = format!("a name prefix is at most {PREFIX_BYTES_MAX} bytes");
                    return Err(ApiError::new(Code::InvalidArgument, msg));
                }
                let after = after.as_ref().map(|(n, p)| (n.as_str(), p.as_str()));
                let players = deps.world.search(title.id(), &prefix, after, limit).await.map_err(internal)?;
                let next = players.last().map(|p| [p.name.clone(), p.player.clone()]);
                serialize(&json!({ "players": players, "next": next }))
            }
            WorldCommand::RaidEnd { .. } | WorldCommand::Relocate { .. } => {
                Err(ApiError::new(Code::Internal, "an operation on the player's state reached the query path"))
            }
        }
    }

    pub(super) async fn my_rank(&self, deps: &Deps, board: Board<'_>, around: usize) -> Result<Answer, ApiError> {
        let me = deps.world.rank(board, &self.key.1).await.map_err(internal)?;
        // The decoder refused more than `AROUND_MAX`.
        let k = around;
        let rows = match &me {
            Some(r) if k > 0 => {
                let first = (r.rank as usize).saturating_sub(k + 1);
                deps.world.top(board, first, 2 * k + 1).await.map_err(internal)?
            }
            _ => Vec::new(),
        };
        serialize(&json!({ "stat": board.stat, "window": board.window, "me": me, "around": rows }))
    }

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
        result: RaidResult,
        now: i64,
    ) -> Next {
        match self.raid_commit(deps, title, id, result, now).await {
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
        result: RaidResult,
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
        let (defender_state, etag) = read_player(&*deps.blobs, title.id(), &record.defender)
            .await?
            .ok_or_else(|| ApiError::new(Code::Internal, "the defender's file vanished"))?;
        let ended = RaidRecord { status: RaidStatus::Ended, result: Some(result), ..record };
        if !deps.world.end_raid(&ended).await.map_err(internal)? {
            return Err(ApiError::new(Code::Internal, "the raid was ended elsewhere"));
        }
        // Committed: the rest is finished later if it fails now.
        if let Err(e) = apply_pending_defenses(deps, title, &ended.defender, defender_state, etag, now).await {
            tracing::warn!(raid = %id, error = %e.message, "applying a raid to its defender failed; their next load does");
        }
        if let Err(e) = deps.world.release(&lease).await {
            tracing::warn!(raid = %id, error = %e, "releasing the defender failed; the lock expires");
        }
        Ok(outcome)
    }

    pub(super) async fn relocate(&mut self, deps: &Deps, title: &Title, to: Position, now: i64) -> Next {
        let Some(map) = &title.manifest.world.map else {
            return Next::Answer(Err(ApiError::rules(citadel_runtime::ActionError {
                code: citadel_runtime::ErrorCode::NotAvailable,
                message: format!("title `{}` has no world map", title.id()),
            })));
        };
        let Some(region) = map.regions.iter().find(|r| r.id == to.region) else {
            let help = citadel_runtime::diagnostic::did_you_mean(&to.region, map.regions.iter().map(|r| r.id.as_str()))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Next::Answer(Err(ApiError::new(Code::InvalidArgument, format!("no region `{}`{help}", to.region))));
        };
        if to.x < 0 || to.y < 0 || to.x >= region.width || to.y >= region.height {
            let msg = format!("region `{}` is {} by {} spots", region.id, region.width, region.height);
            return Next::Answer(Err(ApiError::new(Code::InvalidArgument, msg)));
        }
        // Cost and cooldown first, on a copy; the move only if they pass.
        let mut trial = self.state.clone();
        if let Err(e) = raid::relocate(title, &mut trial, now, &mut self.rng.clone()) {
            return Next::Answer(Err(ApiError::rules(e)));
        }
        match deps.world.place(title.id(), &self.key.1, &to).await {
            Ok(true) => {
                self.position = Some(to);
                Next::Op(Op::Relocate)
            }
            Ok(false) => Next::Answer(Err(ApiError::new(Code::SpotTaken, "another base is on that spot"))),
            Err(e) => Next::Answer(Err(internal(e))),
        }
    }
}

/// Display names (and clan names): 3 to 24 letters, digits, spaces, `_`
/// or `-`, without spaces at either end.
pub(super) fn valid_display_name(name: &str) -> bool {
    (3..=24).contains(&name.chars().count())
        && name.trim() == name
        && name.chars().all(|c| c.is_alphanumeric() || c == ' ' || c == '_' || c == '-')
}

/// The window key a top score request means, after checking its stat.
fn board_window(title: &Title, stat: &str, window: WindowKind, now: i64) -> Result<String, ApiError> {
    if !title.manifest.scores.iter().any(|s| s == stat) {
        let help = citadel_runtime::diagnostic::did_you_mean(stat, title.manifest.scores.iter().map(String::as_str))
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        return Err(ApiError::new(Code::InvalidArgument, format!("no score stat `{stat}`{help}")));
    }
    let windows = raid::score_windows(title, now);
    match window {
        WindowKind::All => Ok(windows[0].clone()),
        WindowKind::Week => Ok(windows[1].clone()),
        WindowKind::Season => windows
            .get(2)
            .cloned()
            .ok_or_else(|| ApiError::new(Code::InvalidArgument, "this title has no season running")),
    }
}
