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

/// Pays for founding a clan: advance, then the title's `create_cost`.
pub fn pay_founding(title: &Title, s: &mut PlayerState, now_ms: i64, rng: &mut Rng) -> Result<Vec<Event>, ActionError> {
    let events = rules::advance(title, s, now_ms, rng);
    let clans = rules_of(title)?;
    rules::check_cost(title, s, &clans.create_cost, 1)?;
    rules::pay(s, &clans.create_cost, 1);
    Ok(events)
}
