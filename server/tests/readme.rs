//! The README's run command, exactly as written there, starts a server a
//! newcomer can log in to. The command is read from the README, so the two
//! cannot drift apart (it once failed, unnoticed, on every fresh clone).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;

/// Building the server from scratch on a 2-core machine takes minutes; the
/// test build has compiled most of it already.
const START_TIMEOUT: Duration = Duration::from_secs(900);

/// The first `sh` block after the README's "Run the game server" line.
fn run_command(readme: &str) -> String {
    let after = readme.split_once("Run the game server").expect("the README says how to run the server").1;
    let block = after.split_once("```sh\n").expect("a sh block follows").1;
    let command = block.split_once("```").unwrap().0.trim();
    assert_eq!(command.lines().count(), 1, "one command: {command}");
    command.to_string()
}

#[test]
fn the_run_command_is_read_from_the_readme() {
    assert_eq!(run_command("Run the game server:\n\n```sh\nfoo serve\n```\n"), "foo serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_run_command_starts_a_server_a_player_can_log_in_to() {
    let root = support::root();
    let command = run_command(&std::fs::read_to_string(root.join("README.md")).unwrap());
    assert!(command.starts_with("cargo run"), "{command}");
    let data = support::temp("readme-data");
    // The command as written; only where it listens and keeps its files
    // come from the environment (documented in docs/configuration.md), so
    // that it runs beside other tests and a developer's own server.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .current_dir(&root)
        .env("CITADEL_LISTEN", "127.0.0.1:0")
        .env("CITADEL_DATA_DIR", &data)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs the command");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // Killed when the test ends, however it ends (`exec`: sh becomes cargo,
    // which becomes the server).
    let mut server = support::Killed(child);
    // cargo's own output (building, running) goes to stderr: kept for the
    // failure message.
    let cargo_said =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let addr = loop {
        match rx.recv_timeout(START_TIMEOUT.saturating_sub(started.elapsed())) {
            Ok(line) if line.contains("listening") => {
                let at = line.find("127.0.0.1:").expect("the address is logged");
                let addr: String =
                    line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
                break addr;
            }
            Ok(_) => continue,
            Err(_) => {
                server.kill();
                panic!("the README's run command `{command}` did not start a server:\n{}", cargo_said.join().unwrap());
            }
        }
    };
    let titles: Value = reqwest::get(format!("http://{addr}/v1/titles")).await.unwrap().json().await.unwrap();
    let title = titles["titles"][0]["id"].as_str().expect("a title is served").to_string();
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/{title}/login"))
        .json(&json!({ "player": "newcomer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["token"].is_string(), "{v}");
    assert_eq!(v["player"], "newcomer");
    drop(server);
}
