//! Citadel's builder-game DSL: one sandboxed Rhai setup that compiles a
//! title's requirement expressions and hook scripts and evaluates them under
//! limits. This crate does no I/O and knows nothing of files, sockets or
//! tokio; it receives source text and returns compiled code, values and
//! [`Effect`]s.
//!
//! # Layout
//! - [`limits`]: every limit the sandbox enforces, with its reason.
//! - [`sandbox`]: the engines, compile and evaluate, the confined module resolver.
//! - [`api`]: the builder API (read-only queries, effect constructors).
//! - [`view`]: the [`StateView`] trait the runtime implements, and [`Ctx`].
//! - [`effect`]: the [`Effect`]s scripts return instead of writing state.
//! - [`analyze`]: literal ids and level bounds read off compiled code.

pub mod analyze;
pub mod api;
pub mod effect;
pub mod limits;
pub mod sandbox;
pub mod view;

pub use api::IdKind;
pub use effect::Effect;
pub use rhai::{Array, Dynamic, Map};
pub use sandbox::{dynamic_to_json, json_to_dynamic, CompileError, EvalError, EvalErrorKind, Expr, Sandbox, Script};
pub use view::{Ctx, StateView};
