//! The admin console in a real browser: headless Chromium driven over the
//! WebDriver protocol (Debian's `chromium` and `chromium-driver`, which
//! `scripts/test` installs and names in `CITADEL_TEST_CHROMEDRIVER`).
//! Support staff log in, find a player, grant resources, and the player's
//! next request sees them; without a login the console shows nothing but
//! the login page. Screenshots of the main pages are written to
//! `target/console-screenshots/`.

mod support;

use serde_json::json;
use support::browser::Browser;
use support::server::*;

async fn gold(s: &Server, token: &str) -> i64 {
    let (_, r) = s.act("mini", token, "get_state", json!({})).await;
    r["result"]["state"]["resources"]["gold"].as_i64().unwrap_or_else(|| panic!("{r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_staff_find_a_player_and_grant_resources_in_the_console() {
    let Some(chromedriver) = support::service(
        "CITADEL_TEST_CHROMEDRIVER",
        "the admin console in a browser",
        "Chromium and ChromeDriver (Debian chromium, chromium-driver)",
    ) else {
        return;
    };
    let hash = citadel_server::admin::auth::PasswordHash::make("support staff password").unwrap();
    let s = start(fresh_data("console"), |c| {
        c.admin_users = vec![citadel_server::config::AdminUser { name: "ops".into(), password_hash: hash }];
    })
    .await;
    let (tok, _) = s.login("mini", "annika").await;
    let (_, r) = s.act("mini", &tok, "build", json!({ "building": "mine", "x": 1, "y": 1 })).await;
    assert_eq!(r["ok"], true, "{r}");
    let g0 = gold(&s, &tok).await;
    // A purchase the gateway recorded for her (docs/gateway.md).
    {
        use citadel_store::world::{Payment, PaymentState, Payments};
        let w = citadel_store::world::SqliteWorld::open(&s.data.join("world.sqlite3")).unwrap();
        let paid = Payment {
            provider: "paybox".into(),
            id: "pay_console_1".into(),
            account: "a-annika".into(),
            title: "mini".into(),
            player: "annika".into(),
            product: "gem_pack".into(),
            resources: [("gems".to_string(), 100)].into(),
            items: Default::default(),
            amount: 499,
            currency: "EUR".into(),
            state: PaymentState::Delivered,
            created_ms: support::server::START,
            delivered_ms: Some(support::server::START),
            revoked_ms: None,
            revoked_reason: String::new(),
        };
        assert!(w.record_payment(&paid).await.unwrap());
    }

    let b = Browser::start(&chromedriver).await;
    // Without a login, the console is the login page and nothing else.
    b.go(&s.url("/admin/")).await;
    b.find("#login").await;
    assert!(b.url().await.ends_with("/admin/login"), "{}", b.url().await);
    b.go(&s.url("/admin/api/players/mini/annika")).await;
    assert!(b.text("body").await.contains("unauthorized"), "the API refuses the browser before a login");
    b.go(&s.url("/admin/login")).await;
    b.screenshot("console-screenshots", "login").await;
    b.type_into("#name", "ops").await;
    b.type_into("#password", "a wrong guess").await;
    b.click("#submit").await;
    b.wait_text("#message", "Wrong name or password").await;

    b.type_into("#name", "ops").await;
    b.type_into("#password", "support staff password").await;
    b.click("#submit").await;
    b.find("#servers tbody tr").await;
    b.wait_text("#titles", "mini").await;
    b.screenshot("console-screenshots", "servers").await;

    b.click("#nav-latency").await;
    b.wait_text("#latency-start", "build").await;
    b.screenshot("console-screenshots", "latency").await;
    b.click("#nav-requests").await;
    b.find("#inflight").await;
    b.screenshot("console-screenshots", "requests").await;

    // Find the player, grant 250 gold.
    b.click("#nav-players").await;
    b.type_into("#search-q", "anni").await;
    b.click("#search-go").await;
    b.click("a.player-link").await;
    b.wait_text("#history", "build").await;
    b.type_into("#adjust-id", "gold").await;
    b.type_into("#adjust-amount", "250").await;
    b.type_into("#adjust-reason", "lost gold in the outage").await;
    b.click("#adjust-go").await;
    b.wait_text("#flash", "adjust: done").await;
    b.wait_text("#resources", &(g0 + 250).to_string()).await;
    let paid = b.wait_text("#player-payments", "pay_console_1").await;
    assert!(paid.contains("delivered") && paid.contains("4.99 EUR"), "{paid}");
    b.screenshot("console-screenshots", "player").await;
    assert_eq!(gold(&s, &tok).await, g0 + 250, "the player's next request sees the grant");

    b.click("#nav-payments").await;
    b.wait_text("#payments", "pay_console_1").await;
    b.type_into("#payments-q", "a-nobody").await;
    b.click("#payments-q + button").await;
    b.wait_text("#payments", "none").await;

    b.click("#nav-audit").await;
    let audit = b.wait_text("#audit", "lost gold in the outage").await;
    assert!(audit.contains("ops") && audit.contains("adjust"), "{audit}");
    b.screenshot("console-screenshots", "audit").await;

    // Logging out closes the console again.
    b.click("#logout").await;
    b.find("#login").await;
    b.go(&s.url("/admin/")).await;
    b.find("#login").await;
    drop(b);
    s.stop().await;
}
