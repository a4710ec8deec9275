//! The compliance report: one self-contained HTML page (inline CSS and SVG, no script, no
//! external asset, works offline) that a compliance officer can open in any browser.
//!
//! Order of the page: the integrity verdict first (from [`super::verify`]), then the privacy
//! budget per dataset over time (spent against the cap, one SVG chart per dataset), every
//! export (partner, ε, package digest), refusals and errors, the key fingerprints, and the
//! latest empirical privacy audit per method (`retort privacy audit`, from its log record).
//!
//! Sources, all read-only:
//! - the audit log (refusals, errors, export records);
//! - every ledger, checked against the audit log ([`crate::ledger::check_all`]), and its typed
//!   [`crate::ledger::Summary`]: the budget figure is the accountant's total over all runs
//!   (what the policy's cap is checked against, and what `retort budget` prints), with the
//!   plain sum of the runs' ε beside it; a ledger that does not match the log is shown as such;
//! - `runs/*/run.json` through [`crate::run::dir::list`] (the one run record schema): a record
//!   that cannot be read, or a run no ledger charged, is listed, never skipped;
//! - the package index (`packages/*.meta.json`, [`crate::package::manifest::PackageMeta`]) and
//!   each package's `SHA256SUMS`, whose SHA-256 is shown as the package digest (it covers every
//!   file of the package and is signed); an unreadable index entry is listed;
//! - the active policy's caps.

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
    /// The accountant's total ε of all runs up to this one.
    pub spent: f64,
    /// The plain sum of the runs' ε up to this one (shown beside it; never smaller).
    pub plain: f64,
    /// What caused it (the run id, its purpose and state).
    pub label: String,
}

/// A dataset's budget over time (one ledger: one set of images).
#[derive(Debug, Clone, Default)]
pub struct BudgetSeries {
    /// Points in time order.
    pub points: Vec<BudgetPoint>,
    /// The policy's cap, if known.
    pub cap: Option<f64>,
    /// The accountant's total ε of all runs (the headline figure, as `retort budget`).
    pub total: f64,
    /// The plain sum of the runs' ε.
    pub plain_sum: f64,
    /// Which accountant gave `total`.
    pub accountant: String,
    /// δ of the totals.
    pub delta: f64,
    /// Runs still reserved (running).
    pub reserved_runs: usize,
}

/// Something the report could not read or that no ledger backs: listed, never skipped.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// What (a run id, a ledger, a package index entry).
    pub what: String,
    /// Why.
    pub why: String,
}

/// The budget part of the report.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// Per dataset (ledger), by its names.
    pub series: BTreeMap<String, BudgetSeries>,
    /// Ledgers that do not match the log, unreadable run records, runs no ledger charged.
    pub unreadable: Vec<Unreadable>,
    /// Why no ledger could be checked at all, if so.
    pub notice: Option<String>,
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

/// What one actor did in the report's window.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// Records by this actor.
    pub records: u64,
    /// Of which refused or failed.
    pub problems: u64,
    /// Time of the first and the last.
    pub first: String,
    /// Time of the last.
    pub last: String,
    /// The distinct actions (in order of first appearance, at most 12).
    pub actions: Vec<String>,
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
    let mut actors: BTreeMap<String, Activity> = BTreeMap::new();
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
        if !in_window {
            return true;
        }
        let a = actors.entry(r.actor.clone()).or_default();
        a.records += 1;
        if matches!(r.outcome, Outcome::Refused | Outcome::Error) {
            a.problems += 1;
        }
        if a.first.is_empty() {
            a.first = r.ts.clone();
        }
        a.last = r.ts.clone();
        if a.actions.len() < 12 && !a.actions.contains(&r.action) {
            a.actions.push(r.action.clone());
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
    let mut budget = budget(ws);
    add_package_index(ws, since, &mut exports, &mut budget.unreadable);
    let html = render(
        ws, &v, since, &budget, &exports, &problems, &actors, &audits,
    );
    Ok(Built {
        html,
        verdict: v.verdict,
        datasets: budget.series.len(),
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
    h.push_str("<h2>7. Empirical privacy audits (latest per method)</h2>\n");
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
    unreadable: &mut Vec<Unreadable>,
) {
    let Ok(rd) = fs::read_dir(ws.packages_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".meta.json") else {
            continue;
        };
        let m = fs::read(e.path()).map_err(|e| e.to_string()).and_then(|t| {
            serde_json::from_slice::<crate::package::manifest::PackageMeta>(&t)
                .map_err(|e| e.to_string())
        });
        let m = match m {
            Ok(m) => m,
            Err(why) => {
                unreadable.push(Unreadable {
                    what: format!("package index entry packages/{name}"),
                    why,
                });
                continue;
            }
        };
        if since.is_some_and(|t| parse_ts(&m.created).is_none_or(|c| c < t)) {
            continue;
        }
        let ex = exports.entry(id.to_string()).or_default();
        ex.package = id.to_string();
        if ex.ts.is_empty() {
            ex.ts = m.created.clone();
        }
        if ex.partner.is_empty() {
            ex.partner = m.partner.clone();
        }
        if ex.dataset.is_empty() {
            ex.dataset = m.dataset.clone();
        }
        if ex.epsilon.is_none() {
            ex.epsilon = Some(m.epsilon);
        }
        let sums = ws.packages_dir().join(id).join("SHA256SUMS");
        if let Ok(b) = fs::read(&sums) {
            ex.digest = format!("sha256:{}", crate::digest::sha256_hex(&b));
        }
    }
}

/// The budget of every ledger, checked against the audit log, as `retort budget` computes it
/// (the accountant's total at the smallest δ of the ledger's runs, else the policy's maximum
/// δ), with the history of the total over time; and everything that could not be read.
fn budget(ws: &Workspace) -> Budget {
    let mut out = Budget::default();
    let policy = crate::policy::load_active(ws, None).ok();
    let findings = match crate::ledger::check_all(ws) {
        Ok(f) => f,
        Err(e) => {
            out.notice = Some(format!("the privacy ledgers cannot be checked: {e}"));
            return out;
        }
    };
    let mut charged: std::collections::BTreeSet<String> = Default::default();
    for f in &findings {
        let label = if f.names.is_empty() {
            f.fingerprint.clone()
        } else {
            f.names.join(", ")
        };
        if f.is_mismatch() {
            out.unreadable.push(Unreadable {
                what: format!("privacy ledger of {label}"),
                why: f.message.clone(),
            });
            continue;
        }
        let summary = crate::ledger::Ledger::find(ws, &f.fingerprint).and_then(|l| {
            let max_delta = policy.as_ref().map(|p| p.policy.max_delta());
            l.summary_default(max_delta)
        });
        let sm = match summary {
            Ok(sm) => sm,
            Err(e) => {
                out.unreadable.push(Unreadable {
                    what: format!("privacy ledger of {label}"),
                    why: e.to_string(),
                });
                continue;
            }
        };
        let mut series = BudgetSeries {
            cap: policy
                .as_ref()
                .map(|p| p.policy.dataset_epsilon_cap(&sm.dataset)),
            total: sm.epsilon,
            plain_sum: sm.plain_sum,
            accountant: sm.accountant.to_string(),
            delta: sm.delta,
            reserved_runs: sm
                .runs
                .iter()
                .filter(|r| r.state == crate::ledger::RunState::Reserved)
                .count(),
            points: Vec::new(),
        };
        let mut events = Vec::new();
        let mut plain = 0.0;
        for r in &sm.runs {
            charged.insert(r.run.clone());
            events.extend(r.events.iter().cloned());
            plain += crate::dp::accountant::epsilon(&r.events, sm.delta)
                .map_or(r.epsilon, |x| x.epsilon);
            let spent =
                crate::dp::accountant::epsilon(&events, sm.delta).map_or(f64::NAN, |x| x.epsilon);
            let Some(ts) = parse_ts(&r.reserved_at) else {
                out.unreadable.push(Unreadable {
                    what: format!("ledger record of run {}", r.run),
                    why: format!("its time {:?} is not RFC 3339", r.reserved_at),
                });
                continue;
            };
            let state = match r.state {
                crate::ledger::RunState::Reserved => "reserved",
                crate::ledger::RunState::Committed => "committed",
                _ => "cancelled or crashed, charged",
            };
            series.points.push(BudgetPoint {
                ts,
                spent,
                plain,
                label: format!(
                    "{} ({}, {state})",
                    r.run,
                    r.purpose.as_deref().unwrap_or("distill")
                ),
            });
        }
        out.series.insert(label, series);
    }
    match crate::run::dir::list(ws) {
        Ok(runs) => {
            for (id, r) in runs {
                match r {
                    Err(e) => out.unreadable.push(Unreadable {
                        what: format!("run record runs/{id}/run.json"),
                        why: e.to_string(),
                    }),
                    Ok(r) if !charged.contains(&r.id) => out.unreadable.push(Unreadable {
                        what: format!("run {id} ({}, {})", r.dataset, r.status.as_str()),
                        why: format!(
                            "no privacy ledger charges it, although its record states epsilon {:.3}",
                            r.privacy.epsilon
                        ),
                    }),
                    Ok(_) => {}
                }
            }
        }
        Err(e) => out.unreadable.push(Unreadable {
            what: "runs/".into(),
            why: e.to_string(),
        }),
    }
    out
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

#[allow(clippy::too_many_arguments)]
fn render(
    ws: &Workspace,
    v: &VerifyReport,
    since: Option<OffsetDateTime>,
    budget: &Budget,
    exports: &BTreeMap<String, Export>,
    problems: &[Problem],
    actors: &BTreeMap<String, Activity>,
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
    render_budget(&mut h, budget);
    render_exports(&mut h, exports);
    render_problems(&mut h, problems);
    render_keys(&mut h, ws, v);
    render_actors(&mut h, actors);
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

fn render_budget(h: &mut String, b: &Budget) {
    h.push_str("<h2>2. Privacy budget per dataset</h2>\n");
    if let Some(n) = &b.notice {
        let _ = writeln!(h, "<p class=\"bad\">{}</p>", esc(n));
    }
    if b.series.is_empty() && b.notice.is_none() {
        h.push_str("<p>No privacy budget has been spent: no distillation run is recorded.</p>\n");
    }
    for (ds, s) in &b.series {
        let over = s.cap.is_some_and(|c| s.total > c);
        let _ = write!(
            h,
            "<h3>{}</h3>\n<p>spent &epsilon; = {total:.3}{cap} &middot; by the {acct} accountant over all runs at &delta; = {delta:e} \
(what the cap is checked against, as <code>retort budget</code>) &middot; plain sum of the runs&#39; &epsilon;: {plain:.3}{reserved}</p>\n<div class=\"chart\">{svg}</div>\n",
            esc(ds),
            total = s.total,
            cap = s.cap.map_or(" (no cap found in the active policy)".into(), |c| format!(
                " of cap {c:.3}{}",
                if over { " <span class=\"bad\">OVER CAP</span>" } else { "" }
            )),
            acct = esc(&s.accountant.to_uppercase()),
            delta = s.delta,
            plain = s.plain_sum,
            reserved = if s.reserved_runs > 0 {
                format!(" &middot; {} run(s) still running (charged)", s.reserved_runs)
            } else {
                String::new()
            },
            svg = chart_svg(ds, s),
        );
    }
    if !b.unreadable.is_empty() {
        let _ = writeln!(
            h,
            "<h3 class=\"bad\">Not counted above ({})</h3>\n<p>Records that could not be read, ledgers that do not match the audit log, and runs no ledger charges. Each needs an explanation.</p>\n<table><tr><th>what</th><th>why</th></tr>",
            b.unreadable.len()
        );
        for u in &b.unreadable {
            let _ = writeln!(
                h,
                "<tr><td class=\"bad\">{}</td><td>{}</td></tr>",
                esc(&u.what),
                esc(&u.why)
            );
        }
        h.push_str("</table>\n");
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
    let ymax_data = s
        .points
        .iter()
        .map(|p| p.spent.max(p.plain))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
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
    // The plain sum (dashed, grey) under the accountant's total.
    let mut dp = format!("M{:.1},{:.1}", x(t0), y(0.0));
    let mut prevp = 0.0;
    for p in &s.points {
        let px = x(p.ts.unix_timestamp());
        let _ = write!(dp, " L{px:.1},{:.1} L{px:.1},{:.1}", y(prevp), y(p.plain));
        prevp = p.plain;
    }
    let _ = write!(dp, " L{:.1},{:.1}", L + pw, y(prevp));
    let _ = write!(
        o,
        "<path d=\"{dp}\" fill=\"none\" stroke=\"#8c959f\" stroke-width=\"1.5\" stroke-dasharray=\"3 3\"/>"
    );
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
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#0969da\"><title>{} {}: epsilon {:.3} (plain sum {:.3})</title></circle>",
            x(p.ts.unix_timestamp()),
            y(p.spent),
            crate::workspace::format_rfc3339(p.ts),
            esc(&p.label),
            p.spent,
            p.plain
        );
    }
    let _ = write!(
        o,
        "<text x=\"{lx}\" y=\"{ly}\" font-size=\"12\" fill=\"#0969da\">spent (accountant)</text>\
<text x=\"{lx}\" y=\"{ly2}\" font-size=\"12\" fill=\"#57606a\">plain sum (dashed)</text></svg>",
        lx = L + 8.0,
        ly = T + 12.0,
        ly2 = T + 26.0
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

/// Who acted: every actor of the window (the OS identity of the person or service, a partner,
/// or Retort itself), with what they did.
fn render_actors(h: &mut String, actors: &BTreeMap<String, Activity>) {
    let _ = writeln!(
        h,
        "<h2>6. Who acted ({})</h2>\n<p class=\"muted\">Actors are the kernel's identity of the process: <code>user:NAME</code>, or <code>user:NAME (login LOGIN)</code> when someone acted as another user (sudo); <code>partner:NAME</code> for requests served to a partner; <code>system</code> for Retort's own records. Read-only commands of compliance users who cannot write the log are not recorded.</p>\n<table><tr><th>actor</th><th>records</th><th>refused or failed</th><th>first</th><th>last</th><th>actions</th></tr>",
        actors.len()
    );
    for (who, a) in actors {
        let _ = writeln!(
            h,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(who),
            a.records,
            a.problems,
            esc(&a.first),
            esc(&a.last),
            esc(&a.actions.join(", "))
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
                    plain: 1.0,
                    label: "run-a".into(),
                },
                BudgetPoint {
                    ts: t + time::Duration::hours(2),
                    spent: 2.5,
                    plain: 3.0,
                    label: "run-<b>".into(),
                },
            ],
            cap: Some(4.0),
            ..Default::default()
        };
        let svg = chart_svg("ds<1>", &s);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("cap 4.00"));
        assert!(svg.contains("run-&lt;b&gt;"));
        assert!(!svg.contains("ds<1>"));
    }
}
