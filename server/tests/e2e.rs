//! End-to-end tests of the game server through real sockets on 127.0.0.1:
//! login, actions over HTTP and WebSocket, errors, reconnects, persistence
//! across restarts, graceful shutdown. Time is an injected clock. Player
//! files live on the filesystem, except in the `s3_*` tests at the end,
//! which run the same flows with player files in S3.

mod support;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use citadel_server::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::server::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn login_build_upgrade_and_timers_over_http() {
    let s = start(fresh_data("http"), |_| {}).await;
    let (tok, login) = s.login("fort", "alice").await;
    assert_eq!(login["state"]["resources"]["gold"], 750);
    let (st, r) = s.act("fort", &tok, "build", json!({ "building": "lumber_mill", "x": 10, "y": 10 })).await;
    assert_eq!((st, &r["ok"], &r["id"]), (200, &json!(true), &json!(7)));
    let (_, r) = s.act("fort", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["buildings"][3]["level"], 0, "still under construction");
    s.advance(10);
    let (_, r) = s.act("fort", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["events"][0]["event"], "building_completed");
    assert_eq!(r["result"]["state"]["buildings"][3]["level"], 1);
    let (st, r) = s.act("fort", &tok, "upgrade", json!({ "id": 4 })).await;
    assert_eq!((st, &r["ok"]), (200, &json!(true)), "{r}");
    let (st, r) = s.act("fort", &tok, "upgrade", json!({ "id": 4 })).await;
    assert_eq!((st, &r["error"]["code"]), (200, &json!("busy")), "a rules refusal is a processed request");
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_their_documented_codes() {
    let s = start(fresh_data("errors"), |_| {}).await;
    let (tok, _) = s.login("fort", "bob").await;
    let tampered = format!("{tok}x");
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (Some(&tok), "{not json".into(), 400, "bad_request"),
        (Some(&tok), json!({ "id": 1, "action": "fly" }).to_string(), 400, "unknown_action"),
        (
            Some(&tok),
            json!({ "id": 1, "action": "build", "args": { "building": 5 } }).to_string(),
            400,
            "invalid_argument",
        ),
        (Some(&tok), json!({ "id": 1, "action": "build", "args": [1] }).to_string(), 400, "invalid_argument"),
        (Some(&tok), json!({ "id": 1, "action": "ping", "extra": 1 }).to_string(), 400, "bad_request"),
        (
            Some(&tok),
            format!("{{\"id\":1,\"action\":\"ping\",\"args\":{{\"x\":\"{}\"}}}}", "a".repeat(20_000)),
            413,
            "message_too_large",
        ),
        (None, json!({ "id": 1, "action": "ping" }).to_string(), 401, "unauthorized"),
        (Some("forged.token"), json!({ "id": 1, "action": "ping" }).to_string(), 401, "unauthorized"),
        (Some(&tampered), json!({ "id": 1, "action": "ping" }).to_string(), 401, "unauthorized"),
    ];
    for (token, body, status, code) in cases {
        let (st, r) = s.post("fort", token, body.clone()).await;
        assert_eq!((st, r["error"]["code"].as_str().unwrap_or("")), (status, code), "{}", &body[..body.len().min(80)]);
        assert_eq!(r["ok"], false);
    }
    let (st, r) = s.post("nowhere", Some(&tok), json!({ "action": "ping" }).to_string()).await;
    assert_eq!((st, r["error"]["code"].as_str().unwrap()), (404, "unknown_title"));
    // A token for one title is refused by another.
    let (st, r) = s.post("mini", Some(&tok), json!({ "action": "ping" }).to_string()).await;
    assert_eq!((st, r["error"]["code"].as_str().unwrap()), (403, "wrong_title"));
    let r =
        reqwest::Client::new().post(s.url("/v1/fort/login")).json(&json!({ "player": "../etc" })).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Nothing above changed the player.
    let (_, r) = s.act("fort", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["resources"]["gold"], 750);
    // Tokens expire.
    s.advance(25 * 3600);
    let (st, r) = s.post("fort", Some(&tok), json!({ "action": "ping" }).to_string()).await;
    assert_eq!((st, r["error"]["code"].as_str().unwrap()), (401, "token_expired"));
    s.stop().await;
}

async fn ws(
    s: &Server,
    title: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut w, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/{title}/ws?token={token}", s.addr)).await.unwrap();
    let hello = next_json(&mut w).await;
    assert_eq!(hello["event"], "welcome");
    w
}

async fn next_json(
    w: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(f))) => return json!({ "closed": f.map(|f| u16::from(f.code)) }),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_uses_the_same_dispatcher_and_survives_bad_messages() {
    let s = start(fresh_data("ws"), |_| {}).await;
    let (tok, _) = s.login("fort", "carol").await;
    let mut w = ws(&s, "fort", &tok).await;
    w.send(Message::Text(
        json!({ "id": 1, "action": "build", "args": { "building": "lumber_mill", "x": 10, "y": 10 } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let r = next_json(&mut w).await;
    assert_eq!((&r["id"], &r["ok"]), (&json!(1), &json!(true)));
    for (bad, code) in [
        ("{oops".to_string(), "bad_request"),
        (json!({ "id": 2, "action": "fly" }).to_string(), "unknown_action"),
        (
            format!("{{\"id\":3,\"action\":\"ping\",\"args\":{{\"x\":\"{}\"}}}}", "a".repeat(20_000)),
            "message_too_large",
        ),
    ] {
        w.send(Message::Text(bad.into())).await.unwrap();
        assert_eq!(next_json(&mut w).await["error"]["code"], code);
    }
    w.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(next_json(&mut w).await["error"]["code"], "bad_request");
    // Still usable, and the HTTP path sees the same session.
    w.send(Message::Text(
        json!({ "id": 4, "action": "build", "args": { "building": "lumber_mill", "x": 10, "y": 10 } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut w).await["error"]["code"], "limit_reached");
    let (_, r) = s.act("fort", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["buildings"].as_array().unwrap().len(), 4);
    // A frame far over the limit (the transport's hard limit) is answered,
    // then the connection is closed with 1009 (message too big).
    w.send(Message::Text("x".repeat(200_000).into())).await.unwrap();
    let r = next_json(&mut w).await;
    assert_eq!((&r["id"], r["error"]["code"].as_str()), (&Value::Null, Some("message_too_large")), "{r}");
    let end = tokio::time::timeout(Duration::from_secs(5), w.next()).await.unwrap();
    match end {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1009, "{f:?}"),
        other => panic!("a close frame with 1009: {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn reconnect_resumes_the_session_and_restart_keeps_the_player() {
    let data = fresh_data("resume");
    let s = start(data.clone(), |_| {}).await;
    let (tok, _) = s.login("fort", "dave").await;
    let mut w = ws(&s, "fort", &tok).await;
    w.send(Message::Text(
        json!({ "id": 1, "action": "build", "args": { "building": "vault", "x": 4, "y": 4 } }).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut w).await["ok"], true);
    drop(w);
    let mut w = ws(&s, "fort", &tok).await;
    w.send(Message::Text(json!({ "id": 2, "action": "get_state" }).to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut w).await["result"]["state"]["buildings"][3]["building"], "vault");
    drop(w);
    let clock = s.clock.clone();
    s.stop().await;
    assert_eq!(saved(&data, "fort", "dave")["buildings"][3]["building"], "vault");
    // A new server process on the same data: the player is as they were.
    let s = start_at(data.clone(), clock, |_| {}).await;
    let (_, login) = s.login("fort", "dave").await;
    assert_eq!(login["state"]["buildings"][3]["building"], "vault");
    assert_eq!(login["state"]["resources"]["wood"], 450);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_pushes_an_event_closes_sockets_with_1001_and_saves() {
    let data = fresh_data("shutdown");
    let s = start(data.clone(), |_| {}).await;
    let (tok, _) = s.login("mini", "erin").await;
    let mut w = ws(&s, "mini", &tok).await;
    w.send(Message::Text(
        json!({ "id": 1, "action": "build", "args": { "building": "mine", "x": 1, "y": 1 } }).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut w).await["ok"], true);
    let stop = tokio::spawn(s.stop());
    assert_eq!(next_json(&mut w).await["event"], "server_shutdown");
    assert_eq!(next_json(&mut w).await["closed"], 1001);
    let data = stop.await.unwrap();
    assert_eq!(saved(&data, "mini", "erin")["buildings"][1]["building"], "mine");
    // Every player is saved, so the journal kept nothing.
    let left: Vec<_> = std::fs::read_dir(data.join("server/journal")).unwrap().collect();
    assert!(left.is_empty(), "a clean shutdown leaves no journal segment: {left:?}");
}

#[tokio::test]
async fn one_players_requests_apply_one_at_a_time() {
    let s = Arc::new(start(fresh_data("order"), |c| c.limits.requests_per_second_max = 1000).await);
    let (tok, _) = s.login("mini", "fay").await;
    // 40 concurrent requests, each spending 10 gold and granting 1 gem:
    // every one must apply exactly once, with no lost update.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (s, tok) = (s.clone(), tok.clone());
        tasks.push(tokio::spawn(async move { s.act("mini", &tok, "custom", json!({ "name": "tithe" })).await }));
    }
    for t in tasks {
        let (st, r) = t.await.unwrap();
        assert_eq!((st, &r["ok"]), (200, &json!(true)), "{r}");
    }
    let (_, r) = s.act("mini", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["resources"]["gold"], 100);
    assert_eq!(r["result"]["state"]["resources"]["gems"], 50);
}

#[tokio::test]
async fn floods_are_refused_with_rate_limited() {
    let s = start(fresh_data("flood"), |c| c.limits.requests_per_second_max = 5).await;
    let (tok, _) = s.login("mini", "gus").await;
    let mut codes = Vec::new();
    for _ in 0..30 {
        let (st, r) = s.act("mini", &tok, "ping", Value::Null).await;
        codes.push((st, r["error"]["code"].as_str().unwrap_or("ok").to_string()));
    }
    assert!(codes.iter().filter(|(_, c)| c == "ok").count() >= 10, "the burst allowance is served: {codes:?}");
    assert!(codes.iter().any(|(st, c)| *st == 429 && c == "rate_limited"), "{codes:?}");
    s.stop().await;
}

#[tokio::test]
async fn idle_sessions_are_saved_and_closed() {
    let data = fresh_data("idle");
    let s = start(data.clone(), |c| c.idle_timeout_seconds = 1).await;
    let (tok, _) = s.login("mini", "hal").await;
    s.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    // Saved when the session goes idle: wait for the file to show it.
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while saved(&data, "mini", "hal")["buildings"][1]["building"] != "mine" {
        assert!(std::time::Instant::now() < give_up, "never saved when the session went idle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The player comes back: a new session loads what was saved.
    let (_, r) = s.act("mini", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["buildings"][1]["building"], "mine");
    s.stop().await;
}

#[tokio::test]
async fn a_player_live_on_one_server_is_refused_by_another_until_released_or_expired() {
    let data = fresh_data("locks");
    let a = start(data.clone(), |_| {}).await;
    let b = start(data.clone(), second_server(&data)).await;
    let (tok, _) = a.login("mini", "ivy").await;
    let r =
        reqwest::Client::new().post(b.url("/v1/mini/login")).json(&json!({ "player": "ivy" })).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!((status.as_u16(), v["error"]["code"].as_str()), (409, Some("player_locked")), "{v}");
    // The same token on the other server: the session there cannot start either.
    let (st, r) = b.act("mini", &tok, "ping", Value::Null).await;
    assert_eq!((st, r["error"]["code"].as_str().unwrap()), (409, "player_locked"));
    // A logs out (here: shuts down, saving and releasing); B may now log in.
    a.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    a.stop().await;
    let (_, login) = b.login("mini", "ivy").await;
    assert_eq!(login["state"]["buildings"][1]["building"], "mine", "B sees what A saved");
    b.stop().await;
}

#[tokio::test]
async fn an_expired_lock_can_be_taken_over() {
    let data = fresh_data("expiry");
    let a = start(data.clone(), |c| c.lock_ttl_seconds = 60).await;
    let (_, _) = a.login("mini", "jay").await;
    // B's clock runs 2 minutes ahead: A's lease (60 s) looks expired to it,
    // as it would after A died without renewing.
    let clock_b = Arc::new(ManualClock(AtomicI64::new(START + 120_000)));
    let b = start_at(data.clone(), clock_b, second_server(&data)).await;
    let (_, login) = b.login("mini", "jay").await;
    assert_eq!(login["player"], "jay");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_server_whose_lock_was_taken_over_cannot_overwrite_the_player() {
    let data = fresh_data("stale");
    // A saves rarely, so its changes are still in memory when B takes over.
    let a = start(data.clone(), |c| {
        c.lock_ttl_seconds = 60;
        c.save_interval_seconds = 3600;
    })
    .await;
    let (tok_a, _) = a.login("mini", "kim").await;
    a.act("mini", &tok_a, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    // B's clock is past A's lease: B takes the player over, changes and saves them.
    let b = start_at(data.clone(), Arc::new(ManualClock(AtomicI64::new(START + 120_000))), second_server(&data)).await;
    let (tok_b, _) = b.login("mini", "kim").await;
    let (_, r) = b.act("mini", &tok_b, "build", json!({ "building": "barracks", "x": 5, "y": 1 })).await;
    assert_eq!(r["ok"], true, "{r}");
    b.stop().await;
    let after_b = saved(&data, "mini", "kim");
    // A now shuts down and tries to save its stale copy: the conditional
    // write is refused and B's file stays.
    a.stop().await;
    assert_eq!(saved(&data, "mini", "kim"), after_b, "the stale writer must not overwrite the newer file");
    assert!(after_b["buildings"].as_array().unwrap().iter().any(|b| b["building"] == "barracks"));
}

#[tokio::test]
async fn requests_beyond_the_players_queue_get_session_queue_full() {
    let s = Arc::new(
        start(fresh_data("queue"), |c| {
            c.limits.session_queue_max = 1;
            c.limits.requests_per_second_max = 100_000;
        })
        .await,
    );
    let (tok, _) = s.login("mini", "quinn").await;
    // 100 requests at once for one player whose queue holds one: the ones
    // that find it full are refused at once; every other one applies.
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (s, tok) = (s.clone(), tok.clone());
        tasks.push(tokio::spawn(async move { s.act("mini", &tok, "custom", json!({ "name": "tithe" })).await }));
    }
    let (mut applied, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (200, r) if r["ok"] == true => applied += 1,
            (429, r) if r["error"]["code"] == "session_queue_full" => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(refused > 0, "the queue limit was reached ({applied} applied)");
    // Refused requests changed nothing: gems went up by exactly the applied ones.
    let (_, r) = s.act("mini", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["resources"]["gems"], 10 + applied, "{applied} applied, {refused} refused");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let s = start(fresh_data("conns"), |c| c.limits.connections_max = 2).await;
    let (tok, _) = s.login("mini", "rae").await;
    let ws = |tok: String| {
        let url = format!("ws://{}/v1/mini/ws?token={tok}", s.addr);
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };
    let first = ws(tok.clone()).await;
    let _second = ws(tok.clone()).await;
    // A third connection is not served while two are open...
    let third = reqwest::Client::new().get(s.url("/health")).send();
    let third = tokio::spawn(third);
    // The server runs on this test's single-threaded runtime. With the clock
    // paused, a sleep ends only when every task (the server's included) has
    // nothing left to do, so the third was left waiting, not merely slow.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::time::resume();
    assert!(!third.is_finished(), "served beyond connections_max");
    // ...and is served as soon as one closes.
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(5), third).await.expect("served once a connection closed");
    assert_eq!(r.unwrap().unwrap().status(), 200);
}

/// Opens a connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// True once the server has closed `stream` (end of file or a reset),
/// reading whatever it answered first into `got`.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, got: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return false,
        }
    }
}

/// Slow clients cannot lock others out: half-sent requests fill the whole
/// connection limit, yet a new client is served once the header deadline
/// closes them; one address cannot hold more than its share; a half-sent
/// body is answered `request_timeout`; an idle keep-alive connection is
/// closed. Every such close is counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_cannot_lock_other_clients_out() {
    use tokio::io::AsyncWriteExt;
    let s = start(fresh_data("slow"), |c| {
        c.limits.connections_max = 50;
        c.limits.connections_per_address_max = 50;
        c.limits.request_header_seconds_max = 1;
        c.limits.request_body_seconds_max = 1;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut c = connect_from("127.0.0.2", s.addr).await;
        c.write_all(b"GET /health HTTP/1.1\r\nHost: citadel\r\n").await.unwrap();
        slow.push(c);
    }
    // Every slot is held; a new client waits, and is served once the
    // header deadline (1 s) has closed the slow ones. Without the deadline
    // it would wait as long as they hold on (the whole test).
    let r = tokio::time::timeout(Duration::from_secs(5), reqwest::get(s.url("/health")))
        .await
        .expect("a new client is served within the header deadline")
        .unwrap();
    assert_eq!(r.status(), 200);
    for c in &mut slow {
        assert!(closed_by_server(c, &mut Vec::new()).await, "a half-sent request was closed");
    }

    // One address holds at most its share: the extra connection is closed at once.
    let s2 = start(fresh_data("per-address"), |c| c.limits.connections_per_address_max = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.3", s2.addr).await);
    }
    let mut extra = connect_from("127.0.0.3", s2.addr).await;
    assert!(closed_by_server(&mut extra, &mut Vec::new()).await, "over the per-address limit");
    let r = reqwest::get(s2.url("/health")).await.unwrap();
    assert_eq!(r.status(), 200, "other addresses are still served");
    let metrics = s2.admin_get("/metrics").await;
    assert!(metrics.contains("citadel_connections_closed_total{reason=\"per_address_limit\"} 1"), "{metrics}");

    // A body that stops half-way is answered and closed.
    let mut c = connect_from("127.0.0.4", s.addr).await;
    c.write_all(b"POST /v1/mini/login HTTP/1.1\r\nHost: citadel\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"player\"")
        .await
        .unwrap();
    let mut answer = Vec::new();
    assert!(closed_by_server(&mut c, &mut answer).await, "a half-sent body was closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");

    // A keep-alive connection that sends nothing after its answer is closed.
    let mut c = connect_from("127.0.0.5", s.addr).await;
    c.write_all(b"GET /health HTTP/1.1\r\nHost: citadel\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    assert!(closed_by_server(&mut c, &mut answer).await, "an idle keep-alive connection was closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));

    let metrics = s.admin_get("/metrics").await;
    let count = |reason: &str| -> u64 {
        let key = format!("citadel_connections_closed_total{{reason=\"{reason}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("{key} in {metrics}"));
        line[key.len()..].parse().unwrap()
    };
    assert_eq!(count("header_timeout"), 50, "{metrics}");
    assert_eq!(count("body_timeout"), 1, "{metrics}");
    assert!(count("idle_timeout") >= 1, "{metrics}");
}

#[tokio::test]
async fn logins_beyond_sessions_max_get_server_full() {
    let s = start(fresh_data("full"), |c| c.limits.sessions_max = 2).await;
    s.login("mini", "p1").await;
    s.login("mini", "p2").await;
    let r = reqwest::Client::new().post(s.url("/v1/mini/login")).json(&json!({ "player": "p3" })).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (503, Some("server_full")), "{v}");
    // Players already in keep playing.
    s.login("mini", "p1").await;
    s.stop().await;
}

#[tokio::test]
async fn the_load_generator_drives_a_server_and_reports() {
    let s = start(fresh_data("bench"), |_| {}).await;
    let titles = titles_dir();
    // A mix: players alternate between the two titles, each moving its
    // own first building (every move valid: no errors).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_citadel-bench"))
        .args([
            "--addr",
            &s.addr.to_string(),
            "--titles",
            titles.to_str().unwrap(),
            "--title",
            "fort,mini",
            "--players",
            "20",
            "--rate",
            "5",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--json",
            "--with-echo",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["game"]["connect_failures"], 0, "{r}");
    assert_eq!(r["game"]["errors"], 0, "{r}");
    assert!(r["game"]["answered"].as_u64().unwrap() >= 20, "{r}");
    assert_eq!(r["game"]["answered"], r["game"]["sent"], "every request answered: {r}");
    assert!(r["game"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    // 20 players at 5/s for one measured second after one of warm-up.
    let sent = r["game"]["sent"].as_u64().unwrap();
    assert!((60..=140).contains(&sent), "only the measured second's sends count: {r}");
    assert_eq!(r["game"]["max_latency_ms_by_second"].as_array().unwrap().len(), 2, "warm-up and measured seconds: {r}");
    assert!(
        r["echo"]["answered"].as_u64().unwrap() >= 20 && r["game_to_echo_throughput_ratio"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    s.stop().await;
}

/// Two config tweaks, one after the other.
fn both(f: impl FnOnce(&mut Config), g: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    move |c| {
        f(c);
        g(c);
    }
}

/// Login, actions over HTTP and WebSocket, errors, restart, lock refusal
/// and a refused stale writer, with player files in S3.
async fn s3_flows(cfg: citadel_store::s3::S3Config) {
    let data = fresh_data(&support::unique("s3"));
    let with = |cfg: &citadel_store::s3::S3Config| {
        let cfg = cfg.clone();
        move |c: &mut Config| c.s3 = Some(cfg)
    };
    let store = citadel_store::s3::S3BlobStore::new(&cfg, |_| None).unwrap();
    let in_s3 = |player: &'static str| {
        let store = store.clone();
        async move {
            use citadel_store::blob::BlobStore;
            let (bytes, _) = store.get(&format!("players/mini/{player}.json")).await.unwrap().expect("saved in S3");
            support::decoded(&bytes)
        }
    };

    let s = start(data.clone(), with(&cfg)).await;
    let (tok, _) = s.login("mini", "sam").await;
    let (_, r) = s.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    assert_eq!(r["ok"], true, "{r}");
    let mut w = ws(&s, "mini", &tok).await;
    w.send(Message::Text(json!({ "id": 1, "action": "fly" }).to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut w).await["error"]["code"], "unknown_action");
    w.send(Message::Text(json!({ "id": 2, "action": "get_state" }).to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut w).await["result"]["state"]["buildings"].as_array().unwrap().len(), 2);
    drop(w);
    s.stop().await;
    assert!(!data.join("players").exists(), "nothing on the local disk");
    assert_eq!(in_s3("sam").await["buildings"][1]["building"], "mine");
    let s = start(data.clone(), with(&cfg)).await;
    let (_, login) = s.login("mini", "sam").await;
    assert_eq!(login["state"]["buildings"][1]["building"], "mine", "a restart loads the player from S3");

    // A second server sharing the world store is refused while A holds
    // the player, then takes over once A's lease looks expired to it; A's
    // later save of its stale copy is refused by S3.
    s.stop().await;
    let a = start(data.clone(), both(with(&cfg), |c: &mut Config| c.save_interval_seconds = 3600)).await;
    let (tok_a, _) = a.login("mini", "kim").await;
    let b_now = start(data.clone(), both(with(&cfg), second_server(&data))).await;
    let r = reqwest::Client::new().post(b_now.url("/v1/mini/login")).json(&json!({ "player": "kim" })).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 409, "player_locked while A holds kim");
    b_now.stop().await;
    a.act("mini", &tok_a, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    let clock_b = Arc::new(ManualClock(AtomicI64::new(START + 120_000)));
    let b = start_at(data.clone(), clock_b, both(with(&cfg), second_server(&data))).await;
    let (tok_b, _) = b.login("mini", "kim").await;
    let (_, r) = b.act("mini", &tok_b, "build", json!({ "building": "barracks", "x": 5, "y": 1 })).await;
    assert_eq!(r["ok"], true, "{r}");
    b.stop().await;
    let after_b = in_s3("kim").await;
    a.stop().await;
    assert_eq!(in_s3("kim").await, after_b, "the stale writer must not overwrite the newer file in S3");
    assert!(after_b["buildings"].as_array().unwrap().iter().any(|b| b["building"] == "barracks"));
}

#[tokio::test]
async fn s3_on_s3s_fs_serves_players_end_to_end() {
    s3_flows(support::s3s_fs().await).await;
}

#[tokio::test]
async fn s3_on_moto_serves_players_end_to_end() {
    let Some(cfg) = support::moto("end-to-end on moto").await else { return };
    s3_flows(cfg).await;
}

/// Protocol details as docs/protocol.md states them: ids come back exactly
/// as sent; numbers outside their documented range are refused with the
/// range, not clamped; `invalid_argument` is 400 whoever finds it; a text
/// frame that is not UTF-8 is answered before the socket closes (1007).
#[tokio::test]
async fn ids_ranges_and_broken_frames_are_answered_as_documented() {
    let s = start(fresh_data("details"), |_| {}).await;
    let (tok, _) = s.login("mini", "pedant").await;
    for id in ["123456789012345678901234567890", "1e2", "100.0", "-0", r#"{"k":[1,2.50]}"#] {
        let body = format!(r#"{{"id": {id}, "action": "ping"}}"#);
        let r = reqwest::Client::new()
            .post(s.url("/v1/mini/request"))
            .header("authorization", format!("Bearer {tok}"))
            .body(body)
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        assert!(text.starts_with(&format!(r#"{{"id":{id},"ok":true"#)), "{id} echoed as sent: {text}");
    }
    for (action, args, arg, min, max) in [
        ("map_near", json!({ "radius": 33 }), "radius", 0, 32),
        ("map_near", json!({ "radius": -5 }), "radius", 0, 32),
        ("map_near", json!({ "limit": 0 }), "limit", 1, 100),
        ("top_scores", json!({ "stat": "trophies", "offset": 10_001 }), "offset", 0, 10_000),
        ("top_scores", json!({ "stat": "trophies", "limit": 101 }), "limit", 1, 100),
        ("my_rank", json!({ "stat": "trophies", "around": 11 }), "around", 0, 10),
        ("search_players", json!({ "prefix": "a", "limit": 500 }), "limit", 1, 100),
        ("clan_chat", json!({ "limit": 1000 }), "limit", 1, 100),
    ] {
        let (status, r) = s.act("mini", &tok, action, args.clone()).await;
        assert_eq!((status, r["error"]["code"].as_str()), (400, Some("invalid_argument")), "{action} {args}: {r}");
        assert_eq!(r["error"]["details"], json!({ "arg": arg, "min": min, "max": max }), "{action} {args}: {r}");
    }
    // The rules' own invalid_argument has the same status: collecting from
    // a building that produces nothing.
    let (status, r) = s.act("mini", &tok, "collect", json!({ "id": 1 })).await;
    assert_eq!((status, r["error"]["code"].as_str()), (400, Some("invalid_argument")), "{r}");

    let url = format!("ws://{}/v1/mini/ws?token={tok}", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("welcome"));
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::Data, coding::OpCode, Frame};
    let broken = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(broken)).await.unwrap();
    let answer: Value = serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(
        (answer["id"].clone(), answer["error"]["code"].as_str()),
        (Value::Null, Some("bad_request")),
        "{answer}"
    );
    match ws.next().await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1007, "{f:?}"),
        other => panic!("a close frame with 1007: {other:?}"),
    }
}

/// The odds of every loot table are public, as stated in the data; a
/// login answers what clients show beside the state (`derived`).
#[tokio::test]
async fn loot_odds_are_public_and_a_login_carries_derived_figures() {
    let s = start(fresh_data("loot"), |_| {}).await;
    let v: Value = reqwest::get(format!("http://{}/v1/fort/loot", s.addr)).await.unwrap().json().await.unwrap();
    let crate_ = &v["loot"][0];
    assert_eq!(crate_["id"], "supply_crate", "{v}");
    let percents: Vec<f64> =
        crate_["entries"].as_array().unwrap().iter().map(|e| e["percent"].as_f64().unwrap()).collect();
    assert_eq!(percents, vec![70.0, 25.0, 5.0]);
    assert_eq!(crate_["entries"][2]["grants"]["units"]["knight"], 1);
    let r = reqwest::get(format!("http://{}/v1/nowhere/loot", s.addr)).await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_title");
    let (_, login) = s.login("fort", "alice").await;
    assert_eq!(login["derived"]["caps"]["gold"], 2000, "{login}");
    assert_eq!(login["derived"]["builders"], json!({ "used": 0, "total": 2 }));
    // The starting gold mine (building 3, level 1) makes 1,500 gold an hour.
    assert_eq!(login["derived"]["producing"]["3"], json!({ "resource": "gold", "per_hour": 1500, "capacity": 1200 }));
    assert_eq!(login["derived"]["rates"]["gold"], 1500);
    // Nothing to claim yet; the daily chest can be opened, a donation needs
    // headquarters level 2.
    assert_eq!(login["ready"], json!({ "quests": [], "actions": ["daily_chest"] }), "{}", login["ready"]);
    let (tok, _) = s.login("fort", "alice").await;
    s.act("fort", &tok, "build", json!({ "building": "lumber_mill", "x": 4, "y": 4 })).await;
    s.advance(10);
    let (_, r) = s.act("fort", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["ready"]["quests"], json!(["first_lumber"]), "{}", r["result"]["ready"]);
    s.stop().await;
}

/// A title's images are served under its content version, cached for good,
/// with nosniff and a sandboxing policy; another version's URL, a path
/// that is no image and an unknown title are refused with their codes.
#[tokio::test]
async fn images_are_served_under_the_content_version_and_cached_for_good() {
    let s = start(fresh_data("assets"), |_| {}).await;
    let base = format!("http://{}", s.addr);
    let titles: Value = reqwest::get(format!("{base}/v1/titles")).await.unwrap().json().await.unwrap();
    let fort = titles["titles"].as_array().unwrap().iter().find(|t| t["id"] == "fort").unwrap().clone();
    let version = fort["content_version"].as_str().unwrap();
    let r = reqwest::get(format!("{base}/v1/fort/assets/{version}/resources/gold.svg")).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "image/svg+xml");
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-security-policy"].to_str().unwrap().contains("sandbox"));
    assert!(r.text().await.unwrap().starts_with("<svg"));
    for (url, status, code) in [
        (format!("{base}/v1/fort/assets/0000000000000000/resources/gold.svg"), 404, "unknown_asset"),
        (format!("{base}/v1/fort/assets/{version}/resources/gems.svg"), 404, "unknown_asset"),
        (format!("{base}/v1/nowhere/assets/{version}/resources/gold.svg"), 404, "unknown_title"),
    ] {
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status(), status, "{url}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{url}");
    }
    s.stop().await;
}

/// A title's data for clients, under its content version: the tables with
/// requirements in words, no script functions, cached for good; an unknown
/// version or title is refused with its code.
#[tokio::test]
async fn a_titles_data_is_served_to_clients_under_its_content_version() {
    let s = start(fresh_data("title-data"), |_| {}).await;
    let base = format!("http://{}", s.addr);
    let titles: Value = reqwest::get(format!("{base}/v1/titles")).await.unwrap().json().await.unwrap();
    let fort = titles["titles"].as_array().unwrap().iter().find(|t| t["id"] == "fort").unwrap().clone();
    let version = fort["content_version"].as_str().unwrap();
    assert!(fort["description"].as_str().is_some_and(|d| !d.is_empty()), "the list names what each title is: {fort}");
    let r = reqwest::get(format!("{base}/v1/fort/data/{version}")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    let data: Value = r.json().await.unwrap();
    assert_eq!(data["content_version"], version);
    let buildings = data["buildings"].as_array().unwrap();
    let with_text: Vec<&str> = buildings
        .iter()
        .flat_map(|b| b["levels"].as_array().unwrap().iter())
        .filter_map(|l| l["requires_text"].as_str())
        .collect();
    assert!(with_text.iter().any(|t| t.starts_with("needs ") && t.contains("level")), "{with_text:?}");
    assert!(!data.to_string().contains("\"hook\""), "a script function leaked: {data}");
    for (url, code) in [
        (format!("{base}/v1/fort/data/0000000000000000"), "unknown_version"),
        (format!("{base}/v1/nowhere/data/{version}"), "unknown_title"),
    ] {
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status(), 404, "{url}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{url}");
    }
    s.stop().await;
}

/// A request carrying an idempotency `key` is applied once: sent again
/// (a client resending after a lost answer) it is answered from the
/// record of the first, over HTTP or WebSocket, and after a restart.
#[tokio::test]
async fn a_request_sent_again_with_its_key_is_applied_once() {
    let data = fresh_data("keys");
    let s = start(data.clone(), |_| {}).await;
    let (tok, login) = s.login("fort", "kim").await;
    let wood = login["state"]["resources"]["wood"].as_i64().unwrap();
    let keyed = |key: &str, action: &str, args: Value| json!({ "id": key, "key": key, "action": action, "args": args });
    let build = keyed("b-1", "build", json!({ "building": "vault", "x": 4, "y": 4 }));
    let (st, first) = s.post("fort", Some(&tok), build.to_string()).await;
    assert_eq!((st, &first["ok"]), (200, &json!(true)), "{first}");
    let (st, again) = s.post("fort", Some(&tok), build.to_string()).await;
    assert_eq!((st, &again["ok"], &again["id"]), (200, &json!(true), &json!("b-1")), "{again}");
    assert_eq!(again["result"]["repeated"]["key"], "b-1", "{again}");
    let (_, r) = s.act("fort", &tok, "get_state", Value::Null).await;
    let state = &r["result"]["state"];
    assert_eq!(state["buildings"].as_array().unwrap().len(), 4, "one vault: {state}");
    let paid = wood - state["resources"]["wood"].as_i64().unwrap();
    assert!(paid > 0, "the vault was paid for");

    // A refusal is remembered too: sent again, the same code, nothing applied.
    let clash = keyed("b-2", "build", json!({ "building": "lumber_mill", "x": 4, "y": 4 }));
    let (_, r) = s.post("fort", Some(&tok), clash.to_string()).await;
    assert_eq!(r["error"]["code"], "collision", "{r}");
    let (_, r) = s.post("fort", Some(&tok), clash.to_string()).await;
    assert_eq!(r["error"]["code"], "collision", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("already answered"), "{r}");

    // Keys are checked like any argument.
    for bad in [json!(""), json!("has space"), json!("x".repeat(65)), json!(7)] {
        let body = json!({ "id": 1, "key": bad, "action": "get_state" });
        let (st, r) = s.post("fort", Some(&tok), body.to_string()).await;
        assert!(
            st == 400 && ["invalid_argument", "bad_request"].contains(&r["error"]["code"].as_str().unwrap()),
            "{r}"
        );
    }

    // The same over WebSocket, and after a restart (the keys are saved
    // with the player).
    let mut w = ws(&s, "fort", &tok).await;
    w.send(Message::Text(build.to_string().into())).await.unwrap();
    // (The state a `get_state` answers is numbered before that read.)
    assert_eq!(next_json(&mut w).await["result"]["repeated"]["seq"], state["seq"], "over WebSocket");
    drop(w);
    let clock = s.clock.clone();
    s.stop().await;
    assert_eq!(saved(&data, "fort", "kim")["answered"][0]["key"], "b-1");
    let s = start_at(data.clone(), clock, |_| {}).await;
    let (tok, _) = s.login("fort", "kim").await;
    let (_, r) = s.post("fort", Some(&tok), build.to_string()).await;
    assert_eq!(r["result"]["repeated"]["key"], "b-1", "{r}");
    let (_, r) = s.act("fort", &tok, "get_state", Value::Null).await;
    assert_eq!(r["result"]["state"]["buildings"].as_array().unwrap().len(), 4);
    assert_eq!(wood - r["result"]["state"]["resources"]["wood"].as_i64().unwrap(), paid, "paid once");
    s.stop().await;
}
