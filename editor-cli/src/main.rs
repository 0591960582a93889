//! `citadel-edit`: the designers' command line. Validates title folders
//! (once, or on every save), runs their scenario tests, scaffolds new
//! titles, and pushes titles to (or rolls them back on) a running server
//! through its admin API. It never links the server.
//!
//! Exit codes: 0 success, 1 the title is invalid or a test failed,
//! 2 usage or I/O error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use citadel_runtime::{scenario, Diagnostic, Severity};
use clap::{Parser, Subcommand, ValueEnum};

mod remote;
mod watch;

#[derive(Parser)]
#[command(name = "citadel-edit", version, about = "Validate, test and scaffold Citadel titles")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate title folders, printing every diagnostic.
    /// With no folder, validates every folder under ./titles.
    Validate {
        /// Title folders to validate.
        dirs: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Validate titles and run their scenario tests (tests/*.json).
    /// A title is a folder path or an id under ./titles; none means all.
    Test { titles: Vec<String> },
    /// Validate titles again on every save, printing the diagnostics.
    /// A title is a folder path or an id under ./titles; none means all.
    Watch { titles: Vec<String> },
    /// Send a title to a running server: it is validated there and served
    /// if it has no errors (exit 0), else refused with its diagnostics
    /// (exit 1) while the server keeps the version it runs.
    Push {
        /// A title folder, or an id under ./titles.
        title: String,
        /// The server, e.g. http://127.0.0.1:7070.
        #[arg(long)]
        server: String,
        /// Admin token [default: $CITADEL_ADMIN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Serve an earlier version of a title again on a running server.
    Rollback {
        /// The title id.
        title: String,
        #[arg(long)]
        server: String,
        /// The content version to return to [default: the one before the current].
        #[arg(long)]
        to: Option<String>,
        /// Admin token [default: $CITADEL_ADMIN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Create a new title folder that validates and passes its own test.
    New {
        /// The new title's id: lowercase letters, digits and _, starting with a letter.
        id: String,
        /// Folder to create it in (default: ./titles if it exists, else .).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { dirs, format } => validate(dirs, format),
        Command::Test { titles } => test(titles),
        Command::New { id, dir } => new(&id, dir),
        Command::Watch { titles } => titles_or_all(&titles).and_then(watch::watch),
        Command::Push { title, server, token, format } => remote::push(&resolve_title(&title), &server, token, format),
        Command::Rollback { title, server, to, token, format } => remote::rollback(&title, &server, to, token, format),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("citadel-edit: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Every title folder under ./titles, sorted.
fn all_titles() -> anyhow::Result<Vec<PathBuf>> {
    let root = Path::new("titles");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .context("no title folders given and ./titles cannot be read")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    Ok(())
}

/// Reads a title folder once and loads it. The folder's own name (also for
/// `.`) is what the title id must match.
pub(crate) fn load_dir(
    dir: &Path,
) -> anyhow::Result<(citadel_runtime::TitleFiles, Option<citadel_runtime::Title>, Vec<Diagnostic>)> {
    check_dir(dir)?;
    Ok(citadel_runtime::load::load_with_files(dir))
}

/// Prints diagnostics the way a compiler does; returns (errors, warnings).
pub(crate) fn print_human(dir: &Path, files: &citadel_runtime::TitleFiles, diags: &[Diagnostic]) -> (usize, usize) {
    let shown = dir.display().to_string();
    for d in diags {
        let source = files.get(&d.file).map(String::as_str);
        println!("{}", d.render(shown.trim_end_matches('/'), source));
    }
    let errors = diags.iter().filter(|d| d.severity == Severity::Error).count();
    (errors, diags.len() - errors)
}

fn validate(dirs: Vec<PathBuf>, format: Format) -> anyhow::Result<bool> {
    let dirs = if dirs.is_empty() { all_titles()? } else { dirs };
    let mut all_ok = true;
    let mut report = Vec::new();
    for dir in &dirs {
        let (files, title, diags) = load_dir(dir)?;
        // A title exists only without errors.
        let ok = title.is_some();
        all_ok &= ok;
        match format {
            Format::Human => {
                let (errors, warnings) = print_human(dir, &files, &diags);
                match &title {
                    Some(t) => println!(
                        "{}: ok, title `{}` content version {} ({warnings} warning(s))",
                        dir.display(),
                        t.id(),
                        t.content_version
                    ),
                    _ => println!("{}: invalid, {errors} error(s), {warnings} warning(s)", dir.display()),
                }
            }
            Format::Json => report.push(serde_json::json!({
                "dir": dir.display().to_string(),
                "ok": ok,
                "title": title.as_ref().map(|t| t.id().to_string()),
                "content_version": title.as_ref().map(|t| t.content_version.clone()),
                "diagnostics": diags,
            })),
        }
    }
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(all_ok)
}

fn resolve_title(arg: &str) -> PathBuf {
    let p = PathBuf::from(arg);
    if p.is_dir() {
        return p;
    }
    Path::new("titles").join(arg)
}

/// The folders of the titles named (folders or ids under ./titles), or of all.
fn titles_or_all(titles: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if titles.is_empty() {
        all_titles()
    } else {
        Ok(titles.iter().map(|t| resolve_title(t)).collect())
    }
}

fn test(titles: Vec<String>) -> anyhow::Result<bool> {
    let dirs = titles_or_all(&titles)?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for dir in &dirs {
        let (files, title, diags) = load_dir(dir)?;
        let Some(title) = title else {
            print_human(dir, &files, &diags);
            println!("FAIL {}: the title does not load", dir.display());
            failed += 1;
            continue;
        };
        let outcomes = scenario::run_all(&title, &files);
        if outcomes.is_empty() {
            println!("WARN {}: no scenario tests in tests/", dir.display());
        }
        for o in outcomes {
            if o.passed() {
                passed += 1;
                println!("PASS {}/{} ({} steps)", dir.display(), o.file, o.steps_passed);
            } else {
                failed += 1;
                println!("FAIL {}/{} after {} passing step(s)", dir.display(), o.file, o.steps_passed);
                print_human(dir, &files, &o.failures);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// The scaffold's files, embedded so the binary works from anywhere.
const TEMPLATE: &[(&str, &str)] = &[
    ("title.json", include_str!("../template/title.json")),
    ("resources.json", include_str!("../template/resources.json")),
    ("buildings.json", include_str!("../template/buildings.json")),
    ("scripts/hooks.rhai", include_str!("../template/scripts/hooks.rhai")),
    ("tests/basics.json", include_str!("../template/tests/basics.json")),
];

fn new(id: &str, dir: Option<PathBuf>) -> anyhow::Result<bool> {
    if !citadel_runtime::load::valid_title_id(id) {
        bail!("`{id}` is not a valid title id: use lowercase letters, digits and _, starting with a letter, at most 32 characters");
    }
    let parent =
        dir.unwrap_or_else(|| if Path::new("titles").is_dir() { PathBuf::from("titles") } else { PathBuf::from(".") });
    let target = parent.join(id);
    if target.exists() {
        bail!("{} already exists", target.display());
    }
    let name: String = id
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ");
    for (path, text) in TEMPLATE {
        let dest = target.join(path);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        std::fs::write(&dest, text.replace("{{id}}", id).replace("{{name}}", &name))
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    println!(
        "created {} (validate with: citadel-edit validate {0}; test with: citadel-edit test {0})",
        target.display()
    );
    Ok(true)
}
