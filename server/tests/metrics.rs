//! Profiling as operators see it: `/metrics` parses as Prometheus text and
//! holds the latency of every entry point that was used (HTTP routes,
//! WebSocket message kinds, actions and script functions per title, blob store operations,
//! journal commits, world store calls); it needs the admin token; the admin API has the same
//! as JSON.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::server::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_cover_every_entry_point() {
    let data = fresh_data("metrics");
    let s = start(data.clone(), |_| {}).await;
    let (tok, _) = s.login("mini", "mo").await;
    let (_, r) = s.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    s.act("mini", &tok, "custom", json!({ "name": "nonesuch" })).await;
    let (_, r) = s.act("mini", &tok, "custom", json!({ "name": "tithe" })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/mini/ws?token={tok}", s.addr)).await.unwrap();
    ws.next().await.unwrap().unwrap(); // welcome
    for action in ["ping", "get_state", "fly"] {
        ws.send(Message::Text(json!({ "id": 1, "action": action }).to_string().into())).await.unwrap();
        ws.next().await.unwrap().unwrap();
    }
    drop(ws);

    let denied = reqwest::Client::new().get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(denied.status(), 401, "no metrics without the admin token");
    let text = s.admin_get("/metrics").await;
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
    let has = |kind: &str, entry: &str, title: &str| {
        scrape.samples.iter().any(|x| {
            x.metric == "citadel_entry_latency_seconds_count"
                && x.labels.get("kind") == Some(kind)
                && x.labels.get("entry") == Some(entry)
                && x.labels.get("title") == Some(title)
                && matches!(x.value, prometheus_parse::Value::Untyped(n) | prometheus_parse::Value::Counter(n) if n >= 1.0)
        })
    };
    for (kind, entry, title) in [
        ("http", "/v1/:title/login", ""),
        ("http", "/v1/:title/request", ""),
        ("http", "/v1/:title/ws", ""),
        ("ws", "ping", ""),
        ("ws", "get_state", ""),
        ("ws", "invalid", ""),
        ("action", "login", "mini"),
        ("action", "build", "mini"),
        ("action", "get_state", "mini"),
        ("action", "custom:unknown", "mini"),
        ("action", "custom:tithe", "mini"),
        ("script", "hooks::tithe", "mini"),
        ("blob", "get", ""),
        ("blob", "put", ""),
        ("journal", "commit", ""),
        ("world", "acquire", ""),
        ("world", "put_info", ""),
    ] {
        assert!(has(kind, entry, title), "no latency for {kind} {entry} {title:?} in:\n{text}");
    }
    let quantiles = scrape
        .samples
        .iter()
        .find(|x| x.metric == "citadel_entry_latency_seconds" && x.labels.get("entry") == Some("build"))
        .expect("the build action's summary");
    match &quantiles.value {
        prometheus_parse::Value::Summary(q) => assert_eq!(q.len(), 3, "p50, p90, p99"),
        other => panic!("a summary, not {other:?}"),
    }
    assert!(scrape.samples.iter().any(|x| x.metric == "citadel_sessions"));
    assert!(scrape.samples.iter().any(|x| x.metric == "citadel_runtime_busy_ratio"));

    let json = s.admin_json("/admin/api/metrics").await;
    let build = json["entries"].as_array().unwrap().iter().find(|e| e["name"] == "build").unwrap();
    assert_eq!(build["since_start"]["count"], 1);
    assert_eq!(build["last_minute"]["count"], 1);
    s.stop().await;
}

/// An artificially slow script hook: while it runs, the request is listed
/// in flight in the `script` stage; then it is in the slow-request log with
/// the time of each stage, most of it in `script`, and the hook has its own
/// latency entry (kind `script`, per title).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_script_hook_is_in_flight_and_then_in_the_slow_log_with_its_stage() {
    let data = fresh_data("slow-script");
    let titles = data.join("titles");
    copy_dir(&support::root().join("tests/fixtures/mini"), &titles.join("mini"));
    let hooks = titles.join("mini/scripts/hooks.rhai");
    let text = std::fs::read_to_string(&hooks).unwrap();
    // Well under the script's operations limit: 5,000 rounds, each
    // rewriting a string of 8 KiB character by character (about 140 ms
    // here, against a slow-request threshold of 20 ms).
    let slow = "fn on_build_complete(ev) {\n    let s = \"x\";\n    while s.len() < 8192 { s += s; }\n    let n = 0;\n    while n < 5000 { let a = s.replace(\"x\", \"yz\"); n += 1; }\n";
    assert!(text.contains("fn on_build_complete(ev) {\n"), "the fixture's hook");
    std::fs::write(&hooks, text.replace("fn on_build_complete(ev) {\n", slow)).unwrap();
    let s = std::sync::Arc::new(
        start(data.clone(), move |c| {
            c.titles = titles;
            c.slow_request_ms = 20;
        })
        .await,
    );
    let (tok, _) = s.login("mini", "sloane").await;
    let (_, r) = s.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    // The mine completes ten seconds later: the next request runs the hook.
    s.advance(10);
    let request = {
        let s = s.clone();
        tokio::spawn(async move { s.act("mini", &tok, "get_state", json!({})).await.1 })
    };
    let mut seen = None;
    while !request.is_finished() {
        let list = s.admin_json("/admin/api/inflight").await;
        if let Some(r) = list["requests"].as_array().unwrap().iter().find(|r| r["player"] == "sloane") {
            if r["stage"] == "script" {
                seen = Some(r.clone());
                break;
            }
        }
    }
    let answer = request.await.unwrap();
    assert_eq!(answer["ok"], json!(true), "{answer}");
    let events = answer["result"]["events"].to_string();
    assert!(events.contains("building_completed") && !events.contains("hook_failed"), "{events}");
    let seen = seen.expect("the slow request was listed in flight, in the script stage");
    assert_eq!((seen["action"].as_str(), seen["title"].as_str()), (Some("get_state"), Some("mini")));
    let slow = s.admin_json("/admin/api/slow").await;
    let entry = slow["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["player"] == "sloane" && r["action"] == "get_state")
        .unwrap_or_else(|| panic!("the slow request is logged: {slow}"));
    let total = entry["total_ms"].as_f64().unwrap();
    let script = entry["stages"]["script"].as_f64().unwrap_or(0.0);
    assert!(total >= 20.0, "{entry}");
    assert!(script >= total / 2.0, "most of the time in the hook: {entry}");
    let metrics = s.admin_json("/admin/api/metrics").await;
    let hook = metrics["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "script" && e["name"] == "hooks::on_build_complete" && e["title"] == "mini")
        .unwrap_or_else(|| panic!("the hook's own latency: {metrics}"));
    assert!(hook["since_start"]["max_ms"].as_f64().unwrap() >= 20.0, "{hook}");
    std::sync::Arc::into_inner(s).unwrap().stop().await;
}

/// A login waiting for another server to hand the player over is listed in
/// flight in the `lock` stage, and the wait does not make it a slow
/// request: the time is not this server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_lock_is_its_own_stage_and_not_a_slow_request() {
    let data = fresh_data("lock-stage");
    let a = start(data.clone(), |_| {}).await;
    a.login("mini", "waiter").await;
    let b = std::sync::Arc::new(
        start(data.clone(), {
            let second = second_server(&data);
            move |c| {
                second(c);
                c.login_lock_wait_seconds = 10;
            }
        })
        .await,
    );
    let login = {
        let b = b.clone();
        tokio::spawn(async move { b.login("mini", "waiter").await })
    };
    // Until the server itself lists the login in flight, in the lock stage,
    // for well past slow_request_ms (200): the wait this test is about.
    let mut seen = Value::Null;
    for _ in 0..1000 {
        let list = b.admin_json("/admin/api/inflight").await;
        let row = list["requests"].as_array().unwrap().iter().find(|r| r["player"] == "waiter").cloned();
        if let Some(row) = row.filter(|r| r["stage"] == "lock") {
            if row["age_ms"].as_f64().unwrap() > 400.0 {
                seen = row;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!seen.is_null(), "the login was listed in flight in the lock stage for 400 ms");
    // Then handed over by A's shutdown.
    a.stop().await;
    let (_, v) = login.await.unwrap();
    assert_eq!(v["player"], "waiter");
    let slow = b.admin_json("/admin/api/slow").await;
    assert!(
        !slow["requests"].as_array().unwrap().iter().any(|r| r["player"] == "waiter"),
        "the wait for the lock is not the server's slowness: {slow}"
    );
    std::sync::Arc::into_inner(b).unwrap().stop().await;
}
