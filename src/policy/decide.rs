//! Step 3: decisions. [`Policy::decide`] answers a [`Request`] with [`Decision::Allow`] or
//! [`Decision::Refuse`] carrying a stable code, a message naming the values at fault and a hint.
//! It is a pure function of the policy and the request: it reads and writes nothing.

use super::{partner_by_cert, Error, Policy};

/// A distillation about to reserve budget (`plan` shows the decision; `distill` enforces it
/// before reserving anything).
#[derive(Debug, Clone, PartialEq)]
pub struct DistillRequest<'a> {
    /// Dataset name.
    pub dataset: &'a str,
    /// The dataset's training record count n (public metadata by policy), for δ < 1/n.
    pub records: u64,
    /// Method: `gm` or `dm`.
    pub method: &'a str,
    /// The run's target epsilon.
    pub epsilon: f64,
    /// The run's delta.
    pub delta: f64,
    /// Synthetic images per class.
    pub ipc: u32,
    /// The dataset's total epsilon (accountant over all its runs) *including* this run.
    pub dataset_total_epsilon: f64,
    /// The run's utility forecast (checked against `distill.min_forecast`); `None` when none
    /// was computed (a policy with a floor then refuses).
    pub forecast: Option<&'a crate::distill::forecast::Forecast>,
}

/// A package about to be built for a partner: the run as it stands at packaging time is checked
/// against the policy as it stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageRequest<'a> {
    /// Partner name (`--partner`).
    pub partner: &'a str,
    /// The run's dataset.
    pub dataset: &'a str,
    /// The run's method.
    pub method: &'a str,
    /// The run's spent epsilon (from run.json `privacy.epsilon`).
    pub epsilon: f64,
    /// The run's delta.
    pub delta: f64,
    /// The run's images per class.
    pub ipc: u32,
    /// Who is exporting (OS user and groups); see [`OsIdentity::current`].
    pub exporter: &'a OsIdentity,
}

/// A TLS client presenting a certificate to `retort serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeRequest<'a> {
    /// Lowercase hex SHA-256 of the client certificate's DER.
    pub client_cert_sha256: &'a str,
}

/// An ingest about to store a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestRequest {
    /// The source is DICOM.
    pub dicom: bool,
    /// The ingest will de-identify it.
    pub deidentify: bool,
}

/// What a command asks the policy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// `plan` / `distill`.
    Distill(DistillRequest<'a>),
    /// `package` / export.
    Package(PackageRequest<'a>),
    /// `serve`: a connecting client.
    Serve(ServeRequest<'a>),
    /// `ingest`.
    Ingest(IngestRequest),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable kebab-case code (one of [`Refusal::CODES`]).
    pub code: &'static str,
    /// What is refused and why, naming the values.
    pub message: String,
    /// What the user can do.
    pub hint: String,
}

impl Refusal {
    /// Every refusal code.
    pub const CODES: &'static [&'static str] = &[
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
    ];

    fn new(code: &'static str, message: String, hint: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message,
            hint: hint.into(),
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Refused, with the reason.
    Refuse(Refusal),
}

impl Decision {
    /// Whether it is `Allow`.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
    /// The refusal code, if refused.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Decision::Allow => None,
            Decision::Refuse(r) => Some(r.code),
        }
    }
    /// `Ok(())` when allowed, else [`Error::Refused`] (exit code 3, audit outcome `refused`).
    ///
    /// # Errors
    /// The refusal.
    pub fn into_result(self) -> Result<(), Error> {
        match self {
            Decision::Allow => Ok(()),
            Decision::Refuse(r) => Err(Error::Refused(r)),
        }
    }
    /// `{"allowed":true}` or `{"allowed":false,"code","message","hint"}` (for `plan --json`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Decision::Allow => serde_json::json!({"allowed": true}),
            Decision::Refuse(r) => serde_json::json!({
                "allowed": false, "code": r.code, "message": r.message, "hint": r.hint
            }),
        }
    }
}

/// The OS identity of whoever runs the command, for `export.users` / `export.groups`: the
/// effective user and its groups, from the kernel ([`crate::identity`]), never from `$USER`.
pub type OsIdentity = crate::identity::Identity;

/// A number for messages: plain for ordinary values, scientific for small ones (1e-5).
pub(crate) fn fmt_num(x: f64) -> String {
    if x != 0.0 && x.is_finite() && x.abs() < 1e-3 {
        format!("{x:e}")
    } else if x.is_finite() {
        // For people: at most 6 decimals (1.0000000002 is "1", 0.1 + 0.2 is "0.3").
        let s = format!("{x:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.to_string()
        }
    } else {
        format!("{x}")
    }
}

impl Policy {
    /// Decide a request. Checks run in a fixed order and the first failing one is returned:
    /// malformed values, then method, images per class, run epsilon, delta, δ·n, dataset total,
    /// utility forecast floor (distill); partner, partner's datasets, exporter, then the run's method, ipc, ε, δ
    /// (package); known client certificate (serve); de-identification (ingest).
    ///
    /// # Panics
    /// Never.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        match self.check(req) {
            Ok(()) => Decision::Allow,
            Err(r) => Decision::Refuse(r),
        }
    }

    fn check(&self, req: &Request<'_>) -> Result<(), Refusal> {
        match req {
            Request::Distill(d) => self.check_distill(d),
            Request::Package(p) => self.check_package(p),
            Request::Serve(s) => match partner_by_cert(self, s.client_cert_sha256) {
                Some(_) => Ok(()),
                None => Err(Refusal::new(
                    "policy-client-not-allowed",
                    format!(
                        "client certificate {} belongs to no partner in policy {:?}",
                        s.client_cert_sha256, self.name
                    ),
                    "register the partner with `retort policy add-partner NAME --client-cert cert.pem`",
                )),
            },
            Request::Ingest(i) => {
                if i.dicom && !i.deidentify && self.require_dicom_deidentification {
                    Err(Refusal::new(
                        "policy-deid-required",
                        format!("policy {:?} requires DICOM to be de-identified at ingest", self.name),
                        "ingest without the option that skips de-identification",
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn check_values(&self, epsilon: f64, delta: f64) -> Result<(), Refusal> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(Refusal::new(
                "policy-request-invalid",
                format!(
                    "epsilon must be a finite number above 0 (got {})",
                    fmt_num(epsilon)
                ),
                "pass --epsilon with a positive value, e.g. --epsilon 1",
            ));
        }
        if !(delta.is_finite() && delta > 0.0 && delta < 1.0) {
            return Err(Refusal::new(
                "policy-request-invalid",
                format!("delta must be above 0 and below 1 (got {})", fmt_num(delta)),
                "pass --delta with a small positive value, e.g. --delta 1e-5",
            ));
        }
        Ok(())
    }

    fn check_method(&self, method: &str) -> Result<(), Refusal> {
        if self.method_allowed(method) {
            return Ok(());
        }
        Err(Refusal::new(
            "policy-method-not-allowed",
            format!(
                "method {method:?} is not allowed by policy {:?} (allowed: {})",
                self.name,
                self.methods.join(", ")
            ),
            format!(
                "use --method {}, or ask the policy owner to add {method:?} to distill.methods",
                self.methods[0]
            ),
        ))
    }

    fn check_ipc(&self, ipc: u32) -> Result<(), Refusal> {
        if ipc == 0 {
            return Err(Refusal::new(
                "policy-request-invalid",
                "images per class must be at least 1 (got 0)".into(),
                "pass --ipc 1 or more",
            ));
        }
        if ipc > self.max_images_per_class {
            return Err(Refusal::new(
                "policy-ipc-too-large",
                format!(
                    "{ipc} images per class is above policy {:?}'s limit of {}",
                    self.name, self.max_images_per_class
                ),
                format!("use --ipc {} or fewer", self.max_images_per_class),
            ));
        }
        Ok(())
    }

    fn check_run_epsilon(&self, epsilon: f64) -> Result<(), Refusal> {
        if epsilon > self.run_epsilon_cap {
            return Err(Refusal::new(
                "policy-run-epsilon-cap",
                format!(
                    "epsilon {} for one run is above policy {:?}'s per-run cap of {}",
                    fmt_num(epsilon),
                    self.name,
                    fmt_num(self.run_epsilon_cap)
                ),
                format!("use --epsilon {} or less", fmt_num(self.run_epsilon_cap)),
            ));
        }
        Ok(())
    }

    fn check_max_delta(&self, delta: f64) -> Result<(), Refusal> {
        if delta > self.max_delta {
            return Err(Refusal::new(
                "policy-delta-too-large",
                format!(
                    "delta {} is above policy {:?}'s maximum of {}",
                    fmt_num(delta),
                    self.name,
                    fmt_num(self.max_delta)
                ),
                format!("use --delta {} or less", fmt_num(self.max_delta)),
            ));
        }
        Ok(())
    }

    fn check_distill(&self, d: &DistillRequest<'_>) -> Result<(), Refusal> {
        self.check_values(d.epsilon, d.delta)?;
        if !(d.dataset_total_epsilon.is_finite() && d.dataset_total_epsilon >= 0.0) {
            return Err(Refusal::new(
                "policy-request-invalid",
                format!(
                    "the dataset's total epsilon must be a finite number (got {})",
                    fmt_num(d.dataset_total_epsilon)
                ),
                "check the ledger with `retort budget` and `retort audit verify`",
            ));
        }
        self.check_method(d.method)?;
        self.check_ipc(d.ipc)?;
        self.check_run_epsilon(d.epsilon)?;
        self.check_max_delta(d.delta)?;
        if d.records == 0 || d.delta * d.records as f64 >= self.max_delta_times_records {
            let limit = self.max_delta_times_records / (d.records.max(1) as f64);
            return Err(Refusal::new(
                "policy-delta-vs-records",
                format!(
                    "delta {} is not below {}/n = {} for dataset {:?} with n = {} records (a delta that large allows releasing a record outright)",
                    fmt_num(d.delta),
                    fmt_num(self.max_delta_times_records),
                    fmt_num(limit),
                    d.dataset,
                    d.records
                ),
                format!("use a delta below {}", fmt_num(limit)),
            ));
        }
        let cap = self.dataset_epsilon_cap(d.dataset);
        if d.dataset_total_epsilon > cap {
            return Err(Refusal::new(
                "policy-dataset-epsilon-cap",
                format!(
                    "dataset {:?} would reach a total epsilon of {:.4} with this run, above policy {:?}'s cap of {}",
                    d.dataset,
                    d.dataset_total_epsilon,
                    self.name,
                    fmt_num(cap)
                ),
                "use a smaller --epsilon (see `retort budget` for what remains), or ask the policy owner to raise the dataset's cap",
            ));
        }
        self.check_forecast(d)
    }

    fn check_forecast(&self, d: &DistillRequest<'_>) -> Result<(), Refusal> {
        let Some(floor) = self.min_forecast else {
            return Ok(());
        };
        let Some(f) = d.forecast else {
            return Err(Refusal::new(
                "policy-forecast-below-floor",
                format!(
                    "policy {:?} requires a utility forecast of at least {floor} and none was computed for this run",
                    self.name
                ),
                "plan the run with `retort plan`, which computes the forecast",
            ));
        };
        if f.verdict >= floor {
            return Ok(());
        }
        let help = if f.advice.is_empty() {
            String::new()
        } else {
            format!("raise the forecast with {}; ", f.advice.join(", "))
        };
        Err(Refusal::new(
            "policy-forecast-below-floor",
            format!(
                "the utility forecast of this run on dataset {:?} is {} (signal-to-noise {:.1}), below policy {:?}'s floor of {floor}: the synthetic set is not expected to be useful enough to spend budget on",
                d.dataset, f.verdict, f.snr, self.name
            ),
            format!(
                "{help}or ask the policy owner to lower distill.min_forecast (`retort plan` shows the forecast)"
            ),
        ))
    }

    fn check_package(&self, p: &PackageRequest<'_>) -> Result<(), Refusal> {
        let Some(partner) = self.partner(p.partner) else {
            let known: Vec<&str> = self.partners.iter().map(|x| x.name.as_str()).collect();
            return Err(Refusal::new(
                "policy-partner-not-allowed",
                format!(
                    "partner {:?} is not listed in policy {:?} (listed: {})",
                    p.partner,
                    self.name,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
                format!("register it with `retort policy add-partner {} --client-cert cert.pem` (an audited policy change), or choose a listed partner", p.partner),
            ));
        };
        if let Some(ds) = &partner.datasets {
            if !ds.iter().any(|d| d == p.dataset) {
                return Err(Refusal::new(
                    "policy-partner-dataset-not-allowed",
                    format!("partner {:?} may not receive packages of dataset {:?} (allowed: {})", partner.name, p.dataset, ds.join(", ")),
                    "choose a run of an allowed dataset, or add the dataset to the partner's `datasets` list",
                ));
            }
        }
        if self.export_restricted() {
            let e = p.exporter;
            let ok = self.export_users.contains(&e.user)
                || e.groups.iter().any(|g| self.export_groups.contains(g));
            if !ok {
                return Err(Refusal::new(
                    "policy-exporter-not-allowed",
                    format!(
                        "OS user {:?} may not export under policy {:?} (allowed users: {}; groups: {})",
                        e.user,
                        self.name,
                        if self.export_users.is_empty() { "none".into() } else { self.export_users.join(", ") },
                        if self.export_groups.is_empty() { "none".into() } else { self.export_groups.join(", ") },
                    ),
                    "run the export as an allowed user or member of an allowed group",
                ));
            }
        }
        self.check_values(p.epsilon, p.delta)?;
        self.check_method(p.method)?;
        self.check_ipc(p.ipc)?;
        self.check_run_epsilon(p.epsilon)?;
        self.check_max_delta(p.delta)?;
        Ok(())
    }
}
