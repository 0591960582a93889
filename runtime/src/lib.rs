//! Citadel's runtime: turns a title folder into an immutable, validated
//! [`Title`], and applies player actions to player state as pure functions
//! of (title, state, action, now, rng). No HTTP, no sockets, no async.
//!
//! # Layout
//! - [`load`]: reading a title folder and collecting every [`Diagnostic`].
//! - [`schema`]: the embedded JSON Schemas from `schemas/`.
//! - [`format`]: the title format v1 as typed data.
//! - [`title`]: the compiled [`Title`].
//! - [`state`]: [`PlayerState`], its `format_version` and migrations.
//! - [`state_file`]: a player file's bytes: its header (encoding, version, length, checksum) and encodings.
//! - [`reconcile`]: bringing a player to a new version of the title's data.
//! - [`clan`]: clan roles, ranks and permissions; paying for a founding.
//! - [`raid`]: PvP raid results applied to attacker and defender; relocation; top score windows.
//! - [`rules`]: [`advance`], [`apply`], [`login`]: the rules engine.
//! - [`support`]: what customer support does to a player (grant, revoke, restore) and the player's history.
//! - [`scenario`]: running a title's scenario tests.
//! - [`diagnostic`], [`spans`]: designer-facing errors with positions.
//! - [`time`]: UTC timestamps.
//! - [`timing`]: an observer of script calls, for the server's profile.
//! - [`watch`]: a debounced watcher over a folder of titles (hot reload, `citadel-edit watch`).

pub mod args;
pub mod assets;
pub mod clan;
pub mod client;
pub mod diagnostic;
pub mod docs;
pub mod format;
pub mod load;
pub mod raid;
pub mod reconcile;
pub mod rules;
pub mod scenario;
pub mod schema;
pub mod spans;
pub mod state;
pub mod state_file;
pub mod support;
pub mod time;
pub mod timing;
pub mod title;
mod view;
pub mod watch;
pub mod words;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{load, load_files, read_dir, TitleFiles};
pub use rules::{advance, apply, login, new_player, Action, ActionError, ErrorCode, Event, Rng};
pub use state::{PlayerState, StateError, STATE_FORMAT_VERSION};
pub use state_file::FileFormat;
pub use title::Title;
