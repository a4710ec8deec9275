//! Warnings: allow-list entries that can never match anything, and settings that never bind.
//! A warning does not stop a command (only `policy check --deny-warnings` turns it into an
//! error); it tells the person deploying the policy that an entry does not do what they think.

use std::collections::BTreeSet;

use super::{Location, Policy};

/// Positions of the entries that warnings point at (filled in by validation).
#[derive(Debug, Clone, Default)]
pub(crate) struct Spans {
    pub(crate) run_epsilon_cap: Option<Box<Location>>,
    pub(crate) max_delta: Option<Box<Location>>,
    pub(crate) export_users: Vec<(String, Box<Location>)>,
    pub(crate) export_groups: Vec<(String, Box<Location>)>,
    pub(crate) partners: Vec<(String, Box<Location>)>,
    /// (partner, dataset, where)
    pub(crate) partner_datasets: Vec<(String, String, Box<Location>)>,
    pub(crate) datasets: Vec<(String, Box<Location>)>,
}

/// What a policy is checked against for warnings. `None` means "unknown here": no warning is
/// produced from it.
#[derive(Debug, Clone, Default)]
pub struct CheckEnv {
    /// Names of the datasets stored in the workspace.
    pub datasets: Option<Vec<String>>,
    /// OS user names known to this host (`/etc/passwd`).
    pub users: Option<BTreeSet<String>>,
    /// OS group names known to this host (`/etc/group`).
    pub groups: Option<BTreeSet<String>>,
}

impl CheckEnv {
    /// The host's users and groups from `/etc/passwd` and `/etc/group` (directory services
    /// such as LDAP are not consulted, which the warning text says); no datasets.
    pub fn host() -> CheckEnv {
        CheckEnv {
            datasets: None,
            users: names_in("/etc/passwd"),
            groups: names_in("/etc/group"),
        }
    }
}

fn names_in(path: &str) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(':').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// A warning about a policy entry, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where (file:line:column); `None` for whole-policy remarks.
    pub at: Option<Box<Location>>,
    /// Stable kebab-case code.
    pub code: &'static str,
    /// What is wrong, in words.
    pub message: String,
}

impl Warning {
    /// Stable warning codes.
    pub const CODES: &'static [&'static str] = &[
        "policy-warn-partner-no-cert",
        "policy-warn-unknown-dataset",
        "policy-warn-unknown-user",
        "policy-warn-unknown-group",
        "policy-warn-run-cap-above-dataset-cap",
        "policy-warn-weak-delta",
    ];

    /// `{"code","message","file","line","column"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code,
            "message": self.message,
            "file": self.at.as_ref().map(|a| a.path.display().to_string()),
            "line": self.at.as_ref().map(|a| a.line),
            "column": self.at.as_ref().map(|a| a.column),
        })
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {} [{}]", self.message, self.code),
            None => write!(f, "{} [{}]", self.message, self.code),
        }
    }
}

impl Policy {
    /// Entries that can never match and settings that never bind, checked against `env`.
    pub fn warnings(&self, env: &CheckEnv) -> Vec<Warning> {
        let mut w = Vec::new();
        let s = &self.spans;
        for p in &self.partners {
            if p.client_cert_sha256.is_none() {
                let at = s
                    .partners
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|x| x.1.clone());
                w.push(Warning {
                    at,
                    code: "policy-warn-partner-no-cert",
                    message: format!(
                        "partner {:?} has no client_cert_sha256: it can receive exported packages but `retort serve` will never let it connect",
                        p.name
                    ),
                });
            }
        }
        if let Some(stored) = &env.datasets {
            for (name, at) in &s.datasets {
                if !stored.contains(name) {
                    w.push(Warning {
                        at: Some(at.clone()),
                        code: "policy-warn-unknown-dataset",
                        message: format!("[datasets.{name}] names a dataset this workspace does not hold; the rule never applies"),
                    });
                }
            }
            for (partner, name, at) in &s.partner_datasets {
                if !stored.contains(name) {
                    w.push(Warning {
                        at: Some(at.clone()),
                        code: "policy-warn-unknown-dataset",
                        message: format!("partner {partner:?} lists dataset {name:?}, which this workspace does not hold"),
                    });
                }
            }
        }
        if let Some(users) = &env.users {
            for (name, at) in &s.export_users {
                if !users.contains(name) {
                    w.push(Warning {
                        at: Some(at.clone()),
                        code: "policy-warn-unknown-user",
                        message: format!("export user {name:?} is not in /etc/passwd on this host; the entry never matches (ignore this if the user comes from LDAP/SSSD)"),
                    });
                }
            }
        }
        if let Some(groups) = &env.groups {
            for (name, at) in &s.export_groups {
                if !groups.contains(name) {
                    w.push(Warning {
                        at: Some(at.clone()),
                        code: "policy-warn-unknown-group",
                        message: format!("export group {name:?} is not in /etc/group on this host; the entry never matches (ignore this if the group comes from LDAP/SSSD)"),
                    });
                }
            }
        }
        if self.run_epsilon_cap > self.dataset_epsilon_cap {
            w.push(Warning {
                at: s.run_epsilon_cap.clone(),
                code: "policy-warn-run-cap-above-dataset-cap",
                message: format!(
                    "run_epsilon_cap {} is above dataset_epsilon_cap {}: the dataset cap is always reached first, so the run cap never binds",
                    self.run_epsilon_cap, self.dataset_epsilon_cap
                ),
            });
        }
        if self.max_delta > 1e-3 {
            w.push(Warning {
                at: s.max_delta.clone(),
                code: "policy-warn-weak-delta",
                message: format!(
                    "max_delta {} is above 1e-3; delta is the probability that the epsilon guarantee fails, so it is usually 1e-5 or less",
                    self.max_delta
                ),
            });
        }
        w
    }
}
