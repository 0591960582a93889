//! The admin console under `/admin/`: a login page (the only page reachable
//! without a login) and one page of plain HTML and JavaScript, embedded in
//! the binary, that drives the admin API with the login's cookie.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use super::auth::{self, LoginError};
use crate::state::AppState;

const CONSOLE_HTML: &str = include_str!("../../console/index.html");
const CONSOLE_JS: &str = include_str!("../../console/console.js");
const CONSOLE_CSS: &str = include_str!("../../console/console.css");
const LOGIN_HTML: &str = include_str!("../../console/login.html");

/// Longest name or password a login form may send.
const FIELD_BYTES_MAX: usize = 256;

/// The console's routes, with their full paths.
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(console))
        .route("/admin/console.js", get(|st, h| asset(st, h, "text/javascript; charset=utf-8", CONSOLE_JS)))
        // The style sheet is public: the login page uses it too.
        .route(
            "/admin/console.css",
            get(|| async { page(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS.into()) }),
        )
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", axum::routing::post(logout))
}

/// Pages are never cached, and never framed by another site.
fn page(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'"),
        ],
        body,
    )
        .into_response()
}

fn logged_in(st: &AppState, headers: &HeaderMap) -> bool {
    super::who(st, headers, &axum::http::Method::GET).is_ok()
}

async fn console(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !logged_in(&st, &headers) {
        return Redirect::to("/admin/login").into_response();
    }
    page(StatusCode::OK, "text/html; charset=utf-8", CONSOLE_HTML.to_string())
}

async fn asset(
    State(st): State<AppState>,
    headers: HeaderMap,
    content_type: &'static str,
    body: &'static str,
) -> Response {
    if !logged_in(&st, &headers) {
        return page(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", "log in first: /admin/login".into());
    }
    page(StatusCode::OK, content_type, body.to_string())
}

fn login_with(status: StatusCode, message: &str) -> Response {
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    page(status, "text/html; charset=utf-8", LOGIN_HTML.replace("{{message}}", &escaped))
}

async fn login_page() -> Response {
    login_with(StatusCode::OK, "")
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(State(st): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    if f.name.len() > FIELD_BYTES_MAX || f.password.len() > FIELD_BYTES_MAX {
        return login_with(StatusCode::BAD_REQUEST, "Name or password too long.");
    }
    let admin = st.admin.clone();
    let name = f.name.clone();
    // Hashing the password takes tens of milliseconds: not on the threads
    // that answer players.
    let result = tokio::task::spawn_blocking(move || admin.login(&name, &f.password)).await;
    match result {
        Ok(Ok(id)) => {
            tracing::info!(admin = %f.name, "admin console login");
            let cookie = format!(
                "{}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}",
                auth::COOKIE,
                auth::SESSION_TTL.as_secs()
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/admin/")).into_response()
        }
        Ok(Err(LoginError::Wrong)) => {
            tracing::warn!(admin = %f.name, "admin console login refused");
            login_with(StatusCode::UNAUTHORIZED, "Wrong name or password.")
        }
        Ok(Err(LoginError::TooMany)) => {
            login_with(StatusCode::TOO_MANY_REQUESTS, "Too many failed logins; wait a minute.")
        }
        Ok(Err(LoginError::Random)) | Err(_) => {
            login_with(StatusCode::INTERNAL_SERVER_ERROR, "The server could not log you in; see its log.")
        }
    }
}

async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = auth::cookie(&headers, auth::COOKIE) {
        st.admin.logout(id);
    }
    let clear = format!("{}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0", auth::COOKIE);
    ([(header::SET_COOKIE, clear)], Redirect::to("/admin/login")).into_response()
}
