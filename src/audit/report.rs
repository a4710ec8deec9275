//! The compliance report: one self-contained HTML page (inline CSS and SVG, no script, no
//! external asset, works offline) that a compliance officer can open in any browser.
//!
//! Order of the page: the integrity verdict first (from [`super::verify`]), then the privacy
//! budget per dataset over time (spent against the cap, one SVG chart per dataset), every
//! export (partner, ε, package digest), refusals and errors, the key fingerprints, and the
//! latest empirical privacy audit per method (`retort privacy audit`, from its log record).
//!
//! Sources, all read-only:
//! - the audit log (refusals, errors, export records, budget totals logged by the ledger);
//! - `ledger/<dataset>.json` reserve records (run, ε, time: what was charged, crashed runs
//!   included) and `runs/*/run.json` (the agreed run format) for runs the ledger does not list;
//! - `packages/*.meta.json` (the agreed package index) and each package's `SHA256SUMS`, whose
//!   SHA-256 is shown as the package digest (it covers every file of the package and is signed);
//! - the active policy's caps (`budget.dataset_epsilon_cap`, `[datasets.NAME] epsilon_cap`).
//!
//! Budget "spent" is the ledger's total when the log carries it (`details.budget_spent` or
//! `details.epsilon_spent` with `details.dataset`), else the plain sum of the runs' ε, which is
//! an upper bound on the composed ε (basic composition); the chart says which.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use time::OffsetDateTime;

use super::show::{for_each, Filter};
use super::verify::{self, VerifyReport};
use super::{Outcome, Result};
use crate::keys::{KeyPaths, SigningKey};
use crate::workspace::Workspace;

/// The built page and its headline figures.
#[derive(Debug, Clone)]
pub struct Built {
    /// The HTML document.
    pub html: String,
    /// `PASS` or `FAIL`.
    pub verdict: &'static str,
    /// Datasets with budget activity.
    pub datasets: usize,
    /// Exports listed.
    pub exports: usize,
    /// Refusals and errors listed.
    pub problems: usize,
}

/// One point of a dataset's budget series.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPoint {
    /// When.
    pub ts: OffsetDateTime,
    /// Spent ε after this point.
    pub spent: f64,
    /// What caused it (run id or record action).
    pub label: String,
}

/// A dataset's budget over time.
#[derive(Debug, Clone, Default)]
pub struct BudgetSeries {
    /// Points in time order.
    pub points: Vec<BudgetPoint>,
    /// The policy's cap, if known.
    pub cap: Option<f64>,
    /// `ledger total` or `sum of runs' ε (upper bound)`.
    pub basis: &'static str,
}

/// One export.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Time.
    pub ts: String,
    /// Package id.
    pub package: String,
    /// Partner.
    pub partner: String,
    /// Dataset.
    pub dataset: String,
    /// ε of the run behind it.
    pub epsilon: Option<f64>,
    /// SHA-256 of the package's SHA256SUMS (or the digest the log records).
    pub digest: String,
}

/// A refusal or error.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Time.
    pub ts: String,
    /// seq.
    pub seq: u64,
    /// refused / error.
    pub outcome: &'static str,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub object: String,
    /// Stable code.
    pub reason: String,
}

fn parse_ts(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Build the report.
///
/// # Errors
/// I/O errors reading the log; the verification itself never fails the report (its verdict is
/// the first thing on the page).
pub fn build(ws: &Workspace, since: Option<OffsetDateTime>) -> Result<Built> {
    let v = verify::verify(ws, &verify::Options::default())?;
    let mut problems = Vec::new();
    let mut exports: BTreeMap<String, Export> = BTreeMap::new();
    let mut ledger_points: BTreeMap<String, Vec<BudgetPoint>> = BTreeMap::new();
    let mut logged_runs: BTreeMap<String, (String, OffsetDateTime, f64)> = BTreeMap::new();
    let mut audits: BTreeMap<String, PrivacyAudit> = BTreeMap::new();
    for_each(ws.audit_dir(), &Filter::default(), |r, _| {
        if r.action == "privacy.audit" && r.outcome == Outcome::Ok {
            if let Some(a) = PrivacyAudit::from_record(r) {
                // Records come in log order: the last one per method is the latest.
                audits.insert(a.method.clone(), a);
            }
        }
        let ts = parse_ts(&r.ts);
        let in_window = since.is_none_or(|s| ts.is_some_and(|t| t >= s));
        let d = &r.details;
        let dataset = d
            .get("dataset")
            .and_then(|x| x.as_str())
            .map(str::to_string);
        if let (Some(ds), Some(t)) = (&dataset, ts) {
            let total = ["budget_spent", "epsilon_spent", "dataset_epsilon_spent"]
                .iter()
                .find_map(|k| d.get(*k).and_then(|x| x.as_f64()));
            if let Some(total) = total.filter(|x| x.is_finite() && *x >= 0.0) {
                ledger_points
                    .entry(ds.clone())
                    .or_default()
                    .push(BudgetPoint {
                        ts: t,
                        spent: total,
                        label: r.action.clone(),
                    });
            }
            // Runs whose run.json is gone still show through their reserve/intent record.
            let is_spend = r.action.contains("reserve")
                || (r.action.contains("distill") && r.outcome == Outcome::Intent);
            if let (true, Some(eps)) = (is_spend, d.get("epsilon").and_then(|x| x.as_f64())) {
                let run = d
                    .get("run")
                    .and_then(|x| x.as_str())
                    .unwrap_or(&r.object)
                    .to_string();
                logged_runs.entry(run).or_insert((ds.clone(), t, eps));
            }
        }
        if !in_window {
            return true;
        }
        match r.outcome {
            Outcome::Refused | Outcome::Error => problems.push(Problem {
                ts: r.ts.clone(),
                seq: r.seq,
                outcome: r.outcome.as_str(),
                actor: r.actor.clone(),
                action: r.action.clone(),
                object: r.object.clone(),
                reason: r.reason.clone().unwrap_or_default(),
            }),
            Outcome::Ok
                if r.action.starts_with("package") && r.action != "package.verify"
                    || r.action.starts_with("export") =>
            {
                let id = d
                    .get("package")
                    .and_then(|x| x.as_str())
                    .unwrap_or(&r.object)
                    .to_string();
                let e = exports.entry(id.clone()).or_default();
                e.package = id;
                e.ts = r.ts.clone();
                let s = |k: &str| d.get(k).and_then(|x| x.as_str()).map(str::to_string);
                if let Some(p) = s("partner") {
                    e.partner = p;
                }
                if let Some(ds) = &dataset {
                    e.dataset = ds.clone();
                }
                if let Some(x) = d.get("epsilon").and_then(|x| x.as_f64()) {
                    e.epsilon = Some(x);
                }
                if let Some(x) = s("digest").or_else(|| s("sha256sums_sha256")) {
                    e.digest = x;
                } else if let Some(x) = s("envelope_sha256") {
                    e.digest = format!("DSSE envelope sha256:{x}");
                }
            }
            _ => {}
        }
        true
    })?;
    add_package_index(ws, since, &mut exports);
    let series = budget_series(ws, ledger_points, logged_runs);
    let html = render(ws, &v, since, &series, &exports, &problems, &audits);
    Ok(Built {
        html,
        verdict: v.verdict,
        datasets: series.len(),
        exports: exports.len(),
        problems: problems.len(),
    })
}

/// The latest empirical privacy audit of one method (`retort privacy audit`), from its
/// audit-log record.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyAudit {
    /// Time of the record.
    pub ts: String,
    /// Audit id.
    pub id: String,
    /// Method audited.
    pub method: String,
    /// Dataset (audit-only).
    pub dataset: String,
    /// Claimed ε.
    pub epsilon: f64,
    /// Canaries.
    pub canaries: u64,
    /// `(score, ε lower bound, correct, guesses, AUROC, TPR at 1 % FPR)`.
    pub scores: Vec<(String, f64, u64, u64, f64, f64)>,
}

impl PrivacyAudit {
    fn from_record(r: &super::Record) -> Option<PrivacyAudit> {
        let d = &r.details;
        let f = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64());
        let u = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64());
        let scores = d
            .get("scores")?
            .as_array()?
            .iter()
            .filter_map(|s| {
                Some((
                    s.get("score")?.as_str()?.to_string(),
                    f(s, "epsilon_lower_bound")?,
                    u(s, "correct")?,
                    u(s, "guesses")?,
                    f(s, "auroc")?,
                    f(s, "tpr_at_1pct_fpr")?,
                ))
            })
            .collect();
        Some(PrivacyAudit {
            ts: r.ts.clone(),
            id: d.get("audit")?.as_str()?.to_string(),
            method: d.get("method")?.as_str()?.to_string(),
            dataset: r.object.clone(),
            epsilon: f(d, "epsilon")?,
            canaries: u(d, "canaries")?,
            scores,
        })
    }
}

fn render_privacy_audits(h: &mut String, audits: &BTreeMap<String, PrivacyAudit>) {
    h.push_str("<h2>6. Empirical privacy audits (latest per method)</h2>\n");
    if audits.is_empty() {
        h.push_str("<p class=\"muted\">No privacy audit yet (<code>retort privacy audit</code> on a dataset ingested with <code>--audit-only</code>).</p>\n");
        return;
    }
    h.push_str("<p class=\"muted\">A measured lower bound on epsilon (95 % confidence) from one run with planted canaries. A bound above the claimed epsilon shows a bug; a bound below it is not a proof of privacy.</p>\n<table><tr><th>method</th><th>time</th><th>dataset</th><th>claimed &epsilon;</th><th>canaries</th><th>score</th><th>&epsilon; lower bound</th><th>correct / guesses</th><th>AUROC</th><th>TPR at 1% FPR</th></tr>\n");
    for a in audits.values() {
        for (i, (score, lb, correct, guesses, auroc, tpr)) in a.scores.iter().enumerate() {
            let flag = if *lb > a.epsilon {
                " class=\"bad\""
            } else {
                ""
            };
            let head = if i == 0 {
                format!(
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                    esc(&a.method),
                    esc(&a.ts),
                    esc(&a.dataset),
                    a.epsilon,
                    a.canaries
                )
            } else {
                "<td></td><td></td><td></td><td></td><td></td>".to_string()
            };
            let _ = writeln!(
                h,
                "<tr>{head}<td>{}</td><td{flag}>{lb:.3}</td><td>{correct} / {guesses}</td><td>{auroc:.3}</td><td>{tpr:.3}</td></tr>",
                esc(score)
            );
        }
    }
    h.push_str("</table>\n");
}

/// Exports from `packages/<id>.meta.json` (the agreed index), with the digest of SHA256SUMS.
fn add_package_index(
    ws: &Workspace,
    since: Option<OffsetDateTime>,
    exports: &mut BTreeMap<String, Export>,
) {
    let Ok(rd) = fs::read_dir(ws.packages_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".meta.json") else {
            continue;
        };
        let Ok(text) = fs::read(e.path()) else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let s = |k: &str| m.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let created = s("created");
        if since.is_some_and(|t| parse_ts(&created).is_none_or(|c| c < t)) {
            continue;
        }
        let ex = exports.entry(id.to_string()).or_default();
        ex.package = id.to_string();
        if ex.ts.is_empty() {
            ex.ts = created;
        }
        if ex.partner.is_empty() {
            ex.partner = s("partner");
        }
        if ex.dataset.is_empty() {
            ex.dataset = s("dataset");
        }
        if ex.epsilon.is_none() {
            ex.epsilon = m.get("epsilon").and_then(|x| x.as_f64());
        }
        let sums = ws.packages_dir().join(id).join("SHA256SUMS");
        if let Ok(b) = fs::read(&sums) {
            ex.digest = format!("sha256:{}", crate::digest::sha256_hex(&b));
        }
    }
}

/// Per dataset: the ledger's totals if the log has them, else the cumulative sum of runs' ε
/// (from run.json, falling back to reserve records in the log).
fn budget_series(
    ws: &Workspace,
    ledger_points: BTreeMap<String, Vec<BudgetPoint>>,
    mut logged_runs: BTreeMap<String, (String, OffsetDateTime, f64)>,
) -> BTreeMap<String, BudgetSeries> {
    if let Ok(rd) = fs::read_dir(ws.runs_dir()) {
        for e in rd.flatten() {
            let Ok(text) = fs::read(e.path().join("run.json")) else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            let id = m
                .get("id")
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| e.file_name().to_string_lossy().into_owned());
            let ds = m.get("dataset").and_then(|x| x.as_str());
            let t = m.get("started").and_then(|x| x.as_str()).and_then(parse_ts);
            let eps = m
                .get("privacy")
                .and_then(|p| p.get("epsilon"))
                .or_else(|| m.get("epsilon"))
                .and_then(|x| x.as_f64());
            if let (Some(ds), Some(t), Some(eps)) = (ds, t, eps) {
                logged_runs.insert(id, (ds.to_string(), t, eps));
            }
        }
    }
    // The ledger files are authoritative for what was charged (crashed runs included):
    // `ledger/<fingerprint>.json` = {"fingerprint", "names", "records": [{"op":"reserve","run",
    // "dataset","epsilon","at",…}]} (version 1, not yet migrated: `ledger/<dataset>.json` with a
    // top-level "dataset").
    if let Ok(rd) = fs::read_dir(ws.ledger_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(text) = fs::read(e.path()) else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            let ds = m.get("dataset").and_then(|x| x.as_str()).unwrap_or(stem);
            let Some(recs) = m.get("records").and_then(|x| x.as_array()) else {
                continue;
            };
            for r in recs
                .iter()
                .filter(|r| r.get("op").and_then(|x| x.as_str()) == Some("reserve"))
            {
                let ds = r.get("dataset").and_then(|x| x.as_str()).unwrap_or(ds);
                let run = r.get("run").and_then(|x| x.as_str());
                let t = r.get("at").and_then(|x| x.as_str()).and_then(parse_ts);
                let eps = r.get("epsilon").and_then(|x| x.as_f64());
                if let (Some(run), Some(t), Some(eps)) = (run, t, eps) {
                    logged_runs.insert(run.to_string(), (ds.to_string(), t, eps));
                }
            }
        }
    }
    let caps = policy_caps(ws);
    let mut out: BTreeMap<String, BudgetSeries> = BTreeMap::new();
    let mut runs: Vec<_> = logged_runs.into_iter().collect();
    runs.sort_by_key(|(_, (_, t, _))| *t);
    for (id, (ds, t, eps)) in runs {
        if !eps.is_finite() || eps < 0.0 {
            continue;
        }
        let s = out.entry(ds).or_default();
        let prev = s.points.last().map_or(0.0, |p| p.spent);
        s.points.push(BudgetPoint {
            ts: t,
            spent: prev + eps,
            label: id,
        });
        s.basis = "sum of runs' epsilon (an upper bound on the composed total)";
    }
    for (ds, mut pts) in ledger_points {
        pts.sort_by_key(|p| p.ts);
        let s = out.entry(ds).or_default();
        s.points = pts;
        s.basis = "ledger total (accountant over all runs)";
    }
    for (ds, s) in out.iter_mut() {
        s.cap = caps.1.get(ds).copied().or(caps.0);
    }
    out
}

/// Caps from the active policy: (default dataset cap, per-dataset caps).
///
/// Adapter: reads the policy TOML directly (`budget.dataset_epsilon_cap`,
/// `[datasets.NAME] epsilon_cap`), so the report works without depending on the policy
/// module's API; keep it in step with `policies/README.md`.
fn policy_caps(ws: &Workspace) -> (Option<f64>, BTreeMap<String, f64>) {
    let Ok(text) = fs::read_to_string(ws.policy_path()) else {
        return (None, BTreeMap::new());
    };
    let Ok(v) = text.parse::<toml::Table>() else {
        return (None, BTreeMap::new());
    };
    let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64));
    let default = v
        .get("budget")
        .and_then(|b| b.get("dataset_epsilon_cap"))
        .and_then(num);
    let mut per = BTreeMap::new();
    if let Some(t) = v.get("datasets").and_then(|d| d.as_table()) {
        for (name, d) in t {
            if let Some(c) = d.get("epsilon_cap").and_then(num) {
                per.insert(name.clone(), c);
            }
        }
    }
    (default, per)
}

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;background:#fff;padding:0 1rem}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:2px solid #d0d7de;padding-bottom:.3rem}\
.verdict{padding:1rem 1.2rem;border-radius:8px;font-size:1.15rem;margin:1rem 0}\
.pass{background:#dafbe1;border:2px solid #1a7f37}.fail{background:#ffebe9;border:2px solid #cf222e}\
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f6f8fa}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;word-break:break-all}\
.muted{color:#57606a}.bad{color:#cf222e;font-weight:600}.ok{color:#1a7f37;font-weight:600}\
.chart{margin:1rem 0 2rem}";

fn render(
    ws: &Workspace,
    v: &VerifyReport,
    since: Option<OffsetDateTime>,
    series: &BTreeMap<String, BudgetSeries>,
    exports: &BTreeMap<String, Export>,
    problems: &[Problem],
    audits: &BTreeMap<String, PrivacyAudit>,
) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let cfg = ws.config();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Retort audit report - {site}</title><style>{STYLE}</style></head><body>\n\
<h1>Audit report: {site}</h1>\n<p class=\"muted\">workspace {id} &middot; generated {now} &middot; retort {ver}{window}</p>\n",
        site = esc(&cfg.site),
        id = esc(&cfg.workspace_id),
        now = crate::workspace::now_rfc3339(),
        ver = env!("CARGO_PKG_VERSION"),
        window = since.map_or(String::new(), |t| format!(
            " &middot; activity since {}",
            crate::workspace::format_rfc3339(t)
        )),
    );
    render_verdict(&mut h, v);
    render_budget(&mut h, series);
    render_exports(&mut h, exports);
    render_problems(&mut h, problems);
    render_keys(&mut h, ws, v);
    render_privacy_audits(&mut h, audits);
    h.push_str("<p class=\"muted\">This page is self-contained: no script, no external resource. Verify the log yourself with <code>retort audit verify</code> or by hand (audit/HOW-TO-VERIFY.md).</p>\n</body></html>\n");
    h
}

fn render_verdict(h: &mut String, v: &VerifyReport) {
    let (class, text) = if v.intact {
        (
            "pass",
            "PASS: the audit log and every checkpoint are intact",
        )
    } else {
        ("fail", "FAIL: the audit log or a checkpoint is NOT intact")
    };
    let _ = write!(
        h,
        "<h2>1. Integrity</h2>\n<div id=\"verdict\" class=\"verdict {class}\"><strong>{text}</strong><br>\
{n} records (seq {fs} to {ls}), {ft} to {lt}; {cps} checkpoint(s); {e} error finding(s), {w} warning(s); \
{u} record(s) after the newest good checkpoint are protected by the hash chain alone.</div>\n\
<p>{cov}</p>\n<p class=\"muted\">Head hash <span class=\"mono\">{head}</span>; Merkle root <span class=\"mono\">{root}</span>.</p>\n",
        n = v.records,
        fs = v.first_seq.map_or("-".into(), |x| x.to_string()),
        ls = v.last_seq.map_or("-".into(), |x| x.to_string()),
        ft = esc(v.first_ts.as_deref().unwrap_or("-")),
        lt = esc(v.last_ts.as_deref().unwrap_or("-")),
        cps = v.checkpoints.len(),
        e = v.errors,
        w = v.warnings,
        u = v.unsealed_tail,
        cov = esc(&v.coverage),
        head = esc(&v.head_sha256),
        root = esc(&v.root_sha256),
    );
    if !v.findings.is_empty() {
        h.push_str("<table><tr><th>code</th><th>severity</th><th>where</th><th>seq</th><th>what</th></tr>\n");
        for f in v.findings.iter().take(200) {
            let _ = writeln!(
                h,
                "<tr><td class=\"bad\">{}</td><td>{:?}</td><td>{}:{}</td><td>{}</td><td>{}</td></tr>",
                esc(f.code),
                f.severity,
                esc(&f.segment),
                f.line,
                f.seq.map_or(String::new(), |s| s.to_string()),
                esc(&f.message)
            );
        }
        h.push_str("</table>\n");
    }
    let bad: Vec<_> = v.checkpoints.iter().filter(|c| c.status != "ok").collect();
    if !bad.is_empty() {
        h.push_str(
            "<table><tr><th>checkpoint</th><th>size</th><th>status</th><th>what</th></tr>\n",
        );
        for c in bad {
            let _ = writeln!(
                h,
                "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"bad\">{}</td><td>{}</td></tr>",
                esc(&c.path.display().to_string()),
                c.size.map_or("-".into(), |s| s.to_string()),
                c.status,
                esc(&c.message)
            );
        }
        h.push_str("</table>\n");
    }
}

fn render_budget(h: &mut String, series: &BTreeMap<String, BudgetSeries>) {
    h.push_str("<h2>2. Privacy budget per dataset</h2>\n");
    if series.is_empty() {
        h.push_str("<p>No privacy budget has been spent: no distillation run is recorded.</p>\n");
        return;
    }
    for (ds, s) in series {
        let last = s.points.last().map_or(0.0, |p| p.spent);
        let _ = write!(
            h,
            "<h3>{}</h3>\n<p>spent &epsilon; = {last:.3}{cap} &middot; basis: {basis}</p>\n<div class=\"chart\">{svg}</div>\n",
            esc(ds),
            cap = s.cap.map_or(" (no cap found in the active policy)".into(), |c| format!(
                " of cap {c:.3}{}",
                match (last > c, s.basis.starts_with("ledger")) {
                    (true, true) => " <span class=\"bad\">OVER CAP</span>",
                    (true, false) => " (the plain sum is above the cap; the cap is checked against the accountant's total, which is lower: see <code>retort budget</code>)",
                    _ => "",
                }
            )),
            basis = esc(s.basis),
            svg = chart_svg(ds, s),
        );
    }
}

/// An SVG step chart of spent ε over time, with the cap as a dashed line.
pub fn chart_svg(dataset: &str, s: &BudgetSeries) -> String {
    const W: f64 = 760.0;
    const H: f64 = 260.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 20.0;
    const B: f64 = 40.0;
    let pw = W - L - R;
    let ph = H - T - B;
    let ymax_data = s.points.iter().map(|p| p.spent).fold(0.0f64, f64::max);
    let ymax = (ymax_data.max(s.cap.unwrap_or(0.0)) * 1.1).max(1e-9);
    let t0 = s.points.first().map_or(0, |p| p.ts.unix_timestamp());
    let t1 = s.points.last().map_or(1, |p| p.ts.unix_timestamp());
    let span = ((t1 - t0) as f64).max(1.0);
    let x = |t: i64| L + pw * ((t - t0) as f64 / span);
    let y = |v: f64| T + ph * (1.0 - v / ymax);
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" aria-label=\"privacy budget of {}\">",
        esc(dataset)
    );
    let _ = write!(
        o,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\
<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{yb}\" stroke=\"#57606a\"/>\
<line x1=\"{L}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"#57606a\"/>",
        yb = T + ph,
        xr = L + pw
    );
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let _ = write!(
            o,
            "<line x1=\"{L}\" y1=\"{yy:.1}\" x2=\"{xr}\" y2=\"{yy:.1}\" stroke=\"#eaeef2\"/>\
<text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#57606a\">{v:.2}</text>",
            yy = y(v),
            xr = L + pw,
            tx = L - 6.0,
            ty = y(v) + 4.0
        );
    }
    let _ = write!(
        o,
        "<text x=\"14\" y=\"{my}\" font-size=\"12\" fill=\"#1b1f24\" transform=\"rotate(-90 14 {my})\" text-anchor=\"middle\">epsilon</text>",
        my = T + ph / 2.0
    );
    if let (Some(a), Some(b)) = (s.points.first(), s.points.last()) {
        for (p, anchor, xx) in [(a, "start", L), (b, "end", L + pw)] {
            let _ = write!(
                o,
                "<text x=\"{xx}\" y=\"{yy}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#57606a\">{}</text>",
                crate::workspace::format_rfc3339(p.ts),
                yy = T + ph + 18.0
            );
        }
    }
    if let Some(c) = s.cap {
        let _ = write!(
            o,
            "<line x1=\"{L}\" y1=\"{yc:.1}\" x2=\"{xr}\" y2=\"{yc:.1}\" stroke=\"#cf222e\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\
<text x=\"{xr}\" y=\"{ty:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"#cf222e\">cap {c:.2}</text>",
            yc = y(c),
            xr = L + pw,
            ty = y(c) - 5.0
        );
    }
    // Step line: flat until each spend, then a jump.
    let mut d = format!("M{:.1},{:.1}", x(t0), y(0.0));
    let mut prev = 0.0;
    for p in &s.points {
        let px = x(p.ts.unix_timestamp());
        let _ = write!(d, " L{px:.1},{:.1} L{px:.1},{:.1}", y(prev), y(p.spent));
        prev = p.spent;
    }
    let _ = write!(d, " L{:.1},{:.1}", L + pw, y(prev));
    let _ = write!(
        o,
        "<path d=\"{d}\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"2.5\"/>"
    );
    for p in &s.points {
        let _ = write!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#0969da\"><title>{} {}: epsilon {:.3}</title></circle>",
            x(p.ts.unix_timestamp()),
            y(p.spent),
            crate::workspace::format_rfc3339(p.ts),
            esc(&p.label),
            p.spent
        );
    }
    let _ = write!(
        o,
        "<text x=\"{lx}\" y=\"{ly}\" font-size=\"12\" fill=\"#0969da\">spent</text></svg>",
        lx = L + 8.0,
        ly = T + 12.0
    );
    o
}

fn render_exports(h: &mut String, exports: &BTreeMap<String, Export>) {
    h.push_str("<h2>3. Exports</h2>\n");
    if exports.is_empty() {
        h.push_str("<p>No package was created or exported.</p>\n");
        return;
    }
    h.push_str("<table><tr><th>time</th><th>package</th><th>partner</th><th>dataset</th><th>&epsilon;</th><th>package digest (SHA-256 of SHA256SUMS)</th></tr>\n");
    let mut v: Vec<_> = exports.values().collect();
    v.sort_by(|a, b| a.ts.cmp(&b.ts));
    for e in v {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            esc(&e.ts),
            esc(&e.package),
            esc(&e.partner),
            esc(&e.dataset),
            e.epsilon.map_or("-".into(), |x| format!("{x:.3}")),
            esc(if e.digest.is_empty() { "-" } else { &e.digest })
        );
    }
    h.push_str("</table>\n");
}

fn render_problems(h: &mut String, problems: &[Problem]) {
    let _ = writeln!(h, "<h2>4. Refusals and errors ({})</h2>", problems.len());
    if problems.is_empty() {
        h.push_str("<p>None.</p>\n");
        return;
    }
    h.push_str("<table><tr><th>time</th><th>seq</th><th>outcome</th><th>who</th><th>action</th><th>object</th><th>code</th></tr>\n");
    for p in problems {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"bad\">{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td><code>{}</code></td></tr>",
            esc(&p.ts),
            p.seq,
            p.outcome,
            esc(&p.actor),
            esc(&p.action),
            esc(&p.object),
            esc(&p.reason)
        );
    }
    h.push_str("</table>\n");
}

fn render_keys(h: &mut String, ws: &Workspace, v: &VerifyReport) {
    let kp = KeyPaths::in_dir(&ws.keys_dir());
    let pkg = SigningKey::load(&kp.package_key)
        .map(|k| k.public().fingerprint())
        .unwrap_or_else(|_| "(not readable by this user)".into());
    let _ = write!(
        h,
        "<h2>5. Keys</h2>\n<table><tr><th>key</th><th>algorithm</th><th>SHA-256 fingerprint of the raw public key</th></tr>\n\
<tr><td>package signing</td><td>Ed25519</td><td class=\"mono\">{}</td></tr>\n\
<tr><td>audit checkpoints</td><td>Ed25519</td><td class=\"mono\">{}</td></tr></table>\n\
<p class=\"muted\">Audit checkpoint origin <code>{}</code>, signed-note key ID <code>{}</code> ({} key).</p>\n",
        esc(&pkg),
        esc(&v.key.sha256),
        esc(&v.origin),
        esc(&v.key.key_id),
        v.key.source
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn chart_has_cap_and_points() {
        let t = parse_ts("2026-11-29T10:00:00Z").unwrap();
        let s = BudgetSeries {
            points: vec![
                BudgetPoint {
                    ts: t,
                    spent: 1.0,
                    label: "run-a".into(),
                },
                BudgetPoint {
                    ts: t + time::Duration::hours(2),
                    spent: 2.5,
                    label: "run-<b>".into(),
                },
            ],
            cap: Some(4.0),
            basis: "test",
        };
        let svg = chart_svg("ds<1>", &s);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("cap 4.00"));
        assert!(svg.contains("run-&lt;b&gt;"));
        assert!(!svg.contains("ds<1>"));
    }
}
