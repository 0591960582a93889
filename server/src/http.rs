//! Routes: login, requests over HTTP, requests over WebSocket. HTTP and
//! WebSocket call the same [`dispatch`], so a request means the same thing
//! on both.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::auth::{Claims, TokenError};
use crate::protocol::{decode, Answer, ApiError, Code, Fail, Push, Request, RequestId, Response};
pub use crate::state::AppState;

/// The WebSocket close code sent when an admin forces a player out
/// (4000-4999 are for applications).
pub const KICKED_CLOSE_CODE: u16 = 4001;

/// How much larger than `limits.message_bytes_max` a body or frame may be
/// before the transport itself refuses it. Below this, an oversized message
/// gets a `message_too_large` answer and a WebSocket stays usable.
const HARD_LIMIT_FACTOR: usize = 4;

/// The router. `main` and the tests both serve exactly this.
pub fn app(state: AppState) -> Router {
    let hard = state.deps.config.limits.message_bytes_max * HARD_LIMIT_FACTOR;
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/titles", get(titles))
        .route("/v1/{title}/loot", get(loot_odds))
        .route("/v1/{title}/assets/{version}/{*path}", get(asset))
        .route("/v1/{title}/data/{version}", get(title_data))
        .route("/v1/{title}/login", post(login))
        .route("/v1/{title}/request", post(http_request))
        .route("/v1/{title}/ws", get(ws_upgrade))
        .layer(DefaultBodyLimit::max(hard))
        .nest("/admin/api", crate::admin::routes(state.clone()))
        .merge(crate::admin::console::pages())
        .merge(crate::play::pages())
        .route(
            "/metrics",
            get(crate::admin::metrics)
                .layer(axum::middleware::from_fn_with_state(state.clone(), crate::admin::require_admin)),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), time_route))
        .layer(axum::middleware::from_fn_with_state(state.clone(), body_deadline))
        .with_state(state)
}

/// Gives a request's body `limits.request_body_seconds_max` to arrive once
/// its headers are in: a client that stops half-way is answered
/// `request_timeout` (408) and its connection closed, so it cannot hold a
/// connection slot for long. The body streams through; nothing is buffered here.
async fn body_deadline(
    State(st): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> HttpResponse {
    use hyper::body::Body as _;
    let connected = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let limit = body_time_allowed(st.deps.config.limits.request_body_seconds_max, declared);
    let req = req.map(|body| {
        axum::body::Body::new(Deadline {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(limit)),
            fired: fired.clone(),
        })
    });
    let answer = next.run(req).await;
    if !fired.load(std::sync::atomic::Ordering::Acquire) {
        return answer;
    }
    let ip = connected.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.ip());
    st.closes.count(crate::listener::Close::BodyTimeout, ip);
    let e =
        ApiError::new(Code::RequestTimeout, format!("the request's body did not arrive within {} s", limit.as_secs()));
    let mut r = fail(e).into_response();
    r.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    r
}

/// The slowest upload a body deadline allows for beyond its base: a large
/// body (a title push, up to 20 MiB) over a slow link to a remote server
/// gets a second per 256 KiB declared. Game requests (at most a few KiB)
/// get the base alone, and no declared size buys more than the largest
/// body any route accepts would need.
const BODY_BYTES_PER_SECOND_MIN: u64 = 256 * 1024;

/// How long a body of `declared` bytes (its Content-Length) may take.
fn body_time_allowed(base_seconds: u64, declared: Option<u64>) -> std::time::Duration {
    let largest = crate::admin::PUSH_BYTES_MAX as u64;
    let extra = declared.unwrap_or(0).min(largest) / BODY_BYTES_PER_SECOND_MIN;
    std::time::Duration::from_secs(base_seconds + extra)
}

/// A body that fails once its deadline passes (see [`body_deadline`]).
struct Deadline {
    inner: axum::body::Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if std::future::Future::poll(self.sleep.as_mut(), cx).is_ready() {
            self.fired.store(true, std::sync::atomic::Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new("the request body's deadline passed"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Times every HTTP request under its route template (`/v1/:title/request`).
async fn time_route(
    State(st): State<AppState>,
    path: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> HttpResponse {
    if !st.deps.profiler.enabled() {
        return next.run(req).await;
    }
    // `/v1/{title}/request` is written `/v1/:title/request`: braces inside
    // label values trip up simple Prometheus text parsers.
    let name = path.as_ref().map_or("unmatched", |p| p.as_str()).replace('{', ":").replace('}', "");
    st.deps.profiler.time(crate::profile::Kind::Http, &name, "", next.run(req)).await
}

fn fail(e: ApiError) -> Fail {
    Fail::new(e)
}

async fn titles(State(st): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = st
        .deps
        .titles
        .current()
        .iter()
        .map(|t| {
            json!({ "id": t.id(), "name": t.manifest.name, "description": t.manifest.description, "content_version": t.content_version })
        })
        .collect();
    Json(json!({ "titles": list }))
}

/// Every loot table of a title with the odds of each entry, for clients to
/// show before a player pays for a roll (many stores require it). Public:
/// the odds are the same for everyone.
async fn loot_odds(State(st): State<AppState>, Path(title): Path<String>) -> Result<Json<Value>, Fail> {
    let Some(t) = st.deps.titles.get(&title) else {
        return Err(fail(ApiError::new(Code::UnknownTitle, format!("no title `{title}`"))));
    };
    let tables: Vec<Value> = t
        .loot
        .iter()
        .map(|l| json!({ "id": l.id, "name": l.name, "description": l.description, "rolls": l.rolls, "entries": l.odds() }))
        .collect();
    Ok(Json(json!({ "title": t.id(), "content_version": t.content_version, "loot": tables })))
}

/// How long a client may keep an image: its URL names the title's content
/// version, so what it points at never changes.
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Images are served from the game's own origin: an SVG gets no scripts,
/// no outside loads and a sandbox, whatever it holds (the loader also
/// refuses SVGs with scripts or handlers).
const ASSET_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox";

/// An image of a title (`assets/<path>`) as of one content version: the
/// one served now or one still held. Public, like the game's art.
async fn asset(
    State(st): State<AppState>,
    Path((title, version, path)): Path<(String, String, String)>,
) -> HttpResponse {
    use axum::http::header;
    let key = format!("assets/{path}");
    let found = st.deps.titles.held(&title, &version).and_then(|t| Some((t.assets.get(&key)?.clone(), key.clone())));
    let Some((bytes, key)) = found else {
        if st.deps.titles.get(&title).is_none() {
            return fail(ApiError::new(Code::UnknownTitle, format!("no title `{title}`"))).into_response();
        }
        let e = ApiError::new(Code::UnknownAsset, format!("no image `{key}` in version `{version}` of `{title}`"));
        return fail(e).into_response();
    };
    let mime = citadel_runtime::assets::content_type(&key).unwrap_or("application/octet-stream");
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, ASSET_CACHE_CONTROL),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, ASSET_CSP),
        ],
        bytes,
    )
        .into_response()
}

/// A title's data as of one content version, for clients (the view of
/// `citadel_runtime::client`). Public, like the art; immutable, since the
/// version names it.
async fn title_data(State(st): State<AppState>, Path((title, version)): Path<(String, String)>) -> HttpResponse {
    use axum::http::header;
    let Some(t) = st.deps.titles.held(&title, &version) else {
        if st.deps.titles.get(&title).is_none() {
            return fail(ApiError::new(Code::UnknownTitle, format!("no title `{title}`"))).into_response();
        }
        let e = ApiError::new(Code::UnknownVersion, format!("version `{version}` of `{title}` is not held here"));
        return fail(e).into_response();
    };
    let view = citadel_runtime::client::client_view(&t);
    ([(header::CACHE_CONTROL, ASSET_CACHE_CONTROL)], Json(view)).into_response()
}

/// A login: a game token from the gateway (docs/gateway.md), or a bare
/// player id where development logins are on (`dev_login`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    #[serde(default)]
    player: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// A JSON body of at most `limit` bytes (the gateway's too).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], limit: usize) -> Result<T, ApiError> {
    if body.len() > limit {
        return Err(ApiError::new(Code::MessageTooLarge, format!("{} bytes; the limit is {limit}", body.len())));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::new(Code::BadRequest, format!("not a valid request: {e}")))
}

async fn login(State(st): State<AppState>, Path(title): Path<String>, body: Bytes) -> Result<HttpResponse, Fail> {
    if st.deps.titles.get(&title).is_none() {
        return Err(fail(ApiError::new(Code::UnknownTitle, format!("no title `{title}`"))));
    }
    let req: LoginBody = parse_json(&body, st.deps.config.limits.message_bytes_max).map_err(fail)?;
    let player =
        match (req.token, req.player) {
            (Some(token), None) => authorize(&st, &title, Some(&token)).map_err(fail)?.p,
            (None, Some(player)) if st.deps.config.dev_login() => {
                ApiError::check_player_id(&player).map_err(fail)?;
                player
            }
            (None, Some(_)) => {
                return Err(fail(ApiError::new(Code::DevLoginDisabled, "log in through the gateway (docs/gateway.md)")))
            }
            _ => return Err(fail(ApiError::new(
                Code::BadRequest,
                "send {\"token\": <the gateway's game token>} (or {\"player\": <id>} where development logins are on)",
            ))),
        };
    let out = st.sessions.login(&title, &player).await.map_err(fail)?;
    let now = st.deps.clock.now_ms();
    let expires = now + st.deps.config.token_ttl_seconds as i64 * 1000;
    let token = st.signer.issue(&Claims { t: title.clone(), p: player.clone(), e: expires, i: now });
    let head = json!({ "token": token, "player": player, "title": title, "expires_at_ms": expires });
    let body = join_objects(&head, &out)
        .ok_or_else(|| fail(ApiError::new(Code::Internal, "a login answer is not an object")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `{...head, ...tail}` as JSON text, for two objects with distinct keys
/// (`None` if either is not an object): the session's answer (`events`,
/// `state`) is serialized already, and copying its text is far cheaper than
/// parsing it back into a `Value`.
fn join_objects(head: &Value, tail: &Answer) -> Option<String> {
    let head = head.to_string();
    let (h, t) = (head.strip_suffix('}')?, tail.get().strip_prefix('{')?);
    Some(match (h == "{", t == "}") {
        (_, true) => head.clone(),
        (true, false) => tail.get().to_string(),
        (false, false) => format!("{h},{t}"),
    })
}

fn authorize(st: &AppState, title: &str, token: Option<&str>) -> Result<Claims, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::new(Code::Unauthorized, "send the session token as `Authorization: Bearer <token>`")
    })?;
    st.signer.verify(token, title, st.deps.clock.now_ms()).map_err(|e| match e {
        TokenError::Invalid => ApiError::new(Code::Unauthorized, e.to_string()),
        TokenError::Expired => ApiError::new(Code::TokenExpired, e.to_string()),
        TokenError::WrongTitle => ApiError::new(Code::WrongTitle, e.to_string()),
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Decodes and runs one request for an authorized player.
pub async fn dispatch(st: &AppState, claims: &Claims, req: &Request) -> Result<Answer, ApiError> {
    let cmd = decode(req)?;
    let key = req.checked_key()?;
    st.sessions.request_with_token(&claims.t, &claims.p, claims.i, key, cmd).await
}

async fn http_request(
    State(st): State<AppState>,
    Path(title): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Response>), Fail> {
    if st.deps.titles.get(&title).is_none() {
        return Err(fail(ApiError::new(Code::UnknownTitle, format!("no title `{title}`"))));
    }
    let claims = authorize(&st, &title, bearer(&headers)).map_err(fail)?;
    let req: Request = parse_json(&body, st.deps.config.limits.message_bytes_max).map_err(fail)?;
    match dispatch(&st, &claims, &req).await {
        Ok(result) => {
            let mut answer = Response::ok(req.id.clone(), result);
            answer.pushes = st
                .deps
                .connections
                .take_pending(&claims.t, &claims.p)
                .iter()
                .filter_map(|p| RawValue::from_string(p.to_string()).ok())
                .collect();
            Ok((StatusCode::OK, Json(answer)))
        }
        Err(e) => Err(Fail(e, req.id.clone())),
    }
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws_upgrade(
    State(st): State<AppState>,
    Path(title): Path<String>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<HttpResponse, Fail> {
    if st.deps.titles.get(&title).is_none() {
        return Err(fail(ApiError::new(Code::UnknownTitle, format!("no title `{title}`"))));
    }
    if st.shutdown.is_cancelled() {
        return Err(fail(ApiError::new(Code::ShuttingDown, "the server is shutting down")));
    }
    let claims = authorize(&st, &title, q.token.as_deref().or_else(|| bearer(&headers))).map_err(fail)?;
    let limits = &st.deps.config.limits;
    let ws = ws
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .max_message_size(limits.message_bytes_max * HARD_LIMIT_FACTOR)
        .max_frame_size(limits.message_bytes_max * HARD_LIMIT_FACTOR);
    let tracker = st.sockets.clone();
    Ok(ws.on_upgrade(move |socket| tracker.track_future(serve_socket(st, claims, socket))))
}

/// One WebSocket connection. Order of operations per message: check its
/// size, decode it, dispatch it, send the answer; one message at a time,
/// so a player's requests on one socket apply in the order sent. On
/// shutdown: push `server_shutdown`, close with 1001 (going away).
async fn serve_socket(st: AppState, claims: Claims, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let limit = st.deps.config.limits.message_bytes_max;
    let version = st.deps.titles.get(&claims.t).map(|t| t.content_version.clone()).unwrap_or_default();
    let welcome = Push::Welcome { player: claims.p.clone(), title: claims.t.clone(), content_version: version };
    if tx.send(Message::Text(json!(welcome).to_string().into())).await.is_err() {
        return;
    }
    let (registered, mut pushes) = st.deps.connections.register(&claims.t, &claims.p);
    let mut notices = st.deps.connections.notices();
    // The sender lives as long as the server; once it is gone, stop asking.
    let mut listening = true;
    loop {
        let msg = tokio::select! {
            _ = st.shutdown.cancelled() => {
                let push = Push::ServerShutdown { reconnect_after_ms: 1000 };
                let _ = tx.send(Message::Text(json!(push).to_string().into())).await;
                let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                return;
            }
            _ = registered.kicked().cancelled() => {
                let push = Push::LoggedOut { reason: "an administrator ended this session".into() };
                let _ = tx.send(Message::Text(json!(push).to_string().into())).await;
                let close = CloseFrame { code: KICKED_CLOSE_CODE, reason: "logged out by an administrator".into() };
                let _ = tx.send(Message::Close(Some(close))).await;
                return;
            }
            Some(push) = pushes.recv() => {
                if tx.send(Message::Text(push.to_string().into())).await.is_err() {
                    return;
                }
                continue;
            }
            notice = notices.recv(), if listening => {
                use tokio::sync::broadcast::error::RecvError;
                match notice {
                    Ok(text) => {
                        let push = Push::Notice { text: text.to_string() };
                        if tx.send(Message::Text(json!(push).to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    // Missed notices are skipped.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => listening = false,
                }
                continue;
            }
            m = rx.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let e = ApiError::new(Code::BadRequest, "binary messages are not supported; send JSON text");
                if tx.send(Message::Text(encode(&Response::err(RequestId::null(), &e)).into())).await.is_err() {
                    return;
                }
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) => {
                // The socket cannot be read any further; say why first.
                if let Some((e, code)) = protocol_fault(e, limit) {
                    let _ = tx.send(Message::Text(encode(&Response::err(RequestId::null(), &e)).into())).await;
                    let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: e.message.into() }))).await;
                }
                return;
            }
            Some(Ok(Message::Close(_))) | None => return,
        };
        let started = std::time::Instant::now();
        let (kind, answer) = match parse_json::<Request>(text.as_bytes(), limit) {
            Err(e) => ("invalid", Response::err(RequestId::null(), &e)),
            Ok(req) => {
                let kind = known_action(&req.action);
                match dispatch(&st, &claims, &req).await {
                    Ok(result) => (kind, Response::ok(req.id.clone(), result)),
                    Err(e) => (kind, Response::err(req.id.clone(), &e)),
                }
            }
        };
        st.deps.profiler.record(crate::profile::Kind::Ws, kind, "", started.elapsed());
        if tx.send(Message::Text(encode(&answer).into())).await.is_err() {
            return;
        }
    }
}

/// A client's breach of the WebSocket protocol that is worth an answer
/// before the socket closes: the error and the close code (RFC 6455).
/// Other read errors (a reset, a torn frame) have nobody left to tell.
fn protocol_fault(e: axum::Error, limit: usize) -> Option<(ApiError, u16)> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>()? {
        WsError::Utf8(_) => Some((ApiError::new(Code::BadRequest, "a text message must be valid UTF-8"), 1007)),
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => Some((
            ApiError::new(
                Code::MessageTooLarge,
                format!(
                    "{size} bytes; the limit is {limit} (the connection closes beyond {})",
                    limit * HARD_LIMIT_FACTOR
                ),
            ),
            1009,
        )),
        _ => None,
    }
}

/// A request's action name for the profile; names no action has are
/// `invalid` (a client must not grow the table).
fn known_action(name: &str) -> &'static str {
    use crate::protocol::{CLAN_ACTIONS, SESSION_ACTIONS, WORLD_ACTIONS};
    use citadel_runtime::rules::ACTION_NAMES;
    [ACTION_NAMES, SESSION_ACTIONS, WORLD_ACTIONS, CLAN_ACTIONS]
        .into_iter()
        .flatten()
        .find(|a| **a == name)
        .copied()
        .unwrap_or("invalid")
}

/// A response as JSON text. Serializing a `Response` cannot fail: its
/// result is JSON text already and the rest are plain values.
fn encode(r: &Response) -> String {
    const UNENCODABLE: &str =
        r#"{"id":null,"ok":false,"error":{"code":"internal","message":"the answer could not be encoded"}}"#;
    serde_json::to_string(r).unwrap_or_else(|_| UNENCODABLE.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_answer_joins_the_token_fields_and_the_session_answer() {
        let tail = |s: &str| serde_json::value::RawValue::from_string(s.to_string()).unwrap();
        let head = json!({ "token": "t", "player": "p" });
        let joined = join_objects(&head, &tail(r#"{"events":[],"state":{"a":1}}"#)).unwrap();
        let v: Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(v, json!({ "token": "t", "player": "p", "events": [], "state": { "a": 1 } }));
        assert_eq!(join_objects(&head, &tail("{}")).unwrap(), head.to_string());
        assert_eq!(join_objects(&json!({}), &tail(r#"{"a":1}"#)).unwrap(), r#"{"a":1}"#);
        assert_eq!(join_objects(&head, &tail("[1]")), None);
    }

    #[test]
    fn a_large_body_gets_time_for_its_size_and_a_game_request_the_base_only() {
        use std::time::Duration;
        assert_eq!(body_time_allowed(10, None), Duration::from_secs(10));
        assert_eq!(body_time_allowed(10, Some(16 * 1024)), Duration::from_secs(10), "a game request");
        assert_eq!(body_time_allowed(10, Some(20 * 1024 * 1024)), Duration::from_secs(90), "a whole title push");
        assert_eq!(
            body_time_allowed(10, Some(u64::MAX)),
            Duration::from_secs(90),
            "no more than the largest body needs"
        );
    }
}
