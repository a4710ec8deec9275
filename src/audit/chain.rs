//! Appending to the hash chain: one canonical line per record, one `write`, `fsync`.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::record::{line_hash, NewRecord, Record, GENESIS_PREV};
use super::{Error, Result};
use crate::error::IoError;
use crate::workspace::{lock_file_mode, new_file_mode, now_rfc3339, sync_dir, LockError};

/// Segments are rotated once they pass this size.
pub const SEGMENT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// The audit lock file inside the audit directory.
pub const AUDIT_LOCK: &str = ".audit.lock";

/// The audit log of one workspace.
#[derive(Debug, Clone)]
pub struct AuditLog {
    dir: PathBuf,
}

/// Proof that the audit lock is held (released on drop).
#[derive(Debug)]
pub struct AuditLock {
    _lock: crate::workspace::Lock,
}

/// The head of the chain: what the next record links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Sequence number the next record gets.
    pub next_seq: u64,
    /// SHA-256 of the last line (or 64 zeros).
    pub prev: String,
}

impl AuditLog {
    /// The log in `dir` (the workspace's `audit/`).
    pub fn new(dir: impl Into<PathBuf>) -> AuditLog {
        AuditLog { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Segment files in order.
    ///
    /// # Errors
    /// I/O.
    pub fn segments(&self) -> Result<Vec<PathBuf>> {
        let mut v: Vec<(u64, PathBuf)> = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(IoError::new("reading", &self.dir, e).into()),
        };
        for e in rd {
            let e = e.map_err(|e| IoError::new("reading", &self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("segment-")
                .and_then(|s| s.strip_suffix(".jsonl"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                v.push((n, e.path()));
            }
        }
        v.sort();
        Ok(v.into_iter().map(|(_, p)| p).collect())
    }

    fn segment_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("segment-{n:06}.jsonl"))
    }

    /// Read the chain head from the last non-empty segment.
    ///
    /// # Errors
    /// `audit-tail-damaged` for a torn or unparsable last line; I/O.
    pub fn head(&self) -> Result<Head> {
        for seg in self.segments()?.iter().rev() {
            if let Some(line) = last_line(seg)? {
                let rec: Record =
                    serde_json::from_slice(&line).map_err(|e| Error::DamagedTail {
                        path: seg.clone(),
                        why: format!("last line is not a valid record: {e}"),
                    })?;
                return Ok(Head {
                    next_seq: rec.seq + 1,
                    prev: line_hash(&line),
                });
            }
        }
        Ok(Head {
            next_seq: 0,
            prev: GENESIS_PREV.into(),
        })
    }

    /// Append one record: take the audit lock, link it to the head, write it with one `write`,
    /// `fsync`. Returns the stored record.
    ///
    /// # Errors
    /// `audit-append-failed` if the line cannot be written durably (the caller must then refuse
    /// the action), `audit-tail-damaged`, `audit-locked`.
    pub fn append(&self, rec: NewRecord) -> Result<Record> {
        let lock = self.lock()?;
        self.append_locked(&lock, rec)
    }

    /// Take the audit lock (the one [`AuditLog::append`] takes), creating the directory if
    /// needed. Hold it to append several records or to read a consistent head (checkpoints).
    ///
    /// # Errors
    /// `audit-append-failed` if the directory or lock file cannot be created, `audit-locked`.
    pub fn lock(&self) -> Result<AuditLock> {
        crate::workspace::create_dir_all(&self.dir).map_err(|e| Error::AppendFailed {
            path: e.path,
            source: e.source,
        })?;
        // Shared with the service group where the folder is (see `crate::access`).
        let lock = lock_file_mode(&self.dir.join(AUDIT_LOCK), Duration::from_secs(10), 0o664)
            .map_err(|e| match e {
                LockError::Timeout(_) => Error::Locked,
                LockError::Io(e) => Error::AppendFailed {
                    path: e.path,
                    source: e.source,
                },
            })?;
        Ok(AuditLock { _lock: lock })
    }

    /// Check, without writing anything, that a record could be appended now: the directory
    /// exists, the lock file and the newest segment open for appending, and the last line is
    /// intact. Disk-full cannot be seen without writing; `append` still fails closed on it.
    ///
    /// # Errors
    /// `audit-append-failed` (read-only, permissions, not a directory), `audit-tail-damaged`.
    pub fn check_writable(&self) -> Result<()> {
        let fail = |path: &Path, source| Error::AppendFailed {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(&self.dir).map_err(|e| fail(&self.dir, e))?;
        if !meta.is_dir() {
            return Err(fail(
                &self.dir,
                std::io::Error::other("the audit path is not a directory"),
            ));
        }
        let lock = self.dir.join(AUDIT_LOCK);
        if lock.exists() {
            OpenOptions::new()
                .write(true)
                .open(&lock)
                .map_err(|e| fail(&lock, e))?;
        }
        if let Some(last) = self.segments()?.last() {
            OpenOptions::new()
                .append(true)
                .open(last)
                .map_err(|e| fail(last, e))?;
        }
        self.head().map(drop)
    }

    /// [`AuditLog::append`] while already holding the audit lock.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_locked(&self, _lock: &AuditLock, rec: NewRecord) -> Result<Record> {
        let head = self.head()?;
        let segs = self.segments()?;
        let mut seg_no = segs
            .last()
            .and_then(|p| {
                p.file_name()?
                    .to_str()?
                    .strip_prefix("segment-")?
                    .strip_suffix(".jsonl")?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        let mut path = self.segment_path(seg_no);
        if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) >= SEGMENT_MAX_BYTES {
            seg_no += 1;
            path = self.segment_path(seg_no);
        }
        let record = Record {
            seq: head.next_seq,
            ts: now_rfc3339(),
            actor: rec.actor,
            action: rec.action,
            object: rec.object,
            outcome: rec.outcome,
            reason: rec.reason,
            details: rec.details,
            prev: head.prev,
        };
        let mut line = record.canonical_line().into_bytes();
        line.push(b'\n');
        let created = !path.exists();
        let fail = |source| Error::AppendFailed {
            path: path.clone(),
            source,
        };
        // Appendable by the service group where the folder is shared (see `crate::access`).
        let (mode, exact) = new_file_mode(&self.dir, 0o664);
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(mode)
            .open(&path)
            .map_err(fail)?;
        if created && exact {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(fail)?;
        }
        let len = f.metadata().map_err(fail)?.len();
        let written = f.write_all(&line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // A full disk (or a file-size limit) can take part of the line: cut it off again,
            // so the log never ends in a torn record and the next writer can chain onto it.
            // The record is not written; the caller refuses the action.
            let _ = f.set_len(len);
            let _ = f.sync_data();
            drop(f);
            if created {
                let _ = fs::remove_file(&path);
            }
            return Err(fail(e));
        }
        if created {
            sync_dir(&self.dir).map_err(fail)?;
        }
        Ok(record)
    }
}

/// The last complete line of a file (without `\n`), or `None` for an empty file.
///
/// # Errors
/// `audit-tail-damaged` if the file does not end with `\n` (a torn write).
fn last_line(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut f = fs::File::open(path).map_err(|e| IoError::new("reading", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| IoError::new("reading", path, e))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    let mut chunk = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(chunk);
        f.seek(SeekFrom::Start(start))
            .map_err(|e| IoError::new("reading", path, e))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| IoError::new("reading", path, e))?;
        if buf.last() != Some(&b'\n') {
            return Err(Error::DamagedTail {
                path: path.into(),
                why: "the last line is torn (no final newline)".into(),
            });
        }
        let body = &buf[..buf.len() - 1];
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(Some(body[i + 1..].to_vec())),
            None if start == 0 => return Ok(Some(body.to_vec())),
            None => chunk *= 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;

    fn rec(i: u32) -> NewRecord {
        NewRecord::new("user:t", "test.action", &format!("obj{i}"), Outcome::Ok)
    }

    #[test]
    fn appends_chain_and_continue() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        let a = log.append(rec(0)).unwrap();
        let b = log.append(rec(1)).unwrap();
        assert_eq!(a.seq, 0);
        assert_eq!(a.prev, GENESIS_PREV);
        assert_eq!(b.seq, 1);
        assert_eq!(b.prev, line_hash(a.canonical_line().as_bytes()));
        let text = fs::read_to_string(dir.path().join("segment-000000.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(text.lines().next().unwrap(), a.canonical_line());
    }

    #[test]
    fn torn_tail_refuses_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        log.append(rec(0)).unwrap();
        let p = dir.path().join("segment-000000.jsonl");
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":1,").unwrap();
        assert!(matches!(log.append(rec(1)), Err(Error::DamagedTail { .. })));
    }

    #[test]
    fn preflight_sees_unwritable_and_damaged_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        log.append(rec(0)).unwrap();
        log.check_writable().unwrap();
        fs::remove_file(dir.path().join(AUDIT_LOCK)).unwrap();
        fs::create_dir(dir.path().join(AUDIT_LOCK)).unwrap();
        assert!(matches!(
            log.check_writable(),
            Err(Error::AppendFailed { .. })
        ));
        fs::remove_dir(dir.path().join(AUDIT_LOCK)).unwrap();
        let p = dir.path().join("segment-000000.jsonl");
        OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{")
            .unwrap();
        assert!(matches!(
            log.check_writable(),
            Err(Error::DamagedTail { .. })
        ));
        let missing = AuditLog::new(dir.path().join("nope"));
        assert!(missing.check_writable().is_err());
    }

    #[test]
    fn unwritable_dir_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("audit");
        fs::write(&blocker, b"a file, not a dir").unwrap();
        let log = AuditLog::new(&blocker);
        assert!(matches!(
            log.append(rec(0)),
            Err(Error::AppendFailed { .. })
        ));
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        log.append(rec(t * 100 + i)).unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(dir.path().join("segment-000000.jsonl")).unwrap();
        let mut prev = GENESIS_PREV.to_string();
        for (i, line) in text.lines().enumerate() {
            let r: Record = serde_json::from_str(line).unwrap();
            assert_eq!(r.seq, i as u64);
            assert_eq!(r.prev, prev);
            prev = line_hash(line.as_bytes());
        }
        assert_eq!(text.lines().count(), 100);
    }
}
