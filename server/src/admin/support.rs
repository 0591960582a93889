//! Customer support on the admin API: find a player, see their state and
//! history, grant or revoke resources and items, ban and unban, force a
//! logout, restore an earlier snapshot. Changes to a player's state run in
//! the player's session like any action (journaled, then saved), so they
//! never race the player's own requests; a player offline here gets a
//! session for the change, which saves and ends right after it.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use citadel_runtime::support::Adjustment;
use citadel_runtime::PlayerState;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Who;
use super::{audit, bad_request, body, internal, Change, Fail};
use crate::player_file::{player_lock, read_player, snapshot_dir};
use crate::protocol::{ApiError, Code};
use crate::session::AdminOp;
use crate::state::AppState;
use citadel_store::world::Restriction;

/// The longest reason an admin may give: a sentence or two for the audit
/// log and the banned player's error message.
const REASON_BYTES_MAX: usize = 500;

/// The largest snapshot a restore takes: the restore's journal record
/// carries the whole state, and a record is at most 1 MiB.
const RESTORE_BYTES_MAX: usize = crate::journal::RECORD_BYTES_MAX / 2;

/// Audit entries shown with a player.
const PLAYER_AUDIT_SHOWN: usize = 20;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/players", get(search))
        .route("/payments", get(payments))
        .route("/players/{title}/{player}", get(view))
        .route("/players/{title}/{player}/adjust", post(adjust))
        .route("/players/{title}/{player}/send", post(send))
        .route("/players/{title}/{player}/ban", post(ban))
        .route("/players/{title}/{player}/unban", post(unban))
        .route("/players/{title}/{player}/logout", post(logout))
        .route("/players/{title}/{player}/restore", post(restore))
}

/// A served title and a valid player id, or why not.
fn target(st: &AppState, title: &str, player: &str) -> Result<(), Fail> {
    if st.deps.titles.get(title).is_none() {
        return Err(Fail::new(ApiError::new(Code::UnknownTitle, format!("no title `{title}` is served here"))));
    }
    ApiError::check_player_id(player).map_err(Fail::new)
}

fn reason(text: &str, required: bool) -> Result<String, Fail> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(bad_request("give a reason: it goes to the audit log (and to a banned player)"));
    }
    if text.len() > REASON_BYTES_MAX {
        return Err(bad_request(format!("the reason is longer than {REASON_BYTES_MAX} bytes")));
    }
    Ok(text.to_string())
}

/// A session's refusal: rules errors travel with status 200 in the game
/// protocol (`ok: false`; `invalid_argument` with 400); to an admin they
/// are all 422.
fn session_error(mut e: ApiError) -> Fail {
    let rules = citadel_runtime::rules::ERROR_CODE_DOCS.iter().any(|(code, _)| *code == e.code);
    if e.status == axum::http::StatusCode::OK || rules {
        e.status = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Fail::new(e)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    /// A name prefix or a player id.
    #[serde(default)]
    q: String,
    /// One title only (default: every title served).
    title: Option<String>,
}

/// Players whose id is `q` or whose name starts with it.
async fn search(State(st): State<AppState>, Query(q): Query<SearchQuery>) -> Result<Json<Value>, Fail> {
    let titles: Vec<String> = match &q.title {
        Some(t) => {
            if st.deps.titles.get(t).is_none() {
                return Err(Fail::new(ApiError::new(Code::UnknownTitle, format!("no title `{t}` is served here"))));
            }
            vec![t.clone()]
        }
        None => st.deps.titles.current().iter().map(|t| t.id().to_string()).collect(),
    };
    let mut found = Vec::new();
    for title in &titles {
        if crate::auth::valid_player_id(&q.q) {
            if let Some(info) = st.deps.world.info(title, &q.q).await.map_err(internal)? {
                found.push(info);
            }
        }
        for info in st.deps.world.search(title, &q.q, None, citadel_store::world::PAGE_MAX).await.map_err(internal)? {
            if !found.iter().any(|f| f.title == info.title && f.player == info.player) {
                found.push(info);
            }
        }
        if found.len() >= citadel_store::world::PAGE_MAX {
            found.truncate(citadel_store::world::PAGE_MAX);
            break;
        }
    }
    Ok(Json(json!({ "players": found })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentsQuery {
    /// One account's payments.
    account: Option<String>,
    /// One player's payments (with `player`).
    title: Option<String>,
    player: Option<String>,
    /// A payment by its provider's id (with `provider`).
    provider: Option<String>,
    id: Option<String>,
    before_ms: Option<i64>,
    limit: Option<usize>,
}

/// Payments the gateway recorded (docs/gateway.md), newest first, with
/// their delivery state: all, one account's, one player's, or one by id.
async fn payments(State(st): State<AppState>, Query(q): Query<PaymentsQuery>) -> Result<Json<Value>, Fail> {
    use citadel_store::world::PaymentsOf;
    let w = &st.deps.world;
    let limit = q.limit.unwrap_or(50);
    let found = match (&q.provider, &q.id, &q.account, &q.title, &q.player) {
        (Some(provider), Some(id), None, None, None) => {
            w.payment(provider, id).await.map_err(internal)?.into_iter().collect()
        }
        (None, None, Some(account), None, None) => {
            w.payments(PaymentsOf::Account(account), q.before_ms, limit).await.map_err(internal)?
        }
        (None, None, None, Some(title), Some(player)) => {
            w.payments(PaymentsOf::Player { title, player }, q.before_ms, limit).await.map_err(internal)?
        }
        (None, None, None, None, None) => w.payments(PaymentsOf::All, q.before_ms, limit).await.map_err(internal)?,
        _ => {
            return Err(bad_request(
                "give provider and id, or account, or title and player, or nothing (every payment)".to_string(),
            ))
        }
    };
    Ok(Json(json!({ "payments": found })))
}

/// The player's state: from their session if it is live here (the newest),
/// else from their file. `None` if they never played.
async fn state_of(st: &AppState, title: &str, player: &str) -> Result<Option<(Value, bool)>, Fail> {
    if let Some(answer) = st.sessions.admin_if_live(title, player, AdminOp::View).await {
        let answer = answer.map_err(session_error)?;
        let v: Value = serde_json::from_str(answer.get()).map_err(internal)?;
        return Ok(Some((v["state"].clone(), true)));
    }
    let found = read_player(&*st.deps.blobs, title, player).await.map_err(Fail::new)?;
    Ok(found.map(|(state, _)| (json!(state), false)))
}

/// A snapshot's id (its blob name without `.json`), time and seq.
fn snapshots_of(keys: &[String]) -> Vec<Value> {
    let mut out: Vec<Value> = keys
        .iter()
        .filter_map(|k| {
            let id = k.rsplit('/').next()?.strip_suffix(".json")?;
            let (at, seq) = id.split_once('-')?;
            Some(json!({ "id": id, "at_ms": at.parse::<i64>().ok()?, "seq": seq.parse::<u64>().ok()? }))
        })
        .collect();
    out.reverse();
    out
}

/// Everything support sees about a player.
async fn view(State(st): State<AppState>, Path((title, player)): Path<(String, String)>) -> Result<Json<Value>, Fail> {
    target(&st, &title, &player)?;
    let Some((state, online_here)) = state_of(&st, &title, &player).await? else {
        return Err(Fail::new(ApiError::new(Code::UnknownPlayer, format!("`{player}` never played `{title}`"))));
    };
    let now = st.deps.clock.now_ms();
    let world = &st.deps.world;
    let info = world.info(&title, &player).await.map_err(internal)?;
    let holder = world.holder(&player_lock(&title, &player), now).await.map_err(internal)?;
    let restriction = world.restriction(&title, &player).await.map_err(internal)?.unwrap_or_default();
    let snapshots = st.deps.blobs.list(&snapshot_dir(&title, &player)).await.map_err(internal)?;
    let audit = world.audit_log(Some((&title, &player)), None, PLAYER_AUDIT_SHOWN).await.map_err(internal)?;
    Ok(Json(json!({
        "title": title,
        "player": player,
        "info": info,
        "online_here": online_here,
        "online_on": holder.map(|l| l.owner),
        "banned": restriction.banned(now),
        "restriction": restriction,
        "state": state,
        "snapshots": snapshots_of(&snapshots),
        "audit": audit,
    })))
}

/// Runs a change in the player's session; a session started only for it
/// saves and ends right after.
async fn change(st: &AppState, title: &str, player: &str, op: AdminOp) -> Result<Value, Fail> {
    let was_live = st.sessions.is_live(title, player);
    let answer = st.sessions.admin(title, player, op).await;
    if !was_live {
        let _ = st.sessions.admin_if_live(title, player, AdminOp::Logout).await;
    }
    let answer = answer.map_err(session_error)?;
    serde_json::from_str(answer.get()).map_err(internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustBody {
    #[serde(default)]
    resources: citadel_runtime::format::Amounts,
    #[serde(default)]
    items: citadel_runtime::format::Amounts,
    #[serde(default)]
    reason: String,
}

/// Grants (positive amounts) or revokes (negative) resources and items.
async fn adjust(
    State(st): State<AppState>,
    Extension(who): Extension<Who>,
    Path((title, player)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    target(&st, &title, &player)?;
    let b: AdjustBody = body(&bytes, r#"{"resources": {id: amount}, "items": {id: amount}, "reason": "..."}"#)?;
    let why = reason(&b.reason, true)?;
    let adj = Adjustment { resources: b.resources, items: b.items };
    played(&st, &title, &player).await?;
    let result = change(&st, &title, &player, AdminOp::Adjust(adj)).await?;
    let (before, after) = (result["before"].clone(), result["after"].clone());
    let id = audit(
        &st,
        &who,
        Change { action: "adjust", title: &title, player: &player, reason: &why, before, after: after.clone() },
    )
    .await;
    Ok(Json(json!({ "ok": true, "amounts": after, "events": result["events"], "audit": id })))
}

/// `unknown_player` unless the player is live here or has a file.
async fn played(st: &AppState, title: &str, player: &str) -> Result<(), Fail> {
    if st.sessions.is_live(title, player)
        || read_player(&*st.deps.blobs, title, player).await.map_err(Fail::new)?.is_some()
    {
        return Ok(());
    }
    Err(Fail::new(ApiError::new(Code::UnknownPlayer, format!("`{player}` never played `{title}`"))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    #[serde(default)]
    resources: citadel_runtime::format::Amounts,
    #[serde(default)]
    items: citadel_runtime::format::Amounts,
    /// What the player reads with it.
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
}

/// The longest message sent with a grant: a line or two for the player.
const SEND_MESSAGE_BYTES_MAX: usize = 500;

/// Sends a grant (compensation, a gift from the operators) to the player's
/// inbox: applied once, when their session claims it, on whatever server
/// they play (at once if they are online anywhere, else at their next login).
async fn send(
    State(st): State<AppState>,
    Extension(who): Extension<Who>,
    Path((title, player)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    target(&st, &title, &player)?;
    let b: SendBody =
        body(&bytes, r#"{"resources": {id: amount}, "items": {id: amount}, "message": "...", "reason": "..."}"#)?;
    let why = reason(&b.reason, true)?;
    if b.message.len() > SEND_MESSAGE_BYTES_MAX {
        return Err(bad_request(format!("the message is longer than {SEND_MESSAGE_BYTES_MAX} bytes")));
    }
    if b.resources.values().chain(b.items.values()).any(|n| *n <= 0) {
        return Err(bad_request("a grant's amounts are positive (revoke with `adjust`)"));
    }
    if b.resources.is_empty() && b.items.is_empty() && b.message.trim().is_empty() {
        return Err(bad_request("send resources, items or a message"));
    }
    // Unknown ids are refused now, with "did you mean", not at the claim.
    let t = st.deps.titles.get(&title).ok_or_else(|| internal("the title went away"))?;
    let now = st.deps.clock.now_ms();
    let change = Adjustment { resources: b.resources.clone(), items: b.items.clone() };
    if !change.is_empty() {
        // A message alone grants nothing to check.
        let mut trial = citadel_runtime::rules::new_player(&t, now);
        citadel_runtime::support::adjust(&t, &mut trial, &change, now, &mut citadel_runtime::Rng::new(0))
            .map_err(|e| session_error(ApiError::rules(e)))?;
    }
    played(&st, &title, &player).await?;
    let item = citadel_store::world::InboxItem {
        id: format!("grant-{now}-{:08x}", rand_u32()),
        title: title.clone(),
        player: player.clone(),
        kind: "grant".into(),
        from: "support".into(),
        body: json!({ "message": b.message.trim() }),
        resources: b.resources,
        items: b.items,
        created_ms: now,
        expires_ms: now + crate::session::inbox::INBOX_TTL_MS,
        claimed_ms: None,
        revoked_ms: None,
    };
    match crate::session::inbox::send(&st.deps, &item).await.map_err(Fail::new)? {
        citadel_store::world::InboxPut::Full => {
            return Err(Fail::new(ApiError::new(Code::InboxFull, format!("`{player}`'s inbox is full"))))
        }
        citadel_store::world::InboxPut::Added | citadel_store::world::InboxPut::Exists => {}
    }
    let id = audit(
        &st,
        &who,
        Change {
            action: "send",
            title: &title,
            player: &player,
            reason: &why,
            before: Value::Null,
            after: json!(item),
        },
    )
    .await;
    Ok(Json(json!({ "ok": true, "item": item, "audit": id })))
}

/// A random number for ids (not for secrets).
fn rand_u32() -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    /// How long; absent for a ban without end.
    minutes: Option<u64>,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

/// Ends the player's sessions on every server: here, closes their sockets
/// and saves and ends their session (returns how many sockets); the other
/// servers do the same when the bus brings them the operation (and the
/// stored restriction refuses older tokens anyway, should the bus be down).
async fn end_sessions(st: &AppState, title: &str, player: &str) -> usize {
    let m = crate::relay::AdminMessage::EndSessions { title: title.to_string(), player: player.to_string() };
    crate::relay::admin(&st.deps, m.clone()).await;
    crate::relay::carry_out(&st.deps, &st.sessions, &m).await
}

/// Stores a changed restriction, ends the player's sessions, audits.
async fn restrict(
    st: &AppState,
    who: &Who,
    action: &str,
    title: &str,
    player: &str,
    why: &str,
    edit: impl FnOnce(&mut Restriction, i64),
) -> Result<Json<Value>, Fail> {
    let now = st.deps.clock.now_ms();
    let world = &st.deps.world;
    let before = world.restriction(title, player).await.map_err(internal)?.unwrap_or_else(|| Restriction {
        title: title.to_string(),
        player: player.to_string(),
        ..Restriction::default()
    });
    let mut after = before.clone();
    edit(&mut after, now);
    world.put_restriction(&after).await.map_err(internal)?;
    let sockets = if after.logged_out_ms != before.logged_out_ms { end_sessions(st, title, player).await } else { 0 };
    let id =
        audit(st, who, Change { action, title, player, reason: why, before: json!(before), after: json!(after) }).await;
    Ok(Json(json!({ "ok": true, "restriction": after, "closed_connections": sockets, "audit": id })))
}

async fn ban(
    State(st): State<AppState>,
    Extension(who): Extension<Who>,
    Path((title, player)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    target(&st, &title, &player)?;
    let b: BanBody = body(&bytes, r#"{"minutes": n (absent: no end), "reason": "..."}"#)?;
    let why = reason(&b.reason, true)?;
    let text = why.clone();
    restrict(&st, &who, "ban", &title, &player, &why, move |r, now| {
        r.banned_until_ms = match b.minutes {
            Some(m) => now.saturating_add((m as i64).saturating_mul(60_000)),
            None => i64::MAX,
        };
        r.reason = text;
        r.logged_out_ms = now;
    })
    .await
}

fn reason_body(bytes: &[u8]) -> Result<ReasonBody, Fail> {
    if bytes.is_empty() {
        return Ok(ReasonBody::default());
    }
    body(bytes, r#"{"reason": "..."}"#)
}

async fn unban(
    State(st): State<AppState>,
    Extension(who): Extension<Who>,
    Path((title, player)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    target(&st, &title, &player)?;
    let why = reason(&reason_body(&bytes)?.reason, false)?;
    restrict(&st, &who, "unban", &title, &player, &why, |r, _| {
        r.banned_until_ms = 0;
        r.reason.clear();
    })
    .await
}

async fn logout(
    State(st): State<AppState>,
    Extension(who): Extension<Who>,
    Path((title, player)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    target(&st, &title, &player)?;
    let why = reason(&reason_body(&bytes)?.reason, false)?;
    restrict(&st, &who, "logout", &title, &player, &why, |r, now| r.logged_out_ms = now).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    /// A snapshot id from the player's view.
    snapshot: String,
    reason: String,
}

/// Puts back the player's state from one of their snapshots (the state
/// replaced becomes a snapshot first, so a restore can be undone).
async fn restore(
    State(st): State<AppState>,
    Extension(who): Extension<Who>,
    Path((title, player)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    target(&st, &title, &player)?;
    let b: RestoreBody = body(&bytes, r#"{"snapshot": "<id>", "reason": "..."}"#)?;
    let why = reason(&b.reason, true)?;
    let key = format!("{}/{}.json", snapshot_dir(&title, &player), b.snapshot);
    if !citadel_store::blob::valid_key(&key) || b.snapshot.contains('/') {
        return Err(bad_request(format!("`{}` is not a snapshot id", b.snapshot)));
    }
    let Some((bytes, _)) = st.deps.blobs.get(&key).await.map_err(internal)? else {
        return Err(Fail::new(ApiError::new(
            Code::UnknownVersion,
            format!("no snapshot `{}` of this player", b.snapshot),
        )));
    };
    let (earlier, _) = PlayerState::decode(&bytes).map_err(|e| internal(format!("{key}: {e}")))?;
    let size = earlier.to_json().len();
    if size > RESTORE_BYTES_MAX {
        return Err(bad_request(format!(
            "the snapshot is {size} bytes of JSON; a restore is journaled whole, so at most {RESTORE_BYTES_MAX}"
        )));
    }
    let Some((current, _)) = state_of(&st, &title, &player).await? else {
        return Err(Fail::new(ApiError::new(Code::UnknownPlayer, format!("`{player}` never played `{title}`"))));
    };
    let summary = |s: &Value| json!({ "clock_ms": s["clock_ms"], "seq": s["seq"], "resources": s["resources"] });
    let restored = json!(earlier);
    let op = AdminOp::Restore { state: Box::new(earlier), snapshot: b.snapshot.clone() };
    let result = change(&st, &title, &player, op).await?;
    let id = audit(
        &st,
        &who,
        Change {
            action: "restore",
            title: &title,
            player: &player,
            reason: &why,
            before: summary(&current),
            after: json!({ "snapshot": b.snapshot, "state": summary(&restored) }),
        },
    )
    .await;
    Ok(Json(json!({ "ok": true, "events": result["events"], "audit": id })))
}
