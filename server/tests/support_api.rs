//! Customer support through the admin API, as support staff rely on it:
//! grants and revokes reach the player's next request (online or not),
//! every refusal changes nothing, bans and forced logouts end sessions and
//! refuse old tokens, a restore puts a snapshot back and can be undone,
//! broadcasts reach connected players, a drained server takes no new
//! players, every change is in the audit log, and nothing is reachable
//! without admin credentials.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::server::*;
use tokio_tungstenite::tungstenite::Message;

async fn gold(s: &Server, token: &str) -> i64 {
    let (status, r) = s.act("mini", token, "get_state", json!({})).await;
    assert_eq!(status, 200, "{r}");
    r["result"]["state"]["resources"]["gold"].as_i64().unwrap_or_else(|| panic!("{r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_revokes_reach_the_player_and_are_audited() {
    let s = start(fresh_data("support-grant"), |_| {}).await;
    let (tok, _) = s.login("mini", "ann").await;
    let g0 = gold(&s, &tok).await;

    let (status, r) = s
        .admin_post("/admin/api/players/mini/ann/adjust", json!({ "resources": { "gold": 500 }, "reason": "outage" }))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["amounts"]["gold"], g0 + 500);
    assert_eq!(gold(&s, &tok).await, g0 + 500, "the player's next request sees the grant");

    // Refusals: each says why, and nothing changes.
    let (status, r) = s
        .admin_post("/admin/api/players/mini/ann/adjust", json!({ "resources": { "gold": -1_000_000 }, "reason": "x" }))
        .await;
    assert_eq!((status, r["error"]["code"].as_str()), (422, Some("invalid_argument")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains(&format!("the player has {}", g0 + 500)), "{r}");
    let (status, r) = s
        .admin_post(
            "/admin/api/players/mini/ann/adjust",
            json!({ "resources": { "gld": 5, "gold": 5 }, "reason": "x" }),
        )
        .await;
    assert_eq!((status, r["error"]["code"].as_str()), (422, Some("unknown_id")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("did you mean `gold`?"), "{r}");
    let (status, _) = s.admin_post("/admin/api/players/mini/ann/adjust", json!({ "resources": { "gold": 5 } })).await;
    assert_eq!(status, 400, "a change needs a reason");
    let (status, _) =
        s.admin_post("/admin/api/players/mini/ann/adjust", json!({ "resources": { "gold": "lots" } })).await;
    assert_eq!(status, 400, "amounts are numbers");
    let (status, r) =
        s.admin_post("/admin/api/players/mini/zed/adjust", json!({ "resources": { "gold": 5 }, "reason": "x" })).await;
    assert_eq!((status, r["error"]["code"].as_str()), (404, Some("unknown_player")), "{r}");
    assert!(!s.data.join("players/mini/zed.json").exists(), "no file is made for a player who never played");
    let (status, _) =
        s.admin_post("/admin/api/players/nope/ann/adjust", json!({ "resources": { "gold": 5 }, "reason": "x" })).await;
    assert_eq!(status, 404);
    assert_eq!(gold(&s, &tok).await, g0 + 500, "refusals changed nothing");

    let log = s.admin_json("/admin/api/audit?title=mini&player=ann").await;
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the change made is audited: {log}");
    assert_eq!(entries[0]["action"], "adjust");
    assert_eq!(entries[0]["admin"], "token");
    assert_eq!(entries[0]["reason"], "outage");
    assert_eq!(entries[0]["before"]["gold"], g0);
    assert_eq!(entries[0]["after"]["gold"], g0 + 500);

    let view = s.admin_json("/admin/api/players/mini/ann").await;
    assert_eq!(view["online_here"], true);
    let ops: Vec<&str> =
        view["state"]["history"].as_array().unwrap().iter().map(|h| h["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["login", "admin_adjust"], "the history shows what changed the player");
    let found = s.admin_json("/admin/api/players?q=an").await;
    assert_eq!(found["players"][0]["player"], "ann");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_to_an_offline_player_is_saved_to_their_file() {
    let s = start(fresh_data("support-offline"), |_| {}).await;
    let (tok, _) = s.login("mini", "bob").await;
    let g0 = gold(&s, &tok).await;
    let data = s.stop().await;
    let s = start(data, |_| {}).await;
    let (status, r) = s
        .admin_post("/admin/api/players/mini/bob/adjust", json!({ "resources": { "gold": 7 }, "reason": "gift" }))
        .await;
    assert_eq!(status, 200, "{r}");
    // The session started for the change saves and ends at once.
    let mut saved_gold = 0;
    for _ in 0..100 {
        saved_gold = saved(&s.data, "mini", "bob")["resources"]["gold"].as_i64().unwrap();
        if saved_gold == g0 + 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(saved_gold, g0 + 7);
    let mut view = Value::Null;
    for _ in 0..100 {
        view = s.admin_json("/admin/api/players/mini/bob").await;
        if view["online_on"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(view["online_here"], false, "{view}");
    assert_eq!(view["online_on"], Value::Null, "the player's lock was released");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_and_forced_logouts_end_sessions_and_refuse_old_tokens() {
    let s = start(fresh_data("support-ban"), |_| {}).await;
    let (tok, _) = s.login("mini", "ann").await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/mini/ws?token={tok}", s.addr)).await.unwrap();
    ws.next().await.unwrap().unwrap(); // welcome

    let (status, r) = s.admin_post("/admin/api/players/mini/ann/logout", json!({})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["closed_connections"], 1);
    let push: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("a push first, not {other:?}"),
    };
    assert_eq!(push["event"], "logged_out", "{push}");
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4001),
        other => panic!("then a close, not {other:?}"),
    }
    let (status, r) = s.act("mini", &tok, "get_state", json!({})).await;
    assert_eq!((status, r["error"]["code"].as_str()), (401, Some("logged_out")), "{r}");
    // Tokens issued later work: a forced logout is not a ban.
    s.advance(1);
    let (tok2, _) = s.login("mini", "ann").await;
    gold(&s, &tok2).await;

    let (status, r) =
        s.admin_post("/admin/api/players/mini/ann/ban", json!({ "minutes": 60, "reason": "botting" })).await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = s.act("mini", &tok2, "get_state", json!({})).await;
    assert_eq!((status, r["error"]["code"].as_str()), (403, Some("banned")), "{r}");
    assert_eq!(r["error"]["details"]["reason"], "botting");
    let login =
        reqwest::Client::new().post(s.url("/v1/mini/login")).json(&json!({ "player": "ann" })).send().await.unwrap();
    assert_eq!(login.status(), 403, "a banned player cannot log in");
    let (status, _) = s.admin_post("/admin/api/players/mini/ann/ban", json!({ "minutes": 5 })).await;
    assert_eq!(status, 400, "a ban needs a reason");

    s.advance(61 * 60);
    let (tok3, _) = s.login("mini", "ann").await;
    gold(&s, &tok3).await;
    s.admin_post("/admin/api/players/mini/ann/ban", json!({ "reason": "again" })).await;
    assert_eq!(s.admin_json("/admin/api/players/mini/ann").await["banned"], true, "a ban without minutes has no end");
    let login =
        reqwest::Client::new().post(s.url("/v1/mini/login")).json(&json!({ "player": "ann" })).send().await.unwrap();
    let r: Value = login.json().await.unwrap();
    assert_eq!(r["error"]["code"], "banned", "{r}");
    assert_eq!(r["error"]["details"], json!({ "until_ms": null, "reason": "again" }), "a ban with no end says so");
    let (status, r) = s.admin_post("/admin/api/players/mini/ann/unban", json!({ "reason": "appeal" })).await;
    assert_eq!(status, 200, "{r}");
    s.advance(1);
    s.login("mini", "ann").await;

    let log = s.admin_json("/admin/api/audit?title=mini&player=ann").await;
    let actions: Vec<&str> = log["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["unban", "ban", "ban", "logout"], "newest first");
    assert_eq!(log["entries"][0]["before"]["reason"], "again");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_puts_back_a_snapshot_and_can_be_undone() {
    let s = start(fresh_data("support-restore"), |c| c.save_interval_seconds = 1).await;
    let (tok, _) = s.login("mini", "ann").await;
    let g0 = gold(&s, &tok).await;
    // A new player is not snapshotted; an hour on, the next save is.
    s.advance(3601);
    assert_eq!(gold(&s, &tok).await, g0);
    let mut view = Value::Null;
    for _ in 0..100 {
        view = s.admin_json("/admin/api/players/mini/ann").await;
        if !view["snapshots"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = view["snapshots"][0]["id"].as_str().unwrap_or_else(|| panic!("a snapshot: {view}")).to_string();
    s.admin_post("/admin/api/players/mini/ann/adjust", json!({ "resources": { "gold": 1000 }, "reason": "test" }))
        .await;
    assert_eq!(gold(&s, &tok).await, g0 + 1000);

    let (status, r) =
        s.admin_post("/admin/api/players/mini/ann/restore", json!({ "snapshot": first, "reason": "rollback" })).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(gold(&s, &tok).await, g0, "the snapshot's state is back");
    // The state replaced became a snapshot: restoring it undoes the restore.
    let view = s.admin_json("/admin/api/players/mini/ann").await;
    let newest = view["snapshots"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(newest, first);
    let (status, r) =
        s.admin_post("/admin/api/players/mini/ann/restore", json!({ "snapshot": newest, "reason": "undo" })).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(gold(&s, &tok).await, g0 + 1000);
    let ops: Vec<&str> =
        view["state"]["history"].as_array().unwrap().iter().map(|h| h["op"].as_str().unwrap()).collect();
    assert!(ops.ends_with(&["admin_adjust", "admin_restore"]), "{ops:?}");

    for (bad, code) in [("../../players/mini/ann", 400), ("0000000000000-0000000000", 404)] {
        let (status, r) =
            s.admin_post("/admin/api/players/mini/ann/restore", json!({ "snapshot": bad, "reason": "x" })).await;
        assert_eq!(status, code, "{bad}: {r}");
    }
    assert_eq!(gold(&s, &tok).await, g0 + 1000, "refused restores changed nothing");
    // The file saved at shutdown holds the restored state.
    let data = s.stop().await;
    assert_eq!(saved(&data, "mini", "ann")["resources"]["gold"], g0 + 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_players_and_a_drained_server_takes_no_new_ones() {
    let s = start(fresh_data("support-drain"), |_| {}).await;
    let (tok, _) = s.login("mini", "ann").await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/mini/ws?token={tok}", s.addr)).await.unwrap();
    ws.next().await.unwrap().unwrap(); // welcome
    let (status, r) = s.admin_post("/admin/api/broadcast", json!({ "text": "Maintenance at noon" })).await;
    assert_eq!((status, r["connections"].as_u64()), (200, Some(1)), "{r}");
    let push: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(push, json!({ "event": "notice", "text": "Maintenance at noon" }));
    let (status, _) = s.admin_post("/admin/api/broadcast", json!({ "text": "x".repeat(2000) })).await;
    assert_eq!(status, 400, "notices are short");

    let (status, r) = s.admin_post("/admin/api/drain", json!({ "on": true })).await;
    assert_eq!(status, 200, "{r}");
    let login = reqwest::Client::new()
        .post(s.url("/v1/mini/login"))
        .json(&json!({ "player": "newcomer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 503);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["error"]["code"], "draining");
    gold(&s, &tok).await; // players already here go on
    s.admin_post("/admin/api/drain", json!({ "on": false })).await;
    s.login("mini", "newcomer").await;
    let actions: Vec<String> = s.admin_json("/admin/api/audit").await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["drain", "drain", "broadcast"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_admin_is_reachable_without_credentials() {
    let hash = citadel_server::admin::auth::PasswordHash::make("a long test password").unwrap();
    let s = start(fresh_data("support-auth"), |c| {
        c.admin_users = vec![citadel_server::config::AdminUser { name: "ops".into(), password_hash: hash }]
    })
    .await;
    let (tok, _) = s.login("mini", "ann").await;
    let g0 = gold(&s, &tok).await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let gets = [
        "/admin/api/titles",
        "/admin/api/servers",
        "/admin/api/metrics",
        "/admin/api/inflight",
        "/admin/api/slow",
        "/admin/api/audit",
        "/admin/api/players?q=ann",
        "/admin/api/players/mini/ann",
        "/admin/console.js",
        "/metrics",
    ];
    for path in gets {
        for auth in [None, Some("Bearer wrong-token-of-some-length")] {
            let mut rb = plain.get(s.url(path));
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            assert_eq!(rb.send().await.unwrap().status(), 401, "GET {path} with {auth:?}");
        }
    }
    let posts = ["adjust", "ban", "unban", "logout", "restore"].map(|a| format!("/admin/api/players/mini/ann/{a}"));
    for path in
        posts.iter().map(String::as_str).chain(["/admin/api/broadcast", "/admin/api/drain", "/admin/api/titles/reload"])
    {
        let r =
            plain.post(s.url(path)).json(&json!({ "resources": { "gold": 1 }, "reason": "x" })).send().await.unwrap();
        assert_eq!(r.status(), 401, "POST {path}");
    }
    assert_eq!(gold(&s, &tok).await, g0, "nothing changed");
    let page = plain.get(s.url("/admin/")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/admin/login");

    // A console login: wrong password refused, right one gives a cookie.
    let form = |pw: &str| [("name", "ops".to_string()), ("password", pw.to_string())];
    let r = plain.post(s.url("/admin/login")).form(&form("guess")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let r = plain.post(s.url("/admin/login")).form(&form("a long test password")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    let r = plain.get(s.url("/admin/api/players/mini/ann")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let adjust = s.url("/admin/api/players/mini/ann/adjust");
    let body = json!({ "resources": { "gold": 3 }, "reason": "console" });
    let r = plain.post(&adjust).header("cookie", &cookie).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "a cookie alone does not change anything (cross-site forms)");
    let r =
        plain.post(&adjust).header("cookie", &cookie).header("x-citadel-admin", "1").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gold(&s, &tok).await, g0 + 3);
    assert_eq!(s.admin_json("/admin/api/audit").await["entries"][0]["admin"], "ops", "the audit names the user");
    let r = plain.post(s.url("/admin/logout")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let r = plain.get(s.url("/admin/api/players/mini/ann")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 401, "logged out");
    s.stop().await;
}
