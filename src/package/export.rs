//! Reading packages safely (a directory or a tar) into a [`Snapshot`], and writing the plain
//! POSIX tar of a package.
//!
//! A package given to `verify` is fully adversarial input (SECURITY.md). The readers:
//! - accept only regular files and directories: symlinks, hard links, devices, FIFOs, GNU/pax
//!   extension headers and sparse files are refused (Retort's tars use none of them);
//! - accept only safe relative paths (no absolute paths, `..`, empty or `.` components,
//!   backslashes, control characters; at most [`Limits::max_depth`] components);
//! - refuse duplicate paths in a tar (a later member would silently replace an earlier one);
//! - enforce [`Limits`] on the number of entries, each file's size, the total size and the size
//!   of the small metadata files kept in memory; sizes are checked from the header before any
//!   byte is read, and data files are hashed as they stream, never held in memory;
//! - never write anything: a tar is read, not unpacked.
//!
//! The verifier then works only on the snapshot, so every file is read exactly once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::IoError;

/// Size limits for reading a package.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most files and directories.
    pub max_entries: usize,
    /// Largest single file, bytes.
    pub max_file: u64,
    /// Largest total of all files, bytes.
    pub max_total: u64,
    /// Largest metadata file kept in memory (envelope, sums, keys, report, checkpoint), bytes.
    pub max_meta: u64,
    /// Deepest path, in components (after stripping a tar's top-level directory).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 256,
            max_file: 16 << 30,
            max_total: 32 << 30,
            max_meta: 16 << 20,
            max_depth: 8,
        }
    }
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// The content, for the metadata files a verifier parses.
    pub content: Option<Vec<u8>>,
}

/// A package as read: relative path → file. Directories are implied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The files, by relative path (forward slashes).
    pub files: BTreeMap<String, FileEntry>,
}

impl Snapshot {
    /// A snapshot of in-memory files (every content kept).
    pub fn from_memory(files: &BTreeMap<String, Vec<u8>>) -> Snapshot {
        Snapshot {
            files: files
                .iter()
                .map(|(p, b)| {
                    (
                        p.clone(),
                        FileEntry {
                            size: b.len() as u64,
                            sha256: crate::digest::sha256_hex(b),
                            content: Some(b.clone()),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The content of a metadata file, if present.
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path)?.content.as_deref()
    }
}

/// Why a package could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The path could not be read (missing, permissions): the user's input, not the package.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The package itself is unsafe or malformed.
    #[error("{0}")]
    Unsafe(String),
    /// A compressed file that is not gzip (xz, zstd, bzip2): the user's input, not the package.
    #[error("{} is {format}-compressed, not a tar file", path.display())]
    Compressed {
        /// The file.
        path: std::path::PathBuf,
        /// `xz`, `zstd` or `bzip2`.
        format: &'static str,
    },
}

/// The compression a file's first bytes show: `gzip`, `xz`, `zstd`, `bzip2`, or `None`.
pub fn compression_of(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some("xz")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

/// Files whose content a verifier needs (kept in memory, subject to [`Limits::max_meta`]).
pub fn is_meta_file(path: &str) -> bool {
    matches!(
        path,
        super::PROVENANCE
            | super::SUMS
            | super::SUMS_SIG
            | super::PUB_PEM
            | super::PUB_SIGNIFY
            | super::PRIVACY_REPORT
            | super::CHECKPOINT
    )
}

/// True for a safe relative path: `/`-separated, non-empty components, none `.` or `..`, no
/// backslash, NUL or control characters, at most 255 bytes.
pub fn safe_rel_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 255
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !p.chars().any(|c| c == '\\' || c.is_control())
}

/// Read a package directory, tar file or gzipped tar file (`.tar.gz`, read as a stream under
/// the same limits: nothing is unpacked to disk) into a snapshot.
///
/// # Errors
/// [`ReadError::Io`] when `path` cannot be opened; [`ReadError::Compressed`] for an xz, zstd
/// or bzip2 file; [`ReadError::Unsafe`] for anything the package itself does wrong.
pub fn read_package(path: &Path, limits: &Limits) -> Result<Snapshot, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| IoError::new("reading", path, e))?;
    if meta.is_dir() {
        read_dir(path, limits)
    } else if meta.is_file() {
        use std::io::BufRead;
        let f = File::open(path).map_err(|e| IoError::new("opening", path, e))?;
        let mut r = std::io::BufReader::new(f);
        let head = r
            .fill_buf()
            .map_err(|e| IoError::new("reading", path, e))?
            .to_vec();
        match compression_of(&head) {
            None => read_tar(r, limits),
            Some("gzip") => read_tar(
                std::io::BufReader::new(flate2::bufread::GzDecoder::new(r)),
                limits,
            ),
            Some(format) => Err(ReadError::Compressed {
                path: path.into(),
                format,
            }),
        }
    } else {
        Err(ReadError::Unsafe(format!(
            "{} is neither a directory nor a tar file",
            path.display()
        )))
    }
}

/// Hash (and optionally keep) up to `size` bytes from `r`; fails if the stream is shorter.
fn ingest(r: &mut impl Read, size: u64, keep: bool) -> std::io::Result<(String, Option<Vec<u8>>)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut kept = keep.then(|| Vec::with_capacity(size.min(1 << 20) as usize));
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than its recorded size",
            ));
        }
        ctx.update(&buf[..n]);
        if let Some(k) = &mut kept {
            k.extend_from_slice(&buf[..n]);
        }
        left -= n as u64;
    }
    Ok((crate::digest::hex(ctx.finish().as_ref()), kept))
}

struct Budget<'a> {
    limits: &'a Limits,
    entries: usize,
    total: u64,
    kept: u64,
}

impl Budget<'_> {
    fn admit(&mut self, rel: &str, size: u64) -> Result<bool, ReadError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ReadError::Unsafe(format!(
                "more than {} entries; a package has about ten",
                self.limits.max_entries
            )));
        }
        if rel.split('/').count() > self.limits.max_depth {
            return Err(ReadError::Unsafe(format!("{rel}: path too deep")));
        }
        let keep = is_meta_file(rel);
        let cap = if keep {
            self.limits.max_meta
        } else {
            self.limits.max_file
        };
        if size > cap {
            return Err(ReadError::Unsafe(format!(
                "{rel}: {size} bytes is over the limit of {cap} bytes for this file"
            )));
        }
        if keep {
            // All metadata files together stay under one metadata limit (memory bound).
            self.kept = self.kept.saturating_add(size);
            if self.kept > self.limits.max_meta {
                return Err(ReadError::Unsafe(format!(
                    "the metadata files together exceed {} bytes",
                    self.limits.max_meta
                )));
            }
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_total {
            return Err(ReadError::Unsafe(format!(
                "the package is over the total size limit of {} bytes",
                self.limits.max_total
            )));
        }
        Ok(keep)
    }
}

fn read_dir(root: &Path, limits: &Limits) -> Result<Snapshot, ReadError> {
    let mut snap = Snapshot::default();
    let mut budget = Budget {
        limits,
        entries: 0,
        total: 0,
        kept: 0,
    };
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| IoError::new("reading", &dir, e))?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|e| IoError::new("reading", &dir, e))?;
            names.push(e.file_name());
        }
        names.sort();
        for name in names {
            let name_s = name.to_str().ok_or_else(|| {
                ReadError::Unsafe(format!("{}: a file name is not UTF-8", dir.display()))
            })?;
            let rel = if prefix.is_empty() {
                name_s.to_string()
            } else {
                format!("{prefix}/{name_s}")
            };
            if !safe_rel_path(&rel) {
                return Err(ReadError::Unsafe(format!("unsafe file name {rel:?}")));
            }
            let p = dir.join(&name);
            let md = std::fs::symlink_metadata(&p).map_err(|e| IoError::new("reading", &p, e))?;
            let ft = md.file_type();
            if ft.is_symlink() {
                return Err(ReadError::Unsafe(format!(
                    "{rel} is a symbolic link; packages hold regular files only"
                )));
            } else if ft.is_dir() {
                budget.admit(&rel, 0)?;
                stack.push((p, rel));
            } else if ft.is_file() {
                let keep = budget.admit(&rel, md.len())?;
                let mut f = File::open(&p).map_err(|e| IoError::new("opening", &p, e))?;
                // The file opened must be the one inspected (no swap for a link in between).
                let fm = f.metadata().map_err(|e| IoError::new("reading", &p, e))?;
                if !fm.is_file() || fm.len() != md.len() {
                    return Err(ReadError::Unsafe(format!("{rel} changed while being read")));
                }
                let (sha256, content) =
                    ingest(&mut f, md.len(), keep).map_err(|e| IoError::new("reading", &p, e))?;
                snap.files.insert(
                    rel,
                    FileEntry {
                        size: md.len(),
                        sha256,
                        content,
                    },
                );
            } else {
                return Err(ReadError::Unsafe(format!(
                    "{rel} is not a regular file or directory (device, FIFO or socket)"
                )));
            }
        }
    }
    Ok(snap)
}

/// Read a tar stream (members are never written to disk). A single top-level directory that
/// holds everything (what `--tar` writes: `<package-id>/…`) is stripped.
///
/// # Errors
/// [`ReadError::Unsafe`] for unsafe or malformed archives.
pub fn read_tar(r: impl Read, limits: &Limits) -> Result<Snapshot, ReadError> {
    let unsafe_ = |s: String| ReadError::Unsafe(s);
    let mut ar = tar::Archive::new(r);
    let entries = ar
        .entries()
        .map_err(|e| unsafe_(format!("not a tar archive: {e}")))?
        .raw(true);
    let mut files: Vec<(String, FileEntry)> = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut budget = Budget {
        limits,
        entries: 0,
        total: 0,
        kept: 0,
    };
    for entry in entries {
        let mut entry = entry.map_err(|e| unsafe_(format!("malformed tar: {e}")))?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let name =
            String::from_utf8(raw).map_err(|_| unsafe_("a member name is not UTF-8".into()))?;
        let name = name.strip_prefix("./").unwrap_or(&name);
        let is_dir = kind.is_dir();
        let name = if is_dir {
            name.strip_suffix('/').unwrap_or(name)
        } else {
            name
        };
        if name.is_empty() || name == "." {
            continue;
        }
        if !safe_rel_path(name) {
            return Err(unsafe_(format!(
                "member {name:?} has an unsafe path (absolute, `..`, or odd characters)"
            )));
        }
        if is_dir {
            budget.admit(name, 0)?;
            dirs.push(name.to_string());
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = entry
                .header()
                .size()
                .map_err(|e| unsafe_(format!("{name}: bad size field: {e}")))?;
            // The keep decision uses the path after stripping, which is not known yet:
            // keep every small file, hash everything.
            let rel_guess = name.split_once('/').map(|(_, r)| r).unwrap_or(name);
            let keep = budget.admit(rel_guess, size)? || is_meta_file(name);
            if keep && size > limits.max_meta {
                return Err(unsafe_(format!(
                    "{name}: metadata file over {} bytes",
                    limits.max_meta
                )));
            }
            let (sha256, content) = ingest(&mut entry, size, keep)
                .map_err(|e| unsafe_(format!("{name}: truncated or unreadable: {e}")))?;
            files.push((
                name.to_string(),
                FileEntry {
                    size,
                    sha256,
                    content,
                },
            ));
        } else {
            let what = match kind {
                tar::EntryType::Symlink => "a symbolic link",
                tar::EntryType::Link => "a hard link",
                tar::EntryType::Char | tar::EntryType::Block => "a device",
                tar::EntryType::Fifo => "a FIFO",
                tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
                | tar::EntryType::XHeader
                | tar::EntryType::XGlobalHeader => {
                    "an extension header (GNU/pax), which Retort packages do not use"
                }
                tar::EntryType::GNUSparse => "a sparse file",
                _ => "an unknown member type",
            };
            return Err(unsafe_(format!("member {name:?} is {what}; refused")));
        }
    }
    // Strip one top-level directory if every member lives under it.
    let top = files
        .first()
        .and_then(|(n, _)| n.split_once('/'))
        .map(|(t, _)| t.to_string());
    let strip = top.filter(|t| {
        files.iter().all(|(n, _)| n.starts_with(&format!("{t}/")))
            && dirs
                .iter()
                .all(|d| d == t || d.starts_with(&format!("{t}/")))
    });
    let mut snap = Snapshot::default();
    for (n, f) in files {
        let rel = match &strip {
            Some(t) => n[t.len() + 1..].to_string(),
            None => n,
        };
        if rel.split('/').count() > limits.max_depth {
            return Err(unsafe_(format!("{rel}: path too deep")));
        }
        let mut f = f;
        if !is_meta_file(&rel) {
            f.content = None;
        }
        if snap.files.insert(rel.clone(), f).is_some() {
            return Err(unsafe_(format!(
                "{rel} appears twice in the tar (a later copy would replace the first on unpacking)"
            )));
        }
    }
    Ok(snap)
}

/// Write a package directory as a plain, deterministic POSIX (ustar) tar under a top-level
/// directory `prefix`: members sorted, mode 0644/0755, uid/gid 0, no user names, `mtime` for
/// every member. Only regular files and directories are written.
///
/// # Errors
/// I/O errors (reading the package, writing the tar), and a name too long for ustar.
pub fn write_tar<W: Write>(dir: &Path, prefix: &str, mtime: u64, out: W) -> std::io::Result<W> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    collect(dir, "", &mut files, &mut dirs)?;
    let mut b = tar::Builder::new(out);
    let header = |path: &str, size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_path(path)?;
        h.set_cksum();
        Ok::<_, std::io::Error>(h)
    };
    b.append(
        &header(&format!("{prefix}/"), 0, 0o755, tar::EntryType::Directory)?,
        std::io::empty(),
    )?;
    let mut all: Vec<(String, bool)> = dirs.into_iter().map(|d| (d, true)).collect();
    all.extend(files.into_iter().map(|f| (f, false)));
    all.sort();
    for (rel, is_dir) in all {
        if is_dir {
            b.append(
                &header(
                    &format!("{prefix}/{rel}/"),
                    0,
                    0o755,
                    tar::EntryType::Directory,
                )?,
                std::io::empty(),
            )?;
        } else {
            let p = dir.join(&rel);
            let f = File::open(&p)?;
            let len = f.metadata()?.len();
            b.append(
                &header(
                    &format!("{prefix}/{rel}"),
                    len,
                    0o644,
                    tar::EntryType::Regular,
                )?,
                f.take(len),
            )?;
        }
    }
    b.into_inner()
}

fn collect(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<String>,
    dirs: &mut Vec<String>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = std::fs::symlink_metadata(e.path())?.file_type();
        if ft.is_dir() {
            dirs.push(rel.clone());
            collect(&e.path(), &rel, files, dirs)?;
        } else if ft.is_file() {
            files.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn hdr(path: &[u8], size: u64, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_old();
        // Write the name bytes directly so hostile names survive (set_path refuses `..`).
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    #[test]
    fn safe_paths() {
        for ok in ["a", "data/x.parquet", "keys/retort.pub.pem", "a.b/c-d_e"] {
            assert!(safe_rel_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "data/../x",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a\nb",
            "a/",
        ] {
            assert!(!safe_rel_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn fail_tar_traversal_links_and_dupes() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "dotdot",
                tar_with(|b| {
                    b.append(&hdr(b"../evil", 1, tar::EntryType::Regular), &b"x"[..])
                        .unwrap()
                }),
            ),
            (
                "absolute",
                tar_with(|b| {
                    b.append(&hdr(b"/etc/x", 1, tar::EntryType::Regular), &b"x"[..])
                        .unwrap()
                }),
            ),
            (
                "inner dotdot",
                tar_with(|b| {
                    b.append(
                        &hdr(b"p/data/../../x", 1, tar::EntryType::Regular),
                        &b"x"[..],
                    )
                    .unwrap()
                }),
            ),
            (
                "symlink",
                tar_with(|b| {
                    let mut h = hdr(b"p/data/x", 0, tar::EntryType::Symlink);
                    h.set_link_name("/etc/passwd").unwrap();
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap()
                }),
            ),
            (
                "hardlink",
                tar_with(|b| {
                    let mut h = hdr(b"p/data/x", 0, tar::EntryType::Link);
                    h.set_link_name("/etc/passwd").unwrap();
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap()
                }),
            ),
            (
                "fifo",
                tar_with(|b| {
                    b.append(&hdr(b"p/f", 0, tar::EntryType::Fifo), std::io::empty())
                        .unwrap()
                }),
            ),
            (
                "dupe",
                tar_with(|b| {
                    b.append(&hdr(b"p/data/x", 1, tar::EntryType::Regular), &b"a"[..])
                        .unwrap();
                    b.append(&hdr(b"p/data/x", 1, tar::EntryType::Regular), &b"b"[..])
                        .unwrap();
                }),
            ),
            (
                "longname",
                tar_with(|b| {
                    b.append(
                        &hdr(b"././@LongLink", 4, tar::EntryType::GNULongName),
                        &b"abcd"[..],
                    )
                    .unwrap()
                }),
            ),
        ];
        for (what, bytes) in cases {
            match read_tar(&bytes[..], &Limits::default()) {
                Err(ReadError::Unsafe(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn fail_huge_member_refused_before_reading() {
        // Header claims 1 TiB; the archive holds no data. Refused by size, not by reading.
        let mut h = hdr(b"p/data/big", 0, tar::EntryType::Regular);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 1024]);
        match read_tar(&bytes[..], &Limits::default()) {
            Err(ReadError::Unsafe(m)) => assert!(m.contains("over the limit"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A big metadata file is refused at the metadata limit.
        let mut h = hdr(b"p/provenance.intoto.jsonl", 0, tar::EntryType::Regular);
        h.set_size(100 << 20);
        h.set_cksum();
        let bytes = h.as_bytes().to_vec();
        assert!(matches!(
            read_tar(&bytes[..], &Limits::default()),
            Err(ReadError::Unsafe(_))
        ));
    }

    #[test]
    fn fail_many_metadata_files_bounded() {
        // Many members that would each be kept in memory: refused once together over the limit.
        let limits = Limits {
            max_meta: 4096,
            ..Limits::default()
        };
        let bytes = tar_with(|b| {
            for i in 0..8 {
                let name = format!("p{i}/provenance.intoto.jsonl");
                b.append(
                    &hdr(name.as_bytes(), 1000, tar::EntryType::Regular),
                    &[b'x'; 1000][..],
                )
                .unwrap();
            }
        });
        match read_tar(&bytes[..], &limits) {
            Err(ReadError::Unsafe(m)) => assert!(m.contains("together"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fail_truncated_and_garbage() {
        let good = tar_with(|b| {
            b.append(
                &hdr(b"p/data/x", 1000, tar::EntryType::Regular),
                &[7u8; 1000][..],
            )
            .unwrap()
        });
        assert!(matches!(
            read_tar(&good[..700], &Limits::default()),
            Err(ReadError::Unsafe(_))
        ));
        assert!(read_tar(&b"garbage that is not a tar at all"[..], &Limits::default()).is_err());
    }

    #[test]
    fn tar_roundtrip_strips_top_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("data")).unwrap();
        std::fs::write(d.path().join("data/a.bin"), b"abc").unwrap();
        std::fs::write(d.path().join("SHA256SUMS"), b"sums").unwrap();
        let t1 = write_tar(d.path(), "pkg-1", 1_700_000_000, Vec::new()).unwrap();
        let t2 = write_tar(d.path(), "pkg-1", 1_700_000_000, Vec::new()).unwrap();
        assert_eq!(t1, t2, "tar is deterministic");
        let s = read_tar(&t1[..], &Limits::default()).unwrap();
        let names: Vec<_> = s.files.keys().cloned().collect();
        assert_eq!(names, ["SHA256SUMS", "data/a.bin"]);
        assert_eq!(s.content("SHA256SUMS"), Some(&b"sums"[..]));
        assert_eq!(s.files["data/a.bin"].content, None);
        assert_eq!(
            s.files["data/a.bin"].sha256,
            crate::digest::sha256_hex(b"abc")
        );
        assert_eq!(read_dir(d.path(), &Limits::default()).unwrap(), s);
    }

    #[test]
    fn fail_dir_symlink() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("data")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("data/x")).unwrap();
        assert!(matches!(
            read_dir(d.path(), &Limits::default()),
            Err(ReadError::Unsafe(_))
        ));
    }
}
