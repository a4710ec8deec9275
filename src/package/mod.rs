//! Signed packages: what a data partner receives, and how they check it offline.
//!
//! A package is a directory (optionally also a plain POSIX tar of it; the tar is not what is
//! signed) with this layout (`docs/partners.md`):
//!
//! ```text
//! data/synthetic.parquet        the synthetic images (partner format)
//! data/privacy_report.json      the guarantee in numbers and plain words, utility figures
//! data/contact_sheet.png        every synthetic image, one row per class
//! provenance.intoto.jsonl       ONE line: DSSE envelope of an in-toto Statement v1 (SLSA v1 predicate)
//! audit-checkpoint.txt          the newest signed audit checkpoint (when the audit log provides one)
//! SHA256SUMS, SHA256SUMS.sig    BSD-style sums + signify embedded signature (same Ed25519 key)
//! keys/retort.pub.pem           the signing key as SPKI PEM (informational: pin its fingerprint)
//! keys/retort.signify.pub       the signing key as a signify/minisign public key
//! ```
//!
//! [`sign`] builds and signs it, [`verify`] checks it; both share the signify file formats in
//! [`signify`] and the DSSE envelope in [`dsse`], and neither imports the other.
//!
//! Guarantees:
//! - Every file under `data/` is a subject of the signed statement, and every signed file is
//!   also listed in the signify-signed `SHA256SUMS`, so `openssl`, python `securesystemslib`
//!   and `signify-openbsd -C` can each check the package without Retort.
//! - The signed bytes are deterministic: packaging the same run twice for the same partner with
//!   the same key gives identical data files and an identical statement apart from the fields
//!   documented in [`statement`] (`retort_packagedOn` and the audit-checkpoint byproduct).
//! - Nothing private is published: the source dataset appears only as its keyed fingerprint
//!   (HMAC-SHA256 with the workspace secret); no noise seed, no PHI, no real-data counts per class.
//! - [`verify`] checks the DSSE signature over PAE *before* parsing the payload, runs numbered
//!   steps, and is safe on hostile input (see [`export`] for the tar reader's limits).

pub mod boundary;
pub mod create;
pub mod dsse;
pub mod export;
pub mod manifest;
pub mod sign;
pub mod signify;
pub mod statement;
pub mod verify;

use std::path::PathBuf;

use crate::error::{Class, Coded, IoError};

pub use dsse::{keyid, pae, Envelope, PAYLOAD_TYPE};
pub use export::{read_package, write_tar, Limits, Snapshot};
pub use sign::{build_package, publish, BuildInputs, Built, PublishedPackage};
pub use verify::{verify_package, verify_snapshot, Step, TrustedKey, Verification};

/// Relative path of the synthetic data inside a package.
pub const SYNTHETIC: &str = "data/synthetic.parquet";
/// Relative path of the privacy report.
pub const PRIVACY_REPORT: &str = "data/privacy_report.json";
/// Relative path of the contact sheet.
pub const CONTACT_SHEET: &str = "data/contact_sheet.png";
/// Relative path of the DSSE envelope (one JSON line).
pub const PROVENANCE: &str = "provenance.intoto.jsonl";
/// Relative path of the audit checkpoint.
pub const CHECKPOINT: &str = "audit-checkpoint.txt";
/// Relative path of the checksum list.
pub const SUMS: &str = "SHA256SUMS";
/// Relative path of the signify embedded signature of the checksum list.
pub const SUMS_SIG: &str = "SHA256SUMS.sig";
/// Relative path of the SPKI PEM public key.
pub const PUB_PEM: &str = "keys/retort.pub.pem";
/// Relative path of the signify public key.
pub const PUB_SIGNIFY: &str = "keys/retort.signify.pub";

/// Errors while building, publishing or exporting a package.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the run must contain is missing.
    #[error("run {run:?} lacks {path}")]
    RunFileMissing {
        /// The run id.
        run: String,
        /// The missing file.
        path: PathBuf,
    },
    /// A value of the package is neither declared public nor released by an accounted
    /// mechanism the package's guarantee covers (see [`boundary`]); nothing was signed.
    #[error("refusing to sign: {0}")]
    Unreleased(#[from] boundary::Violation),
    /// The export destination already holds this package.
    #[error("{path} already exists; refusing to overwrite it")]
    Exists {
        /// The existing path.
        path: PathBuf,
    },
    /// The run cannot be packaged (missing, incomplete, not charged).
    #[error(transparent)]
    Run(#[from] crate::run::Error),
    /// The policy refused the package.
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    /// The ledger cannot be read or disagrees with the log.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
    /// The audit log cannot be written (nothing is published).
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    /// Accounting failed.
    #[error(transparent)]
    Dp(#[from] crate::dp::Error),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] crate::keys::Error),
    /// The run's synthetic set is not in the partner format (its own code).
    #[error(transparent)]
    Dataset(#[from] crate::dataset::Error),
    /// File-system error.
    #[error(transparent)]
    Io(#[from] IoError),
    /// `verify` was given a compressed file it does not read (xz, zstd, bzip2).
    #[error("{} is {format}-compressed; retort verify reads a package directory, a tar or a gzipped tar", path.display())]
    Compressed {
        /// The file.
        path: PathBuf,
        /// The compression.
        format: &'static str,
    },
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] = &[
        "package-run-file-missing",
        "package-unreleased-field",
        "package-exists",
        "package-key",
        "package-io",
        "package-compressed",
    ];

    fn inner(&self) -> Option<&dyn Coded> {
        Some(match self {
            Error::Run(e) => e,
            Error::Policy(e) => e,
            Error::Ledger(e) => e,
            Error::Audit(e) => e,
            Error::Dp(e) => e,
            Error::Dataset(e) => e,
            _ => return None,
        })
    }
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::RunFileMissing { .. } => "package-run-file-missing",
            Error::Unreleased(_) => "package-unreleased-field",
            Error::Exists { .. } => "package-exists",
            Error::Key(_) => "package-key",
            Error::Io(_) => "package-io",
            Error::Compressed { .. } => "package-compressed",
            _ => self.inner().map_or("package-io", |e| e.code()),
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::RunFileMissing { .. } => {
                "the run directory was changed outside retort; package another run or distill again"
                    .into()
            }
            Error::Unreleased(_) => "nothing was published. A released field or column needs its share in the run's plan (a soft_label column needs the `teacher` share: distill with the DP teacher); otherwise this is a bug in Retort's release boundary or a changed run record — report it with the field's path".into(),
            Error::Exists { .. } => {
                "choose another --out directory or move the old copy away".into()
            }
            Error::Key(e) => return e.hint(),
            Error::Io(e) => return e.hint(),
            Error::Compressed { path, format } => format!(
                "decompress it first (e.g. `{} {}`), then verify the .tar or the unpacked directory",
                match *format {
                    "xz" => "unxz",
                    "zstd" => "unzstd",
                    "bzip2" => "bunzip2",
                    _ => "gunzip",
                },
                path.display()
            ),
            _ => return self.inner().and_then(|e| e.hint()),
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::Unreleased(_) => Class::Refused,
            Error::RunFileMissing { .. }
            | Error::Exists { .. }
            | Error::Key(_)
            | Error::Io(_)
            | Error::Compressed { .. } => Class::Input,
            _ => self.inner().map_or(Class::Input, |e| e.class()),
        }
    }
}

/// Result for package building.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a verification failed: the step number and name, and what was found.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The step number (1-based, as printed).
    pub step: usize,
    /// The step name (`signature`, `subjects`, …).
    pub name: &'static str,
    /// What was found.
    pub detail: String,
    /// The whole report as JSON (`{"ok","steps","epsilon","delta"}`), for `--json` output.
    pub report: Option<Box<serde_json::Value>>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} ({}): {}", self.step, self.name, self.detail)
    }
}

/// Verification failures (exit 4): one variant, and one stable code, per kind of failed step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The package could not be read safely (path traversal, symlink, special file, a file over
    /// the size limits, malformed tar).
    #[error("package refused at {0}")]
    Unsafe(Failure),
    /// A required file is missing.
    #[error("package incomplete at {0}")]
    MissingFile(Failure),
    /// The trusted key (a fingerprint) does not match the key embedded in the package, or the
    /// embedded key files disagree with the trusted key.
    #[error("wrong key at {0}")]
    KeyMismatch(Failure),
    /// The trusted key file lives inside the package being verified (or a copy of it): it
    /// proves nothing, since whoever altered the package could have replaced its key.
    #[error("untrusted key at {0}")]
    KeyFromPackage(Failure),
    /// `provenance.intoto.jsonl` is not one well-formed DSSE envelope.
    #[error("malformed envelope at {0}")]
    EnvelopeMalformed(Failure),
    /// No envelope signature verifies with the trusted key over PAE(payloadType, payload).
    #[error("signature invalid at {0}")]
    SignatureInvalid(Failure),
    /// The signed payloadType is not `application/vnd.in-toto+json`.
    #[error("wrong payload type at {0}")]
    PayloadType(Failure),
    /// The signed payload is not an in-toto Statement v1 with an SLSA v1 predicate.
    #[error("malformed statement at {0}")]
    StatementMalformed(Failure),
    /// A file's SHA-256 differs from its signed subject digest.
    #[error("digest mismatch at {0}")]
    DigestMismatch(Failure),
    /// A file under `data/` (or elsewhere) is not covered by the signed statement.
    #[error("unlisted file at {0}")]
    UnlistedFile(Failure),
    /// The signify signature over `SHA256SUMS` does not verify, or its embedded copy differs.
    #[error("SHA256SUMS signature invalid at {0}")]
    SumsSignatureInvalid(Failure),
    /// `SHA256SUMS` is malformed, incomplete or disagrees with a file.
    #[error("SHA256SUMS mismatch at {0}")]
    SumsMismatch(Failure),
    /// The privacy claims are missing or malformed (epsilon, delta present and positive).
    #[error("privacy claims invalid at {0}")]
    ClaimsInvalid(Failure),
}

impl VerifyError {
    /// Stable codes of verification failures.
    pub const CODES: &'static [&'static str] = &[
        "verify-unsafe-package",
        "verify-missing-file",
        "verify-key-mismatch",
        "verify-key-from-package",
        "verify-envelope-malformed",
        "verify-signature-invalid",
        "verify-payload-type",
        "verify-statement-malformed",
        "verify-digest-mismatch",
        "verify-unlisted-file",
        "verify-sums-signature-invalid",
        "verify-sums-mismatch",
        "verify-claims-invalid",
    ];

    /// The failed step.
    pub fn failure(&self) -> &Failure {
        match self {
            VerifyError::Unsafe(f)
            | VerifyError::MissingFile(f)
            | VerifyError::KeyMismatch(f)
            | VerifyError::KeyFromPackage(f)
            | VerifyError::EnvelopeMalformed(f)
            | VerifyError::SignatureInvalid(f)
            | VerifyError::PayloadType(f)
            | VerifyError::StatementMalformed(f)
            | VerifyError::DigestMismatch(f)
            | VerifyError::UnlistedFile(f)
            | VerifyError::SumsSignatureInvalid(f)
            | VerifyError::SumsMismatch(f)
            | VerifyError::ClaimsInvalid(f) => f,
        }
    }

    fn failure_mut(&mut self) -> &mut Failure {
        match self {
            VerifyError::Unsafe(f)
            | VerifyError::MissingFile(f)
            | VerifyError::KeyMismatch(f)
            | VerifyError::KeyFromPackage(f)
            | VerifyError::EnvelopeMalformed(f)
            | VerifyError::SignatureInvalid(f)
            | VerifyError::PayloadType(f)
            | VerifyError::StatementMalformed(f)
            | VerifyError::DigestMismatch(f)
            | VerifyError::UnlistedFile(f)
            | VerifyError::SumsSignatureInvalid(f)
            | VerifyError::SumsMismatch(f)
            | VerifyError::ClaimsInvalid(f) => f,
        }
    }

    /// Attach the full report (JSON) so `--json` output can carry every step.
    pub fn with_report(mut self, report: serde_json::Value) -> VerifyError {
        self.failure_mut().report = Some(Box::new(report));
        self
    }

    /// The full report, when attached.
    pub fn report(&self) -> Option<&serde_json::Value> {
        self.failure().report.as_deref()
    }
}

impl Coded for VerifyError {
    fn code(&self) -> &'static str {
        match self {
            VerifyError::Unsafe(_) => "verify-unsafe-package",
            VerifyError::MissingFile(_) => "verify-missing-file",
            VerifyError::KeyMismatch(_) => "verify-key-mismatch",
            VerifyError::KeyFromPackage(_) => "verify-key-from-package",
            VerifyError::EnvelopeMalformed(_) => "verify-envelope-malformed",
            VerifyError::SignatureInvalid(_) => "verify-signature-invalid",
            VerifyError::PayloadType(_) => "verify-payload-type",
            VerifyError::StatementMalformed(_) => "verify-statement-malformed",
            VerifyError::DigestMismatch(_) => "verify-digest-mismatch",
            VerifyError::UnlistedFile(_) => "verify-unlisted-file",
            VerifyError::SumsSignatureInvalid(_) => "verify-sums-signature-invalid",
            VerifyError::SumsMismatch(_) => "verify-sums-mismatch",
            VerifyError::ClaimsInvalid(_) => "verify-claims-invalid",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            VerifyError::KeyMismatch(_) | VerifyError::SignatureInvalid(_) | VerifyError::SumsSignatureInvalid(_) => {
                "do not use this package: it was not signed by the key you pinned (check the fingerprint with the hospital out of band)".into()
            }
            VerifyError::KeyFromPackage(_) => {
                "pin the hospital's key instead of taking it from the package: `retort verify PKG --key <fingerprint>` with the fingerprint `retort keys show` prints at the hospital, obtained out of band (phone, letter, contract), or a copy of the public key the hospital sent you separately".into()
            }
            VerifyError::Unsafe(_) => {
                "do not unpack or use this package; ask the hospital for a fresh copy".into()
            }
            _ => "do not use this package: it was modified or damaged after signing; ask the hospital for a fresh copy".into(),
        })
    }
    fn class(&self) -> Class {
        Class::Verification
    }
}

/// Fuzz hook: parse an envelope and verify it against a fixed key; must never panic.
/// (Also compiled in tests, so it cannot rot.)
#[cfg(any(fuzzing, test))]
pub fn fuzz_envelope(data: &[u8]) {
    let key = crate::keys::PublicKey([7u8; 32]);
    if let Ok(env) = dsse::Envelope::parse_line(data) {
        let _ = env.verified_payload(&key);
    }
    let _ = statement::Statement::from_verified_payload(data);
    let _ = manifest::parse_sums(data);
    let _ = signify::parse_embedded(data);
}

/// Fuzz hook: read arbitrary bytes as a package tar; must never panic, escape or over-allocate.
#[cfg(any(fuzzing, test))]
pub fn fuzz_tar(data: &[u8]) {
    let _ = export::read_tar(std::io::Cursor::new(data), &Limits::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn fuzz_hooks_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            fuzz_envelope(&data);
            fuzz_tar(&data);
        }
    }

    #[test]
    fn fuzz_hooks_on_structured_inputs() {
        let k = crate::keys::SigningKey::generate().unwrap();
        let env = Envelope::sign(PAYLOAD_TYPE, b"{\"_type\":1}", &k).to_line();
        fuzz_envelope(env.as_bytes());
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("p/data/x").unwrap();
        h.set_size(3);
        h.set_cksum();
        t.append(&h, &b"abc"[..]).unwrap();
        let bytes = t.into_inner().unwrap();
        for cut in [0, 100, 512, 515, bytes.len()] {
            fuzz_tar(&bytes[..cut]);
        }
    }

    #[test]
    fn codes_match_variants() {
        let f = || Failure {
            step: 1,
            name: "x",
            detail: "d".into(),
            report: None,
        };
        let all = [
            VerifyError::Unsafe(f()),
            VerifyError::MissingFile(f()),
            VerifyError::KeyMismatch(f()),
            VerifyError::KeyFromPackage(f()),
            VerifyError::EnvelopeMalformed(f()),
            VerifyError::SignatureInvalid(f()),
            VerifyError::PayloadType(f()),
            VerifyError::StatementMalformed(f()),
            VerifyError::DigestMismatch(f()),
            VerifyError::UnlistedFile(f()),
            VerifyError::SumsSignatureInvalid(f()),
            VerifyError::SumsMismatch(f()),
            VerifyError::ClaimsInvalid(f()),
        ];
        let codes: Vec<_> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes, VerifyError::CODES);
        for e in &all {
            assert_eq!(e.class(), Class::Verification);
            assert!(e.to_string().contains("step 1 (x): d"));
        }
    }
}
