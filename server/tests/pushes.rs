//! Pushes: what the server tells a player without being asked. A timer's
//! end reaches the player's socket at that moment; an HTTP player finds it
//! in their next answer. Real time here: the session sleeps until the end.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::server::*;
use tokio_tungstenite::tungstenite::Message;

/// Titles where a mine builds in one second (the mini fixture's takes ten).
fn quick_titles(name: &str) -> std::path::PathBuf {
    let dir = support::temp(&format!("{name}-titles"));
    copy_dir(&support::root().join("tests/fixtures/mini"), &dir.join("mini"));
    let path = dir.join("mini/buildings.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let quick = text.replacen("\"build_seconds\": 10", "\"build_seconds\": 1", 1);
    assert_ne!(text, quick, "the fixture's mine changed; update this test");
    std::fs::write(path, quick).unwrap();
    dir
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message, within 5 s.
async fn next(w: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// The construction's end of the building placed last.
fn ends_ms(state: &Value) -> i64 {
    let b = state["buildings"].as_array().unwrap().last().unwrap();
    b["upgrade"]["ends_ms"].as_i64().unwrap_or_else(|| panic!("under construction: {b}"))
}

#[tokio::test]
async fn a_timers_end_is_pushed_to_the_socket_at_that_moment_without_a_request() {
    let titles = quick_titles("push-socket");
    let s = start_real_time(fresh_data("push-socket"), |c| c.titles = titles).await;
    let (tok, _) = s.login("mini", "ada").await;
    let (mut w, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/mini/ws?token={tok}", s.addr)).await.unwrap();
    assert_eq!(next(&mut w).await["event"], "welcome");
    let build = json!({ "id": 1, "action": "build", "args": { "building": "mine", "x": 1, "y": 1 } });
    w.send(Message::Text(build.to_string().into())).await.unwrap();
    let mut answers = Vec::new();
    let push = loop {
        let m = next(&mut w).await;
        if m.get("event").is_some() {
            break (m, now_ms());
        }
        answers.push(m);
    };
    assert_eq!(answers.len(), 1, "only the build's answer before the push: {answers:?}");
    assert_eq!(answers[0]["ok"], true, "{answers:?}");
    let (push, arrived) = push;
    assert!(push.get("id").is_none(), "a push is never taken for an answer: {push}");
    assert_eq!(push["event"], "game_events", "{push}");
    assert_eq!(push["events"][0]["event"], "building_completed", "{push}");
    assert_eq!(push["events"][0]["building"], "mine");
    // When did it end? The state says; the push came at that moment.
    let (_, r) = s.act("mini", &tok, "get_state", Value::Null).await;
    let state = &r["result"]["state"];
    let mine = state["buildings"].as_array().unwrap().iter().find(|b| b["building"] == "mine").unwrap();
    assert_eq!(mine["level"], 1, "completed once, by the wake-up: {mine}");
    assert!(r["result"]["events"].as_array().unwrap().is_empty(), "nothing left for the next request to complete");
    let (at, done_at) = (push["at_ms"].as_i64().unwrap(), mine["since_ms"].as_i64().unwrap());
    assert!(done_at <= at && at - done_at < 500, "woken {} ms after the end", at - done_at);
    assert!(arrived >= done_at && arrived - done_at < 500, "pushed {} ms after the end", arrived - done_at);
    s.stop().await;
}

#[tokio::test]
async fn an_http_player_finds_pushes_in_the_next_answer() {
    let titles = quick_titles("push-http");
    let s = start_real_time(fresh_data("push-http"), |c| c.titles = titles).await;
    let (tok, _) = s.login("mini", "bea").await;
    let (_, r) = s.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    assert!(r.get("pushes").is_none(), "nothing pushed yet: {r}");
    let (_, r) = s.act("mini", &tok, "get_state", Value::Null).await;
    let end = ends_ms(&r["result"]["state"]);
    // The session completes the mine at its end on its own; the player,
    // asking later, finds the completion among the pushes.
    tokio::time::sleep(Duration::from_millis((end - now_ms() + 300).max(0) as u64)).await;
    let (_, r) = s.act("mini", &tok, "ping", Value::Null).await;
    let pushes = r["pushes"].as_array().unwrap_or_else(|| panic!("pushes in the answer: {r}"));
    assert_eq!(pushes.len(), 1, "{r}");
    assert_eq!(pushes[0]["event"], "game_events");
    assert_eq!(pushes[0]["events"][0]["event"], "building_completed");
    let (_, r) = s.act("mini", &tok, "ping", Value::Null).await;
    assert!(r.get("pushes").is_none(), "a push is given once: {r}");
    s.stop().await;
}

/// A server of a cluster on `nats`: the shared data folder, its own
/// journal and identity.
async fn member(data: &std::path::Path, name: &str, nats: &support::Nats) -> Server {
    let (dir, url) = (data.join(format!("server-{name}")), nats.url.clone());
    let prefix = format!("test{}", std::process::id());
    start_at(data.to_path_buf(), std::sync::Arc::new(ManualClock(START.into())), move |c| {
        c.server_dir = Some(dir);
        c.nats = Some(citadel_server::config::NatsConfig { url, credentials: None, subject_prefix: prefix });
    })
    .await
}

async fn socket(s: &Server, title: &str, token: &str) -> Socket {
    let (mut w, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/{title}/ws?token={token}", s.addr)).await.unwrap();
    assert_eq!(next(&mut w).await["event"], "welcome");
    w
}

/// Sends a request on the socket and returns its answer; pushes that
/// arrive first are kept in `pushes`.
async fn ask(w: &mut Socket, id: u64, action: &str, args: Value, pushes: &mut Vec<Value>) -> Value {
    w.send(Message::Text(json!({ "id": id, "action": action, "args": args }).to_string().into())).await.unwrap();
    loop {
        let m = next(w).await;
        if m.get("event").is_some() {
            pushes.push(m);
        } else {
            assert_eq!(m["id"], id, "{m}");
            return m;
        }
    }
}

/// The next push on the socket within `within`, skipping none.
async fn push_within(w: &mut Socket, within: Duration) -> Value {
    let m = tokio::time::timeout(within, next(w)).await.expect("a push in time");
    assert!(m.get("event").is_some(), "a push, not an answer: {m}");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clan_chat_reaches_members_on_other_servers_in_order_within_a_second() {
    let Some(nats) = support::Nats::start("clan chat across servers") else {
        return;
    };
    let data = fresh_data("chat-cluster");
    let a = member(&data, "a", &nats).await;
    let b = member(&data, "b", &nats).await;
    let c = member(&data, "c", &nats).await;
    let (ta, _) = a.login("mini", "ann").await;
    let (tb, _) = b.login("mini", "bob").await;
    let (tc, _) = c.login("mini", "cid").await;
    let mut pushes = Vec::new();
    let mut wa = socket(&a, "mini", &ta).await;
    let mut wb = socket(&b, "mini", &tb).await;
    let mut wc = socket(&c, "mini", &tc).await;
    let r = ask(&mut wa, 1, "clan_create", json!({ "name": "Iron Wolves", "open": true }), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ask(&mut wb, 1, "clan_join", json!({ "clan": "Iron Wolves" }), &mut pushes).await;
    assert_eq!(r["result"]["joined"], true, "{r}");
    // Lines from either side, each seen by the other within a second, in order.
    for i in 0..6u64 {
        let (from, to, who) = if i % 2 == 0 { (&mut wa, &mut wb, "ann") } else { (&mut wb, &mut wa, "bob") };
        let text = format!("line {i}");
        let sent = std::time::Instant::now();
        let r = ask(from, 10 + i, "clan_chat_post", json!({ "text": text }), &mut pushes).await;
        assert_eq!(r["ok"], true, "{r}");
        let got = push_within(to, Duration::from_secs(1)).await;
        assert!(sent.elapsed() < Duration::from_secs(1));
        assert_eq!(
            (got["event"].as_str(), got["player"].as_str(), got["text"].as_str()),
            (Some("chat"), Some(who), Some(text.as_str())),
            "{got}"
        );
        assert_eq!(got["seq"], r["result"]["line"]["seq"], "the line as stored");
        // The sender's own socket gets the line too (every member online).
        let own = push_within(from, Duration::from_secs(1)).await;
        assert_eq!(own["text"], text.as_str());
    }
    // A player outside the clan hears nothing of it.
    let r = ask(&mut wc, 1, "ping", Value::Null, &mut pushes).await;
    assert_eq!(r["ok"], true);
    assert!(pushes.is_empty(), "no stray pushes: {pushes:?}");
    assert!(tokio::time::timeout(Duration::from_millis(200), next(&mut wc)).await.is_err(), "cid is not in the clan");
    for s in [a, b, c] {
        s.stop().await;
    }
    drop(nats);
}

/// The server id a server keeps in its own folder.
fn server_id(data: &std::path::Path, name: &str) -> String {
    let hex = std::fs::read_to_string(data.join(format!("server-{name}/server-id"))).unwrap();
    format!("server-{}", hex.trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_on_one_server_bans_broadcasts_and_drains_on_another_within_a_second() {
    let Some(nats) = support::Nats::start("cluster-wide admin operations") else {
        return;
    };
    let data = fresh_data("admin-cluster");
    let a = member(&data, "a", &nats).await;
    let b = member(&data, "b", &nats).await;
    let (tok, _) = b.login("mini", "eve").await;
    let mut w = socket(&b, "mini", &tok).await;
    let (status, r) = a.admin_post("/admin/api/broadcast", json!({ "text": "Maintenance at noon" })).await;
    assert_eq!(status, 200, "{r}");
    let got = push_within(&mut w, Duration::from_secs(1)).await;
    assert_eq!((got["event"].as_str(), got["text"].as_str()), (Some("notice"), Some("Maintenance at noon")));
    // Banned on A: the socket on B is told and closed within a second.
    let sent = std::time::Instant::now();
    let (status, r) = a.admin_post("/admin/api/players/mini/eve/ban", json!({ "reason": "botting" })).await;
    assert_eq!(status, 200, "{r}");
    let got = push_within(&mut w, Duration::from_secs(1)).await;
    assert_eq!(got["event"], "logged_out", "{got}");
    let closed = tokio::time::timeout(Duration::from_secs(1), w.next()).await.expect("closed in time");
    match closed {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 4001),
        other => panic!("a close frame: {other:?}"),
    }
    assert!(sent.elapsed() < Duration::from_secs(1), "{:?}", sent.elapsed());
    let (_, r) = b.act("mini", &tok, "ping", Value::Null).await;
    assert_eq!(r["error"]["code"], "banned", "{r}");
    // A drains B: B takes no new player, A still does.
    let (status, r) = a.admin_post("/admin/api/drain", json!({ "on": true, "server": server_id(&data, "b") })).await;
    assert_eq!(status, 200, "{r}");
    let started = std::time::Instant::now();
    loop {
        let r = reqwest::Client::new()
            .post(b.url("/v1/mini/login"))
            .json(&json!({ "player": "fay" }))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "B still takes new players: {}", r.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t, _) = a.login("mini", "gus").await;
    assert!(!t.is_empty());
    for s in [a, b] {
        s.stop().await;
    }
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_watcher_on_one_server_sees_a_base_placed_and_moved_on_another_within_a_second() {
    let Some(nats) = support::Nats::start("the map across servers") else {
        return;
    };
    let data = fresh_data("map-cluster");
    let a = member(&data, "a", &nats).await;
    let c = member(&data, "c", &nats).await;
    let (tc, login) = c.login("mini", "cid").await;
    let region = login["state"].get("position").map_or("plain".into(), |_| "plain".to_string());
    let mut pushes = Vec::new();
    let mut w = socket(&c, "mini", &tc).await;
    // The whole plain (16 by 16): every base on it is in view.
    let r = ask(&mut w, 1, "map_watch", json!({ "region": region, "x": 8, "y": 8, "radius": 8 }), &mut pushes).await;
    assert_eq!(r["result"]["watching"]["radius"], 8, "{r}");
    let sent = std::time::Instant::now();
    let (ta, _) = a.login("mini", "ann").await;
    let got = push_within(&mut w, Duration::from_secs(1)).await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (got["event"].as_str(), got["change"].as_str(), got["player"].as_str()),
        (Some("map"), Some("placed"), Some("ann")),
        "{got}"
    );
    let (_, r) = a.act("mini", &ta, "map_near", json!({ "radius": 0, "limit": 1 })).await;
    assert_eq!(r["result"]["bases"][0]["position"], got["at"], "the spot the world store has: {r}");
    // Ann moves (a relocation costs a gem): the watcher sees where from and to.
    let at = got["at"].clone();
    let to = json!({ "region": "plain", "x": (at["x"].as_i64().unwrap() + 8) % 16, "y": at["y"] });
    let (_, r) = a.act("mini", &ta, "relocate", to.clone()).await;
    assert_eq!(r["ok"], true, "{r}");
    let got = push_within(&mut w, Duration::from_secs(1)).await;
    assert_eq!((got["change"].as_str(), &got["at"], &got["from"]), (Some("relocated"), &to, &at), "{got}");
    // Unwatched: nothing more.
    let r = ask(&mut w, 2, "map_unwatch", Value::Null, &mut pushes).await;
    assert_eq!(r["result"]["watching"], Value::Null);
    a.login("mini", "bob").await;
    assert!(pushes.is_empty(), "{pushes:?}");
    assert!(tokio::time::timeout(Duration::from_millis(300), next(&mut w)).await.is_err(), "no push after map_unwatch");
    for s in [a, c] {
        s.stop().await;
    }
    drop(nats);
}
