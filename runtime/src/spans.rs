//! Source positions of JSON values, by JSON pointer.
//!
//! serde_json does not keep positions, and designers need `file:line:col`
//! for every diagnostic, so this small scanner walks the (already
//! well-formed) text once and records where each value and each object key
//! starts and ends.

use std::collections::HashMap;

/// Where one value sits in the text (byte offsets) and, for object members,
/// where its key sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub key: Option<(usize, usize)>,
}

/// Positions of every value of one JSON document.
#[derive(Debug, Default)]
pub struct SourceMap {
    spans: HashMap<String, Span>,
    line_starts: Vec<usize>,
    text: String,
}

/// Escapes one pointer segment (RFC 6901).
pub fn escape_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl SourceMap {
    /// Scans `text`. Malformed text yields a partial map, never a panic.
    pub fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut map = SourceMap { spans: HashMap::new(), line_starts, text: text.to_string() };
        let mut s = Scanner { b: text.as_bytes(), i: 0, depth: 0 };
        s.value(String::new(), None, &mut map.spans);
        map
    }

    pub fn span(&self, pointer: &str) -> Option<Span> {
        self.spans.get(pointer).copied()
    }

    /// 1-based line and character column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let col = self.text.get(start..offset).map_or(1, |t| t.chars().count() + 1);
        (line, col)
    }

    /// Position and length (in characters) of the value at `pointer`, or of
    /// its key when `key` is set; falls back to the nearest ancestor.
    pub fn locate(&self, pointer: &str, key: bool) -> Option<(usize, usize, usize)> {
        let mut p = pointer.to_string();
        loop {
            if let Some(span) = self.span(&p) {
                let (start, end) = match (key, span.key) {
                    (true, Some(k)) => k,
                    _ => (span.start, span.end),
                };
                let (line, col) = self.line_col(start);
                // Underline at most to the end of the first line.
                let text = self.text.get(start..end).unwrap_or("");
                // Objects and arrays: point at the opening bracket only.
                let len =
                    if text.starts_with(['{', '[']) { 1 } else { text.lines().next().map_or(1, |l| l.chars().count()) };
                return Some((line, col, len));
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return None,
            }
        }
    }

    /// The byte offset inside the file of character `column` (1-based) of
    /// line `line` of the *decoded* JSON string at `pointer`, accounting for
    /// escapes. Used to place Rhai errors inside expression strings.
    pub fn string_position(&self, pointer: &str, line: usize, column: usize) -> Option<(usize, usize)> {
        let span = self.span(pointer)?;
        let raw = self.text.get(span.start + 1..span.end.saturating_sub(1))?;
        let (mut cur_line, mut cur_col) = (1, 1);
        let mut chars = raw.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if cur_line == line && cur_col == column {
                return Some(self.line_col(span.start + 1 + i));
            }
            let decoded = if c == '\\' {
                match chars.next() {
                    Some((_, 'n')) => '\n',
                    Some((_, 'u')) => {
                        for _ in 0..4 {
                            chars.next();
                        }
                        'u'
                    }
                    Some((_, other)) => other,
                    None => break,
                }
            } else {
                c
            };
            if decoded == '\n' {
                cur_line += 1;
                cur_col = 1;
            } else {
                cur_col += 1;
            }
        }
        Some(self.line_col(span.end.saturating_sub(1)))
    }
}

/// Nesting deeper than this is not scanned (serde_json refuses beyond 128).
const SCAN_DEPTH_MAX: usize = 128;

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Option<String> {
        let start = self.i;
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    let raw = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
                    return serde_json::from_str(raw).ok();
                }
                _ => self.i += 1,
            }
        }
        None
    }

    fn value(&mut self, pointer: String, key: Option<(usize, usize)>, out: &mut HashMap<String, Span>) {
        self.ws();
        let start = self.i;
        if start >= self.b.len() || self.depth > SCAN_DEPTH_MAX {
            return;
        }
        self.depth += 1;
        match self.b[start] {
            b'{' => {
                self.i += 1;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b'"') => {
                            let ks = self.i;
                            let Some(k) = self.string() else { break };
                            let ke = self.i;
                            self.ws();
                            if self.b.get(self.i) != Some(&b':') {
                                break;
                            }
                            self.i += 1;
                            self.value(format!("{pointer}/{}", escape_segment(&k)), Some((ks, ke)), out);
                            self.ws();
                            if self.b.get(self.i) == Some(&b',') {
                                self.i += 1;
                            }
                        }
                        Some(b'}') => {
                            self.i += 1;
                            break;
                        }
                        _ => break,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut n = 0;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        Some(_) => {
                            let before = self.i;
                            self.value(format!("{pointer}/{n}"), None, out);
                            n += 1;
                            self.ws();
                            if self.b.get(self.i) == Some(&b',') {
                                self.i += 1;
                            } else if self.i == before {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            }
            b'"' => {
                self.string();
            }
            _ => {
                while self.i < self.b.len()
                    && !matches!(self.b[self.i], b',' | b'}' | b']')
                    && !self.b[self.i].is_ascii_whitespace()
                {
                    self.i += 1;
                }
            }
        }
        self.depth -= 1;
        out.insert(pointer, Span { start, end: self.i, key });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_values_and_keys() {
        let text = "{\n  \"a\": [1, {\"b\": \"x\\\"y\"}],\n  \"c/d\": true\n}";
        let m = SourceMap::new(text);
        assert_eq!(m.locate("/a/1/b", false), Some((2, 18, 6)));
        assert_eq!(m.locate("/a/1/b", true), Some((2, 13, 3)));
        assert_eq!(m.locate("/c~1d", false).map(|p| (p.0, p.1)), Some((3, 10)));
        // Unknown children fall back to the nearest ancestor.
        assert_eq!(m.locate("/a/1/zz", false).map(|p| (p.0, p.1)), Some((2, 12)));
    }

    #[test]
    fn maps_columns_inside_strings_through_escapes() {
        let text = r#"{"e": "a \"b\" c"}"#;
        let m = SourceMap::new(text);
        // Decoded column 4 is `b`; raw text has a backslash before the quote.
        assert_eq!(m.string_position("/e", 1, 4), Some((1, 12)));
    }
}
