//! Verifying the audit log: recompute the hash chain and the Merkle root at every checkpoint's
//! size, for the workspace's own checkpoints and any number held outside (`--checkpoint`, e.g. a
//! package's `audit-checkpoint.txt`). Read-only: takes no lock and writes nothing.
//!
//! The steps (each followed by a `tracing` line):
//! 1. load the audit public key (pinned with `--key`, else the workspace's);
//! 2. read and parse every checkpoint, check its signature;
//! 3. read every line of every segment once: chain check, Merkle frontier, the root at each
//!    checkpoint size;
//! 4. compare each signed checkpoint with the log (`ok`, `root-mismatch`, `truncated`);
//! 5. check that every `audit.checkpoint` record has its file;
//! 6. count the records after the newest good checkpoint (protected by the chain alone).
//!
//! What it cannot see (provenance.md §3.4): a truncation after the newest checkpoint the
//! officer supplies. The report says so in `coverage`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checkpoint::{self, check_signature, key_id, parse_note, SigCheck};
use super::merkle::{Frontier, Hash};
use super::read::{scan, seg_name, ChainCheck, Finding, Severity};
use super::{AuditLog, Result};
use crate::digest::hex;
use crate::error::IoError;
use crate::keys::{KeyPaths, PublicKey, SigningKey};
use crate::workspace::Workspace;

/// What to verify against.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Checkpoint files held outside the workspace.
    pub external: Vec<PathBuf>,
    /// The audit public key, pinned by the verifier. Without it the workspace's own key is used.
    pub key: Option<PublicKey>,
}

/// The full verification report (also the `--json` object).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// `true` when there is no error finding and every checkpoint is `ok`.
    pub intact: bool,
    /// `PASS` or `FAIL`.
    pub verdict: &'static str,
    /// Lines read (records, including damaged ones).
    pub records: u64,
    /// Segments read, in order.
    pub segments: Vec<SegmentSummary>,
    /// First `seq`.
    pub first_seq: Option<u64>,
    /// Last `seq`.
    pub last_seq: Option<u64>,
    /// First record time.
    pub first_ts: Option<String>,
    /// Last record time.
    pub last_ts: Option<String>,
    /// SHA-256 (hex) of the last line: what the next record's `prev` will be.
    pub head_sha256: String,
    /// RFC 6962 Merkle root (hex) over every line read.
    pub root_sha256: String,
    /// The origin this workspace's checkpoints carry.
    pub origin: String,
    /// The key checkpoints were checked against.
    pub key: KeyInfo,
    /// Every checkpoint examined.
    pub checkpoints: Vec<CheckpointStatus>,
    /// Every problem found in the records.
    pub findings: Vec<Finding>,
    /// Number of error findings.
    pub errors: usize,
    /// Number of warnings.
    pub warnings: usize,
    /// The newest checkpoint that verified (`ok`), if any.
    pub newest_checkpoint: Option<NewestCheckpoint>,
    /// Records after the newest good checkpoint: protected only by the hash chain.
    pub unsealed_tail: u64,
    /// What the verdict covers.
    pub coverage: String,
}

/// One segment file.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    /// File name.
    pub file: String,
    /// Lines in it.
    pub lines: u64,
    /// Bytes in it.
    pub bytes: u64,
}

/// The key used.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// SHA-256 fingerprint of the raw public key.
    pub sha256: String,
    /// Signed-note key ID (hex) under this workspace's key name.
    pub key_id: String,
    /// `pinned` (given with `--key`) or `workspace` (read from the workspace itself).
    pub source: &'static str,
}

/// The status of one checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointStatus {
    /// `workspace` or `external`.
    pub source: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Its origin line.
    pub origin: Option<String>,
    /// Tree size it commits to.
    pub size: Option<u64>,
    /// Root it commits to (hex).
    pub root_hex: Option<String>,
    /// Key IDs (hex) of its signatures.
    pub key_ids: Vec<String>,
    /// `ok`, `bad-signature`, `unknown-key`, `root-mismatch`, `truncated` or `malformed`.
    pub status: &'static str,
    /// Details in words.
    pub message: String,
}

/// The newest checkpoint that verified.
#[derive(Debug, Clone, Serialize)]
pub struct NewestCheckpoint {
    /// Tree size.
    pub size: u64,
    /// The file.
    pub path: PathBuf,
    /// `workspace` or `external`.
    pub source: &'static str,
    /// Time of the last record it covers.
    pub covers_until: Option<String>,
}

/// Every checkpoint status, for docs and tests.
pub const CHECKPOINT_STATUSES: &[&str] = &[
    "ok",
    "bad-signature",
    "unknown-key",
    "root-mismatch",
    "truncated",
    "malformed",
];

/// The workspace's audit public key: from the private key if readable, else from
/// `audit/checkpoints/audit-key.pub.pem`.
///
/// # Errors
/// `audit-key-unusable` when neither can be read.
pub fn workspace_key(ws: &Workspace) -> Result<PublicKey> {
    match SigningKey::load(&KeyPaths::in_dir(&ws.keys_dir()).audit_key) {
        Ok(k) => Ok(k.public()),
        Err(e) => {
            let p = checkpoint::dir(ws).join(checkpoint::PUBLIC_KEY_FILE);
            match fs::read_to_string(&p) {
                Ok(text) => Ok(PublicKey::parse(&text, &p.display().to_string())?),
                Err(_) => Err(e.into()),
            }
        }
    }
}

/// Verify the workspace's log against its own and the given checkpoints.
///
/// # Errors
/// Only when the verification cannot be carried out (key unusable, I/O); everything found in
/// the log and checkpoints is in the report.
pub fn verify(ws: &Workspace, opts: &Options) -> Result<VerifyReport> {
    // Step 1: the key.
    let (key, key_source) = match opts.key {
        Some(k) => (k, "pinned"),
        None => (workspace_key(ws)?, "workspace"),
    };
    let origin = checkpoint::origin(ws);
    tracing::info!(
        "step 1: audit key SHA256 {} ({key_source})",
        key.fingerprint()
    );

    // Step 2: checkpoints and their signatures.
    let mut cps: Vec<(CheckpointStatus, Option<Hash>)> = Vec::new();
    for (_, p) in checkpoint::list(ws)? {
        cps.push(examine(&p, "workspace", &origin, &key));
    }
    for p in &opts.external {
        cps.push(examine(p, "external", &origin, &key));
    }
    let wanted: BTreeSet<u64> = cps
        .iter()
        .filter(|(c, _)| c.status == "ok")
        .filter_map(|(c, _)| c.size)
        .collect();
    tracing::info!("step 2: {} checkpoint(s) read", cps.len());

    // Step 3: one pass over the log.
    let log = AuditLog::new(ws.audit_dir());
    let segs = log.segments()?;
    let mut frontier = Frontier::new();
    let mut check = ChainCheck::new();
    let mut findings = Vec::new();
    let mut roots: BTreeMap<u64, (Hash, Option<String>)> = BTreeMap::new();
    if wanted.contains(&0) {
        roots.insert(0, (frontier.root(), None));
    }
    let mut segments: Vec<SegmentSummary> = segs
        .iter()
        .map(|p| SegmentSummary {
            file: seg_name(p),
            lines: 0,
            bytes: 0,
        })
        .collect();
    let (mut first_seq, mut first_ts) = (None, None);
    let mut announced: Vec<(u64, Finding)> = Vec::new();
    scan(&segs, 0, 0, |e| {
        let name = segments[e.segment].file.clone();
        let rec = check.check(&name, e.line_no, e.bytes, e.torn, &mut findings);
        frontier.push_entry(e.bytes);
        let s = &mut segments[e.segment];
        s.lines += 1;
        s.bytes = e.end;
        if let Some(r) = &rec {
            if first_seq.is_none() {
                first_seq = Some(r.seq);
                first_ts = Some(r.ts.clone());
            }
            if r.action == "audit.checkpoint" {
                if let Some(size) = r.details.get("size").and_then(|v| v.as_u64()) {
                    announced.push((
                        size,
                        Finding {
                            code: "checkpoint-missing",
                            severity: Severity::Warning,
                            segment: name.clone(),
                            line: e.line_no,
                            index: frontier.size() - 1,
                            seq: Some(r.seq),
                            message: format!(
                                "the log records a checkpoint of size {size}, but no such checkpoint file is present or supplied"
                            ),
                        },
                    ));
                }
            }
        }
        if wanted.contains(&frontier.size()) {
            roots.insert(
                frontier.size(),
                (frontier.root(), rec.as_ref().map(|r| r.ts.clone())),
            );
        }
        Ok(())
    })?;
    let n = frontier.size();
    tracing::info!(
        "step 3: {n} record(s) in {} segment(s), {} finding(s)",
        segs.len(),
        findings.len()
    );

    // Step 4: compare checkpoints with the log.
    for (c, root) in cps.iter_mut() {
        if c.status != "ok" {
            continue;
        }
        let (Some(size), Some(root)) = (c.size, root) else {
            continue;
        };
        if size > n {
            c.status = "truncated";
            c.message = format!("the checkpoint commits to {size} records but the log has {n}: records were removed from the end");
        } else if roots.get(&size).map(|(r, _)| r) != Some(root) {
            c.status = "root-mismatch";
            c.message = format!("the log's first {size} records do not hash to the checkpoint's root: a record was changed, removed, inserted or reordered");
        } else {
            c.message = format!("the log's first {size} records match the signed root");
        }
    }
    tracing::info!("step 4: checkpoints compared with the log");

    // Step 5: every announced checkpoint exists.
    let present: BTreeSet<u64> = cps.iter().filter_map(|(c, _)| c.size).collect();
    for (size, f) in announced {
        if !present.contains(&size) {
            findings.push(f);
        }
    }
    tracing::info!("step 5: announced checkpoints checked");

    // Step 6: coverage.
    let newest = cps
        .iter()
        .filter(|(c, _)| c.status == "ok")
        .max_by_key(|(c, _)| c.size)
        .map(|(c, _)| NewestCheckpoint {
            size: c.size.unwrap_or(0),
            path: c.path.clone(),
            source: c.source,
            covers_until: c
                .size
                .and_then(|s| roots.get(&s))
                .and_then(|(_, ts)| ts.clone()),
        });
    let unsealed_tail = n - newest.as_ref().map_or(0, |c| c.size.min(n));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let bad = cps.iter().filter(|(c, _)| c.status != "ok").count();
    let intact = errors == 0 && bad == 0;
    let coverage = match &newest {
        Some(c) if unsealed_tail == 0 => format!(
            "every record (the first {n}) is covered by a signed checkpoint (newest good checkpoint: {}, {}); the verdict covers history up to that checkpoint: records removed after the newest checkpoint you hold would not be seen",
            c.path.display(),
            c.source
        ),
        Some(c) => format!(
            "signed checkpoints cover the first {} record(s) (newest good checkpoint: {}, {}); the {unsealed_tail} record(s) after it are protected by the hash chain alone, and removing them would only be detected by a newer checkpoint held outside the workspace",
            c.size,
            c.path.display(),
            c.source
        ),
        None => format!(
            "no checkpoint verified: all {n} record(s) are protected by the hash chain alone, which does not detect removal of records from the end"
        ),
    };
    tracing::info!("step 6: {unsealed_tail} record(s) after the newest good checkpoint");
    let last = check.last.as_ref();
    Ok(VerifyReport {
        intact,
        verdict: if intact { "PASS" } else { "FAIL" },
        records: n,
        segments,
        first_seq,
        last_seq: last.map(|r| r.seq),
        first_ts,
        last_ts: last.map(|r| r.ts.clone()),
        head_sha256: check.prev.clone(),
        root_sha256: hex(&frontier.root()),
        key: KeyInfo {
            sha256: key.fingerprint(),
            key_id: hex(&key_id(&origin, &key)),
            source: key_source,
        },
        origin,
        checkpoints: cps.into_iter().map(|(c, _)| c).collect(),
        findings,
        errors,
        warnings,
        newest_checkpoint: newest,
        unsealed_tail,
        coverage,
    })
}

/// Parse one checkpoint file and check its signature and origin.
fn examine(
    path: &Path,
    source: &'static str,
    origin: &str,
    key: &PublicKey,
) -> (CheckpointStatus, Option<Hash>) {
    let mut st = CheckpointStatus {
        source,
        path: path.into(),
        origin: None,
        size: None,
        root_hex: None,
        key_ids: Vec::new(),
        status: "malformed",
        message: String::new(),
    };
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) => {
            st.message = IoError::new("reading", path, e).to_string();
            return (st, None);
        }
    };
    let note = match std::str::from_utf8(&text)
        .map_err(|_| "not UTF-8 text".to_string())
        .and_then(parse_note)
    {
        Ok(n) => n,
        Err(why) => {
            st.message = why;
            return (st, None);
        }
    };
    st.origin = Some(note.origin.clone());
    st.size = Some(note.size);
    st.root_hex = Some(hex(&note.root));
    st.key_ids = note.signatures.iter().map(|s| hex(&s.key_id)).collect();
    if note.origin != origin {
        st.status = "unknown-key";
        st.message = format!(
            "origin {:?} is not this workspace's ({origin:?}): it was not signed for this log",
            note.origin
        );
        return (st, Some(note.root));
    }
    match check_signature(&note, origin, key) {
        SigCheck::Ok => st.status = "ok",
        SigCheck::BadSignature => {
            st.status = "bad-signature";
            st.message = "a signature claims the audit key but does not verify: the checkpoint was altered or forged".into();
        }
        SigCheck::UnknownKey => {
            st.status = "unknown-key";
            st.message = format!(
                "no signature by the audit key (key ID {}); signed by key ID(s) {}",
                hex(&key_id(origin, key)),
                st.key_ids.join(", ")
            );
        }
    }
    (st, Some(note.root))
}

/// Fuzz hook: the log reader and chain check over arbitrary bytes as one segment, and the
/// note parser over the same bytes. Must never panic.
#[cfg(fuzzing)]
pub fn fuzz_log_reader(data: &[u8]) {
    read_arbitrary(data);
}

/// The body of the fuzz hook (compiled always, so unit tests exercise it too). Returns the
/// number of findings.
#[cfg_attr(not(any(fuzzing, test)), allow(dead_code))]
fn read_arbitrary(data: &[u8]) -> usize {
    let mut check = ChainCheck::new();
    let mut findings = Vec::new();
    let mut frontier = Frontier::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, torn, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], false, &rest[i + 1..]),
            None => (rest, true, &rest[rest.len()..]),
        };
        check.check("fuzz", 0, line, torn, &mut findings);
        frontier.push_entry(line);
        rest = next;
    }
    let _ = frontier.root();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_note(text);
    }
    findings.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{checkpoint, NewRecord, Outcome};
    use proptest::prelude::*;

    fn workspace(n: usize) -> (tempfile::TempDir, Workspace, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(&dir.path().join("ws"), "t").unwrap();
        KeyPaths::in_dir(&ws.keys_dir()).create_all().unwrap();
        let log = AuditLog::new(ws.audit_dir());
        for i in 0..n {
            log.append(NewRecord::new(
                "user:t",
                "x.y",
                &format!("o{i}"),
                Outcome::Ok,
            ))
            .unwrap();
        }
        checkpoint::seal(&ws).unwrap();
        let seg = log.segments().unwrap()[0].clone();
        (dir, ws, seg)
    }

    fn lines(p: &Path) -> Vec<Vec<u8>> {
        let b = fs::read(p).unwrap();
        b.split_inclusive(|&c| c == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn codes(r: &VerifyReport) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn intact_log_passes() {
        let (_d, ws, _) = workspace(6);
        let r = verify(&ws, &Options::default()).unwrap();
        assert!(r.intact, "{r:#?}");
        assert_eq!(r.records, 6);
        assert_eq!((r.first_seq, r.last_seq), (Some(0), Some(5)));
        assert_eq!(r.unsealed_tail, 0);
        assert_eq!(r.checkpoints.len(), 1);
        assert_eq!(r.checkpoints[0].status, "ok");
    }

    #[test]
    fn chain_continues_across_segments() {
        let (_d, ws, seg) = workspace(6);
        // Move the last three lines into the next segment, as rotation would have.
        let l = lines(&seg);
        fs::write(&seg, l[..3].concat()).unwrap();
        fs::write(ws.audit_dir().join("segment-000001.jsonl"), l[3..].concat()).unwrap();
        let r = verify(&ws, &Options::default()).unwrap();
        assert!(r.intact, "{r:#?}");
        assert_eq!(r.segments.len(), 2);
        assert_eq!(r.segments[1].lines, 3);
        // Appends go on in the newest segment and still chain.
        AuditLog::new(ws.audit_dir())
            .append(NewRecord::new("user:t", "x.y", "after", Outcome::Ok))
            .unwrap();
        checkpoint::seal(&ws).unwrap();
        let r = verify(&ws, &Options::default()).unwrap();
        assert!(r.intact && r.records == 7 && r.unsealed_tail == 0, "{r:#?}");
        // Dropping a whole middle segment is a gap.
        fs::remove_file(ws.audit_dir().join("segment-000000.jsonl")).unwrap();
        let r = verify(&ws, &Options::default()).unwrap();
        assert!(codes(&r).contains(&"seq-gap"));
    }

    #[test]
    fn unsealed_tail_is_counted() {
        let (_d, ws, _) = workspace(3);
        let log = AuditLog::new(ws.audit_dir());
        for _ in 0..2 {
            log.append(NewRecord::new("user:t", "x.z", "o", Outcome::Ok))
                .unwrap();
        }
        let r = verify(&ws, &Options::default()).unwrap();
        assert!(r.intact);
        assert_eq!(r.unsealed_tail, 2);
    }

    #[test]
    fn fail_pinned_wrong_key_makes_every_checkpoint_unknown() {
        let (_d, ws, _) = workspace(2);
        let other = SigningKey::generate().unwrap().public();
        let r = verify(
            &ws,
            &Options {
                key: Some(other),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!r.intact);
        assert_eq!(r.checkpoints[0].status, "unknown-key");
        assert_eq!(r.key.source, "pinned");
    }

    #[test]
    fn fail_swap_reports_reorder_and_chain_break() {
        let (_d, ws, seg) = workspace(6);
        let mut l = lines(&seg);
        l.swap(1, 2);
        fs::write(&seg, l.concat()).unwrap();
        let r = verify(&ws, &Options::default()).unwrap();
        let c = codes(&r);
        assert!(
            c.contains(&"reorder") && c.contains(&"chain-break"),
            "{c:?}"
        );
        assert_eq!(r.checkpoints[0].status, "root-mismatch");
    }

    fn mutated(kind: u8, a: usize, b: usize, byte: u8) -> bool {
        let (_d, ws, seg) = workspace(6);
        let mut l = lines(&seg);
        let n = l.len();
        match kind {
            0 => {
                // Flip one byte anywhere in the file.
                let mut all = l.concat();
                let i = a % all.len();
                all[i] ^= byte.max(1);
                fs::write(&seg, all).unwrap();
            }
            1 => {
                l.remove(a % n);
                fs::write(&seg, l.concat()).unwrap();
            }
            _ => {
                let (i, j) = (a % n, b % n);
                let j = if i == j { (j + 1) % n } else { j };
                l.swap(i, j);
                fs::write(&seg, l.concat()).unwrap();
            }
        }
        !verify(&ws, &Options::default()).unwrap().intact
    }

    proptest! {
        #[test]
        fn reader_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            read_arbitrary(&data);
        }

        #[test]
        fn reader_never_panics_on_near_records(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
            let line = br#"{"action":"x.y","actor":"user:a","details":{"n":1},"object":"o","outcome":"ok","prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":0,"ts":"2026-01-01T00:00:00Z"}"#;
            let mut data = line.to_vec();
            data.push(b'\n');
            data.extend_from_slice(line);
            let i = flip % data.len();
            data[i] ^= byte;
            data.truncate(cut.max(1).min(data.len()));
            read_arbitrary(&data);
        }
    }

    #[test]
    fn intact_bytes_have_no_findings() {
        let (_d, _ws, seg) = workspace(3);
        assert_eq!(read_arbitrary(&fs::read(seg).unwrap()), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_flip_drop_or_reorder_is_detected(kind in 0u8..3, a in 0usize..10_000, b in 0usize..10_000, byte in any::<u8>()) {
            prop_assert!(mutated(kind, a, b, byte));
        }
    }
}
