//! The one sandboxed Rhai setup: two engines (expressions and scripts) that
//! share limits and the builder API, plus a module resolver confined to the
//! title's own scripts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rhai::module_resolvers::ModuleResolver;
use rhai::packages::Package;
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Module, ParseError, Position, Scope, Shared, AST};

type SharedModule = Shared<Module>;

use crate::api;
use crate::effect::Effect;
use crate::limits::*;
use crate::view::Ctx;

/// A compile error at a position inside the compiled source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// Lowercase, no final period.
    pub message: String,
    /// 1-based line inside the source text, when known.
    pub line: Option<usize>,
    /// 1-based column inside the source text, when known.
    pub column: Option<usize>,
}

/// Why an evaluation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalErrorKind {
    /// The operations limit was hit: almost always an endless loop.
    TooManyOperations,
    /// The call depth limit was hit: almost always unbounded recursion.
    TooDeep,
    /// A string, array or map grew past its limit.
    TooLarge,
    /// The value returned was not what the caller expected.
    WrongType,
    /// Any other runtime error (unknown id, arithmetic overflow, `throw`...).
    Runtime,
}

/// A failed evaluation, with the position inside the source when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    pub kind: EvalErrorKind,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// A designer's word for a Rhai type name.
fn type_words(rhai_type: &str) -> &str {
    match rhai_type {
        "i64" => "an integer",
        "f64" => "a decimal number",
        "bool" => "true or false",
        "string" | "ImmutableString" | "&str" => "a string",
        "()" => "nothing",
        "array" => "an array",
        "map" => "a map",
        "char" => "a character",
        other => other,
    }
}

impl EvalError {
    fn wrong_type(message: String) -> Self {
        EvalError { kind: EvalErrorKind::WrongType, message, line: None, column: None }
    }

    /// `message (line L, column C)`, or just the message.
    pub fn with_position(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{} (line {l}, column {c})", self.message),
            _ => self.message.clone(),
        }
    }
}

fn pos_parts(pos: Position) -> (Option<usize>, Option<usize>) {
    (pos.line(), pos.position())
}

fn compile_error(err: ParseError, line_shift: usize) -> CompileError {
    let (line, column) = pos_parts(err.1);
    CompileError {
        message: lower_first(&err.0.to_string()),
        line: line.map(|l| l.saturating_sub(line_shift).max(1)),
        column,
    }
}

fn eval_error(err: EvalAltResult, line_shift: usize) -> EvalError {
    let (line, column) = pos_parts(err.position());
    let line = line.map(|l| l.saturating_sub(line_shift).max(1));
    let (kind, message) = match err {
        EvalAltResult::ErrorTooManyOperations(_) => (
            EvalErrorKind::TooManyOperations,
            "script exceeded its operations limit (is there an endless loop?)".to_string(),
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            EvalErrorKind::TooDeep,
            format!("script exceeded the call depth limit of {CALL_LEVELS_MAX} (is there unbounded recursion?)"),
        ),
        EvalAltResult::ErrorDataTooLarge(ref what, _) => {
            (EvalErrorKind::TooLarge, format!("script data too large: {}", what.to_lowercase()))
        }
        EvalAltResult::ErrorRuntime(ref v, _) => (EvalErrorKind::Runtime, v.to_string()),
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => {
            let inner = eval_error(*inner, line_shift);
            return inner;
        }
        EvalAltResult::ErrorInModule(_, inner, _) => return eval_error(*inner, 0),
        // Rhai's own text ends with its position in the wrapped source;
        // the error carries the position apart (shifted to the designer's text).
        ref other => (EvalErrorKind::Runtime, lower_first(strip_rhai_position(&other.to_string()))),
    };
    EvalError { kind, message, line, column }
}

/// `message (line L, position P)` without the part in parentheses.
fn strip_rhai_position(s: &str) -> &str {
    match s.rfind(" (line ") {
        Some(i) if s.ends_with(')') && s[i..].contains("position") => &s[..i],
        _ => s,
    }
}

fn lower_first(s: &str) -> String {
    let s = s.trim_end_matches('.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A compiled requirement or formula.
#[derive(Debug, Clone)]
pub struct Expr {
    /// The expression as `compile_expression` parsed it (for analysis).
    pub(crate) parsed: AST,
    /// The same text wrapped in `fn e() { .. }` so that it can be called with
    /// a per-call tag carrying the player's state.
    callable: AST,
    source: String,
}

impl Expr {
    /// The source text of the expression.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The name of the wrapper function, and how many lines it shifts positions.
const EXPR_FN: &str = "__citadel_expr";
const EXPR_LINE_SHIFT: usize = 1;

/// A compiled script file from a title's `scripts/` folder.
#[derive(Debug, Clone)]
pub struct Script {
    pub(crate) ast: AST,
    name: String,
}

impl Script {
    /// The module name (file name without `.rhai`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameter counts of every function with this name defined in the file.
    pub fn arities(&self, function: &str) -> Vec<usize> {
        self.ast.iter_functions().filter(|f| f.name == function).map(|f| f.params.len()).collect()
    }

    /// Names of all functions defined in the file (for "did you mean").
    pub fn function_names(&self) -> Vec<String> {
        self.ast.iter_functions().map(|f| f.name.to_string()).collect()
    }
}

/// Resolves `import "name"` to another script of the same title and nothing
/// else: no paths, no files outside `scripts/`, no cache shared with other
/// titles or other versions of this title.
struct TitleModules {
    sources: BTreeMap<String, String>,
    built: Mutex<BTreeMap<String, SharedModule>>,
    /// Modules being built right now, to report import cycles instead of
    /// recursing until the stack runs out.
    building: Mutex<Vec<String>>,
}

impl ModuleResolver for TitleModules {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        // Rhai rewrites `ErrorModuleNotFound` to the bare path, so the
        // explanation travels as a runtime error.
        let not_found =
            |why: String| Err(Box::new(EvalAltResult::ErrorRuntime(format!("cannot import {why}").into(), pos)));
        if let Some(m) = lock(&self.built).get(path) {
            return Ok(m.clone());
        }
        let Some(source) = self.sources.get(path) else {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            return not_found(format!(
                "`{path}`: only scripts of this title's scripts/ folder can be imported, by name without `.rhai` (known: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        };
        {
            let mut building = lock(&self.building);
            if building.iter().any(|b| b == path) {
                return not_found(format!("`{path}`: import cycle ({} -> {path})", building.join(" -> ")));
            }
            building.push(path.to_string());
        }
        let result =
            engine.compile(source).map_err(|e| Box::new(EvalAltResult::ErrorParsing(*e.0, e.1))).and_then(|mut ast| {
                ast.set_source(path);
                Module::eval_ast_as_new(Scope::new(), &ast, engine)
            });
        lock(&self.building).retain(|b| b != path);
        let module: SharedModule = result?.into();
        lock(&self.built).insert(path.to_string(), module.clone());
        Ok(module)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (each
    // critical section is a single insert or lookup), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One title's script environment.
pub struct Sandbox {
    exprs: Engine,
    scripts: Engine,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

fn base_engine(ops_max: u64) -> Engine {
    // `new_raw` starts with no packages, no module resolver and no print; we
    // add back only the pure standard library.
    let mut e = Engine::new_raw();
    e.register_global_module(rhai::packages::StandardPackage::new().as_shared_module());
    e.set_max_operations(ops_max)
        .set_max_call_levels(CALL_LEVELS_MAX)
        .set_max_expr_depths(EXPR_DEPTH_MAX, FN_EXPR_DEPTH_MAX)
        .set_max_string_size(STRING_BYTES_MAX)
        .set_max_array_size(ARRAY_LEN_MAX)
        .set_max_map_size(MAP_LEN_MAX)
        .set_max_modules(MODULES_MAX)
        .set_max_variables(VARIABLES_MAX)
        .set_max_functions(FUNCTIONS_MAX)
        .set_strict_variables(true);
    // `eval` would compile text at run time, outside every load-time check.
    e.disable_symbol("eval");
    // Scripts have no output channel; print/debug are accepted and dropped so
    // that a stray debugging line is not a load error.
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});
    api::register_queries(&mut e);
    e
}

impl Sandbox {
    /// A sandbox whose scripts may import each other by name. `sources` maps
    /// a module name (file name without `.rhai`) to its text.
    pub fn new(sources: BTreeMap<String, String>) -> Self {
        let mut exprs = base_engine(EXPR_OPS_MAX);
        exprs.set_allow_looping(false).set_allow_anonymous_fn(false).set_allow_statement_expression(false);
        exprs.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        let mut scripts = base_engine(SCRIPT_OPS_MAX);
        api::register_effects(&mut scripts);
        scripts.set_module_resolver(TitleModules {
            sources,
            built: Mutex::new(BTreeMap::new()),
            building: Mutex::new(Vec::new()),
        });
        Sandbox { exprs, scripts }
    }

    /// Compiles a requirement or formula. Expressions cannot contain
    /// statements, loops, closures or variables.
    pub fn compile_expr(&self, source: &str) -> Result<Expr, CompileError> {
        if source.len() > EXPR_SOURCE_BYTES_MAX {
            return Err(CompileError {
                message: format!("expression is {} bytes, the limit is {EXPR_SOURCE_BYTES_MAX}", source.len()),
                line: None,
                column: None,
            });
        }
        let parsed = self.exprs.compile_expression(source).map_err(|e| compile_error(e, 0))?;
        let callable = self
            .exprs
            .compile(format!("fn {EXPR_FN}() {{\n{source}\n}}"))
            .map_err(|e| compile_error(e, EXPR_LINE_SHIFT))?;
        Ok(Expr { parsed, callable, source: source.to_string() })
    }

    /// Compiles one script file. `name` is its module name.
    pub fn compile_script(&self, name: &str, source: &str) -> Result<Script, CompileError> {
        if source.len() > SCRIPT_SOURCE_BYTES_MAX {
            return Err(CompileError {
                message: format!("script is {} bytes, the limit is {SCRIPT_SOURCE_BYTES_MAX}", source.len()),
                line: None,
                column: None,
            });
        }
        let mut ast = self.scripts.compile(source).map_err(|e| compile_error(e, 0))?;
        ast.set_source(name);
        Ok(Script { ast, name: name.to_string() })
    }

    /// Resolves every import of `script` now, so that a missing module or an
    /// import cycle is a load error rather than a failure on a player's action.
    pub fn link(&self, script: &Script) -> Result<(), EvalError> {
        let mut failure = None;
        script.ast.walk(&mut |path| {
            if let Some(rhai::ASTNode::Stmt(rhai::Stmt::Import(x, pos))) = path.last() {
                if let rhai::Expr::StringConstant(name, _) = &x.0 {
                    if let Err(e) = self.scripts.module_resolver().resolve(&self.scripts, None, name, *pos) {
                        failure = Some(eval_error(*e, 0));
                        return false;
                    }
                }
            }
            true
        });
        failure.map_or(Ok(()), Err)
    }

    fn call_expr(&self, expr: &Expr, ctx: &Ctx) -> Result<Dynamic, EvalError> {
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true).with_tag(ctx.clone());
        self.exprs
            .call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &expr.callable, EXPR_FN, ())
            .map_err(|e| eval_error(*e, EXPR_LINE_SHIFT))
    }

    /// Evaluates a requirement; it must produce `true` or `false`.
    pub fn eval_bool(&self, expr: &Expr, ctx: &Ctx) -> Result<bool, EvalError> {
        let v = self.call_expr(expr, ctx)?;
        v.as_bool().map_err(|t| EvalError::wrong_type(format!("expected true or false, got {}", type_words(t))))
    }

    /// Evaluates a formula; it must produce an integer.
    pub fn eval_int(&self, expr: &Expr, ctx: &Ctx) -> Result<i64, EvalError> {
        let v = self.call_expr(expr, ctx)?;
        v.as_int().map_err(|t| EvalError::wrong_type(format!("expected an integer, got {}", type_words(t))))
    }

    /// Calls `function` of `script` with one argument and returns the effects
    /// it asks for. A function may return `()`, one effect or an array of them.
    pub fn call(&self, script: &Script, function: &str, arg: Dynamic, ctx: &Ctx) -> Result<Vec<Effect>, EvalError> {
        let options = CallFnOptions::new().eval_ast(true).rewind_scope(true).with_tag(ctx.clone());
        let out = self
            .scripts
            .call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &script.ast, function, (arg,))
            .map_err(|e| eval_error(*e, 0))?;
        effects_from(out)
    }

    /// Calls a script function that answers with a value (a raid's
    /// resolution) rather than effects; the value comes back as JSON.
    pub fn call_value(
        &self,
        script: &Script,
        function: &str,
        arg: Dynamic,
        ctx: &Ctx,
    ) -> Result<serde_json::Value, EvalError> {
        let options = CallFnOptions::new().eval_ast(true).rewind_scope(true).with_tag(ctx.clone());
        let out = self
            .scripts
            .call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &script.ast, function, (arg,))
            .map_err(|e| eval_error(*e, 0))?;
        dynamic_to_json(&out).map_err(EvalError::wrong_type)
    }
}

/// Converts a script value into JSON: unit, booleans, integers, floats,
/// strings, arrays and maps (as the script limits bound them); anything
/// else (an effect, a function pointer) is refused.
pub fn dynamic_to_json(value: &Dynamic) -> Result<serde_json::Value, String> {
    fn go(v: &Dynamic, depth: usize) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        if depth > ARG_DEPTH_MAX {
            return Err(format!("value nested deeper than {ARG_DEPTH_MAX} levels"));
        }
        if v.is_unit() {
            return Ok(J::Null);
        }
        if let Some(b) = v.clone().try_cast::<bool>() {
            return Ok(J::Bool(b));
        }
        if let Some(i) = v.clone().try_cast::<i64>() {
            return Ok(J::from(i));
        }
        if let Some(f) = v.clone().try_cast::<f64>() {
            return Ok(serde_json::Number::from_f64(f).map_or(J::Null, J::Number));
        }
        if v.is_string() {
            return Ok(J::String(v.clone().into_string().unwrap_or_default()));
        }
        if v.is_array() {
            let a = v.clone().into_array().unwrap_or_default();
            return a.iter().map(|x| go(x, depth + 1)).collect::<Result<Vec<_>, _>>().map(J::Array);
        }
        if v.is_map() {
            let m = v.clone().try_cast::<rhai::Map>().unwrap_or_default();
            let mut out = serde_json::Map::new();
            for (k, x) in &m {
                out.insert(k.to_string(), go(x, depth + 1)?);
            }
            return Ok(J::Object(out));
        }
        Err(format!("a value of type {} cannot be data", type_words(v.type_name())))
    }
    go(value, 0)
}

fn effects_from(value: Dynamic) -> Result<Vec<Effect>, EvalError> {
    if value.is_unit() {
        return Ok(Vec::new());
    }
    if value.is::<Effect>() {
        return Ok(vec![value.cast::<Effect>()]);
    }
    let type_name = value.type_name();
    let Some(array) = value.try_cast::<rhai::Array>() else {
        return Err(EvalError::wrong_type(format!(
            "a hook must return an effect, an array of effects or nothing; it returned {}",
            type_words(type_name)
        )));
    };
    if array.len() > EFFECTS_MAX {
        return Err(EvalError {
            kind: EvalErrorKind::TooLarge,
            message: format!("hook returned {} effects, the limit is {EFFECTS_MAX}", array.len()),
            line: None,
            column: None,
        });
    }
    array
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let t = v.type_name();
            v.try_cast::<Effect>().ok_or_else(|| {
                EvalError::wrong_type(format!(
                    "element {i} of the returned array is {}, expected an effect such as grant(\"gold\", 10)",
                    type_words(t)
                ))
            })
        })
        .collect()
}

/// Converts a JSON value (a custom action's arguments, an event) into a
/// script value, refusing values nested deeper than [`ARG_DEPTH_MAX`] or
/// larger than the script limits.
pub fn json_to_dynamic(value: &serde_json::Value) -> Result<Dynamic, String> {
    fn go(v: &serde_json::Value, depth: usize) -> Result<Dynamic, String> {
        use serde_json::Value as J;
        if depth > ARG_DEPTH_MAX {
            return Err(format!("value nested deeper than {ARG_DEPTH_MAX} levels"));
        }
        Ok(match v {
            J::Null => Dynamic::UNIT,
            J::Bool(b) => (*b).into(),
            J::Number(n) => match n.as_i64() {
                Some(i) => i.into(),
                None => n.as_f64().unwrap_or(0.0).into(),
            },
            J::String(s) if s.len() > STRING_BYTES_MAX => {
                return Err(format!("string of {} bytes, the limit is {STRING_BYTES_MAX}", s.len()))
            }
            J::String(s) => s.as_str().into(),
            J::Array(a) if a.len() > ARRAY_LEN_MAX => {
                return Err(format!("array of {} elements, the limit is {ARRAY_LEN_MAX}", a.len()))
            }
            J::Array(a) => a.iter().map(|x| go(x, depth + 1)).collect::<Result<rhai::Array, _>>()?.into(),
            J::Object(m) if m.len() > MAP_LEN_MAX => {
                return Err(format!("object of {} entries, the limit is {MAP_LEN_MAX}", m.len()))
            }
            J::Object(m) => {
                let mut out = rhai::Map::new();
                for (k, x) in m {
                    out.insert(k.as_str().into(), go(x, depth + 1)?);
                }
                out.into()
            }
        })
    }
    go(value, 0)
}
