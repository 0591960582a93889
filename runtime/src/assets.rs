//! A title's images: `assets/**/*.svg` and `*.png`, referenced from the
//! data by path (`"icon": "assets/buildings/farm.svg"`), checked at load
//! and served by the game server under the title's content version.
//!
//! Images travel with the other files of a title (reloads, pushes, the
//! version store), which are text: an SVG is kept as it is, a PNG as a
//! `data:image/png;base64,` URL, decoded again only to be served.

use std::path::Path;

use base64::Engine as _;

use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::load::TitleFiles;

/// Bytes of one image. Icons are a few KiB; this leaves room for detailed
/// art and bounds what a client downloads per image.
pub const ASSET_BYTES_MAX: usize = 256 * 1024;
/// Folder levels under `assets/` (`assets/buildings/winter/farm.svg`).
const ASSET_DEPTH_MAX: usize = 3;
/// How a PNG is kept among the title's text files.
pub const PNG_PREFIX: &str = "data:image/png;base64,";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// An image's media type, from its path.
pub fn content_type(path: &str) -> Option<&'static str> {
    if path.ends_with(".svg") {
        Some("image/svg+xml")
    } else if path.ends_with(".png") {
        Some("image/png")
    } else {
        None
    }
}

/// The bytes of an image as kept in a title's files.
pub fn bytes(path: &str, text: &str) -> Option<Vec<u8>> {
    if path.ends_with(".png") {
        base64::engine::general_purpose::STANDARD.decode(text.strip_prefix(PNG_PREFIX)?).ok()
    } else {
        Some(text.as_bytes().to_vec())
    }
}

/// Reads `dir/assets` into `files` (SVG as text, PNG as a data URL); the
/// caller's running `total` of bytes read and `limit` on it apply.
pub(crate) fn read(dir: &Path, files: &mut TitleFiles, diags: &mut Vec<Diagnostic>, total: &mut usize, limit: usize) {
    walk(dir, "assets", 1, files, diags, total, limit);
}

fn walk(
    dir: &Path,
    rel: &str,
    depth: usize,
    files: &mut TitleFiles,
    diags: &mut Vec<Diagnostic>,
    total: &mut usize,
    limit: usize,
) {
    let Ok(entries) = std::fs::read_dir(dir.join(rel)) else { return };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = format!("{rel}/{name}");
        if p.is_dir() {
            if depth >= ASSET_DEPTH_MAX {
                diags.push(Diagnostic::error(
                    "asset",
                    path,
                    format!("assets nest at most {ASSET_DEPTH_MAX} folders deep"),
                ));
            } else {
                walk(dir, &path, depth + 1, files, diags, total, limit);
            }
            continue;
        }
        if content_type(name).is_none() {
            diags.push(Diagnostic::error("asset", path, "an asset is an .svg or a .png image").warning());
            continue;
        }
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) => {
                diags.push(Diagnostic::error("io", path, format!("cannot read file: {e}")));
                continue;
            }
        };
        if bytes.len() > ASSET_BYTES_MAX {
            diags.push(Diagnostic::error(
                "asset",
                path,
                format!("image is {} bytes, the limit is {ASSET_BYTES_MAX}", bytes.len()),
            ));
            continue;
        }
        *total += bytes.len();
        if *total > limit {
            diags.push(Diagnostic::error("limit", path, format!("title is larger than {limit} bytes")));
            return;
        }
        let text = if name.ends_with(".png") {
            Ok(format!("{PNG_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(&bytes)))
        } else {
            String::from_utf8(bytes)
        };
        match text {
            Ok(t) => {
                files.insert(path, t);
            }
            Err(_) => diags.push(Diagnostic::error("encoding", path, "an SVG must be valid UTF-8")),
        }
    }
}

/// What no SVG served from the game's own origin may contain: scripts,
/// event handlers, embedded documents, or references outside itself.
const SVG_FORBIDDEN: &[&str] = &[
    "<script",
    "javascript:",
    "<foreignobject",
    "<iframe",
    "<embed",
    "<object",
    "href=\"http",
    "href='http",
    "<!entity",
];

/// Checks every image of a title: type, size, and that an SVG is a plain
/// drawing (no scripts, handlers or outside references).
pub(crate) fn check(files: &TitleFiles) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (path, text) in files.iter().filter(|(p, _)| p.starts_with("assets/")) {
        let bad = |m: String| Diagnostic::error("asset", path.clone(), m);
        match content_type(path) {
            None => out.push(bad("an asset is an .svg or a .png image".into())),
            Some("image/png") => match bytes(path, text) {
                Some(b) if b.starts_with(PNG_MAGIC) && b.len() <= ASSET_BYTES_MAX => {}
                Some(b) if b.len() > ASSET_BYTES_MAX => {
                    out.push(bad(format!("image is {} bytes, the limit is {ASSET_BYTES_MAX}", b.len())))
                }
                _ => out.push(bad("not a PNG image".into())),
            },
            Some(_) => {
                let lower = text.to_ascii_lowercase();
                if text.len() > ASSET_BYTES_MAX {
                    out.push(bad(format!("image is {} bytes, the limit is {ASSET_BYTES_MAX}", text.len())));
                } else if !lower.contains("<svg") {
                    out.push(bad("not an SVG image (no <svg> element)".into()));
                } else if let Some(f) = SVG_FORBIDDEN.iter().find(|f| lower.contains(**f)) {
                    out.push(bad(format!("an SVG icon may not contain `{f}`: icons are drawings, not documents")));
                } else if has_event_handler(&lower) {
                    out.push(bad("an SVG icon may not have event handlers (on...= attributes)".into()));
                }
            }
        }
    }
    out
}

/// Whether an attribute named `on...` appears (`onload=`, `onclick =`).
fn has_event_handler(lower: &str) -> bool {
    let b = lower.as_bytes();
    (0..b.len().saturating_sub(3)).any(|i| {
        b[i].is_ascii_whitespace() && b[i + 1] == b'o' && b[i + 2] == b'n' && {
            let rest = &b[i + 3..];
            let name = rest.iter().take_while(|c| c.is_ascii_alphabetic()).count();
            name > 0 && rest[name..].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'=')
        }
    })
}

/// "did you mean" for an icon path that names no image.
pub(crate) fn suggest(files: &TitleFiles, path: &str) -> Option<String> {
    did_you_mean(path, files.keys().filter(|p| p.starts_with("assets/")).map(String::as_str))
}
