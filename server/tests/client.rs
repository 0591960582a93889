//! The players' client in a real browser (headless Chromium over WebDriver,
//! one browser and one server for every step): a new player of each title
//! served logs in, places a first building, sees its timer bar complete,
//! upgrades it, trains a unit, starts a research, buys an item and claims
//! a quest, all by clicking the page; after each step the server's state,
//! read over the protocol, is what the page shows. Screenshots at phone and
//! desktop widths go to `target/client-screenshots/`; the browser console
//! must stay free of errors.
//!
//! The page plays on the real titles; the test reads their data only to
//! choose what to click (the first quest's building, a unit and a research
//! with no requirement, and what those need first). Where a new player
//! lacks resources for the next step, support grants them (the admin API),
//! as the steps are about the client, not about pacing (tests/titles.rs
//! checks pacing).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use support::browser::Browser;
use support::server::*;

const SHOTS: &str = "client-screenshots";

/// Checks the page with axe-core (its source in `axe`): no serious or
/// critical violation of the WCAG 2 A and AA rules and best practices.
async fn accessible(b: &Browser, axe: &str, page: &str) {
    let loaded = b.run("return typeof window.axe === 'object'", json!([])).await;
    if loaded != true {
        b.run(&format!("{axe}\n;return true;"), json!([])).await;
    }
    let result = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'best-practice'], resultTypes: ['violations'] })
                .then((r) => done(r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.html) }))))
                .catch((e) => done({ error: String(e) }));",
            json!([]),
        )
        .await;
    assert_eq!(result, json!([]), "{page}: axe-core finds serious or critical violations");
}

/// axe-core does find a violation where there is one (a button without a
/// name): the checks above can fail.
async fn axe_finds_a_nameless_button(b: &Browser) {
    b.run("const x = document.createElement('button'); x.id = 'nameless'; document.body.append(x);", json!([])).await;
    let found = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: ['wcag2a'] }).then((r) => done(r.violations.map((v) => v.id)));",
            json!([]),
        )
        .await;
    b.run("document.getElementById('nameless').remove();", json!([])).await;
    assert!(found.as_array().unwrap().contains(&json!("button-name")), "axe-core reports {found}");
}

/// A player's page and the server under it.
struct Play<'a> {
    b: &'a Browser,
    s: &'a Server,
    title: String,
    player: String,
    token: String,
    data: Value,
}

/// The `(building, level)` pairs of `level("x") >= n` in a requirement.
fn level_needs(requires: &Value) -> Vec<(String, u64)> {
    let text = requires.as_str().unwrap_or("");
    let mut out = Vec::new();
    for part in text.split("level(\"").skip(1) {
        let Some((id, rest)) = part.split_once("\")") else { continue };
        let Some(n) = rest.trim_start().strip_prefix(">=") else { continue };
        let digits: String = n.trim_start().chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            out.push((id.to_string(), n));
        }
    }
    out
}

impl Play<'_> {
    fn def(&self, kind: &str, id: &str) -> &Value {
        self.data[kind].as_array().unwrap().iter().find(|x| x["id"] == id).unwrap_or_else(|| panic!("no {kind} {id}"))
    }

    fn name(&self, kind: &str, id: &str) -> String {
        self.def(kind, id)["name"].as_str().unwrap().to_string()
    }

    /// The player's state, read over the protocol.
    async fn state(&self) -> Value {
        let (_, r) = self.s.act(&self.title, &self.token, "get_state", Value::Null).await;
        r["result"].clone()
    }

    /// Waits until the page has every answer it asked for.
    async fn settled(&self) {
        self.b
            .wait_for(
                "the page's requests to be answered",
                "return window.citadel.net && window.citadel.net.waiting === 0",
            )
            .await;
    }

    /// The page and the server agree: every resource amount, every
    /// building and its level.
    async fn agree(&self, step: &str) {
        self.settled().await;
        let server = self.state().await;
        let page = self.b.run("return window.citadel.model.state", json!([])).await;
        for key in ["resources", "units", "research", "purchases", "quests_claimed"] {
            assert_eq!(page[key], server["state"][key], "{}: {step}: the page's {key} are the server's", self.title);
        }
        let buildings = |v: &Value| -> Vec<(u64, String, u64)> {
            v["buildings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["id"].as_u64().unwrap(),
                        b["building"].as_str().unwrap().to_string(),
                        b["level"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(buildings(&page), buildings(&server["state"]), "{}: {step}: buildings", self.title);
        // And what the page shows in words: each resource's amount.
        for (id, n) in server["state"]["resources"].as_object().unwrap() {
            let label = self
                .b
                .run(
                    "return document.querySelector(`li[data-resource='${arguments[0]}']`).getAttribute('aria-label')",
                    json!([id]),
                )
                .await;
            let want = format!("{}: {n}", self.name("resources", id));
            assert!(
                label.as_str().unwrap_or("").starts_with(&want),
                "{}: {step}: shows {label}, not {want}",
                self.title
            );
        }
    }

    /// Clicks the button whose text is `text` (exactly), waiting for it.
    async fn press(&self, text: &str) {
        let found = self
            .b
            .wait_for(
                &format!("a button `{text}`"),
                "const b = [...document.querySelectorAll('button')].find((b) => b.textContent.trim() === arguments[0] && !b.disabled);
                 if (b) { b.scrollIntoView(); b.click(); return true; } return false;"
                    .replace("arguments[0]", &serde_json::to_string(text).unwrap())
                    .as_str(),
            )
            .await;
        assert_eq!(found, true);
    }

    async fn tab(&self, id: &str) {
        self.b.click(&format!("#tab-{id}")).await;
    }

    /// Support grants what the player lacks for `cost` (and a margin).
    async fn afford(&self, cost: &Value) {
        let state = self.state().await;
        let mut grant = BTreeMap::new();
        for (r, n) in cost.as_object().unwrap() {
            let have = state["state"]["resources"][r].as_i64().unwrap_or(0);
            let cap = state["derived"]["caps"][r].as_i64().unwrap_or(i64::MAX);
            let need = n.as_i64().unwrap();
            if have < need {
                assert!(need <= cap, "{}: {r} {need} is over its cap {cap}", self.title);
                grant.insert(r.clone(), need - have);
            }
        }
        if grant.is_empty() {
            return;
        }
        let path = format!("/admin/api/players/{}/{}/adjust", self.title, self.player);
        let (status, r) =
            self.s.admin_post(&path, json!({ "resources": grant, "reason": "test: the next step" })).await;
        assert_eq!(status, 200, "{r}");
        self.b.click("#refresh").await;
        self.settled().await;
    }

    /// Lets the clock run until every construction has ended, and has the
    /// page read the state (its Refresh button).
    async fn wait_constructions(&self) {
        let state = self.state().await;
        let ends =
            state["state"]["buildings"].as_array().unwrap().iter().filter_map(|b| b["upgrade"]["ends_ms"].as_i64());
        let last = ends.max();
        if let Some(end) = last {
            let now = self.s.clock.0.load(std::sync::atomic::Ordering::SeqCst);
            self.s.advance((end - now + 999) / 1000);
            self.b.click("#refresh").await;
            self.settled().await;
        }
    }

    async fn level(&self, building: &str) -> u64 {
        let state = self.state().await;
        state["state"]["buildings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["building"] == building)
            .map(|b| b["level"].as_u64().unwrap())
            .max()
            .unwrap_or(0)
    }

    fn headquarters(&self) -> String {
        self.data["headquarters"].as_str().unwrap().to_string()
    }

    /// Places a building of `kind` through the page: the Build tab, its
    /// button, the ghost's first free spot, "Place here".
    async fn place(&self, kind: &str) {
        let def = self.def("buildings", kind).clone();
        for (b, l) in level_needs(&def["levels"][0]["requires"]) {
            Box::pin(self.reach(&b, l)).await;
        }
        let hq = self.level(&self.headquarters()).await.max(1) as usize;
        let allowed = def["max_count"][(hq - 1).min(def["max_count"].as_array().unwrap().len() - 1)].as_u64().unwrap();
        if allowed == 0 {
            let need = def["max_count"].as_array().unwrap().iter().position(|n| n.as_u64() > Some(0)).unwrap() + 1;
            Box::pin(self.reach(&self.headquarters(), need as u64)).await;
        }
        self.afford(&def["levels"][0]["cost"]).await;
        self.tab("build").await;
        self.press(&format!("Place {}", def["name"].as_str().unwrap())).await;
        self.b.wait_text("#panel .fit", "Fits here").await;
        self.press("Place here").await;
        self.settled().await;
    }

    /// Upgrades the (highest) building of `kind` one level through the page.
    async fn upgrade(&self, kind: &str) {
        let state = self.state().await;
        let b = state["state"]["buildings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["building"] == kind)
            .max_by_key(|b| b["level"].as_u64())
            .unwrap()
            .clone();
        let level = b["level"].as_u64().unwrap();
        let next = self.def("buildings", kind)["levels"][level as usize].clone();
        for (x, l) in level_needs(&next["requires"]) {
            Box::pin(self.reach(&x, l)).await;
        }
        self.afford(&next["cost"]).await;
        self.tab("base").await;
        self.b.run("window.citadel.focusBuilding(arguments[0])", json!([b["id"]])).await;
        self.press(&format!("Upgrade to level {}", level + 1)).await;
        self.settled().await;
    }

    /// Makes room for `housing` more units: builds the first kind of
    /// building whose first level houses that many, unless there is room.
    async fn house(&self, housing: i64) {
        let have = self.state().await["derived"]["housing"].clone();
        if have["total"].as_i64().unwrap() - have["used"].as_i64().unwrap() >= housing {
            return;
        }
        let buildings = self.data["buildings"].as_array().unwrap();
        let home = buildings.iter().find(|b| b["levels"][0]["housing"].as_i64() >= Some(housing));
        let home = home.unwrap_or_else(|| panic!("{}: no building houses {housing} units", self.title));
        Box::pin(self.reach(home["id"].as_str().unwrap(), 1)).await;
    }

    /// Does every custom action that takes arguments through its form: the
    /// number typed is held to its bounds by the page (a value over the
    /// top is never sent), and the server applies the action.
    async fn actions_with_args(&self) -> bool {
        let actions = self.data["actions"].as_object().unwrap().clone();
        let with_args = |m: &Map<String, Value>| -> Vec<String> {
            m.iter()
                .filter(|(_, a)| a["args"].as_object().is_some_and(|m| !m.is_empty()))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let file = support::root().join("titles").join(&self.title).join("title.json");
        let written: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let written = written["actions"].as_object().cloned().unwrap_or_default();
        assert_eq!(
            with_args(&actions),
            with_args(&written),
            "{}: the client is told every action's arguments",
            self.title
        );
        for (id, a) in actions.iter().filter(|(id, _)| with_args(&written).contains(id)) {
            for (b, l) in level_needs(&a["requires"]) {
                self.reach(&b, l).await;
            }
            // Enough of everything for the action's cost, whatever it is.
            let state = self.state().await;
            let stock: Map<String, Value> = state["derived"]["caps"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(r, cap)| (r.clone(), json!(cap.as_i64().unwrap().min(1000))))
                .collect();
            self.afford(&Value::Object(stock)).await;
            self.tab("actions").await;
            let before = self.state().await["state"].clone();
            for (arg, d) in a["args"].as_object().unwrap() {
                if d["type"] != "integer" {
                    continue;
                }
                let input = format!("#arg-{id}-{arg}");
                let over = d["max"].as_i64().unwrap() + 1;
                self.b.type_into(&input, &over.to_string()).await;
                let held = self
                    .b
                    .run("const i = document.querySelector(arguments[0]); return i.validity.rangeOverflow && !i.form.checkValidity()", json!([input]))
                    .await;
                assert_eq!(held, true, "{}: {id}: {over} is over `{arg}`'s max, and the form says so", self.title);
                self.b.type_into(&input, &d["min"].to_string()).await;
            }
            let name = a["name"].as_str().map(str::to_string).unwrap_or_else(|| id.replace('_', " "));
            self.press(&format!("Do: {name}")).await;
            self.settled().await;
            let after = self.state().await["state"].clone();
            let log = self.b.text("#toasts").await;
            assert_ne!(
                before["resources"], after["resources"],
                "{}: {id} was applied; the page says {log}",
                self.title
            );
            self.agree(&format!("did {id}")).await;
        }
        !with_args(&written).is_empty()
    }

    /// The button in the panel whose text starts with `prefix`, once shown.
    async fn button_text(&self, prefix: &str) -> String {
        let script = "const b = [...document.querySelectorAll('#panel button')].find((b) => b.textContent.startsWith(arguments[0]));
             return b ? b.textContent : null;"
            .replace("arguments[0]", &serde_json::to_string(prefix).unwrap());
        self.b.wait_for(&format!("a button `{prefix}...`"), &script).await.as_str().unwrap().to_string()
    }

    fn building(state: &Value, id: &Value) -> Value {
        state["state"]["buildings"].as_array().unwrap().iter().find(|b| b["id"] == *id).unwrap().clone()
    }

    /// The base's own mechanics through the page, on building `kind`: move
    /// it (by keyboard, to the first other spot where it fits), speed up an
    /// upgrade with premium currency (the price the page shows), cancel
    /// another, and collect a producer's output. Adds what it did to `done`.
    async fn base_mechanics(&self, kind: &str, done: &mut BTreeSet<&'static str>) {
        let state = self.state().await;
        let b = state["state"]["buildings"].as_array().unwrap().iter().find(|b| b["building"] == kind).unwrap().clone();
        let id = b["id"].clone();
        self.tab("base").await;
        self.b.run("window.citadel.focusBuilding(arguments[0])", json!([id])).await;
        self.press("Move").await;
        let walk = self
            .b
            .run(
                "const v = window.citadel.view, m = window.citadel.model, g = v.ghost, grid = m.data.grid;
                 for (let y = 0; y < grid.height; y++) for (let x = 0; x < grid.width; x++)
                   if ((x !== g.x || y !== g.y) && m.fits(g.type, x, y, g.moving) === 'ok') return { dx: x - g.x, dy: y - g.y, x, y };
                 return null;",
                json!([]),
            )
            .await;
        let (dx, dy) = (walk["dx"].as_i64().unwrap(), walk["dy"].as_i64().unwrap());
        let arrows = |n: i64, more: char, less: char| -> String {
            std::iter::repeat_n(if n > 0 { more } else { less }, n.unsigned_abs() as usize).collect()
        };
        self.b.keys(&format!("{}{}", arrows(dx, '\u{E014}', '\u{E012}'), arrows(dy, '\u{E015}', '\u{E013}'))).await;
        self.b.wait_text("#panel .fit", "Fits here").await;
        self.press("Move here").await;
        self.settled().await;
        let moved = Self::building(&self.state().await, &id);
        assert_eq!(
            (&moved["x"], &moved["y"]),
            (&walk["x"], &walk["y"]),
            "{}: moved to where the page said",
            self.title
        );
        self.agree("moved a building").await;
        done.insert("move");

        // Speed up an upgrade: the page's price, paid in premium currency.
        let level = self.level(kind).await;
        let next = &self.def("buildings", kind)["levels"][level as usize];
        if next.is_object() && next["speed_up"] != false {
            self.upgrade(kind).await;
            let label = self.button_text("Speed up: ").await;
            let price: i64 = label.split(' ').nth(2).unwrap().parse().unwrap();
            let premium = self.data["premium_resource"].as_str().unwrap().to_string();
            self.afford(&Value::Object(Map::from_iter([(premium.clone(), json!(price))]))).await;
            let before = self.state().await["state"]["resources"][&premium].as_i64().unwrap();
            self.press(&label).await;
            self.settled().await;
            let state = self.state().await;
            assert_eq!(Self::building(&state, &id)["level"], level + 1, "{}: sped up", self.title);
            assert_eq!(
                state["state"]["resources"][&premium],
                before - price,
                "{}: paid what the page said",
                self.title
            );
            self.agree("sped up an upgrade").await;
            done.insert("speed_up");
        }

        // Cancel an upgrade: it stops, the level stays.
        let level = self.level(kind).await;
        if self.def("buildings", kind)["levels"][level as usize].is_object() {
            self.upgrade(kind).await;
            self.press(&self.button_text("Cancel (").await).await;
            self.settled().await;
            let after = Self::building(&self.state().await, &id);
            assert!(after["upgrade"].is_null() && after["level"] == level, "{}: cancelled: {after}", self.title);
            self.agree("cancelled an upgrade").await;
            done.insert("cancel");
        }

        // Collect: an hour later, a producer whose storage has room.
        self.s.advance(3600);
        self.b.click("#refresh").await;
        self.settled().await;
        let state = self.state().await;
        let producing = state["derived"]["producing"].as_object().cloned().unwrap_or_default();
        let stalled = state["derived"]["stalled"].as_array().cloned().unwrap_or_default();
        let room = producing.iter().find(|(id, p)| {
            let r = p["resource"].as_str().unwrap();
            let running = !stalled.iter().any(|s| s.as_u64().is_some_and(|s| id.parse() == Ok(s)));
            running && state["state"]["resources"][r].as_i64() < state["derived"]["caps"][r].as_i64()
        });
        let (producer, p) = room.unwrap_or_else(|| panic!("{}: a producer with room: {producing:?}", self.title));
        let r = p["resource"].as_str().unwrap().to_string();
        let before = state["state"]["resources"][&r].as_i64().unwrap();
        self.tab("base").await;
        self.b.run("window.citadel.focusBuilding(Number(arguments[0]))", json!([producer])).await;
        self.press(&format!("Collect {}", self.name("resources", &r))).await;
        self.settled().await;
        let after = self.state().await["state"]["resources"][&r].as_i64().unwrap();
        assert!(after > before, "{}: collected {r}: {before} -> {after}", self.title);
        self.agree("collected").await;
        done.insert("collect");
    }

    /// The daily reward, and a job that takes only resources and brings
    /// back no units, where the title has them.
    async fn daily_and_jobs(&self, done: &mut BTreeSet<&'static str>) {
        if !self.data["daily"].is_null() {
            self.tab("goals").await;
            self.press("Claim today's reward").await;
            self.settled().await;
            assert_eq!(self.state().await["state"]["daily"]["streak"], 1, "{}: the daily reward claimed", self.title);
            self.b.wait_text("#panel", "Claimed today").await;
            self.agree("claimed the daily reward").await;
            done.insert("daily");
        }
        let jobs = self.data["jobs"].as_array().cloned().unwrap_or_default();
        let simple = jobs.iter().find(|j| {
            let only_resources = |i: &Map<String, Value>| {
                i.iter().all(|(k, v)| k == "resources" || v.as_object().is_none_or(Map::is_empty))
            };
            // (Units a job brings back need housing: not those.)
            let no_units = j["outputs"]["units"].as_object().is_none_or(Map::is_empty)
                && j["outputs"]["loot"].as_array().is_none_or(Vec::is_empty);
            j["requires"].is_null() && j["inputs"].as_object().is_some_and(only_resources) && no_units
        });
        if let Some(j) = simple {
            self.reach(j["building"].as_str().unwrap(), 1).await;
            self.afford(&j["inputs"]["resources"]).await;
            self.tab("jobs").await;
            self.press(&format!("Start {}", j["name"].as_str().unwrap())).await;
            self.settled().await;
            let running = self.state().await["state"]["jobs"].clone();
            let log = self.b.text("#toasts").await;
            assert!(
                running.as_array().unwrap().iter().any(|r| r["job"] == j["id"]),
                "{}: {running}; the page says {log}",
                self.title
            );
            self.b.wait_text("#panel", "% back)").await;
            self.agree("started a job").await;
            done.insert("job");
        }
    }

    /// Buys an offer that gives a usable item (where the title has one
    /// open to a new player), then uses the item from the Store tab.
    async fn use_an_item(&self, done: &mut BTreeSet<&'static str>) {
        let items = self.data["items"].as_array().cloned().unwrap_or_default();
        // (Units an item brings need housing: not those.)
        let usable: Vec<&Value> = items
            .iter()
            .filter(|i| {
                !i["use"].is_null()
                    && i["use"]["units"].as_object().is_none_or(Map::is_empty)
                    && i["use"]["loot"].as_array().is_none_or(Vec::is_empty)
            })
            .collect();
        let state = self.state().await;
        let offers = self.data["offers"].as_array().cloned().unwrap_or_default();
        let found = offers.iter().find_map(|o| {
            let bought = state["state"]["purchases"][o["id"].as_str().unwrap()].as_u64().unwrap_or(0);
            let open =
                o["requires"].is_null() && o["window"].is_null() && o["limit"].as_u64().is_none_or(|l| bought < l);
            let item = usable.iter().find(|i| o["grants"]["items"].get(i["id"].as_str().unwrap()).is_some())?;
            open.then(|| (o.clone(), (*item).clone()))
        });
        let Some((offer, item)) = found else { return };
        let id = item["id"].as_str().unwrap().to_string();
        self.afford(&offer["price"]).await;
        self.tab("store").await;
        self.press(&format!("Buy {}", offer["name"].as_str().unwrap())).await;
        self.settled().await;
        let before = self.state().await["state"]["items"][&id].as_i64().unwrap_or(0);
        assert!(before > 0, "{}: bought {id}", self.title);
        self.press(&format!("Use {}", item["name"].as_str().unwrap())).await;
        self.settled().await;
        let after = self.state().await["state"]["items"][&id].as_i64().unwrap_or(0);
        let log = self.b.text("#toasts").await;
        assert_eq!(after, before - 1, "{}: used one {id}; the page says {log}", self.title);
        self.agree("used an item").await;
        done.insert("use_item");
    }

    /// The Top tab shows what the server's top scores say, and the Map
    /// tab the bases near the player, where the title has them.
    async fn top_and_map(&self, done: &mut BTreeSet<&'static str>) {
        if let Some(stat) = self.data["scores"].as_array().and_then(|s| s.first()).and_then(Value::as_str) {
            self.tab("top").await;
            let (_, r) = self
                .s
                .act(&self.title, &self.token, "top_scores", json!({ "stat": stat, "window": "all", "limit": 20 }))
                .await;
            let rows = r["result"]["rows"].as_array().unwrap().clone();
            let want = match rows.first() {
                Some(x) => format!("{}. {}:", x["rank"], x["player"].as_str().unwrap()),
                None => "Nobody yet.".into(),
            };
            self.b.wait_text("#top-rows", &want).await;
            done.insert("top");
        }
        if !self.data["world"]["map"].is_null() {
            self.tab("map").await;
            self.b.wait_text("#map-bases", "Your base at").await;
            let (_, r) = self.s.act(&self.title, &self.token, "map_near", json!({ "radius": 8, "limit": 30 })).await;
            let at = &r["result"]["at"];
            let shown = self.b.text("#map-bases").await;
            assert!(
                shown.contains(&format!("({}, {})", at["x"], at["y"])),
                "{}: the map shows {shown}; the server {r}",
                self.title
            );
            done.insert("map");
        }
    }

    /// Gets a building of `kind` to level `level`, building it first.
    async fn reach(&self, kind: &str, level: u64) {
        if self.level(kind).await >= level {
            return;
        }
        let exists = self.state().await["state"]["buildings"].as_array().unwrap().iter().any(|b| b["building"] == kind);
        if !exists {
            self.place(kind).await;
            self.wait_constructions().await;
        }
        while self.level(kind).await < level {
            self.upgrade(kind).await;
            self.wait_constructions().await;
        }
    }
}

/// The building a goal such as `level("farm") >= 1` or
/// `count_at_least("farm", 1) >= 1` asks for.
fn goal_building(goal: &str) -> String {
    let after = goal.split_once("level(\"").or_else(|| goal.split_once("count_at_least(\""));
    let (_, rest) = after.unwrap_or_else(|| panic!("a goal about a building: {goal}"));
    rest.split('"').next().unwrap().to_string()
}

/// The title's data as the server serves it to clients, at the version
/// it serves now.
async fn title_data(s: &Server, title: &str) -> Value {
    let titles: Value = reqwest::get(s.url("/v1/titles")).await.unwrap().json().await.unwrap();
    let version =
        titles["titles"].as_array().unwrap().iter().find(|t| t["id"] == title).unwrap()["content_version"].clone();
    reqwest::get(s.url(&format!("/v1/{title}/data/{}", version.as_str().unwrap()))).await.unwrap().json().await.unwrap()
}

/// Plays `title` in the page; adds the mechanics it went through to `done`.
async fn play_title(b: &Browser, s: &Server, title: &str, axe: Option<&str>, done: &mut BTreeSet<&'static str>) {
    let player = format!("new-{title}").replace('_', "-");
    let data = title_data(s, title).await;

    b.go(&s.url(&format!("/play/{title}/"))).await;
    b.type_into("#player", &player).await;
    b.screenshot(SHOTS, &format!("{title}-login")).await;
    if let Some(axe) = axe {
        accessible(b, axe, &format!("{title} login")).await;
    }
    b.click("#login-form button").await;
    b.wait_for("the game to load", "return document.body.dataset.ready === 'true'").await;
    let (token, _) = s.login(title, &player).await;
    let p = Play { b, s, title: title.to_string(), player: player.clone(), token, data };
    p.agree("logged in").await;

    // The first quest asks for a building: place it.
    let quest = p.data["quests"].as_array().unwrap().iter().find(|q| q["requires"].is_null()).unwrap().clone();
    let first = goal_building(quest["goal"].as_str().unwrap());
    let before = p.state().await["state"]["buildings"].as_array().unwrap().len();
    p.place(&first).await;
    let state = p.state().await;
    let placed = state["state"]["buildings"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(state["state"]["buildings"].as_array().unwrap().len(), before + 1, "{title}: one building placed");
    assert_eq!((placed["building"].as_str(), placed["level"].as_u64()), (Some(first.as_str()), Some(0)));
    p.agree("placed a first building").await;
    // Its timer as a bar, which the page fills to the end.
    b.wait_text("#panel", "Under construction").await;
    let bar = b.wait_for("a timer bar", "return document.querySelector('#panel .bar') !== null").await;
    assert_eq!(bar, true);
    b.screenshot(SHOTS, &format!("{title}-building")).await;
    let seconds = p.def("buildings", &first)["levels"][0]["build_seconds"].as_i64().unwrap();
    s.advance(seconds);
    b.click("#refresh").await;
    b.wait_text("#toasts", &format!("{} reached level 1", p.name("buildings", &first))).await;
    p.agree("the construction ended").await;
    assert_eq!(p.level(&first).await, 1);

    // The quest is done: claim it on the Goals tab.
    p.tab("goals").await;
    p.press(&format!("Claim {}", quest["name"].as_str().unwrap())).await;
    p.settled().await;
    let claimed = p.state().await["state"]["quests_claimed"].clone();
    let log = b.text("#toasts").await;
    assert!(claimed.as_array().unwrap().contains(&quest["id"]), "{title}: {claimed}; the page says {log}");
    p.agree("claimed a quest").await;

    // Upgrade it.
    p.upgrade(&first).await;
    let state = p.state().await;
    let up = state["state"]["buildings"].as_array().unwrap().iter().find(|x| x["id"] == placed["id"]).unwrap().clone();
    assert_eq!(up["upgrade"]["to_level"], 2, "{title}: {up}");
    p.agree("started an upgrade").await;
    p.wait_constructions().await;
    assert_eq!(p.level(&first).await, 2);

    // Train a unit (one without a requirement), in its building.
    let unit = p.data["units"].as_array().unwrap().iter().find(|u| u["requires"].is_null()).unwrap().clone();
    p.reach(unit["building"].as_str().unwrap(), 1).await;
    p.house(unit["housing"].as_i64().unwrap()).await;
    p.afford(&unit["cost"]).await;
    p.tab("army").await;
    p.press(&format!("Train 1 {}", unit["name"].as_str().unwrap())).await;
    p.settled().await;
    let training = p.state().await["state"]["training"].clone();
    let log = b.text("#toasts").await;
    assert!(
        training.as_array().unwrap().iter().any(|t| t["unit"] == unit["id"]),
        "{title}: {training}; the page says {log}"
    );
    p.agree("trains a unit").await;
    b.screenshot(SHOTS, &format!("{title}-army")).await;

    // Start a research (one without a requirement), in its building.
    let research =
        p.data["research"].as_array().unwrap().iter().find(|r| r["levels"][0]["requires"].is_null()).unwrap().clone();
    p.reach(research["building"].as_str().unwrap(), 1).await;
    p.afford(&research["levels"][0]["cost"]).await;
    p.tab("research").await;
    p.press(&format!("Research {} level 1", research["name"].as_str().unwrap())).await;
    p.settled().await;
    let running = p.state().await["state"]["research_running"].clone();
    let log = b.text("#toasts").await;
    assert!(
        running.as_array().unwrap().iter().any(|r| r["research"] == research["id"]),
        "{title}: {running}; the page says {log}"
    );
    p.agree("researches").await;
    b.screenshot(SHOTS, &format!("{title}-research")).await;

    // Buy an offer in the store.
    let offer = p.data["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["requires"].is_null() && o["window"].is_null())
        .unwrap()
        .clone();
    p.afford(&offer["price"]).await;
    p.tab("store").await;
    b.screenshot(SHOTS, &format!("{title}-store")).await;
    p.press(&format!("Buy {}", offer["name"].as_str().unwrap())).await;
    p.settled().await;
    assert_eq!(p.state().await["state"]["purchases"][offer["id"].as_str().unwrap()], 1, "{title}");
    p.agree("bought an offer").await;

    // The title's custom actions that take arguments, typed into the page.
    if p.actions_with_args().await {
        done.insert("action_args");
    }
    // Move, speed up, cancel, collect; the daily reward and a job.
    p.base_mechanics(&first, done).await;
    p.daily_and_jobs(done).await;
    p.use_an_item(done).await;
    p.top_and_map(done).await;

    let tabs =
        b.run("return [...document.querySelectorAll('#tabs button')].map((b) => b.id.slice(4))", json!([])).await;
    for (width, height) in [(1280, 1000), (360, 740)] {
        b.resize(width, height).await;
        for tab in tabs.as_array().unwrap() {
            let tab = tab.as_str().unwrap();
            p.tab(tab).await;
            p.settled().await;
            if let Some(axe) = axe {
                accessible(b, axe, &format!("{title} {tab} at {width} px")).await;
            }
        }
        p.tab("base").await;
        b.screenshot(SHOTS, &format!("{title}-{}", if width < 800 { "phone" } else { "desktop" })).await;
    }
    p.tab("goals").await;
    b.screenshot(SHOTS, &format!("{title}-phone-goals")).await;
    b.resize(1280, 1000).await;
    b.click("#logout").await;
    b.find("#login-form").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_plays_every_title() {
    let Some(chromedriver) = support::service(
        "CITADEL_TEST_CHROMEDRIVER",
        "the players' client in a browser",
        "Chromium and ChromeDriver (Debian chromium, chromium-driver)",
    ) else {
        return;
    };
    let titles = support::temp("client-titles");
    copy_dir(&support::root().join("titles"), &titles);
    let data = fresh_data("client");
    let dir = titles.clone();
    // The test reads each player's state over the protocol to check the
    // page against the server, and those reads share the player's request
    // budget with the page's own: on a fast machine the two together pass
    // the default 20 a second. A person clicking never comes near it.
    let tweak = move |c: &mut citadel_server::Config| {
        c.titles = dir;
        c.limits.requests_per_second_max = 1000;
    };
    let s = start(data, tweak.clone()).await;
    let axe = support::service("CITADEL_TEST_AXE", "accessibility checks of the client", "axe-core (axe.min.js)")
        .map(|path| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}")));
    let axe = axe.as_deref();
    let b = Browser::start(&chromedriver).await;

    // The list of games.
    b.go(&s.url("/play/")).await;
    b.wait_for("the list of games", "return document.body.dataset.ready === 'true'").await;
    let list = b.text("#titles").await;
    let mut ids: Vec<String> =
        std::fs::read_dir(&titles).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    ids.sort();
    for id in &ids {
        let name = serde_json::from_str::<Value>(&std::fs::read_to_string(titles.join(id).join("title.json")).unwrap())
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(list.contains(&name), "the list names {name}: {list}");
    }
    b.screenshot(SHOTS, "titles").await;
    if let Some(axe) = axe {
        accessible(&b, axe, "the list of games").await;
        axe_finds_a_nameless_button(&b).await;
    }

    let mut done = BTreeSet::new();
    for id in &ids {
        play_title(&b, &s, id, axe, &mut done).await;
        let errors: Vec<_> = b.console().await.into_iter().filter(|(level, _)| level == "SEVERE").collect();
        assert!(errors.is_empty(), "{id}: the browser console shows errors: {errors:#?}");
    }

    let all = ["action_args", "cancel", "collect", "daily", "job", "map", "move", "speed_up", "top", "use_item"];
    assert_eq!(done, all.into_iter().collect::<BTreeSet<_>>(), "every mechanic played in some title");

    clan_chat_between_two_pages(&b, &s, axe).await;
    let errors: Vec<_> = b.console().await.into_iter().filter(|(level, _)| level == "SEVERE").collect();
    assert!(errors.is_empty(), "clan chat: the browser console shows errors: {errors:#?}");

    keyboard_only_and_a_forced_logout(&b, &s, &titles).await;
    // The refusals the page was shown (logged out, banned, draining) are
    // in the console as failed loads, and nothing else.
    let refused = ["status of 401 (Unauthorized)", "status of 403 (Forbidden)", "status of 503 (Service Unavailable)"];
    let errors: Vec<_> = b
        .console()
        .await
        .into_iter()
        .filter(|(level, text)| level == "SEVERE" && !refused.iter().any(|r| text.contains(r)))
        .collect();
    assert!(errors.is_empty(), "logout, ban, drain: the browser console shows errors: {errors:#?}");
    raid_from_the_page(&b, &s, axe).await;
    let errors: Vec<_> = b.console().await.into_iter().filter(|(level, _)| level == "SEVERE").collect();
    assert!(errors.is_empty(), "raid: the browser console shows errors: {errors:#?}");

    // Last: the server restarts under the page (the console shows the
    // failed connections then, as it should).
    let s = restart_during_play(&b, s, tweak).await;
    drop(b);
    s.stop().await;
}

/// Logs `player` in on the current window's page of `title`.
async fn log_in(b: &Browser, s: &Server, title: &str, player: &str) {
    b.go(&s.url(&format!("/play/{title}/"))).await;
    b.type_into("#player", player).await;
    b.click("#login-form button").await;
    b.wait_for("the game to load", "return document.body.dataset.ready === 'true'").await;
}

/// Two players of one clan, each in a page of their own: a line one of
/// them sends shows in the other's page within a second (pushed).
async fn clan_chat_between_two_pages(b: &Browser, s: &Server, axe: Option<&str>) {
    let title = "ironhold";
    let first = b.window().await;
    log_in(b, s, title, "chief").await;
    let (status, r) = s
        .admin_post(
            "/admin/api/players/ironhold/chief/adjust",
            json!({ "resources": { "gold": 250 }, "reason": "test: a clan" }),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    b.click("#refresh").await;
    b.click("#tab-clan").await;
    b.wait_text("#panel", "Found a clan").await;
    b.type_into("#clan-name", "Night Watch").await;
    b.type_into("#clan-description", "We hold the wall").await;
    b.click("#clan-create button[type=submit]").await;
    b.find("#chat-text").await;
    b.screenshot(SHOTS, "clan-founded").await;

    let second = b.new_window().await;
    b.switch_to(&second).await;
    log_in(b, s, title, "recruit").await;
    b.click("#tab-clan").await;
    b.type_into("#clan-search", "night").await;
    b.click("#clan-find button[type=submit]").await;
    b.wait_text("#clan-results", "Night Watch").await;
    b.click("#clan-results button").await;
    b.find("#chat-text").await;

    // The founder's page learns of the new member by itself, and a line
    // being typed there survives the redraw.
    b.switch_to(&first).await;
    b.type_into("#chat-text", "Welc").await;
    b.wait_text("#panel", "2 of ").await;
    assert_eq!(b.run("return document.getElementById('chat-text').value", json!([])).await, "Welc");
    b.run("document.getElementById('chat-text').value = ''", json!([])).await;
    b.switch_to(&second).await;

    // Each line shows in the other page.
    for (from, to, text) in [(&first, &second, "Wall holds at the north gate"), (&second, &first, "On my way")] {
        b.switch_to(from).await;
        b.type_into("#chat-text", text).await;
        b.click("#chat-send").await;
        b.wait_text("#chat-lines", text).await;
        let sent = std::time::Instant::now();
        b.switch_to(to).await;
        b.wait_text("#chat-lines", text).await;
        let took = sent.elapsed();
        // The server pushes each line to every member's socket.
        assert!(took < std::time::Duration::from_secs(1), "`{text}` took {took:?} to show in the other page");
    }
    b.screenshot(SHOTS, "clan-chat").await;
    if let Some(axe) = axe {
        accessible(b, axe, "clan chat").await;
    }

    // The recruit gives the chief 100 gold with the Give form: it leaves the
    // recruit's base at once and arrives in the chief's page by itself
    // (the inbox push), told in words.
    let gold = "return window.citadel.model.state.resources.gold";
    let chief_gold = b.run(gold, json!([])).await.as_i64().unwrap();
    b.switch_to(&second).await;
    let recruit_gold = b.run(gold, json!([])).await.as_i64().unwrap();
    b.find("#clan-gift").await;
    b.type_into("#gift-amount", "100").await;
    b.click("#gift-send").await;
    b.wait_for("the recruit's gold to leave", &format!("{gold} === {}", recruit_gold - 100)).await;
    b.wait_text("#toasts", "chief received your gift").await;
    b.switch_to(&first).await;
    b.wait_for("the chief's gold to arrive", &format!("{gold} === {}", chief_gold + 100)).await;
    b.wait_text("#toasts", "recruit, of your clan, gave you 100 Gold").await;
    b.switch_to(&second).await;
    b.click("#logout").await;
    b.call(reqwest::Method::DELETE, "/window", None).await;
    b.switch_to(&first).await;
    b.click("#logout").await;
    b.find("#login-form").await;
}

/// The server stops (gracefully, as in a deploy) while the player plays,
/// and comes back on the same address: the page reconnects by itself and
/// the player goes on; actions clicked while it was away are sent once it
/// is back. Counted: every purchase clicked is applied exactly once.
async fn restart_during_play(b: &Browser, s: Server, tweak: impl FnOnce(&mut citadel_server::Config)) -> Server {
    let (title, player, offer) = ("ironhold", "steady", "gold_pile");
    log_in(b, &s, title, player).await;
    let path = format!("/admin/api/players/{title}/{player}/adjust");
    let (status, r) = s.admin_post(&path, json!({ "resources": { "gems": 400 }, "reason": "test: purchases" })).await;
    assert_eq!(status, 200, "{r}");
    b.click("#refresh").await;
    b.click("#tab-store").await;
    // The offer's button, by the name its data gives it; a click only
    // counts if the button is there and enabled.
    let buy = "const b = [...document.querySelectorAll('button')].find((b) => b.textContent === 'Buy Pile of Gold');
               if (!b || b.disabled) throw new Error('no enabled button Buy Pile of Gold'); b.click();";
    b.wait_text("#panel", "Pile of Gold").await;
    for _ in 0..3 {
        assert!(b.run(buy, json!([])).await.is_null(), "clicked");
    }
    b.wait_for("three purchases answered", "return window.citadel.net.waiting === 0").await;

    let (addr, data, clock) = (s.addr, s.data.clone(), s.clock.clone());
    s.stop().await;
    b.wait_for("the page to notice", "return document.getElementById('status').dataset.status !== 'online'").await;
    // Clicked while the server is away: kept, and sent once it is back.
    for _ in 0..2 {
        assert!(b.run(buy, json!([])).await.is_null(), "clicked while away");
    }
    b.screenshot(SHOTS, "reconnecting").await;
    let s = start_on(addr, data, clock, tweak).await;
    b.wait_for("the page to reconnect", "return document.getElementById('status').dataset.status === 'online'").await;
    b.wait_for("the kept purchases answered", "return window.citadel.net.waiting === 0").await;
    for _ in 0..2 {
        assert!(b.run(buy, json!([])).await.is_null(), "clicked after");
    }
    b.wait_for("every purchase answered", "return window.citadel.net.waiting === 0").await;
    let clicked = b.run("return window.citadel.acted", json!([])).await;
    let (token, _) = s.login(title, player).await;
    let (_, r) = s.act(title, &token, "get_state", Value::Null).await;
    assert_eq!(clicked, 7);
    assert_eq!(
        r["result"]["state"]["purchases"][offer], 7,
        "every purchase applied once: {}",
        r["result"]["state"]["purchases"]
    );
    let page = b.run("return window.citadel.model.state.purchases", json!([])).await;
    assert_eq!(page[offer], 7, "the page shows them");
    s
}

/// A raid from the page on an offline player of a title whose server
/// decides raids: the player trains an army, names the defender, sends
/// the army; the page plays the battle log back and shows the outcome the
/// server decided, and both players' states agree with it.
async fn raid_from_the_page(b: &Browser, s: &Server, axe: Option<&str>) {
    let title = "ironhold";
    let (defender, attacker) = ("dora-keep", "raider");
    // The defender played, then left (support ends the session: their
    // file is saved and their lock released).
    let (_, before) = s.login(title, defender).await;
    let (status, r) =
        s.admin_post(&format!("/admin/api/players/{title}/{defender}/logout"), json!({ "reason": "test" })).await;
    assert_eq!(status, 200, "{r}");

    log_in(b, s, title, attacker).await;
    let data = title_data(s, title).await;
    let (token, _) = s.login(title, attacker).await;
    let p = Play { b, s, title: title.to_string(), player: attacker.to_string(), token, data };
    // An army: the first unit without a requirement, ten of them.
    let unit = p.data["units"].as_array().unwrap().iter().find(|u| u["requires"].is_null()).unwrap().clone();
    p.reach(unit["building"].as_str().unwrap(), 1).await;
    p.house(10 * unit["housing"].as_i64().unwrap()).await;
    let cost: serde_json::Map<String, Value> =
        unit["cost"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), json!(v.as_i64().unwrap() * 10))).collect();
    p.afford(&Value::Object(cost)).await;
    p.tab("army").await;
    // (The first "Train 5" button is the first unit's.)
    assert_eq!(p.data["units"][0]["id"], unit["id"]);
    p.press("Train 5").await;
    p.settled().await;
    p.press("Train 5").await;
    p.settled().await;
    s.advance(unit["train_seconds"].as_i64().unwrap() * 10);
    b.click("#refresh").await;
    p.settled().await;
    let sent = p.state().await["state"]["units"][unit["id"].as_str().unwrap()].as_i64().unwrap();
    assert_eq!(sent, 10, "ten trained");

    p.tab("raids").await;
    b.type_into("#raid-name", defender).await;
    b.click("#raid-by-name button[type=submit]").await;
    b.wait_text("#panel", &format!("Raiding {defender}")).await;
    b.screenshot(SHOTS, "raid-plan").await;
    if let Some(axe) = axe {
        accessible(b, axe, "raid plan").await;
    }
    b.click("#raid-plan button[type=submit]").await;
    // The log plays back, entry by entry, then the outcome.
    b.wait_for("the outcome", "const r = document.getElementById('raid-result'); return r && !r.hidden;").await;
    b.screenshot(SHOTS, "raid-outcome").await;
    let shown = b.text("#battle-log").await;
    let page_outcome = b.text("#raid-result").await;

    // The server's record of it: the attacker's state, the defender's.
    let (_, st) = s.act(title, &p.token, "get_state", Value::Null).await;
    let state = &st["result"]["state"];
    let left = state["units"][unit["id"].as_str().unwrap()].as_i64().unwrap_or(0);
    let (_, after) = s.login(title, defender).await;
    let entry = after["state"]["battle_log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(entry["attacker"], attacker, "{entry}");
    let victory = entry["victory"].as_bool().unwrap();
    assert!(
        page_outcome.starts_with(if victory { "Victory!" } else { "Defeat" }),
        "the page shows {page_outcome}; {entry}"
    );
    assert!(page_outcome.contains(&format!("{}% destroyed", entry["destruction_percent"])), "{page_outcome} {entry}");
    assert!(shown.lines().count() >= 3, "the battle log is played back: {shown}");
    let lost = 10 - left;
    if lost > 0 {
        assert!(
            page_outcome.contains(&format!("{lost} {}", unit["name"].as_str().unwrap())),
            "{page_outcome}: {lost} lost"
        );
    }
    for (res, n) in entry["loot"].as_object().unwrap() {
        let had = before["state"]["resources"][res].as_i64().unwrap();
        let has = after["state"]["resources"][res].as_i64().unwrap();
        assert!(had - has >= n.as_i64().unwrap(), "{res}: the defender lost the loot ({had} -> {has}, {n})");
        let name = p.def("resources", res)["name"].as_str().unwrap().to_string();
        let shown = n == 0 || page_outcome.contains(&format!("{n} {name}"));
        assert!(shown, "the page shows the loot ({entry}): {page_outcome}");
    }
    b.click("#logout").await;
    b.find("#login-form").await;
}

/// The core of the game by keyboard alone: a tab chosen with Enter, a
/// building picked with Enter, moved on the grid with the arrow keys and
/// placed with Enter. Then support ends the session: the page says so in
/// words and asks for a login.
async fn keyboard_only_and_a_forced_logout(b: &Browser, s: &Server, titles: &std::path::Path) {
    let (title, player) = ("ironhold", "keys-only");
    log_in(b, s, title, player).await;
    let data = title_data(s, title).await;
    let quest = data["quests"].as_array().unwrap().iter().find(|q| q["requires"].is_null()).unwrap().clone();
    let kind = goal_building(quest["goal"].as_str().unwrap());
    let name = data["buildings"].as_array().unwrap().iter().find(|x| x["id"] == kind.as_str()).unwrap()["name"].clone();
    b.run("document.getElementById('tab-build').focus()", json!([])).await;
    b.keys("\u{E007}").await;
    b.wait_text("#panel", &format!("Place {}", name.as_str().unwrap())).await;
    let focused = b
        .run(
            "const x = [...document.querySelectorAll('#panel button')].find((b) => b.textContent === arguments[0]);
             x.focus(); return document.activeElement === x;",
            json!([format!("Place {}", name.as_str().unwrap())]),
        )
        .await;
    assert_eq!(focused, true);
    b.keys("\u{E007}").await;
    let ghost = b.wait_for("the footprint ghost", "return window.citadel.view.ghost").await;
    let focus = b.run("return document.activeElement.id", json!([])).await;
    assert_eq!(focus, "base", "placing moves the focus to the grid");
    // Two to the right, one down, as long as it still fits; then Enter.
    b.keys("\u{E014}\u{E014}\u{E015}").await;
    let moved = b.run("return window.citadel.view.ghost", json!([])).await;
    assert_eq!(
        (moved["x"].as_i64(), moved["y"].as_i64()),
        (Some(ghost["x"].as_i64().unwrap() + 2), Some(ghost["y"].as_i64().unwrap() + 1))
    );
    let fits = b
        .run(
            "const g = window.citadel.view.ghost; return window.citadel.model.fits(g.type, g.x, g.y, g.moving)",
            json!([]),
        )
        .await;
    assert_eq!(fits, "ok", "the spot two right and one down of the first free one is free too");
    b.keys("\u{E007}").await;
    b.wait_for("the building placed", "return window.citadel.net.waiting === 0 && !window.citadel.view.ghost").await;
    let (token, _) = s.login(title, player).await;
    let (_, st) = s.act(title, &token, "get_state", Value::Null).await;
    let placed = st["result"]["state"]["buildings"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((&placed["building"], &placed["x"], &placed["y"]), (&json!(kind), &moved["x"], &moved["y"]), "{placed}");

    // A new version of the title (a designer renamed a building and
    // redrew it) reaches the open page with its next state, no reload.
    let before = b.run("return window.citadel.model.data.content_version", json!([])).await;
    let path = titles.join(title).join("buildings.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let renamed = format!("\"name\": {name}").replace(name.as_str().unwrap(), "Renamed Hall");
    std::fs::write(&path, text.replacen(&format!("\"name\": {name}"), &renamed, 1)).unwrap();
    let started = std::time::Instant::now();
    loop {
        let now = title_data(s, title).await;
        if now["content_version"] != before {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the server never reloaded {title}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.click("#refresh").await;
    b.click("#tab-build").await;
    b.wait_text("#panel", "Renamed Hall").await;
    let after = b.run("return window.citadel.model.data.content_version", json!([])).await;
    assert_ne!(after, before, "the page holds the new version's data");
    let icons =
        b.run("return [...document.querySelectorAll('#panel img')].map((i) => i.getAttribute('src'))", json!([])).await;
    let after = after.as_str().unwrap();
    assert!(
        icons.as_array().unwrap().iter().all(|u| u.as_str().unwrap().contains(after)),
        "art of the new version: {icons}"
    );
    assert_eq!(b.run("return performance.getEntriesByType('navigation').length", json!([])).await, 1, "no reload");

    // Support ends the player's sessions: the page says so, in words.
    let (status, r) =
        s.admin_post(&format!("/admin/api/players/{title}/{player}/logout"), json!({ "reason": "test" })).await;
    assert_eq!(status, 200, "{r}");
    b.wait_text("#login-error", "Your session was ended").await;
    b.find("#login-form").await;

    // Banned while playing: the page says the account is suspended, why
    // and until when, and the login form says it again. (Tokens issued
    // after a forced logout work: a second later.)
    s.advance(1);
    log_in(b, s, title, player).await;
    b.wait_for("the page online", "return document.getElementById('status').dataset.status === 'online'").await;
    let (status, r) = s
        .admin_post(&format!("/admin/api/players/{title}/{player}/ban"), json!({ "minutes": 60, "reason": "botting" }))
        .await;
    assert_eq!(status, 200, "{r}");
    let said = b.wait_text("#login-error", "This account is suspended").await;
    assert!(said.contains("botting") && said.contains("until"), "the reason and the end: {said}");
    b.type_into("#player", player).await;
    b.click("#login-form button").await;
    b.wait_for(
        "the login refused in words",
        "return document.getElementById('login-error').textContent.includes('botting') && !document.body.dataset.ready",
    )
    .await;
    let said = b.text("#login-error").await;
    assert!(said.starts_with("This account is suspended"), "{said}");
    let (status, r) =
        s.admin_post(&format!("/admin/api/players/{title}/{player}/unban"), json!({ "reason": "appeal" })).await;
    assert_eq!(status, 200, "{r}");

    // A draining server takes no new player: the login says so in words;
    // once it takes players again, the login works.
    let (status, r) = s.admin_post("/admin/api/drain", json!({ "on": true })).await;
    assert_eq!(status, 200, "{r}");
    b.go(&s.url(&format!("/play/{title}/"))).await;
    b.type_into("#player", "late-comer").await;
    b.click("#login-form button").await;
    let said = b.wait_text("#login-error", "closing for maintenance").await;
    assert!(said.contains("Try again"), "{said}");
    let (status, r) = s.admin_post("/admin/api/drain", json!({ "on": false })).await;
    assert_eq!(status, 200, "{r}");
    b.click("#login-form button").await;
    b.wait_for("the game to load", "return document.body.dataset.ready === 'true'").await;
    b.click("#logout").await;
    b.find("#login-form").await;
}
