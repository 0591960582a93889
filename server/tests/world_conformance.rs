//! The world store's conformance suite: the same behaviour from every
//! backend. Runs against SQLite always, and against a MongoDB wire server
//! (the `nx-27017` stand-in that `scripts/test` provisions,
//! `CITADEL_TEST_MONGO_URI`); without one the MongoDB half says SKIPPED.

mod support;

use std::sync::Arc;

use citadel_server::world::{MongoConfig, MongoWorld, SqliteWorld, WorldStore};

type World = Arc<dyn WorldStore>;

fn sqlite() -> World {
    let p = std::env::temp_dir().join(format!("{}.sqlite3", support::unique("citadel-world")));
    Arc::new(SqliteWorld::open(&p).unwrap())
}

async fn mongo(suite: &str) -> Option<World> {
    let uri = support::service("CITADEL_TEST_MONGO_URI", suite, "a MongoDB wire server (nx-27017)")?;
    let config = MongoConfig { uri, database: support::unique("citadel").replace('-', "_") };
    Some(Arc::new(MongoWorld::connect(&config).await.expect("connecting to the MongoDB wire server")))
}

async fn leases_exclude_renew_expire_and_fence(w: World) {
    let a = w.acquire("player:x", "a", 1000, 0).await.unwrap().unwrap();
    assert!(w.acquire("player:x", "b", 1000, 500).await.unwrap().is_none(), "held by a");
    let again = w.acquire("player:x", "a", 1000, 600).await.unwrap().expect("the holder may take it again");
    assert!(again.token > a.token);
    assert!(w.renew(&a, 1000, 700).await.unwrap().is_none(), "the older lease of the same holder is gone");
    let a2 = w.renew(&again, 1000, 900).await.unwrap().unwrap();
    assert_eq!(a2.expires_ms, 1900);
    assert!(w.acquire("player:x", "b", 1000, 1500).await.unwrap().is_none(), "renewed");
    let b = w.acquire("player:x", "b", 1000, 1900).await.unwrap().expect("expired: taken over");
    assert!(b.token > a2.token, "fencing tokens grow");
    assert!(w.renew(&a2, 1000, 2000).await.unwrap().is_none(), "a lost it");
    w.release(&a2).await.unwrap();
    assert!(w.acquire("player:x", "c", 1000, 2000).await.unwrap().is_none(), "a's release does not free b's lock");
    w.release(&b).await.unwrap();
    let c = w.acquire("player:x", "c", 1000, 2000).await.unwrap().expect("released: free");
    // Locks are independent; tokens grow across all of them.
    let other = w.acquire("raid:y", "a", 1000, 2000).await.unwrap().unwrap();
    assert!(other.token > c.token);
}

/// Many contenders at once, for a free lock and then for an expired one:
/// exactly one wins each time, the rest are told it is held.
async fn a_race_of_many_contenders_has_one_winner(w: World) {
    for (round, now) in [(0, 0), (1, 20_000)] {
        let mut tasks = Vec::new();
        for i in 0..32 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move { w.acquire("raid:z", &format!("r{round}-c{i}"), 10_000, now).await }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(lease) = t.await.unwrap().unwrap() {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_leases() {
    leases_exclude_renew_expire_and_fence(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_race() {
    a_race_of_many_contenders_has_one_winner(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongo_leases() {
    if let Some(w) = mongo("world conformance on MongoDB").await {
        leases_exclude_renew_expire_and_fence(w).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongo_race() {
    if let Some(w) = mongo("world conformance on MongoDB (race)").await {
        a_race_of_many_contenders_has_one_winner(w).await;
    }
}
