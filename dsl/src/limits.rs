//! Every limit the sandbox enforces, as named constants with the reason for each value.
//!
//! A hostile or buggy script must end in a clear error, never a hang, an
//! unbounded allocation or a stack overflow (which aborts the whole process).

/// Operations one requirement expression may take. Requirements are small
/// boolean formulas (`level("hq") >= 3 && resource("gold") >= 500` is ~10
/// operations); 10,000 leaves room for formulas with arithmetic while bounding
/// a request's worst case to well under a millisecond.
pub const EXPR_OPS_MAX: u64 = 10_000;

/// Operations one hook or custom action call may take. Hooks loop over small
/// arrays; 200,000 operations is about 10 ms of interpretation in a release
/// build, which keeps the 200 ms latency budget safe even for a runaway loop.
pub const SCRIPT_OPS_MAX: u64 = 200_000;

/// Nested script function calls. Rhai recursion deeper than the thread's stack
/// aborts the process, so this is set far below what a 2 MiB thread stack
/// holds in a debug build (checked by the `deep_recursion` test).
pub const CALL_LEVELS_MAX: usize = 32;

/// Nesting depth of one expression at the global level and inside functions.
/// Parsing recurses per level; 32 is deeper than any formula a designer writes
/// and keeps the parser's stack use small.
pub const EXPR_DEPTH_MAX: usize = 32;
/// Nesting depth of an expression inside a function body (see [`EXPR_DEPTH_MAX`]).
pub const FN_EXPR_DEPTH_MAX: usize = 32;

/// Bytes in one string value built by a script. Player-visible strings (flags,
/// notifications) are short; 16 KiB stops `s += s` doubling at once.
pub const STRING_BYTES_MAX: usize = 16 * 1024;

/// Elements in one array a script builds (effects, lists of ids).
pub const ARRAY_LEN_MAX: usize = 4096;

/// Entries in one object map a script builds.
pub const MAP_LEN_MAX: usize = 1024;

/// Modules one script may import; a title's `scripts/` folder is small and
/// imports are shallow.
pub const MODULES_MAX: usize = 16;

/// Variables live at once in one script call.
pub const VARIABLES_MAX: usize = 256;

/// Functions one script file may define.
pub const FUNCTIONS_MAX: usize = 256;

/// Effects one hook call may return. A hook that returns more is a bug, and
/// the effects are applied atomically, so the list must stay small.
pub const EFFECTS_MAX: usize = 64;

/// Largest amount one effect may grant or spend. Keeps sums far from i64
/// overflow when many effects are added up.
pub const EFFECT_AMOUNT_MAX: i64 = 1_000_000_000_000;

/// Longest timer a script may start (one year, in seconds).
pub const TIMER_SECONDS_MAX: i64 = 365 * 24 * 3600;

/// Bytes of one expression's source text. Requirements are one-liners.
pub const EXPR_SOURCE_BYTES_MAX: usize = 2 * 1024;

/// Bytes of one script file. Larger files are a sign of generated code that
/// should be data instead.
pub const SCRIPT_SOURCE_BYTES_MAX: usize = 256 * 1024;

/// Nesting depth of a JSON value passed into a script (custom action args).
pub const ARG_DEPTH_MAX: usize = 8;
