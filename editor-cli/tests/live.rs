//! `citadel-edit watch`, `push` and `rollback` as designers and live-ops
//! staff use them: real processes, a real `citadel serve` on 127.0.0.1,
//! real folders edited while the tools run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const ADMIN: &str = "an editor test admin token";
/// How soon `watch` must report a save.
const REPORTED_WITHIN: Duration = Duration::from_secs(1);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("citadel-edit-live-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Kills the child when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines a child prints, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `want`; returns it and every line before it.
fn expect_line(rx: &mpsc::Receiver<String>, want: &str, within: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = within.checked_sub(start.elapsed()).unwrap_or_default();
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(want);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no line with `{want}` within {within:?}; got {seen:#?}"),
        }
    }
}

#[test]
fn watch_reports_each_save_within_a_second() {
    let titles = temp("watch");
    let dir = titles.join("fort");
    copy_dir(&root().join("tests/fixtures/fort"), &dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_citadel-edit"))
        .arg("watch")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = lines(&mut child);
    let _child = Running(child);
    expect_line(&out, "fort: ok, content version", Duration::from_secs(10));
    expect_line(&out, "watching", Duration::from_secs(10));

    // A broken save: the diagnostic names the file, line and column.
    let path = dir.join("title.json");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("\"builders\": 1", "\"builders\": \"two\"")).unwrap();
    let seen = expect_line(&out, "fort: invalid, 1 error(s)", REPORTED_WITHIN);
    let all = seen.join("\n");
    assert!(all.contains("title.json:13:15"), "{all}");
    assert!(all.contains("expected an integer"), "{all}");

    // Fixed, the way many editors save: a temporary file renamed over it.
    let tmp = dir.join(".title.json.tmp");
    std::fs::write(&tmp, good.replace("\"builders\": 1", "\"builders\": 2")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    expect_line(&out, "fort: ok, content version", REPORTED_WITHIN);

    // A broken script.
    let script = dir.join("scripts/hooks.rhai");
    let source = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, format!("{source}\nfn broken( {{\n")).unwrap();
    let seen = expect_line(&out, "fort: invalid", REPORTED_WITHIN);
    assert!(seen.join("\n").contains("scripts/hooks.rhai"), "{seen:#?}");

    // The whole folder replaced by a fresh copy (a checkout, a sync tool):
    // still watched.
    let fresh = titles.join(".incoming");
    copy_dir(&root().join("tests/fixtures/fort"), &fresh);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&fresh, &dir).unwrap();
    expect_line(&out, "fort: ok, content version", REPORTED_WITHIN);
    std::fs::write(&path, good.replace("\"builders\": 1", "\"builders\": \"three\"")).unwrap();
    expect_line(&out, "fort: invalid, 1 error(s)", REPORTED_WITHIN);
}

/// The `citadel` binary, built if this test run has not built it yet.
/// Built the way `cargo test --workspace` builds it (the same features, so
/// under that command, the one `scripts/test` runs, this is a no-op;
/// `cargo build -p citadel-server` would unify features differently and
/// rebuild much of the tree).
fn citadel_bin() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["test", "--workspace", "--no-run", "--quiet", "--locked"])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "building citadel");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    target.join("debug/citadel")
}

fn serve(titles: &Path, data: &Path) -> (Running, String) {
    let mut child = Command::new(citadel_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--log-json", "--titles"])
        .arg(titles)
        .arg("--data-dir")
        .arg(data)
        .env("CITADEL_ADMIN_TOKEN", ADMIN)
        // Only pushes and rollbacks change titles here.
        .env("CITADEL_WATCH_TITLES", "false")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = lines(&mut child);
    let running = Running(child);
    let addr = loop {
        let line = out.recv_timeout(Duration::from_secs(30)).expect("the server starts");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in out {});
    (running, format!("http://{addr}"))
}

fn served(server: &str) -> String {
    let mut r = ureq::get(&format!("{server}/v1/titles")).call().unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["titles"][0]["content_version"].as_str().unwrap().to_string()
}

fn edit_cmd(args: &[&str], token: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_citadel-edit"));
    c.args(args).env_remove("CITADEL_ADMIN_TOKEN");
    if let Some(t) = token {
        c.env("CITADEL_ADMIN_TOKEN", t);
    }
    c.output().unwrap()
}

#[test]
fn push_serves_a_valid_title_refuses_an_invalid_one_and_rollback_returns() {
    let titles = temp("served-titles");
    copy_dir(&root().join("tests/fixtures/fort"), &titles.join("fort"));
    let (server, url) = serve(&titles, &temp("data"));
    let first = served(&url);

    // The designer's own copy, edited.
    let work = temp("work").join("fort");
    copy_dir(&root().join("tests/fixtures/fort"), &work);
    let path = work.join("title.json");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("\"builders\": 1", "\"builders\": 2")).unwrap();
    let dir = work.to_str().unwrap();

    let o = edit_cmd(&["push", dir, "--server", &url], Some(ADMIN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let second = served(&url);
    assert_ne!(second, first);
    assert!(text(&o).contains(&format!("fort: served, content version {second} (was {first})")), "{}", text(&o));

    // Invalid: the server's gate refuses it and keeps serving the last one.
    std::fs::write(&path, good.replace("\"builders\": 1", "\"builders\": \"two\"")).unwrap();
    let o = edit_cmd(&["push", dir, "--server", &url], Some(ADMIN));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("title.json:13:15"), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("fort: refused, 1 error(s); the server keeps content version {second}")),
        "{}",
        text(&o)
    );
    assert_eq!(served(&url), second);

    // No token, or a wrong one: nothing changes.
    std::fs::write(&path, good.replace("\"builders\": 1", "\"builders\": 3")).unwrap();
    let o = edit_cmd(&["push", dir, "--server", &url], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no admin token"), "{}", text(&o));
    let o = edit_cmd(&["push", dir, "--server", &url, "--token", "not the admin token at all"], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unauthorized"), "{}", text(&o));
    assert_eq!(served(&url), second);

    // SIGHUP reloads the served folder (this server does not watch it).
    let served_folder = titles.join("fort/title.json");
    let source = std::fs::read_to_string(&served_folder).unwrap();
    std::fs::write(&served_folder, source.replace("\"builders\": 1", "\"builders\": 4")).unwrap();
    let hup = Command::new("kill").arg("-HUP").arg(server.0.id().to_string()).status().unwrap();
    assert!(hup.success());
    let waited = Instant::now();
    let third = loop {
        let v = served(&url);
        if v != second {
            break v;
        }
        assert!(waited.elapsed() < Duration::from_secs(5), "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(third, first);
    // Back to what was pushed, by version (pushed versions are kept too).
    let o = edit_cmd(&["rollback", "fort", "--server", &url, "--to", &second], Some(ADMIN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(served(&url), second);

    // Rollback to the version before: the one served before the SIGHUP.
    let o = edit_cmd(&["rollback", "fort", "--server", &url], Some(ADMIN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(served(&url), third);
    assert!(text(&o).contains(&format!("fort: served, content version {third} (was {second})")), "{}", text(&o));
    // And to the first one, by version.
    let o = edit_cmd(&["rollback", "fort", "--server", &url, "--to", &first], Some(ADMIN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(served(&url), first);
    // And forward again, by version.
    let o = edit_cmd(&["rollback", "fort", "--server", &url, "--to", &second, "--format", "json"], Some(ADMIN));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(served(&url), second);
    let o = edit_cmd(&["rollback", "fort", "--server", &url, "--to", "0123456789abcdef"], Some(ADMIN));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown_version"), "{}", text(&o));
}
