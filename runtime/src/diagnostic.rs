//! Designer-facing diagnostics: where (file, line:col, JSON pointer), what,
//! and a "did you mean" where an id is close to a known one.

use serde::Serialize;

/// How bad a diagnostic is. Errors stop a title from loading; warnings don't.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable, machine-readable class, e.g. `schema`, `unknown-id`.
    pub code: &'static str,
    /// Path of the file relative to the title folder, `/` separated.
    pub file: String,
    /// JSON pointer of the offending value inside a JSON file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// How many characters the underline covers (at least 1).
    #[serde(skip)]
    pub len: usize,
    /// What is wrong and what was expected; lowercase, no final period.
    pub message: String,
    /// A suggestion, e.g. "did you mean `gold`?".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error in `file` with no position yet.
    pub fn error(code: &'static str, file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            file: file.into(),
            pointer: None,
            line: None,
            column: None,
            len: 1,
            message: message.into(),
            help: None,
        }
    }

    /// The same diagnostic as a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn at(mut self, line: usize, column: usize, len: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self.len = len.max(1);
        self
    }

    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    pub fn help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// `file:line:col` (or `file` alone, or `file#pointer`).
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            _ => match &self.pointer {
                Some(p) => format!("{}#{p}", self.file),
                None => self.file.clone(),
            },
        }
    }

    /// Renders the diagnostic the way a compiler does, with the offending
    /// line of `source` (the file's text, when available) and an underline.
    ///
    /// ```text
    /// error[unknown-id]: unknown resource `gld`
    ///   --> buildings.json:12:21 (/buildings/0/levels/0/cost/gld)
    ///    |
    /// 12 |         "cost": { "gld": 100 },
    ///    |                   ^^^^^
    ///    = help: did you mean `gold`?
    /// ```
    pub fn render(&self, title_dir: &str, source: Option<&str>) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{sev}[{}]: {}\n", self.code, self.message);
        let loc = match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{title_dir}/{}:{l}:{c}", self.file),
            _ => format!("{title_dir}/{}", self.file),
        };
        match &self.pointer {
            Some(p) if !p.is_empty() => out.push_str(&format!("  --> {loc} ({p})\n")),
            _ => out.push_str(&format!("  --> {loc}\n")),
        }
        // The help line lines up with the gutter, whose width is the line number's.
        let mut gutter = 2;
        if let (Some(line), Some(col), Some(src)) = (self.line, self.column, source) {
            if let Some(text) = src.lines().nth(line - 1) {
                let num = line.to_string();
                let pad = " ".repeat(num.len());
                gutter = num.len() + 1;
                // Tabs would misalign the caret; show them as one space.
                let shown: String = text.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
                let width = shown.chars().count().saturating_sub(col - 1).max(1);
                out.push_str(&format!(
                    "{pad} |\n{num} | {shown}\n{pad} | {}{}\n",
                    " ".repeat(col - 1),
                    "^".repeat(self.len.min(width))
                ));
            }
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("{}= help: {help}\n", " ".repeat(gutter)));
        }
        out
    }
}

/// Edit distance counting a swap of two neighbours as one edit (optimal
/// string alignment), since `mien` for `mine` is the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The closest known name to `name`, if it is close enough to be a typo:
/// within a third of its length (at least 1, at most 3 edits), or the same
/// apart from case or a prefix/suffix relation.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let lower = name.to_lowercase();
    let known: Vec<&str> = known.into_iter().filter(|k| *k != name).collect();
    let close = known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, k)| (*d, k.to_string()))
        .map(|(_, k)| k);
    // A shortened or lengthened name (`repeat` for `repeat_last`), when
    // only one known name fits and both are long enough to mean something.
    let related = || {
        let mut fits = known.iter().filter(|k| {
            let k = k.to_lowercase();
            lower.chars().count() >= 3
                && k.chars().count() >= 3
                && (k.starts_with(&lower) || k.ends_with(&lower) || lower.starts_with(&k) || lower.ends_with(&k))
        });
        match (fits.next(), fits.next()) {
            (Some(k), None) => Some(*k),
            _ => None,
        }
    };
    close.or_else(related).map(|k| format!("did you mean `{k}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let known = ["gold", "wood", "stone", "gems"];
        assert_eq!(did_you_mean("gld", known), Some("did you mean `gold`?".into()));
        assert_eq!(did_you_mean("ston", known), Some("did you mean `stone`?".into()));
        assert_eq!(did_you_mean("barracks", known), None);
        assert_eq!(did_you_mean("mien", ["mine", "hq"]), Some("did you mean `mine`?".into()));
        // A prefix or suffix of exactly one known name.
        assert_eq!(did_you_mean("repeat", ["repeat_last", "restart"]), Some("did you mean `repeat_last`?".into()));
        assert_eq!(did_you_mean("mill", ["lumber_mill", "hq"]), Some("did you mean `lumber_mill`?".into()));
        assert_eq!(did_you_mean("mill", ["lumber_mill", "stone_mill"]), None);
        assert_eq!(did_you_mean("go", ["gold_mine", "hq"]), None);
    }
}
