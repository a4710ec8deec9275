//! Who may connect: certificate fingerprint (SHA-256 of the DER) → partner name.
//!
//! ADAPTER (serve helper): the partner registry of the active policy (`retort policy
//! add-partner NAME --client-cert PEM`, issue "policy") was not available when this was
//! written, so partners come from the workspace config's `[[partners]]` table
//! (`workspace::PartnerEntry.client_cert_sha256`). Swap [`PartnerDirectory::load`] for the
//! policy lookup when it lands; nothing else in `serve/` depends on where the table lives.
//!
//! The table is re-read whenever `retort.toml` changes (size or modification time), so adding
//! or removing a partner takes effect without restarting the server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::workspace::{Workspace, CONFIG_FILE};

type Table = Arc<HashMap<String, String>>;

/// Fingerprint → partner lookups, cached until the source file changes.
#[derive(Debug)]
pub struct PartnerDirectory {
    root: PathBuf,
    cache: Mutex<Option<(Stamp, Table)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl PartnerDirectory {
    /// The directory of the workspace at `root`.
    pub fn new(root: &Path) -> PartnerDirectory {
        PartnerDirectory {
            root: root.to_path_buf(),
            cache: Mutex::new(None),
        }
    }

    /// Where partners are registered (for messages).
    pub fn source_name(&self) -> String {
        self.root.join(CONFIG_FILE).display().to_string()
    }

    fn stamp(&self) -> Option<Stamp> {
        let m = std::fs::metadata(self.root.join(CONFIG_FILE)).ok()?;
        Some(Stamp {
            modified: m.modified().ok(),
            len: m.len(),
        })
    }

    fn load(&self) -> crate::Result<HashMap<String, String>> {
        let ws = Workspace::open(&self.root)?;
        let mut t = HashMap::new();
        for p in &ws.config().partners {
            if let Some(fp) = &p.client_cert_sha256 {
                t.insert(normalise_fingerprint(fp), p.name.clone());
            }
        }
        Ok(t)
    }

    fn table(&self) -> crate::Result<Table> {
        let stamp = self.stamp();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(s), Some((cached, table))) = (stamp, cache.as_ref()) {
            if *cached == s {
                return Ok(table.clone());
            }
        }
        let table: Table = Arc::new(self.load()?);
        if let Some(s) = stamp {
            *cache = Some((s, table.clone()));
        }
        Ok(table)
    }

    /// The partner whose client certificate has this SHA-256 fingerprint (hex), if any.
    ///
    /// # Errors
    /// Workspace errors when the config cannot be read (callers refuse the peer).
    pub fn lookup(&self, sha256_hex: &str) -> crate::Result<Option<String>> {
        Ok(self
            .table()?
            .get(&normalise_fingerprint(sha256_hex))
            .cloned())
    }

    /// Names of the partners that have a client certificate registered, sorted.
    ///
    /// # Errors
    /// Workspace errors.
    pub fn names(&self) -> crate::Result<Vec<String>> {
        let mut v: Vec<String> = self.table()?.values().cloned().collect();
        v.sort();
        v.dedup();
        Ok(v)
    }
}

/// Lowercase hex without separators (accepts `AB:CD:…` as openssl prints it).
pub fn normalise_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::PartnerEntry;

    #[test]
    fn looks_up_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let mut ws = Workspace::create(&root, "t").unwrap();
        let d = PartnerDirectory::new(&root);
        assert!(d.names().unwrap().is_empty());
        ws.config_mut().partners.push(PartnerEntry {
            name: "alpha".into(),
            client_cert_sha256: Some("AB:CD:EF".into()),
        });
        ws.config_mut().partners.push(PartnerEntry {
            name: "nocert".into(),
            client_cert_sha256: None,
        });
        ws.save_config().unwrap();
        assert_eq!(d.lookup("abcdef").unwrap().as_deref(), Some("alpha"));
        assert_eq!(d.lookup("ABCDEF").unwrap().as_deref(), Some("alpha"));
        assert_eq!(d.lookup("abcdee").unwrap(), None);
        assert_eq!(d.names().unwrap(), ["alpha"]);
        ws.config_mut().partners.clear();
        ws.save_config().unwrap();
        assert_eq!(
            d.lookup("abcdef").unwrap(),
            None,
            "removal must take effect"
        );
    }
}
