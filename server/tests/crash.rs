//! The crash tests: the `citadel` process is killed with SIGKILL while many
//! players send actions over WebSockets; after a restart on the same data
//! directory, or after another server sharing it takes the players over,
//! every acknowledged action is in the players' state and none is applied
//! twice. Checked by counting: each action grants exactly one gem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod support;

use std::sync::Arc;

use support::{counting_title, temp, Counter, Killed, START_GEMS};

const PLAYERS: usize = 24;

/// Starts `citadel serve` and returns it with the address it listens on.
fn serve(data: &Path, titles: &Path, config: &Path) -> (Killed, String) {
    serve_as(data, titles, config, &data.join("server"))
}

/// [`serve`] with a server folder of its own (servers sharing `data`).
fn serve_as(data: &Path, titles: &Path, config: &Path, server_dir: &Path) -> (Killed, String) {
    support::serve_in(config, data, titles, server_dir)
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

/// Logs `player` in over HTTP and sends `n` tithes, each acknowledged.
async fn tithes_over_http(addr: &str, player: &str, n: u64) {
    let token = login(addr, player).await["token"].as_str().unwrap().to_string();
    for i in 0..n {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/v1/mini/request"))
            .header("authorization", format!("Bearer {token}"))
            .body(json!({ "id": i, "action": "custom", "args": { "name": "tithe" } }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{player}: {}", r.text().await.unwrap());
    }
}

/// Actions acknowledged across all players before a server is killed: the
/// kill comes once the load is real (several in flight per player), at
/// whatever speed this machine runs.
const ACKED_BEFORE_KILL: u64 = 20;

/// The idempotency key of a player's `n`th action.
fn key(player: &str, n: u64) -> String {
    format!("{player}-{n}")
}

/// Sends `tithe` (each with its own idempotency key) until the connection
/// dies, counting each acknowledgement in `acked_all`; returns (sent,
/// acknowledged).
async fn play(addr: String, player: String, acked_all: Arc<Counter>) -> (u64, u64) {
    let token = login(&addr, &player).await["token"].as_str().unwrap().to_string();
    let (mut w, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/mini/ws?token={token}")).await.unwrap();
    let (mut sent, mut acked) = (0, 0);
    loop {
        let msg = json!({ "id": sent, "key": key(&player, sent), "action": "custom", "args": { "name": "tithe" } })
            .to_string();
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
                    acked_all.add(1);
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (sent, acked),
            }
        }
    }
}

fn gems_on_disk(data: &Path, player: &str) -> i64 {
    support::state_file(&data.join(format!("players/mini/{player}.json")))["resources"]["gems"].as_i64().unwrap()
}

fn seq_on_disk(data: &Path, player: &str) -> u64 {
    support::state_file(&data.join(format!("players/mini/{player}.json")))["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_action_is_lost_or_applied_twice_after_sigkill() {
    let titles = temp("titles");
    counting_title(&titles);
    let data = temp("data");
    let config = data.join("citadel.toml");
    // Players are never saved while the server runs: every acknowledged
    // action can only come back from the journal. Files in MessagePack,
    // uncompressed (the other tests run the default, msgpack+lz4).
    std::fs::write(
        &config,
        "save_interval_seconds = 3600\nidle_timeout_seconds = 3600\nplayer_file_format = \"msgpack\"\n\
         [limits]\nrequests_per_second_max = 100000\n",
    )
    .unwrap();
    let (mut server, addr) = serve(&data, &titles, &config);
    let players: Vec<String> = (0..PLAYERS).map(|i| format!("p{i}")).collect();
    let acked_all = Arc::new(Counter::default());
    let tasks: Vec<_> =
        players.iter().map(|p| tokio::spawn(play(addr.clone(), p.clone(), acked_all.clone()))).collect();
    acked_all.reaches(PLAYERS as u64 * ACKED_BEFORE_KILL, Duration::from_secs(60), "actions acknowledged").await;
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
    let before = segments(&journal);
    assert!(!before.is_empty(), "the kill left journal segments");
    let (mut server, addr) = serve(&data, &titles, &config);
    for (p, (sent, acked)) in players.iter().zip(&counts) {
        // The player file itself holds the replayed actions.
        let on_disk = gems_on_disk(&data, p) - START_GEMS;
        let state = &login(&addr, p).await["state"];
        let applied = (state["resources"]["gems"].as_i64().unwrap() - START_GEMS) as u64;
        assert_eq!(on_disk as u64, applied, "{p}: replay saved the player before serving");
        let bytes = std::fs::read(data.join(format!("players/mini/{p}.json"))).unwrap();
        assert!(bytes.starts_with(b"CITADEL-PLAYER msgpack "), "{p}: saved in the configured format");
        assert!(applied >= *acked, "{p}: {acked} acknowledged but only {applied} applied");
        assert!(applied <= *sent, "{p}: {applied} applied but only {sent} sent: something applied twice");
        // The client sends again, with the same key, what it never saw
        // answered (as the browser client does after a reconnect): then
        // every action it sent is applied exactly once.
        let token = login(&addr, p).await["token"].as_str().unwrap().to_string();
        for n in *acked..*sent {
            let again = json!({ "id": n, "key": key(p, n), "action": "custom", "args": { "name": "tithe" } });
            let answer: Value = reqwest::Client::new()
                .post(format!("http://{addr}/v1/mini/request"))
                .bearer_auth(&token)
                .json(&again)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["ok"], true, "{p}: {answer}");
            let repeated = answer["result"].get("repeated").is_some();
            assert_eq!(repeated, n < applied, "{p}: action {n} of {sent} ({applied} replayed): {answer}");
        }
        let state = &login(&addr, p).await["state"];
        let applied = (state["resources"]["gems"].as_i64().unwrap() - START_GEMS) as u64;
        assert_eq!(applied, *sent, "{p}: every action sent is applied exactly once");
    }
    server.kill();
    // The replayed records were deleted once in the files (only the new
    // run's segments remain): a third start replays nothing (the counts
    // stay the same).
    let after = segments(&journal);
    assert!(after.iter().all(|s| !before.contains(s)), "replayed segments are gone: {before:?} then {after:?}");
    let (mut server, addr) = serve(&data, &titles, &config);
    for (p, (sent, _)) in players.iter().zip(&counts) {
        let gems = login(&addr, p).await["state"]["resources"]["gems"].as_i64().unwrap();
        assert_eq!(gems, gems_on_disk(&data, p), "{p}: replaying twice changed nothing");
        assert_eq!((gems - START_GEMS) as u64, *sent, "{p}: the resent actions were kept too");
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

/// A player file damaged while its journal records wait (a disk error, a
/// hand edit): the server still starts, sets the records aside for
/// support with the reason, leaves the file as it is, and serves everyone
/// else; the player is refused with `player_file_damaged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_player_file_does_not_keep_the_server_from_starting_after_sigkill() {
    let titles = temp("titles-damaged");
    counting_title(&titles);
    let data = temp("data-damaged");
    let config = data.join("citadel.toml");
    std::fs::write(&config, "save_interval_seconds = 3600\nidle_timeout_seconds = 3600\n").unwrap();
    let (mut server, addr) = serve(&data, &titles, &config);
    tithes_over_http(&addr, "hurt", 3).await;
    tithes_over_http(&addr, "fine", 2).await;
    server.kill(); // SIGKILL
    let hurt = data.join("players/mini/hurt.json");
    let mut bytes = std::fs::read(&hurt).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&hurt, &bytes).unwrap();
    let (mut server, addr) = serve(&data, &titles, &config);
    assert_eq!(gems_on_disk(&data, "fine"), START_GEMS + 2, "the others are replayed");
    assert_eq!(std::fs::read(&hurt).unwrap(), bytes, "the damaged file is left as it was");
    let orphans: Vec<_> = std::fs::read_dir(data.join("journal-orphans")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    let set_aside: Vec<Value> = std::fs::read_to_string(&orphans[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["record"]["player"] == "hurt")
        .collect();
    assert_eq!(set_aside.len(), 4, "the login and three tithes: {set_aside:?}");
    assert!(set_aside.iter().all(|v| v["reason"].as_str().unwrap().contains("truncated")), "{set_aside:?}");
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/mini/login"))
        .json(&json!({ "player": "hurt" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "player_file_damaged", "{v}");
    assert_eq!(login(&addr, "fine").await["state"]["resources"]["gems"], START_GEMS + 2);
    server.kill();
}

/// Logs in, retrying while the player is still locked by a server that
/// died (until its lease runs out: real time, these are processes);
/// the answer, whatever it is then.
async fn login_when_free(addr: &str, player: &str) -> (u16, Value) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/v1/mini/login"))
            .json(&json!({ "player": player }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        if v["error"]["code"] != "player_locked" {
            return (status, v);
        }
        assert!(std::time::Instant::now() < until, "{player} stayed locked: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plays `players` on `server` (at `addr`) until enough actions are
/// acknowledged, then kills it (SIGKILL) with actions in flight; returns
/// each player's (sent, acknowledged). None of them was saved.
async fn load_then_kill(server: &mut Killed, addr: &str, data: &Path, players: &[String]) -> Vec<(u64, u64)> {
    let acked_all = Arc::new(Counter::default());
    let tasks: Vec<_> =
        players.iter().map(|p| tokio::spawn(play(addr.to_string(), p.clone(), acked_all.clone()))).collect();
    let n = players.len() as u64;
    acked_all.reaches(n * ACKED_BEFORE_KILL, Duration::from_secs(60), "actions acknowledged").await;
    server.kill(); // SIGKILL
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(tokio::time::timeout(Duration::from_secs(10), t).await.expect("clients notice").unwrap());
    }
    let acked: u64 = counts.iter().map(|c| c.1).sum();
    assert!(acked >= n * 5, "the load was real: only {acked} actions acknowledged");
    for p in players {
        assert_eq!(gems_on_disk(data, p), START_GEMS, "{p} was not saved before the kill");
    }
    counts
}

/// Logs every player in on the server at `addr` once the dead server's
/// lease ran out, and counts: each must have every acknowledged action and
/// none it did not send, saved before being served. `after` checks more
/// per player.
async fn take_over_counted<F: std::future::Future<Output = ()>>(
    addr: &str,
    data: &Path,
    players: &[String],
    counts: &[(u64, u64)],
    after: impl Fn(String) -> F,
) {
    let acked: u64 = counts.iter().map(|c| c.1).sum();
    let (mut found, mut lost, mut doubled) = (0, 0, 0);
    for (p, (sent, acked)) in players.iter().zip(counts) {
        let (status, v) = login_when_free(addr, p).await;
        assert_eq!(status, 200, "{p}: {v}");
        let applied = (v["state"]["resources"]["gems"].as_i64().unwrap() - START_GEMS) as u64;
        assert_eq!(gems_on_disk(data, p) - START_GEMS, applied as i64, "{p}: the takeover saved before serving");
        found += applied;
        lost += acked.saturating_sub(applied);
        doubled += applied.saturating_sub(*sent);
        after(p.clone()).await;
    }
    eprintln!("takeover: {acked} acknowledged, {found} found, {lost} lost, {doubled} doubled");
    assert_eq!((lost, doubled), (0, 0), "{acked} acknowledged, {found} found");
}

/// The journal segment files in `dir` (none if it does not exist).
fn segments(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default()
}

/// Two servers share a data folder and world store. Players act on B,
/// which is killed before saving them; A takes each player over once B's
/// lease runs out and must first apply what B acknowledged, from B's
/// journal. Counted: acknowledged, found, lost, doubled. B, started again,
/// finds its records applied and sets nothing aside; A killed in turn is
/// taken over by B the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_takeover_after_sigkill_applies_the_dead_servers_journal() {
    let titles = temp("titles-takeover");
    counting_title(&titles);
    let data = temp("data-takeover");
    let config = data.join("citadel.toml");
    // Never saved while running; short leases so the takeover comes soon.
    std::fs::write(
        &config,
        "save_interval_seconds = 3600\nidle_timeout_seconds = 3600\nlock_ttl_seconds = 3\nlogin_lock_wait_seconds = 0\n[limits]\nrequests_per_second_max = 100000\n",
    )
    .unwrap();
    let (dir_a, dir_b) = (data.join("server-a"), data.join("server-b"));
    let (mut a, addr_a) = serve_as(&data, &titles, &config, &dir_a);
    let (mut b, addr_b) = serve_as(&data, &titles, &config, &dir_b);
    const TAKEN: usize = 12;
    let players: Vec<String> = (0..TAKEN).map(|i| format!("t{i}")).collect();
    let counts = load_then_kill(&mut b, &addr_b, &data, &players).await;
    let b_segments = segments(&dir_b.join("journal"));
    assert!(!b_segments.is_empty(), "the kill left B's journal");

    // A takes every player over once B's lease has run out.
    take_over_counted(&addr_a, &data, &players, &counts, |_| async {}).await;

    // B starts again while A holds every player: its records are in their
    // files already, so it replays nothing, keeps nothing and orphans nothing.
    let (mut b, addr_b) = serve_as(&data, &titles, &config, &dir_b);
    let now = segments(&dir_b.join("journal"));
    assert!(now.iter().all(|s| !b_segments.contains(s)), "B's old segments are done with: {b_segments:?} then {now:?}");
    assert!(!data.join("journal-orphans").exists(), "nothing set aside");

    // A dies in turn (its players' logins are in its journal only): B takes
    // them over, and the count stays the same.
    a.kill();
    for (i, p) in players.iter().enumerate() {
        let (status, v) = login_when_free(&addr_b, p).await;
        assert_eq!(status, 200, "{p}: {v}");
        let gems = v["state"]["resources"]["gems"].as_i64().unwrap();
        assert!(gems - START_GEMS >= counts[i].1 as i64 && gems - START_GEMS <= counts[i].0 as i64, "{p}: {v}");
        assert_eq!(gems, gems_on_disk(&data, p), "{p}: nothing applied twice");
    }
    b.kill();
}

/// A dead server's journal on another machine cannot be read: its players
/// are refused with `player_recovering` (not served from an older file)
/// until an operator declares that journal lost, which is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_an_unreachable_journal_until_an_operator_decides() {
    let titles = temp("titles-unreachable");
    counting_title(&titles);
    let data = temp("data-unreachable");
    let config = data.join("citadel.toml");
    std::fs::write(
        &config,
        "save_interval_seconds = 3600\nidle_timeout_seconds = 3600\nlock_ttl_seconds = 3\nlogin_lock_wait_seconds = 0\n",
    )
    .unwrap();
    let (dir_a, dir_b) = (data.join("server-a"), data.join("server-b"));
    let (_a, addr_a) = serve_as(&data, &titles, &config, &dir_a);
    let (mut b, addr_b) = serve_as(&data, &titles, &config, &dir_b);
    tithes_over_http(&addr_b, "far", 1).await;
    b.kill();
    // B's journal is said to be on another machine.
    let b_id = format!("server-{}", std::fs::read_to_string(dir_b.join("server-id")).unwrap().trim());
    {
        use citadel_store::world::Servers;
        let world = citadel_store::world::SqliteWorld::open(&data.join("world.sqlite3")).unwrap();
        let mut home = world.journal_home(&b_id).await.unwrap().expect("B recorded its journal");
        assert_eq!(std::path::PathBuf::from(&home.dir), std::path::absolute(dir_b.join("journal")).unwrap());
        home.host = "another-machine".into();
        world.put_journal_home(&home).await.unwrap();
    }
    let (status, v) = login_when_free(&addr_a, "far").await;
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("player_recovering")), "{v}");
    assert_eq!(v["error"]["details"]["server"], b_id.as_str());
    let (status, again) = login_when_free(&addr_a, "far").await;
    assert_eq!((status, again["error"]["code"].as_str()), (503, Some("player_recovering")), "still: {again}");

    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let lost = |body: Value| {
        reqwest::Client::new()
            .post(format!("http://{addr_a}/admin/api/servers/{b_id}/journal-lost"))
            .header("authorization", format!("Bearer {}", admin.trim()))
            .json(&body)
            .send()
    };
    let r = lost(json!({ "reason": "" })).await.unwrap();
    assert_eq!(r.status(), 400, "a reason is required");
    let r = lost(json!({ "reason": "machine 2 burned" })).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (status, v) = login_when_free(&addr_a, "far").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"]["resources"]["gems"], START_GEMS, "the tithe was in the lost journal only");
}

/// The counting title, a data folder, and a config journaling to JetStream
/// on `nats` under `prefix`, with no timed saves (every acknowledged action
/// comes back from the journal) and sessions ending after `idle_seconds`.
fn jetstream_world(nats: &support::Nats, name: &str, idle_seconds: u64, prefix: &str) -> (PathBuf, PathBuf, PathBuf) {
    let titles = temp(&format!("titles-{name}"));
    counting_title(&titles);
    let data = temp(&format!("data-{name}"));
    let config = data.join("citadel.toml");
    std::fs::write(
        &config,
        format!(
            "save_interval_seconds = 3600\nidle_timeout_seconds = {idle_seconds}\nlock_ttl_seconds = 3\nlogin_lock_wait_seconds = 0\njournal_store = \"jetstream\"\ndev_login = true\n[limits]\nrequests_per_second_max = 100000\n[nats]\nurl = \"{}\"\nsubject_prefix = \"{prefix}\"\n",
            nats.url
        ),
    )
    .unwrap();
    (titles, data, config)
}

/// The id of the server whose folder is `dir`.
fn server_id(dir: &Path) -> String {
    format!("server-{}", std::fs::read_to_string(dir.join("server-id")).unwrap().trim())
}

/// How many messages the JetStream stream `name` holds.
async fn stream_messages(url: &str, name: String) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.get_stream(name).await.unwrap().info().await.unwrap().state.messages
}

/// With the journal on NATS JetStream a server's disk may go for good: B
/// is killed (SIGKILL) under load and its whole folder (journal, identity)
/// deleted; A takes every player over once B's lease runs out, applying
/// what B acknowledged from B's stream. Counted: acknowledged, found,
/// lost, doubled. B's stream then holds none of their records (a takeover
/// purges what it read), and B started again on an empty folder is a new
/// server that serves them with nothing lost or applied twice. Killed in
/// turn and started again on the same folder (within the lock's lifetime,
/// so no takeover would read them), it replays its players' last records
/// from its stream at start, once; a clean stop leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_jetstream_journal_a_dead_servers_lost_disk_loses_no_acknowledged_action() {
    use citadel_server::journal::jetstream::{kept_stream_name, stream_name, JournalStream};
    let Some(nats) = support::Nats::start_jetstream("crash (JetStream journal)") else { return };
    let (titles, data, config) = jetstream_world(&nats, "jetstream", 3600, "crash");
    let (dir_a, dir_b) = (data.join("server-a"), data.join("server-b"));
    let (mut a, addr_a) = serve_as(&data, &titles, &config, &dir_a);
    let (mut b, addr_b) = serve_as(&data, &titles, &config, &dir_b);
    let (a_id, b_id) = (server_id(&dir_a), server_id(&dir_b));
    const TAKEN: usize = 12;
    let players: Vec<String> = (0..TAKEN).map(|i| format!("j{i}")).collect();
    let counts = load_then_kill(&mut b, &addr_b, &data, &players).await;
    assert!(segments(&dir_b.join("journal")).is_empty(), "B journals to the stream, not to its disk");
    // B's machine is gone for good.
    std::fs::remove_dir_all(&dir_b).unwrap();

    let stream = {
        let n = citadel_server::config::NatsConfig {
            url: nats.url.clone(),
            credentials: None,
            subject_prefix: "crash".into(),
            journal_replicas: 1,
        };
        JournalStream::open(&n, "the-test", "crash test").await.unwrap()
    };
    let key = |p: &str| ("mini".to_string(), p.to_string());
    let in_stream = |server: String, p: String| {
        let stream = &stream;
        async move { stream.records(&stream_name("crash", &server), &server, &key(&p)).await.unwrap().0 }
    };
    assert!(
        !in_stream(b_id.clone(), players[0].clone()).await.is_empty(),
        "B's acknowledged records wait in its stream"
    );

    take_over_counted(&addr_a, &data, &players, &counts, |p: String| {
        let (data, b_id, in_stream) = (&data, b_id.clone(), &in_stream);
        async move {
            let saved = seq_on_disk(data, &p);
            let left = in_stream(b_id, p.clone()).await;
            assert!(
                left.iter().all(|r| r.seq > saved),
                "{p}: the records the takeover saved (through seq {saved}) are purged from B's stream: {left:?}"
            );
        }
    })
    .await;

    // A dies in turn, with the players' logins in its stream only; B, back
    // on an empty folder (a new server), takes them over the same way.
    a.kill();
    std::fs::remove_dir_all(&dir_a).unwrap();
    let (mut b, addr_b) = serve_as(&data, &titles, &config, &dir_b);
    let b2_id = server_id(&dir_b);
    assert_ne!(b2_id, b_id, "an empty folder is a new server");
    let info = |name: String| stream_messages(&nats.url, name);
    let expected = |v: &Value, i: usize, p: &str| {
        let gems = v["state"]["resources"]["gems"].as_i64().unwrap();
        assert!(gems - START_GEMS >= counts[i].1 as i64 && gems - START_GEMS <= counts[i].0 as i64, "{p}: {v}");
        assert_eq!(gems, gems_on_disk(&data, p), "{p}: nothing applied twice");
        gems
    };
    let mut gems = Vec::new();
    for (i, p) in players.iter().enumerate() {
        let (status, v) = login_when_free(&addr_b, p).await;
        assert_eq!(status, 200, "{p}: {v}");
        gems.push(expected(&v, i, p));
    }
    // Each player gets one more gem on B, acknowledged, then B is killed
    // and started on the same folder: its stream holds those records.
    for p in &players {
        tithes_over_http(&addr_b, p, 1).await;
    }
    b.kill();
    let (mut b, addr_b) = serve_as(&data, &titles, &config, &dir_b);
    assert_eq!(server_id(&dir_b), b2_id, "the same folder is the same server");
    // Its start replayed them into the files, as the file journal's.
    for (i, p) in players.iter().enumerate() {
        assert_eq!(gems_on_disk(&data, p), gems[i] + 1, "{p}: the tithe replayed at start");
    }
    assert_eq!(info(stream_name("crash", &b2_id)).await, 0, "B's stream was emptied at its start");
    assert_eq!(info(kept_stream_name("crash")).await, 0, "the kept copies of the replayed records are gone");
    for (i, p) in players.iter().enumerate() {
        let (status, v) = login_when_free(&addr_b, p).await;
        assert_eq!(status, 200, "{p}: {v}");
        assert_eq!(v["state"]["resources"]["gems"].as_i64().unwrap(), gems[i] + 1, "{p}: the tithe applied once: {v}");
    }
    // A clean stop saves every player and clears its stream; the
    // takeovers purged what they read from A's stream and the kept one.
    assert!(b.stop(Duration::from_secs(20)), "B stops cleanly");
    for p in &players {
        for server in [&a_id, &b_id, &b2_id] {
            let left = in_stream(server.clone(), p.clone()).await;
            assert!(left.is_empty(), "{p}: saved, yet in {server}'s stream or kept: {left:?}");
        }
    }
    assert_eq!(info(stream_name("crash", &b2_id)).await, 0, "B's own stream is empty after a clean stop");
    assert_eq!(info(kept_stream_name("crash")).await, 0, "nothing is left in the kept stream");
}

/// With the JetStream journal a server removes its saved records from its
/// stream every few seconds, by the stream's sequence. A player whose session
/// ends unsaved (here another server took their lock over, as after a
/// stall longer than the lock's lifetime) must not hold that back, nor
/// lose anything to it: their records move to the kept stream, the
/// server's stream empties once the other players are saved, and the
/// takeover that follows applies them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_jetstream_journal_an_unsaved_players_records_outlive_the_clean_up() {
    use citadel_server::journal::jetstream::{kept_stream_name, stream_name};
    let Some(nats) = support::Nats::start_jetstream("crash (JetStream journal, unsaved session)") else { return };
    // Sessions end 5 s after their last request: long after the lock is
    // taken (at once, below) and lost at the next renewal (every second).
    let (titles, data, config) = jetstream_world(&nats, "kept", 5, "kept");
    let dir = data.join("server");
    let (mut server, addr) = serve_as(&data, &titles, &config, &dir);
    let id = server_id(&dir);
    let messages = |name: String| stream_messages(&nats.url, name);
    tithes_over_http(&addr, "stuck", 5).await;
    // Another server takes the stuck player's lock over, owing what this
    // one journaled; this server's session is fenced and ends unsaved.
    {
        let db = rusqlite::Connection::open(data.join("world.sqlite3")).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let n = db
            .execute(
                "UPDATE locks SET owner = 'server-elsewhere', token = token + 1000000, expires_ms = ?1, recover_from = ?2 WHERE name = 'player:players/mini/stuck.json'",
                rusqlite::params![now_ms + 3000, id],
            )
            .unwrap();
        assert_eq!(n, 1, "the stuck player's lock is in the world store");
    }
    tithes_over_http(&addr, "fine", 3).await;
    let own = stream_name("kept", &id);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while messages(own.clone()).await > 0 {
        assert!(std::time::Instant::now() < until, "the server's stream never emptied: the unsaved player holds it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gems_on_disk(&data, "fine"), START_GEMS + 3, "the other player was saved");
    assert_eq!(gems_on_disk(&data, "stuck"), START_GEMS, "the fenced session did not save");
    assert!(messages(kept_stream_name("kept")).await >= 5, "the unsaved tithes wait in the kept stream");

    // The other server never finished; once its lock runs out, this one
    // takes the player over, owing what it journaled itself.
    let (status, v) = login_when_free(&addr, "stuck").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"]["resources"]["gems"].as_i64().unwrap(), START_GEMS + 5, "applied once: {v}");
    assert_eq!(gems_on_disk(&data, "stuck"), START_GEMS + 5, "saved by the takeover");
    assert_eq!(messages(kept_stream_name("kept")).await, 0, "the takeover removed what it applied");
    assert!(server.stop(Duration::from_secs(20)), "stops cleanly");
    assert_eq!(messages(own).await, 0, "a clean stop leaves nothing in the server's stream");
}
