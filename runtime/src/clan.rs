//! Clan rules as pure functions: role ranks and permissions from the
//! title's `world.clans`, and paying for a clan's founding. The server
//! keeps clans themselves in the world store and asks these functions what
//! a member may do.

use crate::format::{ClanPermission, ClansDef};
use crate::rules::{self, err, ActionError, ErrorCode, Event, Rng};
use crate::state::PlayerState;
use crate::title::Title;

/// The title's clan rules, or `not_available`.
pub fn rules_of(title: &Title) -> Result<&ClansDef, ActionError> {
    match &title.manifest.world.clans {
        Some(c) => Ok(c),
        None => err(ErrorCode::NotAvailable, format!("title `{}` has no clans", title.id())),
    }
}

/// A role's rank: 0 for the highest; `None` for a role the title no
/// longer defines (it ranks below every defined role).
pub fn rank(clans: &ClansDef, role: &str) -> Option<usize> {
    clans.roles.iter().position(|r| r.id == role)
}

/// Whether `role` may do `what`.
pub fn can(clans: &ClansDef, role: &str, what: ClanPermission) -> bool {
    clans.roles.iter().any(|r| r.id == role && r.can.contains(&what))
}

/// Whether a member of role `actor` may act on (kick, promote, demote) a
/// member of role `target`: only on lower ranks.
pub fn outranks(clans: &ClansDef, actor: &str, target: &str) -> bool {
    let low = clans.roles.len();
    rank(clans, actor).unwrap_or(low) < rank(clans, target).unwrap_or(low)
}

/// The founder's role and a new member's role.
pub fn founder_role(clans: &ClansDef) -> &str {
    clans.roles.first().map_or("", |r| r.id.as_str())
}

pub fn member_role(clans: &ClansDef) -> &str {
    clans.roles.last().map_or("", |r| r.id.as_str())
}

/// The title's gifts between clan members, or `not_available`.
pub fn gifts_of(title: &Title) -> Result<&crate::format::GiftsDef, ActionError> {
    match &rules_of(title)?.gifts {
        Some(g) => Ok(g),
        None => err(ErrorCode::NotAvailable, format!("title `{}` has no gifts between clan members", title.id())),
    }
}

/// Pays for founding a clan: advance, then the title's `create_cost`.
pub fn pay_founding(title: &Title, s: &mut PlayerState, now_ms: i64, rng: &mut Rng) -> Result<Vec<Event>, ActionError> {
    let events = rules::advance(title, s, now_ms, rng);
    let clans = rules_of(title)?;
    rules::check_cost(title, s, &clans.create_cost, 1)?;
    rules::pay(s, &clans.create_cost, 1);
    Ok(events)
}

/// Problems a refused gift's answer lists (then how many more).
const PROBLEMS_SHOWN: usize = 10;

/// The UTC day of `ms` (days since 1970), which `world.clans.gifts.per_day` counts in.
fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// Gives clan member `to` resources: advance, then check them against the
/// title's `world.clans.gifts` (resources it allows, each at most its
/// amount, `per_day`) and what the player holds, and take them. The gift
/// waits in the player's `gifts.outgoing` as `id` until the server puts it
/// in `to`'s inbox ([`gift_delivered`]) or brings it back
/// ([`gift_returned`]). That both players are in `clan` is the server's
/// to check (clans live in the world store).
#[allow(clippy::too_many_arguments)]
pub fn send_gift(
    title: &Title,
    s: &mut PlayerState,
    id: &str,
    to: &str,
    clan: &str,
    resources: &crate::format::Amounts,
    now_ms: i64,
    rng: &mut Rng,
) -> Result<Vec<Event>, ActionError> {
    let gifts = gifts_of(title)?;
    let mut problems = Vec::new();
    for (r, &amount) in resources {
        match gifts.resources.get(r) {
            None => {
                let help = crate::diagnostic::did_you_mean(r, gifts.resources.keys().map(String::as_str))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                problems.push(format!("`{r}` cannot be given{help}"));
            }
            Some(&most) if amount < 1 || amount > most => {
                problems.push(format!("a gift carries 1 to {most} {r}, not {amount}"));
            }
            Some(_) => {}
        }
    }
    if resources.is_empty() {
        problems.push("a gift carries at least one resource".to_string());
    }
    if !problems.is_empty() {
        // A request naming thousands of resources gets a readable answer.
        let more = problems.len().saturating_sub(PROBLEMS_SHOWN);
        problems.truncate(PROBLEMS_SHOWN);
        if more > 0 {
            problems.push(format!("and {more} more"));
        }
        return err(ErrorCode::InvalidArgument, problems.join("; "));
    }
    let day = day_of(now_ms);
    let sent_today = if s.gifts.day == day { s.gifts.sent_today } else { 0 };
    if sent_today >= gifts.per_day {
        return err(
            ErrorCode::LimitReached,
            format!("{} gifts a day at most; the next one tomorrow (UTC)", gifts.per_day),
        );
    }
    if s.gifts.outgoing.len() >= crate::state::OUTGOING_GIFTS_MAX {
        return err(ErrorCode::Busy, "too many gifts are still on their way; try again in a moment");
    }
    let mut events = rules::advance(title, s, now_ms, rng);
    rules::check_cost(title, s, resources, 1)?;
    rules::pay(s, resources, 1);
    s.gifts.day = day;
    s.gifts.sent_today = sent_today + 1;
    s.gifts.outgoing.push(crate::state::OutgoingGift {
        id: id.to_string(),
        to: to.to_string(),
        clan: clan.to_string(),
        resources: resources.clone(),
        sent_ms: now_ms,
    });
    *s.counters.entry("gifts_sent".to_string()).or_insert(0) += 1;
    events.push(Event::GiftSent { gift: id.to_string(), to: to.to_string(), resources: resources.clone() });
    Ok(events)
}

/// A gift reached its receiver's inbox: it is no longer on its way. A gift
/// the player no longer has on its way (already settled) changes nothing.
pub fn gift_delivered(s: &mut PlayerState, id: &str) -> Vec<Event> {
    match s.gifts.outgoing.iter().position(|g| g.id == id) {
        Some(i) => {
            let g = s.gifts.outgoing.remove(i);
            vec![Event::GiftDelivered { gift: g.id, to: g.to }]
        }
        None => Vec::new(),
    }
}

/// A gift could not reach its receiver: its resources come back to the
/// player (whole, even above storage: they were the player's).
pub fn gift_returned(s: &mut PlayerState, id: &str) -> Vec<Event> {
    let Some(i) = s.gifts.outgoing.iter().position(|g| g.id == id) else { return Vec::new() };
    let g = s.gifts.outgoing.remove(i);
    for (r, &amount) in &g.resources {
        let v = s.resources.entry(r.clone()).or_insert(0);
        *v = v.saturating_add(amount);
    }
    vec![Event::GiftReturned { gift: g.id, to: g.to, resources: g.resources }]
}
