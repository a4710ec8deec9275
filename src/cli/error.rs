//! The crate's top-level error: one variant per module boundary, each carrying that module's
//! structured error, with the stable code, hint and class of the error inside (see
//! [`crate::error::Coded`]). It lives in `cli/` because it imports every module's error: a
//! library module that returned it would close an import cycle through it. `retort::Error`
//! and `retort::Result` re-export it for tests and examples.

use crate::error::{Class, Coded, IoError};

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// File-system error with the path at fault.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Workspace layout, config or lock.
    #[error(transparent)]
    Workspace(#[from] crate::workspace::Error),
    /// Workspace groups and permissions.
    #[error(transparent)]
    Access(#[from] crate::access::Error),
    /// Key generation, loading or formats.
    #[error(transparent)]
    Keys(#[from] crate::keys::Error),
    /// Reading input data.
    #[error(transparent)]
    Ingest(#[from] crate::ingest::Error),
    /// Stored datasets.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::Error),
    /// Privacy engine (validated types, accountants, calibration).
    #[error(transparent)]
    Dp(#[from] crate::dp::Error),
    /// The privacy-budget ledger.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
    /// Policy parsing, validation and decisions.
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    /// Models and per-sample gradients.
    #[error(transparent)]
    Nn(#[from] crate::nn::Error),
    /// Distillation runs.
    #[error(transparent)]
    Distill(#[from] crate::distill::Error),
    /// Evaluation.
    #[error(transparent)]
    Eval(#[from] crate::eval::Error),
    /// Building and signing packages.
    #[error(transparent)]
    Package(#[from] crate::package::Error),
    /// Package verification failed.
    #[error(transparent)]
    Verify(#[from] crate::package::VerifyError),
    /// Audit log.
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    /// The mutual-TLS package server.
    #[error(transparent)]
    Serve(#[from] crate::serve::Error),
    /// The run lifecycle (plan, reserve, distill, completed runs).
    #[error(transparent)]
    Run(#[from] crate::run::Error),
    /// The operation was cancelled (Ctrl-C).
    #[error("cancelled by the user")]
    Cancelled,
    /// Command-line usage that clap cannot express (conflicting values and the like).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
}

impl Error {
    fn inner(&self) -> Option<&dyn Coded> {
        Some(match self {
            Error::Io(e) => e,
            Error::Workspace(e) => e,
            Error::Access(e) => e,
            Error::Keys(e) => e,
            Error::Ingest(e) => e,
            Error::Dataset(e) => e,
            Error::Dp(e) => e,
            Error::Ledger(e) => e,
            Error::Policy(e) => e,
            Error::Nn(e) => e,
            Error::Distill(e) => e,
            Error::Eval(e) => e,
            Error::Package(e) => e,
            Error::Verify(e) => e,
            Error::Audit(e) => e,
            Error::Serve(e) => e,
            Error::Run(e) => e,
            Error::Cancelled | Error::Usage { .. } => return None,
        })
    }

    /// Stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Cancelled => crate::progress::Cancelled.code(),
            Error::Usage { .. } => "usage",
            _ => self.inner().map(|e| e.code()).unwrap_or("error"),
        }
    }

    /// What the user can do.
    pub fn hint(&self) -> Option<String> {
        match self {
            // What stays charged depends on the command: commands that charge budget report
            // their own cancellation (`run-cancelled`, `run-eval-cancelled`) with that hint.
            Error::Cancelled => crate::progress::Cancelled.hint(),
            Error::Usage { hint, .. } => hint.clone(),
            _ => self.inner().and_then(|e| e.hint()),
        }
    }

    /// The class (decides the exit code).
    pub fn class(&self) -> Class {
        match self {
            Error::Cancelled => Class::Input,
            Error::Usage { .. } => Class::Usage,
            _ => self.inner().map(|e| e.class()).unwrap_or(Class::Input),
        }
    }

    /// The message for audit records: the same as `Display`, except that ingest errors leave
    /// out file and folder names (they can hold PHI, e.g. patient names in DICOM file names).
    pub fn audit_message(&self) -> String {
        match self {
            Error::Ingest(e) => e.what(),
            _ => self.to_string(),
        }
    }

    /// The process exit code (0 ok, 1 input or I/O, 2 usage, 3 refused, 4 verification).
    pub fn exit_code(&self) -> u8 {
        self.class().exit_code()
    }

    /// Audit outcome for this error: `refused` for policy/budget refusals, else `error`.
    pub fn audit_outcome(&self) -> crate::audit::Outcome {
        match self.class() {
            Class::Refused => crate::audit::Outcome::Refused,
            _ => crate::audit::Outcome::Error,
        }
    }
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        Error::code(self)
    }
    fn hint(&self) -> Option<String> {
        Error::hint(self)
    }
    fn class(&self) -> Class {
        Error::class(self)
    }
}

impl From<crate::progress::Cancelled> for Error {
    fn from(_: crate::progress::Cancelled) -> Self {
        Error::Cancelled
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every stable code a module declares, for the uniqueness test.
pub fn all_codes() -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    let mut add = |module: &'static str, codes: &[&'static str]| {
        for c in codes {
            v.push((module, *c));
        }
    };
    add(
        "io",
        &[
            "io-not-found",
            "io-permission-denied",
            "io-disk-full",
            "io-error",
        ],
    );
    add("top", &["usage"]);
    add("progress", crate::progress::Cancelled::CODES);
    add("workspace", crate::workspace::Error::CODES);
    add("access", crate::access::Error::CODES);
    add("keys", crate::keys::Error::CODES);
    add("ingest", crate::ingest::Error::CODES);
    add("dataset", crate::dataset::Error::CODES);
    add("dp", crate::dp::Error::CODES);
    add("ledger", crate::ledger::Error::CODES);
    add("policy", crate::policy::Error::CODES);
    add("nn", crate::nn::Error::CODES);
    add("distill", crate::distill::Error::CODES);
    add("eval", crate::eval::Error::CODES);
    add("package", crate::package::Error::CODES);
    add("verify", crate::package::VerifyError::CODES);
    add("audit", crate::audit::Error::CODES);
    add("serve", crate::serve::Error::CODES);
    add("run", crate::run::Error::CODES);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `src/error.rs` imports nothing from the crate, and library modules outside `cli/` do not
    /// return this error: either would close an import cycle through it (it tied 41 files into
    /// one). See: issue 19
    #[test]
    fn library_modules_do_not_use_the_top_level_error() {
        // Files allowed to use the top-level error: none outside `cli/` and `main.rs`.
        const PENDING: &[&str] = &[];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let code = |text: &str| -> Vec<String> {
            let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
            before_tests
                .lines()
                .map(|l| l.split("//").next().unwrap_or("").to_string())
                .collect()
        };
        let leaf = std::fs::read_to_string(src.join("error.rs")).unwrap();
        assert!(
            !code(&leaf).iter().any(|l| l.contains("crate::")),
            "src/error.rs must not import from the crate"
        );
        let mut stack = vec![src.clone()];
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
                if p.is_dir() {
                    if rel != "cli" {
                        stack.push(p);
                    }
                    continue;
                }
                if !rel.ends_with(".rs")
                    || rel.ends_with("tests.rs")
                    || ["lib.rs", "main.rs"].contains(&rel.as_str())
                    || PENDING.contains(&rel.as_str())
                {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, line) in code(&text).iter().enumerate() {
                    let uses = ["crate::Result", "crate::Error", "crate::cli::"]
                        .iter()
                        .any(|pat| {
                            line.match_indices(pat).any(|(at, _)| {
                                !line[at + pat.len()..]
                                    .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                            })
                        })
                        || line.contains("use crate::{Error")
                        || line.contains("use crate::{Result");
                    if uses {
                        offenders.push(format!("src/{rel}:{}: {}", i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{}", offenders.join("\n"));
    }

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let codes = all_codes();
        let mut seen = std::collections::HashMap::new();
        for (m, c) in &codes {
            assert!(
                c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'),
                "code {c} of {m} is not kebab-case"
            );
            if let Some(prev) = seen.insert(*c, *m) {
                panic!("code {c} declared by both {prev} and {m}");
            }
        }
    }
}
