//! Static analysis of compiled expressions and scripts: the ids they name as
//! literals, and the minimum levels requirements ask for. The title loader
//! uses this for "unknown id" diagnostics, requirement cycles and levels that
//! can never be reached.

use rhai::{ASTNode, Expr as RExpr, AST};

use crate::api::{IdKind, ID_FUNCTIONS};
use crate::sandbox::{Expr, Script};

/// A literal id passed to a builder function, e.g. `level("barracks")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRef {
    /// The builder function called.
    pub function: String,
    pub kind: IdKind,
    pub id: String,
    /// The least level this reference demands when the expression is true,
    /// when that can be read off the text: `level("x") >= 3`, `level("x") > 2`,
    /// `has_research("x", 3)`, `count_at_least("x", 3) >= 1`.
    pub min_level: Option<i64>,
    /// 1-based line and column of the id string inside the source.
    pub line: usize,
    pub column: usize,
}

fn int_const(e: &RExpr) -> Option<i64> {
    match e {
        RExpr::IntegerConstant(i, _) => Some(*i),
        _ => None,
    }
}

/// `(function, id)` of a call like `level("x")` with a literal first argument.
fn id_call(e: &RExpr) -> Option<(&str, &RExpr)> {
    match e {
        RExpr::FnCall(call, _) if call.namespace.is_empty() => Some((call.name.as_str(), call.args.first()?)),
        _ => None,
    }
}

fn collect(ast: &AST) -> Vec<IdRef> {
    let mut refs = Vec::new();
    // Minimum levels demanded by comparisons, keyed by the id string's position.
    let mut bounds: Vec<(rhai::Position, i64)> = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        // A call at the top of an expression or statement is a `Stmt::FnCall`;
        // nested ones are `Expr::FnCall`.
        let call = match path.last() {
            Some(ASTNode::Expr(RExpr::FnCall(call, _))) => call,
            Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, _))) => call,
            _ => return true,
        };
        // Comparisons are operator calls with two arguments.
        if call.args.len() == 2 && call.op_token.is_some() {
            let (l, r) = (&call.args[0], &call.args[1]);
            let (query, n, op) = match (id_call(l), int_const(r), id_call(r), int_const(l)) {
                (Some(q), Some(n), _, _) => (q, n, call.name.as_str().to_string()),
                // `3 <= level("x")` reads as `level("x") >= 3`.
                (_, _, Some(q), Some(n)) => (q, n, flip(call.name.as_str()).to_string()),
                _ => return true,
            };
            let (function, id_expr) = query;
            if matches!(function, "level" | "research_level") {
                let min = match op.as_str() {
                    ">=" | "==" => Some(n),
                    ">" => Some(n + 1),
                    _ => None,
                };
                if let (Some(min), RExpr::StringConstant(_, pos)) = (min, id_expr) {
                    bounds.push((*pos, min));
                }
            }
            return true;
        }
        let Some(&(_, kind)) = ID_FUNCTIONS.iter().find(|(f, _)| *f == call.name.as_str()) else { return true };
        if !call.namespace.is_empty() {
            return true;
        }
        let Some(RExpr::StringConstant(id, pos)) = call.args.first() else { return true };
        let min_level = match call.name.as_str() {
            "has_research" | "count_at_least" => call.args.get(1).and_then(int_const),
            _ => None,
        };
        refs.push(IdRef {
            function: call.name.to_string(),
            kind,
            id: id.to_string(),
            min_level,
            line: pos.line().unwrap_or(1),
            column: pos.position().unwrap_or(1),
        });
        true
    });
    for r in &mut refs {
        if let Some((_, min)) = bounds.iter().find(|(p, _)| p.line() == Some(r.line) && p.position() == Some(r.column))
        {
            r.min_level = Some(*min);
        }
    }
    refs
}

fn flip(op: &str) -> &str {
    match op {
        "<=" => ">=",
        "<" => ">",
        ">=" => "<=",
        ">" => "<",
        other => other,
    }
}

/// Whether an expression calls any function (a query of the player's
/// state, the clock, `random`): one that calls none gives the same value
/// for every player at every time (`false`, `1 > 2`). Operators do not count.
pub fn expr_calls_functions(expr: &Expr) -> bool {
    let mut calls = false;
    expr.parsed.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(RExpr::FnCall(call, _))) => call,
            Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, _))) => call,
            Some(ASTNode::Expr(RExpr::Variable(..))) => {
                calls = true;
                return false;
            }
            _ => return true,
        };
        if call.op_token.is_none() {
            calls = true;
            return false;
        }
        true
    });
    calls
}

/// Literal ids named by an expression, with positions inside its text.
pub fn expr_id_refs(expr: &Expr) -> Vec<IdRef> {
    collect(&expr.parsed)
}

/// Literal ids named anywhere in a script, with positions inside the file.
pub fn script_id_refs(script: &Script) -> Vec<IdRef> {
    collect(&script.ast)
}

/// One condition of a simple requirement, for clients to put in words
/// ("needs Barracks level 3"): a query of the player's state, its literal
/// arguments, and what it is compared with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Need {
    /// The query called: `level`, `has_research`, `quest_claimed`, `flag`...
    pub function: String,
    /// Its literal string argument (an id, a flag's name), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its literal number arguments after the id (`has_research("x", 2)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub numbers: Vec<i64>,
    /// The comparison, with the query on the left (`>=`, `>`, `==`, `!=`,
    /// `<`, `<=`), and the number compared with; both absent for a query
    /// that is itself true or false (`quest_claimed("x")`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    /// `!query(..)`: the condition is that the query is false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub negated: bool,
}

/// The conditions of a requirement that is a conjunction (`&&`) of simple
/// conditions: a query with literal arguments, compared with a number or
/// standing alone, possibly negated. `None` for anything else (an `||`,
/// arithmetic, a query of a query), which clients show as its text.
pub fn expr_needs(expr: &Expr) -> Option<Vec<Need>> {
    let statements = expr.parsed.statements();
    let [stmt] = statements else { return None };
    let top = match stmt {
        rhai::Stmt::Expr(e) => e.as_ref().clone(),
        rhai::Stmt::FnCall(call, pos) => RExpr::FnCall(call.clone(), *pos),
        _ => return None,
    };
    let terms: Vec<&RExpr> = match &top {
        RExpr::And(list, _) => list.iter().collect(),
        e => vec![e],
    };
    let mut needs = Vec::new();
    for t in terms {
        // An `&&` nested in an `&&` (from brackets) is flattened.
        if let RExpr::And(inner, _) = t {
            for e in inner.iter() {
                needs.push(need(e)?);
            }
        } else {
            needs.push(need(t)?);
        }
    }
    Some(needs)
}

/// A query with only literal arguments: `(function, id, numbers)`.
fn query(e: &RExpr) -> Option<(String, Option<String>, Vec<i64>)> {
    let RExpr::FnCall(call, _) = e else { return None };
    if call.op_token.is_some() || !call.namespace.is_empty() {
        return None;
    }
    let mut args = call.args.iter();
    let mut id = None;
    let mut numbers = Vec::new();
    if let Some(RExpr::StringConstant(s, _)) = call.args.first() {
        id = Some(s.to_string());
        args.next();
    }
    for a in args {
        numbers.push(int_const(a)?);
    }
    Some((call.name.to_string(), id, numbers))
}

fn need(e: &RExpr) -> Option<Need> {
    if let Some((function, id, numbers)) = query(e) {
        return Some(Need { function, id, numbers, op: None, value: None, negated: false });
    }
    let RExpr::FnCall(call, _) = e else { return None };
    call.op_token.as_ref()?;
    match (call.name.as_str(), call.args.as_slice()) {
        ("!", [inner]) => {
            let (function, id, numbers) = query(inner)?;
            Some(Need { function, id, numbers, op: None, value: None, negated: true })
        }
        (op @ (">=" | ">" | "==" | "!=" | "<" | "<="), [l, r]) => {
            let (q, n, op) = match (query(l), int_const(r)) {
                (Some(q), Some(n)) => (q, n, op),
                _ => (query(r)?, int_const(l)?, flip(op)),
            };
            let (function, id, numbers) = q;
            Some(Need { function, id, numbers, op: Some(op.to_string()), value: Some(n), negated: false })
        }
        _ => None,
    }
}
