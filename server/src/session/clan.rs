//! Clan requests, run inside the player's session. Permissions are
//! checked here, on the server, against the title's roles
//! (`citadel_runtime::clan`); the world store makes each change atomic
//! (a join never overfills a clan, a founding never takes a used name).

use citadel_runtime::clan;
use citadel_runtime::format::{ClanPermission, ClansDef};
use citadel_runtime::Title;
use serde_json::json;

use super::world::internal;
use super::Next;
use super::Session;
use crate::apply::Op;
use crate::deps::Deps;
use crate::protocol::{answer as serialize, Answer, ApiError, ClanCommand, Code};
use citadel_store::world::{Ask, ChatLimits, Clan, ClanAsk, Joined, Member};

/// Longest clan chat line, in bytes: a chat line, not a letter.
const CHAT_TEXT_BYTES_MAX: usize = 500;
/// Lines a player may post per [`CHAT_RATE_WINDOW_MS`]: a conversation, not a flood.
const CHAT_RATE_MAX: i64 = 5;
const CHAT_RATE_WINDOW_MS: i64 = 10_000;
/// Lines kept per clan: a day of a busy clan's talk.
const CHAT_HISTORY_MAX: i64 = 200;
/// Longest clan description, in bytes.
const DESCRIPTION_BYTES_MAX: usize = 500;

fn refused(code: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl Session {
    /// Runs one clan request.
    pub(super) async fn clan(&mut self, deps: &Deps, title: &Title, cmd: ClanCommand, now: i64) -> Next {
        let rules = match clan::rules_of(title) {
            Ok(r) => r.clone(),
            Err(e) => return Next::Answer(Err(ApiError::rules(e))),
        };
        let r = match cmd {
            ClanCommand::Create { name, description, open } => {
                return self.clan_create(deps, title, &rules, name, description, open, now).await
            }
            ClanCommand::Info { clan } => self.clan_info(deps, title, &rules, clan).await,
            ClanCommand::Search { prefix, after, limit } => {
                match deps.world.search_clans(title.id(), &prefix, after.as_deref(), limit).await {
                    Ok(clans) => {
                        let next = clans.last().map(|c| c.id.clone());
                        serialize(&json!({ "clans": clans, "next": next }))
                    }
                    Err(e) => Err(internal(e)),
                }
            }
            ClanCommand::Join { clan } => self.clan_join(deps, title, &rules, &clan, now).await,
            ClanCommand::Leave {} => self.clan_leave(deps, title, &rules).await,
            ClanCommand::Accept { player } => self.clan_accept(deps, title, &rules, &player, now).await,
            ClanCommand::Invite { player } => self.clan_invite(deps, title, &rules, &player, now).await,
            ClanCommand::Kick { player } => self.clan_rank_change(deps, title, &rules, &player, None).await,
            ClanCommand::Promote { player } => self.clan_rank_change(deps, title, &rules, &player, Some(-1)).await,
            ClanCommand::Demote { player } => self.clan_rank_change(deps, title, &rules, &player, Some(1)).await,
            ClanCommand::Edit { description, open } => self.clan_edit(deps, title, &rules, description, open).await,
            ClanCommand::Disband {} => match self.my_clan(deps, title, &rules, Some(ClanPermission::Disband)).await {
                Ok(me) => {
                    let members = deps.world.members(title.id(), &me.clan).await.unwrap_or_default();
                    match deps.world.disband(title.id(), &me.clan).await {
                        Ok(()) => {
                            let all = members.into_iter().map(|m| m.player).collect();
                            self.tell_clan(deps, title, &me.clan, "disbanded", &me.player, None, all).await;
                            serialize(&json!({ "disbanded": me.clan }))
                        }
                        Err(e) => Err(internal(e)),
                    }
                }
                Err(e) => Err(e),
            },
            ClanCommand::ChatPost { text } => self.clan_chat_post(deps, title, &rules, text, now).await,
            ClanCommand::Gift { to, resources } => return self.clan_gift(deps, title, &rules, to, resources).await,
            ClanCommand::Chat { before, limit } => match self.my_clan(deps, title, &rules, None).await {
                Ok(me) => match deps.world.chat(title.id(), &me.clan, before, limit).await {
                    Ok(lines) => serialize(&json!({ "clan": me.clan, "lines": lines })),
                    Err(e) => Err(internal(e)),
                },
                Err(e) => Err(e),
            },
        };
        Next::Answer(r)
    }

    /// This player's membership, checked for a permission when one is given.
    async fn my_clan(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        need: Option<ClanPermission>,
    ) -> Result<Member, ApiError> {
        let me = deps
            .world
            .membership(title.id(), &self.key.1)
            .await
            .map_err(internal)?
            .ok_or_else(|| refused(Code::NotInClan, "you are not in a clan"))?;
        if let Some(what) = need {
            if !clan::can(rules, &me.role, what) {
                return Err(refused(
                    Code::NotPermitted,
                    format!("a clan's `{}` may not {what:?}", me.role).to_lowercase(),
                ));
            }
        }
        Ok(me)
    }

    /// A gift to a member of the player's clan: both must be in one clan
    /// now; the rules check the rest (`citadel_runtime::clan::send_gift`).
    /// Delivered once its record is durable (`session/gifts.rs`).
    async fn clan_gift(
        &mut self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        to: String,
        resources: citadel_runtime::format::Amounts,
    ) -> Next {
        if let Err(e) = clan::gifts_of(title) {
            return Next::Answer(Err(ApiError::rules(e)));
        }
        if to == self.key.1 {
            return Next::Answer(Err(refused(Code::InvalidArgument, "a gift is for another member")));
        }
        let me = match self.my_clan(deps, title, rules, None).await {
            Ok(me) => me,
            Err(e) => return Next::Answer(Err(e)),
        };
        match deps.world.membership(title.id(), &to).await {
            Ok(Some(them)) if them.clan == me.clan => {}
            Ok(_) => {
                return Next::Answer(Err(refused(Code::NotInClan, format!("`{to}` is not in your clan"))));
            }
            Err(e) => return Next::Answer(Err(internal(e))),
        }
        let gift = super::gifts::gift_id(&self.key.1, self.state.seq + 1);
        Next::Op(Op::GiftSent { gift, to, clan: me.clan, resources })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn clan_create(
        &mut self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        name: String,
        description: String,
        open: bool,
        now: i64,
    ) -> Next {
        if !super::world::valid_display_name(&name) {
            let msg = "a clan name is 3 to 24 letters, digits, spaces, _ or -, without spaces at either end";
            return Next::Answer(Err(refused(Code::InvalidArgument, msg)));
        }
        if description.len() > DESCRIPTION_BYTES_MAX {
            let msg = format!("a clan description is at most {DESCRIPTION_BYTES_MAX} bytes");
            return Next::Answer(Err(refused(Code::InvalidArgument, msg)));
        }
        // The cost first, on a copy; the clan only if it passes.
        let mut trial = self.state.clone();
        if let Err(e) = clan::pay_founding(title, &mut trial, now, &mut self.rng.clone()) {
            return Next::Answer(Err(ApiError::rules(e)));
        }
        let c = Clan {
            title: title.id().to_string(),
            id: citadel_store::world::name_key(&name),
            name,
            description,
            open,
            members: 1,
            created_ms: now,
        };
        match deps.world.create_clan(&c, &self.key.1, clan::founder_role(rules)).await {
            Ok(Joined::Joined) => Next::Op(Op::ClanFounded { clan: c.id }),
            Ok(Joined::AlreadyInClan) => Next::Answer(Err(refused(Code::AlreadyInClan, "you are in a clan already"))),
            Ok(_) => Next::Answer(Err(refused(Code::ClanNameTaken, format!("a clan `{}` exists", c.name)))),
            Err(e) => Next::Answer(Err(internal(e))),
        }
    }

    pub(super) async fn clan_info(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        id: Option<String>,
    ) -> Result<Answer, ApiError> {
        let mine = deps.world.membership(title.id(), &self.key.1).await.map_err(internal)?;
        let id = match (id, &mine) {
            (Some(id), _) => citadel_store::world::name_key(&id),
            (None, Some(m)) => m.clan.clone(),
            (None, None) => return Err(refused(Code::NotInClan, "you are not in a clan; name one")),
        };
        let c = deps
            .world
            .clan(title.id(), &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| refused(Code::UnknownClan, format!("no clan `{id}`")))?;
        let members = deps.world.members(title.id(), &id).await.map_err(internal)?;
        // Requests and invitations are for those who answer them.
        let answers = mine.as_ref().is_some_and(|m| {
            m.clan == id
                && (clan::can(rules, &m.role, ClanPermission::Accept)
                    || clan::can(rules, &m.role, ClanPermission::Invite))
        });
        let asks = if answers { deps.world.asks(title.id(), &id).await.map_err(internal)? } else { Vec::new() };
        serialize(&json!({ "clan": c, "members": members, "asks": asks, "roles": rules.roles }))
    }

    pub(super) async fn clan_join(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        id: &str,
        now: i64,
    ) -> Result<Answer, ApiError> {
        let id = citadel_store::world::name_key(id);
        let c = deps
            .world
            .clan(title.id(), &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| refused(Code::UnknownClan, format!("no clan `{id}`")))?;
        if deps.world.membership(title.id(), &self.key.1).await.map_err(internal)?.is_some() {
            return Err(refused(Code::AlreadyInClan, "you are in a clan already"));
        }
        let invited = deps.world.take_ask(title.id(), &id, &self.key.1, Ask::Invite).await.map_err(internal)?;
        if !c.open && !invited {
            let ask = ClanAsk { player: self.key.1.clone(), kind: Ask::Request, at_ms: now };
            deps.world.put_ask(title.id(), &id, &ask).await.map_err(internal)?;
            self.tell_clan(deps, title, &id, "asked", &self.key.1, None, vec![]).await;
            return serialize(&json!({ "clan": id, "requested": true }));
        }
        add_member(deps, title, rules, &id, &self.key.1, now).await?;
        self.tell_clan(deps, title, &id, "joined", &self.key.1, None, vec![]).await;
        serialize(&json!({ "clan": id, "joined": true }))
    }

    /// Leaving: a clan's last member disbands it; a leader leaving others
    /// behind hands the lead to the highest ranked, longest standing member.
    pub(super) async fn clan_leave(&self, deps: &Deps, title: &Title, rules: &ClansDef) -> Result<Answer, ApiError> {
        let me = self.my_clan(deps, title, rules, None).await?;
        let members = deps.world.members(title.id(), &me.clan).await.map_err(internal)?;
        let others: Vec<&Member> = members.iter().filter(|m| m.player != me.player).collect();
        if others.is_empty() {
            deps.world.disband(title.id(), &me.clan).await.map_err(internal)?;
            return serialize(&json!({ "left": me.clan, "disbanded": true }));
        }
        deps.world.leave_clan(title.id(), &me.clan, &me.player).await.map_err(internal)?;
        self.tell_clan(deps, title, &me.clan, "left", &me.player, None, vec![me.player.clone()]).await;
        let founder = clan::founder_role(rules);
        if me.role == founder && !others.iter().any(|m| m.role == founder) {
            let low = rules.roles.len();
            // `members` is by join time: the first of the best rank.
            if let Some(heir) = others.iter().min_by_key(|m| clan::rank(rules, &m.role).unwrap_or(low)) {
                deps.world.set_role(title.id(), &me.clan, &heir.player, founder).await.map_err(internal)?;
            }
        }
        serialize(&json!({ "left": me.clan, "disbanded": false }))
    }

    pub(super) async fn clan_accept(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        player: &str,
        now: i64,
    ) -> Result<Answer, ApiError> {
        let me = self.my_clan(deps, title, rules, Some(ClanPermission::Accept)).await?;
        if !deps.world.take_ask(title.id(), &me.clan, player, Ask::Request).await.map_err(internal)? {
            return Err(refused(Code::InvalidArgument, format!("`{player}` has not asked to join")));
        }
        add_member(deps, title, rules, &me.clan, player, now).await?;
        self.tell_clan(deps, title, &me.clan, "joined", player, None, vec![]).await;
        serialize(&json!({ "clan": me.clan, "accepted": player }))
    }

    pub(super) async fn clan_invite(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        player: &str,
        now: i64,
    ) -> Result<Answer, ApiError> {
        let me = self.my_clan(deps, title, rules, Some(ClanPermission::Invite)).await?;
        ApiError::check_player_id(player)?;
        if deps.world.info(title.id(), player).await.map_err(internal)?.is_none() {
            return Err(refused(Code::UnknownPlayer, format!("no player `{player}` in {}", title.id())));
        }
        let ask = ClanAsk { player: player.to_string(), kind: Ask::Invite, at_ms: now };
        deps.world.put_ask(title.id(), &me.clan, &ask).await.map_err(internal)?;
        self.tell_clan(deps, title, &me.clan, "invited", player, None, vec![player.to_string()]).await;
        serialize(&json!({ "clan": me.clan, "invited": player }))
    }

    /// Kick (`step` None), promote (-1: one rank up) or demote (+1).
    async fn clan_rank_change(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        player: &str,
        step: Option<i64>,
    ) -> Result<Answer, ApiError> {
        let need = match step {
            None => ClanPermission::Kick,
            Some(s) if s < 0 => ClanPermission::Promote,
            Some(_) => ClanPermission::Demote,
        };
        let me = self.my_clan(deps, title, rules, Some(need)).await?;
        let them = deps
            .world
            .membership(title.id(), player)
            .await
            .map_err(internal)?
            .filter(|m| m.clan == me.clan)
            .ok_or_else(|| refused(Code::NotInClan, format!("`{player}` is not in your clan")))?;
        if !clan::outranks(rules, &me.role, &them.role) {
            return Err(refused(Code::NotPermitted, format!("`{player}` is not ranked below you")));
        }
        let Some(step) = step else {
            deps.world.leave_clan(title.id(), &me.clan, player).await.map_err(internal)?;
            self.tell_clan(deps, title, &me.clan, "kicked", player, None, vec![player.to_string()]).await;
            return serialize(&json!({ "clan": me.clan, "kicked": player }));
        };
        let low = rules.roles.len() as i64 - 1;
        let now_rank = clan::rank(rules, &them.role).map_or(low, |r| r as i64);
        let to = now_rank + step;
        let mine = clan::rank(rules, &me.role).map_or(low, |r| r as i64);
        if to < 0 || to > low || to <= mine {
            return Err(refused(Code::NotPermitted, format!("`{player}` cannot move to that rank")));
        }
        let role = rules.roles[to as usize].id.clone();
        deps.world.set_role(title.id(), &me.clan, player, &role).await.map_err(internal)?;
        self.tell_clan(deps, title, &me.clan, "role", player, Some(role.clone()), vec![]).await;
        serialize(&json!({ "clan": me.clan, "player": player, "role": role }))
    }

    pub(super) async fn clan_edit(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        description: Option<String>,
        open: Option<bool>,
    ) -> Result<Answer, ApiError> {
        let me = self.my_clan(deps, title, rules, Some(ClanPermission::Edit)).await?;
        if description.as_ref().is_some_and(|d| d.len() > DESCRIPTION_BYTES_MAX) {
            return Err(refused(
                Code::InvalidArgument,
                format!("a clan description is at most {DESCRIPTION_BYTES_MAX} bytes"),
            ));
        }
        let c = deps
            .world
            .clan(title.id(), &me.clan)
            .await
            .map_err(internal)?
            .ok_or_else(|| refused(Code::UnknownClan, "the clan is gone"))?;
        let (d, o) = (description.unwrap_or(c.description), open.unwrap_or(c.open));
        deps.world.edit_clan(title.id(), &me.clan, &d, o).await.map_err(internal)?;
        self.tell_clan(deps, title, &me.clan, "edited", &me.player, None, vec![]).await;
        serialize(&json!({ "clan": me.clan, "description": d, "open": o }))
    }

    /// Tells the clan's online members (and `also`), on any server, of a change.
    #[allow(clippy::too_many_arguments)]
    async fn tell_clan(
        &self,
        deps: &Deps,
        title: &Title,
        clan: &str,
        change: &str,
        player: &str,
        role: Option<String>,
        also: Vec<String>,
    ) {
        let push = crate::protocol::Push::Clan {
            clan: clan.to_string(),
            change: change.to_string(),
            player: player.to_string(),
            by: self.key.1.clone(),
            role,
        };
        crate::relay::clan_changed(deps, title.id(), clan, push, also).await;
    }

    pub(super) async fn clan_chat_post(
        &self,
        deps: &Deps,
        title: &Title,
        rules: &ClansDef,
        text: String,
        now: i64,
    ) -> Result<Answer, ApiError> {
        if text.trim().is_empty() || text.len() > CHAT_TEXT_BYTES_MAX {
            return Err(refused(Code::InvalidArgument, format!("a chat line is 1 to {CHAT_TEXT_BYTES_MAX} bytes")));
        }
        let me = self.my_clan(deps, title, rules, None).await?;
        let limits =
            ChatLimits { rate_window_ms: CHAT_RATE_WINDOW_MS, rate_max: CHAT_RATE_MAX, history_max: CHAT_HISTORY_MAX };
        match deps.world.post_chat(title.id(), &me.clan, &me.player, &text, now, limits).await.map_err(internal)? {
            Some(line) => {
                crate::relay::clan_chat(deps, title.id(), &me.clan, &line).await;
                serialize(&json!({ "clan": me.clan, "line": line }))
            }
            None => Err(refused(
                Code::ChatTooFast,
                format!("at most {CHAT_RATE_MAX} lines within {} seconds", CHAT_RATE_WINDOW_MS / 1000),
            )),
        }
    }
}

/// Adds `player` to `clan` in the title's lowest role.
async fn add_member(
    deps: &Deps,
    title: &Title,
    rules: &ClansDef,
    clan: &str,
    player: &str,
    now: i64,
) -> Result<(), ApiError> {
    let m = Member {
        clan: clan.to_string(),
        player: player.to_string(),
        role: clan::member_role(rules).to_string(),
        joined_ms: now,
    };
    match deps.world.join_clan(title.id(), &m, rules.capacity).await.map_err(internal)? {
        Joined::Joined => Ok(()),
        Joined::Full => Err(refused(Code::ClanFull, format!("clan `{clan}` is full"))),
        Joined::AlreadyInClan => Err(refused(Code::AlreadyInClan, "in a clan already")),
        Joined::NoClan => Err(refused(Code::UnknownClan, format!("no clan `{clan}`"))),
    }
}
