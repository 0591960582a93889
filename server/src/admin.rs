//! The admin API under `/admin/api/` (documented in `docs/operations.md`):
//! title versions (list, reload, push, rollback). Every call needs
//! `Authorization: Bearer <admin token>`; without it nothing is reachable.

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

use crate::http::AppState;
use crate::protocol::{ApiError, Code};
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
        .route("/metrics", get(metrics_json))
        .route(
            "/inflight",
            get(|State(st): State<AppState>| async move { Json(json!({ "requests": st.deps.flights.in_flight() })) }),
        )
        .route(
            "/slow",
            get(|State(st): State<AppState>| async move { Json(json!({ "requests": st.deps.flights.slow() })) }),
        )
        .layer(DefaultBodyLimit::max(PUSH_BYTES_MAX))
        .layer(middleware::from_fn_with_state(state, require_admin))
}

struct Fail(ApiError);

impl IntoResponse for Fail {
    fn into_response(self) -> HttpResponse {
        (self.0.status, Json(json!({ "ok": false, "error": self.0.body() }))).into_response()
    }
}

/// Compares without stopping at the first difference, so response times
/// say nothing about how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The game servers reporting to the world store, fresh ones only.
async fn servers(State(st): State<AppState>) -> Result<Json<Value>, Fail> {
    let now = st.deps.clock.now_ms();
    let list = st
        .deps
        .world
        .servers(now, crate::status::STALE_MS)
        .await
        .map_err(|e| Fail(ApiError::new(Code::Internal, e.to_string())))?;
    Ok(Json(json!({ "servers": list })))
}

/// The latency of every entry point, since start and over the last minute.
async fn metrics_json(State(st): State<AppState>) -> Json<Value> {
    let p = &st.deps.profiler;
    Json(json!({
        "profiling": p.enabled(),
        "sessions": st.sessions.len(),
        "busy_ratio": p.busy_ratio(),
        "entries": p.rows(),
    }))
}

/// `/metrics`: the same in Prometheus text format (needs the admin token).
pub(crate) async fn metrics(State(st): State<AppState>) -> HttpResponse {
    let gauges = crate::profile::Gauges { sessions: st.sessions.len(), busy_ratio: st.deps.profiler.busy_ratio() };
    let body = crate::profile::prometheus(&st.deps.profiler.rows(), gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

pub(crate) async fn require_admin(
    State(st): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> HttpResponse {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.as_bytes(), st.admin_token.as_bytes()) => next.run(req).await,
        Some(_) => Fail(ApiError::new(Code::Unauthorized, "wrong admin token")).into_response(),
        None => Fail(ApiError::new(Code::Unauthorized, "the admin API needs Authorization: Bearer <admin token>"))
            .into_response(),
    }
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

async fn reload_all(State(st): State<AppState>) -> Result<(StatusCode, Json<Value>), Fail> {
    let reports =
        st.deps.titles.reload(&[]).await.map_err(|e| Fail(ApiError::new(Code::Internal, format!("{e:#}"))))?;
    Ok(answer(reports))
}

fn known(id: &str) -> Result<(), Fail> {
    if citadel_runtime::load::valid_title_id(id) {
        Ok(())
    } else {
        Err(Fail(ApiError::new(Code::UnknownTitle, format!("`{id}` is not a title id"))))
    }
}

async fn reload_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), Fail> {
    known(&id)?;
    let reports =
        st.deps.titles.reload(&[id]).await.map_err(|e| Fail(ApiError::new(Code::Internal, format!("{e:#}"))))?;
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
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Fail> {
    known(&id)?;
    let body: PushBody = serde_json::from_slice(&body)
        .map_err(|e| Fail(ApiError::new(Code::BadRequest, format!("expected {{\"files\": {{path: text}}}}: {e}"))))?;
    let report = st
        .deps
        .titles
        .push(&id, body.files)
        .await
        .map_err(|e| Fail(ApiError::new(Code::Internal, format!("{e:#}"))))?;
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
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Fail> {
    known(&id)?;
    let body: RollbackBody = if body.is_empty() {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Fail(ApiError::new(Code::BadRequest, format!("expected {{\"content_version\": ...}}: {e}"))))?
    };
    match st.deps.titles.rollback(&id, body.content_version.as_deref()).await {
        Ok(report) => Ok(answer(vec![report])),
        Err(RollbackError::UnknownTitle) => Err(Fail(ApiError::new(Code::UnknownTitle, format!("no title `{id}`")))),
        Err(e @ (RollbackError::NoEarlier | RollbackError::UnknownVersion(_))) => {
            Err(Fail(ApiError::new(Code::UnknownVersion, e.to_string())))
        }
        Err(RollbackError::Internal(m)) => Err(Fail(ApiError::new(Code::Internal, m))),
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
