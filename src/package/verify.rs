//! Verifying a package, partner side, offline, with the hospital's pinned public key.
//!
//! Numbered steps; each records ok / failed / skipped with a one-line detail:
//!
//! 1. `read`: the package is read safely into a snapshot (regular files only, safe paths,
//!    size limits; see [`super::export`]).
//! 2. `key`: a trusted key *file* that lives inside the package being checked (or a copy of
//!    it) is refused — it proves nothing ([`key_from_package`]); the trusted key is resolved (a
//!    fingerprint is compared with the embedded `keys/retort.pub.pem`) and the embedded key
//!    files are the same key.
//! 3. `envelope`: `provenance.intoto.jsonl` is exactly one DSSE envelope line.
//! 4. `signature`: a signature verifies with the trusted key over PAE(payloadType, payload),
//!    before the payload is parsed.
//! 5. `payload-type`: the signed payloadType is `application/vnd.in-toto+json`.
//! 6. `statement`: the verified payload is an in-toto Statement v1 with an SLSA v1 predicate.
//! 7. `subjects`: every subject exists and has the signed SHA-256.
//! 8. `unlisted`: no file under `data/` is missing from the subjects, and nothing else is in the
//!    package beyond the known files.
//! 9. `sums-signature`: the signify embedded signature of `SHA256SUMS.sig` verifies with the
//!    trusted key and embeds exactly `SHA256SUMS`.
//! 10. `sums`: every line of `SHA256SUMS` matches its file, and it covers `data/*`,
//!     `provenance.intoto.jsonl` and the audit checkpoint.
//! 11. `checkpoint`: the audit checkpoint, if present, is the byproduct the statement signs.
//! 12. `claims`: `privacy_report.json` states epsilon > 0 and 0 < delta < 1, equal to the
//!     statement's.
//!
//! Steps that depend on an earlier failed step are skipped (never run on unverified data). The
//! package passes only if every step passes; the first failed step decides the error code.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::dsse::{Envelope, EnvelopeError, PAYLOAD_TYPE};
use super::export::{read_package, Limits, ReadError, Snapshot};
use super::manifest::{parse_claims, parse_sums};
use super::statement::Statement;
use super::{Failure, VerifyError};
use crate::error::IoError;
use crate::keys::PublicKey;

/// The key a partner trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustedKey {
    /// The public key itself (from an SPKI PEM or signify file).
    Key(PublicKey),
    /// The SHA-256 fingerprint of the raw key (lowercase hex), compared with the embedded key.
    Fingerprint(String),
    /// A public key read from a file ([`TrustedKey::from_arg`]). Where it was read from is kept
    /// so that [`verify_package`] can refuse a key taken from the package it checks.
    File {
        /// The key.
        key: PublicKey,
        /// The file it was read from, as given.
        path: PathBuf,
    },
}

impl TrustedKey {
    /// Interpret a `--key` argument: an existing file holding an SPKI PEM or a signify/minisign
    /// public key, or else a fingerprint (64 hex digits, optionally `SHA256:`-prefixed, colons
    /// allowed).
    ///
    /// # Errors
    /// `key-io` reading the file; `key-malformed` when neither form fits.
    pub fn from_arg(arg: &str) -> crate::keys::Result<TrustedKey> {
        let p = Path::new(arg);
        if p.is_file() {
            let md = std::fs::metadata(p).map_err(|e| IoError::new("reading", p, e))?;
            if md.len() > 64 * 1024 {
                return Err(crate::keys::Error::Malformed {
                    what: arg.into(),
                    why: "a public key file is under 1 KiB; this one is far larger".into(),
                });
            }
            let text = std::fs::read_to_string(p).map_err(|e| IoError::new("reading", p, e))?;
            return Ok(TrustedKey::File {
                key: PublicKey::parse(&text, arg)?,
                path: p.to_path_buf(),
            });
        }
        let fp: String = arg
            .trim()
            .trim_start_matches("SHA256:")
            .trim_start_matches("sha256:")
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if super::statement::is_lower_hex64(&fp) {
            return Ok(TrustedKey::Fingerprint(fp));
        }
        Err(crate::keys::Error::Malformed {
            what: arg.into(),
            why: "not a key file, and not a SHA-256 fingerprint (64 hex digits)".into(),
        })
    }
}

/// One verification step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based number.
    pub n: usize,
    /// Name (`signature`, `subjects`, …).
    pub step: &'static str,
    /// Passed.
    pub ok: bool,
    /// Not run because an earlier step it depends on failed.
    pub skipped: bool,
    /// What was checked or found.
    pub detail: String,
}

/// The result of verifying a package.
#[derive(Debug)]
pub struct Verification {
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The verified epsilon (when the claims step passed).
    pub epsilon: Option<f64>,
    /// The verified delta.
    pub delta: Option<f64>,
    /// Fingerprint of the key that verified the package.
    pub key_sha256: Option<String>,
    /// The verified statement (when the signature and statement steps passed).
    pub statement: Option<Statement>,
    error: Option<VerifyError>,
}

impl Verification {
    /// Whether every step passed.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The first failure, if any.
    pub fn error(&self) -> Option<&VerifyError> {
        self.error.as_ref()
    }

    /// `{"ok","steps":[{"n","step","ok","skipped","detail"}],"epsilon","delta","key_sha256"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "steps": self.steps.iter().map(|s| json!({
                "n": s.n, "step": s.step, "ok": s.ok, "skipped": s.skipped, "detail": s.detail,
            })).collect::<Vec<_>>(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "key_sha256": self.key_sha256,
            "failed_step": self.error.as_ref().map(|e| e.failure().name),
            "code": self.error.as_ref().map(crate::error::Coded::code),
        })
    }

    /// `Ok(self)` if every step passed, else the first failure with the full report attached.
    ///
    /// # Errors
    /// The first failed step's [`VerifyError`].
    pub fn into_result(mut self) -> Result<Verification, VerifyError> {
        let json = self.to_json();
        match self.error.take() {
            None => Ok(self),
            Some(e) => Err(e.with_report(json)),
        }
    }

    /// Human-readable report, one line per step.
    pub fn human(&self) -> String {
        let mut s = String::new();
        for st in &self.steps {
            let mark = if st.skipped {
                "skip"
            } else if st.ok {
                "ok"
            } else {
                "FAIL"
            };
            s.push_str(&format!(
                "[{:>2}] {mark:<4} {:<15} {}\n",
                st.n, st.step, st.detail
            ));
        }
        s
    }
}

type Kind = fn(Failure) -> VerifyError;

struct Steps {
    steps: Vec<Step>,
    error: Option<VerifyError>,
}

impl Steps {
    fn pass(&mut self, step: &'static str, detail: impl Into<String>) {
        let n = self.steps.len() + 1;
        self.steps.push(Step {
            n,
            step,
            ok: true,
            skipped: false,
            detail: detail.into(),
        });
    }
    fn fail(&mut self, step: &'static str, kind: Kind, detail: impl Into<String>) {
        let n = self.steps.len() + 1;
        let detail = detail.into();
        tracing::info!("verify step {n} {step}: FAIL {detail}");
        if self.error.is_none() {
            self.error = Some(kind(Failure {
                step: n,
                name: step,
                detail: detail.clone(),
                report: None,
            }));
        }
        self.steps.push(Step {
            n,
            step,
            ok: false,
            skipped: false,
            detail,
        });
    }
    fn skip(&mut self, step: &'static str, why: &str) {
        let n = self.steps.len() + 1;
        self.steps.push(Step {
            n,
            step,
            ok: false,
            skipped: true,
            detail: format!("not run: {why}"),
        });
    }
    fn record(&mut self, step: &'static str, r: Result<String, (Kind, String)>) -> bool {
        match r {
            Ok(d) => {
                self.pass(step, d);
                true
            }
            Err((k, d)) => {
                self.fail(step, k, d);
                false
            }
        }
    }
}

/// Read a package (directory, tar or gzipped tar) and verify it.
///
/// # Errors
/// Only when `path` itself cannot be read (missing, permissions: `package-io`) or is
/// compressed with something other than gzip (`package-compressed`): that is the caller's
/// input, not the package's fault. Everything the package does wrong is a failed step in the
/// result.
pub fn verify_package(
    path: &Path,
    key: &TrustedKey,
    limits: &Limits,
) -> Result<Verification, super::Error> {
    match read_package(path, limits) {
        Ok(snap) => Ok(verify_snapshot_from(&snap, key, Some(path))),
        Err(ReadError::Io(e)) => Err(e.into()),
        Err(ReadError::Compressed { path, format }) => {
            Err(super::Error::Compressed { path, format })
        }
        Err(ReadError::Unsafe(why)) => {
            let mut st = Steps {
                steps: Vec::new(),
                error: None,
            };
            st.fail("read", VerifyError::Unsafe, why);
            for s in STEP_NAMES.iter().skip(1) {
                st.skip(s, "the package could not be read safely");
            }
            Ok(Verification {
                steps: st.steps,
                epsilon: None,
                delta: None,
                key_sha256: None,
                statement: None,
                error: st.error,
            })
        }
    }
}

/// The step names, in order.
pub const STEP_NAMES: [&str; 12] = [
    "read",
    "key",
    "envelope",
    "signature",
    "payload-type",
    "statement",
    "subjects",
    "unlisted",
    "sums-signature",
    "sums",
    "checkpoint",
    "claims",
];

fn missing(path: &str) -> (Kind, String) {
    (VerifyError::MissingFile, format!("{path} is missing"))
}

/// Verify an already read package (the trusted key's origin cannot be checked against a
/// package that has no path: [`verify_package`] does that).
pub fn verify_snapshot(snap: &Snapshot, trusted: &TrustedKey) -> Verification {
    verify_snapshot_from(snap, trusted, None)
}

/// Why a trusted key file proves nothing about the package at `package` (read into `snap`):
/// `Some(reason)` when the file is inside the package directory (compared as canonical paths,
/// so symbolic links and `..` do not hide it), is a hard link to one of the package's files,
/// or has the bytes of the package's own key file and sits inside a copy of the package (an
/// ancestor folder holds this package's `provenance.intoto.jsonl` or `SHA256SUMS`, byte for
/// byte — for example the extracted copy of the tar being verified). A key file elsewhere that
/// merely equals the package's key is the normal case and is not refused.
pub fn key_from_package(package: &Path, key_file: &Path, snap: &Snapshot) -> Option<String> {
    let key_canon = std::fs::canonicalize(key_file).ok()?;
    if let Ok(pkg_canon) = std::fs::canonicalize(package) {
        if pkg_canon.is_dir() {
            if key_canon.starts_with(&pkg_canon) {
                return Some(format!(
                    "{} is inside the package {} being verified",
                    key_file.display(),
                    package.display()
                ));
            }
            if let Some(rel) = hard_link_into(&pkg_canon, &key_canon, snap) {
                return Some(format!(
                    "{} is a hard link to the package's own {rel}",
                    key_file.display()
                ));
            }
        }
    }
    let key_bytes = std::fs::read(&key_canon).ok()?;
    let own = [super::PUB_PEM, super::PUB_SIGNIFY]
        .iter()
        .any(|rel| snap.content(rel) == Some(key_bytes.as_slice()));
    if !own {
        return None;
    }
    for dir in key_canon.ancestors().skip(1).take(MAX_PACKAGE_DEPTH) {
        for marker in [super::PROVENANCE, super::SUMS] {
            let Some(want) = snap.content(marker) else {
                continue;
            };
            let p = dir.join(marker);
            let same_size = std::fs::metadata(&p)
                .map(|m| m.is_file() && m.len() == want.len() as u64)
                .unwrap_or(false);
            if same_size && std::fs::read(&p).is_ok_and(|b| b == want) {
                return Some(format!(
                    "{} is the package's own key file, inside {}, a copy of the package being verified (same {marker})",
                    key_file.display(),
                    dir.display()
                ));
            }
        }
    }
    None
}

/// How many folders up from a key file [`key_from_package`] looks for a copy of the package.
const MAX_PACKAGE_DEPTH: usize = 8;

/// The package file (relative path) that `key` is a hard link to, if any.
#[cfg(unix)]
fn hard_link_into(pkg: &Path, key: &Path, snap: &Snapshot) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let k = std::fs::metadata(key).ok()?;
    snap.files.keys().find_map(|rel| {
        let m = std::fs::metadata(pkg.join(rel)).ok()?;
        (m.dev() == k.dev() && m.ino() == k.ino()).then(|| rel.clone())
    })
}

#[cfg(not(unix))]
fn hard_link_into(_pkg: &Path, _key: &Path, _snap: &Snapshot) -> Option<String> {
    None
}

/// [`verify_snapshot`], with the path the package was read from (to check where a trusted key
/// file comes from).
fn verify_snapshot_from(
    snap: &Snapshot,
    trusted: &TrustedKey,
    package: Option<&Path>,
) -> Verification {
    let mut st = Steps {
        steps: Vec::new(),
        error: None,
    };
    let total: u64 = snap.files.values().map(|f| f.size).sum();
    st.pass(
        "read",
        format!(
            "{} files, {total} bytes, regular files only, safe paths",
            snap.files.len()
        ),
    );

    // 2. key
    let from_package = match (trusted, package) {
        (TrustedKey::File { path, .. }, Some(pkg)) => key_from_package(pkg, path, snap),
        _ => None,
    };
    let key = match from_package {
        Some(why) => Err((
            VerifyError::KeyFromPackage as Kind,
            format!(
                "the trusted key {why}: a key taken from the package proves nothing, since whoever altered the package could have replaced its key as well"
            ),
        )),
        None => resolve_key(snap, trusted),
    };
    let key = match key {
        Ok(k) => {
            st.pass(
                "key",
                format!(
                    "ed25519 SHA256 {} (embedded key files agree)",
                    k.fingerprint()
                ),
            );
            Some(k)
        }
        Err((kind, d)) => {
            st.fail("key", kind, d);
            None
        }
    };

    // 3. envelope
    let env = match snap.content(super::PROVENANCE) {
        None => {
            let (k, d) = missing(super::PROVENANCE);
            st.fail("envelope", k, d);
            None
        }
        Some(b) => match Envelope::parse_line(b) {
            Ok(e) => {
                st.pass(
                    "envelope",
                    format!("one DSSE envelope, {} signature(s)", e.signatures.len()),
                );
                Some(e)
            }
            Err(e) => {
                st.fail("envelope", VerifyError::EnvelopeMalformed, e.to_string());
                None
            }
        },
    };

    // 4. signature over PAE, before any parsing of the payload.
    let payload = match (&env, &key) {
        (Some(env), Some(k)) => match env.verified_payload(k) {
            Ok(p) => {
                st.pass(
                    "signature",
                    format!(
                        "Ed25519 over PAE({}, {} bytes) verifies",
                        env.payload_type,
                        p.len()
                    ),
                );
                Some(p)
            }
            Err(EnvelopeError::Malformed(m)) => {
                st.fail("signature", VerifyError::EnvelopeMalformed, m);
                None
            }
            Err(e) => {
                st.fail("signature", VerifyError::SignatureInvalid, e.to_string());
                None
            }
        },
        _ => {
            st.skip("signature", "needs the key and the envelope");
            None
        }
    };

    // 5. payload type (signed, so only meaningful after step 4).
    let payload = match (payload, &env) {
        (Some(p), Some(env)) => {
            if env.payload_type == PAYLOAD_TYPE {
                st.pass("payload-type", PAYLOAD_TYPE);
                Some(p)
            } else {
                st.fail(
                    "payload-type",
                    VerifyError::PayloadType,
                    format!(
                        "signed payloadType is {:?}, expected {PAYLOAD_TYPE}",
                        env.payload_type
                    ),
                );
                None
            }
        }
        _ => {
            st.skip("payload-type", "the signature was not verified");
            None
        }
    };

    // 6. statement
    let stmt = match payload {
        Some(p) => match Statement::from_verified_payload(&p) {
            Ok(s) => {
                st.pass(
                    "statement",
                    format!(
                        "in-toto Statement v1, SLSA provenance v1, {} subjects",
                        s.subject.len()
                    ),
                );
                Some(s)
            }
            Err(e) => {
                st.fail("statement", VerifyError::StatementMalformed, e);
                None
            }
        },
        None => {
            st.skip("statement", "the payload is not verified");
            None
        }
    };

    // 7. subjects, 8. unlisted
    match &stmt {
        Some(s) => {
            let r = check_subjects(snap, s);
            st.record("subjects", r);
            let r = check_unlisted(snap, s);
            st.record("unlisted", r);
        }
        None => {
            st.skip("subjects", "no verified statement");
            st.skip("unlisted", "no verified statement");
        }
    }

    // 9. sums signature, 10. sums
    match &key {
        Some(k) => {
            let r = check_sums_signature(snap, k);
            if st.record("sums-signature", r) {
                let r = check_sums(snap);
                st.record("sums", r);
            } else {
                st.skip("sums", "SHA256SUMS is not verified");
            }
        }
        None => {
            st.skip("sums-signature", "no trusted key");
            st.skip("sums", "no trusted key");
        }
    }

    // 11. checkpoint, 12. claims
    let mut claims = None;
    match &stmt {
        Some(s) => {
            let r = check_checkpoint(snap, s);
            st.record("checkpoint", r);
            match check_claims(snap, s) {
                Ok(c) => {
                    st.pass(
                        "claims",
                        format!(
                            "epsilon {} delta {:e}, as signed in the statement",
                            c.epsilon, c.delta
                        ),
                    );
                    claims = Some(c);
                }
                Err((k, d)) => st.fail("claims", k, d),
            }
        }
        None => {
            st.skip("checkpoint", "no verified statement");
            st.skip("claims", "no verified statement");
        }
    }

    let ok = st.error.is_none();
    Verification {
        steps: st.steps,
        epsilon: claims.filter(|_| ok).map(|c| c.epsilon),
        delta: claims.filter(|_| ok).map(|c| c.delta),
        key_sha256: key.map(|k| k.fingerprint()),
        statement: stmt.filter(|_| ok),
        error: st.error,
    }
}

fn embedded_key(snap: &Snapshot, path: &str) -> Result<PublicKey, (Kind, String)> {
    let b = snap.content(path).ok_or_else(|| missing(path))?;
    let text = std::str::from_utf8(b).map_err(|_| {
        (
            VerifyError::KeyMismatch as Kind,
            format!("{path} is not text"),
        )
    })?;
    let k = PublicKey::parse(text, path)
        .map_err(|e| (VerifyError::KeyMismatch as Kind, e.to_string()))?;
    // The key files are informational, but every byte is still checked: they must be exactly
    // what Retort writes for this key.
    let canonical = if path == super::PUB_PEM {
        k.spki_pem()
    } else {
        super::signify::pub_file(&k)
    };
    if text != canonical {
        return Err((
            VerifyError::KeyMismatch,
            format!("{path} is not the exact file Retort writes for this key (modified)"),
        ));
    }
    Ok(k)
}

fn resolve_key(snap: &Snapshot, trusted: &TrustedKey) -> Result<PublicKey, (Kind, String)> {
    let pem = embedded_key(snap, super::PUB_PEM)?;
    let sig = embedded_key(snap, super::PUB_SIGNIFY)?;
    if pem != sig {
        return Err((
            VerifyError::KeyMismatch,
            format!(
                "{} and {} hold different keys",
                super::PUB_PEM,
                super::PUB_SIGNIFY
            ),
        ));
    }
    match trusted {
        TrustedKey::Key(k) | TrustedKey::File { key: k, .. } if *k == pem => Ok(*k),
        TrustedKey::Key(k) | TrustedKey::File { key: k, .. } => Err((
            VerifyError::KeyMismatch,
            format!(
                "the package's key is SHA256 {}, not the pinned key SHA256 {}",
                pem.fingerprint(),
                k.fingerprint()
            ),
        )),
        TrustedKey::Fingerprint(fp) => {
            if crate::keys::ct_eq(pem.fingerprint().as_bytes(), fp.as_bytes()) {
                Ok(pem)
            } else {
                Err((
                    VerifyError::KeyMismatch,
                    format!(
                        "the package's key is SHA256 {}, not the pinned fingerprint {fp}",
                        pem.fingerprint()
                    ),
                ))
            }
        }
    }
}

fn check_subjects(snap: &Snapshot, s: &Statement) -> Result<String, (Kind, String)> {
    for (name, want) in s.subject_digests() {
        let f = snap.files.get(name).ok_or_else(|| missing(name))?;
        if f.sha256 != want {
            return Err((
                VerifyError::DigestMismatch,
                format!("{name}: sha256 {} but the statement signs {want}", f.sha256),
            ));
        }
    }
    Ok(format!("{} subject digests match", s.subject.len()))
}

fn check_unlisted(snap: &Snapshot, s: &Statement) -> Result<String, (Kind, String)> {
    let subjects = s.subject_digests();
    let known = [
        super::PROVENANCE,
        super::SUMS,
        super::SUMS_SIG,
        super::PUB_PEM,
        super::PUB_SIGNIFY,
        super::CHECKPOINT,
    ];
    for name in snap.files.keys() {
        let listed = subjects.contains_key(name.as_str());
        if name.starts_with("data/") && !listed {
            return Err((
                VerifyError::UnlistedFile,
                format!("{name} is under data/ but not a signed subject"),
            ));
        }
        if !listed && !known.contains(&name.as_str()) {
            return Err((
                VerifyError::UnlistedFile,
                format!("{name} is not part of a Retort package"),
            ));
        }
    }
    Ok("every file under data/ is a signed subject; no foreign files".into())
}

fn check_sums_signature(snap: &Snapshot, key: &PublicKey) -> Result<String, (Kind, String)> {
    let sig = snap
        .content(super::SUMS_SIG)
        .ok_or_else(|| missing(super::SUMS_SIG))?;
    let sums = snap
        .content(super::SUMS)
        .ok_or_else(|| missing(super::SUMS))?;
    let bad = |d: String| (VerifyError::SumsSignatureInvalid as Kind, d);
    let e = super::signify::parse_embedded(sig)
        .map_err(|m| bad(format!("{}: {m}", super::SUMS_SIG)))?;
    if e.comment != super::signify::SUMS_SIG_COMMENT {
        return Err(bad(format!(
            "{}: the untrusted comment is not the one Retort writes (modified)",
            super::SUMS_SIG
        )));
    }
    if !key.verify(&e.message, &e.sig) {
        return Err(bad(format!(
            "{}: the signify signature does not verify with the trusted key",
            super::SUMS_SIG
        )));
    }
    if e.message != sums {
        return Err(bad(format!(
            "{} embeds a different {} than the one in the package",
            super::SUMS_SIG,
            super::SUMS
        )));
    }
    Ok(format!("signify signature over {} verifies", super::SUMS))
}

fn check_sums(snap: &Snapshot) -> Result<String, (Kind, String)> {
    let sums = snap
        .content(super::SUMS)
        .ok_or_else(|| missing(super::SUMS))?;
    let bad = |d: String| (VerifyError::SumsMismatch as Kind, d);
    let list = parse_sums(sums).map_err(bad)?;
    for (path, want) in &list {
        let f = snap.files.get(path).ok_or_else(|| missing(path))?;
        if &f.sha256 != want {
            return Err(bad(format!(
                "{path}: sha256 {} but SHA256SUMS says {want}",
                f.sha256
            )));
        }
    }
    for name in snap.files.keys() {
        let must =
            name.starts_with("data/") || name == super::PROVENANCE || name == super::CHECKPOINT;
        if must && !list.contains_key(name) {
            return Err(bad(format!("{name} is not listed in SHA256SUMS")));
        }
    }
    Ok(format!("{} files match SHA256SUMS", list.len()))
}

fn check_checkpoint(snap: &Snapshot, s: &Statement) -> Result<String, (Kind, String)> {
    match (snap.files.get(super::CHECKPOINT), s.checkpoint_digest()) {
        (None, None) => Ok("no audit checkpoint in this package".into()),
        (None, Some(_)) => Err(missing(super::CHECKPOINT)),
        (Some(_), None) => Err((
            VerifyError::UnlistedFile,
            format!(
                "{} is present but the statement does not sign it",
                super::CHECKPOINT
            ),
        )),
        (Some(f), Some(want)) if f.sha256 == want => Ok(format!(
            "{} is the signed byproduct (check it with `retort audit verify --checkpoint`)",
            super::CHECKPOINT
        )),
        (Some(f), Some(want)) => Err((
            VerifyError::DigestMismatch,
            format!(
                "{}: sha256 {} but the statement signs {want}",
                super::CHECKPOINT,
                f.sha256
            ),
        )),
    }
}

fn check_claims(snap: &Snapshot, s: &Statement) -> Result<super::manifest::Claims, (Kind, String)> {
    let bad = |d: String| (VerifyError::ClaimsInvalid as Kind, d);
    if !s.subject_digests().contains_key(super::PRIVACY_REPORT) {
        return Err(bad(format!(
            "{} is not a signed subject",
            super::PRIVACY_REPORT
        )));
    }
    let b = snap
        .content(super::PRIVACY_REPORT)
        .ok_or_else(|| missing(super::PRIVACY_REPORT))?;
    let c = parse_claims(b).map_err(bad)?;
    let p = &s.predicate;
    // The package's guarantee (every share it carries, composed); packages made before the
    // budget split state only the run's privacy block.
    let s_eps = p
        .pointer("/buildDefinition/internalParameters/guarantee/epsilon")
        .or_else(|| p.pointer("/buildDefinition/internalParameters/privacy/epsilon"))
        .and_then(Value::as_f64);
    let s_delta = p
        .pointer("/buildDefinition/externalParameters/delta")
        .and_then(Value::as_f64);
    if s_eps != Some(c.epsilon) || s_delta != Some(c.delta) {
        return Err(bad(format!(
            "the report says epsilon {} delta {} but the statement says {s_eps:?} / {s_delta:?}",
            c.epsilon, c.delta
        )));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_args() {
        let fp = "a".repeat(64);
        assert_eq!(
            TrustedKey::from_arg(&fp).unwrap(),
            TrustedKey::Fingerprint(fp.clone())
        );
        assert_eq!(
            TrustedKey::from_arg(&format!("SHA256:{}", fp.to_uppercase())).unwrap(),
            TrustedKey::Fingerprint(fp)
        );
        assert!(TrustedKey::from_arg("nonsense").is_err());
        let d = tempfile::tempdir().unwrap();
        let k = crate::keys::SigningKey::generate().unwrap().public();
        let p = d.path().join("k.pem");
        std::fs::write(&p, k.spki_pem()).unwrap();
        assert_eq!(
            TrustedKey::from_arg(p.to_str().unwrap()).unwrap(),
            TrustedKey::File { key: k, path: p }
        );
        let p = d.path().join("k.pub");
        std::fs::write(&p, k.signify_pub("c")).unwrap();
        assert_eq!(
            TrustedKey::from_arg(p.to_str().unwrap()).unwrap(),
            TrustedKey::File { key: k, path: p }
        );
    }
}
