//! Policy files: parse, validate, decide (allow, or refuse with a stable reason code).
//!
//! Hospital IT and compliance write the rules in TOML (`policies/*.toml`, every key documented
//! in `policies/README.md`); Retort enforces them and explains every refusal. The pipeline is
//! cargo-deny's *parse, then validate*:
//!
//! 1. [`parse`] deserializes the text into a private `RawPolicy` that keeps the byte span of
//!    every value (`toml::Spanned`), with `deny_unknown_fields` everywhere. Syntax errors,
//!    unknown keys, wrong types and missing keys become [`Error`]s naming `file:line:column`,
//!    quoting the line and saying how to fix it.
//! 2. Validation turns it into a [`Policy`] whose invariants hold (finite positive epsilon caps,
//!    `0 < max_delta < 1`, known methods, unique partners with well-formed fingerprints, DICOM
//!    de-identification required). Impossible values are errors at the value's position.
//! 3. [`Policy::decide`] answers a [`Request`] (distill, package, serve, ingest) with a
//!    [`Decision`]: `Allow` or `Refuse(Refusal)` with a stable kebab-case code such as
//!    `policy-run-epsilon-cap`. A refusal maps to exit code 3 through [`Error::Refused`].
//!
//! [`Policy::warnings`] reports allow-list entries that can never match anything (a partner
//! without a client certificate, an export user unknown to the host, a dataset rule for a
//! dataset that is not stored).
//!
//! The active policy is the workspace config's `policy` file, or the global `--policy` override;
//! [`load_active`] returns it with the SHA-256 of its bytes, which goes into every audit record
//! and manifest that relies on it.
//!
//! # Guarantees
//! - Fail closed: a policy that does not parse or validate is an error, never "allow".
//! - A refusal is decided from request values alone; `decide` reads and writes nothing, so a
//!   refused command changes nothing.
//! - A policy that sets `require_dicom_deidentification = false` is rejected: Retort has no mode
//!   that stores identified DICOM.
//!
//! # Panics
//! Never on input.

use std::path::{Path, PathBuf};

use crate::error::{Class, Coded, IoError};
use crate::keys::PublicKey;
use crate::workspace::Workspace;

mod decide;
mod edit;
mod raw;
mod warn;

pub(crate) use decide::fmt_num;
pub use decide::{
    Decision, DistillRequest, IngestRequest, OsIdentity, PackageRequest, Refusal, Request,
    ServeRequest,
};
pub use edit::{
    add_partner_text, add_partner_to_workspace, cert_fingerprint, remove_partner_from_workspace,
    remove_partner_text, NewPartner, PolicyChange,
};
pub use warn::{CheckEnv, Warning};

/// The only policy format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// The distillation methods Retort implements (the values `distill.methods` may list).
pub const KNOWN_METHODS: &[&str] = &["gm", "dm"];

/// Where in a policy file something is (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column (in characters), from 1.
    pub column: usize,
    /// The offending line with a caret under the position, for people.
    pub snippet: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy file cannot be read.
    #[error("cannot read policy file: {0}")]
    Read(#[source] IoError),
    /// The file is not valid TOML.
    #[error("{at}: policy file is not valid TOML: {message}\n{}", at.snippet)]
    Syntax {
        /// Where.
        at: Box<Location>,
        /// The parser's message.
        message: String,
    },
    /// A key this format does not have (typo, or a key from another version).
    #[error("{at}: unknown policy key `{key}`{}\n{}", in_table(table), at.snippet)]
    UnknownKey {
        /// Where.
        at: Box<Location>,
        /// The key as written.
        key: String,
        /// The table it is in (dotted), if known.
        table: Option<String>,
        /// The keys this table accepts.
        expected: Vec<String>,
    },
    /// A value of the wrong type (a string where a number belongs, …).
    #[error("{at}: wrong type for `{key}`: {message}\n{}", at.snippet)]
    WrongType {
        /// Where.
        at: Box<Location>,
        /// The key.
        key: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A required key is absent.
    #[error("{at}: missing required policy key `{key}`{}\n{}", in_table(table), at.snippet)]
    MissingKey {
        /// Where (the table that lacks it, or the start of the file).
        at: Box<Location>,
        /// The key.
        key: String,
        /// The table it belongs in (dotted), if any.
        table: Option<String>,
    },
    /// A value of the right type that cannot be right (negative epsilon, unknown method, …).
    #[error("{at}: invalid value for `{key}`: {why}\n{}", at.snippet)]
    Invalid {
        /// Where.
        at: Box<Location>,
        /// The dotted key.
        key: String,
        /// Why it is refused.
        why: String,
        /// How to fix it.
        fix: String,
    },
    /// The request was refused by the policy.
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// `add-partner` for a name already listed.
    #[error("partner {name:?} is already listed in {}", path.display())]
    PartnerExists {
        /// The partner.
        name: String,
        /// The policy file.
        path: PathBuf,
    },
    /// `remove-partner` for a name the policy does not list.
    #[error("partner {name:?} is not listed in {}", path.display())]
    PartnerNotFound {
        /// The partner.
        name: String,
        /// The policy file.
        path: PathBuf,
    },
    /// `add-partner` with a certificate whose fingerprint another partner already has.
    #[error("the client certificate {sha256} is already registered for partner {other:?}")]
    CertInUse {
        /// The fingerprint.
        sha256: String,
        /// The partner that has it.
        other: String,
    },
    /// A client certificate that is not a PEM X.509 certificate.
    #[error("{}: not a usable client certificate: {why}", path.display())]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A partner signing key that is not an Ed25519 public key.
    #[error("{}: not a usable Ed25519 public key: {why}", path.display())]
    BadSigningKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The policy file could not be written (`add-partner`).
    #[error("cannot write policy file: {0}")]
    Write(#[source] IoError),
    /// The audit log could not take the record of a policy change; the file was not changed
    /// (code and hint of the audit error).
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    /// `policy check --deny-warnings` found warnings.
    #[error("{path}: {count} warning(s) and --deny-warnings was given", path = path.display())]
    Warnings {
        /// The file.
        path: PathBuf,
        /// How many.
        count: usize,
    },
}

fn in_table(table: &Option<String>) -> String {
    match table {
        Some(t) => format!(" in [{t}]"),
        None => String::new(),
    }
}

impl Error {
    /// Stable codes of this module: errors first, then every refusal code. The wrapped audit
    /// error keeps the audit module's codes.
    pub const CODES: &'static [&'static str] = &[
        "policy-unreadable",
        "policy-syntax",
        "policy-unknown-key",
        "policy-wrong-type",
        "policy-missing-key",
        "policy-invalid-value",
        "policy-partner-exists",
        "policy-partner-not-found",
        "policy-cert-in-use",
        "policy-cert-invalid",
        "policy-signing-key-invalid",
        "policy-warnings",
        "policy-write-failed",
        // refusals (Refusal::CODES)
        "policy-method-not-allowed",
        "policy-ipc-too-large",
        "policy-run-epsilon-cap",
        "policy-dataset-epsilon-cap",
        "policy-delta-too-large",
        "policy-delta-vs-records",
        "policy-partner-not-allowed",
        "policy-partner-dataset-not-allowed",
        "policy-exporter-not-allowed",
        "policy-client-not-allowed",
        "policy-deid-required",
        "policy-request-invalid",
        "policy-forecast-below-floor",
        // warnings (Warning::CODES)
        "policy-warn-partner-no-cert",
        "policy-warn-unknown-dataset",
        "policy-warn-unknown-user",
        "policy-warn-unknown-group",
        "policy-warn-run-cap-above-dataset-cap",
        "policy-warn-weak-delta",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Read(_) => "policy-unreadable",
            Error::Syntax { .. } => "policy-syntax",
            Error::UnknownKey { .. } => "policy-unknown-key",
            Error::WrongType { .. } => "policy-wrong-type",
            Error::MissingKey { .. } => "policy-missing-key",
            Error::Invalid { .. } => "policy-invalid-value",
            Error::Refused(r) => r.code,
            Error::PartnerExists { .. } => "policy-partner-exists",
            Error::PartnerNotFound { .. } => "policy-partner-not-found",
            Error::CertInUse { .. } => "policy-cert-in-use",
            Error::BadCert { .. } => "policy-cert-invalid",
            Error::BadSigningKey { .. } => "policy-signing-key-invalid",
            Error::Warnings { .. } => "policy-warnings",
            Error::Write(_) => "policy-write-failed",
            Error::Audit(e) => e.code(),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Read(e) | Error::Write(e) => return e.hint(),
            Error::Audit(e) => return e.hint(),
            Error::Syntax { at, .. } => format!(
                "fix the TOML syntax at line {} (quote strings, one `key = value` per line, tables as [name]); then run `retort policy check {}`",
                at.line,
                at.path.display()
            ),
            Error::UnknownKey { key, expected, .. } => {
                let close = raw::closest(key, expected);
                let list = if expected.is_empty() {
                    "see policies/README.md for the keys".to_string()
                } else {
                    format!("this table accepts: {}", expected.join(", "))
                };
                match close {
                    Some(c) => format!("did you mean `{c}`? {list}"),
                    None => format!("remove or rename it; {list}"),
                }
            }
            Error::WrongType { key, message, .. } => raw::type_hint(key, message),
            Error::MissingKey { key, table, .. } => match (key.as_str(), table) {
                ("budget", None) => "add a [budget] table with dataset_epsilon_cap, run_epsilon_cap and max_delta (start from `retort init`'s template or policies/default.toml)".into(),
                (_, Some(t)) => format!(
                    "add `{key} = …` under [{t}] (see policies/README.md for its meaning; there is no default because the value matters)"
                ),
                (_, None) => format!(
                    "add `{key} = …` at the top of the file, before any [table] (see policies/README.md)"
                ),
            },
            Error::Invalid { fix, .. } => fix.clone(),
            Error::Refused(r) => r.hint.clone(),
            Error::PartnerExists { name, .. } => format!(
                "choose another name, or edit the existing [[partners]] entry for {name:?} by hand and check it with `retort policy check`"
            ),
            Error::PartnerNotFound { .. } => {
                "list the partners with `retort policy show`".into()
            }
            Error::CertInUse { .. } => {
                "each partner needs its own client certificate; issue a new one for this partner"
                    .into()
            }
            Error::BadCert { .. } => {
                "give the partner's client certificate as PEM (-----BEGIN CERTIFICATE-----), e.g. `openssl x509 -in cert.der -inform der -out cert.pem`".into()
            }
            Error::BadSigningKey { .. } => {
                "give the partner's Ed25519 public key as SPKI PEM (`openssl pkey -pubout`), a signify/minisign public key, or 32 raw bytes in base64/hex".into()
            }
            Error::Warnings { .. } => {
                "fix the warnings above, or run without --deny-warnings".into()
            }
        })
    }

    fn class(&self) -> Class {
        match self {
            Error::Refused(_) => Class::Refused,
            Error::Audit(e) => e.class(),
            _ => Class::Input,
        }
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The policy templates shipped in `policies/`, embedded in the binary.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("default", include_str!("../../policies/default.toml")),
    ("strict", include_str!("../../policies/strict.toml")),
    ("research", include_str!("../../policies/research.toml")),
];

/// The text of a shipped template by name.
pub fn template(name: &str) -> Option<&'static str> {
    TEMPLATES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// A partner allowed to receive packages (and, with a client certificate, to fetch them from
/// `retort serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct Partner {
    /// Name (as in `retort package --partner NAME`).
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// Lowercase hex SHA-256 of the DER of the partner's mTLS client certificate.
    pub client_cert_sha256: Option<String>,
    /// The partner's Ed25519 public key, if the site records one (package-signing trust:
    /// material the partner signs, e.g. acknowledgements, can be checked against it).
    pub signing_key: Option<PublicKey>,
    /// Datasets whose packages this partner may receive; `None` = any dataset.
    pub datasets: Option<Vec<String>>,
}

/// A per-dataset rule (`[datasets.NAME]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRule {
    /// The dataset name.
    pub name: String,
    /// This dataset's total-epsilon cap, replacing `budget.dataset_epsilon_cap`.
    pub epsilon_cap: Option<f64>,
}

/// `budget.utility_share` when a policy does not set it: 10 % of each run's ε is planned for
/// releasing its held-out figures (the main release's noise rises by about half a percent,
/// because Gaussian mechanisms compose sub-additively in ε).
pub const DEFAULT_UTILITY_SHARE: f64 = 0.1;

/// A validated policy. Every value satisfies the invariants documented in
/// `policies/README.md`; construct it with [`parse`] or [`load_file`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) dataset_epsilon_cap: f64,
    pub(crate) run_epsilon_cap: f64,
    pub(crate) max_delta: f64,
    pub(crate) max_delta_times_records: f64,
    pub(crate) utility_share: f64,
    pub(crate) methods: Vec<String>,
    pub(crate) max_images_per_class: u32,
    pub(crate) min_forecast: Option<crate::distill::forecast::Verdict>,
    pub(crate) public_class_counts: bool,
    pub(crate) require_dicom_deidentification: bool,
    pub(crate) export_users: Vec<String>,
    pub(crate) export_groups: Vec<String>,
    pub(crate) partners: Vec<Partner>,
    pub(crate) datasets: Vec<DatasetRule>,
    /// Positions of allow-list entries, for warnings.
    pub(crate) spans: warn::Spans,
}

impl Policy {
    /// The policy's name (its `name` key).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// The total-epsilon cap of a dataset: its `[datasets.NAME] epsilon_cap`, else
    /// `budget.dataset_epsilon_cap`. The ledger checks the accountant's total (all runs, this one
    /// included) against it.
    pub fn dataset_epsilon_cap(&self, dataset: &str) -> f64 {
        self.datasets
            .iter()
            .find(|d| d.name == dataset)
            .and_then(|d| d.epsilon_cap)
            .unwrap_or(self.dataset_epsilon_cap)
    }
    /// The largest epsilon one run may spend.
    pub fn run_epsilon_cap(&self) -> f64 {
        self.run_epsilon_cap
    }
    /// The largest delta a run may use.
    pub fn max_delta(&self) -> f64 {
        self.max_delta
    }
    /// The bound on δ·n (n = the dataset's training record count): δ·n must be below it (1.0
    /// gives the rule δ < 1/n).
    pub fn max_delta_times_records(&self) -> f64 {
        self.max_delta_times_records
    }

    /// The share of each run's target epsilon planned for releasing its held-out utility
    /// figures at `eval` time (`budget.utility_share`; 0 = packages carry no utility figures).
    pub fn utility_share(&self) -> f64 {
        self.utility_share
    }
    /// The largest delta allowed for a dataset of `records` training records: the smaller of
    /// `max_delta` and `max_delta_times_records / records` (exclusive bound for the latter).
    pub fn delta_limit(&self, records: u64) -> f64 {
        if records == 0 {
            return 0.0;
        }
        self.max_delta
            .min(self.max_delta_times_records / records as f64)
    }
    /// Allowed distillation methods (`gm`, `dm`).
    pub fn methods(&self) -> &[String] {
        &self.methods
    }
    /// Whether a method is allowed.
    pub fn method_allowed(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
    /// The largest images-per-class a run may produce.
    pub fn max_images_per_class(&self) -> u32 {
        self.max_images_per_class
    }
    /// The floor on a run's utility forecast (`distill.min_forecast`): a run forecast below it
    /// is refused (`policy-forecast-below-floor`); `None` = no floor.
    pub fn min_forecast(&self) -> Option<crate::distill::forecast::Verdict> {
        self.min_forecast
    }
    /// Whether per-class training counts are public metadata (`privacy.public_class_counts`):
    /// the utility forecast then speaks of the smallest class instead of the average.
    pub fn public_class_counts(&self) -> bool {
        self.public_class_counts
    }
    /// Whether DICOM must be de-identified at ingest (always true: validation rejects false).
    pub fn require_dicom_deidentification(&self) -> bool {
        self.require_dicom_deidentification
    }
    /// OS users allowed to package/export (empty together with the groups: anyone).
    pub fn export_users(&self) -> &[String] {
        &self.export_users
    }
    /// OS groups whose members may package/export.
    pub fn export_groups(&self) -> &[String] {
        &self.export_groups
    }
    /// Whether export is restricted to listed users or groups.
    pub fn export_restricted(&self) -> bool {
        !self.export_users.is_empty() || !self.export_groups.is_empty()
    }
    /// The partners.
    pub fn partners(&self) -> &[Partner] {
        &self.partners
    }
    /// A partner by name.
    pub fn partner(&self, name: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.name == name)
    }
    /// Per-dataset rules.
    pub fn dataset_rules(&self) -> &[DatasetRule] {
        &self.datasets
    }
}

/// The partner whose mTLS client certificate has this SHA-256 (hex of the DER, any case), if
/// any. Comparison is constant-time per entry.
pub fn partner_by_cert<'a>(policy: &'a Policy, sha256_hex: &str) -> Option<&'a Partner> {
    let want = sha256_hex.trim().to_ascii_lowercase();
    policy.partners.iter().find(|p| {
        p.client_cert_sha256
            .as_deref()
            .is_some_and(|fp| crate::keys::ct_eq(fp.as_bytes(), want.as_bytes()))
    })
}

/// A policy as loaded from a file, with what identifies it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated policy.
    pub policy: Policy,
    /// The file it came from.
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file's bytes (goes into audit records and manifests).
    pub sha256: String,
    /// The policy's name.
    pub name: String,
    /// Allow-list entries that never match (computed against the host and, for
    /// [`load_active`], the workspace's datasets).
    pub warnings: Vec<Warning>,
}

impl Loaded {
    /// `{"name","sha256","path"}` for audit details, run.json and manifests.
    pub fn identity_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "sha256": self.sha256,
            "path": self.path.display().to_string(),
        })
    }
}

/// Parse and validate policy text. `path` is used in error messages only.
///
/// # Errors
/// `policy-syntax`, `policy-unknown-key`, `policy-wrong-type`, `policy-missing-key`,
/// `policy-invalid-value`, each with file:line:column.
pub fn parse(text: &str, path: &Path) -> Result<Policy> {
    raw::parse(text, path)
}

/// Read, hash, parse and validate a policy file; warnings are computed against the host only.
///
/// # Errors
/// `policy-unreadable` and the errors of [`parse`].
pub fn load_file(path: &Path) -> Result<Loaded> {
    load_with(path, &CheckEnv::host())
}

fn load_with(path: &Path, env: &CheckEnv) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::Read(IoError::new("reading", path, e)))?;
    let sha256 = crate::digest::sha256_hex(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = raw::locate_bytes(e.as_bytes(), e.utf8_error().valid_up_to(), path);
        Error::Syntax {
            at,
            message: "the file is not UTF-8 text".into(),
        }
    })?;
    let policy = parse(&text, path)?;
    let warnings = policy.warnings(env);
    Ok(Loaded {
        name: policy.name.clone(),
        policy,
        path: path.to_path_buf(),
        sha256,
        warnings,
    })
}

/// Load the policy a command must obey: `override_path` (the global `--policy` flag) if given,
/// else the workspace config's active policy file. Warnings also cover the workspace's datasets.
///
/// # Errors
/// As [`load_file`]. Callers fail closed: no private data is read when this errors.
pub fn load_active(ws: &Workspace, override_path: Option<&Path>) -> Result<Loaded> {
    let path = match override_path {
        Some(p) => p.to_path_buf(),
        None => ws.policy_path(),
    };
    let mut env = CheckEnv::host();
    env.datasets = crate::dataset::list(ws).ok();
    load_with(&path, &env)
}

/// Fuzzing hook (cargo-fuzz target in `tests/fuzz/`): parse arbitrary bytes as a policy, then
/// compute warnings and a decision; must never panic. Also compiled for unit tests.
#[cfg(any(fuzzing, test))]
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = parse(text, Path::new("fuzz.toml")) {
            let _ = p.warnings(&CheckEnv::default());
            let _ = p.decide(&Request::Serve(ServeRequest {
                client_cert_sha256: text,
            }));
        }
    }
}

#[cfg(test)]
mod tests;
