//! The shared world end to end: raids (the whole flow, a race of many
//! attackers, an attacker who vanishes), top scores, player info, the map;
//! and two `citadel serve` processes sharing the SQLite world store and a
//! player folder.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use citadel_server::Config;
use serde_json::{json, Value};
use support::server::*;

/// The mini fixture title with attackers' units at the start: 20 guards.
/// Raids there last 2 s (lock 3 s), loot half the gold, shield 1 h.
fn raid_titles(dir: &Path) -> PathBuf {
    let to = dir.join("titles/mini");
    for sub in ["", "scripts", "tests"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(support::root().join("tests/fixtures/mini").join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, to.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(to.join("title.json")).unwrap()).unwrap();
    t["start"]["units"] = json!({ "guard": 20 });
    std::fs::write(to.join("title.json"), t.to_string()).unwrap();
    dir.join("titles")
}

fn quick(titles: PathBuf) -> impl FnOnce(&mut Config) {
    move |c| {
        c.titles = titles;
        // Defenders go offline (their session ends) a second after their
        // last request.
        c.idle_timeout_seconds = 1;
    }
}

fn victory(gold: i64, guards: i64) -> Value {
    json!({ "victory": true, "destruction_percent": 80, "loot": { "gold": gold }, "units_used": { "guard": guards }, "seconds": 2 })
}

/// `attacker` starts a raid on `defender` once the defender's session has
/// ended (their file saved): the first answer that is not `defender_online`.
async fn raid_start_once_offline(s: &Server, attacker_token: &str, defender: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = s.act("mini", attacker_token, "raid_start", json!({ "defender": defender })).await;
        if r["error"]["code"] != "defender_online" {
            return r;
        }
        assert!(Instant::now() < until, "{defender}'s session never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `defender` plays, leaves, and survives a raid by `probe` (+5 trophies).
async fn played_and_left(s: &Server, defender: &str) {
    s.login("mini", defender).await;
    let (probe, _) = s.login("mini", "probe").await;
    let r = raid_start_once_offline(s, &probe, defender).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let lost = json!({ "victory": false, "destruction_percent": 0, "units_used": { "guard": 1 }, "seconds": 1 });
    let (_, e) = s.act("mini", &probe, "raid_end", json!({ "raid": r["result"]["raid"], "result": lost })).await;
    assert_eq!(e["ok"], json!(true), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_raid_moves_loot_once_shields_the_defender_and_updates_scores() {
    let data = fresh_data("world-raid");
    let s = start(data.clone(), quick(raid_titles(&data))).await;
    played_and_left(&s, "dora").await;
    // probe lost one raid on dora: dora has 5 trophies now.
    let (tok, login) = s.login("mini", "ari").await;
    assert_eq!(login["state"]["units"]["guard"], 20);

    let (_, r) = s.act("mini", &tok, "raid_start", json!({ "defender": "dora" })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let raid = r["result"]["raid"].as_str().unwrap().to_string();
    assert_eq!(r["result"]["lootable"]["gold"], 250, "half of 500 gold");
    assert_eq!(r["result"]["base"]["buildings"][0]["building"], "hq", "the base to fight");
    let (_, again) = s.act("mini", &tok, "raid_start", json!({ "defender": "probe" })).await;
    assert_eq!(again["error"]["code"], "raid_in_progress");

    // Refused results change nothing and leave the raid open.
    for (bad, code) in [
        (victory(251, 3), "implausible_result"),
        (victory(100, 21), "implausible_result"),
        (
            json!({ "victory": true, "destruction_percent": 80, "loot": { "gold": 10 }, "units_used": { "guard": 1 }, "seconds": 3 }),
            "implausible_result",
        ),
        (json!({ "victory": "yes" }), "invalid_argument"),
    ] {
        let (_, e) = s.act("mini", &tok, "raid_end", json!({ "raid": raid, "result": bad })).await;
        assert_eq!(e["error"]["code"], code, "{e}");
    }
    let (_, e) = s.act("mini", &tok, "raid_end", json!({ "raid": "nope", "result": victory(1, 1) })).await;
    assert_eq!(e["error"]["code"], "unknown_raid");

    let (_, r) = s.act("mini", &tok, "raid_end", json!({ "raid": raid, "result": victory(200, 3) })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    // The answer was lost, say: the same result again is applied once.
    let (_, r) = s.act("mini", &tok, "raid_end", json!({ "raid": raid, "result": victory(200, 3) })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let (_, st) = s.act("mini", &tok, "get_state", Value::Null).await;
    let me = &st["result"]["state"];
    assert_eq!((me["resources"]["gold"].as_i64(), me["units"]["guard"].as_i64()), (Some(700), Some(17)));
    assert_eq!(me["scores"]["trophies"], 10);

    // Both see the new top scores; dora dropped from 5 to 0.
    let (_, top) = s.act("mini", &tok, "top_scores", json!({ "stat": "trophies" })).await;
    let rows: Vec<(String, i64)> = top["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["player"].as_str().unwrap().to_string(), r["value"].as_i64().unwrap()))
        .collect();
    assert_eq!(rows, [("ari".to_string(), 10), ("dora".to_string(), 0)]);
    let (_, week) = s.act("mini", &tok, "top_scores", json!({ "stat": "trophies", "window": "week" })).await;
    assert!(week["result"]["window"].as_str().unwrap().starts_with("week-"), "{week}");
    let (_, rank) = s.act("mini", &tok, "my_rank", json!({ "stat": "trophies", "around": 1 })).await;
    assert_eq!(
        (rank["result"]["me"]["rank"].as_i64(), rank["result"]["around"].as_array().unwrap().len()),
        (Some(1), 2)
    );
    let (_, bad) = s.act("mini", &tok, "top_scores", json!({ "stat": "trophis" })).await;
    assert!(bad["error"]["message"].as_str().unwrap().contains("did you mean `trophies`"), "{bad}");

    // The defender lost 200 gold, once, has a battle log and a shield.
    let (dtok, dlogin) = s.login("mini", "dora").await;
    let d = &dlogin["state"];
    assert_eq!(d["resources"]["gold"], 300, "{d}");
    assert_eq!(d["battle_log"].as_array().unwrap().len(), 2, "probe's failed raid and ari's");
    assert_eq!(d["battle_log"][1]["attacker"], "ari");
    assert!(d["shield_until_ms"].as_i64().unwrap() > START);
    let (_, info) = s.act("mini", &dtok, "player_info", json!({ "player": "ari" })).await;
    assert_eq!(info["result"]["scores"]["trophies"], 10, "{info}");
    assert_eq!(info["result"]["position"]["region"], "plain", "placed on the map at first login");
    // Online now: not raidable; once gone, shielded.
    let (btok, _) = s.login("mini", "bea").await;
    let (_, r) = s.act("mini", &btok, "raid_start", json!({ "defender": "dora" })).await;
    assert_eq!(r["error"]["code"], "defender_online");
    drop(dtok);
    let r = raid_start_once_offline(&s, &btok, "dora").await;
    assert_eq!(r["error"]["code"], "defender_shielded", "{r}");
    assert!(r["error"]["details"]["until_ms"].as_i64().unwrap() > START);
    let (_, r) = s.act("mini", &btok, "raid_start", json!({ "defender": "nobody" })).await;
    assert_eq!(r["error"]["code"], "unknown_player");
    let (_, r) = s.act("mini", &btok, "raid_start", json!({ "defender": "bea" })).await;
    assert_eq!(r["error"]["code"], "invalid_argument");
    s.stop().await;
}

/// Many attackers start a raid on one defender at the same moment: exactly
/// one proceeds; every other one is told the defender is under attack.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_attackers_one_defender_exactly_one_proceeds() {
    const ATTACKERS: usize = 24;
    let data = fresh_data("world-race");
    let s = start(data.clone(), quick(raid_titles(&data))).await;
    let mut tokens = Vec::new();
    for i in 0..ATTACKERS {
        tokens.push(s.login("mini", &format!("att{i}")).await.0);
    }
    s.login("mini", "dora").await;
    // Wait for dora to leave: probe with an attacker whose raid we end lost.
    let first = raid_start_once_offline(&s, &tokens[0], "dora").await;
    let lost = json!({ "victory": false, "destruction_percent": 0, "units_used": { "guard": 1 }, "seconds": 1 });
    let (_, e) =
        s.act("mini", &tokens[0], "raid_end", json!({ "raid": first["result"]["raid"], "result": lost })).await;
    assert_eq!(e["ok"], json!(true), "{e}");
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for tok in tokens.into_iter().skip(1) {
        let s = s.clone();
        tasks.push(tokio::spawn(
            async move { s.act("mini", &tok, "raid_start", json!({ "defender": "dora" })).await.1 },
        ));
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let r = t.await.unwrap();
        let code =
            if r["ok"] == json!(true) { "ok".to_string() } else { r["error"]["code"].as_str().unwrap().to_string() };
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(
        codes,
        std::collections::BTreeMap::from([("ok".to_string(), 1), ("defender_under_attack".to_string(), ATTACKERS - 2)])
    );
    std::sync::Arc::into_inner(s).unwrap().stop().await;
}

/// An attacker who never sends a result: once the raid's lock runs out the
/// defender can be raided again, lost nothing, and the late result is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_raid_leaves_the_defender_untouched() {
    let data = fresh_data("world-expire");
    let s = start(data.clone(), quick(raid_titles(&data))).await;
    played_and_left(&s, "dora").await;
    let (a, _) = s.login("mini", "ari").await;
    let (b, _) = s.login("mini", "bea").await;
    let (_, r) = s.act("mini", &a, "raid_start", json!({ "defender": "dora" })).await;
    let raid = r["result"]["raid"].clone();
    let (_, r) = s.act("mini", &b, "raid_start", json!({ "defender": "dora" })).await;
    assert_eq!(r["error"]["code"], "defender_under_attack");
    s.advance(4); // past the 2 s battle and its 1 s grace
    let (_, r) = s.act("mini", &b, "raid_start", json!({ "defender": "dora" })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["result"]["lootable"]["gold"], 250, "dora still has her 500 gold");
    let (_, late) = s.act("mini", &a, "raid_end", json!({ "raid": raid, "result": victory(250, 1) })).await;
    assert_eq!(late["error"]["code"], "raid_expired", "{late}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_map_places_moves_and_finds_bases() {
    let data = fresh_data("world-map");
    let s = start(data.clone(), quick(raid_titles(&data))).await;
    let (a, la) = s.login("mini", "ari").await;
    let (b, _) = s.login("mini", "bea").await;
    let (_, ia) = s.act("mini", &b, "player_info", json!({ "player": "ari" })).await;
    let pos = ia["result"]["position"].clone();
    assert_eq!(pos["region"], "plain", "{ia}");
    let (_, near) = s.act("mini", &a, "map_near", json!({ "radius": 32 })).await;
    let players: Vec<&str> =
        near["result"]["bases"].as_array().unwrap().iter().map(|b| b["player"].as_str().unwrap()).collect();
    assert_eq!(players.len(), 2, "{near}");
    assert_eq!(players[0], "ari", "nearest first: ari's own base");
    // Moving onto bea's spot is refused and costs nothing; a free spot costs a gem.
    let (_, ib) = s.act("mini", &a, "player_info", json!({ "player": "bea" })).await;
    let bpos = &ib["result"]["position"];
    let (_, r) = s.act("mini", &a, "relocate", json!({ "region": "plain", "x": bpos["x"], "y": bpos["y"] })).await;
    assert_eq!(r["error"]["code"], "spot_taken");
    let gems = la["state"]["resources"]["gems"].as_i64().unwrap();
    let free = (0..16)
        .flat_map(|x| (0..16).map(move |y| (x, y)))
        .find(|&(x, y)| json!(x) != bpos["x"] || json!(y) != bpos["y"])
        .unwrap();
    let free = if json!(free.0) == pos["x"] && json!(free.1) == pos["y"] { (15 - free.0, 15 - free.1) } else { free };
    let (_, r) = s.act("mini", &a, "relocate", json!({ "region": "plain", "x": free.0, "y": free.1 })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let (_, st) = s.act("mini", &a, "get_state", Value::Null).await;
    assert_eq!(st["result"]["state"]["resources"]["gems"].as_i64(), Some(gems - 1));
    let (_, ia) = s.act("mini", &b, "player_info", json!({ "player": "ari" })).await;
    assert_eq!(
        (ia["result"]["position"]["x"].as_i64(), ia["result"]["position"]["y"].as_i64()),
        (Some(free.0), Some(free.1))
    );
    for (args, code) in [
        (json!({ "region": "hills", "x": 1, "y": 1 }), "invalid_argument"),
        (json!({ "region": "plain", "x": 16, "y": 1 }), "invalid_argument"),
        (json!({ "region": "plain" }), "invalid_argument"),
    ] {
        let (_, r) = s.act("mini", &a, "relocate", args).await;
        assert_eq!(r["error"]["code"], code, "{r}");
    }
    // Search by name prefix, in pages.
    let (_, found) = s.act("mini", &a, "search_players", json!({ "prefix": "B", "limit": 5 })).await;
    assert_eq!(found["result"]["players"][0]["player"], "bea", "{found}");
    let (_, r) = s.act("mini", &a, "search_players", json!({ "prefix": "x".repeat(65) })).await;
    assert_eq!(r["error"]["code"], "invalid_argument");
    s.stop().await;
}
