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

use citadel_runtime::raid::{self, Outcome};
use citadel_runtime::{PlayerState, Rng, Title};
use serde_json::json;

use super::{Next, Session};
use crate::apply::Op;
use crate::deps::Deps;
use crate::player_file::write_player;
use crate::protocol::{answer as serialize, Answer, ApiError, Code, WindowKind, WorldCommand};
use citadel_store::blob::Etag;
use citadel_store::world::{Board, PlayerInfo, Position, RaidRecord, RaidStatus, WorldError, PAGE_MAX};

/// Longest name prefix `search_players` takes (names are short).
const PREFIX_BYTES_MAX: usize = 64;
/// Random spots tried in a region when placing a new base, before the
/// region is searched: while it is mostly free, one or two do.
const PLACE_TRIES: usize = 8;
/// The side of the squares a crowded region is searched in, one read of
/// the bases in a square at a time: 81 spots, fewer than a page of the
/// world store (`PAGE_MAX`), so one read returns every base in it. A
/// region of 64 by 64 is 64 squares: placing a base costs at most that
/// many reads however full the map (64 random tries, each a write, placed
/// nobody once it was nearly full, and made every login cost 128 failed
/// writes; docs/benchmarks.md).
const SEARCH_SIDE: i32 = 9;
/// How long `raid_end` extends the raid's lock for its writes: enough for
/// a defender file read, a world commit and a write on slow storage.
pub(super) const RAID_WRITE_MS: i64 = 30_000;

pub(super) fn internal(e: WorldError) -> ApiError {
    ApiError::new(Code::Internal, e.to_string())
}

/// The owner name of a raid's lock on its defender.
pub(super) fn raid_owner(raid: &str) -> String {
    format!("raid:{raid}")
}

pub(super) fn outcome_of(r: &RaidRecord) -> Option<Outcome> {
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
pub(super) async fn apply_pending_defenses(
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
    etag = write_player(&*deps.blobs, title.id(), defender, &state, etag, deps.config.player_file_format).await?;
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
pub(super) fn new_raid_id(deps: &Deps, now: i64) -> String {
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
                            self.etag = write_player(
                                &*deps.blobs,
                                &tid,
                                &me,
                                &next,
                                self.etag.clone(),
                                deps.config.player_file_format,
                            )
                            .await?;
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

    /// The spot a map request names: all of region, x and y, or none for
    /// this player's base.
    fn spot(&self, action: &str, region: Option<String>, x: Option<i32>, y: Option<i32>) -> Result<Position, ApiError> {
        match (region, x, y) {
            (Some(region), Some(x), Some(y)) => Ok(Position { region, x, y }),
            (None, None, None) => self.position.clone().ok_or_else(|| {
                ApiError::rules(citadel_runtime::ActionError {
                    code: citadel_runtime::ErrorCode::NotAvailable,
                    message: "this base has no place on a map".into(),
                })
            }),
            _ => Err(ApiError::new(Code::InvalidArgument, format!("{action}: give region, x and y together, or none"))),
        }
    }

    /// Puts a new base in the least crowded region, on a random free spot.
    pub(super) async fn place(&mut self, deps: &Deps, title: &Title) -> Result<Option<Position>, ApiError> {
        let Some(map) = &title.manifest.world.map else { return Ok(None) };
        let ids: Vec<String> = map.regions.iter().map(|r| r.id.clone()).collect();
        let counts = deps.world.region_counts(title.id(), &ids).await.map_err(internal)?;
        let area = |r: &citadel_runtime::format::RegionDef| i64::from(r.width) * i64::from(r.height);
        // A full region is not tried at all: once the map fills up, each
        // new player would otherwise cost PLACE_TRIES writes per region.
        let mut regions: Vec<_> =
            map.regions.iter().filter(|r| counts.get(&r.id).copied().unwrap_or(0) < area(r)).collect();
        regions.sort_by_key(|r| counts.get(&r.id).copied().unwrap_or(0) * 1000 / area(r));
        let mut rng = Rng::new(self.rng.clone().next_u64() ^ 0x006d_6170);
        for region in regions {
            for _ in 0..PLACE_TRIES {
                let x = (rng.next_u64() % region.width as u64) as i32;
                let y = (rng.next_u64() % region.height as u64) as i32;
                if let Some(at) = self.place_at(deps, title, &region.id, x, y).await? {
                    return Ok(Some(at));
                }
            }
            // A crowded region: every square of it, from a random one, for
            // a spot that no base holds.
            let cols = (region.width + SEARCH_SIDE - 1) / SEARCH_SIDE;
            let squares = cols * ((region.height + SEARCH_SIDE - 1) / SEARCH_SIDE);
            let first = (rng.next_u64() % squares as u64) as i32;
            for k in 0..squares {
                let square = (first + k) % squares;
                let (x0, y0) = ((square % cols) * SEARCH_SIDE, (square / cols) * SEARCH_SIDE);
                let r = SEARCH_SIDE / 2;
                let center = Position { region: region.id.clone(), x: x0 + r, y: y0 + r };
                let bases = deps.world.near(title.id(), &center, r, PAGE_MAX).await.map_err(internal)?;
                let taken: std::collections::HashSet<(i32, i32)> =
                    bases.iter().map(|b| (b.position.x, b.position.y)).collect();
                let free: Vec<(i32, i32)> = (y0..(y0 + SEARCH_SIDE).min(region.height))
                    .flat_map(|y| (x0..(x0 + SEARCH_SIDE).min(region.width)).map(move |x| (x, y)))
                    .filter(|p| !taken.contains(p))
                    .collect();
                if free.is_empty() {
                    continue;
                }
                let (x, y) = free[(rng.next_u64() % free.len() as u64) as usize];
                if let Some(at) = self.place_at(deps, title, &region.id, x, y).await? {
                    return Ok(Some(at));
                }
            }
        }
        tracing::warn!(title = %title.id(), player = %self.key.1, "no free spot found on the map");
        Ok(None)
    }

    /// Puts the player's base on one spot; `None` if it is taken.
    async fn place_at(
        &self,
        deps: &Deps,
        title: &Title,
        region: &str,
        x: i32,
        y: i32,
    ) -> Result<Option<Position>, ApiError> {
        let at = Position { region: region.to_string(), x, y };
        if !deps.world.place(title.id(), &self.key.1, &at).await.map_err(internal)? {
            return Ok(None);
        }
        crate::relay::map_change(deps, title.id(), "placed", &self.key.1, &at, None).await;
        Ok(Some(at))
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
            WorldCommand::RaidEnd { raid, result, units } => {
                self.raid_end(deps, title, &raid, result, units, now).await
            }
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
                let at = self.spot("map_near", region, x, y)?;
                // The decoder refused radii outside 0..=MAP_RADIUS_MAX.
                let bases = deps.world.near(title.id(), &at, radius, limit).await.map_err(internal)?;
                serialize(&json!({ "at": at, "radius": radius, "bases": bases }))
            }
            WorldCommand::MapWatch { region, x, y, radius } => {
                let at = self.spot("map_watch", region, x, y)?;
                let area = crate::connections::Area::around(&at.region, at.x, at.y, radius);
                deps.connections.set_watch(title.id(), &self.key.1, Some(area));
                serialize(&json!({ "watching": { "at": at, "radius": radius } }))
            }
            WorldCommand::Inbox { limit } => self.read_inbox(deps, limit, now).await,
            WorldCommand::MapUnwatch {} => {
                deps.connections.set_watch(title.id(), &self.key.1, None);
                serialize(&json!({ "watching": null }))
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
                let from = self.position.replace(to.clone());
                crate::relay::map_change(deps, title.id(), "relocated", &self.key.1, &to, from.as_ref()).await;
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
