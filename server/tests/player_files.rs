//! Player file formats end to end (`player_file_format`): files written
//! in one format load after a switch to another and are saved in the new
//! one; a damaged file of any format is refused with `player_file_damaged`
//! and left byte for byte as it was, without locking the player out once
//! it is mended; `citadel player show` prints the same JSON whatever the
//! format.

mod support;

use std::path::Path;

use citadel_runtime::{FileFormat, PlayerState};
use serde_json::{json, Value};
use support::server::*;

fn file(data: &Path, player: &str) -> std::path::PathBuf {
    data.join(format!("players/mini/{player}.json"))
}

/// The file's state, and the format its header names (`None`: plain JSON).
fn on_disk(data: &Path, player: &str) -> (PlayerState, Option<FileFormat>) {
    PlayerState::decode(&std::fs::read(file(data, player)).unwrap()).unwrap()
}

/// What a login changes in a state (its count, history and time of
/// login), set aside to compare the rest.
fn played_part(s: &PlayerState) -> PlayerState {
    PlayerState {
        seq: 0,
        history: Vec::new(),
        last_login_ms: None,
        counters: Default::default(),
        answered: Vec::new(),
        snapshot_ms: 0,
        ..s.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_one_format_load_after_a_switch_and_are_saved_in_the_new_one() {
    let data = fresh_data("formats-switch");
    // Today's JSON files: ann played with `json`; bob's is plain JSON as
    // written before headers.
    let s = start(data.clone(), |c| c.player_file_format = FileFormat::JSON).await;
    for player in ["ann", "bob"] {
        let (token, _) = s.login("mini", player).await;
        for _ in 0..3 {
            let (status, r) = s.act("mini", &token, "custom", json!({ "name": "tithe" })).await;
            assert_eq!(status, 200, "{r}");
        }
    }
    let data = s.stop().await;
    let (ann, format) = on_disk(&data, "ann");
    assert_eq!(format, Some(FileFormat::JSON));
    assert!(std::fs::read(file(&data, "ann")).unwrap().starts_with(b"CITADEL-PLAYER json format_version="));
    let (bob, _) = on_disk(&data, "bob");
    std::fs::write(file(&data, "bob"), bob.to_json()).unwrap();
    assert_eq!(on_disk(&data, "bob").1, None, "bob's file is plain JSON now");

    let mut before = [ann, bob];
    for format in ["msgpack", "msgpack+lz4", "json+lz4", "json"] {
        let format: FileFormat = format.parse().unwrap();
        let s = start(data.clone(), |c| c.player_file_format = format).await;
        for (player, was) in ["ann", "bob"].iter().zip(&mut before) {
            let (_, r) = s.login("mini", player).await;
            assert_eq!(r["state"]["resources"], json!(was.resources), "{player} after the switch to {format}");
        }
        let data = s.stop().await;
        for (player, was) in ["ann", "bob"].iter().zip(&mut before) {
            let (now, found) = on_disk(&data, player);
            assert_eq!(found, Some(format), "{player}'s file is saved as {format}");
            assert_eq!(played_part(&now), played_part(was), "{player} reads back equal after the switch to {format}");
            assert_eq!(now.seq, was.seq + 1, "{player}: one login more");
            *was = now;
        }
    }
}

/// Ways to damage a file of `format`: each must be refused.
fn damages(bytes: &[u8], format: Option<FileFormat>) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("truncated", bytes[..bytes.len() * 2 / 3].to_vec()), ("emptied", Vec::new())];
    if format.is_some() {
        // Without a header, a flipped bit inside a JSON number is a valid
        // file with another number: only files with a checksum catch it.
        let mut flipped = bytes.to_vec();
        let at = bytes.len() - 20;
        flipped[at] ^= 0x04;
        out.push(("bit-flipped", flipped));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_of_any_format_is_refused_and_left_as_it_was() {
    let data = fresh_data("formats-damaged");
    let formats: Vec<Option<FileFormat>> = std::iter::once(None).chain(FileFormat::ALL.map(Some)).collect();
    // Per format and way of damage, a player who played once.
    let mut cases = Vec::new();
    for format in &formats {
        let s = start(data.clone(), |c| c.player_file_format = format.unwrap_or(FileFormat::JSON)).await;
        let mut players = Vec::new();
        for d in 0..3 {
            let player = format!("p{}-{d}", cases.len() + players.len());
            let (token, _) = s.login("mini", &player).await;
            let (status, r) = s.act("mini", &token, "custom", json!({ "name": "tithe" })).await;
            assert_eq!(status, 200, "{r}");
            let (_, r) = s.act("mini", &token, "get_state", Value::Null).await;
            players.push((player, r["result"]["state"]["resources"]["gems"].clone()));
        }
        let data = s.stop().await;
        for (d, (player, gems)) in players.into_iter().enumerate() {
            if format.is_none() {
                let (state, _) = on_disk(&data, &player);
                std::fs::write(file(&data, &player), state.to_json()).unwrap();
            }
            let good = std::fs::read(file(&data, &player)).unwrap();
            if let Some((how, damaged)) = damages(&good, *format).into_iter().nth(d) {
                cases.push((player, gems, good, how, damaged, *format));
            }
        }
    }
    assert_eq!(cases.len(), 2 + 3 * 4, "every format, every damage");
    let s = start(data.clone(), |_| {}).await;
    for (player, gems, good, how, damaged, format) in cases {
        let label = format!("{player} ({}, {how})", format.map_or("plain JSON".to_string(), |f| f.to_string()));
        std::fs::write(file(&data, &player), &damaged).unwrap();
        let r = reqwest::Client::new()
            .post(s.url("/v1/mini/login"))
            .json(&json!({ "player": player }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500, "{label}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "player_file_damaged", "{label}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("players/mini/{player}.json")), "{label}: names the file: {message}");
        assert!(
            ["truncated", "corrupted", "not a player file", "EOF", "decode", "decompress"]
                .iter()
                .any(|w| message.contains(w)),
            "{label}: says what is wrong: {message}"
        );
        assert_eq!(std::fs::read(file(&data, &player)).unwrap(), damaged, "{label}: the file is left as it was");
        // Mended (support restores it): the player logs in with nothing
        // lost, not locked out by the refused login.
        std::fs::write(file(&data, &player), &good).unwrap();
        let (_, again) = s.login("mini", &player).await;
        assert_eq!(again["state"]["resources"]["gems"], gems, "{label}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_show_prints_the_same_json_for_the_same_state_in_every_format() {
    let data = fresh_data("formats-show");
    let s = start(data.clone(), |_| {}).await;
    let (token, _) = s.login("mini", "ann").await;
    s.act("mini", &token, "custom", json!({ "name": "tithe" })).await;
    let data = s.stop().await;
    let (state, _) = on_disk(&data, "ann");
    let config = citadel_server::Config { data_dir: data.clone(), ..citadel_server::Config::default() };
    let mut shown = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = FileFormat::ALL.iter().map(|f| (f.to_string(), state.encode(*f))).collect();
    files.push(("plain JSON".into(), state.to_json().into_bytes()));
    for (name, bytes) in files {
        let path = data.join(format!("show-{}", name.replace(['+', ' '], "-")));
        std::fs::write(&path, &bytes).unwrap();
        let source = citadel_server::player_file::ShowSource::Path(path.clone());
        let (json, about) = citadel_server::player_file::show(&config, &source).await.unwrap();
        assert!(about.contains(&name), "{about}");
        shown.push(json);
        // From the store, by title and player.
        std::fs::write(file(&data, "ann"), &bytes).unwrap();
        let source = citadel_server::player_file::ShowSource::Player { title: "mini".into(), player: "ann".into() };
        let (json, _) = citadel_server::player_file::show(&config, &source).await.unwrap();
        shown.push(json);
    }
    assert!(shown.iter().all(|j| *j == shown[0]), "the same JSON in every format");
    let back: PlayerState = serde_json::from_str(&shown[0]).unwrap();
    assert_eq!(back, state, "and it is the state");
    // A damaged file: an error naming the file and what is wrong.
    let bytes = state.encode(FileFormat::MSGPACK);
    std::fs::write(file(&data, "ann"), &bytes[..bytes.len() - 1]).unwrap();
    let source = citadel_server::player_file::ShowSource::Player { title: "mini".into(), player: "ann".into() };
    let e = format!("{:#}", citadel_server::player_file::show(&config, &source).await.unwrap_err());
    assert!(e.contains("players/mini/ann.json") && e.contains("truncated"), "{e}");
    let source = citadel_server::player_file::ShowSource::Player { title: "mini".into(), player: "nobody".into() };
    let e = format!("{:#}", citadel_server::player_file::show(&config, &source).await.unwrap_err());
    assert!(e.contains("never played"), "{e}");
}
