//! The crash test: the `citadel` process is killed with SIGKILL while many
//! players send actions over WebSockets; after a restart on the same data
//! directory every acknowledged action is in the players' state and none is
//! applied twice. Checked by counting: each action grants exactly one gem.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod support;

use support::{counting_title, temp, Killed, START_GEMS};

const PLAYERS: usize = 24;

/// Starts `citadel serve` and returns it with the address it listens on.
fn serve(data: &Path, titles: &Path, config: &Path) -> (Killed, String) {
    support::citadel(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--titles".as_ref(),
        titles.as_os_str(),
    ])
}

async fn login(addr: &str, player: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/mini/login"))
        .json(&json!({ "player": player }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Sends `tithe` until the connection dies; returns (sent, acknowledged).
async fn play(addr: String, player: String) -> (u64, u64) {
    let token = login(&addr, &player).await["token"].as_str().unwrap().to_string();
    let (mut w, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/mini/ws?token={token}")).await.unwrap();
    let (mut sent, mut acked) = (0, 0);
    loop {
        let msg = json!({ "id": sent, "action": "custom", "args": { "name": "tithe" } }).to_string();
        if w.send(Message::Text(msg.into())).await.is_err() {
            return (sent, acked);
        }
        sent += 1;
        // The welcome event comes first; then exactly one answer per request.
        loop {
            match w.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v.get("event").is_some() {
                        continue;
                    }
                    assert_eq!(v["ok"], true, "{v}");
                    acked += 1;
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (sent, acked),
            }
        }
    }
}

fn gems_on_disk(data: &Path, player: &str) -> i64 {
    let text = std::fs::read_to_string(data.join(format!("players/mini/{player}.json"))).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["resources"]["gems"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_action_is_lost_or_applied_twice_after_sigkill() {
    let titles = temp("titles");
    counting_title(&titles);
    let data = temp("data");
    let config = data.join("citadel.toml");
    // Players are never saved while the server runs: every acknowledged
    // action can only come back from the journal.
    std::fs::write(
        &config,
        "save_interval_seconds = 3600\nidle_timeout_seconds = 3600\n[limits]\nrequests_per_second_max = 100000\n",
    )
    .unwrap();
    let (mut server, addr) = serve(&data, &titles, &config);
    let players: Vec<String> = (0..PLAYERS).map(|i| format!("p{i}")).collect();
    let tasks: Vec<_> = players.iter().map(|p| tokio::spawn(play(addr.clone(), p.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill(); // SIGKILL
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(tokio::time::timeout(Duration::from_secs(10), t).await.expect("clients notice").unwrap());
    }
    let acked: u64 = counts.iter().map(|c| c.1).sum();
    assert!(acked >= PLAYERS as u64 * 5, "the load was real: only {acked} actions acknowledged");
    for p in &players {
        assert_eq!(gems_on_disk(&data, p), START_GEMS, "{p} was not saved before the kill");
    }

    let journal = data.join("server/journal");
    let segments = |dir: &Path| -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect()
    };
    let before = segments(&journal);
    assert!(!before.is_empty(), "the kill left journal segments");
    let (mut server, addr) = serve(&data, &titles, &config);
    for (p, (sent, acked)) in players.iter().zip(&counts) {
        // The player file itself holds the replayed actions.
        let on_disk = gems_on_disk(&data, p) - START_GEMS;
        let state = &login(&addr, p).await["state"];
        let applied = (state["resources"]["gems"].as_i64().unwrap() - START_GEMS) as u64;
        assert_eq!(on_disk as u64, applied, "{p}: replay saved the player before serving");
        assert!(applied >= *acked, "{p}: {acked} acknowledged but only {applied} applied");
        assert!(applied <= *sent, "{p}: {applied} applied but only {sent} sent: something applied twice");
    }
    server.kill();
    // The replayed records were deleted once in the files (only the new
    // run's segments remain): a third start replays nothing (the counts
    // stay the same).
    let after = segments(&journal);
    assert!(after.iter().all(|s| !before.contains(s)), "replayed segments are gone: {before:?} then {after:?}");
    let (mut server, addr) = serve(&data, &titles, &config);
    for p in &players {
        let gems = login(&addr, p).await["state"]["resources"]["gems"].as_i64().unwrap();
        assert_eq!(gems, gems_on_disk(&data, p), "{p}: replaying twice changed nothing");
    }
    server.kill();
}

/// A grant from support is an acknowledged change like any action: it is
/// journaled before it is answered, so a SIGKILL right after loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_grant_survives_sigkill() {
    let titles = temp("titles-grant");
    counting_title(&titles);
    let data = temp("data-grant");
    let config = data.join("citadel.toml");
    std::fs::write(&config, "save_interval_seconds = 3600\nidle_timeout_seconds = 3600\n").unwrap();
    let (mut server, addr) = serve(&data, &titles, &config);
    login(&addr, "helped").await;
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/admin/api/players/mini/helped/adjust"))
        .header("authorization", format!("Bearer {}", token.trim()))
        .json(&json!({ "resources": { "gems": 9 }, "reason": "outage" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    server.kill(); // SIGKILL
    assert_eq!(gems_on_disk(&data, "helped"), START_GEMS, "not saved before the kill");
    let (mut server, addr) = serve(&data, &titles, &config);
    assert_eq!(gems_on_disk(&data, "helped"), START_GEMS + 9, "replayed from the journal");
    let state = &login(&addr, "helped").await["state"];
    assert_eq!(state["resources"]["gems"], START_GEMS + 9);
    server.kill();
}
