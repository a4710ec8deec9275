//! Signed checkpoints: an RFC 6962 Merkle tree hash over every line of the log, written as a
//! C2SP signed note (<https://c2sp.org/signed-note>, <https://c2sp.org/tlog-checkpoint>)
//! with the workspace's dedicated audit key (`keys/audit.key.pem`, never the package key).
//!
//! ```text
//! <origin>\n<size>\n<base64(root)>\n\n— <name> <base64(keyID[4] ‖ Ed25519 signature[64])>\n
//! ```
//! The signature covers the body (the first three lines, each with its `\n`); the key name is
//! the origin, `<site>/<workspace_id>/audit`; the key ID is
//! `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`.
//!
//! # Guarantees
//! - A checkpoint is signed only over a log whose lines since the last signed checkpoint chain
//!   correctly, and only if it extends that checkpoint (same root at its size): the writer
//!   never signs a history inconsistent with one it signed before (C2SP tlog-checkpoint).
//! - The writer extends a cached Merkle frontier (`audit/checkpoints/state.json`) instead of
//!   rehashing the whole log. The cache is used only if it matches the newest checkpoint it
//!   claims to extend (size, root, our signature) and the boundary line still hashes to what it
//!   recorded; otherwise the whole log is re-read and checked.
//! - Files are written atomically; the lock is the audit log's own, so checkpoints and appends
//!   never interleave.
//!
//! Two entry points: [`write_checkpoint`] (exports: appends an `audit.checkpoint` record
//! announcing the checkpoint, then signs a tree that includes that record) and [`seal`] (the end
//! of every command: signs the log as it is, adding no record, so each command stays one line).

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::chain::AuditLock;
use super::merkle::{Frontier, FrontierState, Hash};
use super::read::{scan, seg_name, ChainCheck, Finding, Severity};
use super::record::{line_hash, NewRecord, Outcome};
use super::{AuditLog, Error, Result};
use crate::digest::hex;
use crate::error::IoError;
use crate::keys::{KeyPaths, PublicKey, SigningKey};
use crate::workspace::{atomic_write_mode, Workspace};

/// Checkpoint files are shared like the log: the service group (`retort serve`) writes them
/// where `audit/` is its (see `crate::access`); the folder caps the mode.
fn atomic_write(
    path: &std::path::Path,
    bytes: &[u8],
) -> std::result::Result<(), crate::error::IoError> {
    atomic_write_mode(path, bytes, 0o664)
}

/// Sub-directory of `audit/` holding the checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The frontier cache inside the checkpoint directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the audit public key kept next to the checkpoints (so verifiers without read
/// access to the private key can check signatures; pin it with `--key` for independence).
pub const PUBLIC_KEY_FILE: &str = "audit-key.pub.pem";
/// The em dash that starts a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// A checkpoint as stored: the note text and what it commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The signed note, exactly as written (ends with `\n`).
    pub text: String,
    /// Number of log lines it covers.
    pub size: u64,
    /// Merkle root, lowercase hex.
    pub root_hex: String,
    /// Where it is stored.
    pub path: PathBuf,
}

/// A parsed signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// First line: the log's origin.
    pub origin: String,
    /// Second line: the tree size.
    pub size: u64,
    /// Third line: the root hash.
    pub root: Hash,
    /// The signed text: the body lines with their `\n`.
    pub body: String,
    /// Signature lines.
    pub signatures: Vec<NoteSignature>,
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// The 4-byte key ID.
    pub key_id: [u8; 4],
    /// The signature bytes (64 for Ed25519).
    pub signature: Vec<u8>,
}

/// The result of checking a note's signature against a known key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SigCheck {
    /// A signature by the known key verifies.
    Ok,
    /// A signature claims the known key (name and key ID) but does not verify.
    BadSignature,
    /// No signature claims the known key.
    UnknownKey,
}

/// The origin (and key name) of a workspace's checkpoints: `<site>/<workspace_id>/audit`.
pub fn origin(ws: &Workspace) -> String {
    format!("{}/{}/audit", ws.config().site, ws.config().workspace_id)
}

/// C2SP signed-note key ID of an Ed25519 key: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]`.
pub fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    c.update(name.as_bytes());
    c.update(b"\n");
    c.update(&[0x01]);
    c.update(&key.0);
    let d = c.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_ref()[..4]);
    id
}

/// The checkpoint body: `origin\nsize\nbase64(root)\n`.
pub fn body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", b64().encode(root))
}

/// Sign a checkpoint body as a note whose key name is the origin.
pub fn sign_note(origin: &str, size: u64, root: &Hash, key: &SigningKey) -> String {
    let body = body(origin, size, root);
    let sig = key.sign(body.as_bytes());
    let mut blob = key_id(origin, &key.public()).to_vec();
    blob.extend_from_slice(&sig);
    format!("{body}\n{SIG_PREFIX}{origin} {}\n", b64().encode(blob))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Split a C2SP signed note into its signed body (ending with `\n`) and its signature lines.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_signed(text: &str) -> std::result::Result<(String, Vec<NoteSignature>), String> {
    if !text.ends_with('\n') {
        return Err("the note does not end with a newline".into());
    }
    let (body_part, sig_part) = text
        .split_once("\n\n")
        .ok_or("no blank line separates the body from the signatures")?;
    let mut signatures = Vec::new();
    for line in sig_part.strip_suffix('\n').unwrap_or(sig_part).split('\n') {
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| format!("signature line {line:?} does not start with \"— \""))?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| format!("signature line {line:?} has no key name"))?;
        let blob = b64()
            .decode(blob)
            .map_err(|_| format!("signature of {name:?} is not base64"))?;
        if name.is_empty() || blob.len() < 5 {
            return Err(format!("signature line of {name:?} is too short"));
        }
        let mut key_id = [0u8; 4];
        key_id.copy_from_slice(&blob[..4]);
        signatures.push(NoteSignature {
            name: name.to_string(),
            key_id,
            signature: blob[4..].to_vec(),
        });
    }
    if signatures.is_empty() {
        return Err("the note has no signature".into());
    }
    Ok((format!("{body_part}\n"), signatures))
}

/// Parse a signed note holding a checkpoint. Strict: the text must end with `\n`, the body must
/// be `origin`, a decimal size without leading zeros, and a 32-byte base64 root (extension
/// lines after them are kept in the signed body), then one blank line and at least one
/// signature line.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_note(text: &str) -> std::result::Result<Note, String> {
    let (body, signatures) = parse_signed(text)?;
    let mut lines = body.split('\n');
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or("empty origin line")?;
    let size_text = lines.next().ok_or("no size line")?;
    if size_text.is_empty()
        || !size_text.bytes().all(|b| b.is_ascii_digit())
        || (size_text.len() > 1 && size_text.starts_with('0'))
    {
        return Err(format!("size line {size_text:?} is not a decimal number"));
    }
    let size: u64 = size_text
        .parse()
        .map_err(|_| format!("size {size_text:?} is too large"))?;
    let root_text = lines.next().ok_or("no root hash line")?;
    let root: Hash = b64()
        .decode(root_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("root line {root_text:?} is not base64 of 32 bytes"))?;
    Ok(Note {
        origin: origin.to_string(),
        size,
        root,
        body: body.clone(),
        signatures,
    })
}

/// Check a note against a known key with key name `name`.
pub fn check_signature(note: &Note, name: &str, key: &PublicKey) -> SigCheck {
    check_signed(&note.body, &note.signatures, name, key)
}

/// Check signature lines over `body` against a known key with key name `name`: `Ok` if one
/// claiming it (name and key ID) verifies, `BadSignature` if some claim it but none verifies,
/// `UnknownKey` if none claims it.
pub fn check_signed(body: &str, sigs: &[NoteSignature], name: &str, key: &PublicKey) -> SigCheck {
    let id = key_id(name, key);
    let mut claimed = false;
    for s in sigs.iter().filter(|s| s.name == name && s.key_id == id) {
        claimed = true;
        if key.verify(body.as_bytes(), &s.signature) {
            return SigCheck::Ok;
        }
    }
    if claimed {
        SigCheck::BadSignature
    } else {
        SigCheck::UnknownKey
    }
}

/// The checkpoint directory of a workspace.
pub fn dir(ws: &Workspace) -> PathBuf {
    ws.audit_dir().join(CHECKPOINT_DIR)
}

fn file_name(size: u64) -> String {
    format!("checkpoint-{size:012}.txt")
}

/// The stored checkpoint files, ordered by size.
///
/// # Errors
/// I/O.
pub fn list(ws: &Workspace) -> Result<Vec<(u64, PathBuf)>> {
    let d = dir(ws);
    let rd = match fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IoError::new("reading", &d, e).into()),
    };
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| IoError::new("reading", &d, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.strip_suffix(".txt"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Load a checkpoint file (parsed, signature not checked).
///
/// # Errors
/// I/O; `audit-checkpoint-malformed`.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let text = fs::read_to_string(path).map_err(|e| IoError::new("reading", path, e))?;
    let note = parse_note(&text).map_err(|why| Error::BadCheckpoint {
        path: path.into(),
        why,
    })?;
    Ok(Checkpoint {
        size: note.size,
        root_hex: hex(&note.root),
        text,
        path: path.into(),
    })
}

/// The newest checkpoint stored in the workspace (largest size), if any.
///
/// # Errors
/// I/O; `audit-checkpoint-malformed` if the newest file does not parse.
pub fn latest(ws: &Workspace) -> Result<Option<Checkpoint>> {
    match list(ws)?.last() {
        Some((_, p)) => load(p).map(Some),
        None => Ok(None),
    }
}

/// The workspace's audit key.
///
/// # Errors
/// `audit-key-unusable`.
pub fn audit_key(ws: &Workspace) -> Result<SigningKey> {
    Ok(SigningKey::load(
        &KeyPaths::in_dir(&ws.keys_dir()).audit_key,
    )?)
}

/// Write a checkpoint for an export: append an `audit.checkpoint` record announcing it (its
/// size counts the record itself), then sign the Merkle root over every line including it.
/// This is the checkpoint packages carry as `audit-checkpoint.txt`.
///
/// # Errors
/// `audit-key-unusable`, `audit-append-failed`, `audit-chain-broken` or
/// `audit-checkpoint-inconsistent` (nothing is signed over a damaged log), I/O.
pub fn write_checkpoint(ws: &Workspace) -> Result<Checkpoint> {
    write(ws, true)
}

/// Write a checkpoint over the log as it is, without adding a record (the end of every
/// command).
///
/// # Errors
/// As [`write_checkpoint`].
pub fn seal(ws: &Workspace) -> Result<Checkpoint> {
    write(ws, false)
}

fn write(ws: &Workspace, announce: bool) -> Result<Checkpoint> {
    let key = audit_key(ws)?;
    let public = key.public();
    let origin = origin(ws);
    let log = AuditLog::new(ws.audit_dir());
    let lock = log.lock()?;
    // Check the log first: nothing is announced or signed over a damaged one.
    let start = load_state(ws, &log.segments()?, &origin, &public);
    let mut tree = advance(ws, &log, &lock, &origin, &public, start)?;
    if announce {
        let size = tree.frontier.size() + 1;
        log.append_locked(
            &lock,
            NewRecord::new("system", "audit.checkpoint", &file_name(size), Outcome::Ok).details(
                serde_json::json!({
                    "size": size,
                    "origin": origin,
                    "key_sha256": public.fingerprint(),
                }),
            ),
        )?;
        // Extend the checked tree by the record just written.
        let segs = log.segments()?;
        let resume = match &tree.state.segment {
            None => None,
            Some(name) => {
                let idx = segs
                    .iter()
                    .position(|p| seg_name(p) == *name)
                    .ok_or_else(|| Error::ChainBroken {
                        segment: name.clone(),
                        index: tree.frontier.size(),
                        code: "malformed",
                        message: "the segment disappeared while the audit lock was held".into(),
                    })?;
                Some((tree.frontier.clone(), tree.state.clone(), idx))
            }
        };
        tree = advance(ws, &log, &lock, &origin, &public, resume)?;
        if tree.frontier.size() != size {
            return Err(Error::CheckpointInconsistent {
                path: dir(ws).join(file_name(size)),
                why: format!(
                    "expected {size} records after announcing the checkpoint, found {}",
                    tree.frontier.size()
                ),
            });
        }
    }
    let root = tree.frontier.root();
    let size = tree.frontier.size();
    let text = sign_note(&origin, size, &root, &key);
    let d = dir(ws);
    crate::workspace::create_dir_all(&d)?;
    let pub_path = d.join(PUBLIC_KEY_FILE);
    if !pub_path.exists() {
        atomic_write(&pub_path, public.spki_pem().as_bytes())?;
    }
    let path = d.join(file_name(size));
    match fs::read_to_string(&path) {
        Ok(old) if old == text => {}
        Ok(old) => {
            // Ed25519 is deterministic: a different text at the same size means a different
            // root (or origin) was signed before. Never overwrite it.
            if parse_note(&old).map(|n| n.root) != Ok(root) {
                return Err(Error::CheckpointInconsistent {
                    path,
                    why: "a checkpoint of the same size with a different root exists".into(),
                });
            }
            atomic_write(&path, text.as_bytes())?;
        }
        Err(_) => atomic_write(&path, text.as_bytes())?,
    }
    save_state(ws, &tree)?;
    Ok(Checkpoint {
        text,
        size,
        root_hex: hex(&root),
        path,
    })
}

/// The cached Merkle state: where the last checkpoint's tree ends in the files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    version: u32,
    frontier: FrontierState,
    /// The `seq` the next record must carry.
    next_seq: u64,
    /// Segment holding the last covered line (absent for the empty tree).
    segment: Option<String>,
    /// Byte offset where the last covered line starts.
    last_start: u64,
    /// Byte offset just after its `\n`.
    end: u64,
    /// SHA-256 hex of the last covered line (or the genesis value).
    last_line_sha256: String,
}

/// The Merkle tree of the whole log, checked.
struct Tree {
    frontier: Frontier,
    state: State,
}

/// Bring the tree up to the end of the log: from `start` (a validated cache or a tree checked
/// moments ago under the same lock) when given, else from the first line; refuses if the lines it reads do not chain, or if the result does not extend the
/// newest checkpoint signed by our key.
fn advance(
    ws: &Workspace,
    log: &AuditLog,
    _lock: &AuditLock,
    origin: &str,
    key: &PublicKey,
    start: Option<(Frontier, State, usize)>,
) -> Result<Tree> {
    let segs = log.segments()?;
    let (mut frontier, mut check, start_seg, start_off, mut state) = match start {
        Some((f, st, seg_idx)) => {
            let check = ChainCheck::resume(f.size(), st.next_seq, st.last_line_sha256.clone());
            (f, check, seg_idx, st.end, st)
        }
        None => (
            Frontier::new(),
            ChainCheck::new(),
            0,
            0,
            State {
                version: 1,
                frontier: Frontier::new().to_state(),
                next_seq: 0,
                segment: None,
                last_start: 0,
                end: 0,
                last_line_sha256: super::record::GENESIS_PREV.into(),
            },
        ),
    };
    let from_scratch = start_off == 0 && frontier.size() == 0;
    // When re-reading from scratch, the result must reproduce the newest checkpoint we signed.
    let prior = if from_scratch {
        newest_own_checkpoint(ws, origin, key)?
    } else {
        None
    };
    let mut prior_root: Option<Hash> = None;
    if let Some((p_size, _, _)) = &prior {
        if *p_size == 0 {
            prior_root = Some(frontier.root());
        }
    }
    let mut findings: Vec<Finding> = Vec::new();
    scan(&segs, start_seg, start_off, |e| {
        let name = seg_name(&segs[e.segment]);
        let line_no = if e.segment == start_seg && start_off > 0 {
            0
        } else {
            e.line_no
        };
        check.check(&name, line_no, e.bytes, e.torn, &mut findings);
        frontier.push_entry(e.bytes);
        state.segment = Some(name);
        state.last_start = e.offset;
        state.end = e.end;
        if let Some((p_size, _, _)) = &prior {
            if frontier.size() == *p_size {
                prior_root = Some(frontier.root());
            }
        }
        Ok(())
    })?;
    if let Some(f) = findings.iter().find(|f| f.severity == Severity::Error) {
        return Err(Error::ChainBroken {
            segment: f.segment.clone(),
            index: f.index,
            code: f.code,
            message: f.message.clone(),
        });
    }
    if let Some((p_size, p_root, p_path)) = prior {
        if prior_root != Some(p_root) {
            return Err(Error::CheckpointInconsistent {
                path: p_path,
                why: if p_size > frontier.size() {
                    format!(
                        "it covers {p_size} records but the log has only {}",
                        frontier.size()
                    )
                } else {
                    format!("the log's first {p_size} records no longer hash to its root")
                },
            });
        }
    }
    state.frontier = frontier.to_state();
    state.next_seq = check.expected_seq;
    state.last_line_sha256 = check.prev.clone();
    Ok(Tree { frontier, state })
}

/// The newest stored checkpoint that carries a valid signature by our key for our origin.
fn newest_own_checkpoint(
    ws: &Workspace,
    origin: &str,
    key: &PublicKey,
) -> Result<Option<(u64, Hash, PathBuf)>> {
    for (_, path) in list(ws)?.into_iter().rev() {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Ok(note) = parse_note(&text) else {
            continue;
        };
        if note.origin == origin && check_signature(&note, origin, key) == SigCheck::Ok {
            return Ok(Some((note.size, note.root, path)));
        }
    }
    Ok(None)
}

/// Load the cache if it is consistent with the newest checkpoint and the files; else `None`.
fn load_state(
    ws: &Workspace,
    segs: &[PathBuf],
    origin: &str,
    key: &PublicKey,
) -> Option<(Frontier, State, usize)> {
    let text = fs::read(dir(ws).join(STATE_FILE)).ok()?;
    let st: State = serde_json::from_slice(&text).ok()?;
    if st.version != 1 {
        return None;
    }
    let frontier = Frontier::from_state(&st.frontier)?;
    // It must be exactly the newest checkpoint, signed by us.
    let (size, path) = list(ws).ok()?.pop()?;
    if size != frontier.size() {
        return None;
    }
    let note = parse_note(&fs::read_to_string(path).ok()?).ok()?;
    if note.origin != origin
        || note.root != frontier.root()
        || check_signature(&note, origin, key) != SigCheck::Ok
    {
        return None;
    }
    // The boundary line must still be there, unchanged.
    let seg_name_ = st.segment.as_deref()?;
    let idx = segs.iter().position(|p| seg_name(p) == seg_name_)?;
    let line = read_range(&segs[idx], st.last_start, st.end)?;
    if line.last() != Some(&b'\n') || line_hash(&line[..line.len() - 1]) != st.last_line_sha256 {
        return None;
    }
    Some((frontier, st, idx))
}

/// Bytes `start..end` of a file, or `None` if the file is shorter or unreadable.
fn read_range(path: &Path, start: u64, end: u64) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let len = usize::try_from(end.checked_sub(start)?).ok()?;
    if len == 0 || len > super::read::MAX_LINE_BYTES + 1 {
        return None;
    }
    let mut f = fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn save_state(ws: &Workspace, tree: &Tree) -> Result<()> {
    let text = serde_json::to_vec(&tree.state).expect("invariant: state serializes");
    atomic_write(&dir(ws).join(STATE_FILE), &text)?;
    Ok(())
}

#[cfg(test)]
mod tests;
