//! The live world between servers: what one server publishes on the bus
//! for players on the others, and the task that delivers what arrives to
//! the players on this one.
//!
//! # Subjects (under the NATS `subject_prefix`)
//! - `<title>.clan.<clan>.chat`: a clan chat line, to every online member.
//! - `<title>.clan.<clan>.changed`: a clan change (joined, left, kicked,
//!   promoted, invited, asked to join...), to every online member and to
//!   the player it is about.
//! - `<title>.map.<region>`: a base placed, relocated, raided, to every
//!   player watching that spot (`map_watch`).
//! - `<title>.inbox.<player>`: something arrived in the player's inbox;
//!   the server holding the player claims it at once.
//! - `cluster.titles`: a title's new version served by one server (every
//!   other serves it too, read from the shared version store and validated
//!   again), or a change it refused (every other reports the refusal).
//! - `cluster.admin`: an administrator's operation that every server
//!   carries out for its own players (end a player's sessions after a ban
//!   or a forced logout, a broadcast, draining a named server).
//!
//! Ids that are not plain tokens (a clan's id is its lowercased name, which
//! may hold spaces) are written as `_x` and their bytes in hex. Payloads
//! carry the ids in full; the subject only routes.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::token;
use crate::deps::Deps;
use crate::profile::Kind;
use crate::protocol::Push;
use crate::session::Sessions;
use citadel_store::world::Position;

/// What travels on a clan's subjects.
#[derive(Debug, Serialize, Deserialize)]
struct ClanMessage {
    title: String,
    clan: String,
    push: Push,
    /// Players told beside the members (one kicked, invited, or the
    /// members of a clan just disbanded).
    #[serde(default)]
    also: Vec<String>,
}

/// Tells every online member of `clan` (and `also`) of a change.
pub async fn clan_changed(deps: &Deps, title: &str, clan: &str, push: Push, also: Vec<String>) {
    let subject = format!("{}.clan.{}.changed", token(title), token(clan));
    publish(deps, &subject, &ClanMessage { title: title.to_string(), clan: clan.to_string(), push, also }).await;
}

fn chat_subject(title: &str, clan: &str) -> String {
    format!("{}.clan.{}.chat", token(title), token(clan))
}

/// Tells every online member of `clan`, on any server, of a chat line.
/// Best effort: the line is in the world store's chat history whatever
/// happens here.
pub async fn clan_chat(deps: &Deps, title: &str, clan: &str, line: &citadel_store::world::ChatLine) {
    let push = Push::Chat {
        clan: clan.to_string(),
        seq: line.seq,
        player: line.player.clone(),
        text: line.text.clone(),
        at_ms: line.at_ms,
    };
    let m = ClanMessage { title: title.to_string(), clan: clan.to_string(), push, also: Vec::new() };
    publish(deps, &chat_subject(title, clan), &m).await;
}

async fn publish(deps: &Deps, subject: &str, m: &impl Serialize) {
    publish_on(&deps.bus, subject, m).await;
}

async fn publish_on(bus: &crate::bus::SharedBus, subject: &str, m: &impl Serialize) {
    let payload = match serde_json::to_vec(m) {
        Ok(p) => Bytes::from(p),
        Err(_) => return,
    };
    if let Err(e) = bus.publish(subject, payload).await {
        // Lost messages are counted by the bus; a refused one is a bug.
        if !matches!(e, crate::bus::BusError::Unreachable(_)) {
            tracing::error!(subject, error = %e, "a message was refused by the bus");
        }
    }
}

/// What travels on a region's map subject.
#[derive(Debug, Serialize, Deserialize)]
struct MapMessage {
    title: String,
    push: Push,
}

/// Tells every player watching the spot (or the spot it left), on any
/// server, of a change on the map. Best effort, as chat.
pub async fn map_change(deps: &Deps, title: &str, change: &str, player: &str, at: &Position, from: Option<&Position>) {
    let push =
        Push::Map { change: change.to_string(), player: player.to_string(), at: at.clone(), from: from.cloned() };
    let subject = format!("{}.map.{}", token(title), token(&at.region));
    publish(deps, &subject, &MapMessage { title: title.to_string(), push }).await;
}

/// Pushes a map change to the players here who watch its spot.
fn deliver_map(deps: &Deps, m: &MapMessage) {
    let Push::Map { at, from, .. } = &m.push else { return };
    let mut players = deps.connections.watchers(&m.title, &at.region, at.x, at.y);
    if let Some(f) = from {
        players.extend(deps.connections.watchers(&m.title, &f.region, f.x, f.y));
        players.sort();
        players.dedup();
    }
    for p in players {
        deps.connections.push(&m.title, &p, &m.push);
    }
}

/// What travels on a player's inbox subject: only who to wake.
#[derive(Debug, Serialize, Deserialize)]
struct InboxWake {
    title: String,
    player: String,
}

/// Wakes the server holding the player (if any) to claim their inbox.
pub async fn inbox_wake(deps: &Deps, title: &str, player: &str) {
    inbox_wake_on(&deps.bus, title, player).await;
}

/// [`inbox_wake`] from outside a game server (the gateway, for a purchase).
pub async fn inbox_wake_on(bus: &crate::bus::SharedBus, title: &str, player: &str) {
    let subject = format!("{}.inbox.{}", token(title), token(player));
    publish_on(bus, &subject, &InboxWake { title: title.to_string(), player: player.to_string() }).await;
}

const TITLES_SUBJECT: &str = "cluster.titles";

/// A title change on one server, for the others.
#[derive(Debug, Serialize, Deserialize)]
struct TitleChange {
    from: String,
    title: String,
    /// The version now served there; `None` when the change was refused.
    serves: Option<String>,
    /// Why it was refused: `file:line:column: code: message` per error.
    #[serde(default)]
    refused: Vec<RemoteFinding>,
}

/// A diagnostic as it travels between servers.
#[derive(Debug, Serialize, Deserialize)]
struct RemoteFinding {
    file: String,
    #[serde(default)]
    line: Option<usize>,
    #[serde(default)]
    column: Option<usize>,
    #[serde(default)]
    pointer: Option<String>,
    message: String,
}

/// Tells every other server of the title changes an administrator made
/// here (pushes, reloads, rollbacks): a new version is served by all, a
/// refusal reported by all.
pub async fn titles_changed(deps: &Deps, reports: &[crate::titles::Report]) {
    use crate::titles::Outcome;
    for r in reports {
        let (serves, refused) = match r.outcome {
            Outcome::Unchanged => continue,
            Outcome::Swapped => (r.content_version.clone(), Vec::new()),
            Outcome::Refused => (
                None,
                r.diagnostics
                    .iter()
                    .filter(|d| d.severity == citadel_runtime::Severity::Error)
                    .map(|d| RemoteFinding {
                        file: d.file.clone(),
                        line: d.line,
                        column: d.column,
                        pointer: d.pointer.clone(),
                        message: format!("{}: {}", d.code, d.message),
                    })
                    .collect(),
            ),
        };
        let m = TitleChange { from: deps.server_id.clone(), title: r.title.clone(), serves, refused };
        publish(deps, TITLES_SUBJECT, &m).await;
    }
}

/// Follows a title change made on another server.
async fn follow_title(deps: &Deps, m: TitleChange) {
    if m.from == deps.server_id {
        return;
    }
    let report = match m.serves {
        Some(v) => deps.titles.follow(&m.title, &v).await,
        None => {
            let found = m
                .refused
                .into_iter()
                .map(|f| {
                    let mut d = citadel_runtime::Diagnostic::error("cluster", f.file, f.message);
                    d.line = f.line;
                    d.column = f.column;
                    d.pointer = f.pointer;
                    d
                })
                .collect();
            deps.titles.note_refusal(&m.title, &m.from, found)
        }
    };
    tracing::info!(title = %report.title, from = %m.from, outcome = ?report.outcome, "title change from another server");
}

const ADMIN_SUBJECT: &str = "cluster.admin";

/// An administrator's operation, for every server to carry out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminMessage {
    /// Close the player's sockets and end their session (a ban, a forced
    /// logout); their tokens are refused by the restriction already stored.
    EndSessions { title: String, player: String },
    /// A notice to every connected player.
    Broadcast { text: String },
    /// Stop (or resume) taking new players on the server named.
    Drain { server: String, on: bool },
    /// Have every live session claim its inbox: the server sending it lost
    /// messages while the bus was down (inbox wake-ups among them, maybe).
    SweepInbox,
}

#[derive(Debug, Serialize, Deserialize)]
struct FromServer {
    /// The server that published it (which carried it out already).
    from: String,
    #[serde(flatten)]
    message: AdminMessage,
}

/// Sends an administrator's operation to every other server; the caller
/// carries it out on this one.
pub async fn admin(deps: &Deps, message: AdminMessage) {
    publish(deps, ADMIN_SUBJECT, &FromServer { from: deps.server_id.clone(), message }).await;
}

/// Carries out an administrator's operation on this server's players;
/// returns how many sockets it reached.
pub async fn carry_out(deps: &Deps, sessions: &Arc<Sessions>, m: &AdminMessage) -> usize {
    match m {
        AdminMessage::EndSessions { title, player } => {
            let sockets = deps.connections.kick(title, player);
            let _ = sessions.admin_if_live(title, player, crate::session::AdminOp::Logout).await;
            sockets
        }
        AdminMessage::Broadcast { text } => deps.connections.broadcast(text),
        AdminMessage::Drain { server, on } => {
            if *server == deps.server_id {
                sessions.set_draining(*on);
                tracing::info!(draining = on, "drain set by an administrator on another server");
            }
            0
        }
        AdminMessage::SweepInbox => {
            sweep_inbox(sessions).await;
            0
        }
    }
}

/// How often the relay looks whether the bus is up (to notice it coming back).
const BUS_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Live sessions asked per second to claim their inbox in a sweep: 10,000
/// players take 5 s, and the world store sees a steady trickle of reads
/// instead of a burst when the bus comes back.
const INBOX_SWEEP_PER_SECOND: u32 = 2_000;

/// Asks every session live here to claim its inbox (paced).
async fn sweep_inbox(sessions: &Arc<Sessions>) {
    let keys = sessions.live_keys();
    tracing::info!(sessions = keys.len(), "claiming the inbox of every live session (the bus was down)");
    let pause = std::time::Duration::from_secs(1) / INBOX_SWEEP_PER_SECOND;
    for (title, player) in keys {
        let s = sessions.clone();
        tokio::spawn(async move {
            let _ = s.admin_if_live(&title, &player, crate::session::AdminOp::ClaimInbox).await;
        });
        tokio::time::sleep(pause).await;
    }
}

/// Watches the bus: when it comes back after being down, messages were
/// lost meanwhile, inbox wake-ups among them (the items themselves are in
/// the world store). This server's live sessions claim their inboxes, and
/// if this server lost messages of its own while down, every other server
/// is asked to do the same for its sessions.
fn watch_bus(deps: Arc<Deps>, sessions: Arc<Sessions>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BUS_WATCH_INTERVAL);
        let (mut was_up, mut lost_before) = (deps.bus.up(), deps.bus.lost());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let up = deps.bus.up();
            if up && !was_up {
                if deps.bus.lost() > lost_before {
                    admin(&deps, AdminMessage::SweepInbox).await;
                }
                sweep_inbox(&sessions).await;
            }
            if !up && was_up {
                lost_before = deps.bus.lost();
            }
            was_up = up;
        }
    });
}

/// Starts delivering what other servers (and this one) publish to the
/// players on this server, until `stop`.
pub async fn spawn(deps: Arc<Deps>, sessions: Arc<Sessions>, stop: CancellationToken) -> anyhow::Result<()> {
    watch_bus(deps.clone(), sessions.clone(), stop.clone());
    let bus_down = |e| anyhow::anyhow!("the bus: {e}");
    let mut chat = deps.bus.subscribe("*.clan.*.*").await.map_err(bus_down)?;
    let mut admin = deps.bus.subscribe(ADMIN_SUBJECT).await.map_err(bus_down)?;
    let mut map = deps.bus.subscribe("*.map.*").await.map_err(bus_down)?;
    let mut inbox = deps.bus.subscribe("*.inbox.*").await.map_err(bus_down)?;
    let mut titles = deps.bus.subscribe(TITLES_SUBJECT).await.map_err(bus_down)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                m = chat.next() => match m {
                    Some(m) => {
                        let started = std::time::Instant::now();
                        let Some(m) = decoded::<ClanMessage>(&m) else { continue };
                        deliver_to_clan(&deps, &m).await;
                        let what = if matches!(m.push, Push::Chat { .. }) { "deliver:chat" } else { "deliver:clan" };
                        deps.profiler.record(Kind::Bus, what, &m.title, started.elapsed());
                    }
                    None => return,
                },
                m = map.next() => match m {
                    Some(m) => {
                        let started = std::time::Instant::now();
                        let Some(m) = decoded::<MapMessage>(&m) else { continue };
                        deliver_map(&deps, &m);
                        deps.profiler.record(Kind::Bus, "deliver:map", &m.title, started.elapsed());
                    }
                    None => return,
                },
                m = titles.next() => match m {
                    Some(m) => {
                        let Some(m) = decoded::<TitleChange>(&m) else { continue };
                        // Beside the other deliveries: a load takes milliseconds.
                        let deps = deps.clone();
                        tokio::spawn(async move {
                            let started = std::time::Instant::now();
                            let title = m.title.clone();
                            follow_title(&deps, m).await;
                            deps.profiler.record(Kind::Bus, "deliver:titles", &title, started.elapsed());
                        });
                    }
                    None => return,
                },
                m = inbox.next() => match m {
                    Some(m) => {
                        let Some(m) = decoded::<InboxWake>(&m) else { continue };
                        if sessions.is_live(&m.title, &m.player) {
                            let (deps, sessions) = (deps.clone(), sessions.clone());
                            tokio::spawn(async move {
                                let started = std::time::Instant::now();
                                let op = crate::session::AdminOp::ClaimInbox;
                                let _ = sessions.admin_if_live(&m.title, &m.player, op).await;
                                deps.profiler.record(Kind::Bus, "deliver:inbox", &m.title, started.elapsed());
                            });
                        }
                    }
                    None => return,
                },
                m = admin.next() => match m {
                    Some(m) => {
                        let started = std::time::Instant::now();
                        let Some(m) = decoded::<FromServer>(&m) else { continue };
                        if m.from != deps.server_id {
                            // Not in line with chat: a logout waits for the session's save.
                            let (deps, sessions) = (deps.clone(), sessions.clone());
                            tokio::spawn(async move {
                                carry_out(&deps, &sessions, &m.message).await;
                                deps.profiler.record(Kind::Bus, "deliver:admin", "", started.elapsed());
                            });
                        }
                    }
                    None => return,
                },
            }
        }
    });
    Ok(())
}

/// A message's payload, or `None` (logged) when it does not decode: a
/// server of another version, or something else on our subjects.
fn decoded<T: serde::de::DeserializeOwned>(m: &crate::bus::Message) -> Option<T> {
    match serde_json::from_slice(&m.payload) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(subject = %m.subject, error = %e, "an unreadable message on the bus");
            None
        }
    }
}

/// Pushes `m` to the members of its clan who are on this server.
async fn deliver_to_clan(deps: &Deps, m: &ClanMessage) {
    if !deps.connections.any_in(&m.title) {
        // Nobody of this title here: no need to read the clan's members.
        return;
    }
    match deps.world.members(&m.title, &m.clan).await {
        Ok(members) => {
            let mut to: Vec<&str> = members.iter().map(|m| m.player.as_str()).collect();
            to.extend(m.also.iter().map(String::as_str));
            to.sort_unstable();
            to.dedup();
            for player in to {
                deps.connections.push(&m.title, player, &m.push);
            }
        }
        Err(e) => tracing::warn!(title = %m.title, clan = %m.clan, error = %e, "cannot read a clan's members"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_subject_tokens_without_collisions() {
        assert_eq!(token("ironhold"), "ironhold");
        assert_eq!(token("c-1_2"), "c-1_2");
        assert_eq!(token("iron wolves"), "_x69726f6e20776f6c766573");
        assert_eq!(token("a.b"), "_x612e62");
        assert_ne!(token("_x61"), "_x61", "an id that looks encoded is encoded too");
        assert_eq!(token(""), "_x");
        for id in ["iron wolves", "a.b", "*", ">", "_x61", "ümlaut"] {
            assert!(crate::bus::check_subject(&token(id)).is_ok(), "{id}");
        }
    }
}
