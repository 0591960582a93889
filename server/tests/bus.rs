//! The bus's conformance suite, run on the in-process bus and on NATS (a
//! `nats-server` this test starts on loopback, from `CITADEL_TEST_NATS`).

mod support;

use std::time::Duration;

use bytes::Bytes;
use citadel_server::bus::local::LocalBus;
use citadel_server::bus::nats::NatsBus;
use citadel_server::bus::{Bus, BusError, MESSAGE_BYTES_MAX};

/// How long a message may take to arrive on loopback.
const ARRIVE: Duration = Duration::from_secs(5);

async fn next(s: &mut citadel_server::bus::Subscription) -> citadel_server::bus::Message {
    tokio::time::timeout(ARRIVE, s.next()).await.expect("a message in time").expect("the bus is up")
}

async fn conformance(bus: &dyn Bus) {
    let mut chat = bus.subscribe("t.clan.*.chat").await.unwrap();
    let mut all = bus.subscribe("t.>").await.unwrap();
    let mut other = bus.subscribe("u.>").await.unwrap();
    for i in 0..100u8 {
        bus.publish("t.clan.k1.chat", Bytes::from(vec![i])).await.unwrap();
    }
    bus.publish("t.map.r.1.2", Bytes::from_static(b"moved")).await.unwrap();
    for i in 0..100u8 {
        let m = next(&mut chat).await;
        assert_eq!((m.subject.as_str(), m.payload[0]), ("t.clan.k1.chat", i), "in order, the subject as published");
    }
    for _ in 0..100 {
        next(&mut all).await;
    }
    assert_eq!(next(&mut all).await.subject, "t.map.r.1.2");
    assert!(chat.try_next().is_none() && other.try_next().is_none(), "only matching subscriptions");
    assert!(matches!(bus.publish("t.*", Bytes::new()).await, Err(BusError::BadSubject(_))));
    assert!(matches!(bus.subscribe("t.>.x").await, Err(BusError::BadSubject(_))));
    let big = Bytes::from(vec![0; MESSAGE_BYTES_MAX + 1]);
    assert_eq!(bus.publish("t.x", big).await, Err(BusError::TooLarge(MESSAGE_BYTES_MAX + 1)));
    assert_eq!(bus.dropped(), 0);
}

#[tokio::test]
async fn the_in_process_bus_conforms() {
    conformance(&LocalBus::new()).await;
}

#[tokio::test]
async fn the_nats_bus_conforms_and_two_servers_share_it() {
    let Some(nats) = support::Nats::start("the bus on NATS") else {
        return;
    };
    let url = nats.url.clone();
    let a = NatsBus::connect(&url, None, "citadel-test", "a").await.unwrap();
    conformance(&a).await;
    // A second connection (another game server) gets what the first sends.
    let b = NatsBus::connect(&url, None, "citadel-test", "b").await.unwrap();
    let mut on_b = b.subscribe("t.clan.k2.chat").await.unwrap();
    // A new connection's subscription reaches the NATS server on its own
    // time (a game server subscribes once, at start): send until it hears.
    let started = std::time::Instant::now();
    loop {
        a.publish("t.clan.k2.chat", Bytes::from_static(b"across")).await.unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(100), on_b.next()).await {
            Ok(m) => {
                assert_eq!(m.expect("the bus is up").payload, Bytes::from_static(b"across"));
                break;
            }
            Err(_) => assert!(started.elapsed() < ARRIVE, "the second connection never heard the first"),
        }
    }
    // Another prefix is another deployment: it hears nothing.
    let c = NatsBus::connect(&url, None, "elsewhere", "c").await.unwrap();
    let mut on_c = c.subscribe("t.>").await.unwrap();
    a.publish("t.clan.k2.chat", Bytes::from_static(b"again")).await.unwrap();
    // (Late copies of the first line may come before it, in order.)
    let again = loop {
        let m = next(&mut on_b).await;
        if m.payload != Bytes::from_static(b"across") {
            break m;
        }
    };
    assert_eq!(again.payload, Bytes::from_static(b"again"));
    assert!(on_c.try_next().is_none());
}
