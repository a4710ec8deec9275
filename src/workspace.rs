//! The workspace: one directory holding everything Retort keeps for a site — config, keys,
//! datasets, the privacy ledger, runs, packages, policies and the audit log.
//!
//! Guarantees:
//! - [`atomic_write`] (temp file in the same directory, fsync, rename, fsync the directory) is
//!   the only way Retort writes files, so a crash never leaves a half-written file behind.
//! - [`Workspace::lock`] takes an exclusive advisory lock so two mutating commands never run
//!   at once; a second one waits a few seconds, then fails with `workspace-locked`.
//! - Secrets (private keys, the HMAC secret) are created with mode 0600.
//! - Every file and folder gets its permissions from the folder it is created in (see
//!   [`new_file_mode`]), so once `init` has laid the workspace out in the permission model of
//!   [`crate::access`], every write path follows it: private data owner-only, shared records
//!   readable by the compliance group, the audit log writable by the service group.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::access::{self, Access, Groups};
use crate::digest::hex;
use crate::error::{Class, Coded, IoError};

/// The config file name at the workspace root.
pub const CONFIG_FILE: &str = "retort.toml";
/// The lock file name at the workspace root.
pub const LOCK_FILE: &str = ".retort.lock";
/// How long a second command waits for the lock by default.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Workspace errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory has no workspace.
    #[error("{path} is not a Retort workspace (no {CONFIG_FILE})")]
    NotAWorkspace {
        /// The directory.
        path: PathBuf,
    },
    /// `init` on an existing workspace.
    #[error("{path} already holds a Retort workspace; refusing to overwrite it")]
    AlreadyExists {
        /// The directory.
        path: PathBuf,
    },
    /// `init` into a non-empty directory that is not a workspace.
    #[error("{path} exists and is not empty; refusing to create a workspace in it")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// Another command holds the lock.
    #[error("the workspace {path} is locked by another retort command (waited {waited_s} s)")]
    Locked {
        /// The workspace.
        path: PathBuf,
        /// Seconds waited.
        waited_s: u64,
    },
    /// The config file does not parse.
    #[error("{path}: invalid workspace config: {message}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A name (dataset, run, partner) is not acceptable.
    #[error("invalid name {name:?}: {why}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The workspace's groups or permissions (code and hint of the access error).
    #[error(transparent)]
    Access(#[from] access::Error),
    /// A file-system error.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "workspace-missing",
        "workspace-exists",
        "workspace-not-empty",
        "workspace-locked",
        "workspace-config-invalid",
        "name-invalid",
        "workspace-io",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotAWorkspace { .. } => "workspace-missing",
            Error::AlreadyExists { .. } => "workspace-exists",
            Error::NotEmpty { .. } => "workspace-not-empty",
            Error::Locked { .. } => "workspace-locked",
            Error::BadConfig { .. } => "workspace-config-invalid",
            Error::BadName { .. } => "name-invalid",
            Error::Access(e) => e.code(),
            Error::Io(_) => "workspace-io",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotAWorkspace { path } => format!(
                "run `retort init --workspace {}` first, or point --workspace / RETORT_WORKSPACE at an existing workspace",
                path.display()
            ),
            Error::AlreadyExists { .. } => {
                "use the existing workspace, or choose another directory with --workspace".into()
            }
            Error::NotEmpty { .. } => "choose a new or empty directory with --workspace".into(),
            Error::Locked { .. } => {
                "wait for the other command to finish (see `ps`), then run this one again".into()
            }
            Error::BadConfig { path, .. } => {
                format!("fix {} (it is written by `retort init`)", path.display())
            }
            Error::BadName { .. } => {
                "use 1-64 characters from a-z, A-Z, 0-9, '-', '_' and '.', starting with a letter or digit".into()
            }
            Error::Access(e) => return e.hint(),
            Error::Io(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        match self {
            // A malformed name is wrong in itself, whatever the workspace holds: usage.
            Error::BadName { .. } => Class::Usage,
            _ => Class::Input,
        }
    }
}

/// Result for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The workspace config (`retort.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of the workspace.
    pub version: u32,
    /// Random identifier of this workspace (hex), used in package ids and audit origins.
    pub workspace_id: String,
    /// Human name of the site (e.g. "st-elsewhere-radiology"), used as the audit-note origin.
    pub site: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The active policy file, relative to the workspace root.
    pub policy: String,
    /// Partners allowed to receive packages before a policy lists them (legacy table).
    #[serde(default)]
    pub partners: Vec<PartnerEntry>,
    /// Who besides the owner may use the workspace (`[access]`: the compliance and service
    /// groups; see [`crate::access`]). Absent: the owner alone.
    #[serde(default, skip_serializing_if = "Access::is_empty")]
    pub access: Access,
}

/// A partner registered in the workspace config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartnerEntry {
    /// Partner name.
    pub name: String,
    /// SHA-256 fingerprint (hex) of the partner's mTLS client certificate (DER), if any.
    #[serde(default)]
    pub client_cert_sha256: Option<String>,
}

/// An open workspace.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    config: Config,
}

/// The exclusive lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Workspace {
    /// Create a new workspace directory layout and config, owner-only (no groups). Keys and
    /// the policy are created by the caller (`init` in the CLI) so that each step is audited.
    ///
    /// # Errors
    /// `workspace-exists` if a workspace is already there; `workspace-not-empty` for a
    /// non-empty directory; I/O errors.
    pub fn create(root: &Path, site: &str) -> Result<Workspace> {
        Workspace::create_with(root, site, &Access::default())
    }

    /// [`Workspace::create`] with the groups of `access`: every folder is created in the
    /// permission model of [`crate::access`] (its group set, set-group-id where files inherit
    /// the group), before anything is written into it.
    ///
    /// # Errors
    /// As [`Workspace::create`]; `access-group-unknown`, `access-groups-same`,
    /// `access-chown-failed` (the caller is not a member of a group).
    pub fn create_with(root: &Path, site: &str, access: &Access) -> Result<Workspace> {
        if root.join(CONFIG_FILE).exists() {
            return Err(Error::AlreadyExists { path: root.into() });
        }
        if root.exists() {
            let mut entries = fs::read_dir(root).map_err(|e| IoError::new("reading", root, e))?;
            if entries.next().is_some() {
                return Err(Error::NotEmpty { path: root.into() });
            }
        }
        let groups = Groups::resolve(access)?;
        create_dir_all(root)?;
        access::place(root, Path::new(""), &groups)?;
        for d in [
            "keys",
            "datasets",
            "ledger",
            "runs",
            "packages",
            "policies",
            "audit",
            "audit/checkpoints",
        ] {
            match fs::create_dir(root.join(d)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(IoError::new("creating directory", root.join(d), e).into()),
            }
            access::place(root, Path::new(d), &groups)?;
        }
        let config = Config {
            version: 1,
            workspace_id: hex(&crate::random::random_bytes::<8>()),
            site: site.to_string(),
            created: now_rfc3339(),
            policy: "policies/active.toml".into(),
            partners: Vec::new(),
            access: access.clone(),
        };
        let ws = Workspace {
            root: root.to_path_buf(),
            config,
        };
        ws.save_config()?;
        Ok(ws)
    }

    /// The groups of the `[access]` table, resolved on this host.
    ///
    /// # Errors
    /// `access-group-unknown`, `access-groups-same`.
    pub fn groups(&self) -> Result<Groups> {
        Ok(Groups::resolve(&self.config.access)?)
    }

    /// Open an existing workspace (no lock taken).
    ///
    /// # Errors
    /// `workspace-missing` if there is no config; `workspace-config-invalid` if it does not parse.
    pub fn open(root: &Path) -> Result<Workspace> {
        let path = root.join(CONFIG_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotAWorkspace { path: root.into() })
            }
            Err(e) => return Err(IoError::new("reading", &path, e).into()),
        };
        let config: Config = toml::from_str(&text).map_err(|e| Error::BadConfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Workspace {
            root: root.to_path_buf(),
            config,
        })
    }

    /// Take the exclusive workspace lock, waiting up to `wait`.
    ///
    /// # Errors
    /// `workspace-locked` when another command keeps it longer than `wait`.
    pub fn lock(&self, wait: Duration) -> Result<Lock> {
        lock_file(&self.root.join(LOCK_FILE), wait).map_err(|e| match e {
            LockError::Timeout(waited) => Error::Locked {
                path: self.root.clone(),
                waited_s: waited.as_secs(),
            },
            LockError::Io(e) => e.into(),
        })
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Mutable config; call [`Workspace::save_config`] after changing it (under the lock).
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }
    /// Write the config atomically.
    pub fn save_config(&self) -> Result<()> {
        let text = toml::to_string_pretty(&self.config).expect("invariant: config serializes");
        atomic_write(&self.root.join(CONFIG_FILE), text.as_bytes())?;
        Ok(())
    }
    /// `keys/`.
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// `datasets/`.
    pub fn datasets_dir(&self) -> PathBuf {
        self.root.join("datasets")
    }
    /// `ledger/`.
    pub fn ledger_dir(&self) -> PathBuf {
        self.root.join("ledger")
    }
    /// `runs/`.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }
    /// `packages/`.
    pub fn packages_dir(&self) -> PathBuf {
        self.root.join("packages")
    }
    /// `policies/`.
    pub fn policies_dir(&self) -> PathBuf {
        self.root.join("policies")
    }
    /// `audit/`.
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("audit")
    }
    /// The active policy file.
    pub fn policy_path(&self) -> PathBuf {
        self.root.join(&self.config.policy)
    }
}

/// Why a lock could not be taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum LockError {
    /// Waited this long without getting it.
    Timeout(Duration),
    /// I/O error opening the lock file.
    Io(IoError),
}

/// Take an exclusive advisory lock on `path` (created owner-only if missing), polling until
/// `wait`.
pub fn lock_file(path: &Path, wait: Duration) -> std::result::Result<Lock, LockError> {
    lock_file_mode(path, wait, 0o600)
}

/// [`lock_file`], creating a missing lock file with at most `mode` (see [`new_file_mode`]):
/// the audit lock is shared with the service group.
pub fn lock_file_mode(
    path: &Path,
    wait: Duration,
    mode: u32,
) -> std::result::Result<Lock, LockError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (mode, exact) = new_file_mode(dir, mode);
    let existed = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(mode)
        .open(path)
        .map_err(|e| LockError::Io(IoError::new("opening lock file", path, e)))?;
    if exact && !existed {
        let _ = file.set_permissions(fs::Permissions::from_mode(mode));
    }
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Lock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= wait {
                    return Err(LockError::Timeout(start.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(LockError::Io(IoError::new("locking", path, e)))
            }
        }
    }
}

/// Write `bytes` to `path` atomically: a temp file in the same directory, `fsync`, rename over
/// the target, then `fsync` the directory. Readers see the old file or the new one, never a mix.
/// The file is readable at most as [`new_file_mode`] gives for `0644` in its folder (`0600` in
/// an owner-only folder, `0640` for the folder's group in a shared one).
///
/// # Errors
/// I/O errors, with the path.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    atomic_write_mode(path, bytes, 0o644)
}

/// [`atomic_write`] with an explicit most permissive mode (0600 for secrets and real images:
/// never more, whatever the folder).
pub fn atomic_write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoError> {
    atomic_write_with(path, mode, |f| f.write_all(bytes))
}

/// [`atomic_write`] with a writer callback (for large or streamed outputs).
pub fn atomic_write_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), IoError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        hex(&crate::random::random_bytes::<4>())
    ));
    let (mode, exact) = new_file_mode(dir, mode);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        if exact {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        write(&mut f)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(IoError::new("writing", path, e));
    }
    Ok(())
}

/// Atomically publish a fully written directory: `tmp_dir` is renamed to `final_dir` and the
/// parent directory is synced. `final_dir` must not exist.
pub fn publish_dir(tmp_dir: &Path, final_dir: &Path) -> Result<(), IoError> {
    sync_tree(tmp_dir).map_err(|e| IoError::new("syncing", tmp_dir, e))?;
    fs::rename(tmp_dir, final_dir).map_err(|e| IoError::new("renaming into", final_dir, e))?;
    if let Some(parent) = final_dir.parent() {
        sync_dir(parent).map_err(|e| IoError::new("syncing", parent, e))?;
    }
    Ok(())
}

fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            sync_tree(&entry.path())?;
        } else if ft.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// `fsync` a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The mode of a new file in `dir`, and whether it must be set exactly (ignoring the umask):
/// `requested` capped by the folder's own read and write permissions (a `0700` folder gives at
/// most `0600`, `2750` gives `0640`, `2775` gives `0664`), never writable by others. In a
/// set-group-id folder (a shared workspace folder, see [`crate::access`]) the mode is set
/// exactly, so that a restrictive umask (systemd's `UMask=0027`) cannot take from the group
/// what the model gives it.
pub fn new_file_mode(dir: &Path, requested: u32) -> (u32, bool) {
    match fs::metadata(dir) {
        Ok(m) => {
            let d = m.permissions().mode();
            (requested & d & 0o666 & !0o002, d & 0o2000 != 0)
        }
        Err(_) => (requested & 0o666 & !0o002, false),
    }
}

/// `mkdir -p`, with the path in the error. Each new folder takes its permissions (and
/// set-group-id bit) from its parent, never writable by others; a new folder directly inside a
/// workspace folder is owner-only (`retort access set` gives shared ones their group).
pub fn create_dir_all(path: &Path) -> Result<(), IoError> {
    let err = |p: &Path, e| IoError::new("creating directory", p, e);
    if path.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    for p in missing.into_iter().rev() {
        let parent = p
            .parent()
            .filter(|q| !q.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (mode, exact) = match fs::metadata(parent) {
            Ok(_) if parent.join(CONFIG_FILE).is_file() => (0o700, false),
            Ok(m) => {
                let d = m.permissions().mode();
                (d & 0o2777 & !0o002, d & 0o2000 != 0)
            }
            Err(_) => (0o755, false),
        };
        match fs::DirBuilder::new().mode(mode & 0o777).create(p) {
            Ok(()) => {
                if exact {
                    set_mode(p, mode)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
            Err(e) => return Err(err(p, e)),
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), IoError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| IoError::new("setting permissions on", path, e))
}

/// Check a user-chosen name (dataset, partner, ...): 1-64 chars `[A-Za-z0-9._-]`, first alnum.
///
/// # Errors
/// `name-invalid`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why| {
        Err(Error::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("it must have 1 to 64 characters");
    }
    if !name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return bad("it must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("it may only contain letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// The current time as RFC 3339 UTC with seconds precision and a `Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

/// Format a time as RFC 3339 UTC, seconds precision, `Z` suffix.
pub fn format_rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&fmt).expect("invariant: UTC time formats")
}

/// A fresh random id: `<prefix>-<YYYYMMDD>-<8 hex>`.
pub fn new_id(prefix: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{prefix}-{:04}{:02}{:02}-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        hex(&crate::random::random_bytes::<4>())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files left behind");
    }

    #[test]
    fn atomic_write_mode_sets_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        atomic_write_mode(&p, b"s", 0o600).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"old").unwrap();
        let r = atomic_write_with(&p, 0o644, |f| {
            f.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_then_open_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let ws = Workspace::create(&root, "test-site").unwrap();
        let again = Workspace::open(&root).unwrap();
        assert_eq!(ws.config(), again.config());
        assert!(matches!(
            Workspace::create(&root, "x"),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            Workspace::open(dir.path()),
            Err(Error::NotAWorkspace { .. })
        ));
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&dir.path().join("w"), "s").unwrap();
        let held = ws.lock(Duration::from_millis(10)).unwrap();
        let second = ws.lock(Duration::from_millis(200));
        assert!(matches!(second, Err(Error::Locked { .. })));
        drop(held);
        ws.lock(Duration::from_millis(10)).unwrap();
    }

    #[test]
    fn names() {
        assert!(validate_name("fmnist-1.0_a").is_ok());
        for bad in ["", "-x", "../x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
