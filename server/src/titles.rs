//! The titles this server serves, loaded from the titles folder at start.
//! A title that fails to load is reported and not served; the others are.

use std::collections::BTreeMap;
use std::path::Path;

use citadel_runtime::{Severity, Title};

#[derive(Debug, Default)]
pub struct Titles {
    by_id: BTreeMap<String, Title>,
}

impl Titles {
    /// Loads every title folder under `dir`, logging each one's diagnostics.
    pub fn load_dir(dir: &Path) -> anyhow::Result<Titles> {
        let mut by_id = BTreeMap::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("cannot read titles folder {}: {e}", dir.display()))?;
        let mut dirs: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
        dirs.sort();
        for d in dirs {
            let (title, diags) = citadel_runtime::load(&d);
            for diag in &diags {
                match diag.severity {
                    Severity::Error => tracing::error!(title = %d.display(), at = %diag.location(), "{}", diag.message),
                    Severity::Warning => {
                        tracing::warn!(title = %d.display(), at = %diag.location(), "{}", diag.message)
                    }
                }
            }
            match title {
                Some(t) => {
                    tracing::info!(title = t.id(), content_version = %t.content_version, "serving title");
                    by_id.insert(t.id().to_string(), t);
                }
                None => tracing::error!(title = %d.display(), "title has errors and is not served"),
            }
        }
        Ok(Titles { by_id })
    }

    pub fn get(&self, id: &str) -> Option<Title> {
        self.by_id.get(id).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Title> {
        self.by_id.values()
    }
}
