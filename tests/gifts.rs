//! Gifts between clan members as pure rules on the `mini` fixture given
//! gifts (gold, at most 100 a gift, 2 gifts a day): what may be given, the daily count,
//! and that delivering or returning a gift settles it once.

use std::collections::BTreeMap;

use citadel_runtime::clan::{gift_delivered, gift_returned, send_gift};
use citadel_runtime::{new_player, ErrorCode, PlayerState, Rng, Title};
use citadel_tests::{load_valid, mini_files, root};

/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600_000;
const DAY: i64 = 86_400_000;

/// The mini fixture with gifts between clan members.
fn mini() -> Title {
    let mut files = mini_files();
    let title = files.get_mut("title.json").unwrap();
    let mut t: serde_json::Value = serde_json::from_str(title).unwrap();
    t["world"]["clans"]["gifts"] = serde_json::json!({ "resources": { "gold": 100 }, "per_day": 2 });
    *title = t.to_string();
    let (title, diags) = citadel_runtime::load_files("mini", &files);
    title.unwrap_or_else(|| panic!("{diags:?}"))
}

fn giver(t: &Title) -> PlayerState {
    let mut s = new_player(t, NOW);
    s.resources.insert("gold".into(), 500);
    s
}

fn gold(n: i64) -> BTreeMap<String, i64> {
    BTreeMap::from([("gold".to_string(), n)])
}

fn send(t: &Title, s: &mut PlayerState, id: &str, what: &BTreeMap<String, i64>, at: i64) -> Result<(), ErrorCode> {
    send_gift(t, s, id, "bob", "wolves", what, at, &mut Rng::new(1)).map(|_| ()).map_err(|e| e.code)
}

#[test]
fn a_gift_takes_the_resources_and_waits_on_its_way() {
    let t = mini();
    let mut s = giver(&t);
    let events = send_gift(&t, &mut s, "g1", "bob", "wolves", &gold(60), NOW, &mut Rng::new(1)).unwrap();
    assert_eq!(s.resources["gold"], 440);
    assert_eq!(s.gifts.outgoing.len(), 1);
    assert_eq!((s.gifts.outgoing[0].to.as_str(), s.gifts.outgoing[0].resources["gold"]), ("bob", 60));
    assert_eq!(s.counters["gifts_sent"], 1);
    assert!(events.iter().any(|e| e.name() == "gift_sent"), "{events:?}");
}

#[test]
fn refused_gifts_change_nothing() {
    let t = mini();
    let mut s = giver(&t);
    let before = s.clone();
    // More than a gift may carry, none at all, a resource the title does not let players give.
    assert_eq!(send(&t, &mut s, "g1", &gold(101), NOW), Err(ErrorCode::InvalidArgument));
    assert_eq!(send(&t, &mut s, "g1", &gold(0), NOW), Err(ErrorCode::InvalidArgument));
    assert_eq!(send(&t, &mut s, "g1", &BTreeMap::new(), NOW), Err(ErrorCode::InvalidArgument));
    let e = send_gift(&t, &mut s, "g1", "bob", "w", &BTreeMap::from([("glod".into(), 5)]), NOW, &mut Rng::new(1))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("did you mean `gold`"), "{}", e.message);
    // More than the player holds.
    s.resources.insert("gold".into(), 30);
    let poor = s.clone();
    assert_eq!(send(&t, &mut s, "g1", &gold(40), NOW), Err(ErrorCode::InsufficientResources));
    assert_eq!(s, poor);
    s.resources.insert("gold".into(), 500);
    assert_eq!(s, before);
}

#[test]
fn a_player_sends_per_day_gifts_a_day_and_more_the_next_day() {
    let t = mini();
    let mut s = giver(&t);
    send(&t, &mut s, "g1", &gold(10), NOW).unwrap();
    send(&t, &mut s, "g2", &gold(10), NOW + 1000).unwrap();
    let full = s.clone();
    assert_eq!(send(&t, &mut s, "g3", &gold(10), NOW + DAY - 1), Err(ErrorCode::LimitReached));
    assert_eq!(s, full, "a refused gift takes nothing");
    // The next UTC day counts again.
    send(&t, &mut s, "g3", &gold(10), NOW + DAY).unwrap();
    assert_eq!(s.gifts.sent_today, 1);
    assert_eq!(s.resources["gold"], 470);
}

#[test]
fn a_gift_is_settled_once_delivered_or_returned() {
    let t = mini();
    let mut s = giver(&t);
    send(&t, &mut s, "g1", &gold(50), NOW).unwrap();
    send(&t, &mut s, "g2", &gold(70), NOW).unwrap();
    assert_eq!(s.resources["gold"], 380);
    assert_eq!(gift_delivered(&mut s, "g1").len(), 1);
    assert!(gift_delivered(&mut s, "g1").is_empty(), "delivered twice changes nothing");
    let returned = gift_returned(&mut s, "g2");
    assert_eq!(returned.len(), 1);
    assert_eq!(s.resources["gold"], 450, "the returned gift's gold is back");
    assert!(gift_returned(&mut s, "g2").is_empty(), "returned twice changes nothing");
    assert_eq!(s.resources["gold"], 450);
    assert!(s.gifts.outgoing.is_empty());
}

#[test]
fn a_title_without_gifts_refuses_them() {
    let t = load_valid(&root().join("titles/spirebound")).0;
    let mut s = new_player(&t, NOW);
    let e = send_gift(&t, &mut s, "g1", "bob", "w", &BTreeMap::from([("gold".into(), 1)]), NOW, &mut Rng::new(1))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotAvailable);
}
