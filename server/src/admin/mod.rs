//! The admin API under `/admin/api/` (documented in `docs/operations.md`):
//! title versions (list, reload, push, rollback), server management
//! (servers, metrics, in-flight and slow requests, broadcast, drain) and
//! customer support (`support.rs`: players, grants, bans, logouts,
//! restores). Every call needs `Authorization: Bearer <admin token>` or a
//! console login (`console.rs`); without either nothing is reachable.
//! Every change is written to the audit log.

pub mod auth;
pub mod console;
mod support;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use auth::Who;

use crate::protocol::{ApiError, Code, Fail};
use crate::state::AppState;
use crate::titles::{Outcome, Report, RollbackError};

/// Largest admin request: a pushed title with every file (the runtime caps
/// a title at `TITLE_BYTES_MAX`, 16 MiB; JSON escaping adds a little).
pub const PUSH_BYTES_MAX: usize = 20 * 1024 * 1024;

/// The admin routes, to nest under `/admin/api`.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/titles", get(list))
        .route("/titles/reload", post(reload_all))
        .route("/titles/{id}/reload", post(reload_one))
        .route("/titles/{id}/push", post(push))
        .route("/titles/{id}/rollback", post(rollback))
        .route("/events", get(events))
        .route("/servers", get(servers))
        .route("/servers/{id}/journal-lost", post(journal_lost))
        .route("/metrics", get(metrics_json))
        .route(
            "/inflight",
            get(|State(st): State<AppState>| async move { Json(json!({ "requests": st.deps.flights.in_flight() })) }),
        )
        .route(
            "/slow",
            get(|State(st): State<AppState>| async move { Json(json!({ "requests": st.deps.flights.slow() })) }),
        )
        .route("/broadcast", post(broadcast))
        .route("/drain", post(drain))
        .route("/audit", get(audit_log))
        .merge(support::routes())
        .layer(DefaultBodyLimit::max(PUSH_BYTES_MAX))
        .layer(middleware::from_fn_with_state(state, require_admin))
}

pub(crate) fn bad_request(what: impl std::fmt::Display) -> Fail {
    Fail::new(ApiError::new(Code::BadRequest, what.to_string()))
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Fail {
    Fail::new(ApiError::new(Code::Internal, e.to_string()))
}

/// A JSON body of type `T`, or a `bad_request` saying what was expected.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, Fail> {
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("expected {expected}: {e}")))
}

/// What an audit entry says about a change.
pub(crate) struct Change<'a> {
    pub action: &'a str,
    pub title: &'a str,
    pub player: &'a str,
    pub reason: &'a str,
    pub before: Value,
    pub after: Value,
}

impl<'a> Change<'a> {
    /// A change to the server or a title, not to a player.
    fn server(action: &'a str, title: &'a str, before: Value, after: Value) -> Change<'a> {
        Change { action, title, player: "", reason: "", before, after }
    }
}

/// Writes one admin change to the audit log. The change is made already:
/// a failure is logged and reported in the answer (`"audit": "failed: ..."`),
/// never silently dropped.
pub(crate) async fn audit(st: &AppState, who: &Who, c: Change<'_>) -> Value {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = st.deps.clock.now_ms();
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entry = citadel_store::world::AuditEntry {
        id: format!("{now:013}-{}-{n}", st.deps.server_id),
        at_ms: now,
        admin: who.0.clone(),
        server: st.deps.server_id.clone(),
        action: c.action.to_string(),
        title: c.title.to_string(),
        player: c.player.to_string(),
        reason: c.reason.to_string(),
        before: c.before,
        after: c.after,
    };
    tracing::info!(
        admin = %entry.admin, action = %entry.action, title = %entry.title, player = %entry.player,
        before = %entry.before, after = %entry.after, "admin change"
    );
    match st.deps.world.audit(&entry).await {
        Ok(()) => json!(entry.id),
        Err(e) => {
            tracing::error!(error = %e, id = %entry.id, "writing the audit log failed; the change above is made");
            json!(format!("failed: {e}"))
        }
    }
}

/// The game servers reporting to the world store, fresh ones only.
async fn servers(State(st): State<AppState>) -> Result<Json<Value>, Fail> {
    let now = st.deps.clock.now_ms();
    let list = st.deps.world.servers(now, crate::status::STALE_MS).await.map_err(internal)?;
    Ok(Json(json!({ "servers": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalLostBody {
    reason: String,
}

/// An operator's word that a dead server's journal is gone for good (its
/// machine is lost): players it held are taken over without what it
/// acknowledged and never saved, instead of waiting with
/// `player_recovering`. Cluster-wide (in the world store) and audited.
async fn journal_lost(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Who>,
    axum::extract::Path(id): axum::extract::Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    let b: JournalLostBody = body(&bytes, r#"{"reason": "why the journal cannot be recovered"}"#)?;
    if b.reason.trim().is_empty() {
        return Err(bad_request("reason: say why the journal cannot be recovered (it is kept in the audit log)"));
    }
    if id == st.deps.server_id {
        return Err(bad_request("this server's own journal is not lost: it is running"));
    }
    let Some(mut home) = st.deps.world.journal_home(&id).await.map_err(internal)? else {
        return Err(Fail::new(ApiError::new(
            Code::UnknownServer,
            format!("no server `{id}` ever recorded where its journal is"),
        )));
    };
    let before = json!(home);
    home.lost_ms = st.deps.clock.now_ms();
    home.lost_by = who.0.clone();
    st.deps.world.put_journal_home(&home).await.map_err(internal)?;
    let change =
        Change { action: "journal_lost", title: "", player: "", reason: &b.reason, before, after: json!(home) };
    let audit = audit(&st, &who, change).await;
    Ok(Json(json!({ "ok": true, "server": id, "lost_ms": home.lost_ms, "audit": audit })))
}

/// The latency of every entry point, since start and over the last minute.
async fn metrics_json(State(st): State<AppState>) -> Json<Value> {
    let p = &st.deps.profiler;
    Json(json!({
        "profiling": p.enabled(),
        "sessions": st.sessions.len(),
        "busy_ratio": p.busy_ratio(),
        "connections_closed": st.closes.counts().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "bus": {
            "up": st.deps.bus.up(),
            "dropped": st.deps.bus.dropped(),
            "unreachable": st.deps.bus.lost(),
            "pushes_dropped": st.deps.connections.dropped(),
        },
        "entries": p.rows(),
    }))
}

/// `/metrics`: the same in Prometheus text format (needs the admin token).
pub(crate) async fn metrics(State(st): State<AppState>) -> HttpResponse {
    let gauges = crate::profile::Gauges {
        sessions: st.sessions.len(),
        busy_ratio: st.deps.profiler.busy_ratio(),
        closes: st.closes.counts(),
        bus_up: st.deps.bus.up(),
        dropped: vec![
            ("pushes", st.deps.connections.dropped()),
            ("bus_queue", st.deps.bus.dropped()),
            ("bus_unreachable", st.deps.bus.lost()),
        ],
    };
    let body = crate::profile::prometheus(&st.deps.profiler.rows(), gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The admin behind a request: the bearer token, or a console login (whose
/// requests that change something must also carry `X-Citadel-Admin: 1`,
/// which a form on another site cannot send).
pub(crate) fn who(st: &AppState, headers: &HeaderMap, method: &axum::http::Method) -> Result<Who, ApiError> {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if let Some(t) = bearer {
        return if st.admin.token_matches(t) {
            Ok(Who("token".into()))
        } else {
            Err(ApiError::new(Code::Unauthorized, "wrong admin token"))
        };
    }
    let Some(who) = auth::cookie(headers, auth::COOKIE).and_then(|id| st.admin.session(id)) else {
        return Err(ApiError::new(
            Code::Unauthorized,
            "the admin API needs Authorization: Bearer <admin token> or a console login (/admin/login)",
        ));
    };
    let safe = matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD);
    if !safe && headers.get("x-citadel-admin").is_none() {
        return Err(ApiError::new(
            Code::Unauthorized,
            "console requests that change something need X-Citadel-Admin: 1",
        ));
    }
    Ok(who)
}

pub(crate) async fn require_admin(State(st): State<AppState>, mut req: Request, next: Next) -> HttpResponse {
    match who(&st, req.headers(), req.method()) {
        Ok(w) => {
            req.extensions_mut().insert(w);
            next.run(req).await
        }
        Err(e) => Fail::new(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    text: String,
}

/// Sends a notice to every player connected to this server.
async fn broadcast(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Who>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    let b: BroadcastBody = body(&bytes, r#"{"text": "..."}"#)?;
    let text = b.text.trim();
    if text.is_empty() || text.len() > crate::connections::NOTICE_BYTES_MAX {
        return Err(bad_request(format!("text must be 1 to {} bytes", crate::connections::NOTICE_BYTES_MAX)));
    }
    let m = crate::relay::AdminMessage::Broadcast { text: text.to_string() };
    crate::relay::admin(&st.deps, m.clone()).await;
    let reached = crate::relay::carry_out(&st.deps, &st.sessions, &m).await;
    let after = json!({ "text": text, "connections": reached });
    let id = audit(&st, &who, Change::server("broadcast", "", Value::Null, after)).await;
    Ok(Json(json!({ "ok": true, "connections": reached, "audit": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    on: bool,
    /// Another server of the cluster (its id in the server list); this
    /// one when absent.
    server: Option<String>,
}

/// Stops (or resumes) taking new players on this server, or on another
/// server of the cluster (sent over the bus; the server list shows it
/// draining at its next heartbeat).
async fn drain(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Who>,
    bytes: Bytes,
) -> Result<Json<Value>, Fail> {
    let b: DrainBody = body(&bytes, r#"{"on": true|false, "server": "<server id, optional>"}"#)?;
    if let Some(server) = b.server.filter(|s| *s != st.deps.server_id) {
        let (before, after) = (json!({ "server": server }), json!({ "draining": b.on, "server": server }));
        crate::relay::admin(&st.deps, crate::relay::AdminMessage::Drain { server, on: b.on }).await;
        let id = audit(&st, &who, Change::server("drain", "", before, after)).await;
        return Ok(Json(json!({ "ok": true, "draining": b.on, "sent": true, "audit": id })));
    }
    let before = st.sessions.draining();
    st.sessions.set_draining(b.on);
    let (before, after) = (
        json!({ "draining": before, "server": st.deps.server_id }),
        json!({ "draining": b.on, "server": st.deps.server_id }),
    );
    let id = audit(&st, &who, Change::server("drain", "", before, after)).await;
    Ok(Json(json!({ "ok": true, "draining": b.on, "players": st.sessions.len(), "audit": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    title: Option<String>,
    player: Option<String>,
    before_ms: Option<i64>,
    limit: Option<usize>,
}

/// The audit log, newest first (`?title=&player=` for one player's).
async fn audit_log(
    State(st): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Json<Value>, Fail> {
    let player = match (&q.title, &q.player) {
        (Some(t), Some(p)) => Some((t.as_str(), p.as_str())),
        (None, None) => None,
        _ => return Err(bad_request("give both title and player, or neither")),
    };
    let entries = st
        .deps
        .world
        .audit_log(player, q.before_ms, q.limit.unwrap_or(citadel_store::world::PAGE_MAX))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "entries": entries })))
}

async fn list(State(st): State<AppState>) -> Json<Value> {
    Json(json!({ "ok": true, "titles": st.deps.titles.info() }))
}

/// 200 when the change is served (or was already), 422 when refused.
fn answer(reports: Vec<Report>) -> (StatusCode, Json<Value>) {
    let refused = reports.iter().any(|r| r.outcome == Outcome::Refused);
    let status = if refused { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    (status, Json(json!({ "ok": !refused, "reports": reports })))
}

/// The content version served now of every title (or of one).
fn versions(st: &AppState, only: Option<&str>) -> Value {
    let all = st.deps.titles.current();
    let v: BTreeMap<&str, &str> = all
        .iter()
        .filter(|t| only.is_none_or(|id| t.id() == id))
        .map(|t| (t.id(), t.content_version.as_str()))
        .collect();
    json!(v)
}

/// Audits a title change that was tried (refused ones too).
async fn audit_titles(st: &AppState, who: &Who, action: &str, title: &str, before: Value, reports: &[Report]) {
    let after = json!({ "versions": versions(st, (!title.is_empty()).then_some(title)), "reports": reports });
    audit(st, who, Change::server(action, title, before, after)).await;
}

async fn reload_all(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Who>,
) -> Result<(StatusCode, Json<Value>), Fail> {
    let before = versions(&st, None);
    let reports = st.deps.titles.reload(&[]).await.map_err(|e| internal(format!("{e:#}")))?;
    crate::relay::titles_changed(&st.deps, &reports).await;
    audit_titles(&st, &who, "reload", "", before, &reports).await;
    Ok(answer(reports))
}

fn known(id: &str) -> Result<(), Fail> {
    if citadel_runtime::load::valid_title_id(id) {
        Ok(())
    } else {
        Err(Fail::new(ApiError::new(Code::UnknownTitle, format!("`{id}` is not a title id"))))
    }
}

async fn reload_one(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Who>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), Fail> {
    known(&id)?;
    let before = versions(&st, Some(&id));
    let reports = st.deps.titles.reload(std::slice::from_ref(&id)).await.map_err(|e| internal(format!("{e:#}")))?;
    crate::relay::titles_changed(&st.deps, &reports).await;
    audit_titles(&st, &who, "reload", &id, before, &reports).await;
    Ok(answer(reports))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    /// Path inside the title folder (`title.json`, `scripts/hooks.rhai`) to text.
    files: BTreeMap<String, String>,
}

async fn push(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Who>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Fail> {
    known(&id)?;
    let before = versions(&st, Some(&id));
    let body: PushBody = serde_json::from_slice(&body).map_err(|e| {
        Fail::new(ApiError::new(Code::BadRequest, format!("expected {{\"files\": {{path: text}}}}: {e}")))
    })?;
    let report = st.deps.titles.push(&id, body.files).await.map_err(|e| internal(format!("{e:#}")))?;
    crate::relay::titles_changed(&st.deps, std::slice::from_ref(&report)).await;
    audit_titles(&st, &who, "push", &id, before, std::slice::from_ref(&report)).await;
    Ok(answer(vec![report]))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// The version to serve again; default the one before the current.
    #[serde(default)]
    content_version: Option<String>,
}

async fn rollback(
    State(st): State<AppState>,
    axum::Extension(who): axum::Extension<Who>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Fail> {
    known(&id)?;
    let before = versions(&st, Some(&id));
    let body: RollbackBody = if body.is_empty() {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Fail::new(ApiError::new(Code::BadRequest, format!("expected {{\"content_version\": ...}}: {e}")))
        })?
    };
    match st.deps.titles.rollback(&id, body.content_version.as_deref()).await {
        Ok(report) => {
            crate::relay::titles_changed(&st.deps, std::slice::from_ref(&report)).await;
            audit_titles(&st, &who, "rollback", &id, before, std::slice::from_ref(&report)).await;
            Ok(answer(vec![report]))
        }
        Err(RollbackError::UnknownTitle) => {
            Err(Fail::new(ApiError::new(Code::UnknownTitle, format!("no title `{id}`"))))
        }
        Err(e @ (RollbackError::NoEarlier | RollbackError::UnknownVersion(_))) => {
            Err(Fail::new(ApiError::new(Code::UnknownVersion, e.to_string())))
        }
        Err(RollbackError::Internal(m)) => Err(internal(m)),
    }
}

/// Every title change's report, as it happens, one JSON text message each
/// (for admin consoles). A client too slow to keep up is told how many it
/// missed (`{"missed": n}`) and goes on from the newest.
async fn events(State(st): State<AppState>, ws: WebSocketUpgrade) -> HttpResponse {
    let tracker = st.sockets.clone();
    ws.on_upgrade(move |socket| tracker.track_future(send_reports(st, socket)))
}

async fn send_reports(st: AppState, mut socket: WebSocket) {
    use tokio::sync::broadcast::error::RecvError;
    let mut reports = st.deps.titles.reports();
    loop {
        let text = tokio::select! {
            _ = st.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            incoming = socket.recv() => match incoming {
                // Nothing is expected from the client; a close ends it.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            r = reports.recv() => match r {
                Ok(report) => json!(report).to_string(),
                Err(RecvError::Lagged(n)) => json!({ "missed": n }).to_string(),
                Err(RecvError::Closed) => return,
            },
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
}
