//! The world store's conformance suite: the same behaviour from every
//! backend. Runs against SQLite always, and against a MongoDB wire server
//! (the `nx-27017` stand-in that `scripts/test` provisions,
//! `CITADEL_TEST_MONGO_URI`); without one the MongoDB half says SKIPPED.

mod support;

use std::sync::Arc;

use std::collections::BTreeMap;

use citadel_store::world::{
    Account, Ask, AuditEntry, Board, ChatLimits, Clan, ClanAsk, Identity, InboxItem, InboxPut, InboxRevoke, Joined,
    JournalHome, Member, MongoConfig, MongoWorld, Payment, PaymentState, PaymentsOf, PlayerInfo, Position, RaidRecord,
    RaidStatus, Restriction, ServerStatus, SqliteWorld, WorldStore,
};

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
    assert_eq!(w.holder("player:x", 500).await.unwrap().map(|l| l.owner), Some("a".to_string()));
    assert_eq!(w.holder("player:x", 1000).await.unwrap(), None, "expired: nobody holds it");
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

/// A lease that expires without a release leaves its owner as a duty to
/// recover (their journal may hold work on the locked player); the duty
/// passes on with the lock until a holder says it recovered, survives a
/// release by a holder that could not, and a clean release leaves none.
async fn an_unreleased_lease_passes_a_duty_to_recover(w: World) {
    let a = w.acquire("player:d", "a", 1000, 0).await.unwrap().unwrap();
    assert_eq!(a.recover_from, None, "a free lock carries no duty");
    w.release(&a).await.unwrap();
    assert_eq!(w.acquire("player:d", "b", 1000, 10).await.unwrap().unwrap().recover_from, None, "released cleanly");
    // b dies: its lease expires unreleased, and c takes the lock over.
    let c = w.acquire("player:d", "c", 1000, 5000).await.unwrap().unwrap();
    assert_eq!(c.recover_from.as_deref(), Some("b"), "the expired owner may hold work");
    assert_eq!(w.holder("player:d", 5000).await.unwrap().unwrap().recover_from.as_deref(), Some("b"));
    // c cannot recover and gives the lock back: the duty stays with it,
    // and the lock is free at once.
    w.release(&c).await.unwrap();
    let d = w.acquire("player:d", "d", 1000, 5001).await.unwrap().expect("a released lock is free");
    assert_eq!(d.recover_from.as_deref(), Some("b"), "not c, which never held work: b's duty passes on");
    let renewed = w.renew(&d, 1000, 5500).await.unwrap().unwrap();
    assert_eq!(renewed.recover_from.as_deref(), Some("b"), "renewal keeps the duty");
    let done = w.recovered(&renewed).await.unwrap().expect("d still holds it");
    assert_eq!(done.recover_from, None);
    assert!(w.recovered(&c).await.unwrap().is_none(), "a lost lease cannot clear the duty");
    // d dies too: now d is the one who may hold work.
    let e = w.acquire("player:d", "e", 1000, 9000).await.unwrap().unwrap();
    assert_eq!(e.recover_from.as_deref(), Some("d"));
    // The same owner taking its own expired lease back is told too (its
    // earlier session may have ended unsaved).
    let e2 = w.acquire("player:d", "e", 1000, 20_000).await.unwrap().unwrap();
    assert_eq!(e2.recover_from.as_deref(), Some("d"), "the open duty is older and stays");
    let e2 = w.recovered(&e2).await.unwrap().unwrap();
    let e3 = w.acquire("player:d", "e", 1000, 30_000).await.unwrap().unwrap();
    assert!(e3.token > e2.token);
    assert_eq!(e3.recover_from.as_deref(), Some("e"), "e's own expired lease");
    // Where journals live, and an operator's word that one is lost.
    assert_eq!(w.journal_home("server-x").await.unwrap(), None);
    let mut home = JournalHome {
        server: "server-x".into(),
        host: "m1".into(),
        dir: "/srv/x/journal".into(),
        lost_ms: 0,
        lost_by: String::new(),
    };
    w.put_journal_home(&home).await.unwrap();
    assert_eq!(w.journal_home("server-x").await.unwrap().as_ref(), Some(&home));
    home.lost_ms = 77;
    home.lost_by = "ops".into();
    w.put_journal_home(&home).await.unwrap();
    assert_eq!(w.journal_home("server-x").await.unwrap(), Some(home));
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

async fn servers_register_heartbeat_and_expire(w: World) {
    let status = |id: &str, at: i64| ServerStatus {
        id: id.into(),
        address: format!("{id}:8080"),
        titles: BTreeMap::from([("fort".to_string(), "v1".to_string())]),
        players: 3,
        busy: 0.25,
        heartbeat_ms: at,
        draining: id == "s2",
    };
    w.heartbeat(&status("s1", 1000)).await.unwrap();
    w.heartbeat(&status("s2", 1000)).await.unwrap();
    assert_eq!(w.servers(1500, 10_000).await.unwrap(), vec![status("s1", 1000), status("s2", 1000)]);
    let mut busier = status("s1", 9000);
    busier.players = 40;
    w.heartbeat(&busier).await.unwrap();
    assert_eq!(w.servers(12_000, 10_000).await.unwrap(), vec![busier.clone()], "s2 went stale");
    assert_eq!(w.servers(12_000, 10_000).await.unwrap().len(), 1, "and stays gone");
    w.deregister("s1").await.unwrap();
    assert!(w.servers(12_000, 10_000).await.unwrap().is_empty());
}

fn info(title: &str, player: &str, name: &str, level: i64) -> PlayerInfo {
    PlayerInfo {
        title: title.into(),
        player: player.into(),
        name: name.into(),
        level,
        scores: BTreeMap::from([("trophies".to_string(), level * 10)]),
        clan: None,
        position: Some(Position { region: "plain".into(), x: 1, y: 2 }),
        last_seen_ms: 77,
    }
}

async fn player_info_lookup_search_and_paging(w: World) {
    for i in 0..7 {
        w.put_info(&info("t", &format!("p{i}"), &format!("Ann{}", 6 - i), i)).await.unwrap();
    }
    w.put_info(&info("t", "q", "Bob", 1)).await.unwrap();
    w.put_info(&info("other", "x", "Anna", 1)).await.unwrap();
    assert_eq!(w.info("t", "p3").await.unwrap(), Some(info("t", "p3", "Ann3", 3)));
    assert_eq!(w.info("t", "nobody").await.unwrap(), None);
    // Updates replace the profile.
    w.put_info(&info("t", "p3", "Ann3", 9)).await.unwrap();
    assert_eq!(w.info("t", "p3").await.unwrap().unwrap().level, 9);
    // Prefix search, case-insensitive, by name, in pages.
    let first = w.search("t", "ann", None, 3).await.unwrap();
    let names: Vec<_> = first.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["Ann0", "Ann1", "Ann2"]);
    let last = first.last().unwrap();
    let second = w.search("t", "ANN", Some((&last.name, &last.player)), 10).await.unwrap();
    let names: Vec<_> = second.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["Ann3", "Ann4", "Ann5", "Ann6"], "the next page, other titles never");
    assert_eq!(w.search("t", "bo", None, 10).await.unwrap().len(), 1);
    assert!(w.search("t", "z", None, 10).await.unwrap().is_empty());
    assert_eq!(w.search("t", "", None, 1000).await.unwrap().len(), 8, "limits are capped, not refused");
}

async fn top_scores_windows_ranks_and_ties(w: World) {
    let all = Board { title: "t", stat: "trophies", window: "all" };
    let week = Board { title: "t", stat: "trophies", window: "week-2026-11-23" };
    let windows = vec!["all".to_string(), "week-2026-11-23".to_string()];
    // Before this week a had 100; this week a gains 20, b gains 50 from 0, c ties b.
    w.set_score("t", "trophies", "a", &windows, 100, 120).await.unwrap();
    w.set_score("t", "trophies", "b", &windows, 0, 50).await.unwrap();
    w.set_score("t", "trophies", "c", &windows, 0, 50).await.unwrap();
    // Setting the same value again changes nothing; a later change keeps the week's base.
    w.set_score("t", "trophies", "a", &windows, 100, 120).await.unwrap();
    w.set_score("t", "trophies", "a", &windows, 120, 130).await.unwrap();
    let rows =
        |v: Vec<citadel_store::world::ScoreRow>| v.into_iter().map(|r| (r.rank, r.player, r.value)).collect::<Vec<_>>();
    assert_eq!(
        rows(w.top(all, 0, 10).await.unwrap()),
        [(1, "a".to_string(), 130), (2, "b".into(), 50), (3, "c".into(), 50)]
    );
    assert_eq!(
        rows(w.top(week, 0, 10).await.unwrap()),
        [(1, "b".to_string(), 50), (2, "c".into(), 50), (3, "a".into(), 30)],
        "the week counts gains since the player's first change in it"
    );
    assert_eq!(rows(w.top(week, 1, 1).await.unwrap()), [(2, "c".to_string(), 50)], "paging");
    let r = w.rank(week, "c").await.unwrap().unwrap();
    assert_eq!((r.rank, r.value), (2, 50), "ties rank by player id");
    assert_eq!(w.rank(all, "a").await.unwrap().unwrap().rank, 1);
    assert_eq!(w.rank(all, "nobody").await.unwrap(), None);
    // Losses move a player down.
    w.set_score("t", "trophies", "a", &windows, 130, 10).await.unwrap();
    assert_eq!(w.rank(all, "a").await.unwrap().unwrap().rank, 3);
    assert_eq!(w.rank(week, "a").await.unwrap().unwrap().value, -90);
}

async fn map_places_moves_and_finds_neighbours(w: World) {
    let at = |x, y| Position { region: "plain".into(), x, y };
    assert!(w.place("t", "a", &at(5, 5)).await.unwrap());
    assert!(!w.place("t", "b", &at(5, 5)).await.unwrap(), "a spot holds one base");
    assert_eq!(w.position("t", "b").await.unwrap(), None, "a refused placement leaves nothing");
    assert!(w.place("t", "b", &at(6, 5)).await.unwrap());
    assert!(w.place("t", "c", &at(9, 9)).await.unwrap());
    assert!(w.place("other", "z", &at(5, 6)).await.unwrap(), "titles have separate maps");
    // Moving frees the old spot.
    assert!(w.place("t", "a", &at(5, 7)).await.unwrap());
    assert_eq!(w.position("t", "a").await.unwrap(), Some(at(5, 7)));
    assert!(w.place("t", "d", &at(5, 5)).await.unwrap());
    let near: Vec<_> = w.near("t", &at(5, 5), 2, 10).await.unwrap().into_iter().map(|b| b.player).collect();
    assert_eq!(near, ["d", "b", "a"], "nearest first, within the square, this title only");
    assert_eq!(w.near("t", &at(5, 5), 2, 1).await.unwrap().len(), 1);
    let counts = w.region_counts("t", &["plain".to_string(), "hills".to_string()]).await.unwrap();
    assert_eq!(counts, BTreeMap::from([("plain".to_string(), 4), ("hills".to_string(), 0)]));
    // A move to another region counts there; a refused one nowhere.
    assert!(w.place("t", "c", &Position { region: "hills".into(), x: 1, y: 1 }).await.unwrap());
    assert!(!w.place("t", "e", &at(5, 5)).await.unwrap());
    let counts = w.region_counts("t", &["plain".to_string(), "hills".to_string()]).await.unwrap();
    assert_eq!(counts, BTreeMap::from([("plain".to_string(), 3), ("hills".to_string(), 1)]));
    let other = w.region_counts("other", &["plain".to_string()]).await.unwrap();
    assert_eq!(other, BTreeMap::from([("plain".to_string(), 1)]), "per title");
}

/// Many players racing for one spot: exactly one gets it.
async fn a_race_for_one_spot_has_one_winner(w: World) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.place("race", &format!("p{i}"), &Position { region: "r".into(), x: 1, y: 1 }).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(w.near("race", &Position { region: "r".into(), x: 1, y: 1 }, 0, 10).await.unwrap().len(), 1);
}

fn raid(id: &str, attacker: &str, started: i64) -> RaidRecord {
    RaidRecord {
        id: id.into(),
        title: "t".into(),
        attacker: attacker.into(),
        defender: "d".into(),
        token: 7,
        started_ms: started,
        expires_ms: started + 1000,
        status: RaidStatus::Started,
        defender_level: 3,
        lootable: BTreeMap::from([("gold".to_string(), 250)]),
        result: None,
        defender_applied: false,
    }
}

async fn raids_end_once_and_wait_for_their_defender(w: World) {
    w.insert_raid(&raid("r1", "a", 100)).await.unwrap();
    w.insert_raid(&raid("r2", "a", 200)).await.unwrap();
    assert_eq!(w.raid("r1").await.unwrap(), Some(raid("r1", "a", 100)));
    assert_eq!(w.last_raid("t", "a").await.unwrap().unwrap().id, "r2");
    assert_eq!(w.last_raid("t", "b").await.unwrap(), None);
    assert!(w.pending_defenses("t", "d").await.unwrap().is_empty(), "nothing ended yet");
    let mut ended = raid("r1", "a", 100);
    ended.status = RaidStatus::Ended;
    ended.result = Some(citadel_runtime::raid::RaidResult {
        victory: true,
        destruction_percent: 80,
        loot: BTreeMap::from([("gold".to_string(), 200)]),
        units_used: BTreeMap::from([("militia".to_string(), 3)]),
        seconds: 40,
        // A battle decided on the server keeps its army and log with it.
        units_sent: BTreeMap::from([("militia".to_string(), 10)]),
        log: vec![serde_json::json!({ "t": 15, "text": "the gate falls", "damage": 120 })],
    });
    assert!(w.end_raid(&ended).await.unwrap(), "the first result is taken");
    let mut other = ended.clone();
    other.result.as_mut().unwrap().victory = false;
    assert!(!w.end_raid(&other).await.unwrap(), "a second result for one raid is refused");
    assert_eq!(w.raid("r1").await.unwrap(), Some(ended.clone()));
    assert_eq!(w.pending_defenses("t", "d").await.unwrap(), vec![ended.clone()]);
    w.defense_applied("r1").await.unwrap();
    assert!(w.pending_defenses("t", "d").await.unwrap().is_empty());
    assert!(w.raid("r1").await.unwrap().unwrap().defender_applied);
}

fn clan(id: &str) -> Clan {
    Clan {
        title: "t".into(),
        id: id.to_lowercase(),
        name: id.into(),
        description: "we build".into(),
        open: true,
        members: 1,
        created_ms: 5,
    }
}

fn member(clan: &str, player: &str, role: &str) -> Member {
    Member { clan: clan.into(), player: player.into(), role: role.into(), joined_ms: 10 }
}

async fn clans_found_join_leave_and_disband(w: World) {
    assert_eq!(w.create_clan(&clan("Wolves"), "a", "chief").await.unwrap(), Joined::Joined);
    assert_eq!(
        w.create_clan(&clan("WOLVES"), "b", "chief").await.unwrap(),
        Joined::NoClan,
        "names are unique, any case"
    );
    assert_eq!(w.create_clan(&clan("Bears"), "a", "chief").await.unwrap(), Joined::AlreadyInClan);
    assert_eq!(w.clan("t", "bears").await.unwrap(), None, "a refused founding writes nothing");
    assert_eq!(w.membership("t", "b").await.unwrap(), None);
    assert_eq!(w.clan("t", "wolves").await.unwrap(), Some(clan("Wolves")));
    assert_eq!(w.join_clan("t", &member("wolves", "b", "member"), 3).await.unwrap(), Joined::Joined);
    assert_eq!(w.join_clan("t", &member("wolves", "b", "member"), 3).await.unwrap(), Joined::AlreadyInClan);
    assert_eq!(w.join_clan("t", &member("nope", "c", "member"), 3).await.unwrap(), Joined::NoClan);
    assert_eq!(w.join_clan("t", &member("wolves", "c", "member"), 3).await.unwrap(), Joined::Joined);
    assert_eq!(w.join_clan("t", &member("wolves", "d", "member"), 3).await.unwrap(), Joined::Full);
    assert_eq!(w.membership("t", "d").await.unwrap(), None, "a refused join leaves no member behind");
    assert_eq!(w.clan("t", "wolves").await.unwrap().unwrap().members, 3);
    let names: Vec<String> = w.members("t", "wolves").await.unwrap().into_iter().map(|m| m.player).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(w.set_role("t", "wolves", "b", "officer").await.unwrap());
    assert!(!w.set_role("t", "wolves", "d", "officer").await.unwrap());
    assert_eq!(w.membership("t", "b").await.unwrap().unwrap().role, "officer");
    assert!(w.leave_clan("t", "wolves", "c").await.unwrap());
    assert!(!w.leave_clan("t", "wolves", "c").await.unwrap(), "gone already");
    assert_eq!(w.clan("t", "wolves").await.unwrap().unwrap().members, 2);
    assert_eq!(w.join_clan("t", &member("wolves", "d", "member"), 3).await.unwrap(), Joined::Joined, "a seat freed");
    w.edit_clan("t", "wolves", "we raid", false).await.unwrap();
    let edited = w.clan("t", "wolves").await.unwrap().unwrap();
    assert_eq!((edited.description.as_str(), edited.open), ("we raid", false));
    // Requests and invitations.
    let ask = |p: &str, kind| ClanAsk { player: p.into(), kind, at_ms: 20 };
    w.put_ask("t", "wolves", &ask("e", Ask::Request)).await.unwrap();
    w.put_ask("t", "wolves", &ask("f", Ask::Invite)).await.unwrap();
    w.put_ask("t", "wolves", &ask("e", Ask::Request)).await.unwrap();
    assert_eq!(w.asks("t", "wolves").await.unwrap(), vec![ask("e", Ask::Request), ask("f", Ask::Invite)]);
    assert!(!w.take_ask("t", "wolves", "e", Ask::Invite).await.unwrap(), "e asked; nobody invited e");
    assert!(w.take_ask("t", "wolves", "e", Ask::Request).await.unwrap());
    // Search by prefix.
    assert_eq!(w.create_clan(&clan("Wolfpack"), "g", "chief").await.unwrap(), Joined::Joined);
    let found: Vec<String> = w.search_clans("t", "WOL", None, 10).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(found, ["wolfpack", "wolves"]);
    assert_eq!(w.search_clans("t", "wol", Some("wolfpack"), 10).await.unwrap().len(), 1, "the next page");
    // Disbanding removes everything.
    w.disband("t", "wolves").await.unwrap();
    assert_eq!(w.clan("t", "wolves").await.unwrap(), None);
    assert_eq!(w.membership("t", "a").await.unwrap(), None);
    assert!(w.asks("t", "wolves").await.unwrap().is_empty());
    assert_eq!(w.create_clan(&clan("Wolves"), "a", "chief").await.unwrap(), Joined::Joined, "the name is free again");
}

/// Many players racing for a clan's last seats: the clan never overfills.
async fn racing_joins_never_overfill_a_clan(w: World) {
    assert_eq!(w.create_clan(&clan("Crowd"), "founder", "chief").await.unwrap(), Joined::Joined);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.join_clan("t", &member("crowd", &format!("p{i}"), "member"), 5).await.unwrap()
        }));
    }
    let mut joined = 0;
    for t in tasks {
        joined += usize::from(t.await.unwrap() == Joined::Joined);
    }
    assert_eq!(joined, 4, "five seats, one the founder's");
    assert_eq!(w.members("t", "crowd").await.unwrap().len(), 5);
    assert_eq!(w.clan("t", "crowd").await.unwrap().unwrap().members, 5);
}

async fn clan_chat_keeps_history_and_limits_rate(w: World) {
    assert_eq!(w.create_clan(&clan("Talk"), "a", "chief").await.unwrap(), Joined::Joined);
    let limits = ChatLimits { rate_window_ms: 1000, rate_max: 3, history_max: 5 };
    for i in 0..3 {
        assert!(w.post_chat("t", "talk", "a", &format!("a{i}"), 100 + i, limits).await.unwrap().is_some());
    }
    assert!(w.post_chat("t", "talk", "a", "too fast", 200, limits).await.unwrap().is_none(), "4 within a second");
    assert!(w.post_chat("t", "talk", "b", "b0", 200, limits).await.unwrap().is_some(), "the rate is per player");
    for i in 0..3 {
        assert!(w.post_chat("t", "talk", "a", &format!("late{i}"), 1200 + i, limits).await.unwrap().is_some());
    }
    let lines = w.chat("t", "talk", None, 100).await.unwrap();
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["late2", "late1", "late0", "b0", "a2"], "newest first, the last 5 kept");
    let older = w.chat("t", "talk", Some(lines[1].seq), 2).await.unwrap();
    let texts: Vec<&str> = older.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["late0", "b0"], "paging back");
}

async fn restrictions_and_the_audit_log(w: World) {
    assert_eq!(w.restriction("mini", "ann").await.unwrap(), None);
    let ban = Restriction {
        title: "mini".into(),
        player: "ann".into(),
        banned_until_ms: 5000,
        reason: "cheating".into(),
        logged_out_ms: 1000,
    };
    w.put_restriction(&ban).await.unwrap();
    assert_eq!(w.restriction("mini", "ann").await.unwrap(), Some(ban.clone()));
    assert!(ban.banned(4999) && !ban.banned(5000));
    let lifted = Restriction { banned_until_ms: 0, ..ban.clone() };
    w.put_restriction(&lifted).await.unwrap();
    assert_eq!(w.restriction("mini", "ann").await.unwrap(), Some(lifted), "replaced");
    assert_eq!(w.restriction("mini", "bob").await.unwrap(), None, "per player");

    let entry = |i: i64, player: &str| AuditEntry {
        id: format!("{i:013}-s1-{i}"),
        at_ms: i,
        admin: "ops".into(),
        server: "s1".into(),
        action: "grant".into(),
        title: "mini".into(),
        player: player.into(),
        reason: String::new(),
        before: serde_json::json!({ "gold": i }),
        after: serde_json::json!({ "gold": i + 1 }),
    };
    for i in 1..=5 {
        w.audit(&entry(i * 10, if i % 2 == 0 { "bob" } else { "ann" })).await.unwrap();
    }
    let at = |v: Vec<AuditEntry>| v.iter().map(|e| e.at_ms).collect::<Vec<_>>();
    assert_eq!(at(w.audit_log(None, None, 3).await.unwrap()), [50, 40, 30], "newest first, paged");
    assert_eq!(at(w.audit_log(None, Some(30), 10).await.unwrap()), [20, 10], "the page before");
    assert_eq!(at(w.audit_log(Some(("mini", "ann")), None, 10).await.unwrap()), [50, 30, 10], "one player's");
    assert_eq!(w.audit_log(Some(("mini", "bob")), None, 1).await.unwrap(), [entry(40, "bob")], "whole entries");
}

fn item(player: &str, id: &str, created: i64) -> InboxItem {
    InboxItem {
        id: id.into(),
        title: "mini".into(),
        player: player.into(),
        kind: "gift".into(),
        from: "bob".into(),
        body: serde_json::json!({ "text": format!("gift {id}") }),
        resources: BTreeMap::from([("gold".to_string(), 5)]),
        items: BTreeMap::new(),
        created_ms: created,
        expires_ms: created + 1000,
        claimed_ms: None,
        revoked_ms: None,
    }
}

async fn the_inbox_adds_once_caps_expires_and_is_claimed_once(w: World) {
    assert_eq!(w.put_inbox(&item("ann", "a", 100), 3).await.unwrap(), InboxPut::Added);
    assert_eq!(w.put_inbox(&item("ann", "a", 100), 3).await.unwrap(), InboxPut::Exists, "sent twice, kept once");
    assert_eq!(w.put_inbox(&item("ann", "b", 200), 3).await.unwrap(), InboxPut::Added);
    assert_eq!(w.put_inbox(&item("ann", "c", 300), 3).await.unwrap(), InboxPut::Added);
    assert_eq!(w.put_inbox(&item("ann", "d", 400), 3).await.unwrap(), InboxPut::Full, "three unclaimed at most");
    assert_eq!(w.put_inbox(&item("bob", "a", 100), 3).await.unwrap(), InboxPut::Added, "per player");
    let ids = |v: Vec<InboxItem>| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(w.unclaimed("mini", "ann", 500, 10).await.unwrap()), ["a", "b", "c"], "oldest first");
    assert_eq!(w.unclaimed("mini", "ann", 500, 10).await.unwrap()[0], item("ann", "a", 100), "whole items");
    // Many claims of one item at once: one wins.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let w = w.clone();
            tokio::spawn(async move { w.claim("mini", "ann", "a", 600).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1, "claimed exactly once");
    assert!(!w.claim("mini", "ann", "zzz", 600).await.unwrap(), "no such item");
    assert_eq!(ids(w.unclaimed("mini", "ann", 600, 10).await.unwrap()), ["b", "c"]);
    let all = w.inbox("mini", "ann", 600, 10).await.unwrap();
    assert_eq!(ids(all.clone()), ["c", "b", "a"], "newest first, claimed ones too");
    assert_eq!(all[2].claimed_ms, Some(600));
    assert_eq!(all[0].claimed_ms, None);
    assert_eq!(w.put_inbox(&item("ann", "d", 700), 3).await.unwrap(), InboxPut::Added, "room once one is claimed");
    // a expires at 1100, b at 1200: gone from both lists, and from the count.
    assert_eq!(ids(w.inbox("mini", "ann", 1150, 10).await.unwrap()), ["d", "c", "b"]);
    assert_eq!(ids(w.unclaimed("mini", "ann", 1250, 10).await.unwrap()), ["c", "d"]);
    assert_eq!(w.put_inbox(&item("ann", "e", 1300), 3).await.unwrap(), InboxPut::Added);
    assert_eq!(
        w.put_inbox(&item("ann", "f", 1350), 3).await.unwrap(),
        InboxPut::Added,
        "expired ones count for nothing"
    );
    assert_eq!(ids(w.unclaimed("mini", "ann", 1360, 10).await.unwrap()), ["d", "e", "f"]);
}

fn identity(provider: &str, subject: &str, account: &str, at: i64) -> Identity {
    Identity {
        provider: provider.into(),
        subject: subject.into(),
        account: account.into(),
        secret_hash: if provider == "guest" { format!("hash of {subject}") } else { String::new() },
        linked_ms: at,
    }
}

async fn accounts_link_identities_once_and_keep_one_player_per_title(w: World) {
    let ann = Account { id: "acc-ann".into(), created_ms: 100, last_login_ms: 100, flagged: false };
    assert!(w.create_account(&ann, &identity("guest", "dev-1", "acc-ann", 100)).await.unwrap());
    assert_eq!(w.account("acc-ann").await.unwrap(), Some(ann.clone()));
    assert_eq!(w.account("acc-nobody").await.unwrap(), None);
    assert_eq!(w.identity("guest", "dev-1").await.unwrap(), Some(identity("guest", "dev-1", "acc-ann", 100)));
    assert_eq!(w.identity("guest", "dev-2").await.unwrap(), None);
    // The same device again makes nothing: its identity is taken.
    let other = Account { id: "acc-other".into(), ..ann.clone() };
    assert!(!w.create_account(&other, &identity("guest", "dev-1", "acc-other", 150)).await.unwrap());
    assert_eq!(w.account("acc-other").await.unwrap(), None, "nothing written");
    assert_eq!(w.identity("guest", "dev-1").await.unwrap().unwrap().account, "acc-ann");
    // A platform identity, linked once; a second link anywhere is refused.
    let issuer = "https://id.example.com";
    assert!(w.link_identity(&identity(issuer, "sub-9", "acc-ann", 200)).await.unwrap());
    let bob = Account { id: "acc-bob".into(), created_ms: 250, last_login_ms: 250, flagged: false };
    assert!(w.create_account(&bob, &identity("guest", "dev-3", "acc-bob", 250)).await.unwrap());
    assert!(!w.link_identity(&identity(issuer, "sub-9", "acc-bob", 300)).await.unwrap(), "linked to ann");
    assert!(!w.link_identity(&identity(issuer, "sub-9", "acc-ann", 300)).await.unwrap(), "linked already");
    let linked: Vec<_> = w.identities("acc-ann").await.unwrap().into_iter().map(|i| i.subject).collect();
    assert_eq!(linked, ["dev-1", "sub-9"], "oldest first");
    assert_eq!(w.identity(issuer, "sub-9").await.unwrap().unwrap().account, "acc-ann");
    // Logins only move forward; a flag sticks; an unknown account is an error.
    w.account_login("acc-ann", 500).await.unwrap();
    w.account_login("acc-ann", 400).await.unwrap();
    w.set_flagged("acc-ann", true).await.unwrap();
    let now = w.account("acc-ann").await.unwrap().unwrap();
    assert_eq!((now.last_login_ms, now.flagged, now.created_ms), (500, true, 100));
    assert!(w.account_login("acc-nobody", 500).await.is_err());
    assert!(w.set_flagged("acc-nobody", true).await.is_err());
    // One player per title: racing first logins agree on one.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let w = w.clone();
            tokio::spawn(async move { w.title_player("acc-ann", "mini", &format!("p{i}")).await.unwrap() })
        })
        .collect();
    let mut chosen = std::collections::BTreeSet::new();
    for r in racers {
        chosen.insert(r.await.unwrap());
    }
    assert_eq!(chosen.len(), 1, "one player for the title: {chosen:?}");
    let p = chosen.into_iter().next().unwrap();
    assert_eq!(w.title_player("acc-ann", "mini", "later").await.unwrap(), p, "kept");
    assert_eq!(w.title_player("acc-ann", "fort", "f1").await.unwrap(), "f1", "another title, another player");
    assert_eq!(w.title_player("acc-bob", "mini", "b1").await.unwrap(), "b1", "another account");
    // A login in one call: recorded, and the same player.
    assert_eq!(w.enter("acc-ann", "mini", "other", 900).await.unwrap(), p);
    assert_eq!(w.account("acc-ann").await.unwrap().unwrap().last_login_ms, 900);
    assert_eq!(w.enter("acc-bob", "fort", "b2", 950).await.unwrap(), "b2", "a first login to a title");
    assert!(w.enter("acc-nobody", "mini", "n1", 950).await.is_err());
}

async fn an_inbox_item_is_revoked_only_while_unclaimed(w: World) {
    assert_eq!(w.put_inbox(&item("ann", "p1", 100), 10).await.unwrap(), InboxPut::Added);
    assert_eq!(w.put_inbox(&item("ann", "p2", 100), 10).await.unwrap(), InboxPut::Added);
    assert!(w.claim("mini", "ann", "p2", 150).await.unwrap());
    assert_eq!(w.revoke_inbox("mini", "ann", "p1", 200).await.unwrap(), InboxRevoke::Unclaimed);
    assert_eq!(w.revoke_inbox("mini", "ann", "p1", 300).await.unwrap(), InboxRevoke::Claimed, "revoked once");
    assert!(!w.claim("mini", "ann", "p1", 300).await.unwrap(), "a revoked item is never claimed");
    assert_eq!(w.revoke_inbox("mini", "ann", "p2", 300).await.unwrap(), InboxRevoke::Claimed);
    assert_eq!(w.revoke_inbox("mini", "ann", "nope", 300).await.unwrap(), InboxRevoke::Missing);
    assert!(w.unclaimed("mini", "ann", 400, 10).await.unwrap().is_empty());
    let all = w.inbox("mini", "ann", 400, 10).await.unwrap();
    let p1 = all.iter().find(|i| i.id == "p1").unwrap();
    assert_eq!((p1.claimed_ms, p1.revoked_ms), (Some(200), Some(200)));
    let p2 = all.iter().find(|i| i.id == "p2").unwrap();
    assert_eq!((p2.claimed_ms, p2.revoked_ms), (Some(150), None));
}

fn payment(id: &str, account: &str, player: &str, created: i64) -> Payment {
    Payment {
        provider: "paybox".into(),
        id: id.into(),
        account: account.into(),
        title: "mini".into(),
        player: player.into(),
        product: "gem_pouch".into(),
        resources: BTreeMap::from([("gems".to_string(), 100)]),
        items: BTreeMap::new(),
        amount: 499,
        currency: "EUR".into(),
        state: PaymentState::Recorded,
        created_ms: created,
        delivered_ms: None,
        revoked_ms: None,
        revoked_reason: String::new(),
    }
}

async fn payments_are_recorded_once_and_move_forward_once(w: World) {
    // Many gateways record the same notification at once: one does.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let w = w.clone();
            tokio::spawn(async move { w.record_payment(&payment("pay-1", "acc-ann", "ann", 100)).await.unwrap() })
        })
        .collect();
    let mut recorded = 0;
    for r in racers {
        recorded += usize::from(r.await.unwrap());
    }
    assert_eq!(recorded, 1, "recorded exactly once");
    assert_eq!(w.payment("paybox", "pay-1").await.unwrap(), Some(payment("pay-1", "acc-ann", "ann", 100)));
    assert_eq!(w.payment("other", "pay-1").await.unwrap(), None, "ids are per provider");
    assert!(w.record_payment(&payment("pay-2", "acc-ann", "ann", 200)).await.unwrap());
    assert!(w.record_payment(&payment("pay-3", "acc-bob", "bob", 300)).await.unwrap());
    let ids = |v: Vec<Payment>| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(w.undelivered(10).await.unwrap()), ["pay-1", "pay-2", "pay-3"], "oldest first");
    // Delivered once: a second gateway's move finds it moved.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let w = w.clone();
            tokio::spawn(async move {
                w.payment_moved("paybox", "pay-1", PaymentState::Recorded, PaymentState::Delivered, 400, "")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut moved = 0;
    for r in racers {
        moved += usize::from(r.await.unwrap());
    }
    assert_eq!(moved, 1, "delivered exactly once");
    assert_eq!(ids(w.undelivered(10).await.unwrap()), ["pay-2", "pay-3"]);
    let p1 = w.payment("paybox", "pay-1").await.unwrap().unwrap();
    assert_eq!((p1.state, p1.delivered_ms), (PaymentState::Delivered, Some(400)));
    assert!(w
        .payment_moved("paybox", "pay-1", PaymentState::Delivered, PaymentState::Revoked, 500, "refund")
        .await
        .unwrap());
    assert!(!w
        .payment_moved("paybox", "pay-1", PaymentState::Delivered, PaymentState::Revoked, 600, "chargeback")
        .await
        .unwrap());
    let p1 = w.payment("paybox", "pay-1").await.unwrap().unwrap();
    assert_eq!((p1.state, p1.revoked_ms, p1.revoked_reason.as_str()), (PaymentState::Revoked, Some(500), "refund"));
    assert!(!w
        .payment_moved("paybox", "nope", PaymentState::Recorded, PaymentState::Delivered, 600, "")
        .await
        .unwrap());
    // Support finds them by account, by player, or all, newest first.
    assert_eq!(ids(w.payments(PaymentsOf::All, None, 10).await.unwrap()), ["pay-3", "pay-2", "pay-1"]);
    assert_eq!(ids(w.payments(PaymentsOf::All, Some(300), 10).await.unwrap()), ["pay-2", "pay-1"]);
    assert_eq!(ids(w.payments(PaymentsOf::Account("acc-ann"), None, 10).await.unwrap()), ["pay-2", "pay-1"]);
    let bob = PaymentsOf::Player { title: "mini", player: "bob" };
    assert_eq!(ids(w.payments(bob, None, 10).await.unwrap()), ["pay-3"]);
    assert_eq!(ids(w.payments(PaymentsOf::All, None, 1).await.unwrap()), ["pay-3"]);
}

/// Runs one conformance case on SQLite and on the MongoDB wire server.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(sqlite()).await;
                }
            )*
        }
        mod mongo_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    if let Some(w) = mongo(concat!("world conformance on MongoDB: ", stringify!($case))).await {
                        super::$case(w).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    leases_exclude_renew_expire_and_fence,
    an_unreleased_lease_passes_a_duty_to_recover,
    a_race_of_many_contenders_has_one_winner,
    servers_register_heartbeat_and_expire,
    player_info_lookup_search_and_paging,
    top_scores_windows_ranks_and_ties,
    map_places_moves_and_finds_neighbours,
    a_race_for_one_spot_has_one_winner,
    raids_end_once_and_wait_for_their_defender,
    clans_found_join_leave_and_disband,
    racing_joins_never_overfill_a_clan,
    clan_chat_keeps_history_and_limits_rate,
    restrictions_and_the_audit_log,
    the_inbox_adds_once_caps_expires_and_is_claimed_once,
    accounts_link_identities_once_and_keep_one_player_per_title,
    an_inbox_item_is_revoked_only_while_unclaimed,
    payments_are_recorded_once_and_move_forward_once,
);

/// Servers that start together on one SQLite file (`citadel cluster`) all
/// open it: none is refused because another is setting it up.
#[test]
fn many_servers_open_one_sqlite_file_at_once() {
    let p = std::env::temp_dir().join(format!("{}.sqlite3", support::unique("citadel-world-many")));
    let opened: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || SqliteWorld::open(&p).map(drop))
        })
        .collect();
    for o in opened {
        o.join().unwrap().expect("opened");
    }
}

/// A database from before bases were counted per region: its bases are
/// counted when a server opens it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_gains_its_region_counts_at_open() {
    use citadel_store::world::Scores;
    let p = std::env::temp_dir().join(format!("{}.sqlite3", support::unique("citadel-world-counts")));
    let w = SqliteWorld::open(&p).unwrap();
    let at = |x| Position { region: "plain".into(), x, y: 0 };
    for (i, who) in ["a", "b", "c"].iter().enumerate() {
        assert!(w.place("t", who, &at(i as i32)).await.unwrap());
    }
    drop(w);
    // What an older server left: the positions, no counts.
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute("DELETE FROM region_counts", []).unwrap();
    drop(c);
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || SqliteWorld::open(&p).unwrap())
        })
        .collect();
    let worlds: Vec<SqliteWorld> = opened.into_iter().map(|o| o.join().unwrap()).collect();
    let counts = worlds[0].region_counts("t", &["plain".to_string()]).await.unwrap();
    assert_eq!(counts, BTreeMap::from([("plain".to_string(), 3)]), "counted once, by whichever opened first");
}

/// Calls run on the caller's thread and never checkpoint: the store's own
/// thread copies the write-ahead log into the database file within a few
/// seconds, or the log would grow for as long as the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_reaches_the_database_file() {
    use citadel_store::world::Players;
    let p = std::env::temp_dir().join(format!("{}.sqlite3", support::unique("citadel-world-wal")));
    let w = SqliteWorld::open(&p).unwrap();
    let before = std::fs::metadata(&p).unwrap().len();
    // 2,000 players of about 1 KB each: 2 MB, below SQLite's own automatic
    // checkpoint (1,000 pages, 4 MB), which would hide a missing one.
    for i in 0..2_000 {
        let mut one = info("t", &format!("p{i}"), &format!("name{i}"), 1);
        one.name = format!("{}{}", one.name, "x".repeat(1_000));
        w.put_info(&one).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut size = std::fs::metadata(&p).unwrap().len();
    while size < before + 2_000_000 {
        assert!(std::time::Instant::now() < deadline, "the database file stayed at {size} bytes (from {before})");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        size = std::fs::metadata(&p).unwrap().len();
    }
    let back = w.info("t", "p1999").await.unwrap().expect("stored");
    assert!(back.name.starts_with("name1999x"));
}
