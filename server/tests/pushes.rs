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
    member_with(data, name, nats, |_| {}).await
}

async fn member_with(
    data: &std::path::Path,
    name: &str,
    nats: &support::Nats,
    tweak: impl FnOnce(&mut citadel_server::Config),
) -> Server {
    let (dir, url) = (data.join(format!("server-{name}")), nats.url.clone());
    let prefix = format!("test{}", std::process::id());
    start_at(data.to_path_buf(), std::sync::Arc::new(ManualClock(START.into())), move |c| {
        c.server_dir = Some(dir);
        c.dev_login = Some(true);
        c.nats = Some(citadel_server::config::NatsConfig {
            url,
            credentials: None,
            subject_prefix: prefix,
            journal_replicas: 1,
        });
        tweak(c);
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
    // Both members hear of the new one, on either server.
    for w in [&mut wa, &mut wb] {
        let got = push_within(w, Duration::from_secs(1)).await;
        assert_eq!(
            (got["event"].as_str(), got["change"].as_str(), got["player"].as_str()),
            (Some("clan"), Some("joined"), Some("bob")),
            "{got}"
        );
        assert_eq!(got["clan"], "iron wolves");
    }
    pushes.clear();
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
    // Cid is invited from A: he hears of it on C, and so does the clan.
    let r = ask(&mut wa, 50, "clan_invite", json!({ "player": "cid" }), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    for w in [&mut wc, &mut wb] {
        let got = push_within(w, Duration::from_secs(1)).await;
        assert_eq!(
            (got["change"].as_str(), got["player"].as_str(), got["by"].as_str()),
            (Some("invited"), Some("cid"), Some("ann")),
            "{got}"
        );
    }
    // Bob is kicked: he hears of it; then a player outside the clan hears nothing of it.
    let r = ask(&mut wa, 51, "clan_kick", json!({ "player": "bob" }), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    let got = push_within(&mut wb, Duration::from_secs(1)).await;
    assert_eq!((got["change"].as_str(), got["player"].as_str()), (Some("kicked"), Some("bob")), "{got}");
    let r = ask(&mut wa, 52, "clan_chat_post", json!({ "text": "bob is out" }), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), next(&mut wb)).await.is_err(),
        "bob hears no more of the clan"
    );
    // (Ann's own socket heard the kick and her line: members do.)
    pushes.clear();
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
    // Cid's own base was placed at its login, just before the watch began;
    // the bus may deliver that change after it began (the watcher then
    // sees a base it already has): not what this test looks for.
    let own = |p: &Value| p["change"] == "placed" && p["player"] == "cid";
    pushes.retain(|p| !own(p));
    let sent = std::time::Instant::now();
    let (ta, _) = a.login("mini", "ann").await;
    let got = loop {
        let got = push_within(&mut w, Duration::from_secs(1)).await;
        if !own(&got) {
            break got;
        }
    };
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

/// Ann, live on `a`, founds the open clan `name`; bob, live on `b`, joins
/// it: their sockets.
async fn two_members(a: &Server, b: &Server, name: &str, pushes: &mut Vec<Value>) -> (Socket, Socket) {
    let (ta, _) = a.login("mini", "ann").await;
    let (tb, _) = b.login("mini", "bob").await;
    let mut wa = socket(a, "mini", &ta).await;
    let mut wb = socket(b, "mini", &tb).await;
    let r = ask(&mut wa, 1, "clan_create", json!({ "name": name, "open": true }), pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ask(&mut wb, 1, "clan_join", json!({ "clan": name }), pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    (wa, wb)
}

/// Operations named `op` in the player's history.
fn count_ops(state: &Value, op: &str) -> usize {
    state["history"].as_array().unwrap().iter().filter(|h| h["op"] == op).count()
}

/// Every file of a title folder, by path, as `/admin/api/titles/{id}/push` takes them.
fn title_files(dir: &std::path::Path) -> serde_json::Map<String, Value> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut serde_json::Map<String, Value>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, Value::String(text));
            }
        }
    }
    let mut out = serde_json::Map::new();
    walk(dir, dir, &mut out);
    out
}

/// The content version each server serves of `title`.
async fn served(servers: &[&Server], title: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in servers {
        let v: Value = reqwest::get(s.url("/v1/titles")).await.unwrap().json().await.unwrap();
        let t = v["titles"].as_array().unwrap().iter().find(|t| t["id"] == title).cloned().unwrap_or_default();
        out.push(t["content_version"].as_str().unwrap_or("").to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_pushed_to_one_server_is_served_by_all_within_a_second_and_a_refusal_reported_by_all() {
    let Some(nats) = support::Nats::start("title pushes across servers") else {
        return;
    };
    // Three machines: each its own data folder; the version store is the
    // S3 bucket they share.
    let s3 = support::s3s_fs().await;
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let data = fresh_data(&format!("titles-cluster-{name}"));
        let s3 = s3.clone();
        servers.push(member_with(&data, name, &nats, move |c| c.s3 = Some(s3)).await);
    }
    let [a, b, c] = <[Server; 3]>::try_from(servers).unwrap_or_else(|_| unreachable!("three servers"));
    let all = [&a, &b, &c];
    let before = served(&all, "mini").await;
    assert!(before.iter().all(|v| !v.is_empty() && *v == before[0]), "{before:?}");
    let mut files = title_files(&support::root().join("tests/fixtures/mini"));
    let mut manifest: Value = serde_json::from_str(files["title.json"].as_str().unwrap()).unwrap();
    manifest["name"] = json!("Mini, pushed");
    files.insert("title.json".into(), Value::String(manifest.to_string()));
    let sent = std::time::Instant::now();
    let (status, r) = a.admin_post("/admin/api/titles/mini/push", json!({ "files": files })).await;
    assert_eq!(status, 200, "{r}");
    let new = r["reports"][0]["content_version"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    assert_ne!(new, before[0]);
    loop {
        let now = served(&all, "mini").await;
        if now.iter().all(|v| *v == new) {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(1), "not every server serves {new}: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An invalid one: served by none, and every server says why.
    manifest["start"]["resources"] = json!({ "gold": "lots" });
    files.insert("title.json".into(), Value::String(manifest.to_string()));
    let (status, r) = a.admin_post("/admin/api/titles/mini/push", json!({ "files": files })).await;
    assert!(status >= 400, "{status} {r}");
    assert_eq!(r["reports"][0]["outcome"], "refused", "{r}");
    let sent = std::time::Instant::now();
    for s in all {
        loop {
            let v: Value = serde_json::from_str(&s.admin_get("/admin/api/titles").await).unwrap();
            let mini = v["titles"].as_array().unwrap().iter().find(|t| t["id"] == "mini").unwrap().clone();
            if mini["last_change"]["outcome"] == "refused" {
                assert_eq!(mini["content_version"], new.as_str(), "still the valid one");
                let text = mini["last_change"]["diagnostics"].to_string();
                assert!(text.contains("title.json"), "names the file: {text}");
                break;
            }
            assert!(sent.elapsed() < Duration::from_secs(1), "{} does not report the refusal: {mini}", s.addr);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(served(&all, "mini").await.iter().all(|v| *v == new));
    for s in [a, b, c] {
        s.stop().await;
    }
    drop(nats);
}

/// A metric's value in `/metrics` (the first line that starts with `name`).
async fn metric(s: &Server, name: &str) -> f64 {
    let text = s.admin_get("/metrics").await;
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_every_server_answers_its_players_and_pushes_and_inbox_items_flow_again_once_it_is_back() {
    let Some(mut nats) = support::Nats::start("NATS down and back") else {
        return;
    };
    let data = fresh_data("nats-down");
    let a = member(&data, "a", &nats).await;
    let b = member(&data, "b", &nats).await;
    let mut pushes = Vec::new();
    let (mut wa, mut wb) = two_members(&a, &b, "Night Owls", &mut pushes).await;
    assert_eq!(metric(&a, "citadel_bus_up").await, 1.0);

    nats.kill();
    // Every request of either player is answered as usual meanwhile.
    for i in 0..3u64 {
        for (w, who) in [(&mut wa, "ann"), (&mut wb, "bob")] {
            let r = ask(w, 10 + i, "clan_chat_post", json!({ "text": format!("{who} in the dark {i}") }), &mut pushes)
                .await;
            assert_eq!(r["ok"], true, "{r}");
            let r =
                ask(w, 20 + i, "build", json!({ "building": "mine", "x": 3 + i as i64, "y": 5 }), &mut pushes).await;
            assert!(
                r["ok"] == true || r["error"]["code"] == "limit_reached" || r["error"]["code"] == "no_free_builder",
                "{r}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&a, "citadel_bus_up").await, 0.0, "the console shows the bus down");
    assert!(
        metric(&a, "citadel_messages_dropped_total{where=\"bus_unreachable\"}").await >= 1.0,
        "lost lines are counted"
    );
    // The lines are not lost for good: the chat history has all of them.
    let r = ask(&mut wb, 40, "clan_chat", json!({ "limit": 100 }), &mut pushes).await;
    assert_eq!(r["result"]["lines"].as_array().unwrap().len(), 6, "{r}");
    // Grants sent from A to bob (live on B) meanwhile: their wake-ups are
    // lost with the bus, the items are not.
    let gold = ask(&mut wb, 41, "get_state", Value::Null, &mut pushes).await["result"]["state"]["resources"]["gold"]
        .as_i64()
        .unwrap();
    for g in 1..=3 {
        let grant = json!({ "resources": { "gold": g }, "message": format!("grant {g}"), "reason": "outage" });
        let (status, r) = a.admin_post("/admin/api/players/mini/bob/send", grant).await;
        assert_eq!(status, 200, "a grant is accepted with the bus down: {r}");
    }
    pushes.retain(|p| p["event"] != "chat" && p["event"] != "clan");
    assert!(pushes.is_empty(), "nothing reached bob across servers meanwhile: {pushes:?}");
    // NATS back: within 5 s a line from A reaches B again, and bob's
    // session claims the three grants.
    nats.restart();
    let back = std::time::Instant::now();
    let mut seen: Vec<Value> = Vec::new();
    let mut n = 0;
    let got = loop {
        n += 1;
        // Past the chat's rate limit (5 lines in 10 s, on the server's clock).
        a.advance(3);
        let text = format!("hello again {n}");
        let r = ask(&mut wa, 100 + n, "clan_chat_post", json!({ "text": text }), &mut pushes).await;
        assert_eq!(r["ok"], true, "{r}");
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        let mut line = None;
        while let Ok(m) = tokio::time::timeout_at(until, next(&mut wb)).await {
            if m["event"] == "chat" && m["player"] == "ann" && m["text"] == text.as_str() {
                line = Some(m.clone());
            }
            seen.push(m);
        }
        match line {
            Some(m) => break m,
            None => assert!(back.elapsed() < Duration::from_secs(5), "no push across servers 5 s after NATS returned"),
        }
    };
    let inbox = |seen: &[Value]| seen.iter().filter(|m| m["event"] == "inbox").count();
    while inbox(&seen) < 3 && back.elapsed() < Duration::from_secs(5) {
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), next(&mut wb)).await {
            seen.push(m);
        }
    }
    assert_eq!(inbox(&seen), 3, "every grant is claimed within 5 s of NATS returning: {seen:?}");
    let r = ask(&mut wb, 42, "get_state", Value::Null, &mut pushes).await;
    let state = &r["result"]["state"];
    assert_eq!(state["resources"]["gold"].as_i64(), Some(gold + 6), "each grant applied once: {state}");
    assert_eq!(count_ops(state, "inbox_claim"), 3);
    let r = ask(&mut wb, 43, "inbox", json!({}), &mut pushes).await;
    let items = r["result"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{r}");
    assert!(items.iter().all(|i| !i["claimed_ms"].is_null()), "all claimed: {r}");
    assert_eq!(got["event"], "chat");
    assert_eq!(metric(&b, "citadel_bus_up").await, 1.0);
    for s in [a, b] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_sent_on_one_server_reaches_a_player_live_on_another_within_a_second_once() {
    let Some(nats) = support::Nats::start("a grant across servers") else {
        return;
    };
    let data = fresh_data("grant-cluster");
    let a = member(&data, "a", &nats).await;
    let b = member(&data, "b", &nats).await;
    let (tok, login) = b.login("mini", "gil").await;
    let gold = login["state"]["resources"]["gold"].as_i64().unwrap();
    let mut pushes = Vec::new();
    let mut w = socket(&b, "mini", &tok).await;
    let sent = std::time::Instant::now();
    let grant = json!({ "resources": { "gold": 7 }, "message": "Sorry for the outage", "reason": "compensation" });
    let (status, r) = a.admin_post("/admin/api/players/mini/gil/send", grant).await;
    assert_eq!(status, 200, "{r}");
    let got = push_within(&mut w, Duration::from_secs(1)).await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!((got["event"].as_str(), got["item"]["kind"].as_str()), (Some("inbox"), Some("grant")), "{got}");
    assert_eq!(got["item"]["resources"]["gold"], 7);
    assert_eq!(got["item"]["body"]["message"], "Sorry for the outage");
    let r = ask(&mut w, 1, "get_state", Value::Null, &mut pushes).await;
    let state = &r["result"]["state"];
    assert_eq!(state["resources"]["gold"].as_i64(), Some(gold + 7), "applied once");
    assert_eq!(count_ops(state, "inbox_claim"), 1);
    // Refused before anything is sent: an unknown id (with a suggestion), a
    // player who never played, a revoke.
    let (status, r) =
        a.admin_post("/admin/api/players/mini/gil/send", json!({ "resources": { "gld": 1 }, "reason": "x" })).await;
    assert_eq!((status, r["error"]["code"].as_str()), (422, Some("unknown_id")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("gold"), "did you mean: {r}");
    let (status, r) =
        a.admin_post("/admin/api/players/mini/nobody/send", json!({ "resources": { "gold": 1 }, "reason": "x" })).await;
    assert_eq!((status, r["error"]["code"].as_str()), (404, Some("unknown_player")), "{r}");
    let (status, _) =
        a.admin_post("/admin/api/players/mini/gil/send", json!({ "resources": { "gold": -1 }, "reason": "x" })).await;
    assert_eq!(status, 400);
    let r = ask(&mut w, 2, "inbox", json!({}), &mut pushes).await;
    assert_eq!(r["result"]["items"].as_array().unwrap().len(), 1, "nothing else was sent: {r}");
    assert!(pushes.is_empty(), "{pushes:?}");
    for s in [a, b] {
        s.stop().await;
    }
    drop(nats);
}

/// The mini fixture with gifts between clan members (100 gold at most, two
/// a day), in `data`'s titles folder.
fn gifting(data: &std::path::Path) -> std::path::PathBuf {
    let to = data.join("titles/mini");
    copy_dir(&support::root().join("tests/fixtures/mini"), &to);
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(to.join("title.json")).unwrap()).unwrap();
    t["world"]["clans"]["gifts"] = json!({ "resources": { "gold": 100 }, "per_day": 2 });
    std::fs::write(to.join("title.json"), t.to_string()).unwrap();
    data.join("titles")
}

/// The next push on the socket that is not a chat line or a clan change
/// (those a join sends first).
async fn push_not_clan(w: &mut Socket, within: Duration) -> Value {
    loop {
        let m = push_within(w, within).await;
        if m["event"] != "chat" && m["event"] != "clan" {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_to_a_clan_member_on_another_server_arrives_once_and_a_full_inbox_sends_it_back() {
    let Some(nats) = support::Nats::start("gifts across servers") else {
        return;
    };
    let data = fresh_data("gift-cluster");
    let titles = gifting(&data);
    let dir = titles.clone();
    let a = member_with(&data, "a", &nats, move |c| c.titles = dir).await;
    let b = member_with(&data, "b", &nats, move |c| c.titles = titles).await;
    let (tc, _) = a.login("mini", "cid").await;
    let mut pushes = Vec::new();
    let (mut wa, mut wb) = two_members(&a, &b, "Givers", &mut pushes).await;
    let gold_of = |r: &Value| r["result"]["state"]["resources"]["gold"].as_i64().unwrap();
    let ann_gold = gold_of(&ask(&mut wa, 2, "get_state", Value::Null, &mut pushes).await);
    let bob_gold = gold_of(&ask(&mut wb, 2, "get_state", Value::Null, &mut pushes).await);

    // Refused, taking nothing: to someone outside the clan, to oneself,
    // more than a gift carries (mini: 100 gold), what may not be given.
    let gift = |to: &str, resources: Value| json!({ "to": to, "resources": resources });
    let r = ask(&mut wa, 3, "clan_gift", gift("cid", json!({ "gold": 10 })), &mut pushes).await;
    assert_eq!(r["error"]["code"], "not_in_clan", "{r}");
    let r = ask(&mut wa, 4, "clan_gift", gift("ann", json!({ "gold": 10 })), &mut pushes).await;
    assert_eq!(r["error"]["code"], "invalid_argument", "{r}");
    let r = ask(&mut wa, 5, "clan_gift", gift("bob", json!({ "gold": 101 })), &mut pushes).await;
    assert_eq!(r["error"]["code"], "invalid_argument", "{r}");
    let r = ask(&mut wa, 6, "clan_gift", gift("bob", json!({ "gems": 1 })), &mut pushes).await;
    assert_eq!(r["error"]["code"], "invalid_argument", "{r}");
    let (_, r) = a.act("mini", &tc, "clan_gift", gift("bob", json!({ "gold": 1 }))).await;
    assert_eq!(r["error"]["code"], "not_in_clan", "cid is in no clan: {r}");

    // Ann gives bob 60 gold: taken at once; bob, live on B, is told within
    // a second and has it; ann learns it was delivered.
    let sent = std::time::Instant::now();
    let r = ask(&mut wa, 7, "clan_gift", gift("bob", json!({ "gold": 60 })), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    let id = r["result"]["gift"].as_str().unwrap().to_string();
    let got = push_not_clan(&mut wb, Duration::from_secs(1)).await;
    assert!(sent.elapsed() < Duration::from_secs(1), "{:?}", sent.elapsed());
    assert_eq!((got["event"].as_str(), got["item"]["kind"].as_str()), (Some("inbox"), Some("gift")), "{got}");
    assert_eq!((got["item"]["from"].as_str(), got["item"]["id"].as_str()), (Some("ann"), Some(id.as_str())));
    assert_eq!(got["item"]["resources"]["gold"], 60);
    let told = push_not_clan(&mut wa, Duration::from_secs(1)).await;
    assert_eq!(told["events"][0]["event"], "gift_delivered", "{told}");
    let r = ask(&mut wb, 8, "get_state", Value::Null, &mut pushes).await;
    assert_eq!(gold_of(&r), bob_gold + 60, "applied once");
    assert_eq!(count_ops(&r["result"]["state"], "inbox_claim"), 1);
    let r = ask(&mut wa, 9, "get_state", Value::Null, &mut pushes).await;
    assert_eq!(gold_of(&r), ann_gold - 60);
    assert_eq!(r["result"]["state"]["gifts"]["outgoing"], json!([]), "{r}");

    // Bob goes offline with a full inbox: ann's next gift comes back to her.
    drop(wb);
    let (status, r) = b.admin_post("/admin/api/players/mini/bob/logout", json!({ "reason": "test: offline" })).await;
    assert_eq!(status, 200, "{r}");
    for i in 0..citadel_server::session::inbox::INBOX_UNCLAIMED_MAX {
        let note = json!({ "message": format!("note {i}"), "reason": "test: a full inbox" });
        let (status, r) = b.admin_post("/admin/api/players/mini/bob/send", note).await;
        assert_eq!(status, 200, "{r}");
    }
    let r = ask(&mut wa, 10, "clan_gift", gift("bob", json!({ "gold": 40 })), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    let told = push_not_clan(&mut wa, Duration::from_secs(1)).await;
    assert_eq!(told["events"][0]["event"], "gift_returned", "{told}");
    let r = ask(&mut wa, 11, "get_state", Value::Null, &mut pushes).await;
    assert_eq!(gold_of(&r), ann_gold - 60, "the 40 came back");
    // Two gifts a day (mini): the third is refused.
    let r = ask(&mut wa, 12, "clan_gift", gift("bob", json!({ "gold": 1 })), &mut pushes).await;
    assert_eq!(r["error"]["code"], "limit_reached", "{r}");
    for s in [a, b] {
        s.stop().await;
    }
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_still_on_its_way_when_its_server_stopped_is_delivered_at_the_givers_next_session_once() {
    let data = fresh_data("gift-pending");
    let titles = gifting(&data);
    let dir = titles.clone();
    let s = start(data.clone(), move |c| c.titles = dir).await;
    let (ta, _) = s.login("mini", "ann").await;
    let (tb, _) = s.login("mini", "bob").await;
    let (_, r) = s.act("mini", &ta, "clan_create", json!({ "name": "Keepers", "open": true })).await;
    assert_eq!(r["ok"], true, "{r}");
    let (_, r) = s.act("mini", &tb, "clan_join", json!({ "clan": "Keepers" })).await;
    assert_eq!(r["ok"], true, "{r}");
    let (_, r) = s.act("mini", &tb, "get_state", Value::Null).await;
    let bob_gold = r["result"]["state"]["resources"]["gold"].as_i64().unwrap();
    let (clock, data) = (s.clock.clone(), s.stop().await);
    // As a server that died after taking the gold and before the inbox had
    // the gift leaves ann's file: the gift on its way.
    let file = data.join("players/mini/ann.json");
    // Written back as plain JSON, as files were before headers: it loads.
    let mut ann = support::state_file(&file);
    ann["gifts"]["outgoing"] = json!([{ "id": "gift:pending:1", "to": "bob", "clan": "keepers", "resources": { "gold": 25 }, "sent_ms": START }]);
    std::fs::write(&file, ann.to_string()).unwrap();

    let dir = titles.clone();
    let s = start_at(data.clone(), clock.clone(), move |c| c.titles = dir).await;
    let (ta, _) = s.login("mini", "ann").await;
    let (_, r) = s.act("mini", &ta, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["gifts"]["outgoing"], json!([]), "delivered at login: {r}");
    let (tb, _) = s.login("mini", "bob").await;
    let (_, r) = s.act("mini", &tb, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["resources"]["gold"].as_i64(), Some(bob_gold + 25), "{r}");
    let data = s.stop().await;
    // Both log in again: nothing more arrives.
    let s = start_at(data, clock, move |c| c.titles = titles).await;
    s.login("mini", "ann").await;
    let (tb, _) = s.login("mini", "bob").await;
    let (_, r) = s.act("mini", &tb, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["resources"]["gold"].as_i64(), Some(bob_gold + 25), "once: {r}");
    assert_eq!(count_ops(&r["result"]["state"], "inbox_claim"), 1);
    s.stop().await;
}
