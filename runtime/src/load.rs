//! Loading a title folder into a [`Title`], collecting every diagnostic.
//!
//! Order of operations (each pass runs even if an earlier one found errors,
//! on whatever parsed, so that a designer sees all problems at once):
//! 1. read the folder (size and count limits, UTF-8);
//! 2. parse each JSON file and validate it against its schema;
//! 3. deserialize the files that passed into typed data;
//! 4. compile scripts and link their imports;
//! 5. check cross-references between files, with "did you mean";
//! 6. compile every expression and check the ids it names;
//! 7. check levels that can never be reached and requirement cycles;
//! 8. if there is no error so far, build the [`Title`] and evaluate every
//!    expression once against a new player's state, to catch type errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use citadel_dsl::analyze::{expr_calls_functions, expr_id_refs, script_id_refs, IdRef};
use citadel_dsl::{EvalErrorKind, Expr, IdKind, Sandbox, Script};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diagnostic::{did_you_mean, Diagnostic, Severity};
use crate::format::*;
use crate::schema::{self, FileKind};
use crate::spans::SourceMap;
use crate::title::*;

/// Bytes of one file of a title. The largest real data file is a few tens
/// of KiB; 1 MiB leaves room and bounds the loader's memory per file.
pub const TITLE_FILE_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of a whole title (all files read), bounding a reload's memory.
pub const TITLE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Files read from one title folder (data files, scripts, tests).
pub const TITLE_FILES_MAX: usize = 512;

/// The files of a title folder, by path relative to it (`/` separated).
pub type TitleFiles = BTreeMap<String, String>;

/// Reads a title folder: the JSON files at its root, `scripts/*.rhai`,
/// `tests/*.json` and the images under `assets/`. Problems reading are diagnostics, like everything else.
pub fn read_dir(dir: &Path) -> (TitleFiles, Vec<Diagnostic>) {
    let mut files = TitleFiles::new();
    let mut diags = Vec::new();
    let mut total = 0usize;
    let mut visit = |rel_dir: &str, want_ext: &str, diags: &mut Vec<Diagnostic>| {
        let path = if rel_dir.is_empty() { dir.to_path_buf() } else { dir.join(rel_dir) };
        let Ok(entries) = std::fs::read_dir(&path) else {
            if rel_dir.is_empty() {
                diags.push(Diagnostic::error("io", "", format!("cannot read title folder {}", dir.display())));
            }
            return;
        };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
            if !p.is_file() || !name.ends_with(want_ext) || name.starts_with('.') {
                continue;
            }
            let rel = if rel_dir.is_empty() { name.to_string() } else { format!("{rel_dir}/{name}") };
            if files.len() >= TITLE_FILES_MAX {
                diags.push(Diagnostic::error("limit", rel, format!("title has more than {TITLE_FILES_MAX} files")));
                return;
            }
            match std::fs::read(&p) {
                Err(e) => diags.push(Diagnostic::error("io", rel, format!("cannot read file: {e}"))),
                Ok(bytes) if bytes.len() > TITLE_FILE_BYTES_MAX => diags.push(Diagnostic::error(
                    "limit",
                    rel,
                    format!("file is {} bytes, the limit is {TITLE_FILE_BYTES_MAX}", bytes.len()),
                )),
                Ok(bytes) => {
                    total += bytes.len();
                    if total > TITLE_BYTES_MAX {
                        diags.push(Diagnostic::error(
                            "limit",
                            rel,
                            format!("title is larger than {TITLE_BYTES_MAX} bytes"),
                        ));
                        return;
                    }
                    match String::from_utf8(bytes) {
                        Ok(text) => {
                            files.insert(rel, text);
                        }
                        Err(_) => diags.push(Diagnostic::error("encoding", rel, "file is not valid UTF-8")),
                    }
                }
            }
        }
    };
    visit("", ".json", &mut diags);
    visit("scripts", ".rhai", &mut diags);
    visit("tests", ".json", &mut diags);
    crate::assets::read(dir, &mut files, &mut diags, &mut total, TITLE_BYTES_MAX);
    (files, diags)
}

/// Loads the title folder at `dir`. Returns the title if there was no error,
/// and every diagnostic (errors and warnings) either way.
pub fn load(dir: &Path) -> (Option<Title>, Vec<Diagnostic>) {
    let (_, title, diags) = load_with_files(dir);
    (title, diags)
}

/// [`load`], also returning the files read (to keep or show them). The
/// title id must match the folder's name as given (a symlink's own name);
/// `.` and `..` are named by the folder they stand for.
pub fn load_with_files(dir: &Path) -> (TitleFiles, Option<Title>, Vec<Diagnostic>) {
    let (files, mut diags) = read_dir(dir);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| dir.canonicalize().ok()?.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let (title, more) = load_files(&name, &files);
    diags.extend(more);
    let title = title.filter(|_| !diags.iter().any(|d| d.severity == Severity::Error));
    (files, title, sorted(diags))
}

/// A title id as the schema allows it: a lowercase letter, then lowercase
/// letters, digits and `_`, at most 32 characters (safe as a file name).
pub fn valid_title_id(id: &str) -> bool {
    id.len() <= 32
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by(|a, b| (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message)));
    diags.dedup();
    diags
}

/// The content version of a title: a hash of its data files and scripts
/// (scenario tests do not change the game, so they do not count).
pub fn content_version(files: &TitleFiles) -> String {
    let mut h = Sha256::new();
    for (path, text) in files.iter().filter(|(p, _)| !p.starts_with("tests/")) {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Loads a title from its files (as [`read_dir`] returns them, or as sent
/// to a server's admin API). `folder` is the folder name the title id must match.
pub fn load_files(folder: &str, files: &TitleFiles) -> (Option<Title>, Vec<Diagnostic>) {
    // Files that did not come through `read_dir` (a push to a server) meet
    // the same limits before anything parses them.
    let limits = file_limits(files);
    if !limits.is_empty() {
        return (None, limits);
    }
    let mut l = Loader { files, maps: HashMap::new(), diags: Vec::new(), raw: HashMap::new() };
    let title = l.run(folder);
    let diags = sorted(l.diags);
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return (None, diags);
    }
    (title, diags)
}

fn file_limits(files: &TitleFiles) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    if files.len() > TITLE_FILES_MAX {
        diags.push(Diagnostic::error(
            "limit",
            "",
            format!("title has {} files, the limit is {TITLE_FILES_MAX}", files.len()),
        ));
    }
    let mut total = 0usize;
    for (path, text) in files {
        total += text.len();
        if text.len() > TITLE_FILE_BYTES_MAX {
            diags.push(Diagnostic::error(
                "limit",
                path.clone(),
                format!("file is {} bytes, the limit is {TITLE_FILE_BYTES_MAX}", text.len()),
            ));
        }
    }
    if total > TITLE_BYTES_MAX {
        diags.push(Diagnostic::error("limit", "", format!("title is {total} bytes, the limit is {TITLE_BYTES_MAX}")));
    }
    diags
}

/// Parsed data files; `None` where the file is missing or has errors.
#[derive(Default)]
struct Parsed {
    title: Option<TitleFile>,
    resources: Option<ResourcesFile>,
    buildings: Option<BuildingsFile>,
    units: Option<UnitsFile>,
    research: Option<ResearchFile>,
    store: Option<StoreFile>,
    quests: Option<QuestsFile>,
    loot: Option<LootFile>,
    modifiers: Option<ModifiersFile>,
    jobs: Option<JobsFile>,
    achievements: Option<AchievementsFile>,
}

impl Parsed {
    /// Store offer ids (offers are not an id kind scripts name); `None`
    /// when store.json did not parse (its own errors are reported).
    fn offer_ids(&self) -> Option<Vec<&str>> {
        self.store.as_ref().map(|s| s.offers.iter().map(|o| o.id.as_str()).collect())
    }
}

struct Loader<'a> {
    files: &'a TitleFiles,
    maps: HashMap<String, SourceMap>,
    diags: Vec<Diagnostic>,
    /// Every data file that is well-formed JSON, even if it failed its
    /// schema: ids are read from here so that one broken entry does not make
    /// every reference to its kind look unknown.
    raw: HashMap<String, Value>,
}

/// Where an expression lives, for positions and messages.
#[derive(Clone)]
struct ExprSite {
    file: &'static str,
    pointer: String,
    /// The node of the requirement graph this expression gates, if any.
    node: Option<Node>,
    /// A formula giving a whole number (raid loot), not a true/false requirement.
    int: bool,
}

/// Where `title.json` binds the raid result check.
const RAID_CHECK_POINTER: &str = "/world/raids/check";
const RAID_RESOLVE_POINTER: &str = "/world/raids/resolve";

/// A node of the requirement graph: a building or research at a level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Node {
    kind: IdKind,
    id: String,
    level: i64,
}

impl Node {
    fn describe(&self) -> String {
        format!("{} `{}` level {}", self.kind.noun(), self.id, self.level)
    }
}

/// Known ids of one title, for cross-reference checks.
#[derive(Default)]
struct Known {
    ids: HashMap<IdKind, Vec<String>>,
    /// Number of levels of each building and research.
    levels: HashMap<(IdKind, String), i64>,
    /// Loot table ids; `None` when loot.json is there but not readable
    /// (its own errors are reported, and every table would look unknown).
    loot: Option<Vec<String>>,
}

impl Known {
    fn has(&self, kind: IdKind, id: &str) -> bool {
        self.ids.get(&kind).is_some_and(|v| v.iter().any(|k| k == id))
    }
    fn list(&self, kind: IdKind) -> Vec<&str> {
        self.ids.get(&kind).map(|v| v.iter().map(String::as_str).collect()).unwrap_or_default()
    }
}

impl Loader<'_> {
    fn map(&mut self, file: &str) -> Option<&SourceMap> {
        if !self.maps.contains_key(file) {
            let text = self.files.get(file)?;
            self.maps.insert(file.to_string(), SourceMap::new(text));
        }
        self.maps.get(file)
    }

    /// An error at a JSON pointer of a file (at the key when `key`).
    fn at(&mut self, code: &'static str, file: &str, pointer: &str, key: bool, message: String, help: Option<String>) {
        let mut d = Diagnostic::error(code, file, message).pointer(pointer).help(help);
        if let Some((line, col, len)) = self.map(file).and_then(|m| m.locate(pointer, key)) {
            d = d.at(line, col, len);
        }
        self.diags.push(d);
    }

    fn warn_at(&mut self, code: &'static str, file: &str, pointer: &str, message: String, help: Option<String>) {
        self.at(code, file, pointer, false, message, help);
        if let Some(d) = self.diags.last_mut() {
            d.severity = Severity::Warning;
        }
    }

    fn run(&mut self, folder: &str) -> Option<Title> {
        // 1-3: parse, schema, typed data.
        let mut p = Parsed::default();
        for (kind, name, required) in FileKind::DATA {
            if !self.files.contains_key(name) {
                if required {
                    self.diags.push(Diagnostic::error("missing-file", name, format!("missing required file {name}")));
                }
                continue;
            }
            match kind {
                FileKind::Title => p.title = self.parse(kind, name),
                FileKind::Resources => p.resources = self.parse(kind, name),
                FileKind::Buildings => p.buildings = self.parse(kind, name),
                FileKind::Units => p.units = self.parse(kind, name),
                FileKind::Research => p.research = self.parse(kind, name),
                FileKind::Store => p.store = self.parse(kind, name),
                FileKind::Quests => p.quests = self.parse(kind, name),
                FileKind::Loot => p.loot = self.parse(kind, name),
                FileKind::Modifiers => p.modifiers = self.parse(kind, name),
                FileKind::Jobs => p.jobs = self.parse(kind, name),
                FileKind::Achievements => p.achievements = self.parse(kind, name),
                FileKind::Scenario => {}
            }
        }
        let known_names: Vec<&str> = FileKind::DATA.iter().map(|(_, n, _)| *n).collect();
        let strays: Vec<String> =
            self.files.keys().filter(|f| !f.contains('/') && !known_names.contains(&f.as_str())).cloned().collect();
        for f in strays {
            let help = did_you_mean(&f, known_names.iter().copied());
            self.diags.push(
                Diagnostic::error(
                    "unknown-file",
                    &f,
                    format!("unknown file {f}; a title folder holds {}", known_names.join(", ")),
                )
                .warning()
                .help(help),
            );
        }

        // 4: scripts.
        let sources: BTreeMap<String, String> = self
            .files
            .iter()
            .filter_map(|(p, t)| Some((p.strip_prefix("scripts/")?.strip_suffix(".rhai")?.to_string(), t.clone())))
            .collect();
        let sandbox = Sandbox::new(sources.clone());
        let mut scripts = BTreeMap::new();
        for (module, text) in &sources {
            let file = format!("scripts/{module}.rhai");
            match sandbox.compile_script(module, text) {
                Ok(s) => {
                    scripts.insert(module.clone(), s);
                }
                Err(e) => self.script_error(&file, "script", e.message, e.line, e.column),
            }
        }
        for (module, script) in &scripts {
            if let Err(e) = sandbox.link(script) {
                self.script_error(&format!("scripts/{module}.rhai"), "import", e.message, e.line, e.column);
            }
        }

        // 5: cross-references.
        let known = self.known();
        if let Some(t) = &p.title {
            if t.id != folder && !folder.is_empty() {
                self.at(
                    "title-id",
                    "title.json",
                    "/id",
                    false,
                    format!("title id `{}` does not match its folder name `{folder}`", t.id),
                    None,
                );
            }
        }
        self.check_refs(&p, &known);
        self.diags.extend(crate::assets::check(self.files));
        self.check_icons(&p);
        self.check_payable(&p);
        self.check_renamed(&p, &known);
        self.check_events(&p);
        self.check_actions(&p);
        self.check_world(&p, &known);
        for (module, script) in &scripts {
            self.check_script_ids(&format!("scripts/{module}.rhai"), script, &known);
        }
        let hooks = self.check_hooks(&p, &scripts);

        // 6-7: expressions, reachability, cycles.
        let mut exprs: HashMap<String, Expr> = HashMap::new();
        // Kept for the trial evaluation after the title is built.
        let mut trial_list: Vec<(&'static str, String, Expr, bool)> = Vec::new();
        let mut edges: BTreeMap<Node, Vec<(Node, ExprSite)>> = BTreeMap::new();
        let mut requirements: Vec<(ExprSite, Vec<IdRef>, bool)> = Vec::new();
        for (source, site) in self.expression_sites(&p) {
            let Some(expr) = self.compile_expr(&sandbox, &source, &site) else { continue };
            let refs = expr_id_refs(&expr);
            for r in &refs {
                self.check_expr_ref(r, &site, &known, &mut edges);
            }
            if !site.int {
                let never = !expr_calls_functions(&expr) && sandbox.eval_bool(&expr, &neutral()) == Ok(false);
                requirements.push((site.clone(), refs, never));
            }
            trial_list.push((site.file, site.pointer.clone(), expr.clone(), site.int));
            exprs.insert(format!("{}#{}", site.file, site.pointer), expr);
        }
        self.check_cycles(&p, &edges);
        self.check_never_true(&requirements);

        if self.diags.iter().any(|d| d.severity == Severity::Error) {
            // No title can be built to try the expressions on a new player;
            // what does not depend on the player is still reported now.
            self.trial_types(&sandbox, &trial_list);
            return None;
        }
        // 8: build, then trial-evaluate.
        let title = self.build(p, exprs, hooks, scripts, sandbox, content_version(self.files))?;
        self.trial(&title, &trial_list);
        if self.diags.iter().any(|d| d.severity == Severity::Error) {
            return None;
        }
        Some(title)
    }

    fn script_error(
        &mut self,
        file: &str,
        code: &'static str,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    ) {
        let mut d = Diagnostic::error(code, file, message);
        if let (Some(l), Some(c)) = (line, column) {
            d = d.at(l, c, 1);
        }
        self.diags.push(d);
    }

    fn parse<T: DeserializeOwned>(&mut self, kind: FileKind, file: &str) -> Option<T> {
        let text = self.files.get(file)?;
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let d = Diagnostic::error("json", file, format!("invalid JSON: {}", strip_position(&e.to_string())))
                    .at(e.line().max(1), e.column().max(1), 1);
                self.diags.push(d);
                return None;
            }
        };
        let violations = schema::validate(kind, &value);
        self.raw.insert(file.to_string(), value.clone());
        if !violations.is_empty() {
            for v in violations {
                let key = v.pointer.rsplit('/').next().unwrap_or("").replace("~1", "/").replace("~0", "~");
                let help =
                    if v.at_key { did_you_mean(&key, v.expected_keys.iter().map(String::as_str)) } else { v.help };
                self.at("schema", file, &v.pointer, v.at_key, v.message, help);
            }
            return None;
        }
        match serde_json::from_value(value) {
            Ok(t) => Some(t),
            Err(e) => {
                self.diags.push(Diagnostic::error(
                    "schema",
                    file,
                    format!("file does not match the title format: {e}"),
                ));
                None
            }
        }
    }

    fn known(&mut self) -> Known {
        let mut k = Known::default();
        let lists: [(IdKind, &str, &str); 9] = [
            (IdKind::Resource, "resources.json", "resources"),
            (IdKind::Building, "buildings.json", "buildings"),
            (IdKind::Unit, "units.json", "units"),
            (IdKind::Research, "research.json", "research"),
            (IdKind::Item, "store.json", "items"),
            (IdKind::Quest, "quests.json", "quests"),
            (IdKind::Event, "title.json", "events"),
            (IdKind::Modifier, "modifiers.json", "modifiers"),
            (IdKind::Capacity, "resources.json", "capacities"),
        ];
        for (kind, file, list) in lists {
            let Some(entries) = self.raw.get(file).and_then(|v| v.get(list)).and_then(Value::as_array).cloned() else {
                // A missing optional file defines none of its kind; a
                // missing required file or one that is not JSON leaves the
                // kind unchecked (its own error is already reported).
                let required = FileKind::DATA.iter().any(|(_, n, req)| *n == file && *req);
                // A well-formed file without the list (title.json without
                // `events`) defines none of that kind either.
                if self.raw.contains_key(file) || (!self.files.contains_key(file) && !required) {
                    k.ids.insert(kind, Vec::new());
                }
                continue;
            };
            let mut ids = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                let Some(id) = e.get("id").and_then(Value::as_str) else { continue };
                if ids.iter().any(|x: &String| x == id) {
                    self.at(
                        "duplicate-id",
                        file,
                        &format!("/{list}/{i}/id"),
                        false,
                        format!("duplicate {} id `{id}`", kind.noun()),
                        None,
                    );
                } else {
                    ids.push(id.to_string());
                }
                if let Some(levels) = e.get("levels").and_then(Value::as_array) {
                    k.levels.entry((kind, id.to_string())).or_insert(levels.len() as i64);
                }
            }
            ids.sort();
            k.ids.insert(kind, ids);
        }
        match self.raw.get("loot.json").and_then(|v| v.get("loot")).and_then(Value::as_array).cloned() {
            Some(tables) => {
                let ids: Vec<Option<&str>> = tables.iter().map(|t| t.get("id").and_then(Value::as_str)).collect();
                self.unique_ids("loot.json", "/loot", "loot table", &ids);
                k.loot = Some(ids.into_iter().flatten().map(str::to_string).collect());
            }
            None if !self.files.contains_key("loot.json") => k.loot = Some(Vec::new()),
            None => {}
        }
        if let Some(offers) =
            self.raw.get("store.json").and_then(|v| v.get("offers")).and_then(Value::as_array).cloned()
        {
            let ids: Vec<Option<&str>> = offers.iter().map(|o| o.get("id").and_then(Value::as_str)).collect();
            self.unique_ids("store.json", "/offers", "offer", &ids);
        }
        if let Some(products) =
            self.raw.get("store.json").and_then(|v| v.get("products")).and_then(Value::as_array).cloned()
        {
            let ids: Vec<Option<&str>> = products.iter().map(|o| o.get("id").and_then(Value::as_str)).collect();
            self.unique_ids("store.json", "/products", "product", &ids);
        }
        k
    }

    /// Reports every id of a list (`ids[i]` at `{list}/{i}/id`; `None` for
    /// an entry without one) that an earlier entry already has.
    fn unique_ids(&mut self, file: &str, list: &str, noun: &str, ids: &[Option<&str>]) {
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            let Some(id) = id else { continue };
            if !seen.insert(*id) {
                let msg = format!("duplicate {noun} id `{id}`");
                self.at("duplicate-id", file, &format!("{list}/{i}/id"), false, msg, None);
            }
        }
    }

    /// Reports `id` at `pointer` if it is not a known id of `kind`. Skips the
    /// check when the file defining that kind failed to parse (its own
    /// errors are already reported, and every id would look unknown).
    fn need(&mut self, known: &Known, kind: IdKind, id: &str, file: &str, pointer: &str, key: bool) {
        if !known.ids.contains_key(&kind) || known.has(kind, id) {
            return;
        }
        let defined_in = match kind {
            IdKind::Resource => "resources.json",
            IdKind::Building => "buildings.json",
            IdKind::Unit => "units.json",
            IdKind::Research => "research.json",
            IdKind::Item => "store.json",
            IdKind::Quest => "quests.json",
            IdKind::Event => "title.json events",
            IdKind::Modifier => "modifiers.json",
            IdKind::Capacity => "resources.json capacities",
        };
        let help = did_you_mean(id, known.list(kind));
        self.at(
            "unknown-id",
            file,
            pointer,
            key,
            format!("unknown {} `{id}`: not defined in {defined_in}", kind.noun()),
            help,
        );
    }

    fn need_keys(&mut self, known: &Known, kind: IdKind, map: &Amounts, file: &str, pointer: &str) {
        for id in map.keys() {
            self.need(known, kind, id, file, &format!("{pointer}/{}", crate::spans::escape_segment(id)), true);
        }
    }

    fn need_grants(&mut self, known: &Known, g: &Grants, file: &str, pointer: &str) {
        self.need_keys(known, IdKind::Resource, &g.resources, file, &format!("{pointer}/resources"));
        self.need_keys(known, IdKind::Item, &g.items, file, &format!("{pointer}/items"));
        self.need_keys(known, IdKind::Unit, &g.units, file, &format!("{pointer}/units"));
        for (i, id) in g.modifiers.iter().enumerate() {
            self.need(known, IdKind::Modifier, id, file, &format!("{pointer}/modifiers/{i}"), false);
        }
        let Some(tables) = &known.loot else { return };
        for (i, id) in g.loot.iter().enumerate() {
            if !tables.contains(id) {
                let help = did_you_mean(id, tables.iter().map(String::as_str));
                let msg = format!("unknown loot table `{id}`: not defined in loot.json");
                self.at("unknown-id", file, &format!("{pointer}/loot/{i}"), false, msg, help);
            }
        }
    }

    /// Each effect names a target of the kind its kind needs, or none.
    fn check_effects(&mut self, known: &Known, effects: &[ResearchEffect], f: &str, base: &str) {
        for (e, eff) in effects.iter().enumerate() {
            let ep = format!("{base}/effects/{e}");
            match (eff.kind.target_kind(), &eff.target) {
                (Some(kind), Some(t)) => self.need(known, kind, t, f, &format!("{ep}/target"), false),
                (Some(kind), None) => self.at(
                    "effect-target",
                    f,
                    &ep,
                    false,
                    format!("this effect needs a target {} id", kind.noun()),
                    None,
                ),
                (None, Some(_)) => self.at(
                    "effect-target",
                    f,
                    &format!("{ep}/target"),
                    true,
                    "this effect kind takes no target".into(),
                    None,
                ),
                (None, None) => {}
            }
        }
    }

    /// Every `icon` names an image of the title's `assets/`.
    fn check_icons(&mut self, p: &Parsed) {
        let mut icons: Vec<(&'static str, String, String)> = Vec::new();
        let mut add = |file: &'static str, list: &str, i: usize, icon: &Option<String>| {
            if let Some(icon) = icon {
                icons.push((file, format!("/{list}/{i}/icon"), icon.clone()));
            }
        };
        if let Some(f) = &p.resources {
            f.resources.iter().enumerate().for_each(|(i, r)| add("resources.json", "resources", i, &r.icon));
            f.capacities.iter().enumerate().for_each(|(i, c)| add("resources.json", "capacities", i, &c.icon));
        }
        if let Some(f) = &p.buildings {
            f.buildings.iter().enumerate().for_each(|(i, b)| add("buildings.json", "buildings", i, &b.icon));
        }
        if let Some(f) = &p.units {
            f.units.iter().enumerate().for_each(|(i, u)| add("units.json", "units", i, &u.icon));
        }
        if let Some(f) = &p.research {
            f.research.iter().enumerate().for_each(|(i, r)| add("research.json", "research", i, &r.icon));
        }
        if let Some(f) = &p.store {
            f.items.iter().enumerate().for_each(|(i, it)| add("store.json", "items", i, &it.icon));
            f.offers.iter().enumerate().for_each(|(i, o)| add("store.json", "offers", i, &o.icon));
            f.products.iter().enumerate().for_each(|(i, o)| add("store.json", "products", i, &o.icon));
        }
        if let Some(f) = &p.loot {
            f.loot.iter().enumerate().for_each(|(i, t)| add("loot.json", "loot", i, &t.icon));
        }
        if let Some(f) = &p.modifiers {
            f.modifiers.iter().enumerate().for_each(|(i, m)| add("modifiers.json", "modifiers", i, &m.icon));
        }
        if let Some(f) = &p.jobs {
            f.jobs.iter().enumerate().for_each(|(i, j)| add("jobs.json", "jobs", i, &j.icon));
        }
        if let Some(f) = &p.achievements {
            f.achievements.iter().enumerate().for_each(|(i, a)| add("achievements.json", "achievements", i, &a.icon));
        }
        for (file, pointer, icon) in icons {
            if !self.files.contains_key(&icon) {
                let help = crate::assets::suggest(self.files, &icon);
                self.at(
                    "unknown-asset",
                    file,
                    &pointer,
                    false,
                    format!("no image `{icon}` in the title's assets/"),
                    help,
                );
            }
        }
    }

    /// An engine counter (`built:<building>`, ...) names a known id; any
    /// other name is a counter of the title's scripts.
    fn check_counter(&mut self, known: &Known, jobs: &[String], counter: &str, f: &str, pointer: &str) {
        let Some((kind, id)) = counter.split_once(':') else { return };
        let kind = match kind {
            "built" => IdKind::Building,
            "trained" => IdKind::Unit,
            "collected" => IdKind::Resource,
            "jobs" => {
                if !jobs.iter().any(|j| j == id) {
                    let help = did_you_mean(id, jobs.iter().map(String::as_str));
                    self.at(
                        "unknown-id",
                        f,
                        pointer,
                        false,
                        format!("unknown job `{id}`: not defined in jobs.json"),
                        help,
                    );
                }
                return;
            }
            other => {
                let prefixes = ["built", "trained", "collected", "jobs"];
                let help = did_you_mean(other, prefixes);
                let msg = format!("`{other}:` is not an engine counter (built:, trained:, collected:, jobs:); script counters have no colon");
                self.at("unknown-id", f, pointer, false, msg, help);
                return;
            }
        };
        self.need(known, kind, id, f, pointer, false);
    }

    /// Every cost fits in the most a player can ever hold: a resource's
    /// `cap`, plus each storage building at the level that stores most, as
    /// many times as it may ever be built, scaled by every storage research
    /// level; or what the player starts with, if more (credits stop at the
    /// cap, so nothing else brings a player above it). A cost beyond that
    /// can never be paid.
    fn check_payable(&mut self, p: &Parsed) {
        let (Some(resources), Some(buildings)) = (&p.resources, &p.buildings) else { return };
        let start = p.title.as_ref().map(|t| t.start.resources.clone()).unwrap_or_default();
        let mut most: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for r in &resources.resources {
            let Some(cap) = r.cap else { continue };
            let stored: i64 = buildings
                .buildings
                .iter()
                .map(|b| {
                    let per = b.levels.iter().filter_map(|l| l.storage.get(&r.id)).copied().max().unwrap_or(0).max(0);
                    per.saturating_mul(i64::from(b.max_count.iter().copied().max().unwrap_or(0)))
                })
                .fold(0i64, i64::saturating_add);
            let percent: i64 = p
                .research
                .iter()
                .flat_map(|f| &f.research)
                .flat_map(|d| &d.levels)
                .flat_map(|l| &l.effects)
                .filter(|e| e.kind == ResearchEffectKind::StoragePercent && e.target.as_deref() == Some(r.id.as_str()))
                .map(|e| e.value.max(0))
                .fold(0i64, i64::saturating_add);
            let max = cap.saturating_add(stored).saturating_mul(100i64.saturating_add(percent)) / 100;
            most.insert(r.id.clone(), (max.max(start.get(&r.id).copied().unwrap_or(0)), cap));
        }
        let mut costs: Vec<(&'static str, String, Amounts)> = Vec::new();
        for (i, b) in buildings.buildings.iter().enumerate() {
            for (l, lv) in b.levels.iter().enumerate() {
                costs.push(("buildings.json", format!("/buildings/{i}/levels/{l}/cost"), lv.cost.clone()));
            }
        }
        for (i, u) in p.units.iter().flat_map(|f| f.units.iter().enumerate()) {
            costs.push(("units.json", format!("/units/{i}/cost"), u.cost.clone()));
        }
        for (i, r) in p.research.iter().flat_map(|f| f.research.iter().enumerate()) {
            for (l, lv) in r.levels.iter().enumerate() {
                costs.push(("research.json", format!("/research/{i}/levels/{l}/cost"), lv.cost.clone()));
            }
        }
        for (i, o) in p.store.iter().flat_map(|f| f.offers.iter().enumerate()) {
            costs.push(("store.json", format!("/offers/{i}/price"), o.price.clone()));
        }
        for (file, pointer, cost) in costs {
            for (r, &amount) in &cost {
                let Some(&(max, cap)) = most.get(r) else { continue };
                if amount > max {
                    self.at(
                        "unpayable",
                        file,
                        &format!("{pointer}/{}", r.replace('~', "~0").replace('/', "~1")),
                        false,
                        format!("costs {amount} {r}, but a player can never hold more than {max} {r}: nobody can ever pay it"),
                        Some(format!("the most is `{r}`'s cap ({cap}) plus every storage building at its largest storage and highest count, scaled by storage research; raise storage or lower the cost")),
                    );
                }
            }
        }
    }

    fn check_refs(&mut self, p: &Parsed, known: &Known) {
        // Parsed only borrows; clone the few small pieces we iterate while
        // reporting (reporting needs &mut self).
        if let Some(t) = p.title.clone() {
            let f = "title.json";
            self.need(known, IdKind::Resource, &t.premium_resource, f, "/premium_resource", false);
            self.need(known, IdKind::Building, &t.headquarters, f, "/headquarters", false);
            self.need_keys(known, IdKind::Resource, &t.start.resources, f, "/start/resources");
            self.need_keys(known, IdKind::Unit, &t.start.units, f, "/start/units");
            self.need_keys(known, IdKind::Item, &t.start.items, f, "/start/items");
            for (id, &level) in &t.start.research {
                let pointer = format!("/start/research/{}", crate::spans::escape_segment(id));
                self.need(known, IdKind::Research, id, f, &pointer, true);
                let levels = known.levels.get(&(IdKind::Research, id.clone())).copied();
                if let Some(levels) = levels.filter(|n| i64::from(level) > *n) {
                    let msg = format!("research `{id}` has {levels} levels, not {level}");
                    self.at("level-range", f, &pointer, false, msg, None);
                }
            }
            if t.xp_levels.first() != Some(&0) {
                self.at(
                    "xp-levels",
                    f,
                    "/xp_levels/0",
                    false,
                    "xp_levels must start with 0 (level 1 needs no xp)".into(),
                    None,
                );
            }
            for i in 1..t.xp_levels.len() {
                if t.xp_levels[i] <= t.xp_levels[i - 1] {
                    self.at(
                        "xp-levels",
                        f,
                        &format!("/xp_levels/{i}"),
                        false,
                        format!("xp_levels must increase: {} is not above {}", t.xp_levels[i], t.xp_levels[i - 1]),
                        None,
                    );
                }
            }
            self.check_start(&t, p, known);
        }
        if let Some(bf) = p.buildings.clone() {
            let f = "buildings.json";
            let hq_levels =
                p.title.as_ref().and_then(|t| known.levels.get(&(IdKind::Building, t.headquarters.clone())).copied());
            let grid = p.title.as_ref().map(|t| t.grid.clone());
            for (i, b) in bf.buildings.iter().enumerate() {
                if let Some(g) = grid.as_ref().filter(|g| b.size.w > g.width || b.size.h > g.height) {
                    let msg = format!(
                        "`{}` is {}x{} tiles, larger than the {}x{} grid: it could never be placed",
                        b.id, b.size.w, b.size.h, g.width, g.height
                    );
                    self.at("size", f, &format!("/buildings/{i}/size"), false, msg, None);
                }
                if let Some(n) = hq_levels {
                    if b.max_count.len() as i64 != n {
                        let hq = p.title.as_ref().map(|t| t.headquarters.as_str()).unwrap_or("headquarters");
                        self.at("level-array", f, &format!("/buildings/{i}/max_count"), false,
                            format!("max_count has {} entries but `{hq}` has {n} levels; give one count per headquarters level", b.max_count.len()), None);
                    }
                }
                for (l, lv) in b.levels.iter().enumerate() {
                    let base = format!("/buildings/{i}/levels/{l}");
                    self.need_keys(known, IdKind::Resource, &lv.cost, f, &format!("{base}/cost"));
                    self.need_keys(known, IdKind::Resource, &lv.storage, f, &format!("{base}/storage"));
                    self.need_keys(known, IdKind::Capacity, &lv.provides, f, &format!("{base}/provides"));
                    self.need_keys(known, IdKind::Capacity, &lv.draws, f, &format!("{base}/draws"));
                    if let Some(prod) = &lv.production {
                        self.need(
                            known,
                            IdKind::Resource,
                            &prod.resource,
                            f,
                            &format!("{base}/production/resource"),
                            false,
                        );
                        let consumes = format!("{base}/production/consumes");
                        self.need_keys(known, IdKind::Resource, &prod.consumes, f, &consumes);
                        if prod.consumes.contains_key(&prod.resource) {
                            let msg = format!("`{}` consumes what it produces", prod.resource);
                            let at = format!("{consumes}/{}", crate::spans::escape_segment(&prod.resource));
                            self.at("production", f, &at, true, msg, None);
                        }
                    }
                }
            }
        }
        if let Some(uf) = p.units.clone() {
            for (i, u) in uf.units.iter().enumerate() {
                self.need(known, IdKind::Building, &u.building, "units.json", &format!("/units/{i}/building"), false);
                self.need_keys(known, IdKind::Resource, &u.cost, "units.json", &format!("/units/{i}/cost"));
                if let Some(by) = &u.stats_by {
                    let pointer = format!("/units/{i}/stats_by/research");
                    self.need(known, IdKind::Research, &by.research, "units.json", &pointer, false);
                    let levels = known.levels.get(&(IdKind::Research, by.research.clone())).copied();
                    if let Some(n) = levels.filter(|n| by.levels.len() as i64 > *n) {
                        let msg =
                            format!("research `{}` has {n} levels; stats_by lists {}", by.research, by.levels.len());
                        self.at("level-range", "units.json", &format!("/units/{i}/stats_by/levels"), false, msg, None);
                    }
                }
            }
        }
        if let Some(rf) = p.research.clone() {
            let f = "research.json";
            for (i, r) in rf.research.iter().enumerate() {
                self.need(known, IdKind::Building, &r.building, f, &format!("/research/{i}/building"), false);
                for (l, lv) in r.levels.iter().enumerate() {
                    let base = format!("/research/{i}/levels/{l}");
                    self.need_keys(known, IdKind::Resource, &lv.cost, f, &format!("{base}/cost"));
                    self.check_effects(known, &lv.effects, f, &base);
                }
            }
        }
        if let Some(sf) = p.store.clone() {
            let f = "store.json";
            for (i, it) in sf.items.iter().enumerate() {
                if let Some(g) = &it.use_grants {
                    self.need_grants(known, g, f, &format!("/items/{i}/use"));
                }
            }
            for (i, o) in sf.offers.iter().enumerate() {
                self.need_keys(known, IdKind::Resource, &o.price, f, &format!("/offers/{i}/price"));
                self.need_grants(known, &o.grants, f, &format!("/offers/{i}/grants"));
                if let Some(w) = &o.window {
                    self.check_window(f, &format!("/offers/{i}/window"), w);
                }
            }
            for (i, pr) in sf.products.iter().enumerate() {
                self.need_keys(
                    known,
                    IdKind::Resource,
                    &pr.grants.resources,
                    f,
                    &format!("/products/{i}/grants/resources"),
                );
                self.need_keys(known, IdKind::Item, &pr.grants.items, f, &format!("/products/{i}/grants/items"));
            }
        }
        if let Some(qf) = p.quests.clone() {
            for (i, q) in qf.quests.iter().enumerate() {
                self.need_grants(known, &q.rewards, "quests.json", &format!("/quests/{i}/rewards"));
            }
        }
        if let Some(rf) = p.resources.clone() {
            for (i, c) in rf.capacities.iter().enumerate() {
                for (j, name) in c.shortfall.blocks.iter().enumerate() {
                    if !crate::rules::ACTION_NAMES.contains(&name.as_str()) {
                        let help = did_you_mean(name, crate::rules::ACTION_NAMES.iter().copied());
                        let msg = format!(
                            "`{name}` is not an action; blocks lists action names (docs/title-format.md, Actions)"
                        );
                        self.at(
                            "unknown-id",
                            "resources.json",
                            &format!("/capacities/{i}/shortfall/blocks/{j}"),
                            false,
                            msg,
                            help,
                        );
                    }
                }
            }
        }
        if let Some(daily) = p.title.as_ref().and_then(|t| t.daily.clone()) {
            for (i, g) in daily.rewards.iter().enumerate() {
                self.need_grants(known, g, "title.json", &format!("/daily/rewards/{i}"));
            }
        }
        if let Some(af) = p.achievements.clone() {
            let f = "achievements.json";
            let ids: Vec<Option<&str>> = af.achievements.iter().map(|a| Some(a.id.as_str())).collect();
            self.unique_ids(f, "/achievements", "achievement", &ids);
            let jobs: Vec<String> = p.jobs.iter().flat_map(|j| &j.jobs).map(|j| j.id.clone()).collect();
            for (i, a) in af.achievements.iter().enumerate() {
                let base = format!("/achievements/{i}");
                self.check_counter(known, &jobs, &a.counter, f, &format!("{base}/counter"));
                for (t, tier) in a.tiers.iter().enumerate() {
                    self.need_grants(known, &tier.rewards, f, &format!("{base}/tiers/{t}/rewards"));
                    if t > 0 && tier.at <= a.tiers[t - 1].at {
                        let msg = format!(
                            "tier {} needs {} but tier {t} already needs {}: tiers go up",
                            t + 1,
                            tier.at,
                            a.tiers[t - 1].at
                        );
                        self.at("achievement", f, &format!("{base}/tiers/{t}/at"), false, msg, None);
                    }
                }
            }
        }
        if let Some(jf) = p.jobs.clone() {
            let f = "jobs.json";
            let ids: Vec<Option<&str>> = jf.jobs.iter().map(|j| Some(j.id.as_str())).collect();
            self.unique_ids(f, "/jobs", "job", &ids);
            for (i, j) in jf.jobs.iter().enumerate() {
                let base = format!("/jobs/{i}");
                self.need(known, IdKind::Building, &j.building, f, &format!("{base}/building"), false);
                self.need_keys(known, IdKind::Resource, &j.inputs.resources, f, &format!("{base}/inputs/resources"));
                self.need_keys(known, IdKind::Item, &j.inputs.items, f, &format!("{base}/inputs/items"));
                self.need_keys(known, IdKind::Unit, &j.inputs.units, f, &format!("{base}/inputs/units"));
                self.need_grants(known, &j.outputs, f, &format!("{base}/outputs"));
            }
        }
        if let Some(mf) = p.modifiers.clone() {
            for (i, m) in mf.modifiers.iter().enumerate() {
                self.check_effects(known, &m.effects, "modifiers.json", &format!("/modifiers/{i}"));
                if m.max_stacks > 1 && m.stacking != Stacking::Stack {
                    let msg = format!(
                        "max_stacks is {} but stacking is not `stack`: only stacking modifiers stack",
                        m.max_stacks
                    );
                    let help = Some("set \"stacking\": \"stack\", or leave max_stacks out".to_string());
                    self.at("modifier", "modifiers.json", &format!("/modifiers/{i}/max_stacks"), false, msg, help);
                }
            }
        }
        if let Some(lf) = p.loot.clone() {
            let f = "loot.json";
            for (i, t) in lf.loot.iter().enumerate() {
                for (j, e) in t.entries.iter().enumerate() {
                    let pointer = format!("/loot/{i}/entries/{j}/grants");
                    self.need_grants(known, &e.grants, f, &pointer);
                    if !e.grants.loot.is_empty() {
                        let msg = "a loot entry cannot roll another loot table: list the other table's entries here, or grant both tables side by side where this one is granted".into();
                        self.at("loot", f, &format!("{pointer}/loot"), true, msg, None);
                    }
                }
            }
        }
    }

    /// A time window: real dates, end after start.
    fn check_window(&mut self, f: &str, base: &str, w: &crate::format::Window) {
        let (s, e) = (crate::time::parse_utc(&w.start), crate::time::parse_utc(&w.end));
        if s.is_none() {
            self.at(
                "time",
                f,
                &format!("{base}/start"),
                false,
                format!("`{}` is not a real date and time", w.start),
                None,
            );
        }
        if e.is_none() {
            self.at("time", f, &format!("{base}/end"), false, format!("`{}` is not a real date and time", w.end), None);
        }
        if let (Some(s), Some(e)) = (s, e) {
            if e <= s {
                self.at("time", f, base, false, "window end must be after its start".into(), None);
            }
        }
    }

    /// Live-ops events: real windows, and the offers they discount exist.
    fn check_events(&mut self, p: &Parsed) {
        let Some(t) = &p.title else { return };
        let offers = p.offer_ids();
        for (i, e) in t.events.iter().enumerate() {
            self.check_window("title.json", &format!("/events/{i}/window"), &e.window);
            let Some(offers) = &offers else { continue };
            for (j, o) in e.offers.iter().enumerate() {
                if !offers.contains(&o.as_str()) {
                    let help = did_you_mean(o, offers.iter().copied());
                    self.at(
                        "unknown-id",
                        "title.json",
                        &format!("/events/{i}/offers/{j}"),
                        false,
                        format!("unknown offer `{o}`: not defined in store.json"),
                        help,
                    );
                }
            }
        }
    }

    /// Custom actions' arguments: bounds in order, defaults within them.
    fn check_actions(&mut self, p: &Parsed) {
        let Some(t) = &p.title else { return };
        for (name, a) in &t.actions {
            for (arg, def) in &a.args {
                let base = format!("/actions/{name}/args/{arg}");
                match def {
                    ArgDef::Integer { min, max, default, .. } => {
                        if min > max {
                            let m = format!("`{arg}` has min {min} above its max {max}");
                            self.at("action-arg", "title.json", &format!("{base}/max"), false, m, None);
                        } else if let Some(d) = default.filter(|d| d < min || d > max) {
                            let m = format!("`{arg}`'s default {d} is not from {min} to {max}");
                            self.at("action-arg", "title.json", &format!("{base}/default"), false, m, None);
                        }
                    }
                    ArgDef::Choice { one_of, default: Some(d), .. } if !one_of.contains(d) => {
                        let help = did_you_mean(d, one_of.iter().map(String::as_str));
                        let m = format!("`{arg}`'s default `{d}` is not one of its one_of");
                        self.at("action-arg", "title.json", &format!("{base}/default"), false, m, help);
                    }
                    _ => {}
                }
            }
        }
    }

    /// `world`: unique regions, known resources and score stat, a real
    /// season start.
    fn check_world(&mut self, p: &Parsed, known: &Known) {
        let Some(t) = p.title.clone() else { return };
        let f = "title.json";
        if let Some(map) = &t.world.map {
            let ids: Vec<Option<&str>> = map.regions.iter().map(|r| Some(r.id.as_str())).collect();
            self.unique_ids(f, "/world/map/regions", "region", &ids);
            self.need_keys(known, IdKind::Resource, &map.relocate_cost, f, "/world/map/relocate_cost");
        }
        if let Some(raids) = &t.world.raids {
            for r in raids.lootable.keys() {
                self.need(known, IdKind::Resource, r, f, &format!("/world/raids/lootable/{r}"), true);
            }
            if let Some(stat) = &raids.score {
                if !t.scores.contains(stat) {
                    let help = did_you_mean(stat, t.scores.iter().map(String::as_str));
                    let msg = format!("unknown score `{stat}`: not listed in title.json scores");
                    self.at("unknown-id", f, "/world/raids/score", false, msg, help);
                }
            }
        }
        if let Some(clans) = &t.world.clans {
            let ids: Vec<Option<&str>> = clans.roles.iter().map(|r| Some(r.id.as_str())).collect();
            self.unique_ids(f, "/world/clans/roles", "role", &ids);
            self.need_keys(known, IdKind::Resource, &clans.create_cost, f, "/world/clans/create_cost");
            if let Some(gifts) = &clans.gifts {
                self.need_keys(known, IdKind::Resource, &gifts.resources, f, "/world/clans/gifts/resources");
            }
        }
        if let Some(season) = &t.world.season {
            if crate::time::parse_utc(&season.start).is_none() {
                let msg = format!("`{}` is not a real date and time", season.start);
                self.at("time", f, "/world/season/start", false, msg, None);
            }
        }
    }

    /// `renamed`: every new id exists, and no old id is still defined.
    fn check_renamed(&mut self, p: &Parsed, known: &Known) {
        let Some(t) = &p.title else { return };
        let f = "title.json";
        let r = &t.renamed;
        let kinds = [
            ("resources", Some(IdKind::Resource), &r.resources),
            ("buildings", Some(IdKind::Building), &r.buildings),
            ("units", Some(IdKind::Unit), &r.units),
            ("research", Some(IdKind::Research), &r.research),
            ("items", Some(IdKind::Item), &r.items),
            ("offers", None, &r.offers),
            ("quests", Some(IdKind::Quest), &r.quests),
        ];
        let offers = p.offer_ids();
        for (name, kind, map) in kinds {
            for (old, new) in map {
                let pointer = format!("/renamed/{name}/{}", crate::spans::escape_segment(old));
                let (old_exists, new_exists, list) = match kind {
                    Some(k) => {
                        if !known.ids.contains_key(&k) {
                            continue;
                        }
                        (known.has(k, old), known.has(k, new), known.list(k))
                    }
                    None => match &offers {
                        Some(o) => (o.contains(&old.as_str()), o.contains(&new.as_str()), o.clone()),
                        None => continue,
                    },
                };
                if !new_exists {
                    let help = did_you_mean(new, list.iter().copied());
                    self.at(
                        "unknown-id",
                        f,
                        &pointer,
                        false,
                        format!("renamed to `{new}`, which is not defined"),
                        help,
                    );
                }
                if old_exists {
                    self.at(
                        "renamed",
                        f,
                        &pointer,
                        true,
                        format!("`{old}` is renamed to `{new}` but is still defined; a renamed id must be gone"),
                        None,
                    );
                }
            }
        }
    }

    fn check_start(&mut self, t: &TitleFile, p: &Parsed, known: &Known) {
        let Some(bf) = &p.buildings else { return };
        let f = "title.json";
        let mut cells: HashMap<(i32, i32), usize> = HashMap::new();
        let mut counts: HashMap<&str, u32> = HashMap::new();
        let hq_level =
            t.start.buildings.iter().filter(|b| b.building == t.headquarters).map(|b| b.level).max().unwrap_or(0);
        if hq_level == 0 && known.has(IdKind::Building, &t.headquarters) {
            self.at(
                "start",
                f,
                "/start/buildings",
                false,
                format!("a new player must start with the headquarters `{}`", t.headquarters),
                None,
            );
        }
        for (i, sb) in t.start.buildings.iter().enumerate() {
            let base = format!("/start/buildings/{i}");
            let Some(def) = bf.buildings.iter().find(|b| b.id == sb.building) else {
                self.need(known, IdKind::Building, &sb.building, f, &format!("{base}/building"), false);
                continue;
            };
            if sb.level as usize > def.levels.len() {
                self.at(
                    "level-range",
                    f,
                    &format!("{base}/level"),
                    false,
                    format!("`{}` has {} levels, not {}", def.id, def.levels.len(), sb.level),
                    None,
                );
            }
            if sb.x + def.size.w > t.grid.width || sb.y + def.size.h > t.grid.height {
                self.at(
                    "start",
                    f,
                    &base,
                    false,
                    format!(
                        "`{}` at ({}, {}) with size {}x{} does not fit the {}x{} grid",
                        def.id, sb.x, sb.y, def.size.w, def.size.h, t.grid.width, t.grid.height
                    ),
                    None,
                );
            }
            let overlap = (sb.x..sb.x + def.size.w)
                .flat_map(|x| (sb.y..sb.y + def.size.h).map(move |y| (x, y)))
                .find_map(|cell| cells.insert(cell, i).map(|other| (cell, other)));
            if let Some(((x, y), other)) = overlap {
                let other_id = &t.start.buildings[other].building;
                self.at(
                    "start",
                    f,
                    &base,
                    false,
                    format!("`{}` overlaps `{other_id}` (start building {}) at ({x}, {y})", def.id, other + 1),
                    None,
                );
            }
            let c = counts.entry(def.id.as_str()).or_default();
            *c += 1;
            if hq_level > 0 {
                if let Some(&max) = def.max_count.get(hq_level as usize - 1) {
                    if *c > max {
                        self.at(
                            "start",
                            f,
                            &base,
                            false,
                            format!(
                                "a new player may have {max} `{}` at headquarters level {hq_level}, the start has more",
                                def.id
                            ),
                            None,
                        );
                    }
                }
            }
        }
    }

    fn check_script_ids(&mut self, file: &str, script: &Script, known: &Known) {
        for r in script_id_refs(script) {
            if known.ids.contains_key(&r.kind) && !known.has(r.kind, &r.id) {
                let help = did_you_mean(&r.id, known.list(r.kind));
                self.diags.push(
                    Diagnostic::error(
                        "unknown-id",
                        file,
                        format!("unknown {} `{}` in {}(..)", r.kind.noun(), r.id, r.function),
                    )
                    .at(r.line, r.column, r.id.chars().count() + 2)
                    .help(help),
                );
            }
        }
    }

    /// Checks every hook binding: the module exists, the function exists,
    /// and it takes exactly one argument.
    fn check_hooks(&mut self, p: &Parsed, scripts: &BTreeMap<String, Script>) -> BTreeMap<String, HookRef> {
        let mut bound = BTreeMap::new();
        let mut sites: Vec<(String, &'static str, String)> = Vec::new();
        if let Some(t) = &p.title {
            for (name, r) in &t.hooks {
                sites.push((r.clone(), "title.json", format!("/hooks/{name}")));
            }
            for (name, a) in &t.actions {
                sites.push((a.function.clone(), "title.json", format!("/actions/{name}/function")));
            }
            if let Some(check) = t.world.raids.as_ref().and_then(|r| r.check.clone()) {
                sites.push((check, "title.json", RAID_CHECK_POINTER.to_string()));
            }
            if let Some(resolve) = t.world.raids.as_ref().and_then(|r| r.resolve.clone()) {
                sites.push((resolve, "title.json", RAID_RESOLVE_POINTER.to_string()));
            }
        }
        if let Some(s) = &p.store {
            for (i, it) in s.items.iter().enumerate() {
                if let Some(h) = &it.hook {
                    sites.push((h.clone(), "store.json", format!("/items/{i}/hook")));
                }
            }
        }
        for (text, file, pointer) in sites {
            let Some(h) = HookRef::parse(&text) else { continue };
            let Some(script) = scripts.get(&h.module) else {
                let present = self.files.contains_key(&format!("scripts/{}.rhai", h.module));
                if !present {
                    let modules: Vec<&str> = scripts.keys().map(String::as_str).collect();
                    self.at(
                        "hook",
                        file,
                        &pointer,
                        false,
                        format!("no script file scripts/{}.rhai for `{text}`", h.module),
                        did_you_mean(&h.module, modules),
                    );
                }
                continue;
            };
            let arities = script.arities(&h.function);
            if arities.is_empty() {
                let names = script.function_names();
                self.at(
                    "hook",
                    file,
                    &pointer,
                    false,
                    format!("scripts/{}.rhai has no function `{}`", h.module, h.function),
                    did_you_mean(&h.function, names.iter().map(String::as_str)),
                );
            } else if !arities.contains(&1) {
                self.at(
                    "hook",
                    file,
                    &pointer,
                    false,
                    format!(
                        "`{text}` takes {} argument(s); hooks and actions take exactly 1 (the event or args map)",
                        arities[0]
                    ),
                    None,
                );
            } else if let Some(name) = pointer.strip_prefix("/hooks/") {
                bound.insert(name.to_string(), h);
            } else if pointer == RAID_CHECK_POINTER {
                bound.insert(crate::raid::CHECK_HOOK.to_string(), h);
            } else if pointer == RAID_RESOLVE_POINTER {
                bound.insert(crate::raid::RESOLVE_HOOK.to_string(), h);
            }
        }
        bound
    }

    fn expression_sites(&self, p: &Parsed) -> Vec<(String, ExprSite)> {
        let mut out = Vec::new();
        let site =
            |file: &'static str, pointer: String, node: Option<Node>| ExprSite { file, pointer, node, int: false };
        if let Some(t) = &p.title {
            for (r, formula) in t.world.raids.iter().flat_map(|r| &r.lootable) {
                let pointer = format!("/world/raids/lootable/{r}");
                out.push((formula.clone(), ExprSite { file: "title.json", pointer, node: None, int: true }));
            }
            for (name, a) in &t.actions {
                if let Some(r) = &a.requires {
                    out.push((r.clone(), site("title.json", format!("/actions/{name}/requires"), None)));
                }
            }
        }
        if let Some(f) = &p.buildings {
            for (i, b) in f.buildings.iter().enumerate() {
                for (l, lv) in b.levels.iter().enumerate() {
                    if let Some(r) = &lv.requires {
                        let node = Node { kind: IdKind::Building, id: b.id.clone(), level: l as i64 + 1 };
                        out.push((
                            r.clone(),
                            site("buildings.json", format!("/buildings/{i}/levels/{l}/requires"), Some(node)),
                        ));
                    }
                }
            }
        }
        if let Some(f) = &p.units {
            for (i, u) in f.units.iter().enumerate() {
                if let Some(r) = &u.requires {
                    out.push((r.clone(), site("units.json", format!("/units/{i}/requires"), None)));
                }
            }
        }
        if let Some(f) = &p.research {
            for (i, r) in f.research.iter().enumerate() {
                for (l, lv) in r.levels.iter().enumerate() {
                    if let Some(req) = &lv.requires {
                        let node = Node { kind: IdKind::Research, id: r.id.clone(), level: l as i64 + 1 };
                        out.push((
                            req.clone(),
                            site("research.json", format!("/research/{i}/levels/{l}/requires"), Some(node)),
                        ));
                    }
                }
            }
        }
        if let Some(f) = &p.store {
            for (i, o) in f.offers.iter().enumerate() {
                if let Some(r) = &o.requires {
                    out.push((r.clone(), site("store.json", format!("/offers/{i}/requires"), None)));
                }
            }
        }
        if let Some(f) = &p.jobs {
            for (i, j) in f.jobs.iter().enumerate() {
                if let Some(r) = &j.requires {
                    out.push((r.clone(), site("jobs.json", format!("/jobs/{i}/requires"), None)));
                }
            }
        }
        if let Some(f) = &p.quests {
            for (i, q) in f.quests.iter().enumerate() {
                out.push((q.goal.clone(), site("quests.json", format!("/quests/{i}/goal"), None)));
                if let Some(r) = &q.requires {
                    out.push((r.clone(), site("quests.json", format!("/quests/{i}/requires"), None)));
                }
            }
        }
        out
    }

    /// Position in the file of a (line, column) inside an expression string.
    fn expr_pos(&mut self, site: &ExprSite, line: usize, column: usize) -> Option<(usize, usize)> {
        self.map(site.file)?.string_position(&site.pointer, line, column)
    }

    fn compile_expr(&mut self, sandbox: &Sandbox, source: &str, site: &ExprSite) -> Option<Expr> {
        match sandbox.compile_expr(source) {
            Ok(e) => Some(e),
            Err(e) => {
                let mut d = Diagnostic::error("expression", site.file, format!("in expression: {}", e.message))
                    .pointer(&site.pointer);
                let pos = match (e.line, e.column) {
                    (Some(l), Some(c)) => self.expr_pos(site, l, c),
                    _ => self.map(site.file).and_then(|m| m.locate(&site.pointer, false)).map(|(l, c, _)| (l, c)),
                };
                if let Some((l, c)) = pos {
                    d = d.at(l, c, 1);
                }
                self.diags.push(d);
                None
            }
        }
    }

    fn check_expr_ref(
        &mut self,
        r: &IdRef,
        site: &ExprSite,
        known: &Known,
        edges: &mut BTreeMap<Node, Vec<(Node, ExprSite)>>,
    ) {
        let pos = self.expr_pos(site, r.line, r.column);
        let place = |d: Diagnostic| match pos {
            Some((l, c)) => d.pointer(&site.pointer).at(l, c, r.id.chars().count() + 2),
            None => d.pointer(&site.pointer),
        };
        if known.ids.contains_key(&r.kind) && !known.has(r.kind, &r.id) {
            let help = did_you_mean(&r.id, known.list(r.kind));
            let d = Diagnostic::error(
                "unknown-id",
                site.file,
                format!("unknown {} `{}` in {}(..)", r.kind.noun(), r.id, r.function),
            )
            .help(help);
            self.diags.push(place(d));
            return;
        }
        let (Some(min), Some(&levels)) = (r.min_level, known.levels.get(&(r.kind, r.id.clone()))) else { return };
        if min > levels {
            let d = Diagnostic::error(
                "unreachable",
                site.file,
                format!(
                    "requires {} `{}` level {min}, but it has only {levels} levels: this can never be met",
                    r.kind.noun(),
                    r.id
                ),
            );
            self.diags.push(place(d));
            return;
        }
        if let Some(from) = &site.node {
            if min >= 1 {
                let to = Node { kind: r.kind, id: r.id.clone(), level: min };
                edges.entry(from.clone()).or_default().push((to, site.clone()));
            }
        }
    }

    /// Finds requirement cycles: a level that (through other requirements)
    /// needs itself. Level L of anything also needs level L-1 of it, and a
    /// research needs its building at level 1.
    fn check_cycles(&mut self, p: &Parsed, edges: &BTreeMap<Node, Vec<(Node, ExprSite)>>) {
        let research_building: HashMap<String, String> =
            p.research.iter().flat_map(|f| f.research.iter().map(|r| (r.id.clone(), r.building.clone()))).collect();
        let next = |n: &Node| -> Vec<Node> {
            let mut out: Vec<Node> =
                edges.get(n).map(|v| v.iter().map(|(t, _)| t.clone()).collect()).unwrap_or_default();
            if n.level > 1 {
                out.push(Node { level: n.level - 1, ..n.clone() });
            }
            if n.kind == IdKind::Research {
                if let Some(b) = research_building.get(&n.id) {
                    out.push(Node { kind: IdKind::Building, id: b.clone(), level: 1 });
                }
            }
            out
        };
        // Iterative DFS with colours; report each cycle once, at the
        // expression of the edge that closes it.
        let mut state: HashMap<Node, u8> = HashMap::new();
        let mut reported: HashSet<Vec<Node>> = HashSet::new();
        for start in edges.keys() {
            if state.get(start).copied().unwrap_or(0) != 0 {
                continue;
            }
            let mut stack: Vec<(Node, Vec<Node>, usize)> = vec![(start.clone(), next(start), 0)];
            state.insert(start.clone(), 1);
            while let Some((node, succ, i)) = stack.last_mut() {
                if *i >= succ.len() {
                    state.insert(node.clone(), 2);
                    stack.pop();
                    continue;
                }
                let to = succ[*i].clone();
                *i += 1;
                match state.get(&to).copied().unwrap_or(0) {
                    0 => {
                        state.insert(to.clone(), 1);
                        let s = next(&to);
                        stack.push((to, s, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|(n, _, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<Node> = stack[pos..].iter().map(|(n, _, _)| n.clone()).collect();
                        let mut key = cycle.clone();
                        key.sort();
                        if reported.insert(key) {
                            let closing = cycle.last().cloned();
                            cycle.push(to.clone());
                            let text = cycle.iter().map(Node::describe).collect::<Vec<_>>().join(" needs ");
                            let site = closing
                                .and_then(|c| {
                                    edges.get(&c).and_then(|v| v.iter().find(|(t, _)| *t == to)).map(|(_, s)| s.clone())
                                })
                                .or_else(|| edges.get(&cycle[0]).and_then(|v| v.first()).map(|(_, s)| s.clone()));
                            if let Some(site) = site {
                                self.at(
                                    "cycle",
                                    site.file,
                                    &site.pointer,
                                    false,
                                    format!("requirement cycle: {text}; none of them can ever be built"),
                                    None,
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn build(
        &mut self,
        p: Parsed,
        mut exprs: HashMap<String, Expr>,
        hooks: BTreeMap<String, HookRef>,
        scripts: BTreeMap<String, Script>,
        sandbox: Sandbox,
        content_version: String,
    ) -> Option<Title> {
        let manifest = p.title?;
        let mut take = |file: &str, pointer: String| exprs.remove(&format!("{file}#{pointer}"));
        let buildings: Vec<BuildingType> = p
            .buildings?
            .buildings
            .into_iter()
            .enumerate()
            .map(|(i, def)| BuildingType {
                requires: (0..def.levels.len())
                    .map(|l| take("buildings.json", format!("/buildings/{i}/levels/{l}/requires")))
                    .collect(),
                def,
            })
            .collect();
        let units: Vec<UnitType> = p
            .units
            .map(|f| f.units)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, def)| UnitType { requires: take("units.json", format!("/units/{i}/requires")), def })
            .collect();
        let research: Vec<ResearchType> = p
            .research
            .map(|f| f.research)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, def)| ResearchType {
                requires: (0..def.levels.len())
                    .map(|l| take("research.json", format!("/research/{i}/levels/{l}/requires")))
                    .collect(),
                def,
            })
            .collect();
        let store = p.store.unwrap_or(StoreFile {
            schema: None,
            format_version: 1,
            items: Vec::new(),
            offers: Vec::new(),
            products: Vec::new(),
        });
        let products = store.products;
        let items: Vec<Item> = store
            .items
            .into_iter()
            .map(|def| Item { hook: def.hook.as_deref().and_then(HookRef::parse), def })
            .collect();
        let offers: Vec<Offer> = store
            .offers
            .into_iter()
            .enumerate()
            .map(|(i, def)| Offer {
                requires: take("store.json", format!("/offers/{i}/requires")),
                window_ms: def.window.as_ref().and_then(Window::epoch_ms),
                def,
            })
            .collect();
        let mut quests = Vec::new();
        for (i, def) in p.quests.map(|f| f.quests).unwrap_or_default().into_iter().enumerate() {
            let goal = take("quests.json", format!("/quests/{i}/goal"))?;
            quests.push(Quest { requires: take("quests.json", format!("/quests/{i}/requires")), goal, def });
        }
        let mut actions = BTreeMap::new();
        for (name, def) in &manifest.actions {
            let function = HookRef::parse(&def.function)?;
            actions.insert(
                name.clone(),
                Action {
                    requires: take("title.json", format!("/actions/{name}/requires")),
                    function,
                    def: def.clone(),
                },
            );
        }
        let events: Vec<LiveEvent> = manifest
            .events
            .iter()
            .filter_map(|def| Some(LiveEvent { window_ms: def.window.epoch_ms()?, def: def.clone() }))
            .collect();
        let raid_lootable: Vec<(String, Expr)> = manifest
            .world
            .raids
            .iter()
            .flat_map(|r| r.lootable.keys())
            .filter_map(|r| Some((r.clone(), take("title.json", format!("/world/raids/lootable/{r}"))?)))
            .collect();
        let loot = p.loot.map(|f| f.loot).unwrap_or_default();
        let modifiers = p.modifiers.map(|f| f.modifiers).unwrap_or_default();
        let achievements = p.achievements.map(|f| f.achievements).unwrap_or_default();
        let jobs: Vec<crate::title::Job> = p
            .jobs
            .map(|f| f.jobs)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, def)| crate::title::Job { requires: take("jobs.json", format!("/jobs/{i}/requires")), def })
            .collect();
        let ResourcesFile { resources, capacities, .. } = p.resources?;
        let index = crate::title::Index {
            capacities: capacities.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect(),
            loot: loot.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect(),
            modifiers: modifiers.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect(),
            jobs: jobs.iter().enumerate().map(|(i, j)| (j.def.id.clone(), i)).collect(),
            achievements: achievements.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect(),
            events: events.iter().enumerate().map(|(i, e)| (e.def.id.clone(), i)).collect(),
            resources: resources.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect(),
            buildings: buildings.iter().enumerate().map(|(i, b)| (b.def.id.clone(), i)).collect(),
            units: units.iter().enumerate().map(|(i, u)| (u.def.id.clone(), i)).collect(),
            research: research.iter().enumerate().map(|(i, r)| (r.def.id.clone(), i)).collect(),
            items: items.iter().enumerate().map(|(i, it)| (it.def.id.clone(), i)).collect(),
            offers: offers.iter().enumerate().map(|(i, o)| (o.def.id.clone(), i)).collect(),
            products: products.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect(),
            quests: quests.iter().enumerate().map(|(i, q)| (q.def.id.clone(), i)).collect(),
        };
        Some(Title(Arc::new(TitleData {
            manifest,
            content_version,
            resources,
            capacities,
            assets: self
                .files
                .iter()
                .filter(|(p, _)| p.starts_with("assets/"))
                .filter_map(|(p, t)| Some((p.clone(), crate::assets::bytes(p, t)?)))
                .collect(),
            chains: buildings
                .iter()
                .flat_map(|b| &b.def.levels)
                .any(|l| l.production.as_ref().is_some_and(|p| !p.consumes.is_empty())),
            buildings,
            units,
            research,
            items,
            offers,
            products,
            quests,
            loot,
            modifiers,
            jobs,
            achievements,
            events,
            raid_lootable,
            actions,
            hooks,
            scripts,
            sandbox,
            index,
        })))
    }

    /// Evaluates every expression once against a new player's state. A
    /// requirement that is not true/false is an error; any other failure is
    /// a warning (it may depend on state a new player does not have yet).
    fn trial(&mut self, title: &Title, exprs: &[(&'static str, String, Expr, bool)]) {
        let state = crate::rules::new_player(title, 0);
        let ctx = crate::view::ctx(title, &state, 0, 0);
        for (file, pointer, expr, int) in exprs {
            let result = if *int {
                title.sandbox.eval_int(expr, &ctx).map(drop)
            } else {
                title.sandbox.eval_bool(expr, &ctx).map(drop)
            };
            if let Err(e) = result {
                if e.kind == EvalErrorKind::WrongType {
                    self.at("expression", file, pointer, false, format!("in expression: {}", e.message), None);
                } else {
                    let site = ExprSite { file, pointer: pointer.clone(), node: None, int: *int };
                    let mut d =
                        Diagnostic::error("expression", *file, format!("fails for a new player: {}", e.message))
                            .warning()
                            .pointer(pointer);
                    // At the part of the expression that failed, else the whole string.
                    let at = match (e.line, e.column) {
                        (Some(l), Some(c)) => self.expr_pos(&site, l, c).map(|(l, c)| (l, c, 1)),
                        _ => None,
                    };
                    if let Some((l, c, len)) = at.or_else(|| self.map(file).and_then(|m| m.locate(pointer, false))) {
                        d = d.at(l, c, len);
                    }
                    self.diags.push(d);
                }
            }
        }
    }

    /// While the title has errors: each requirement and formula tried on a
    /// player who has nothing, for results of the wrong type only (whether
    /// an expression fails at run time depends on a real new player).
    fn trial_types(&mut self, sandbox: &Sandbox, exprs: &[(&'static str, String, Expr, bool)]) {
        let ctx = neutral();
        for (file, pointer, expr, int) in exprs {
            let result =
                if *int { sandbox.eval_int(expr, &ctx).map(drop) } else { sandbox.eval_bool(expr, &ctx).map(drop) };
            if let Err(e) = result {
                if e.kind == EvalErrorKind::WrongType {
                    self.at("expression", file, pointer, false, format!("in expression: {}", e.message), None);
                }
            }
        }
    }

    /// Requirements that can never be true: `false` and the like (no query
    /// of the player at all), and every requirement that asks for a
    /// building or research level gated by one of those (or by another such
    /// level), found by propagating until nothing changes. Warnings: the
    /// content is unreachable, not broken.
    fn check_never_true(&mut self, requirements: &[(ExprSite, Vec<IdRef>, bool)]) {
        let mut never: BTreeSet<Node> = requirements.iter().filter(|r| r.2).filter_map(|r| r.0.node.clone()).collect();
        // A level is out of reach when it, or a level below it, is gated by a never-true requirement.
        let blocked = |never: &BTreeSet<Node>, kind: IdKind, id: &str, level: i64| {
            never.iter().any(|n| n.kind == kind && n.id == id && n.level <= level)
        };
        loop {
            let mut grew = false;
            for (site, refs, _) in requirements {
                let Some(node) = &site.node else { continue };
                if blocked(&never, node.kind, &node.id, node.level) {
                    continue;
                }
                if refs.iter().any(|r| r.min_level.is_some_and(|min| blocked(&never, r.kind, &r.id, min))) {
                    never.insert(node.clone());
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        for (site, refs, constant) in requirements {
            if *constant {
                self.warn_at(
                    "never-true",
                    site.file,
                    &site.pointer,
                    "this requirement can never be true (it does not depend on the player): what it gates can never be reached".to_string(),
                    None,
                );
                continue;
            }
            for r in refs {
                let Some(min) = r.min_level else { continue };
                if !blocked(&never, r.kind, &r.id, min) {
                    continue;
                }
                let mut d = Diagnostic::error(
                    "never-true",
                    site.file,
                    format!(
                        "requires {} `{}` level {min}, which no player can ever reach (a requirement on its way can never be true): this can never be met",
                        r.kind.noun(),
                        r.id
                    ),
                )
                .warning()
                .pointer(&site.pointer);
                if let Some((l, c)) = self.expr_pos(site, r.line, r.column) {
                    d = d.at(l, c, r.id.chars().count() + 2);
                }
                self.diags.push(d);
            }
        }
    }
}

/// A player who has nothing: every query answers 0, false or "not
/// running". For trying expressions without a title (see `trial_types`).
struct Neutral;

impl citadel_dsl::StateView for Neutral {
    fn level(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn count(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn count_at_least(&self, _: &str, _: i64) -> Option<i64> {
        Some(0)
    }
    fn resource(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn cap(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn research_level(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn unit_count(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn item_count(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn quest_claimed(&self, _: &str) -> Option<bool> {
        Some(false)
    }
    fn player_level(&self) -> i64 {
        1
    }
    fn xp(&self) -> i64 {
        0
    }
    fn flag(&self, _: &str) -> bool {
        false
    }
    fn score(&self, _: &str) -> i64 {
        0
    }
    fn now_ms(&self) -> i64 {
        0
    }
    fn event_active(&self, _: &str) -> Option<bool> {
        Some(false)
    }
    fn modifier_stacks(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn modifier_seconds_left(&self, _: &str) -> Option<i64> {
        Some(0)
    }
    fn capacity(&self, _: &str) -> Option<(i64, i64)> {
        Some((0, 0))
    }
    fn counter(&self, _: &str) -> i64 {
        0
    }
    fn daily_streak(&self) -> i64 {
        0
    }
}

fn neutral() -> citadel_dsl::Ctx {
    citadel_dsl::Ctx::new(Arc::new(Neutral), 0)
}

/// serde_json appends " at line L column C"; diagnostics carry that apart.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
