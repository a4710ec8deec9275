//! Who may connect: certificate fingerprint (SHA-256 of the DER) → partner of the active
//! policy (`retort policy add-partner NAME --client-cert PEM`), through
//! [`crate::policy::load_active`] and [`crate::policy::partner_by_cert`].
//!
//! The policy is re-read whenever the policy file or `retort.toml` changes (size or
//! modification time), so adding or removing a partner takes effect without restarting the
//! server. If the policy cannot be read or no longer validates, every client is refused until
//! it is fixed (fail closed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::policy::{partner_by_cert, Loaded};
use crate::workspace::{Workspace, CONFIG_FILE};

/// A partner as the server needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerInfo {
    /// The partner's name (audit actor `partner:<name>`, package index `partner`).
    pub name: String,
    /// Datasets whose packages it may receive (`None`: any).
    pub datasets: Option<Vec<String>>,
    /// SHA-256 of the policy file that admitted it (goes into audit records).
    pub policy_sha256: String,
}

/// Fingerprint → partner lookups, cached until the policy or the config changes.
#[derive(Debug)]
pub struct PartnerDirectory {
    root: PathBuf,
    policy_override: Option<PathBuf>,
    cache: Mutex<Option<(Stamps, Arc<Loaded>)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps {
    config: Option<Stamp>,
    policy_path: PathBuf,
    policy: Option<Stamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

impl PartnerDirectory {
    /// The directory of the workspace at `root`, using `policy_override` (the global
    /// `--policy`) instead of the workspace's active policy when given.
    pub fn new(root: &Path, policy_override: Option<PathBuf>) -> PartnerDirectory {
        PartnerDirectory {
            root: root.to_path_buf(),
            policy_override,
            cache: Mutex::new(None),
        }
    }

    fn policy(&self) -> super::Result<Arc<Loaded>> {
        let config = stamp(&self.root.join(CONFIG_FILE));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, loaded)) = cache.as_ref() {
            if s.config.is_some() && s.config == config && s.policy == stamp(&s.policy_path) {
                return Ok(loaded.clone());
            }
        }
        let ws = Workspace::open(&self.root)?;
        let policy_path = self
            .policy_override
            .clone()
            .unwrap_or_else(|| ws.policy_path());
        let before = stamp(&policy_path);
        let loaded = Arc::new(crate::policy::load_active(
            &ws,
            self.policy_override.as_deref(),
        )?);
        // Cache only if the file did not change while it was read.
        if before.is_some() && before == stamp(&policy_path) {
            *cache = Some((
                Stamps {
                    config,
                    policy_path,
                    policy: before,
                },
                loaded.clone(),
            ));
        } else {
            *cache = None;
        }
        Ok(loaded)
    }

    /// Name and SHA-256 of the policy in force.
    ///
    /// # Errors
    /// Workspace and policy errors.
    pub fn policy_identity(&self) -> super::Result<serde_json::Value> {
        Ok(self.policy()?.identity_json())
    }

    /// The partner whose client certificate has this SHA-256 fingerprint (hex), if any.
    ///
    /// # Errors
    /// Workspace and policy errors (callers refuse the peer).
    pub fn lookup(&self, sha256_hex: &str) -> super::Result<Option<PartnerInfo>> {
        let loaded = self.policy()?;
        Ok(
            partner_by_cert(&loaded.policy, sha256_hex).map(|p| PartnerInfo {
                name: p.name.clone(),
                datasets: p.datasets.clone(),
                policy_sha256: loaded.sha256.clone(),
            }),
        )
    }

    /// Names of the partners that have a client certificate registered, sorted.
    ///
    /// # Errors
    /// Workspace and policy errors.
    pub fn names(&self) -> super::Result<Vec<String>> {
        let loaded = self.policy()?;
        let mut v: Vec<String> = loaded
            .policy
            .partners()
            .iter()
            .filter(|p| p.client_cert_sha256.is_some())
            .map(|p| p.name.clone())
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let ws = Workspace::create(&root, "t").unwrap();
        let text = crate::policy::template("default").unwrap();
        std::fs::write(ws.policy_path(), text).unwrap();
        (dir, root)
    }

    fn add_partner(root: &Path, name: &str, fp: &str) {
        let p = Workspace::open(root).unwrap().policy_path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(&format!(
            "\n[[partners]]\nname = \"{name}\"\nclient_cert_sha256 = \"{fp}\"\n"
        ));
        std::fs::write(&p, text).unwrap();
    }

    #[test]
    fn looks_up_and_follows_policy_changes() {
        let (_d, root) = fresh();
        let d = PartnerDirectory::new(&root, None);
        assert!(d.names().unwrap().is_empty());
        let fp = "ab".repeat(32);
        add_partner(&root, "alpha", &fp);
        let got = d
            .lookup(&fp)
            .unwrap()
            .expect("alpha after the policy changed");
        assert_eq!(got.name, "alpha");
        assert_eq!(got.policy_sha256.len(), 64);
        assert_eq!(d.lookup(&fp.to_uppercase()).unwrap().unwrap().name, "alpha");
        assert_eq!(d.lookup(&"cd".repeat(32)).unwrap(), None);
        assert_eq!(d.names().unwrap(), ["alpha"]);
        // Breaking the policy refuses everyone (fail closed) instead of using a stale copy.
        let p = Workspace::open(&root).unwrap().policy_path();
        std::fs::write(&p, "this is = = not toml").unwrap();
        assert!(d.lookup(&fp).is_err());
    }
}
