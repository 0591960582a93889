//! The players' client under `/play/`: the list of titles served and, at
//! `/play/{title}/`, a page that plays any title from its data and art
//! alone. Plain JavaScript modules embedded in the binary (no build step);
//! they speak only the documented protocol (docs/protocol.md).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The client's files: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../client/app.js")),
    ("net.js", JS, include_str!("../client/net.js")),
    ("model.js", JS, include_str!("../client/model.js")),
    ("render.js", JS, include_str!("../client/render.js")),
    ("ui.js", JS, include_str!("../client/ui.js")),
    ("dom.js", JS, include_str!("../client/dom.js")),
    ("words.js", JS, include_str!("../client/words.js")),
    ("list.js", JS, include_str!("../client/list.js")),
    ("client.css", "text/css; charset=utf-8", include_str!("../client/client.css")),
    ("icon.svg", "image/svg+xml", include_str!("../client/icon.svg")),
];
const JS: &str = "text/javascript; charset=utf-8";
const PLAY_HTML: &str = include_str!("../client/play.html");
const INDEX_HTML: &str = include_str!("../client/index.html");

/// Pages and scripts come from this server only; images also from
/// `data:` (none today; browsers' own form controls may use them); the
/// socket goes back to this server.
const CSP: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The client's routes, with their full paths.
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/play", get(|| async { Redirect::permanent("/play/") }))
        .route(
            "/play/",
            get(|h: HeaderMap| async move { file(&h, "text/html; charset=utf-8", INDEX_HTML, StatusCode::OK) }),
        )
        .route("/play/static/{name}", get(static_file))
        .route("/play/{title}", get(|Path(t): Path<String>| async move { Redirect::permanent(&format!("/play/{t}/")) }))
        .route("/play/{title}/", get(play))
}

/// A version tag of a file's content: the page revalidates (`no-cache`)
/// and gets `304 Not Modified` while the binary serves the same file.
fn etag(body: &str) -> String {
    format!("\"{:08x}{:04x}\"", crc32fast::hash(body.as_bytes()), body.len() & 0xffff)
}

fn file(headers: &HeaderMap, content_type: &'static str, body: &'static str, status: StatusCode) -> Response {
    let tag = etag(body);
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == tag);
    let mut r = if fresh && status == StatusCode::OK {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (status, body).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    r
}

async fn static_file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match FILES.iter().find(|(n, ..)| *n == name) {
        Some((_, content_type, body)) => file(&headers, content_type, body, StatusCode::OK),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// The game page; for a title not served, the same page answers 404 and
/// tells the player so (with a link to the list).
async fn play(State(st): State<AppState>, Path(title): Path<String>, headers: HeaderMap) -> Response {
    let status = if st.deps.titles.get(&title).is_some() { StatusCode::OK } else { StatusCode::NOT_FOUND };
    file(&headers, "text/html; charset=utf-8", PLAY_HTML, status)
}
