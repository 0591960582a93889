//! `push` and `rollback`: a running server's admin API (see
//! docs/operations.md), over plain HTTP. The admin token comes from
//! `--token` or `CITADEL_ADMIN_TOKEN`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use citadel_runtime::{Diagnostic, TitleFiles};
use serde_json::{json, Value};

use crate::{load_dir, Format};

/// A push validates a whole title on the server: well under a second for
/// real titles; this bounds a server that does not answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (a report with every diagnostic of a title).
const ANSWER_BYTES_MAX: u64 = 16 * 1024 * 1024;

fn token(given: Option<String>) -> anyhow::Result<String> {
    given.or_else(|| std::env::var("CITADEL_ADMIN_TOKEN").ok()).context(
        "no admin token: pass --token or set CITADEL_ADMIN_TOKEN (a server without admin_token configured keeps one in <data_dir>/admin-token)",
    )
}

/// POSTs `body` to `server` + `path`; returns the HTTP status and the JSON answer.
fn post(server: &str, path: &str, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let server = server.trim_end_matches('/');
    if !server.starts_with("http://") {
        bail!(
            "--server must be an http:// URL (for a remote server, use a tunnel or a TLS-terminating proxy): {server}"
        );
    }
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(REQUEST_TIMEOUT)).http_status_as_error(false).build().into();
    let url = format!("{server}{path}");
    let mut resp = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/json")
        .send(body.to_string())
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{url} answered {status} with something that is not JSON: {text:.200}"))?;
    Ok((status, v))
}

/// The server's error, if the answer is one.
fn refused_call(status: u16, v: &Value) -> anyhow::Result<()> {
    if v["reports"].is_array() {
        return Ok(());
    }
    let code = v["error"]["code"].as_str().unwrap_or("?");
    let message = v["error"]["message"].as_str().unwrap_or("");
    bail!("the server answered {status}: {code}: {message}")
}

/// Prints each report; returns whether every change was served (or was
/// already the version served).
fn print_reports(v: &Value, format: Format, dir: Option<&Path>, files: Option<&TitleFiles>) -> bool {
    let reports = v["reports"].as_array().cloned().unwrap_or_default();
    let ok = reports.iter().all(|r| r["outcome"] != "refused");
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return ok;
    }
    for r in &reports {
        let title = r["title"].as_str().unwrap_or("?");
        let version = r["content_version"].as_str().unwrap_or("none");
        let previous = r["previous"].as_str().unwrap_or("none");
        match r["outcome"].as_str() {
            Some("swapped") => println!("{title}: served, content version {version} (was {previous})"),
            Some("unchanged") => println!("{title}: unchanged, content version {version} is already served"),
            _ => {
                let shown = dir.map_or_else(|| title.to_string(), |d| d.display().to_string());
                for d in r["diagnostics"].as_array().into_iter().flatten() {
                    print_remote(&shown, d, files);
                }
                let errors =
                    r["diagnostics"].as_array().map_or(0, |a| a.iter().filter(|d| d["severity"] == "error").count());
                println!("{title}: refused, {errors} error(s); the server keeps content version {version}");
            }
        }
    }
    ok
}

/// One diagnostic from the server, shown like a local one (with the
/// source line when the file is at hand).
fn print_remote(shown: &str, d: &Value, files: Option<&TitleFiles>) {
    let file = d["file"].as_str().unwrap_or("");
    let mut diag = Diagnostic::error("remote", file, d["message"].as_str().unwrap_or(""));
    if d["severity"] == "warning" {
        diag = diag.warning();
    }
    if let (Some(l), Some(c)) = (d["line"].as_u64(), d["column"].as_u64()) {
        diag = diag.at(l as usize, c as usize, 1);
    }
    if let Some(p) = d["pointer"].as_str() {
        diag = diag.pointer(p);
    }
    diag = diag.help(d["help"].as_str().map(str::to_string));
    let source = files.and_then(|f| f.get(file)).map(String::as_str);
    println!("{}", diag.render(shown, source));
}

pub(crate) fn push(dir: &Path, server: &str, token_arg: Option<String>, format: Format) -> anyhow::Result<bool> {
    let token = token(token_arg)?;
    // The server's gate decides; its diagnostics are shown with the local
    // sources. (A title id is its folder's name.)
    let (files, _, _) = load_dir(dir)?;
    let id = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .context("the title folder has no name")?;
    let (status, v) = post(server, &format!("/admin/api/titles/{id}/push"), &token, &json!({ "files": files }))?;
    refused_call(status, &v)?;
    Ok(print_reports(&v, format, Some(dir), Some(&files)))
}

pub(crate) fn rollback(
    id: &str,
    server: &str,
    to: Option<String>,
    token_arg: Option<String>,
    format: Format,
) -> anyhow::Result<bool> {
    let token = token(token_arg)?;
    let body = match to {
        Some(v) => json!({ "content_version": v }),
        None => json!({}),
    };
    let (status, v) = post(server, &format!("/admin/api/titles/{id}/rollback"), &token, &body)?;
    refused_call(status, &v)?;
    Ok(print_reports(&v, format, None, None))
}
