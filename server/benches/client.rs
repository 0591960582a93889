//! The players' client in headless Chromium (docs/benchmarks.md, "The
//! players' client"). For every title of `titles/`, on an in-process
//! server and one Chromium:
//!
//! 1. **First load**: the browser's cache cleared, the title's page opened,
//!    a player logged in: bytes transferred (the Resource Timing API's
//!    `transferSize` of the page and everything it fetched, the socket
//!    aside), time to the login form and from the login sent to playable
//!    (the client's User Timing marks `citadel:login-shown`,
//!    `citadel:login-sent`, `citadel:ready`).
//! 2. **Load to playable** for a returning player (the page reloaded with
//!    its session, cache warm): navigation start to `citadel:ready`.
//! 3. **Frame time while panning** the largest base the title allows
//!    (every building type as many times as the top headquarters level
//!    allows, at its top level, until the grid is full), fitted on screen,
//!    at desktop (1280x800) and phone (360x740) sizes: the base panned a
//!    little every frame for `FRAMES` frames; the draw's own time
//!    (`window.citadel.view.frames`) and the intervals between frames.
//!
//! Baseline, same browser, same run: an empty page running the same frame
//! loop with no drawing (the browser's own frame cadence), and the same
//! title's new-player base (its few starting buildings), so that the cost
//! per building drawn shows. No assertion: numbers are printed, one JSON
//! line per title and size, for docs/benchmarks.md.
//!
//! Run: `CITADEL_TEST_CHROMEDRIVER=/usr/bin/chromedriver cargo bench -p citadel-server --bench client`

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;

use citadel_runtime::rules::new_player;
use citadel_runtime::state::{Building, PlayerState};
use citadel_runtime::title::Title;
use serde_json::{json, Value};
use support::browser::Browser;
use support::server::*;

/// Frames panned per measurement: ten seconds at 60 frames a second.
const FRAMES: u32 = 600;
/// Frames drawn before measuring (images decoded, caches warm).
const WARM_FRAMES: u32 = 60;

/// The largest base `title` allows: every building type, as many as the
/// top headquarters level allows, each at its top level, placed row by row
/// wherever it fits until the grid is full.
fn largest_base(title: &Title, now_ms: i64) -> PlayerState {
    let mut s = new_player(title, now_ms);
    let g = &title.manifest.grid;
    let mut used = vec![false; (g.width * g.height) as usize];
    let free = |used: &[bool], x: i32, y: i32, w: i32, h: i32| {
        x + w <= g.width
            && y + h <= g.height
            && (y..y + h).all(|j| (x..x + w).all(|i| !used[(j * g.width + i) as usize]))
    };
    s.buildings.clear();
    let mut id = 1;
    for b in &title.buildings {
        let (w, h) = (b.def.size.w, b.def.size.h);
        let count = b.def.max_count.last().copied().unwrap_or(1);
        for _ in 0..count {
            let spot =
                (0..g.height).flat_map(|y| (0..g.width).map(move |x| (x, y))).find(|&(x, y)| free(&used, x, y, w, h));
            let Some((x, y)) = spot else { break };
            for j in y..y + h {
                for i in x..x + w {
                    used[(j * g.width + i) as usize] = true;
                }
            }
            s.buildings.push(Building::completed(id, &b.def.id, b.def.levels.len() as u32, x, y, now_ms));
            id += 1;
        }
    }
    s.next_building_id = id;
    s
}

fn write_player(data: &Path, title: &str, player: &str, state: &PlayerState) {
    let dir = data.join("players").join(title);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{player}.json")), serde_json::to_vec(state).unwrap()).unwrap();
}

/// p50, p99 and the largest of `xs` (milliseconds), and how many are over
/// `over` ms.
fn summary(xs: &[f64], over: f64) -> Value {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "n": v.len(),
        "p50": round(at(0.5)),
        "p99": round(at(0.99)),
        "max": round(v.last().copied().unwrap_or(0.0)),
        format!("over_{over}"): v.iter().filter(|x| **x > over).count(),
    })
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

/// Pans the open page's base a little every frame for `FRAMES` frames
/// (back and forth, so that it stays on screen), fitted first; returns
/// the draw times and the frame intervals (ms).
const PAN: &str = r#"
const done = arguments[arguments.length - 1];
const [frames, warm] = arguments;
const v = window.citadel.view;
v.zoom = 1; v.fit();
let n = 0, last = null, dir = 1;
const intervals = [];
function step(t) {
  if (n === warm) { v.frames.length = 0; }
  if (n > warm && last !== null) intervals.push(t - last);
  last = t;
  if (n % 120 === 0) dir = -dir;
  v.pan(dir * 0.05, dir * 0.03);
  n += 1;
  if (n < frames + warm) requestAnimationFrame(step);
  else requestAnimationFrame(() => done({ draws: v.frames.slice(), intervals, buildings: window.citadel.model.state.buildings.length }));
}
requestAnimationFrame(step);
"#;

/// The same frame loop on a page that draws nothing.
const IDLE: &str = r#"
const done = arguments[arguments.length - 1];
const [frames] = arguments;
let n = 0, last = null;
const intervals = [];
function step(t) {
  if (last !== null) intervals.push(t - last);
  last = t;
  n += 1;
  if (n < frames) requestAnimationFrame(step); else done({ intervals });
}
requestAnimationFrame(step);
"#;

/// What the page loaded: bytes transferred and decoded, requests.
const BYTES: &str = r#"
const all = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")];
return {
  requests: all.length,
  transferred: all.reduce((a, e) => a + (e.transferSize || 0), 0),
  decoded: all.reduce((a, e) => a + (e.decodedBodySize || 0), 0),
};
"#;

/// A User Timing mark's time since navigation start (ms), or null.
const MARK: &str = r#"
const m = performance.getEntriesByName("citadel:" + arguments[0]);
return m.length ? m[m.length - 1].startTime : null;
"#;

async fn log_in(b: &Browser, s: &Server, title: &str, player: &str) {
    b.go(&s.url(&format!("/play/{title}/"))).await;
    b.wait_for("the login form", "return !document.getElementById('login').hidden").await;
    b.type_into("#player", player).await;
    b.click("#login-form button").await;
    b.wait_for("the game to load", "return document.body.dataset.ready === 'true'").await;
}

async fn pan(b: &Browser) -> (Value, Value, u64) {
    let r = b.run_async(PAN, json!([FRAMES, WARM_FRAMES])).await;
    let draws = summary(&numbers(&r["draws"]), 16.0);
    let intervals = summary(&numbers(&r["intervals"]), 20.0);
    (draws, intervals, r["buildings"].as_u64().unwrap_or(0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(chromedriver) = std::env::var("CITADEL_TEST_CHROMEDRIVER") else {
        eprintln!(
            "set CITADEL_TEST_CHROMEDRIVER (and CITADEL_TEST_CHROMIUM) to Chromium's driver to run this benchmark"
        );
        std::process::exit(2);
    };
    let titles = support::temp("bench-client-titles");
    copy_dir(&support::root().join("titles"), &titles);
    let data = fresh_data("bench-client");
    let mut ids: Vec<String> =
        std::fs::read_dir(&titles).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    ids.sort();
    for id in &ids {
        let (title, diags) = citadel_runtime::load::load(&titles.join(id));
        let title = title.unwrap_or_else(|| panic!("{id} does not load: {diags:?}"));
        write_player(&data, id, "largest", &largest_base(&title, START));
    }
    let dir = titles.clone();
    let s = start(data, move |c| c.titles = dir).await;
    let b = Browser::start(&chromedriver).await;

    let mut results = Vec::new();
    for (width, height) in [(1280, 800), (360, 740)] {
        b.resize(width, height).await;
        b.go("about:blank").await;
        let idle = b.run_async(IDLE, json!([FRAMES])).await;
        let line =
            json!({ "case": "empty page", "width": width, "intervals": summary(&numbers(&idle["intervals"]), 20.0) });
        println!("{line}");
        results.push(line);
    }
    b.resize(1280, 800).await;
    for id in &ids {
        // First load, cache cleared; a new player.
        b.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": "Network.clearBrowserCache", "params": {} })),
        )
        .await;
        b.go("about:blank").await;
        log_in(&b, &s, id, &format!("bench-new-{}", id.replace('_', "-"))).await;
        let bytes = b.run(BYTES, json!([])).await;
        let shown = b.run(MARK, json!(["login-shown"])).await;
        let sent = b.run(MARK, json!(["login-sent"])).await.as_f64().unwrap_or(0.0);
        let ready = b.run(MARK, json!(["ready"])).await.as_f64().unwrap_or(0.0);
        let (small_draws, _, small) = pan(&b).await;
        // A returning player: the page reloaded with its session.
        b.run("location.reload()", json!([])).await;
        b.wait_for("the game to load again", "return document.body.dataset.ready === 'true'").await;
        let again = b.run(MARK, json!(["ready"])).await;
        let line = json!({
            "case": "load", "title": id, "first_load": bytes, "login_shown_ms": shown,
            "login_to_playable_ms": ((ready - sent) * 10.0).round() / 10.0, "returning_load_to_playable_ms": again,
            "new_player_pan": { "width": 1280, "buildings": small, "draw_ms": small_draws },
        });
        println!("{line}");
        results.push(line);
        b.run("sessionStorage.clear()", json!([])).await;

        // The largest base, at both sizes.
        for (width, height) in [(1280, 800), (360, 740)] {
            b.resize(width, height).await;
            log_in(&b, &s, id, "largest").await;
            let (draws, intervals, n) = pan(&b).await;
            let line = json!({
                "case": "pan", "title": id, "width": width, "buildings": n, "draw_ms": draws, "frame_interval_ms": intervals,
            });
            println!("{line}");
            results.push(line);
            b.run("sessionStorage.clear()", json!([])).await;
        }
        b.resize(1280, 800).await;
    }
    let out = support::root().join("target/bench-client");
    std::fs::create_dir_all(&out).unwrap();
    let text: String = results.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(out.join("results.jsonl"), text).unwrap();
    drop(b);
    s.stop().await;
}
