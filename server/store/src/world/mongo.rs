//! The MongoDB world store, for servers on several machines. Documents
//! (server status, player info, raids) are stored as JSON text in `doc`
//! beside the fields their queries and indexes use, so that decoding never
//! depends on how a server chose to store a number. Times are i64 epoch ms.

use std::collections::BTreeMap;

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::IndexModel;

use super::*;

/// Where the MongoDB world store lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string, e.g. `mongodb://db1:27017,db2:27017/?replicaSet=rs0`.
    pub uri: String,
    /// Database holding Citadel's collections.
    #[serde(default = "default_database")]
    pub database: String,
}

fn default_database() -> String {
    "citadel".into()
}

impl MongoConfig {
    /// The default database at `uri`.
    pub fn new(uri: impl Into<String>) -> MongoConfig {
        MongoConfig { uri: uri.into(), database: default_database() }
    }
}

/// MongoDB backend: one document per lock in `locks` (`_id` is the lock's
/// name), and the fencing counter in `counters`. Times are i64 epoch ms.
#[derive(Debug, Clone)]
pub struct MongoWorld {
    locks: mongodb::Collection<Document>,
    counters: mongodb::Collection<Document>,
    servers: mongodb::Collection<Document>,
    players: mongodb::Collection<Document>,
    scores: mongodb::Collection<Document>,
    positions: mongodb::Collection<Document>,
    raids: mongodb::Collection<Document>,
    clans: mongodb::Collection<Document>,
    clan_members: mongodb::Collection<Document>,
    clan_asks: mongodb::Collection<Document>,
    clan_chat: mongodb::Collection<Document>,
    restrictions: mongodb::Collection<Document>,
    audit: mongodb::Collection<Document>,
    journal_homes: mongodb::Collection<Document>,
    inbox: mongodb::Collection<Document>,
    accounts: mongodb::Collection<Document>,
    identities: mongodb::Collection<Document>,
    title_players: mongodb::Collection<Document>,
    payments: mongodb::Collection<Document>,
}

/// How long to wait for a MongoDB server at start and per operation
/// before failing (instead of the driver's 30 s).
const MONGO_SELECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn mongo(e: mongodb::error::Error) -> WorldError {
    WorldError::Db(e.to_string())
}

/// A duplicate key error: an upsert lost a race for the same `_id`.
fn duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        _ => e.to_string().contains("E11000"),
    }
}

impl MongoWorld {
    pub async fn connect(config: &MongoConfig) -> Result<MongoWorld, WorldError> {
        let mut options = mongodb::options::ClientOptions::parse(&config.uri).await.map_err(mongo)?;
        options.server_selection_timeout = Some(MONGO_SELECT_TIMEOUT);
        options.app_name = Some("citadel".into());
        let client = mongodb::Client::with_options(options).map_err(mongo)?;
        let db = client.database(&config.database);
        // Fails now, not at the first login, when the server is unreachable.
        db.run_command(mongodb::bson::doc! { "ping": 1 }).await.map_err(mongo)?;
        let w = MongoWorld {
            locks: db.collection("locks"),
            counters: db.collection("counters"),
            servers: db.collection("servers"),
            players: db.collection("players"),
            scores: db.collection("scores"),
            positions: db.collection("positions"),
            raids: db.collection("raids"),
            clans: db.collection("clans"),
            clan_members: db.collection("clan_members"),
            clan_asks: db.collection("clan_asks"),
            clan_chat: db.collection("clan_chat"),
            restrictions: db.collection("restrictions"),
            audit: db.collection("audit"),
            journal_homes: db.collection("journal_homes"),
            inbox: db.collection("inbox"),
            accounts: db.collection("accounts"),
            identities: db.collection("identities"),
            title_players: db.collection("title_players"),
            payments: db.collection("payments"),
        };
        w.create_indexes().await?;
        Ok(w)
    }

    /// The indexes every query here walks (idempotent: existing ones stay).
    async fn create_indexes(&self) -> Result<(), WorldError> {
        let index = |keys: Document, unique: bool| {
            IndexModel::builder().keys(keys).options(IndexOptions::builder().unique(unique).build()).build()
        };
        self.players
            .create_index(index(doc! { "title": 1, "name_key": 1, "player": 1 }, false))
            .await
            .map_err(mongo)?;
        self.scores
            .create_index(index(doc! { "title": 1, "stat": 1, "win": 1, "value": -1, "player": 1 }, false))
            .await
            .map_err(mongo)?;
        self.positions
            .create_index(index(doc! { "title": 1, "region": 1, "x": 1, "y": 1 }, true))
            .await
            .map_err(mongo)?;
        self.raids
            .create_index(index(doc! { "title": 1, "attacker": 1, "started_ms": -1 }, false))
            .await
            .map_err(mongo)?;
        self.raids
            .create_index(index(doc! { "title": 1, "defender": 1, "status": 1, "defender_applied": 1 }, false))
            .await
            .map_err(mongo)?;
        self.servers.create_index(index(doc! { "heartbeat_ms": 1 }, false)).await.map_err(mongo)?;
        for keys in [
            doc! { "state": 1, "created_ms": 1 },
            doc! { "created_ms": -1 },
            doc! { "account": 1, "created_ms": -1 },
            doc! { "title": 1, "player": 1, "created_ms": -1 },
        ] {
            self.payments.create_index(index(keys, false)).await.map_err(mongo)?;
        }
        self.identities.create_index(index(doc! { "account": 1, "linked_ms": 1 }, false)).await.map_err(mongo)?;
        self.inbox
            .create_index(index(doc! { "title": 1, "player": 1, "created_ms": 1 }, false))
            .await
            .map_err(mongo)?;
        self.clans.create_index(index(doc! { "title": 1, "id": 1 }, false)).await.map_err(mongo)?;
        self.clan_members
            .create_index(index(doc! { "title": 1, "clan": 1, "joined_ms": 1 }, false))
            .await
            .map_err(mongo)?;
        self.clan_asks.create_index(index(doc! { "title": 1, "clan": 1, "at_ms": 1 }, false)).await.map_err(mongo)?;
        self.clan_chat.create_index(index(doc! { "title": 1, "clan": 1, "seq": -1 }, false)).await.map_err(mongo)?;
        self.clan_chat
            .create_index(index(doc! { "title": 1, "clan": 1, "player": 1, "at_ms": 1 }, false))
            .await
            .map_err(mongo)?;
        // Ordered by `id` (a copy of `_id`): an index over `_id` itself
        // is not for every MongoDB-compatible server.
        self.audit.create_index(index(doc! { "at_ms": -1, "id": -1 }, false)).await.map_err(mongo)?;
        self.audit
            .create_index(index(doc! { "title": 1, "player": 1, "at_ms": -1, "id": -1 }, false))
            .await
            .map_err(mongo)?;
        Ok(())
    }

    /// Every document a query finds.
    async fn all(
        &self,
        c: &mongodb::Collection<Document>,
        filter: Document,
        sort: Document,
        skip: u64,
        limit: i64,
    ) -> Result<Vec<Document>, WorldError> {
        let mut cursor = c.find(filter).sort(sort).skip(skip).limit(limit).await.map_err(mongo)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(mongo)? {
            out.push(cursor.deserialize_current().map_err(mongo)?);
        }
        Ok(out)
    }

    /// A top score row that exists.
    async fn score_row(&self, id: &str) -> Result<Document, WorldError> {
        self.scores
            .find_one(doc! { "_id": id })
            .await
            .map_err(mongo)?
            .ok_or_else(|| WorldError::Db(format!("score row {id} vanished")))
    }

    /// Increments a counter that exists.
    async fn increment_existing(&self, id: &str) -> Result<Document, WorldError> {
        self.counters
            .find_one_and_update(doc! { "_id": id }, doc! { "$inc": { "last": 1_i64 } })
            .return_document(ReturnDocument::After)
            .await
            .map_err(mongo)?
            .ok_or_else(|| WorldError::Db(format!("the counter {id} vanished")))
    }

    /// The next value of a counter (1 first).
    async fn next(&self, id: &str) -> Result<i64, WorldError> {
        let after = self
            .counters
            .find_one_and_update(doc! { "_id": id }, doc! { "$inc": { "last": 1_i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        let d = match after {
            Ok(Some(d)) => d,
            // Two first-ever increments raced to create the counter (E11000,
            // or a stand-in answered nothing): it exists now; increment again.
            Ok(None) => self.increment_existing(id).await?,
            Err(e) if duplicate_key(&e) => self.increment_existing(id).await?,
            Err(e) => return Err(mongo(e)),
        };
        number(&d, "last").ok_or_else(|| WorldError::Db(format!("the counter {id} is not a number")))
    }

    /// The next fencing token.
    async fn next_token(&self) -> Result<i64, WorldError> {
        self.next("fence").await
    }
}

/// An integer field, whichever integer type the server stored it as.
fn number(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

#[async_trait]
impl Locks for MongoWorld {
    async fn acquire(&self, name: &str, owner: &str, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        // Read the lock, then write it only if it is still what was read
        // (its fencing token is unique per grant): the new grant carries
        // the stored duty to recover, which no single update can compute.
        // Two writers racing for a free lock both insert the same `_id`:
        // MongoDB refuses the second with E11000.
        let held = self.locks.find_one(doc! { "_id": name }).await.map_err(mongo)?;
        let token = self.next_token().await?;
        let expires_ms = now_ms + ttl_ms;
        let (recover_from, written) = match held {
            None => {
                let d = doc! { "_id": name, "owner": owner, "token": token, "expires_ms": expires_ms, "recover_from": Bson::Null };
                match self.locks.insert_one(d).await {
                    Ok(_) => (None, true),
                    Err(e) if duplicate_key(&e) => return Ok(None),
                    Err(e) => return Err(mongo(e)),
                }
            }
            Some(d) => {
                let holder = d.get_str("owner").unwrap_or_default().to_string();
                let expires = number(&d, "expires_ms").unwrap_or(0);
                if holder != owner && expires > now_ms {
                    return Ok(None);
                }
                let duty = d.get_str("recover_from").ok().map(str::to_string);
                let recover_from = duty_after(holder, expires, duty, now_ms);
                let old_token = number(&d, "token").unwrap_or(0);
                let r = self
                    .locks
                    .update_one(
                        doc! { "_id": name, "token": old_token },
                        doc! { "$set": { "owner": owner, "token": token, "expires_ms": expires_ms,
                        "recover_from": recover_from.clone().map_or(Bson::Null, Bson::String) } },
                    )
                    .await
                    .map_err(mongo)?;
                (recover_from, r.matched_count == 1)
            }
        };
        Ok(written.then(|| Lease { name: name.to_string(), owner: owner.to_string(), token, expires_ms, recover_from }))
    }

    async fn renew(&self, lease: &Lease, ttl_ms: i64, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        let expires_ms = now_ms + ttl_ms;
        let r = self
            .locks
            .update_one(
                doc! { "_id": &lease.name, "owner": &lease.owner, "token": lease.token },
                doc! { "$set": { "expires_ms": expires_ms } },
            )
            .await
            .map_err(mongo)?;
        Ok((r.matched_count == 1).then(|| Lease { expires_ms, ..lease.clone() }))
    }

    async fn release(&self, lease: &Lease) -> Result<(), WorldError> {
        let mine = doc! { "_id": &lease.name, "owner": &lease.owner, "token": lease.token };
        if lease.recover_from.is_some() {
            // Left expired, with its duty, for the next holder.
            self.locks.update_one(mine, doc! { "$set": { "expires_ms": 0_i64 } }).await.map_err(mongo)?;
        } else {
            self.locks.delete_one(mine).await.map_err(mongo)?;
        }
        Ok(())
    }

    async fn recovered(&self, lease: &Lease) -> Result<Option<Lease>, WorldError> {
        let r = self
            .locks
            .update_one(
                doc! { "_id": &lease.name, "owner": &lease.owner, "token": lease.token },
                doc! { "$set": { "recover_from": Bson::Null } },
            )
            .await
            .map_err(mongo)?;
        Ok((r.matched_count == 1).then(|| Lease { recover_from: None, ..lease.clone() }))
    }

    async fn holder(&self, name: &str, now_ms: i64) -> Result<Option<Lease>, WorldError> {
        let d = self.locks.find_one(doc! { "_id": name, "expires_ms": { "$gt": now_ms } }).await.map_err(mongo)?;
        Ok(d.and_then(|d| {
            Some(Lease {
                name: name.to_string(),
                owner: d.get_str("owner").ok()?.to_string(),
                token: number(&d, "token")?,
                expires_ms: number(&d, "expires_ms")?,
                recover_from: d.get_str("recover_from").ok().map(str::to_string),
            })
        }))
    }
}

#[async_trait]
impl Servers for MongoWorld {
    async fn heartbeat(&self, status: &ServerStatus) -> Result<(), WorldError> {
        self.servers
            .replace_one(
                doc! { "_id": &status.id },
                doc! { "_id": &status.id, "heartbeat_ms": status.heartbeat_ms, "doc": to_json(status)? },
            )
            .upsert(true)
            .await
            .map_err(mongo)?;
        Ok(())
    }

    async fn servers(&self, now_ms: i64, stale_ms: i64) -> Result<Vec<ServerStatus>, WorldError> {
        self.servers.delete_many(doc! { "heartbeat_ms": { "$lte": now_ms - stale_ms } }).await.map_err(mongo)?;
        let docs = self.all(&self.servers, doc! {}, doc! { "_id": 1 }, 0, 0).await?;
        docs.iter().map(decode).collect()
    }

    async fn deregister(&self, id: &str) -> Result<(), WorldError> {
        self.servers.delete_one(doc! { "_id": id }).await.map_err(mongo)?;
        Ok(())
    }

    async fn put_journal_home(&self, home: &JournalHome) -> Result<(), WorldError> {
        let d = doc! { "_id": &home.server, "doc": to_json(home)? };
        self.journal_homes.replace_one(doc! { "_id": &home.server }, d).upsert(true).await.map_err(mongo)?;
        Ok(())
    }

    async fn journal_home(&self, server: &str) -> Result<Option<JournalHome>, WorldError> {
        let d = self.journal_homes.find_one(doc! { "_id": server }).await.map_err(mongo)?;
        d.as_ref().map(decode).transpose()
    }
}

#[async_trait]
impl Players for MongoWorld {
    async fn put_info(&self, info: &PlayerInfo) -> Result<(), WorldError> {
        let id = format!("{}/{}", info.title, info.player);
        let d = doc! {
            "_id": &id, "title": &info.title, "player": &info.player,
            "name_key": name_key(&info.name), "doc": to_json(info)?,
        };
        self.players.replace_one(doc! { "_id": &id }, d).upsert(true).await.map_err(mongo)?;
        Ok(())
    }

    async fn info(&self, title: &str, player: &str) -> Result<Option<PlayerInfo>, WorldError> {
        let d = self.players.find_one(doc! { "_id": format!("{title}/{player}") }).await.map_err(mongo)?;
        d.as_ref().map(decode).transpose()
    }

    async fn search(
        &self,
        title: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<PlayerInfo>, WorldError> {
        let low = name_key(prefix);
        let mut filter = doc! { "title": title, "name_key": { "$gte": &low, "$lt": prefix_end(&low) } };
        if let Some((name, player)) = after {
            let key = name_key(name);
            filter.insert(
                "$or",
                vec![
                    Bson::Document(doc! { "name_key": { "$gt": &key } }),
                    Bson::Document(doc! { "name_key": &key, "player": { "$gt": player } }),
                ],
            );
        }
        let docs = self.all(&self.players, filter, doc! { "name_key": 1, "player": 1 }, 0, page(limit) as i64).await?;
        docs.iter().map(decode).collect()
    }

    async fn restriction(&self, title: &str, player: &str) -> Result<Option<Restriction>, WorldError> {
        let d = self.restrictions.find_one(doc! { "_id": format!("{title}/{player}") }).await.map_err(mongo)?;
        d.as_ref().map(decode).transpose()
    }

    async fn put_restriction(&self, r: &Restriction) -> Result<(), WorldError> {
        let id = format!("{}/{}", r.title, r.player);
        let d = doc! { "_id": &id, "doc": to_json(r)? };
        self.restrictions.replace_one(doc! { "_id": &id }, d).upsert(true).await.map_err(mongo)?;
        Ok(())
    }
}

#[async_trait]
impl Scores for MongoWorld {
    async fn set_score(
        &self,
        title: &str,
        stat: &str,
        player: &str,
        windows: &[String],
        before: i64,
        after: i64,
    ) -> Result<(), WorldError> {
        for w in windows {
            let id = format!("{title}/{stat}/{w}/{player}");
            let base = if w == ALL_TIME { 0 } else { before };
            // Read, then insert a new row with its base or update the value
            // from the base the row has (no `$setOnInsert` or update
            // pipelines: a stand-in may not evaluate them). An insert that
            // loses a race to another insert updates instead.
            let existing = self.scores.find_one(doc! { "_id": &id }).await.map_err(mongo)?;
            if existing.is_none() {
                let row = doc! {
                    "_id": &id, "title": title, "stat": stat, "win": w, "player": player,
                    "base": base, "value": after - base,
                };
                match self.scores.insert_one(row).await {
                    Ok(_) => continue,
                    Err(e) if duplicate_key(&e) => {}
                    Err(e) => return Err(mongo(e)),
                }
            }
            let row = match existing {
                Some(d) => d,
                None => self.score_row(&id).await?,
            };
            let base = number(&row, "base").unwrap_or(base);
            if number(&row, "value") != Some(after - base) {
                self.scores
                    .update_one(doc! { "_id": &id }, doc! { "$set": { "value": after - base } })
                    .await
                    .map_err(mongo)?;
            }
        }
        Ok(())
    }

    async fn top(&self, board: Board<'_>, offset: usize, limit: usize) -> Result<Vec<ScoreRow>, WorldError> {
        let offset = offset.min(TOP_OFFSET_MAX);
        let filter = doc! { "title": board.title, "stat": board.stat, "win": board.window };
        let docs = self
            .all(&self.scores, filter, doc! { "value": -1, "player": 1 }, offset as u64, page(limit) as i64)
            .await?;
        Ok(docs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                Some(ScoreRow {
                    rank: (offset + i + 1) as u64,
                    player: d.get_str("player").ok()?.to_string(),
                    value: number(d, "value")?,
                })
            })
            .collect())
    }

    async fn rank(&self, board: Board<'_>, player: &str) -> Result<Option<ScoreRow>, WorldError> {
        let id = format!("{}/{}/{}/{player}", board.title, board.stat, board.window);
        let Some(d) = self.scores.find_one(doc! { "_id": &id }).await.map_err(mongo)? else { return Ok(None) };
        let value = number(&d, "value").unwrap_or(0);
        let above = self
            .scores
            .count_documents(doc! {
                "title": board.title, "stat": board.stat, "win": board.window,
                "$or": [ { "value": { "$gt": value } }, { "value": value, "player": { "$lt": player } } ],
            })
            .await
            .map_err(mongo)?;
        Ok(Some(ScoreRow { rank: above + 1, player: player.to_string(), value }))
    }

    async fn place(&self, title: &str, player: &str, at: &Position) -> Result<bool, WorldError> {
        let id = format!("{title}/{player}");
        let d = doc! { "_id": &id, "title": title, "player": player, "region": &at.region, "x": at.x, "y": at.y };
        match self.positions.replace_one(doc! { "_id": &id }, d).upsert(true).await {
            Ok(_) => {}
            // The spot's unique index: someone is there.
            Err(e) if duplicate_key(&e) => return Ok(false),
            Err(e) => return Err(mongo(e)),
        }
        // A stand-in may not enforce the unique index: check that the spot
        // holds this player alone, and step back if not.
        let spot = doc! { "title": title, "region": &at.region, "x": at.x, "y": at.y };
        let holders = self.all(&self.positions, spot, doc! { "_id": 1 }, 0, 2).await?;
        if holders.len() > 1 {
            self.positions
                .delete_one(doc! { "_id": &id, "region": &at.region, "x": at.x, "y": at.y })
                .await
                .map_err(mongo)?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn position(&self, title: &str, player: &str) -> Result<Option<Position>, WorldError> {
        let d = self.positions.find_one(doc! { "_id": format!("{title}/{player}") }).await.map_err(mongo)?;
        Ok(d.and_then(|d| position_of(&d)))
    }

    async fn near(&self, title: &str, at: &Position, radius: i32, limit: usize) -> Result<Vec<Base>, WorldError> {
        let filter = doc! {
            "title": title, "region": &at.region,
            "x": { "$gte": at.x - radius, "$lte": at.x + radius },
            "y": { "$gte": at.y - radius, "$lte": at.y + radius },
        };
        // The square holds at most (2r+1)^2 bases; the nearest are picked here.
        let docs = self.all(&self.positions, filter, doc! { "x": 1, "y": 1 }, 0, 0).await?;
        let mut bases: Vec<Base> = docs
            .iter()
            .filter_map(|d| Some(Base { player: d.get_str("player").ok()?.to_string(), position: position_of(d)? }))
            .collect();
        let dist = |b: &Base| {
            let (dx, dy) = (i64::from(b.position.x - at.x), i64::from(b.position.y - at.y));
            dx * dx + dy * dy
        };
        bases.sort_by(|a, b| dist(a).cmp(&dist(b)).then_with(|| a.player.cmp(&b.player)));
        bases.truncate(page(limit));
        Ok(bases)
    }

    async fn region_counts(&self, title: &str, regions: &[String]) -> Result<BTreeMap<String, i64>, WorldError> {
        let mut out = BTreeMap::new();
        for r in regions {
            let n = self.positions.count_documents(doc! { "title": title, "region": r }).await.map_err(mongo)?;
            out.insert(r.clone(), n as i64);
        }
        Ok(out)
    }
}

#[async_trait]
impl Raids for MongoWorld {
    async fn insert_raid(&self, raid: &RaidRecord) -> Result<(), WorldError> {
        self.raids.insert_one(raid_doc(raid)?).await.map_err(mongo)?;
        Ok(())
    }

    async fn raid(&self, id: &str) -> Result<Option<RaidRecord>, WorldError> {
        let d = self.raids.find_one(doc! { "_id": id }).await.map_err(mongo)?;
        d.as_ref().map(raid_from).transpose()
    }

    async fn last_raid(&self, title: &str, attacker: &str) -> Result<Option<RaidRecord>, WorldError> {
        let filter = doc! { "title": title, "attacker": attacker };
        let docs = self.all(&self.raids, filter, doc! { "started_ms": -1, "_id": -1 }, 0, 1).await?;
        docs.first().map(raid_from).transpose()
    }

    async fn end_raid(&self, raid: &RaidRecord) -> Result<bool, WorldError> {
        let r = self
            .raids
            .update_one(
                doc! { "_id": &raid.id, "status": "started" },
                doc! { "$set": { "status": status_name(raid.status), "doc": to_json(raid)? } },
            )
            .await
            .map_err(mongo)?;
        Ok(r.modified_count == 1)
    }

    async fn pending_defenses(&self, title: &str, defender: &str) -> Result<Vec<RaidRecord>, WorldError> {
        let filter = doc! { "title": title, "defender": defender, "status": "ended", "defender_applied": false };
        let docs = self.all(&self.raids, filter, doc! { "started_ms": 1, "_id": 1 }, 0, 0).await?;
        docs.iter().map(raid_from).collect()
    }

    async fn defense_applied(&self, id: &str) -> Result<(), WorldError> {
        self.raids
            .update_one(doc! { "_id": id }, doc! { "$set": { "defender_applied": true } })
            .await
            .map_err(mongo)?;
        Ok(())
    }
}

#[async_trait]
impl Clans for MongoWorld {
    async fn create_clan(&self, clan: &Clan, founder: &str, role: &str) -> Result<Joined, WorldError> {
        let member = Member {
            clan: clan.id.clone(),
            player: founder.to_string(),
            role: role.to_string(),
            joined_ms: clan.created_ms,
        };
        match self.clan_members.insert_one(member_doc(&clan.title, &member)).await {
            Ok(_) => {}
            Err(e) if duplicate_key(&e) => return Ok(Joined::AlreadyInClan),
            Err(e) => return Err(mongo(e)),
        }
        let d = doc! {
            "_id": format!("{}/{}", clan.title, clan.id), "title": &clan.title, "id": &clan.id, "name": &clan.name,
            "description": &clan.description, "open": clan.open, "members": 1_i64, "created_ms": clan.created_ms,
        };
        match self.clans.insert_one(d).await {
            Ok(_) => Ok(Joined::Joined),
            Err(e) => {
                // Not founded: the founder is in no clan after all.
                self.clan_members
                    .delete_one(doc! { "_id": format!("{}/{founder}", clan.title) })
                    .await
                    .map_err(mongo)?;
                if duplicate_key(&e) {
                    Ok(Joined::NoClan)
                } else {
                    Err(mongo(e))
                }
            }
        }
    }

    async fn clan(&self, title: &str, id: &str) -> Result<Option<Clan>, WorldError> {
        let d = self.clans.find_one(doc! { "_id": format!("{title}/{id}") }).await.map_err(mongo)?;
        Ok(d.as_ref().and_then(clan_of))
    }

    async fn edit_clan(&self, title: &str, id: &str, description: &str, open: bool) -> Result<(), WorldError> {
        self.clans
            .update_one(
                doc! { "_id": format!("{title}/{id}") },
                doc! { "$set": { "description": description, "open": open } },
            )
            .await
            .map_err(mongo)?;
        Ok(())
    }

    async fn search_clans(
        &self,
        title: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Clan>, WorldError> {
        let low = name_key(prefix);
        let mut range = doc! { "$gte": &low, "$lt": prefix_end(&low) };
        if let Some(a) = after {
            range.insert("$gt", name_key(a));
        }
        let docs = self
            .all(&self.clans, doc! { "title": title, "id": range }, doc! { "id": 1 }, 0, page(limit) as i64)
            .await?;
        Ok(docs.iter().filter_map(clan_of).collect())
    }

    async fn members(&self, title: &str, clan: &str) -> Result<Vec<Member>, WorldError> {
        let docs = self
            .all(
                &self.clan_members,
                doc! { "title": title, "clan": clan },
                doc! { "joined_ms": 1, "player": 1 },
                0,
                1000,
            )
            .await?;
        Ok(docs.iter().filter_map(member_of).collect())
    }

    async fn membership(&self, title: &str, player: &str) -> Result<Option<Member>, WorldError> {
        let d = self.clan_members.find_one(doc! { "_id": format!("{title}/{player}") }).await.map_err(mongo)?;
        Ok(d.as_ref().and_then(member_of))
    }

    async fn join_clan(&self, title: &str, member: &Member, capacity: i64) -> Result<Joined, WorldError> {
        let clan_id = format!("{title}/{}", member.clan);
        if self.clans.find_one(doc! { "_id": &clan_id }).await.map_err(mongo)?.is_none() {
            return Ok(Joined::NoClan);
        }
        match self.clan_members.insert_one(member_doc(title, member)).await {
            Ok(_) => {}
            Err(e) if duplicate_key(&e) => return Ok(Joined::AlreadyInClan),
            Err(e) => return Err(mongo(e)),
        }
        // The seat: taken only while the count is below capacity, in one
        // conditional update, so racing joins never overfill the clan.
        let seat = self
            .clans
            .find_one_and_update(
                doc! { "_id": &clan_id, "members": { "$lt": capacity } },
                doc! { "$inc": { "members": 1_i64 } },
            )
            .await
            .map_err(mongo)?;
        if seat.is_none() {
            self.clan_members.delete_one(doc! { "_id": format!("{title}/{}", member.player) }).await.map_err(mongo)?;
            return Ok(Joined::Full);
        }
        Ok(Joined::Joined)
    }

    async fn leave_clan(&self, title: &str, clan: &str, player: &str) -> Result<bool, WorldError> {
        let r = self
            .clan_members
            .delete_one(doc! { "_id": format!("{title}/{player}"), "clan": clan })
            .await
            .map_err(mongo)?;
        if r.deleted_count == 1 {
            self.clans
                .update_one(doc! { "_id": format!("{title}/{clan}") }, doc! { "$inc": { "members": -1_i64 } })
                .await
                .map_err(mongo)?;
        }
        Ok(r.deleted_count == 1)
    }

    async fn set_role(&self, title: &str, clan: &str, player: &str, role: &str) -> Result<bool, WorldError> {
        let r = self
            .clan_members
            .update_one(doc! { "_id": format!("{title}/{player}"), "clan": clan }, doc! { "$set": { "role": role } })
            .await
            .map_err(mongo)?;
        Ok(r.matched_count == 1)
    }

    async fn disband(&self, title: &str, clan: &str) -> Result<(), WorldError> {
        for c in [&self.clan_members, &self.clan_asks, &self.clan_chat] {
            c.delete_many(doc! { "title": title, "clan": clan }).await.map_err(mongo)?;
        }
        self.clans.delete_one(doc! { "_id": format!("{title}/{clan}") }).await.map_err(mongo)?;
        Ok(())
    }

    async fn put_ask(&self, title: &str, clan: &str, ask: &ClanAsk) -> Result<(), WorldError> {
        let id = format!("{title}/{clan}/{}/{}", ask.player, ask_name(ask.kind));
        let d = doc! {
            "_id": &id, "title": title, "clan": clan, "player": &ask.player,
            "kind": ask_name(ask.kind), "at_ms": ask.at_ms,
        };
        self.clan_asks.replace_one(doc! { "_id": &id }, d).upsert(true).await.map_err(mongo)?;
        Ok(())
    }

    async fn take_ask(&self, title: &str, clan: &str, player: &str, kind: Ask) -> Result<bool, WorldError> {
        let id = format!("{title}/{clan}/{player}/{}", ask_name(kind));
        let r = self.clan_asks.delete_one(doc! { "_id": id }).await.map_err(mongo)?;
        Ok(r.deleted_count == 1)
    }

    async fn asks(&self, title: &str, clan: &str) -> Result<Vec<ClanAsk>, WorldError> {
        let docs = self
            .all(
                &self.clan_asks,
                doc! { "title": title, "clan": clan },
                doc! { "at_ms": 1, "player": 1 },
                0,
                PAGE_MAX as i64,
            )
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                Some(ClanAsk {
                    player: d.get_str("player").ok()?.to_string(),
                    kind: if d.get_str("kind").ok()? == "invite" { Ask::Invite } else { Ask::Request },
                    at_ms: number(d, "at_ms")?,
                })
            })
            .collect())
    }

    async fn post_chat(
        &self,
        title: &str,
        clan: &str,
        player: &str,
        text: &str,
        now_ms: i64,
        limits: ChatLimits,
    ) -> Result<Option<ChatLine>, WorldError> {
        let recent = self
            .clan_chat
            .count_documents(doc! {
                "title": title, "clan": clan, "player": player, "at_ms": { "$gt": now_ms - limits.rate_window_ms },
            })
            .await
            .map_err(mongo)?;
        if recent as i64 >= limits.rate_max {
            return Ok(None);
        }
        let seq = self.next(&format!("chat/{title}/{clan}")).await?;
        let d = doc! {
            "_id": format!("{title}/{clan}/{seq}"), "title": title, "clan": clan, "seq": seq,
            "player": player, "text": text, "at_ms": now_ms,
        };
        self.clan_chat.insert_one(d).await.map_err(mongo)?;
        self.clan_chat
            .delete_many(doc! { "title": title, "clan": clan, "seq": { "$lte": seq - limits.history_max } })
            .await
            .map_err(mongo)?;
        Ok(Some(ChatLine { seq, player: player.to_string(), text: text.to_string(), at_ms: now_ms }))
    }

    async fn chat(
        &self,
        title: &str,
        clan: &str,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ChatLine>, WorldError> {
        let filter = doc! { "title": title, "clan": clan, "seq": { "$lt": before_seq.unwrap_or(i64::MAX) } };
        let docs = self.all(&self.clan_chat, filter, doc! { "seq": -1 }, 0, page(limit) as i64).await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                Some(ChatLine {
                    seq: number(d, "seq")?,
                    player: d.get_str("player").ok()?.to_string(),
                    text: d.get_str("text").ok()?.to_string(),
                    at_ms: number(d, "at_ms")?,
                })
            })
            .collect())
    }
}

#[async_trait]
impl Audit for MongoWorld {
    async fn audit(&self, e: &AuditEntry) -> Result<(), WorldError> {
        let d = doc! {
            "_id": &e.id, "id": &e.id, "at_ms": e.at_ms, "title": &e.title, "player": &e.player, "doc": to_json(e)?,
        };
        self.audit.insert_one(d).await.map_err(mongo)?;
        Ok(())
    }

    async fn audit_log(
        &self,
        player: Option<(&str, &str)>,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, WorldError> {
        let mut filter = doc! { "at_ms": { "$lt": before_ms.unwrap_or(i64::MAX) } };
        if let Some((title, player)) = player {
            filter.insert("title", title);
            filter.insert("player", player);
        }
        let docs = self.all(&self.audit, filter, doc! { "at_ms": -1, "id": -1 }, 0, page(limit) as i64).await?;
        docs.iter().map(decode).collect()
    }
}

#[async_trait]
impl Inbox for MongoWorld {
    async fn put_inbox(&self, item: &InboxItem, cap: usize) -> Result<InboxPut, WorldError> {
        let mine = doc! { "title": &item.title, "player": &item.player };
        let mut expired = mine.clone();
        expired.insert("expires_ms", doc! { "$lte": item.created_ms });
        self.inbox.delete_many(expired).await.map_err(mongo)?;
        let id = format!("{}/{}/{}", item.title, item.player, item.id);
        if self.inbox.find_one(doc! { "_id": &id }).await.map_err(mongo)?.is_some() {
            return Ok(InboxPut::Exists);
        }
        // A soft cap: two sends racing past it add one item too many.
        let mut waiting = mine.clone();
        waiting.insert("claimed", false);
        if self.inbox.count_documents(waiting).await.map_err(mongo)? >= cap as u64 {
            return Ok(InboxPut::Full);
        }
        let d = doc! {
            "_id": &id, "title": &item.title, "player": &item.player, "id": &item.id,
            "created_ms": item.created_ms, "expires_ms": item.expires_ms, "claimed": false, "claimed_ms": 0_i64,
            "doc": to_json(item)?,
        };
        match self.inbox.insert_one(d).await {
            Ok(_) => Ok(InboxPut::Added),
            Err(e) if duplicate_key(&e) => Ok(InboxPut::Exists),
            Err(e) => Err(mongo(e)),
        }
    }

    async fn inbox(&self, title: &str, player: &str, now_ms: i64, limit: usize) -> Result<Vec<InboxItem>, WorldError> {
        let filter = doc! { "title": title, "player": player, "expires_ms": { "$gt": now_ms } };
        let docs = self.all(&self.inbox, filter, doc! { "created_ms": -1, "id": -1 }, 0, page(limit) as i64).await?;
        docs.iter().map(inbox_of).collect()
    }

    async fn unclaimed(
        &self,
        title: &str,
        player: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxItem>, WorldError> {
        let filter = doc! { "title": title, "player": player, "claimed": false, "expires_ms": { "$gt": now_ms } };
        let docs = self.all(&self.inbox, filter, doc! { "created_ms": 1, "id": 1 }, 0, page(limit) as i64).await?;
        docs.iter().map(inbox_of).collect()
    }

    async fn claim(&self, title: &str, player: &str, id: &str, now_ms: i64) -> Result<bool, WorldError> {
        let r = self
            .inbox
            .update_one(
                doc! { "_id": format!("{title}/{player}/{id}"), "claimed": false },
                doc! { "$set": { "claimed": true, "claimed_ms": now_ms } },
            )
            .await
            .map_err(mongo)?;
        Ok(r.modified_count == 1)
    }

    async fn revoke_inbox(&self, title: &str, player: &str, id: &str, now_ms: i64) -> Result<InboxRevoke, WorldError> {
        let key = format!("{title}/{player}/{id}");
        let r = self
            .inbox
            .update_one(
                doc! { "_id": &key, "claimed": false },
                doc! { "$set": { "claimed": true, "claimed_ms": now_ms, "revoked_ms": now_ms } },
            )
            .await
            .map_err(mongo)?;
        if r.modified_count == 1 {
            return Ok(InboxRevoke::Unclaimed);
        }
        let found = self.inbox.find_one(doc! { "_id": &key }).await.map_err(mongo)?;
        Ok(if found.is_some() { InboxRevoke::Claimed } else { InboxRevoke::Missing })
    }
}

#[async_trait]
impl Payments for MongoWorld {
    async fn record_payment(&self, payment: &Payment) -> Result<bool, WorldError> {
        let d = doc! {
            "_id": payment_id(&payment.provider, &payment.id), "account": &payment.account,
            "title": &payment.title, "player": &payment.player, "state": payment.state.as_str(),
            "created_ms": payment.created_ms, "doc": to_json(payment)?,
        };
        match self.payments.insert_one(d).await {
            Ok(_) => Ok(true),
            Err(e) if duplicate_key(&e) => Ok(false),
            Err(e) => Err(mongo(e)),
        }
    }

    async fn payment(&self, provider: &str, id: &str) -> Result<Option<Payment>, WorldError> {
        let d = self.payments.find_one(doc! { "_id": payment_id(provider, id) }).await.map_err(mongo)?;
        d.as_ref().map(decode).transpose()
    }

    async fn payment_moved(
        &self,
        provider: &str,
        id: &str,
        from: PaymentState,
        to: PaymentState,
        at_ms: i64,
        reason: &str,
    ) -> Result<bool, WorldError> {
        let key = payment_id(provider, id);
        let Some(d) = self.payments.find_one(doc! { "_id": &key, "state": from.as_str() }).await.map_err(mongo)? else {
            return Ok(false);
        };
        let mut p: Payment = decode(&d)?;
        moved(&mut p, to, at_ms, reason);
        let r = self
            .payments
            .update_one(
                doc! { "_id": &key, "state": from.as_str() },
                doc! { "$set": { "state": to.as_str(), "doc": to_json(&p)? } },
            )
            .await
            .map_err(mongo)?;
        Ok(r.modified_count == 1)
    }

    async fn undelivered(&self, limit: usize) -> Result<Vec<Payment>, WorldError> {
        let filter = doc! { "state": PaymentState::Recorded.as_str() };
        let docs = self.all(&self.payments, filter, doc! { "created_ms": 1, "_id": 1 }, 0, page(limit) as i64).await?;
        docs.iter().map(decode).collect()
    }

    async fn payments(
        &self,
        of: PaymentsOf<'_>,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Payment>, WorldError> {
        let mut filter = match of {
            PaymentsOf::All => doc! {},
            PaymentsOf::Account(a) => doc! { "account": a },
            PaymentsOf::Player { title, player } => doc! { "title": title, "player": player },
        };
        if let Some(before) = before_ms {
            filter.insert("created_ms", doc! { "$lt": before });
        }
        let docs =
            self.all(&self.payments, filter, doc! { "created_ms": -1, "_id": -1 }, 0, page(limit) as i64).await?;
        docs.iter().map(decode).collect()
    }
}

/// A payment's `_id`: provider names have no spaces.
fn payment_id(provider: &str, id: &str) -> String {
    format!("{provider} {id}")
}

/// An inbox item: its document, and the claim kept beside it.
fn inbox_of(d: &Document) -> Result<InboxItem, WorldError> {
    let mut item: InboxItem = decode(d)?;
    // A boolean, or a number where the server keeps booleans as such.
    let claimed = match d.get("claimed") {
        Some(Bson::Boolean(b)) => *b,
        _ => number(d, "claimed").is_some_and(|n| n != 0),
    };
    item.claimed_ms = if claimed { number(d, "claimed_ms") } else { None };
    item.revoked_ms = number(d, "revoked_ms");
    Ok(item)
}

fn member_doc(title: &str, m: &Member) -> Document {
    doc! {
        "_id": format!("{title}/{}", m.player), "title": title, "player": &m.player,
        "clan": &m.clan, "role": &m.role, "joined_ms": m.joined_ms,
    }
}

fn member_of(d: &Document) -> Option<Member> {
    Some(Member {
        clan: d.get_str("clan").ok()?.to_string(),
        player: d.get_str("player").ok()?.to_string(),
        role: d.get_str("role").ok()?.to_string(),
        joined_ms: number(d, "joined_ms")?,
    })
}

fn clan_of(d: &Document) -> Option<Clan> {
    Some(Clan {
        title: d.get_str("title").ok()?.to_string(),
        id: d.get_str("id").ok()?.to_string(),
        name: d.get_str("name").ok()?.to_string(),
        description: d.get_str("description").ok()?.to_string(),
        open: match d.get("open")? {
            Bson::Boolean(b) => *b,
            _ => number(d, "open")? != 0,
        },
        members: number(d, "members")?,
        created_ms: number(d, "created_ms")?,
    })
}

fn raid_doc(raid: &RaidRecord) -> Result<Document, WorldError> {
    Ok(doc! {
        "_id": &raid.id, "title": &raid.title, "attacker": &raid.attacker, "defender": &raid.defender,
        "started_ms": raid.started_ms, "status": status_name(raid.status),
        "defender_applied": raid.defender_applied, "doc": to_json(raid)?,
    })
}

fn raid_from(d: &Document) -> Result<RaidRecord, WorldError> {
    let mut raid: RaidRecord = decode(d)?;
    // A boolean, or a number from a server that stores booleans as such.
    raid.defender_applied = match d.get("defender_applied") {
        Some(Bson::Boolean(b)) => *b,
        Some(_) => number(d, "defender_applied").is_some_and(|n| n != 0),
        None => false,
    };
    Ok(raid)
}

fn position_of(d: &Document) -> Option<Position> {
    Some(Position {
        region: d.get_str("region").ok()?.to_string(),
        x: i32::try_from(number(d, "x")?).ok()?,
        y: i32::try_from(number(d, "y")?).ok()?,
    })
}

/// The typed document kept as JSON in `doc`.
fn decode<T: serde::de::DeserializeOwned>(d: &Document) -> Result<T, WorldError> {
    let text = d.get_str("doc").map_err(|_| WorldError::Db("a stored document has no `doc`".into()))?;
    serde_json::from_str(text).map_err(|e| WorldError::Db(format!("a stored document does not decode: {e}")))
}

#[async_trait]
impl Accounts for MongoWorld {
    async fn create_account(&self, account: &Account, identity: &Identity) -> Result<bool, WorldError> {
        // The account first: one left without its identity (a lost race,
        // a crash in between) is never found, and removed when possible.
        let d = doc! {
            "_id": &account.id, "created_ms": account.created_ms, "last_login_ms": account.last_login_ms,
            "flagged": account.flagged,
        };
        self.accounts.insert_one(d).await.map_err(mongo)?;
        let linked = Identity { account: account.id.clone(), ..identity.clone() };
        if self.link_identity(&linked).await? {
            return Ok(true);
        }
        let _ = self.accounts.delete_one(doc! { "_id": &account.id }).await;
        Ok(false)
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, WorldError> {
        let d = self.accounts.find_one(doc! { "_id": id }).await.map_err(mongo)?;
        Ok(d.map(|d| Account {
            id: id.to_string(),
            created_ms: number(&d, "created_ms").unwrap_or(0),
            last_login_ms: number(&d, "last_login_ms").unwrap_or(0),
            // A boolean, or a number where the server keeps booleans as such.
            flagged: match d.get("flagged") {
                Some(Bson::Boolean(b)) => *b,
                _ => number(&d, "flagged").is_some_and(|n| n != 0),
            },
        }))
    }

    async fn identity(&self, provider: &str, subject: &str) -> Result<Option<Identity>, WorldError> {
        let d = self.identities.find_one(doc! { "_id": identity_id(provider, subject) }).await.map_err(mongo)?;
        d.as_ref().map(decode).transpose()
    }

    async fn link_identity(&self, identity: &Identity) -> Result<bool, WorldError> {
        let d = doc! {
            "_id": identity_id(&identity.provider, &identity.subject), "account": &identity.account,
            "linked_ms": identity.linked_ms, "doc": to_json(identity)?,
        };
        match self.identities.insert_one(d).await {
            Ok(_) => Ok(true),
            Err(e) if duplicate_key(&e) => Ok(false),
            Err(e) => Err(mongo(e)),
        }
    }

    async fn identities(&self, account: &str) -> Result<Vec<Identity>, WorldError> {
        let filter = doc! { "account": account };
        let docs = self.all(&self.identities, filter, doc! { "linked_ms": 1, "_id": 1 }, 0, PAGE_MAX as i64).await?;
        docs.iter().map(decode).collect()
    }

    async fn account_login(&self, id: &str, now_ms: i64) -> Result<(), WorldError> {
        // Only ever later (a conditional `$set`, which every
        // MongoDB-compatible server has, rather than `$max`).
        let r = self
            .accounts
            .update_one(
                doc! { "_id": id, "last_login_ms": { "$lt": now_ms } },
                doc! { "$set": { "last_login_ms": now_ms } },
            )
            .await
            .map_err(mongo)?;
        if r.matched_count == 0 && self.account(id).await?.is_none() {
            return Err(WorldError::Db(format!("no account {id}")));
        }
        Ok(())
    }

    async fn set_flagged(&self, id: &str, flagged: bool) -> Result<(), WorldError> {
        let r = self
            .accounts
            .update_one(doc! { "_id": id }, doc! { "$set": { "flagged": flagged } })
            .await
            .map_err(mongo)?;
        if r.matched_count == 0 {
            return Err(WorldError::Db(format!("no account {id}")));
        }
        Ok(())
    }

    async fn title_player(&self, account: &str, title: &str, player: &str) -> Result<String, WorldError> {
        let id = format!("{account}/{title}");
        match self.title_players.insert_one(doc! { "_id": &id, "player": player }).await {
            Ok(_) => return Ok(player.to_string()),
            Err(e) if duplicate_key(&e) => {}
            Err(e) => return Err(mongo(e)),
        }
        let d = self.title_players.find_one(doc! { "_id": &id }).await.map_err(mongo)?;
        d.and_then(|d| d.get_str("player").ok().map(str::to_string))
            .ok_or_else(|| WorldError::Db(format!("{id}: the player of a title vanished")))
    }

    async fn enter(&self, account: &str, title: &str, player: &str, now_ms: i64) -> Result<String, WorldError> {
        self.account_login(account, now_ms).await?;
        self.title_player(account, title, player).await
    }
}

/// An identity's `_id`: provider and subject, neither of which can hold
/// the other's separator unnoticed (the provider is a URL or `guest`).
fn identity_id(provider: &str, subject: &str) -> String {
    format!("{provider} {subject}")
}
