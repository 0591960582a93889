//! A binary upgrade under load: a second `citadel` process takes the
//! listening socket over from the first (`--take-over`), the first drains
//! and exits 0, and players on WebSocket and HTTP notice nothing but a
//! reconnect. Every action sent is answered (zero failed requests), and
//! every acknowledged one is in the players' state exactly once (counted:
//! each action grants exactly one gem). And a data folder an older server
//! left behind (an older player file format, unsaved journal records) is
//! served by this one.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::server::copy_dir;
use support::{citadel, counting_title, root, temp, Counter, START_GEMS};
use tokio_tungstenite::tungstenite::Message;

const PLAYERS_PER_TRANSPORT: usize = 8;
/// A request not answered after this long, reconnects included, failed.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Actions acknowledged before the upgrade starts, and again after the old
/// process exits, so that both processes are seen serving real load.
const LOAD: u64 = 100;

#[derive(Default)]
struct Tally {
    acked: Counter,
    reconnects: AtomicU64,
}

fn tithe(id: u64) -> Value {
    json!({ "id": id, "action": "custom", "args": { "name": "tithe" } })
}

/// Logs in, retrying while the port changes hands; `None` past the deadline.
async fn login(http: &reqwest::Client, addr: &str, player: &str, deadline: Instant) -> Option<String> {
    while Instant::now() < deadline {
        let r = http.post(format!("http://{addr}/v1/mini/login")).json(&json!({ "player": player })).send().await;
        if let Ok(r) = r {
            if let Ok(v) = r.json::<Value>().await {
                if let Some(t) = v["token"].as_str() {
                    return Some(t.to_string());
                }
                assert_eq!(v["error"]["code"], "shutting_down", "{player}: login failed: {v}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Sends tithes over WebSocket until `stop`; reconnects when the server
/// closes the socket and sends the unanswered request again (a request
/// the old server never read). Returns the actions acknowledged.
async fn ws_player(addr: String, player: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> Result<u64, String> {
    let http = reqwest::Client::new();
    let mut acked = 0;
    let mut id = 0;
    'connect: while !stop.load(Ordering::Relaxed) {
        let deadline = Instant::now() + ANSWER_WITHIN;
        let token = login(&http, &addr, &player, deadline).await.ok_or(format!("{player}: no login"))?;
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/mini/ws?token={token}")).await
        else {
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            if ws.send(Message::Text(tithe(id).to_string().into())).await.is_err() {
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                continue 'connect;
            }
            loop {
                match tokio::time::timeout(ANSWER_WITHIN, ws.next()).await {
                    Err(_) => return Err(format!("{player}: request {id} unanswered")),
                    Ok(Some(Ok(Message::Text(t)))) => {
                        let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                        if v.get("event").is_some() {
                            continue; // welcome, server_shutdown
                        }
                        if v["ok"] != true {
                            return Err(format!("{player}: request {id} failed: {v}"));
                        }
                        acked += 1;
                        tally.acked.add(1);
                        id += 1;
                        break;
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(_)) | None) => {
                        tally.reconnects.fetch_add(1, Ordering::Relaxed);
                        continue 'connect;
                    }
                }
            }
        }
    }
    Ok(acked)
}

/// Sends tithes over HTTP keep-alive until `stop`; a request that got no
/// answer (its connection closed) or `shutting_down` is sent again.
async fn http_player(addr: String, player: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> Result<u64, String> {
    let http = reqwest::Client::new();
    let mut acked = 0;
    let mut token = login(&http, &addr, &player, Instant::now() + ANSWER_WITHIN).await.ok_or("no login")?;
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            if Instant::now() > deadline {
                return Err(format!("{player}: request {id} unanswered"));
            }
            let sent =
                http.post(format!("http://{addr}/v1/mini/request")).bearer_auth(&token).json(&tithe(id)).send().await;
            let v = match sent {
                Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            if v["ok"] == true {
                acked += 1;
                tally.acked.add(1);
                id += 1;
                break;
            }
            if v.is_null() || v["error"]["code"] == "shutting_down" {
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                if v.is_null() {
                    token = login(&http, &addr, &player, deadline).await.ok_or("no login")?;
                }
                continue;
            }
            return Err(format!("{player}: request {id} failed: {v}"));
        }
    }
    Ok(acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_process_takes_over_under_load_without_a_failed_request_or_a_lost_action() {
    let titles = temp("upgrade-titles");
    counting_title(&titles);
    let data = temp("upgrade-data");
    let config = data.join("citadel.toml");
    std::fs::write(&config, "[limits]\nrequests_per_second_max = 100000\n").unwrap();
    let common = |server_dir: &str| {
        vec![
            "--config".into(),
            config.clone().into_os_string(),
            "--data-dir".into(),
            data.clone().into_os_string(),
            "--titles".into(),
            titles.clone().into_os_string(),
            "--server-dir".into(),
            data.join(server_dir).into_os_string(),
        ]
    };
    let mut args_a = common("server-a");
    args_a.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let refs: Vec<&std::ffi::OsStr> = args_a.iter().map(|a| a.as_os_str()).collect();
    let (mut old, addr) = citadel(&refs);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut players = Vec::new();
    for p in 0..PLAYERS_PER_TRANSPORT {
        let (a, s, t) = (addr.clone(), stop.clone(), tally.clone());
        players.push((format!("w{p}"), tokio::spawn(ws_player(a, format!("w{p}"), s, t))));
        let (a, s, t) = (addr.clone(), stop.clone(), tally.clone());
        players.push((format!("h{p}"), tokio::spawn(http_player(a, format!("h{p}"), s, t))));
    }
    let before = tally.acked.reaches(LOAD, ANSWER_WITHIN, "actions acknowledged before the upgrade").await;

    // The upgrade: B takes the socket over; A drains and exits 0.
    let mut args_b = common("server-b");
    args_b.extend(["--take-over".into(), data.join("server-a/handoff.sock").into_os_string()]);
    let refs: Vec<&std::ffi::OsStr> = args_b.iter().map(|a| a.as_os_str()).collect();
    let (_new, addr_b) = citadel(&refs);
    assert_eq!(addr_b, addr, "the same socket");
    let drained = Instant::now();
    let status = loop {
        if let Some(s) = old.0.try_wait().unwrap() {
            break s;
        }
        assert!(drained.elapsed() < Duration::from_secs(30), "the old process did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the old process exits 0 after draining: {status:?}");
    let at_exit = tally.acked.get();
    tally.acked.reaches(at_exit + LOAD, ANSWER_WITHIN, "actions acknowledged by the new process").await;
    stop.store(true, Ordering::Relaxed);
    let mut acked_by = Vec::new();
    for (name, p) in players {
        match p.await.unwrap() {
            Ok(n) => acked_by.push((name, n)),
            Err(e) => panic!("a failed request: {e}"),
        }
    }
    let after = tally.acked.get();
    let reconnects = tally.reconnects.load(Ordering::Relaxed);
    eprintln!("upgrade: {before} acknowledged before, {at_exit} when the old process exited, {after} in all; {reconnects} reconnects");
    assert!(after >= at_exit + LOAD, "the new process served the load: {at_exit} then {after}");
    assert!(reconnects >= PLAYERS_PER_TRANSPORT as u64, "WebSockets reconnected");

    // Exactly the acknowledged actions, each once, on the new process.
    let http = reqwest::Client::new();
    for (player, n) in acked_by {
        let token = login(&http, &addr, &player, Instant::now() + ANSWER_WITHIN).await.unwrap();
        let v: Value = http
            .post(format!("http://{addr}/v1/mini/request"))
            .bearer_auth(&token)
            .json(&json!({ "action": "get_state" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let gems = v["result"]["state"]["resources"]["gems"].as_i64().unwrap();
        assert_eq!((gems - START_GEMS) as u64, n, "{player}: {n} acknowledged, {} applied", gems - START_GEMS);
    }
}

/// A data folder the server of player format 4 (commit a46d11b) left when
/// it was killed: Alice's file (saved at her first login, with a research
/// building and barracks added by hand) and the journal records it never
/// saved: a second login, `research`, `train`, `build`, `collect_all`
/// (tests/fixtures/saved-format4/README.md). This server replays them onto
/// the migrated file, and Alice plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_folder_of_the_previous_format_replays_and_plays_on() {
    let dir = temp("saved-format4");
    let data = dir.join("data");
    copy_dir(&root().join("tests/fixtures/saved-format4/data"), &data);
    copy_dir(&root().join("tests/fixtures/fort"), &dir.join("titles/fort"));
    let (_server, addr) = citadel(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--titles".as_ref(),
        dir.join("titles").as_os_str(),
    ]);
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("http://{addr}/v1/fort/login"))
        .json(&json!({ "player": "alice" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The records ran at their own times (December 2026); this login runs
    // now, so the research and training may have finished meanwhile.
    let state = &v["state"];
    assert_eq!(state["format_version"], citadel_runtime::STATE_FORMAT_VERSION, "{v}");
    // The file said 1; the journal's five records replayed on top (a
    // login's answer shows the state before the login itself is numbered).
    assert_eq!(state["seq"], 6, "the five journaled operations replayed: {state}");
    let researching = state["research_running"].as_array().unwrap().iter().any(|r| r["research"] == "masonry");
    assert!(researching || state["research"]["masonry"] == 1, "masonry started: {state}");
    let militia = state["units"]["militia"].as_i64().unwrap_or(0) + state["training"].as_array().unwrap().len() as i64;
    assert_eq!(militia, 3, "three militia trained or training: {state}");
    let mill = state["buildings"].as_array().unwrap().iter().find(|b| b["building"] == "lumber_mill");
    assert_eq!(mill.map(|b| b["id"].clone()), Some(json!(7)), "{state}");
    // Alice plays on: a new action is journaled and answered.
    let token = v["token"].as_str().unwrap();
    let act = |body: Value| http.post(format!("http://{addr}/v1/fort/request")).bearer_auth(token).json(&body).send();
    let moved = json!({ "id": 1, "action": "move", "args": { "id": 7, "x": 30, "y": 30 } });
    let r: Value = act(moved).await.unwrap().json().await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let r: Value = act(json!({ "id": 2, "action": "get_state" })).await.unwrap().json().await.unwrap();
    let mill = r["result"]["state"]["buildings"].as_array().unwrap().iter().find(|b| b["id"] == 7).cloned();
    assert_eq!(mill.map(|b| (b["x"].clone(), b["y"].clone())), Some((json!(30), json!(30))), "{r}");
    assert_eq!(r["result"]["state"]["seq"], 8, "the login and the move numbered after the replayed records: {r}");
}
