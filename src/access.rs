//! Workspace permissions: who may read and write what (for operators: SECURITY.md "Workspace
//! permissions", README "Roles and permissions", docs/operations.md).
//!
//! # Roles
//! - **The owner** (the operator): the uid that owns the workspace folder. Only the owner
//!   ingests, distills, packages and changes the workspace.
//! - **The compliance group** (`retort init --compliance-group G`, `[access]
//!   compliance_group` in `retort.toml`): may enter the workspace and read the audit log, its
//!   checkpoints, the ledger, the policy, the config and the packages; may not write the audit
//!   log, so its `audit verify|show|report` and `budget` run unlogged and say so.
//! - **The service group** (`--service-group S`): the group of the service user that runs
//!   `retort serve`; may append to the audit log, sign checkpoints (it reads the audit key, no
//!   other key) and read what the compliance group reads. When both groups are set, the
//!   service user must also be a member of the compliance group (it enters the workspace
//!   through it); the owner must be a member of both (or root) to give files those groups.
//! - **Everybody else**: nothing.
//!
//! # The model ([`want`]; R = the compliance group, else the service group)
//! | area ([`Area`]) | folders | files |
//! |---|---|---|
//! | the workspace folder | R `2750` (no group: `0700`) | — |
//! | private: `datasets/`, `runs/` (real pixels, non-private evaluations, contact sheets) and anything unknown | `0700` | `0600` |
//! | `keys/` | S `2750` (no service group: `0700`) | `0600`; the audit key S `0640` |
//! | shared: `retort.toml`, `policies/`, `ledger/`, `packages/` | R `2750` | R `0640` |
//! | `audit/`, `audit/checkpoints/` | S `2775` with both groups (S `2770` service only, C `2750` compliance only) | `0664` / `0660` / `0640` |
//!
//! With both groups the audit files are readable through their "other" bits: the workspace
//! folder (group C, no access for others) is the gate, so "other" there means the compliance
//! group and the service user, never everybody. A folder with the set-group-id bit gives every
//! file created in it its group; [`crate::workspace::atomic_write`] gives new files the
//! permissions of their folder (a `0700` folder: `0600`, `2750`: `0640`), so every write path
//! follows the model once the folders do.
//!
//! # Guarantees
//! - `init` creates the workspace in this model ([`create_layout`]).
//! - [`check`] finds private data readable beyond its owner (a dataset file `0644`, a run
//!   folder `0755`, a key `0644`); the CLI warns once per command, and the owner's commands
//!   [`tighten`] it (only ever removing permissions), audited.
//! - [`apply`] sets the whole tree to the model (groups and modes, both ways) — an explicit,
//!   audited operator action (`retort access set`), never automatic.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Class, Coded, IoError};
use crate::identity::{self, Identity};

/// Access errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A group named in `--compliance-group`, `--service-group` or `[access]` does not exist.
    #[error("the {role} group {name:?} does not exist on this host")]
    UnknownGroup {
        /// "compliance" or "service".
        role: &'static str,
        /// The name given.
        name: String,
    },
    /// The compliance and service groups are the same group.
    #[error("the compliance group and the service group are both {name:?}")]
    SameGroups {
        /// The group.
        name: String,
    },
    /// Only the workspace's owner may change its permissions.
    #[error("{path} belongs to {owner}; only its owner may change its permissions")]
    NotOwner {
        /// The workspace folder.
        path: PathBuf,
        /// The owner's name.
        owner: String,
    },
    /// A file's group cannot be set.
    #[error("cannot give {path} the group {group}: {source}")]
    Chown {
        /// The file or folder.
        path: PathBuf,
        /// The group.
        group: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file-system error.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "access-group-unknown",
        "access-groups-same",
        "access-not-owner",
        "access-chown-failed",
        "access-io",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::UnknownGroup { .. } => "access-group-unknown",
            Error::SameGroups { .. } => "access-groups-same",
            Error::NotOwner { .. } => "access-not-owner",
            Error::Chown { .. } => "access-chown-failed",
            Error::Io(_) => "access-io",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::UnknownGroup { name, .. } => format!(
                "create it first (`groupadd --system {name}`) or give an existing group name or number"
            ),
            Error::SameGroups { .. } => "use two groups: members of the service group may write the audit log, compliance officers must not be able to".into(),
            Error::NotOwner { owner, .. } => format!(
                "run it as {owner} (e.g. `sudo -u {owner} retort …`; the audit log records who logged in)"
            ),
            Error::Chown { group, .. } => format!(
                "the workspace owner must be a member of {group} (`usermod -aG {group} $USER`, then log in again), or run the command as root"
            ),
            Error::Io(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        Class::Input
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `[access]` table of `retort.toml`: the groups, by name (or number).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The compliance group (reads the audit log, ledger, policy, packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance_group: Option<String>,
    /// The service group (the user running `retort serve`: appends to the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_group: Option<String>,
}

impl Access {
    /// No group: the workspace is the owner's alone.
    pub fn is_empty(&self) -> bool {
        self.compliance_group.is_none() && self.service_group.is_none()
    }
}

/// The groups as gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Groups {
    /// The compliance group.
    pub compliance: Option<u32>,
    /// The service group.
    pub service: Option<u32>,
}

impl Groups {
    /// Resolve the names of `access` on this host.
    ///
    /// # Errors
    /// `access-group-unknown`, `access-groups-same`.
    pub fn resolve(access: &Access) -> Result<Groups> {
        let one = |role: &'static str, name: &Option<String>| -> Result<Option<u32>> {
            name.as_deref()
                .map(|n| {
                    identity::group_id(n).ok_or_else(|| Error::UnknownGroup {
                        role,
                        name: n.into(),
                    })
                })
                .transpose()
        };
        let g = Groups {
            compliance: one("compliance", &access.compliance_group)?,
            service: one("service", &access.service_group)?,
        };
        if let (Some(c), Some(s)) = (g.compliance, g.service) {
            if c == s {
                return Err(Error::SameGroups {
                    name: identity::group_name(c),
                });
            }
        }
        Ok(g)
    }

    /// The group that may enter the workspace and read what is shared.
    pub fn reader(&self) -> Option<u32> {
        self.compliance.or(self.service)
    }
}

/// The parts of a workspace, by who may use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Area {
    /// The workspace folder itself.
    Root,
    /// Owner only: datasets, runs, the workspace lock, anything Retort does not know.
    Private,
    /// `keys/` and the keys in it other than the audit key.
    Keys,
    /// `keys/audit.key.pem` (the service user signs checkpoints with it).
    AuditKey,
    /// Config, policies, ledger, packages.
    Shared,
    /// The audit log and its checkpoints.
    Audit,
}

impl Area {
    /// The area of a path relative to the workspace folder.
    pub fn of(rel: &Path) -> Area {
        let mut c = rel.components().map(|c| c.as_os_str().to_string_lossy());
        let Some(first) = c.next() else {
            return Area::Root;
        };
        match first.as_ref() {
            "keys" => match c.next() {
                Some(n) if n == "audit.key.pem" => Area::AuditKey,
                _ => Area::Keys,
            },
            "retort.toml" | "policies" | "ledger" | "packages" => Area::Shared,
            "audit" => Area::Audit,
            _ => Area::Private,
        }
    }

    /// Areas holding private data or secrets: what [`check`] looks at.
    pub fn is_private(self) -> bool {
        matches!(self, Area::Private | Area::Keys | Area::AuditKey)
    }
}

/// What the model wants for a path: its group (`None`: any, no group bits) and mode (with the
/// set-group-id bit for shared folders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The group, when the mode grants it anything.
    pub gid: Option<u32>,
    /// The permission bits (and `0o2000` for folders whose files inherit the group).
    pub mode: u32,
}

/// The model (see the module docs).
pub fn want(area: Area, dir: bool, g: &Groups) -> Want {
    let owner = Want {
        gid: None,
        mode: if dir { 0o700 } else { 0o600 },
    };
    let grouped = |gid: Option<u32>, dir_mode: u32| match gid {
        None => owner,
        Some(gid) => Want {
            gid: Some(gid),
            mode: if dir {
                0o2000 | dir_mode
            } else {
                dir_mode & 0o666
            },
        },
    };
    match area {
        Area::Private => owner,
        Area::Root => match g.reader() {
            None => owner,
            Some(r) => Want {
                gid: Some(r),
                mode: if dir { 0o2750 } else { 0o640 },
            },
        },
        Area::Shared => grouped(g.reader(), 0o750),
        Area::Keys if dir => grouped(g.service, 0o750),
        Area::Keys => owner,
        Area::AuditKey => grouped(g.service, 0o750),
        Area::Audit => match (g.service, g.compliance) {
            (Some(s), Some(_)) => grouped(Some(s), 0o775),
            (Some(s), None) => grouped(Some(s), 0o770),
            (None, c) => grouped(c, 0o750),
        },
    }
}

/// One deviation from the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Relative to the workspace folder.
    pub path: PathBuf,
    /// Its area.
    pub area: Area,
    /// A folder.
    pub dir: bool,
    /// Its mode now (permission and special bits).
    pub mode: u32,
    /// Its group now.
    pub gid: u32,
    /// What the model wants.
    pub want: Want,
    /// Permission bits it grants beyond the model (0: none).
    pub wider: u32,
    /// Permission bits of the model it lacks (0: none).
    pub narrower: u32,
    /// It grants group permissions to a group other than the model's.
    pub wrong_group: bool,
}

impl Finding {
    /// Whether someone the model excludes can use it.
    pub fn is_wider(&self) -> bool {
        self.wider != 0 || self.wrong_group
    }

    /// `datasets/x/train.bin (0644, group staff)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:04o}{})",
            self.path.display(),
            self.mode & 0o7777,
            if self.wrong_group {
                format!(", group {}", identity::group_name(self.gid))
            } else {
                String::new()
            }
        )
    }
}

/// Which parts [`check`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Private data and keys (`datasets/`, `runs/`, `keys/`): cheap, every command.
    Private,
    /// The whole workspace (`retort access show`).
    All,
}

/// What a walk could not look into (a folder this user may not read: the model working).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// The deviations found.
    pub findings: Vec<Finding>,
    /// Folders this user could not list, relative to the workspace folder.
    pub unreadable: Vec<PathBuf>,
}

impl Checked {
    /// The findings that grant more than the model.
    pub fn wider(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_wider())
    }
}

/// Compare the workspace at `root` with the model. Reads metadata only; folders this user
/// cannot list are skipped (and reported in [`Checked::unreadable`]); symbolic links are not
/// followed.
///
/// # Errors
/// Only when `root` itself cannot be read.
pub fn check(root: &Path, g: &Groups, scope: Scope) -> Result<Checked> {
    let mut out = Checked::default();
    let top: Vec<PathBuf> = match scope {
        Scope::Private => ["datasets", "runs", "keys"]
            .iter()
            .map(PathBuf::from)
            .collect(),
        Scope::All => {
            let mut v = vec![PathBuf::new()];
            let rd = fs::read_dir(root).map_err(|e| IoError::new("reading", root, e))?;
            for e in rd.flatten() {
                v.push(PathBuf::from(e.file_name()));
            }
            v.sort();
            v
        }
    };
    for rel in top {
        walk(
            root,
            &rel,
            g,
            scope == Scope::All && rel.as_os_str().is_empty(),
            &mut out,
        );
    }
    Ok(out)
}

fn walk(root: &Path, rel: &Path, g: &Groups, only_self: bool, out: &mut Checked) {
    let path = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let dir = meta.is_dir();
    let area = Area::of(rel);
    if let Some(f) = compare(rel, area, dir, &meta, g) {
        out.findings.push(f);
    }
    if !dir || only_self {
        return;
    }
    match fs::read_dir(&path) {
        Ok(rd) => {
            let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), g, false, out);
            }
        }
        Err(_) => out.unreadable.push(rel.to_path_buf()),
    }
}

fn compare(rel: &Path, area: Area, dir: bool, meta: &fs::Metadata, g: &Groups) -> Option<Finding> {
    let w = want(area, dir, g);
    let mode = meta.mode() & 0o7777;
    let perm = mode & 0o777;
    let wider = perm & !w.mode & 0o777;
    let narrower = w.mode & 0o777 & !perm;
    let wrong_group = perm & 0o070 != 0 && w.gid.is_some_and(|gid| gid != meta.gid());
    let setgid_missing = dir && w.mode & 0o2000 != 0 && mode & 0o2000 == 0;
    (wider != 0 || narrower != 0 || wrong_group || setgid_missing).then(|| Finding {
        path: rel.to_path_buf(),
        area,
        dir,
        mode,
        gid: meta.gid(),
        want: w,
        wider,
        narrower,
        wrong_group,
    })
}

/// A permission change made by [`tighten`] or [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Relative to the workspace folder.
    pub path: PathBuf,
    /// Mode before.
    pub from: u32,
    /// Mode after.
    pub to: u32,
    /// The new group, when it changed.
    pub group: Option<u32>,
}

impl Change {
    /// `datasets/x/train.bin 0644 -> 0600`.
    pub fn describe(&self) -> String {
        format!(
            "{} {:04o} -> {:04o}{}",
            self.path.display(),
            self.from,
            self.to,
            self.group.map_or(String::new(), |g| format!(
                " (group {})",
                identity::group_name(g)
            ))
        )
    }
}

/// Remove the permissions of `findings` that go beyond the model (never adds any): the bits
/// the model does not grant, and the group bits of a path whose group is not the model's.
///
/// # Errors
/// `access-io` when a mode cannot be changed (the paths changed before stay changed).
pub fn tighten(root: &Path, findings: &[Finding]) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for f in findings.iter().filter(|f| f.is_wider()) {
        let mut to = f.mode & !f.wider;
        if f.wrong_group {
            to &= !0o070;
        }
        let path = root.join(&f.path);
        fs::set_permissions(&path, fs::Permissions::from_mode(to))
            .map_err(|e| IoError::new("setting permissions on", &path, e))?;
        changes.push(Change {
            path: f.path.clone(),
            from: f.mode,
            to,
            group: None,
        });
    }
    Ok(changes)
}

/// Set every path of the workspace to the model: its group (where the model gives one) and
/// exactly the model's mode. Only the owner (or root) may.
///
/// # Errors
/// `access-not-owner`, `access-chown-failed`, `access-io`.
pub fn apply(root: &Path, g: &Groups) -> Result<Vec<Change>> {
    require_owner(root)?;
    let mut all = Checked::default();
    walk_all(root, Path::new(""), g, &mut all);
    if let Some(p) = all.unreadable.first() {
        let path = root.join(p);
        return Err(IoError::new(
            "reading",
            &path,
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        )
        .into());
    }
    let mut changes = Vec::new();
    for f in &all.findings {
        let path = root.join(&f.path);
        changes.push(set(&path, &f.path, f.mode, f.gid, f.want)?);
    }
    Ok(changes)
}

/// Every path, including the ones that match (so [`apply`] sees the groups of all).
fn walk_all(root: &Path, rel: &Path, g: &Groups, out: &mut Checked) {
    let path = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let dir = meta.is_dir();
    let area = Area::of(rel);
    let w = want(area, dir, g);
    let needs_group = w.gid.is_some_and(|gid| gid != meta.gid());
    if needs_group || meta.mode() & 0o7777 != w.mode {
        out.findings.push(Finding {
            path: rel.to_path_buf(),
            area,
            dir,
            mode: meta.mode() & 0o7777,
            gid: meta.gid(),
            want: w,
            wider: 0,
            narrower: 0,
            wrong_group: needs_group,
        });
    }
    if dir {
        match fs::read_dir(&path) {
            Ok(rd) => {
                let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
                names.sort();
                for n in names {
                    walk_all(root, &rel.join(n), g, out);
                }
            }
            Err(_) => out.unreadable.push(rel.to_path_buf()),
        }
    }
}

fn set(path: &Path, rel: &Path, mode: u32, gid: u32, w: Want) -> Result<Change> {
    let mut group = None;
    if let Some(g) = w.gid.filter(|&g| g != gid) {
        std::os::unix::fs::lchown(path, None, Some(g)).map_err(|source| Error::Chown {
            path: path.to_path_buf(),
            group: identity::group_name(g),
            source,
        })?;
        group = Some(g);
    }
    // chown may clear the set-group-id bit: set the mode after it.
    fs::set_permissions(path, fs::Permissions::from_mode(w.mode))
        .map_err(|e| IoError::new("setting permissions on", path, e))?;
    Ok(Change {
        path: rel.to_path_buf(),
        from: mode,
        to: w.mode,
        group,
    })
}

/// Give a folder (or file) Retort is creating its place in the model: `rel` is its path
/// relative to the workspace folder.
///
/// # Errors
/// `access-chown-failed`, `access-io`.
pub fn place(root: &Path, rel: &Path, g: &Groups) -> Result<()> {
    let path = root.join(rel);
    let meta = fs::symlink_metadata(&path).map_err(|e| IoError::new("reading", &path, e))?;
    let w = want(Area::of(rel), meta.is_dir(), g);
    set(&path, rel, meta.mode() & 0o7777, meta.gid(), w).map(drop)
}

/// Whether this process is the workspace's owner (its effective uid owns the folder).
pub fn is_owner(root: &Path) -> bool {
    let uid = Identity::current().uid;
    fs::metadata(root).is_ok_and(|m| Some(m.uid()) == uid)
}

/// The owner's name of the workspace folder.
pub fn owner_name(root: &Path) -> Option<String> {
    fs::metadata(root)
        .ok()
        .map(|m| identity::user_name(m.uid()))
}

fn require_owner(root: &Path) -> Result<()> {
    if is_owner(root) {
        return Ok(());
    }
    Err(Error::NotOwner {
        path: root.to_path_buf(),
        owner: owner_name(root).unwrap_or_else(|| "its owner".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Groups = Groups {
        compliance: Some(2002),
        service: Some(2001),
    };

    #[test]
    fn areas() {
        for (p, a) in [
            ("", Area::Root),
            ("datasets/x/train.bin", Area::Private),
            ("runs", Area::Private),
            ("somethingelse", Area::Private),
            (".retort.lock", Area::Private),
            ("keys", Area::Keys),
            ("keys/package.key.pem", Area::Keys),
            ("keys/audit.key.pem", Area::AuditKey),
            ("retort.toml", Area::Shared),
            ("ledger/abc.json", Area::Shared),
            ("packages/p/data/synthetic.parquet", Area::Shared),
            ("audit/checkpoints/state.json", Area::Audit),
        ] {
            assert_eq!(Area::of(Path::new(p)), a, "{p}");
        }
    }

    #[test]
    fn the_model() {
        let none = Groups::default();
        let w = |a, d, g: &Groups| {
            let w = want(a, d, g);
            (w.gid, w.mode)
        };
        // Owner only without groups.
        for a in [
            Area::Root,
            Area::Private,
            Area::Keys,
            Area::AuditKey,
            Area::Shared,
            Area::Audit,
        ] {
            assert_eq!(w(a, true, &none), (None, 0o700));
            assert_eq!(w(a, false, &none), (None, 0o600));
        }
        assert_eq!(w(Area::Root, true, &BOTH), (Some(2002), 0o2750));
        assert_eq!(w(Area::Private, false, &BOTH), (None, 0o600));
        assert_eq!(w(Area::Shared, false, &BOTH), (Some(2002), 0o640));
        assert_eq!(w(Area::Keys, true, &BOTH), (Some(2001), 0o2750));
        assert_eq!(w(Area::Keys, false, &BOTH), (None, 0o600));
        assert_eq!(w(Area::AuditKey, false, &BOTH), (Some(2001), 0o640));
        assert_eq!(w(Area::Audit, true, &BOTH), (Some(2001), 0o2775));
        assert_eq!(w(Area::Audit, false, &BOTH), (Some(2001), 0o664));
        let service = Groups {
            service: Some(2001),
            compliance: None,
        };
        assert_eq!(w(Area::Root, true, &service), (Some(2001), 0o2750));
        assert_eq!(w(Area::Audit, false, &service), (Some(2001), 0o660));
        let comp = Groups {
            compliance: Some(2002),
            service: None,
        };
        assert_eq!(w(Area::Audit, true, &comp), (Some(2002), 0o2750));
        assert_eq!(w(Area::Audit, false, &comp), (Some(2002), 0o640));
        assert_eq!(w(Area::AuditKey, false, &comp), (None, 0o600));
        // Private data never grants anything to a group or others, whatever the groups.
        for g in [none, BOTH, service, comp] {
            for d in [true, false] {
                assert_eq!(want(Area::Private, d, &g).mode & 0o077, 0);
            }
        }
    }

    #[test]
    fn check_finds_private_data_readable_beyond_the_owner_and_tighten_removes_only_that() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("datasets/x")).unwrap();
        fs::create_dir_all(root.join("runs")).unwrap();
        fs::create_dir_all(root.join("keys")).unwrap();
        let mode = |p: &str, m: u32| {
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap()
        };
        fs::write(root.join("datasets/x/train.bin"), b"pixels").unwrap();
        fs::write(root.join("datasets/x/dataset.json"), b"{}").unwrap();
        mode("datasets", 0o755);
        mode("datasets/x", 0o700);
        mode("datasets/x/train.bin", 0o644);
        mode("datasets/x/dataset.json", 0o400);
        mode("runs", 0o700);
        mode("keys", 0o700);
        let c = check(root, &Groups::default(), Scope::Private).unwrap();
        let wide: Vec<String> = c.wider().map(|f| f.describe()).collect();
        assert_eq!(wide, vec!["datasets (0755)", "datasets/x/train.bin (0644)"]);
        let changes = tighten(root, &c.findings).unwrap();
        assert_eq!(changes.len(), 2);
        let m = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(m("datasets"), 0o700);
        assert_eq!(m("datasets/x/train.bin"), 0o600);
        // Never loosened: a file the operator made stricter stays so.
        assert_eq!(m("datasets/x/dataset.json"), 0o400);
        assert_eq!(
            check(root, &Groups::default(), Scope::Private)
                .unwrap()
                .wider()
                .count(),
            0
        );
    }

    #[test]
    fn a_group_bit_for_another_group_is_wider() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("keys")).unwrap();
        fs::write(root.join("keys/audit.key.pem"), b"k").unwrap();
        fs::set_permissions(root.join("keys"), fs::Permissions::from_mode(0o2750)).unwrap();
        fs::set_permissions(
            root.join("keys/audit.key.pem"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let gid = fs::metadata(root).unwrap().gid();
        let other = Groups {
            service: Some(gid.wrapping_add(1)),
            compliance: None,
        };
        let c = check(root, &other, Scope::Private).unwrap();
        assert!(c.findings.iter().all(|f| f.wrong_group), "{c:?}");
        let same = Groups {
            service: Some(gid),
            compliance: None,
        };
        assert_eq!(
            check(root, &same, Scope::Private).unwrap().wider().count(),
            0
        );
    }

    #[test]
    fn codes_are_prefixed() {
        assert!(Error::CODES.iter().all(|c| c.starts_with("access-")));
    }
}
