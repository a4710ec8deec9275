//! Reading the log back: a streaming scan over the segments, and the per-line chain check that
//! `verify` reports and the checkpoint writer enforces.
//!
//! The reader never trusts the file: every line is treated as attacker-controlled bytes. It
//! never panics, never repairs anything, and reports what it finds with stable codes:
//! `chain-break`, `seq-gap`, `reorder`, `malformed`, `non-canonical`, `torn-tail` (errors) and
//! `clock-regression` (a warning: clocks can be set back).

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::record::{line_hash, Record, GENESIS_PREV};
use super::Result;
use crate::error::IoError;

/// Longest line the reader accepts (a record is a few hundred bytes; this bounds memory).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One line of the log as found on disk.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Index of the segment in the list given to [`scan`].
    pub segment: usize,
    /// 1-based line number within the segment.
    pub line_no: u64,
    /// Byte offset of the line's start within the segment.
    pub offset: u64,
    /// The line's bytes without the `\n`.
    pub bytes: &'a [u8],
    /// The line has no final `\n` (a torn write).
    pub torn: bool,
    /// Byte offset just after the line (and its `\n`) within the segment.
    pub end: u64,
}

/// Scan `segments` from segment `start_seg` at byte `start_offset`, calling `f` for every line
/// in order. Line numbers count from the start offset (1-based) unless it is 0.
///
/// # Errors
/// I/O errors, or whatever `f` returns.
pub fn scan(
    segments: &[PathBuf],
    start_seg: usize,
    start_offset: u64,
    mut f: impl FnMut(Entry<'_>) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    for (i, path) in segments.iter().enumerate().skip(start_seg) {
        let file = File::open(path).map_err(|e| IoError::new("reading", path, e))?;
        let mut r = BufReader::with_capacity(256 * 1024, file);
        let mut offset = if i == start_seg { start_offset } else { 0 };
        if offset > 0 {
            r.seek(SeekFrom::Start(offset))
                .map_err(|e| IoError::new("reading", path, e))?;
        }
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = read_line(&mut r, &mut buf, path)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let torn = buf.last() != Some(&b'\n');
            let bytes = if torn {
                &buf[..]
            } else {
                &buf[..buf.len() - 1]
            };
            f(Entry {
                segment: i,
                line_no,
                offset,
                bytes,
                torn,
                end: offset + n as u64,
            })?;
            offset += n as u64;
        }
    }
    Ok(())
}

/// `read_until(b'\n')` with a length bound: an over-long line is returned cut at the bound
/// (it will then fail to parse and be reported as malformed, not exhaust memory).
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, path: &Path) -> Result<usize> {
    let mut total = 0usize;
    loop {
        let avail = r.fill_buf().map_err(|e| IoError::new("reading", path, e))?;
        if avail.is_empty() {
            return Ok(total);
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if buf.len() < MAX_LINE_BYTES {
            let room = MAX_LINE_BYTES - buf.len();
            buf.extend_from_slice(&avail[..take.min(room)]);
        }
        r.consume(take);
        total += take;
        if done {
            if buf.last() != Some(&b'\n') {
                // Cut an over-long line but keep the terminator, so it is not mistaken
                // for a torn tail.
                buf.push(b'\n');
            }
            return Ok(total);
        }
    }
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// The log is not intact.
    Error,
    /// Worth a look; does not fail verification.
    Warning,
}

/// One problem found in the log, with a stable code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable code: `chain-break`, `seq-gap`, `reorder`, `malformed`, `non-canonical`,
    /// `torn-tail`, `clock-regression`, `checkpoint-missing`.
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The segment file name.
    pub segment: String,
    /// 1-based line within the segment (0 when not about a line).
    pub line: u64,
    /// 0-based position of the line in the whole log (the Merkle leaf index).
    pub index: u64,
    /// The record's `seq`, when the line parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What is wrong, in words.
    pub message: String,
}

/// Every finding code, for docs and tests.
pub const FINDING_CODES: &[&str] = &[
    "chain-break",
    "seq-gap",
    "reorder",
    "malformed",
    "non-canonical",
    "torn-tail",
    "clock-regression",
    "checkpoint-missing",
];

/// Parse a line strictly: a [`Record`] (unknown fields refused), or why not.
///
/// # Errors
/// A message saying why the line is not a record.
pub fn parse_line(bytes: &[u8]) -> std::result::Result<Record, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str::<Record>(text).map_err(|e| format!("not a valid record: {e}"))
}

/// The running state of the chain check.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// Index of the next line in the whole log.
    pub index: u64,
    /// The `seq` the next record should carry.
    pub expected_seq: u64,
    /// SHA-256 (hex) of the previous line's bytes; what the next `prev` must be.
    pub prev: String,
    last_ts: Option<time::OffsetDateTime>,
    /// The last record that parsed (for ranges and `show`).
    pub last: Option<Record>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck::new()
    }
}

impl ChainCheck {
    /// At the start of the log.
    pub fn new() -> ChainCheck {
        ChainCheck::resume(0, 0, GENESIS_PREV.into())
    }

    /// Continue after `index` lines whose last had `seq = expected_seq - 1` and hash `prev`.
    pub fn resume(index: u64, expected_seq: u64, prev: String) -> ChainCheck {
        ChainCheck {
            index,
            expected_seq,
            prev,
            last_ts: None,
            last: None,
        }
    }

    /// Check one line; push findings into `out`. Returns the parsed record if it parses.
    pub fn check(
        &mut self,
        segment: &str,
        line_no: u64,
        bytes: &[u8],
        torn: bool,
        out: &mut Vec<Finding>,
    ) -> Option<Record> {
        let index = self.index;
        let mut push = |code, severity, seq, message: String| {
            out.push(Finding {
                code,
                severity,
                segment: segment.to_string(),
                line: line_no,
                index,
                seq,
                message,
            })
        };
        if torn {
            push(
                "torn-tail",
                Severity::Error,
                None,
                format!(
                    "the last line ({} bytes) has no final newline: a write was cut short",
                    bytes.len()
                ),
            );
        }
        let parsed = parse_line(bytes);
        let rec = match parsed {
            Err(why) => {
                push("malformed", Severity::Error, None, why);
                None
            }
            Ok(rec) => {
                let seq = Some(rec.seq);
                if rec.canonical_line().as_bytes() != bytes {
                    push(
                        "non-canonical",
                        Severity::Error,
                        seq,
                        "the line parses but is not in canonical form (sorted keys, no whitespace): it was not written by retort".into(),
                    );
                }
                if rec.seq > self.expected_seq {
                    push(
                        "seq-gap",
                        Severity::Error,
                        seq,
                        format!(
                            "expected seq {}, found {}: {} record(s) missing",
                            self.expected_seq,
                            rec.seq,
                            rec.seq - self.expected_seq
                        ),
                    );
                } else if rec.seq < self.expected_seq {
                    push(
                        "reorder",
                        Severity::Error,
                        seq,
                        format!(
                            "seq {} appears after seq {}: records are out of order or repeated",
                            rec.seq,
                            self.expected_seq - 1
                        ),
                    );
                }
                if rec.prev != self.prev {
                    push(
                        "chain-break",
                        Severity::Error,
                        seq,
                        format!(
                            "prev = {} but the previous line hashes to {}: a record before this one was changed, removed or inserted",
                            short(&rec.prev),
                            short(&self.prev)
                        ),
                    );
                }
                if let Ok(ts) = time::OffsetDateTime::parse(
                    &rec.ts,
                    &time::format_description::well_known::Rfc3339,
                ) {
                    if self.last_ts.is_some_and(|last| ts < last) {
                        push(
                            "clock-regression",
                            Severity::Warning,
                            seq,
                            format!("time {} is earlier than the previous record's", rec.ts),
                        );
                    }
                    self.last_ts = Some(ts);
                } else {
                    push(
                        "malformed",
                        Severity::Error,
                        seq,
                        format!("ts {:?} is not an RFC 3339 time", rec.ts),
                    );
                }
                self.expected_seq = rec.seq.saturating_add(1);
                Some(rec)
            }
        };
        self.prev = line_hash(bytes);
        self.index += 1;
        if let Some(r) = &rec {
            self.last = Some(r.clone());
        }
        rec
    }
}

fn short(h: &str) -> String {
    h.chars().take(16).collect::<String>() + "…"
}

/// The file name of a segment path, for messages.
pub fn seg_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
