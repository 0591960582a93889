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
    copy_dir(&support::root().join("tests/fixtures/mini"), &to);
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
    let (_, r) = s.act("mini", &b, "set_name", json!({ "name": "Beatrix the Bold" })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let (_, found) = s.act("mini", &a, "search_players", json!({ "prefix": "beatrix" })).await;
    assert_eq!(found["result"]["players"][0]["player"], "bea", "found by the new name: {found}");
    assert_eq!(found["result"]["players"][0]["name"], "Beatrix the Bold");
    let (_, r) = s.act("mini", &b, "set_name", json!({ "name": " x" })).await;
    assert_eq!(r["error"]["code"], "invalid_argument");
    let (_, r) = s.act("mini", &a, "search_players", json!({ "prefix": "x".repeat(65) })).await;
    assert_eq!(r["error"]["code"], "invalid_argument");
    s.stop().await;
}

#[tokio::test]
async fn every_spot_of_the_map_fills_and_a_full_map_still_lets_players_in() {
    let data = fresh_data("world-full-map");
    let titles = raid_titles(&data);
    let s = start(data.clone(), |c| {
        quick(titles)(c);
        // One player asks where each of 257 others is.
        c.limits.requests_per_second_max = 1000;
    })
    .await;
    // The mini title's map is one region of 16 by 16 spots: as many players
    // as spots each get one, the last ones included (random tries alone
    // missed the last free spots of a crowded region).
    let (watcher, _) = s.login("mini", "p0").await;
    let mut spots = std::collections::HashSet::new();
    for n in 0..256 {
        let player = format!("p{n}");
        if n > 0 {
            s.login("mini", &player).await;
        }
        let (_, info) = s.act("mini", &watcher, "player_info", json!({ "player": player })).await;
        let at = &info["result"]["position"];
        assert_eq!(at["region"], "plain", "{player} has a spot: {info}");
        assert!(spots.insert((at["x"].as_i64().unwrap(), at["y"].as_i64().unwrap())), "{player}: a spot taken twice");
    }
    // The map is full: the next player plays, with no spot.
    let (_, login) = s.login("mini", "one-too-many").await;
    assert!(login["state"].is_object(), "{login}");
    let (_, info) = s.act("mini", &watcher, "player_info", json!({ "player": "one-too-many" })).await;
    assert!(info["result"]["position"].is_null(), "{info}");
    s.stop().await;
}

// ------------------------------------------------------------ processes

/// A `citadel serve` process on the shared `data` folder with its own
/// server folder.
fn process(data: &Path, titles: &Path, name: &str) -> (support::Killed, String) {
    let config = data.join("citadel.toml");
    std::fs::write(&config, "idle_timeout_seconds = 1\nlogin_lock_wait_seconds = 0\n").unwrap();
    support::serve_in(&config, data, titles, &data.join(name))
}

/// Logs in on a server process: the session token, or the error answer.
async fn login_at(addr: &str, player: &str) -> Result<String, Value> {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/mini/login"))
        .json(&json!({ "player": player }))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().map(str::to_string).ok_or(v)
}

async fn act_at(addr: &str, token: &str, action: &str, args: Value) -> Value {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/mini/request"))
        .header("authorization", format!("Bearer {token}"))
        .body(json!({ "id": 1, "action": action, "args": args }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Retries `raid_start` while the defender is online or still locked by
/// an earlier raid, for at most 15 s (real time: these are processes).
async fn raid_start_at(addr: &str, token: &str, defender: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let r = act_at(addr, token, "raid_start", json!({ "defender": defender })).await;
        let code = r["error"]["code"].as_str().unwrap_or("");
        if code != "defender_online" && code != "defender_under_attack" {
            return r;
        }
        assert!(Instant::now() < until, "{defender} stayed locked: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The attacker's server dies mid-raid: after the raid's lease the defender
/// can be raided again from another server, and lost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attacker_killed_mid_raid_leaves_the_defender_untouched() {
    let data = support::temp("world-fault");
    let titles = raid_titles(&data);
    let (mut a, addr_a) = process(&data, &titles, "server-a");
    login_at(&addr_a, "dora").await.unwrap();
    let ari = login_at(&addr_a, "ari").await.unwrap();
    let r = raid_start_at(&addr_a, &ari, "dora").await;
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["result"]["lootable"]["gold"], 250);
    a.kill();

    let (_b, addr_b) = process(&data, &titles, "server-b");
    let bea = login_at(&addr_b, "bea").await.unwrap();
    let started = Instant::now();
    let r = raid_start_at(&addr_b, &bea, "dora").await;
    assert_eq!(r["ok"], json!(true), "raidable again once the lease ran out: {r}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r["result"]["lootable"]["gold"], 250, "dora lost nothing: {r}");
    let stored = support::state_file(&data.join("players/mini/dora.json"));
    assert_eq!(
        (stored["resources"]["gold"].as_i64(), stored["battle_log"].as_array().map(Vec::len)),
        (Some(500), Some(0))
    );
}

/// Two processes on one machine share the SQLite world store and the player
/// folder: a player is live on one at a time; a raid from one on a player
/// the other saved works, and both see the new top scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_players_locks_raids_and_top_scores() {
    let data = support::temp("world-two");
    let titles = raid_titles(&data);
    let (_a, addr_a) = process(&data, &titles, "server-a");
    let (_b, addr_b) = process(&data, &titles, "server-b");

    login_at(&addr_a, "pat").await.unwrap();
    let refused = login_at(&addr_b, "pat").await.unwrap_err();
    assert_eq!(refused["error"]["code"], "player_locked", "{refused}");

    // dora plays on A, which saves her when she leaves.
    let dora = login_at(&addr_a, "dora").await.unwrap();
    let r = act_at(&addr_a, &dora, "custom", json!({ "name": "tithe" })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    // ari raids her from B.
    let ari = login_at(&addr_b, "ari").await.unwrap();
    let r = raid_start_at(&addr_b, &ari, "dora").await;
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["result"]["lootable"]["gold"], 245, "A's save: 500 - 10 for the tithe, halved");
    let result = victory(200, 2);
    let r = act_at(&addr_b, &ari, "raid_end", json!({ "raid": r["result"]["raid"], "result": result })).await;
    assert_eq!(r["ok"], json!(true), "{r}");

    for (addr, viewer) in [(&addr_a, "viewer_a"), (&addr_b, "viewer_b")] {
        let viewer = login_at(addr, viewer).await.unwrap();
        let top = act_at(addr, &viewer, "top_scores", json!({ "stat": "trophies" })).await;
        assert_eq!(top["result"]["rows"][0]["player"], "ari", "{addr}: {top}");
        assert_eq!(top["result"]["rows"][0]["value"], 10);
    }
    // Each server reports itself in the shared server list.
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let list: Value = reqwest::Client::new()
        .get(format!("http://{addr_a}/admin/api/servers"))
        .header("authorization", format!("Bearer {}", admin.trim()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut addrs: Vec<&str> =
        list["servers"].as_array().unwrap().iter().map(|s| s["address"].as_str().unwrap()).collect();
    addrs.sort_unstable();
    let (url_a, url_b) = (format!("http://{addr_a}"), format!("http://{addr_b}"));
    let mut want = vec![url_a.as_str(), url_b.as_str()];
    want.sort_unstable();
    assert_eq!(addrs, want, "where clients reach each server: {list}");
    assert!(list["servers"][0]["titles"]["mini"].is_string(), "titles with content versions: {list}");
    // dora, back on A, sees the raid B wrote into her file.
    let again = login_at(&addr_a, "dora").await;
    let dora = again.unwrap();
    let st = act_at(&addr_a, &dora, "get_state", Value::Null).await;
    assert_eq!(st["result"]["state"]["resources"]["gold"], 290, "{st}");
    assert_eq!(st["result"]["state"]["battle_log"][0]["attacker"], "ari");
}

/// Clans over the wire: founding (paid), requests and invitations, the
/// capacity, permissions by rank, chat limits, leadership passing on, and
/// disbanding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clans_found_fill_rank_chat_and_disband() {
    let data = fresh_data("world-clans");
    let s = start(data.clone(), quick(raid_titles(&data))).await;
    let mut tok = std::collections::HashMap::new();
    for p in ["ann", "bob", "cat", "dan", "eve"] {
        tok.insert(p, s.login("mini", p).await.0);
    }
    let act = |p: &'static str, action: &'static str, args: Value| {
        let (s, t) = (&s, tok[p].clone());
        async move { s.act("mini", &t, action, args).await.1 }
    };
    let code = |r: &Value| r["error"]["code"].as_str().unwrap_or("ok").to_string();

    let r = act("ann", "clan_create", json!({ "name": "Iron Wolves", "open": false })).await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let st = act("ann", "get_state", Value::Null).await;
    assert_eq!(st["result"]["state"]["resources"]["gold"], 400, "founding cost 100 gold");
    assert_eq!(code(&act("ann", "clan_create", json!({ "name": "Other" })).await), "already_in_clan");
    assert_eq!(code(&act("bob", "clan_create", json!({ "name": "iron WOLVES" })).await), "clan_name_taken");
    assert_eq!(code(&act("bob", "clan_create", json!({ "name": "x" })).await), "invalid_argument");
    let st = act("bob", "get_state", Value::Null).await;
    assert_eq!(st["result"]["state"]["resources"]["gold"], 500, "refused foundings cost nothing");

    // A closed clan: bob asks, ann accepts; dan is invited and joins.
    let r = act("bob", "clan_join", json!({ "clan": "Iron Wolves" })).await;
    assert_eq!(r["result"]["requested"], json!(true), "{r}");
    assert_eq!(code(&act("bob", "clan_chat", json!({})).await), "not_in_clan");
    assert_eq!(code(&act("cat", "clan_accept", json!({ "player": "bob" })).await), "not_in_clan");
    let info = act("ann", "clan_info", json!({})).await;
    assert_eq!(info["result"]["asks"][0]["player"], "bob", "{info}");
    assert_eq!(code(&act("ann", "clan_accept", json!({ "player": "bob" })).await), "ok");
    assert_eq!(code(&act("ann", "clan_invite", json!({ "player": "dan" })).await), "ok");
    assert_eq!(code(&act("ann", "clan_invite", json!({ "player": "nobody" })).await), "unknown_player");
    assert_eq!(act("dan", "clan_join", json!({ "clan": "iron wolves" })).await["result"]["joined"], json!(true));
    assert_eq!(code(&act("ann", "clan_invite", json!({ "player": "eve" })).await), "ok");
    assert_eq!(code(&act("eve", "clan_join", json!({ "clan": "iron wolves" })).await), "clan_full", "capacity 3");
    let outside = act("eve", "clan_info", json!({ "clan": "Iron Wolves" })).await;
    assert_eq!(outside["result"]["members"].as_array().unwrap().len(), 3);
    assert!(outside["result"]["asks"].as_array().unwrap().is_empty(), "requests are for those who answer them");

    // Ranks: a member may not kick; an officer kicks members only.
    assert_eq!(code(&act("bob", "clan_kick", json!({ "player": "dan" })).await), "not_permitted");
    assert_eq!(act("ann", "clan_promote", json!({ "player": "bob" })).await["result"]["role"], "officer");
    assert_eq!(
        code(&act("ann", "clan_promote", json!({ "player": "bob" })).await),
        "not_permitted",
        "not to the chief's rank"
    );
    assert_eq!(
        code(&act("bob", "clan_promote", json!({ "player": "dan" })).await),
        "not_permitted",
        "officers do not promote"
    );
    assert_eq!(code(&act("bob", "clan_kick", json!({ "player": "ann" })).await), "not_permitted", "not a higher rank");
    assert_eq!(code(&act("bob", "clan_kick", json!({ "player": "dan" })).await), "ok");
    assert_eq!(code(&act("bob", "clan_kick", json!({ "player": "cat" })).await), "not_in_clan");
    let info = act("cat", "player_info", json!({ "player": "bob" })).await;
    assert_eq!(info["result"]["clan"], "iron wolves", "{info}");

    // Chat: 5 lines per 10 s per player, 500 bytes a line.
    for i in 0..5 {
        assert_eq!(code(&act("bob", "clan_chat_post", json!({ "text": format!("hello {i}") })).await), "ok");
    }
    assert_eq!(code(&act("bob", "clan_chat_post", json!({ "text": "flood" })).await), "chat_too_fast");
    assert_eq!(code(&act("ann", "clan_chat_post", json!({ "text": "x".repeat(501) })).await), "invalid_argument");
    // A line sent again with its idempotency key (a resend after a lost
    // answer) is posted once, and answered as the first time.
    let post = json!({ "id": 1, "key": "line-1", "action": "clan_chat_post", "args": { "text": "once" } });
    let first = s.post("mini", Some(&tok["ann"]), post.to_string()).await.1;
    let again = s.post("mini", Some(&tok["ann"]), post.to_string()).await.1;
    assert_eq!((&first["ok"], &first["result"]), (&again["ok"], &again["result"]), "{first} {again}");
    let chat = act("ann", "clan_chat", json!({ "limit": 3 })).await;
    let lines: Vec<&str> =
        chat["result"]["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(lines, ["once", "hello 4", "hello 3"]);

    // The chief leaves: the officer leads; then disbands.
    assert_eq!(act("ann", "clan_leave", json!({})).await["result"]["disbanded"], json!(false));
    let info = act("bob", "clan_info", json!({})).await;
    assert_eq!(info["result"]["members"][0]["role"], "chief", "{info}");
    assert_eq!(code(&act("bob", "clan_disband", json!({})).await), "ok");
    assert_eq!(code(&act("bob", "clan_info", json!({ "clan": "iron wolves" })).await), "unknown_clan");
    assert_eq!(
        code(&act("ann", "clan_create", json!({ "name": "Iron Wolves" })).await),
        "ok",
        "the name is free again"
    );
    s.stop().await;
}

/// A title with `world.raids.resolve` decides raids on the server: the
/// attacker sends units (a client result is refused), the title's script
/// fights the battle against the defender's base, the answer carries the
/// outcome and its battle log, and both players' states agree with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_title_with_resolve_decides_raids_on_the_server() {
    let data = fresh_data("world-resolve");
    let titles = data.join("titles");
    copy_dir(&support::root().join("titles/ironhold"), &titles.join("ironhold"));
    let path = titles.join("ironhold/title.json");
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(t["world"]["raids"]["resolve"], "raids::resolve", "Ironhold decides its raids on the server");
    t["start"]["units"] = json!({ "militia": 40 });
    std::fs::write(&path, t.to_string()).unwrap();
    let s = start(data.clone(), quick(titles)).await;
    let (_, before) = s.login("ironhold", "dora").await;
    let (tok, _) = s.login("ironhold", "ann").await;
    let until = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let (_, r) = s.act("ironhold", &tok, "raid_start", json!({ "defender": "dora" })).await;
        if r["error"]["code"] != "defender_online" {
            break r;
        }
        assert!(Instant::now() < until, "dora's session never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(started["ok"], true, "{started}");
    let raid = started["result"]["raid"].clone();
    let lootable = started["result"]["lootable"].clone();

    // A result from the client is not taken here.
    let (_, r) = s.act("ironhold", &tok, "raid_end", json!({ "raid": raid, "result": {
        "victory": true, "destruction_percent": 100, "loot": lootable, "units_used": { "militia": 1 }, "seconds": 20 } })).await;
    assert_eq!(r["error"]["code"], "invalid_argument", "{r}");

    let (_, r) = s.act("ironhold", &tok, "raid_end", json!({ "raid": raid, "units": { "militia": 40 } })).await;
    assert_eq!(r["ok"], true, "{r}");
    let result = r["result"]["result"].clone();
    assert_eq!(result["units_sent"], json!({ "militia": 40 }));
    let log = result["log"].as_array().expect("a battle log");
    assert!(log.len() >= 3 && log.iter().all(|e| e["text"].is_string() && e["t"].is_i64()), "{result}");
    assert_eq!(log.last().unwrap()["victory"], result["victory"]);
    let lost = result["units_used"]["militia"].as_i64().unwrap_or(0);
    for (res, n) in result["loot"].as_object().unwrap() {
        assert!(n.as_i64().unwrap() <= lootable[res].as_i64().unwrap(), "{res}: {n} within {lootable}");
    }
    // Sent again (a lost answer): the same outcome, applied once.
    let (_, again) = s.act("ironhold", &tok, "raid_end", json!({ "raid": raid, "units": { "militia": 40 } })).await;
    assert_eq!(again["result"]["result"], result, "{again}");

    let (_, st) = s.act("ironhold", &tok, "get_state", Value::Null).await;
    let units = st["result"]["state"]["units"]["militia"].as_i64().unwrap_or(0);
    assert_eq!(units, 40 - lost, "the attacker lost what the battle says: {result}");
    // The defender, back, sees the raid with the same outcome and loss.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, after) = s.login("ironhold", "dora").await;
    let entry = after["state"]["battle_log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((&entry["raid"], &entry["victory"]), (&raid, &result["victory"]), "{entry}");
    for (res, n) in result["loot"].as_object().unwrap() {
        let had = before["state"]["resources"][res].as_i64().unwrap();
        let has = after["state"]["resources"][res].as_i64().unwrap();
        assert!(had - has >= n.as_i64().unwrap(), "{res}: the defender lost the loot ({had} -> {has}, loot {n})");
    }
    s.stop().await;
}
