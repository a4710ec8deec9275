//! The ledger file on disk: `ledger/<fingerprint>.json`, version 2.
//!
//! The file is a pure function of its records ([`render`]): the same records always give the
//! same bytes, so a ledger can be compared with the content the audit log records byte for
//! byte, and rebuilt from it exactly.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Record;
use crate::error::IoError;

/// The file format version written now.
pub const VERSION: u32 = 2;

/// The lock file serializing every ledger change (taken by writers only).
pub const LOCK_FILE: &str = ".ledger.lock";

/// Where the version-1 files go once migrated (kept as evidence).
pub const MIGRATED_V1_DIR: &str = "migrated-v1";

/// Where a file replaced by `rebuild` goes (kept as evidence).
pub const REPLACED_DIR: &str = "replaced";

/// `ledger/<fingerprint>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerFile {
    /// Format version (2).
    pub version: u32,
    /// The keyed dataset fingerprint (v2) the budget belongs to.
    pub fingerprint: String,
    /// The dataset names that spent from it, in order of first use (derived from the records;
    /// for people and for finding a deleted dataset's history by name).
    pub names: Vec<String>,
    /// The records, oldest first.
    pub records: Vec<Record>,
}

/// The dataset names in `records`, in order of first appearance.
pub fn names_of(records: &[Record]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in records {
        if let Record::Reserve { dataset, .. } = r {
            if !names.contains(dataset) {
                names.push(dataset.clone());
            }
        }
    }
    names
}

/// The exact bytes of the ledger file holding `records`.
pub fn render(fingerprint: &str, records: &[Record]) -> Vec<u8> {
    let f = LedgerFile {
        version: VERSION,
        fingerprint: fingerprint.to_string(),
        names: names_of(records),
        records: records.to_vec(),
    };
    let mut bytes = serde_json::to_vec_pretty(&f).expect("invariant: ledger records serialize");
    bytes.push(b'\n');
    bytes
}

/// The path of the ledger of `fingerprint` in `ledger_dir`.
pub fn path(ledger_dir: &Path, fingerprint: &str) -> PathBuf {
    ledger_dir.join(format!("{fingerprint}.json"))
}

/// Whether `s` looks like a fingerprint: 64 lowercase hex digits.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A ledger file as found on disk.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OnDisk {
    /// No file.
    Missing,
    /// A file that is not a version-2 ledger of this fingerprint.
    Unreadable {
        /// Why.
        why: String,
        /// SHA-256 of its bytes.
        sha256: String,
    },
    /// A parsed file and its bytes.
    Parsed {
        /// The parsed content.
        file: LedgerFile,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

impl OnDisk {
    /// SHA-256 of the file's bytes, if there is a file.
    pub fn sha256(&self) -> Option<String> {
        match self {
            OnDisk::Missing => None,
            OnDisk::Unreadable { sha256, .. } => Some(sha256.clone()),
            OnDisk::Parsed { bytes, .. } => Some(crate::digest::sha256_hex(bytes)),
        }
    }

    /// The bytes (empty when missing or unreadable), to detect a concurrent change.
    pub fn same_as(&self, other: &OnDisk) -> bool {
        self.sha256() == other.sha256()
    }
}

/// Read the ledger of `fingerprint`.
///
/// # Errors
/// I/O other than "not found".
pub fn read(ledger_dir: &Path, fingerprint: &str) -> Result<OnDisk, IoError> {
    let p = path(ledger_dir, fingerprint);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
        Err(e) => return Err(IoError::new("reading", &p, e)),
    };
    let sha256 = crate::digest::sha256_hex(&bytes);
    let unreadable = |why: String| OnDisk::Unreadable {
        why,
        sha256: sha256.clone(),
    };
    let file: LedgerFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => return Ok(unreadable(format!("it does not parse as a ledger: {e}"))),
    };
    if file.version != VERSION {
        return Ok(unreadable(format!("unknown version {}", file.version)));
    }
    if file.fingerprint != fingerprint {
        return Ok(unreadable(format!(
            "it names fingerprint {} but is stored as {fingerprint}",
            file.fingerprint
        )));
    }
    Ok(OnDisk::Parsed { file, bytes })
}

/// Write the ledger of `fingerprint` holding `records` atomically (temp file, fsync, rename,
/// fsync of the directory). Returns the SHA-256 of the bytes written.
///
/// # Errors
/// I/O.
pub(crate) fn write(
    ledger_dir: &Path,
    fingerprint: &str,
    records: &[Record],
) -> Result<String, IoError> {
    crate::workspace::create_dir_all(ledger_dir)?;
    let bytes = render(fingerprint, records);
    crate::workspace::atomic_write_mode(&path(ledger_dir, fingerprint), &bytes, 0o640)?;
    Ok(crate::digest::sha256_hex(&bytes))
}

/// The fingerprints of every version-2 ledger file in `ledger_dir` (by name: 64 hex digits +
/// `.json`), sorted.
///
/// # Errors
/// I/O other than a missing directory.
pub fn list(ledger_dir: &Path) -> Result<Vec<String>, IoError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(ledger_dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(IoError::new("reading", ledger_dir, e)),
    };
    for e in rd {
        let e = e.map_err(|e| IoError::new("reading", ledger_dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".json") {
            if is_fingerprint(stem) && e.path().is_file() {
                out.push(stem.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A version-1 ledger file (`ledger/<dataset>.json`, `"version": 1`).
#[derive(Debug, Clone, Deserialize)]
pub struct V1File {
    /// 1.
    pub version: u32,
    /// The dataset name.
    pub dataset: String,
    /// Its records (without a dataset field).
    pub records: Vec<V1Record>,
}

/// A version-1 record.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum V1Record {
    /// A reservation.
    Reserve {
        /// Run id.
        run: String,
        /// Events.
        events: Vec<crate::dp::DpEvent>,
        /// δ.
        delta: f64,
        /// The run's ε.
        epsilon: f64,
        /// When.
        at: String,
    },
    /// A commit.
    Commit {
        /// Run id.
        run: String,
        /// When.
        at: String,
    },
    /// A cancellation.
    Cancel {
        /// Run id.
        run: String,
        /// When.
        at: String,
    },
}

impl V1Record {
    /// The version-2 record, with the dataset name the version-1 file was kept under.
    pub fn upgrade(self, dataset: &str) -> Record {
        match self {
            V1Record::Reserve {
                run,
                events,
                delta,
                epsilon,
                at,
            } => Record::Reserve {
                run,
                dataset: dataset.to_string(),
                purpose: None,
                events,
                delta,
                epsilon,
                at,
            },
            V1Record::Commit { run, at } => Record::Commit { run, at },
            V1Record::Cancel { run, at } => Record::Cancel { run, at },
        }
    }
}

/// The version-1 ledger files in `ledger_dir`: every `*.json` whose name is not a fingerprint
/// (version 1 kept one file per dataset name), as (name, path), sorted. Whether it really is a
/// version-1 ledger is for the migration to find out (it refuses a file it cannot read).
///
/// # Errors
/// I/O other than a missing directory.
pub fn list_v1(ledger_dir: &Path) -> Result<Vec<(String, PathBuf)>, IoError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(ledger_dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(IoError::new("reading", ledger_dir, e)),
    };
    for e in rd {
        let e = e.map_err(|e| IoError::new("reading", ledger_dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".json") {
            if !stem.starts_with('.') && !is_fingerprint(stem) && e.path().is_file() {
                out.push((stem.to_string(), e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}
