//! The gateway (docs/gateway.md): guest and OpenID Connect logins,
//! linking, game tokens the game servers accept, login limits, payments.
//! The gateway and game servers run in this process on one injected clock,
//! sharing a data folder (the SQLite world store); a test issuer serves
//! its keys on loopback.

mod support;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use citadel_store::world::{Accounts, Inbox, PaymentState, Payments, Servers, SqliteWorld};
use serde_json::{json, Value};
use support::server::{
    fresh_data, gateway_config, login_with_token, start_at, start_gateway, Gateway, ManualClock, Server, START,
};

const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "citadel-fort";

/// A test OpenID Connect issuer: an ES256 and an RS256 key, its JWKS on
/// loopback, and how often it was fetched.
struct Issuer {
    ec: EcdsaKeyPair,
    rsa: aws_lc_rs::rsa::KeyPair,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    url: String,
}

fn ec_jwk(kp: &EcdsaKeyPair, kid: &str) -> Value {
    let point = kp.public_key().as_ref();
    json!({ "kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
            "kid": kid, "alg": "ES256", "use": "sig" })
}

impl Issuer {
    async fn start() -> Issuer {
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public = rsa.public_key();
        let rsa_jwk = json!({ "kty": "RSA", "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
            "e": B64.encode(public.exponent().big_endian_without_leading_zero()), "kid": "rsa1", "alg": "RS256", "use": "sig" });
        let jwks = Arc::new(Mutex::new(json!({ "keys": [ec_jwk(&ec, "ec1"), rsa_jwk] })));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (j, f) = (jwks.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (j, f) = (j.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    axum::Json(j.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Issuer { ec, rsa, jwks, fetches, url }
    }

    fn config(&self) -> citadel_server::config::OidcIssuer {
        citadel_server::config::OidcIssuer {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: self.url.clone(),
        }
    }

    /// Claims valid at `now_ms` for `sub`.
    fn claims(sub: &str, now_ms: i64) -> Value {
        let now = now_ms / 1000;
        json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now - 5, "exp": now + 600 })
    }

    fn es256(&self, kid: &str, claims: &Value) -> String {
        jwt(&json!({ "alg": "ES256", "typ": "JWT", "kid": kid }), claims, |m| {
            self.ec.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
        })
    }

    fn rs256(&self, kid: &str, claims: &Value) -> String {
        jwt(&json!({ "alg": "RS256", "typ": "JWT", "kid": kid }), claims, |m| {
            let mut sig = vec![0u8; self.rsa.public_modulus_len()];
            self.rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig).unwrap();
            sig
        })
    }
}

fn jwt(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let sig = sign(message.as_bytes());
    format!("{message}.{}", B64.encode(sig))
}

/// A game server (development logins off: only game tokens) and a gateway
/// on one clock, sharing `data`.
async fn cluster_of_one(
    name: &str,
    tweak: impl FnOnce(&mut citadel_server::Config),
) -> (Server, Gateway, Arc<ManualClock>, std::path::PathBuf) {
    let data = fresh_data(name);
    let clock = Arc::new(ManualClock(AtomicI64::new(START)));
    let server = start_at(data.clone(), clock.clone(), |c| c.dev_login = Some(false)).await;
    wait_for_servers(&data, 1).await;
    let mut config = gateway_config(&data);
    tweak(&mut config);
    let gateway = start_gateway(config, clock.clone()).await;
    (server, gateway, clock, data)
}

/// Waits until `n` game servers' first heartbeats are in the world store
/// (written as each starts), so the gateway sees them; their statuses.
async fn wait_for_servers(data: &std::path::Path, n: usize) -> Vec<citadel_store::world::ServerStatus> {
    let w = SqliteWorld::open(&data.join("world.sqlite3")).unwrap();
    for _ in 0..400 {
        let servers = w.servers(0, i64::MAX).await.unwrap();
        if servers.len() >= n {
            return servers;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} game servers reported themselves");
}

/// A data folder and a configuration file for `citadel serve` processes
/// (bare names off) and `citadel gateway` processes (limits far above the
/// test's logins, then `gateway`, more of its section).
fn fleet_config(name: &str, gateway: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let data = fresh_data(name);
    std::fs::create_dir_all(&data).unwrap();
    let titles = support::server::titles_dir();
    let config = data.join("citadel.toml");
    let text = format!(
        "data_dir = {:?}\ntitles = {:?}\ndev_login = false\n\n[gateway]\n\
         logins_per_address_per_minute = 100000\nlogins_per_account_per_minute = 1000\n{gateway}",
        data.display().to_string(),
        titles.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    (data, titles, config)
}

/// `citadel gateway --config config` on a free port: the process and its URL.
fn gateway_process(config: &std::path::Path) -> (support::Killed, String) {
    let args: [&std::ffi::OsStr; 4] =
        ["--config".as_ref(), config.as_os_str(), "--listen".as_ref(), "127.0.0.1:0".as_ref()];
    let (process, addr) = support::citadel_command("gateway", &args, "the gateway listens");
    (process, format!("http://{addr}"))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn guest(g: &Gateway) -> Value {
    let (status, v) = g.post("/v1/fort/login/guest", json!({})).await;
    assert_eq!(status, 200, "a new guest: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guest_plays_comes_back_as_the_same_player_then_links_an_identity_for_a_new_device() {
    let issuer = Issuer::start().await;
    let (server, g, clock, _data) = cluster_of_one("gw-guest", |c| c.gateway.oidc = vec![issuer.config()]).await;
    // A new device: an account, a device secret, a server and a game token.
    let first = guest(&g).await;
    assert_eq!(first["new"], true);
    let (device, secret) = (first["device"].as_str().unwrap(), first["secret"].as_str().unwrap());
    assert!(secret.len() >= 43, "a 256-bit secret: {first}");
    assert_eq!(first["server"]["address"], server.url(""), "the one server: {first}");
    let player = first["player"].as_str().unwrap().to_string();
    // The game server takes the game token, and no bare name.
    let (status, v) = login_with_token(&server.url(""), "fort", first["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["player"], player.as_str());
    let session = v["token"].as_str().unwrap().to_string();
    let buildings_at_start = v["state"]["buildings"].as_array().unwrap().len();
    let r = reqwest::Client::new()
        .post(server.url("/v1/fort/login"))
        .json(&json!({ "player": player }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "development logins are off on this server");
    assert_eq!(code(&r.json().await.unwrap()), "dev_login_disabled");
    let (status, v) = login_with_token(&server.url(""), "other", first["token"].as_str().unwrap()).await;
    assert_eq!((status, code(&v)), (404, "unknown_title"), "{v}");
    // Plays: builds a lumber mill.
    let (status, v) =
        server.act("fort", &session, "build", json!({ "building": "lumber_mill", "x": 10, "y": 10 })).await;
    assert_eq!((status, v["ok"].clone()), (200, json!(true)), "{v}");
    let (_, v) = server.act("fort", &session, "get_state", Value::Null).await;
    let played = v["result"]["state"]["buildings"].clone();
    assert_eq!(played.as_array().unwrap().len(), buildings_at_start + 1, "the mill is there");
    // Quits, comes back with the device secret: the same account and player.
    let again = g.post("/v1/fort/login/guest", json!({ "device": device, "secret": secret })).await;
    assert_eq!(again.0, 200, "{}", again.1);
    assert_eq!(again.1["player"], player.as_str());
    assert_eq!(again.1["account"], first["account"]);
    assert!(again.1.get("secret").is_none(), "the secret is given once: {}", again.1);
    let (status, v) = login_with_token(&server.url(""), "fort", again.1["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"]["buildings"], played, "the same player's state");
    // A wrong secret and an unknown device get the same answer.
    let wrong = g.post("/v1/fort/login/guest", json!({ "device": device, "secret": "not it" })).await;
    let unknown = g.post("/v1/fort/login/guest", json!({ "device": "d-unknown", "secret": secret })).await;
    assert_eq!((wrong.0, code(&wrong.1)), (401, "bad_credentials"));
    assert_eq!(wrong, unknown, "nothing tells an unknown device from a wrong secret");
    // Links an OpenID Connect identity, then logs in with it on a new device.
    let now = clock.0.load(Ordering::SeqCst);
    let id_token = issuer.es256("ec1", &Issuer::claims("ann@id", now));
    let (status, v) =
        g.post("/v1/fort/link", json!({ "device": device, "secret": secret, "id_token": id_token })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["linked"]["subject"], "ann@id");
    let (status, v) = g
        .post("/v1/fort/login/oidc", json!({ "id_token": issuer.rs256("rsa1", &Issuer::claims("ann@id", now)) }))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["account"].clone(), v["player"].clone()), (first["account"].clone(), json!(player)));
    let (status, v) = login_with_token(&server.url(""), "fort", v["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"]["buildings"], played, "the same progress on the new device");
    // The identity is taken: another guest cannot link it.
    let other = guest(&g).await;
    let (status, v) = g
        .post(
            "/v1/fort/link",
            json!({ "device": other["device"], "secret": other["secret"], "id_token": issuer.es256("ec1", &Issuer::claims("ann@id", now)) }),
        )
        .await;
    assert_eq!((status, code(&v)), (409, "identity_taken"), "{v}");
    // A first OIDC login makes an account of its own.
    let (status, v) =
        g.post("/v1/fort/login/oidc", json!({ "id_token": issuer.es256("ec1", &Issuer::claims("bo@id", now)) })).await;
    assert_eq!(status, 200, "{v}");
    assert_ne!(v["account"], first["account"]);
    g.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flawed_id_tokens_are_refused_each_with_its_code_and_change_nothing() {
    let issuer = Issuer::start().await;
    let (server, g, clock, data) = cluster_of_one("gw-oidc", |c| c.gateway.oidc = vec![issuer.config()]).await;
    let now = clock.0.load(Ordering::SeqCst);
    let login = |token: String| {
        let g = &g;
        async move { g.post("/v1/fort/login/oidc", json!({ "id_token": token })).await }
    };
    let (status, v) = login(issuer.es256("ec1", &Issuer::claims("good", now))).await;
    assert_eq!(status, 200, "a valid ES256 token: {v}");
    let (status, v) = login(issuer.rs256("rsa1", &Issuer::claims("good-rsa", now))).await;
    assert_eq!(status, 200, "a valid RS256 token: {v}");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "the keys are fetched once and cached");
    let mallory = Issuer::claims("mallory", now);
    let stranger = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let forged = jwt(&json!({ "alg": "ES256", "kid": "ec1" }), &mallory, |m| {
        stranger.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
    });
    let mut wrong_aud = mallory.clone();
    wrong_aud["aud"] = json!("another-game");
    let mut expired = mallory.clone();
    expired["exp"] = json!(now / 1000 - 120);
    let mut early = mallory.clone();
    early["nbf"] = json!(now / 1000 + 600);
    let mut wrong_iss = mallory.clone();
    wrong_iss["iss"] = json!("https://evil.example.test");
    let none = format!(
        "{}.{}.",
        B64.encode(json!({ "alg": "none", "kid": "ec1" }).to_string()),
        B64.encode(mallory.to_string())
    );
    // HS256 "signed" with the issuer's public key, the classic confusion.
    let public = issuer.rsa.public_key().as_ref().to_vec();
    let hs256 = jwt(&json!({ "alg": "HS256", "kid": "rsa1" }), &mallory, |m| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
        mac.update(m);
        mac.finalize().into_bytes().to_vec()
    });
    let cases = [
        ("a wrong signature", forged, "id_token_signature"),
        ("a wrong audience", issuer.es256("ec1", &wrong_aud), "id_token_audience"),
        ("an expired token", issuer.es256("ec1", &expired), "id_token_expired"),
        ("a token not valid yet", issuer.es256("ec1", &early), "id_token_expired"),
        ("an unconfigured issuer", issuer.es256("ec1", &wrong_iss), "id_token_issuer"),
        ("alg none", none, "id_token_algorithm"),
        ("HS256 with the public key", hs256, "id_token_algorithm"),
        ("an RS256 key named in an ES256 token", issuer.es256("rsa1", &mallory), "id_token_algorithm"),
        ("not a JWT", "garbage".to_string(), "id_token_malformed"),
        ("an unknown key id", issuer.es256("ec9", &mallory), "id_token_unknown_key"),
    ];
    for (what, token, want) in cases {
        let (status, v) = login(token).await;
        assert_eq!((status, code(&v)), (401, want), "{what}: {v}");
    }
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "an unknown key id within a minute fetches nothing");
    // A minute on: an unknown key id fetches the keys once more, then is refused.
    clock.0.fetch_add(61_000, Ordering::SeqCst);
    let (status, v) = login(issuer.es256("ec9", &Issuer::claims("mallory", now + 61_000))).await;
    assert_eq!((status, code(&v)), (401, "id_token_unknown_key"), "{v}");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 2, "after one refetch");
    let (status, _) = login(issuer.es256("ec9", &Issuer::claims("mallory", now + 61_000))).await;
    assert_eq!(status, 401);
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 2, "at most once a minute");
    // Nothing was made for any refused token.
    let w = SqliteWorld::open(&data.join("world.sqlite3")).unwrap();
    assert!(w.identity(ISSUER, "mallory").await.unwrap().is_none());
    // The issuer rotates: a new key is found by the next refetch.
    let rotated = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    issuer.jwks.lock().unwrap()["keys"].as_array_mut().unwrap().push(ec_jwk(&rotated, "ec2"));
    clock.0.fetch_add(61_000, Ordering::SeqCst);
    let claims = Issuer::claims("carol", now + 122_000);
    let token = jwt(&json!({ "alg": "ES256", "kid": "ec2" }), &claims, |m| {
        rotated.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
    });
    let (status, v) = login(token).await;
    // Checked and accepted; no server is live two minutes on (its
    // heartbeats carry the time it was started at).
    assert_eq!((status, code(&v)), (503, "no_server"), "{v}");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 3);
    // A new device refused for want of a server keeps its credentials, so
    // that its retry does not make another account.
    let (status, v) = g.post("/v1/fort/login/guest", json!({})).await;
    assert_eq!((status, code(&v)), (503, "no_server"), "{v}");
    let (device, secret) = (v["error"]["details"]["device"].clone(), v["error"]["details"]["secret"].clone());
    assert!(device.is_string() && secret.is_string(), "{v}");
    let (status, v) = g.post("/v1/fort/login/guest", json!({ "device": device, "secret": secret })).await;
    assert_eq!((status, code(&v)), (503, "no_server"), "the same device, still no server: {v}");
    assert!(v["error"].get("details").is_none(), "{v}");
    g.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guessing_is_limited_per_device_and_per_address() {
    let (server, g, _clock, _data) = cluster_of_one("gw-limits", |c| {
        c.gateway.logins_per_account_per_minute = 3;
        c.gateway.logins_per_address_per_minute = 30;
    })
    .await;
    let first = guest(&g).await;
    let device = first["device"].as_str().unwrap();
    for _ in 0..3 {
        let (status, v) = g.post("/v1/fort/login/guest", json!({ "device": device, "secret": "guess" })).await;
        assert_eq!((status, code(&v)), (401, "bad_credentials"));
    }
    let r = reqwest::Client::new()
        .post(g.url("/v1/fort/login/guest"))
        .json(&json!({ "device": device, "secret": first["secret"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the right secret too, once the device is over its limit");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(code(&r.json().await.unwrap()), "too_many_logins");
    // The address: 30 a minute in all (the wait probes and the logins above count).
    let mut refused = 0;
    for _ in 0..40 {
        let (status, v) = g.post("/v1/fort/login/guest", json!({})).await;
        if status == 429 {
            assert_eq!(code(&v), "too_many_logins");
            refused += 1;
        }
    }
    assert!(refused >= 10, "{refused} refused");
    g.stop().await;
    server.stop().await;
}

const PAY_SECRET: &str = "whsec_test_0123456789abcdef";

fn signed(body: &str, secret: &str, t: i64) -> String {
    citadel_server::gateway::signature::sign(body.as_bytes(), secret.as_bytes(), t)
}

async fn notify(g: &Gateway, body: &Value, header: Option<String>) -> (u16, Value) {
    let mut r = reqwest::Client::new().post(g.url("/payments/paybox")).body(body.to_string());
    if let Some(h) = header {
        r = r.header("webhook-signature", h);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn bought(id: &str, account: &Value, product: &str) -> Value {
    json!({ "type": "payment.succeeded", "payment": { "id": id, "account": account, "title": "fort",
            "product": product, "amount": 499, "currency": "EUR" } })
}

/// Logs the gateway's guest back in and in at the server: the state.
async fn state_of(g: &Gateway, server: &Server, who: &Value) -> Value {
    let (status, v) = g.post("/v1/fort/login/guest", json!({ "device": who["device"], "secret": who["secret"] })).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = login_with_token(&server.url(""), "fort", v["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    v["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_grant_once_reach_offline_players_survive_a_gateway_restart_and_refunds_revoke() {
    let secrets =
        || vec![citadel_server::config::PaymentProvider { name: "paybox".into(), secrets: vec![PAY_SECRET.into()] }];
    let (server, g, clock, data) = cluster_of_one("gw-pay", |c| c.gateway.payments = secrets()).await;
    let now_s = || clock.0.load(Ordering::SeqCst) / 1000;
    let ann = guest(&g).await;
    let before = state_of(&g, &server, &ann).await;
    let gems = before["resources"]["gems"].as_i64().unwrap();
    // Ann goes offline: her session is saved and closed with the server.
    let server = {
        let data = server.stop().await;
        start_at(data, clock.clone(), |c| c.dev_login = Some(false)).await
    };
    // One notification delivered three times grants once.
    let body = bought("pay_1", &ann["account"], "founders_bundle");
    for _ in 0..3 {
        let (status, v) = notify(&g, &body, Some(signed(&body.to_string(), PAY_SECRET, now_s()))).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v, json!({ "payment": "pay_1", "state": "delivered" }));
    }
    // Bad signatures, a stale one, none, an unknown product: refused, nothing recorded.
    let bad = bought("pay_bad", &ann["account"], "founders_bundle");
    let text = bad.to_string();
    let refusals = [
        (Some(signed(&text, "whsec_another_secret_0000", now_s())), 400, "signature_mismatch"),
        (Some(signed(&format!("{text} "), PAY_SECRET, now_s())), 400, "signature_mismatch"),
        (Some(signed(&text, PAY_SECRET, now_s() - 301)), 400, "signature_stale"),
        (None, 400, "signature_malformed"),
    ];
    for (header, status, want) in refusals {
        let (s, v) = notify(&g, &bad, header).await;
        assert_eq!((s, code(&v)), (status, want), "{v}");
    }
    let unknown = bought("pay_bad", &ann["account"], "gem_mountain");
    let (s, v) = notify(&g, &unknown, Some(signed(&unknown.to_string(), PAY_SECRET, now_s()))).await;
    assert_eq!((s, code(&v)), (422, "unknown_product"), "{v}");
    let w = SqliteWorld::open(&data.join("world.sqlite3")).unwrap();
    assert!(w.payment("paybox", "pay_bad").await.unwrap().is_none(), "nothing recorded");
    // The offline player gets it at the next login, once.
    let after = state_of(&g, &server, &ann).await;
    assert_eq!(after["resources"]["gems"], gems + 500, "{after}");
    assert_eq!(after["items"]["lucky_chest"], 1, "{after}");
    // Support sees it delivered.
    let list = server.admin_json(&format!("/admin/api/payments?account={}", ann["account"].as_str().unwrap())).await;
    assert_eq!(list["payments"][0]["id"], "pay_1", "{list}");
    assert_eq!(list["payments"][0]["state"], "delivered", "{list}");
    // A refund: taken back at the next session; the account is flagged.
    let refund = json!({ "type": "payment.refunded", "payment": { "id": "pay_1" } });
    let (status, v) = notify(&g, &refund, Some(signed(&refund.to_string(), PAY_SECRET, now_s()))).await;
    assert_eq!((status, v["state"].clone()), (200, json!("revoked")), "{v}");
    assert!(w.account(ann["account"].as_str().unwrap()).await.unwrap().unwrap().flagged);
    let server = {
        let data = server.stop().await;
        start_at(data, clock.clone(), |c| c.dev_login = Some(false)).await
    };
    let refunded = state_of(&g, &server, &ann).await;
    assert_eq!(refunded["resources"]["gems"], gems, "{refunded}");
    assert!(refunded["items"].get("lucky_chest").is_none_or(|n| n == 0), "{refunded}");
    // A refund before the player ever claimed it: never applied.
    let bo = guest(&g).await;
    let body = bought("pay_2", &bo["account"], "gem_pouch");
    assert_eq!(notify(&g, &body, Some(signed(&body.to_string(), PAY_SECRET, now_s()))).await.0, 200);
    let refund = json!({ "type": "payment.charged_back", "payment": { "id": "pay_2" } });
    assert_eq!(notify(&g, &refund, Some(signed(&refund.to_string(), PAY_SECRET, now_s()))).await.0, 200);
    let fresh_gems = before["resources"]["gems"].clone();
    assert_eq!(state_of(&g, &server, &bo).await["resources"]["gems"], fresh_gems, "a new player's gems, nothing more");
    // A gateway that died after recording a payment, before delivering it:
    // what it left in the world store is delivered once by the next one.
    let cy = guest(&g).await;
    g.stop().await;
    let cy_player = cy["player"].as_str().unwrap();
    let recorded = citadel_store::world::Payment {
        provider: "paybox".into(),
        id: "pay_3".into(),
        account: cy["account"].as_str().unwrap().into(),
        title: "fort".into(),
        player: cy_player.into(),
        product: "gem_pouch".into(),
        resources: [("gems".to_string(), 80)].into(),
        items: Default::default(),
        amount: 199,
        currency: "EUR".into(),
        state: PaymentState::Recorded,
        created_ms: clock.0.load(Ordering::SeqCst),
        delivered_ms: None,
        revoked_ms: None,
        revoked_reason: String::new(),
    };
    assert!(w.record_payment(&recorded).await.unwrap());
    let mut config = gateway_config(&data);
    config.gateway.payments = secrets();
    let g = start_gateway(config, clock.clone()).await;
    for _ in 0..200 {
        if w.payment("paybox", "pay_3").await.unwrap().unwrap().state == PaymentState::Delivered {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(w.payment("paybox", "pay_3").await.unwrap().unwrap().state, PaymentState::Delivered);
    // The provider sends it again (it never got an answer): nothing more.
    let body = bought("pay_3", &cy["account"], "gem_pouch");
    let (status, v) = notify(&g, &body, Some(signed(&body.to_string(), PAY_SECRET, now_s()))).await;
    assert_eq!((status, v), (200, json!({ "payment": "pay_3", "state": "delivered" })));
    assert_eq!(state_of(&g, &server, &cy).await["resources"]["gems"], fresh_gems.as_i64().unwrap() + 80);
    let inbox = w.inbox("fort", cy_player, clock.0.load(Ordering::SeqCst), 50).await.unwrap();
    assert_eq!(inbox.iter().filter(|i| i.kind == "purchase").count(), 1, "{inbox:?}");
    g.stop().await;
    server.stop().await;
}

/// Where each login was sent: server id to count.
fn tally(answers: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for a in answers {
        *by.entry(a["server"]["id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    by
}

/// `n` new guests at once (`at_once` in flight): their login answers.
async fn guests(http: &reqwest::Client, url: &str, n: usize) -> Vec<Value> {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .map(|_| async move {
            let r = http.post(format!("{url}/v1/fort/login/guest")).json(&json!({})).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        })
        .buffer_unordered(8)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_spread_over_three_servers_by_load_and_skip_draining_and_dead_ones() {
    let (data, titles, config) = fleet_config("gw-spread", "dev_login = true\n");
    let mut servers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| support::serve_in(&config, &data, &titles, &data.join(format!("server-{n}"))))
        .collect();
    let ids: Vec<(String, String)> = wait_for_servers(&data, 3).await.into_iter().map(|s| (s.id, s.address)).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let (_gateway, url) = gateway_process(&config);
    let http = reqwest::Client::new();
    // 300 guests: spread evenly (no server more than 20% above the mean).
    let answers = guests(&http, &url, 300).await;
    let by = tally(&answers);
    assert_eq!(by.len(), 3, "{by:?}");
    assert!(by.values().all(|&n| n <= 120), "at most 20% above the mean of 100: {by:?}");
    // A development login keeps its name (turned on for this gateway).
    let r: Value = http
        .post(format!("{url}/v1/fort/login/dev"))
        .json(&json!({ "player": "dev_dora" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["player"], "dev_dora", "{r}");
    // A player live on a server is sent back to it.
    let live = &answers[0];
    let home = live["server"]["address"].as_str().unwrap();
    let (status, v) = login_with_token(home, "fort", live["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{v}");
    for _ in 0..10 {
        let r: Value = http
            .post(format!("{url}/v1/fort/login/guest"))
            .json(&json!({ "device": live["device"], "secret": live["secret"] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["server"], live["server"], "{r}");
    }
    // One server drains, another dies: within 15 s neither gets anyone.
    let (drained, killed) = {
        let others: Vec<&(String, String)> = ids.iter().filter(|(_, a)| a != home).collect();
        (others[0].clone(), others[1].clone())
    };
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let r = http
        .post(format!("{}/admin/api/drain", drained.1))
        .header("authorization", format!("Bearer {}", admin.trim()))
        .json(&json!({ "on": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let victim =
        servers.iter().position(|(_, a)| format!("http://{a}") == killed.1).expect("the killed server's process");
    servers[victim].0.kill();
    let killed_at = std::time::Instant::now();
    while killed_at.elapsed() < std::time::Duration::from_secs(15) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        guests(&http, &url, 2).await;
    }
    let after = tally(&guests(&http, &url, 60).await);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        [&live["server"]["id"].as_str().unwrap().to_string()],
        "only the live, non-draining server: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_amid_payment_notifications_still_grants_each_payment_exactly_once() {
    let (data, titles, config) = fleet_config(
        "gw-pay-kill",
        &format!("\n[[gateway.payments]]\nname = \"paybox\"\nsecrets = [\"{PAY_SECRET}\"]\n"),
    );
    let (_server, _) = support::serve_in(&config, &data, &titles, &data.join("server-a"));
    wait_for_servers(&data, 1).await;
    let w = SqliteWorld::open(&data.join("world.sqlite3")).unwrap();
    let (mut first, url) = gateway_process(&config);
    let http = reqwest::Client::new();
    let buyers = guests(&http, &url, 5).await;
    let control = guests(&http, &url, 1).await.remove(0);
    let now_s = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let notifications: Vec<Value> =
        (0..50).map(|k| bought(&format!("pay_{k}"), &buyers[k % 5]["account"], "gem_pouch")).collect();
    let client = http.clone();
    let send = move |url: String, body: Value| {
        let http = client.clone();
        async move {
            let text = body.to_string();
            http.post(format!("{url}/payments/paybox"))
                .header("webhook-signature", signed(&text, PAY_SECRET, now_s()))
                .body(text)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    // The provider sends them all, eight at a time; the gateway is killed
    // (SIGKILL) once a dozen are answered.
    let answered = Arc::new(AtomicUsize::new(0));
    let sending = {
        use futures_util::StreamExt;
        let (answered, url) = (answered.clone(), url.clone());
        let notifications = notifications.clone();
        let send = send.clone();
        tokio::spawn(async move {
            futures_util::stream::iter(notifications)
                .map(|n| {
                    let (send, url, answered) = (send.clone(), url.clone(), answered.clone());
                    async move {
                        if send(url, n).await == Some(200) {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
        })
    };
    while answered.load(Ordering::SeqCst) < 12 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    first.kill();
    sending.await.unwrap();
    let before: Vec<_> = w.payments(citadel_store::world::PaymentsOf::All, None, 100).await.unwrap();
    assert!(before.len() < 50, "killed before every notification was recorded: {}", before.len());
    let left = before.iter().filter(|p| p.state == PaymentState::Recorded).count();
    eprintln!("killed with {} payments recorded, {left} of them not delivered", before.len());
    // A new gateway, and the provider sends again what was not answered
    // (here: everything again, as a provider unsure of its answers may).
    let (_second, url) = gateway_process(&config);
    for n in &notifications {
        assert_eq!(send(url.clone(), n.clone()).await, Some(200), "{n}");
    }
    let all = w.payments(citadel_store::world::PaymentsOf::All, None, 100).await.unwrap();
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(|p| p.state == PaymentState::Delivered), "{all:?}");
    // Each buyer gets ten pouches of 80 gems, no more, no fewer.
    let state_here = |who: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r: Value = http
                .post(format!("{url}/v1/fort/login/guest"))
                .json(&json!({ "device": who["device"], "secret": who["secret"] }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let (status, v) =
                login_with_token(r["server"]["address"].as_str().unwrap(), "fort", r["token"].as_str().unwrap()).await;
            assert_eq!(status, 200, "{v}");
            (r["player"].as_str().unwrap().to_string(), v["state"]["resources"]["gems"].as_i64().unwrap())
        }
    };
    let (_, gems) = state_here(control).await;
    for b in buyers {
        let (player, got) = state_here(b).await;
        assert_eq!(got, gems + 10 * 80, "{player}");
        let inbox = w.inbox("fort", &player, now_s() * 1000, 100).await.unwrap();
        assert_eq!(inbox.iter().filter(|i| i.kind == "purchase").count(), 10, "{player}");
    }
}
