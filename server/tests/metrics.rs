//! Profiling as operators see it: `/metrics` parses as Prometheus text and
//! holds the latency of every entry point that was used (HTTP routes,
//! WebSocket message kinds, actions per title, blob store operations,
//! journal commits); it needs the admin token; the admin API has the same
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
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/mini/ws?token={tok}", s.addr)).await.unwrap();
    ws.next().await.unwrap().unwrap(); // welcome
    for action in ["ping", "get_state", "fly"] {
        ws.send(Message::Text(json!({ "id": 1, "action": action }).to_string().into())).await.unwrap();
        ws.next().await.unwrap().unwrap();
    }
    drop(ws);

    let client = reqwest::Client::new();
    let denied = client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(denied.status(), 401, "no metrics without the admin token");
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let text = client
        .get(s.url("/metrics"))
        .header("authorization", format!("Bearer {}", admin.trim()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
        ("blob", "get", ""),
        ("blob", "put", ""),
        ("journal", "commit", ""),
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

    let json: Value = client
        .get(s.url("/admin/api/metrics"))
        .header("authorization", format!("Bearer {}", admin.trim()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let build = json["entries"].as_array().unwrap().iter().find(|e| e["name"] == "build").unwrap();
    assert_eq!(build["since_start"]["count"], 1);
    assert_eq!(build["last_minute"]["count"], 1);
    s.stop().await;
}
