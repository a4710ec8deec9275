//! Unit tests of the ledger and its binding to the audit log.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::audit::Outcome;
use crate::dataset::{self, Images, NewDataset, Shape, SplitInfo};
use crate::error::{Class, Coded};
use proptest::prelude::*;

const ACTOR: &str = "user:test";

fn ws() -> (tempfile::TempDir, Workspace) {
    let d = tempfile::tempdir().unwrap();
    let ws = Workspace::create(&d.path().join("ws"), "test").unwrap();
    crate::keys::KeyPaths::in_dir(&ws.keys_dir())
        .create_all()
        .unwrap();
    (d, ws)
}

/// `n` distinct 2×2 images over two classes, split `test` from the end.
fn images(n: u8, test: usize, offset: u8) -> NewDataset {
    let shape = Shape { c: 1, h: 2, w: 2 };
    let mut all = Images::new(shape);
    for i in 0..n {
        let v = i.wrapping_add(offset);
        all.push(&[v, v, 1, 2], u32::from(i % 2));
    }
    let k = all.len() - test;
    NewDataset {
        classes: vec!["a".into(), "b".into()],
        train: all.select(&(0..k).collect::<Vec<_>>()),
        test: all.select(&(k..all.len()).collect::<Vec<_>>()),
        source_format: "test".into(),
        split: SplitInfo::Official,
        notes: vec![],
    }
}

fn store(ws: &Workspace, name: &str, ds: &NewDataset) -> dataset::Meta {
    dataset::store(ws, name, ds).unwrap().meta
}

/// A workspace with one stored dataset and its (empty) ledger.
fn setup() -> (tempfile::TempDir, Workspace, Ledger) {
    let (d, ws) = ws();
    let meta = store(&ws, "d", &images(8, 2, 0));
    let l = Ledger::open(&ws, &meta).unwrap();
    (d, ws, l)
}

fn ev() -> Vec<DpEvent> {
    vec![DpEvent::poisson_gaussian(0.01, 1.1, 1000)]
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn log_records(ws: &Workspace) -> Vec<crate::audit::Record> {
    let mut out = Vec::new();
    for seg in crate::audit::AuditLog::new(ws.audit_dir())
        .segments()
        .unwrap()
    {
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

fn actions(ws: &Workspace) -> Vec<String> {
    log_records(ws).into_iter().map(|r| r.action).collect()
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::LogMismatch { kind, .. } => kind,
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn reserve_commit_cancel_and_summary() {
    let (_d, _ws, l) = setup();
    assert_eq!(l.summary(1e-5).unwrap().epsilon, 0.0);
    let r = l
        .reserve(ACTOR, "run-1", "distill", &ev(), 1e-5, Some(10.0))
        .unwrap();
    assert!(r.epsilon > 1.0 && r.epsilon < 2.0);
    r.commit(ACTOR).unwrap();
    let r2 = l
        .reserve(ACTOR, "run-2", "distill", &ev(), 1e-5, Some(10.0))
        .unwrap();
    r2.cancel(ACTOR).unwrap();
    let r3 = l
        .reserve(ACTOR, "run-3", "eval-dp-baseline", &ev(), 1e-5, None)
        .unwrap();
    drop(r3); // crashed: stays charged and reserved
    let s = l.summary(1e-5).unwrap();
    assert_eq!(s.runs.len(), 3);
    assert_eq!(s.runs[0].state, RunState::Committed);
    assert_eq!(s.runs[1].state, RunState::Cancelled);
    assert_eq!(s.runs[2].state, RunState::Reserved);
    assert_eq!(s.runs[2].purpose.as_deref(), Some("eval-dp-baseline"));
    assert_eq!(s.names, vec!["d".to_string()]);
    assert!(!s.pending_repair);
    let three = accountant::epsilon(&[DpEvent::poisson_gaussian(0.01, 1.1, 3000)], 1e-5).unwrap();
    assert!((s.epsilon - three.epsilon).abs() < 1e-9);
    assert!(s.plain_sum > s.epsilon);
    assert!(s.epsilon_reserved > 0.0 && s.epsilon_committed > 0.0);
    assert!(matches!(
        l.reserve(ACTOR, "run-1", "distill", &ev(), 1e-5, None),
        Err(Error::DuplicateRun { .. })
    ));
}

#[test]
fn every_change_is_logged_before_the_file_and_its_digest_after() {
    let (_d, ws, l) = setup();
    l.reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    let recs = log_records(&ws);
    let a: Vec<_> = recs
        .iter()
        .map(|r| (r.action.as_str(), r.outcome))
        .collect();
    assert_eq!(
        a,
        vec![
            ("ledger.reserve", Outcome::Intent),
            ("ledger.update", Outcome::Ok),
            ("ledger.commit", Outcome::Intent),
            ("ledger.update", Outcome::Ok),
        ]
    );
    // The intent carries the record itself (the spend is recomputable from the log) and the
    // update the digest of the file as written.
    assert_eq!(recs[0].details["records"][0]["run"], "r1");
    assert_eq!(recs[0].details["records"][0]["events"][0]["sigma"], 1.1);
    assert_eq!(recs[0].object, l.fingerprint());
    let bytes = std::fs::read(l.path()).unwrap();
    assert_eq!(
        recs[3].details["sha256"],
        crate::digest::sha256_hex(&bytes).as_str()
    );
    assert_eq!(recs[3].details["record_count"], 2);
    // The file is exactly what the log's content renders to.
    let view = log::replay(&ws).unwrap();
    assert_eq!(
        bytes,
        file::render(l.fingerprint(), &view.ledgers[l.fingerprint()].records)
    );
}

#[test]
fn fail_over_cap_is_refused_and_writes_nothing() {
    let (_d, ws, l) = setup();
    l.reserve(ACTOR, "a", "distill", &ev(), 1e-5, Some(2.0))
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    let before = snapshot(ws.root());
    let e = l
        .reserve(ACTOR, "b", "distill", &ev(), 1e-5, Some(2.0))
        .unwrap_err();
    assert_eq!(e.code(), "budget-exceeded");
    assert_eq!(e.class(), Class::Refused);
    assert!(e.to_string().contains("cap"));
    assert_eq!(snapshot(ws.root()), before);
}

#[test]
fn fail_over_cap_on_a_fresh_workspace_creates_nothing() {
    let (_d, ws, l) = setup();
    let before = snapshot(ws.root());
    let big = vec![DpEvent::gaussian(0.1, 100)];
    assert_eq!(
        l.reserve(ACTOR, "a", "distill", &big, 1e-5, Some(1.0))
            .unwrap_err()
            .code(),
        "budget-exceeded"
    );
    assert_eq!(snapshot(ws.root()), before, "not even the lock file");
}

#[test]
fn fail_invalid_inputs() {
    let (_d, ws, l) = setup();
    let g = vec![DpEvent::gaussian(1.0, 1)];
    assert!(l.reserve(ACTOR, "r", "distill", &g, 0.0, None).is_err());
    assert!(l
        .reserve(ACTOR, "r", "distill", &g, 1e-5, Some(-1.0))
        .is_err());
    assert!(l
        .reserve(ACTOR, "r", "distill", &g, 1e-5, Some(f64::NAN))
        .is_err());
    assert!(l
        .reserve(
            ACTOR,
            "r",
            "distill",
            &[DpEvent::gaussian(-1.0, 1)],
            1e-5,
            None
        )
        .is_err());
    assert!(l.reserve(ACTOR, "../r", "distill", &g, 1e-5, None).is_err());
    assert!(!l.path().exists());
    assert!(log_records(&ws).is_empty());
    // An unreadable ledger file with no history is still one the log never saw.
    std::fs::write(l.path(), b"{not json").unwrap();
    let e = l.summary(1e-5).unwrap_err();
    assert_eq!((e.code(), kind(&e)), ("ledger-log-mismatch", "unreadable"));
    assert_eq!(e.class(), Class::Verification);
    assert_eq!(
        l.reserve(ACTOR, "r", "distill", &g, 1e-5, None)
            .unwrap_err()
            .code(),
        "ledger-log-mismatch"
    );
}

#[test]
fn reading_never_mutates() {
    let (_d, ws, l) = setup();
    let before = snapshot(ws.root());
    l.summary(1e-5).unwrap();
    l.runs().unwrap();
    l.check().unwrap();
    check_all(&ws).unwrap();
    Ledger::find(&ws, "d").unwrap().summary(1e-5).unwrap();
    assert_eq!(snapshot(ws.root()), before);
    l.reserve(ACTOR, "r", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    let before = snapshot(ws.root());
    l.summary(1e-5).unwrap();
    check_all(&ws).unwrap();
    assert_eq!(snapshot(ws.root()), before);
}

/// A ledger with two committed runs; returns the file after the first run.
fn two_runs(l: &Ledger) -> Vec<u8> {
    l.reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    let old = std::fs::read(l.path()).unwrap();
    l.reserve(ACTOR, "r2", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    old
}

/// The ledger is refused by every path, and a reservation writes nothing.
fn assert_refused(ws: &Workspace, l: &Ledger, want: &str) {
    for e in [
        l.check().map(drop).unwrap_err(),
        l.summary(1e-5).map(drop).unwrap_err(),
        l.all_events().map(drop).unwrap_err(),
    ] {
        assert_eq!((e.code(), kind(&e)), ("ledger-log-mismatch", want), "{e}");
        assert_eq!(e.class().exit_code(), 4);
        assert!(e.to_string().contains("dataset d"), "{e}");
        assert!(e.hint().unwrap().contains("retort budget rebuild d"));
    }
    let before = snapshot(ws.root());
    let e = l
        .reserve(ACTOR, "r9", "distill", &ev(), 1e-5, None)
        .unwrap_err();
    assert_eq!(e.code(), "ledger-log-mismatch");
    assert_eq!(
        snapshot(ws.root()),
        before,
        "a refused reservation wrote something"
    );
    let f = check_all(ws).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].status, f[0].kind), ("mismatch", Some(want)));
}

#[test]
fn fail_ledger_deleted() {
    let (_d, ws, l) = setup();
    two_runs(&l);
    std::fs::remove_file(l.path()).unwrap();
    assert_refused(&ws, &l, "missing");
}

#[test]
fn fail_ledger_rolled_back() {
    let (_d, ws, l) = setup();
    let old = two_runs(&l);
    std::fs::write(l.path(), old).unwrap();
    assert_refused(&ws, &l, "rolled-back");
}

#[test]
fn fail_ledger_rolled_back_by_one_confirmed_change() {
    // One change back, but the log confirmed that change's file: not a crash.
    let (_d, ws, l) = setup();
    l.reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    let old = std::fs::read(l.path()).unwrap();
    let r = l
        .reserve(ACTOR, "r2", "distill", &ev(), 1e-5, None)
        .unwrap();
    std::fs::write(l.path(), old).unwrap();
    assert_refused(&ws, &l, "rolled-back");
    drop(r);
}

fn edit(l: &Ledger, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.path()).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(l.path(), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn fail_ledger_hand_edited_records_emptied() {
    let (_d, ws, l) = setup();
    two_runs(&l);
    edit(&l, |v| v["records"] = serde_json::json!([]));
    assert_refused(&ws, &l, "rolled-back");
}

#[test]
fn fail_ledger_hand_edited_epsilon_or_sigma() {
    let (_d, ws, l) = setup();
    two_runs(&l);
    let orig = std::fs::read(l.path()).unwrap();
    edit(&l, |v| v["records"][0]["epsilon"] = 0.01.into());
    assert_refused(&ws, &l, "edited");
    assert!(l
        .check()
        .unwrap_err()
        .to_string()
        .contains("epsilon changed"));
    std::fs::write(l.path(), &orig).unwrap();
    edit(&l, |v| v["records"][2]["events"][0]["sigma"] = 50.0.into());
    assert_refused(&ws, &l, "edited");
    assert!(l
        .check()
        .unwrap_err()
        .to_string()
        .contains("events changed"));
    // Formatting alone is an edit too (the file is a function of the log's content).
    std::fs::write(l.path(), &orig).unwrap();
    let mut spaced = orig.clone();
    spaced.insert(1, b' ');
    std::fs::write(l.path(), spaced).unwrap();
    assert_refused(&ws, &l, "edited");
    std::fs::write(l.path(), &orig).unwrap();
    l.check().unwrap();
}

#[test]
fn fail_ledger_with_records_the_log_never_saw() {
    let (_d, ws, l) = setup();
    two_runs(&l);
    edit(&l, |v| {
        let extra = v["records"][1].clone();
        v["records"].as_array_mut().unwrap().push(extra);
    });
    assert_refused(&ws, &l, "unlogged");
}

#[test]
fn crash_between_intent_and_write_stays_charged_and_is_repaired() {
    let (_d, ws, l) = setup();
    l.reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    test_hooks::crash_next_change();
    assert!(l
        .reserve(ACTOR, "r2", "distill", &ev(), 1e-5, None)
        .is_err());
    // The intent is in the log, the file lacks it: still charged, not tampering.
    let c = l.check().unwrap();
    assert!(matches!(
        c.sync,
        Sync::PendingRepair {
            ledger_records: 2,
            log_records: 3
        }
    ));
    let s = l.summary(1e-5).unwrap();
    assert!(s.pending_repair);
    assert_eq!(s.runs.len(), 2);
    assert_eq!(s.runs[1].state, RunState::Reserved);
    assert_eq!(check_all(&ws).unwrap()[0].status, "pending-repair");
    // Reading did not repair; the next change does, audited.
    assert!(!actions(&ws).contains(&"ledger.repair".to_string()));
    drop(
        l.reserve(ACTOR, "r3", "distill", &ev(), 1e-5, None)
            .unwrap(),
    );
    let a = actions(&ws);
    let i = a.iter().position(|x| x == "ledger.repair").unwrap();
    assert_eq!(a[i + 1], "ledger.update");
    assert!(matches!(l.check().unwrap().sync, Sync::InSync));
    let s = l.summary(1e-5).unwrap();
    assert_eq!(s.runs.len(), 3);
    assert!(!s.pending_repair);
}

#[test]
fn crash_before_the_first_write_is_a_pending_repair_not_a_missing_ledger() {
    let (_d, _ws, l) = setup();
    test_hooks::crash_next_change();
    assert!(l
        .reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .is_err());
    assert!(!l.path().exists());
    assert!(matches!(
        l.check().unwrap().sync,
        Sync::PendingRepair { .. }
    ));
    assert_eq!(l.summary(1e-5).unwrap().runs.len(), 1);
    drop(
        l.reserve(ACTOR, "r2", "distill", &ev(), 1e-5, None)
            .unwrap(),
    );
    assert_eq!(l.runs().unwrap().len(), 2);
}

#[test]
fn crash_after_the_write_before_the_digest_is_in_sync() {
    let (_d, ws, l) = setup();
    l.reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    // Drop the last record (the commit's ledger.update), as if the process died after the
    // file write.
    let seg = crate::audit::AuditLog::new(ws.audit_dir())
        .segments()
        .unwrap()[0]
        .clone();
    let text = std::fs::read_to_string(&seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.last().unwrap().contains("ledger.update"));
    std::fs::write(&seg, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    assert!(matches!(l.check().unwrap().sync, Sync::InSync));
    drop(
        l.reserve(ACTOR, "r2", "distill", &ev(), 1e-5, None)
            .unwrap(),
    );
    assert!(!actions(&ws).contains(&"ledger.repair".to_string()));
}

#[test]
fn fail_a_damaged_log_is_not_trusted() {
    let (_d, ws, l) = setup();
    two_runs(&l);
    let seg = crate::audit::AuditLog::new(ws.audit_dir())
        .segments()
        .unwrap()[0]
        .clone();
    let text = std::fs::read_to_string(&seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Remove the second reservation's intent from the middle of the log.
    let kept: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, l)| *l)
        .collect();
    std::fs::write(&seg, kept.join("\n") + "\n").unwrap();
    let e = l.summary(1e-5).unwrap_err();
    assert_eq!(e.code(), "ledger-log-unverified");
    assert_eq!(e.class().exit_code(), 4);
    assert_eq!(
        rebuild(&ws, "d", ACTOR).unwrap_err().code(),
        "ledger-log-unverified"
    );
}

#[test]
fn rebuild_restores_a_deleted_ledger_and_keeps_an_edited_one() {
    let (_d, ws, l) = setup();
    two_runs(&l);
    let good = std::fs::read(l.path()).unwrap();
    let spent = l.summary(1e-5).unwrap().epsilon;
    // In sync: nothing to do.
    assert_eq!(rebuild(&ws, "d", ACTOR).unwrap().action, "unchanged");
    std::fs::remove_file(l.path()).unwrap();
    let r = rebuild(&ws, "d", ACTOR).unwrap();
    assert_eq!((r.action, r.found, r.records), ("rebuilt", "missing", 4));
    assert_eq!(std::fs::read(l.path()).unwrap(), good);
    assert_eq!(l.summary(1e-5).unwrap().epsilon, spent);
    let a = actions(&ws);
    assert_eq!(a[a.len() - 2..], ["ledger.rebuild", "ledger.update"]);
    // An edited file is kept as evidence, then replaced.
    edit(&l, |v| v["records"] = serde_json::json!([]));
    let edited = std::fs::read(l.path()).unwrap();
    let r = rebuild(&ws, "d", ACTOR).unwrap();
    assert_eq!(r.found, "rolled-back");
    assert_eq!(std::fs::read(r.kept_as.unwrap()).unwrap(), edited);
    assert_eq!(std::fs::read(l.path()).unwrap(), good);
    // Nothing to rebuild for a dataset without history.
    store(&ws, "fresh", &images(6, 2, 100));
    assert_eq!(
        rebuild(&ws, "fresh", ACTOR).unwrap_err().code(),
        "ledger-not-found"
    );
}

#[test]
fn budget_follows_the_images_not_the_name() {
    let (_d, ws, l) = setup();
    l.reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    let spent = l.summary(1e-5).unwrap().epsilon;
    // The same images, another name, another split and order.
    let mut again = images(8, 5, 0);
    let idx: Vec<usize> = (0..again.train.len()).rev().collect();
    again.train = again.train.select(&idx);
    let m2 = store(&ws, "d-again", &again);
    assert_eq!(m2.fingerprint, l.fingerprint());
    let l2 = Ledger::open(&ws, &m2).unwrap();
    assert_eq!(l2.summary(1e-5).unwrap().epsilon, spent);
    drop(
        l2.reserve(ACTOR, "r2", "distill", &ev(), 1e-5, None)
            .unwrap(),
    );
    let s = l.summary(1e-5).unwrap();
    assert_eq!(s.runs.len(), 2);
    assert_eq!(s.names, vec!["d".to_string(), "d-again".into()]);
    // A subset is a different set of images: a fresh budget (documented in SECURITY.md).
    let m3 = store(&ws, "d-subset", &images(7, 2, 0));
    assert_ne!(m3.fingerprint, l.fingerprint());
    assert_eq!(
        Ledger::open(&ws, &m3)
            .unwrap()
            .summary(1e-5)
            .unwrap()
            .epsilon,
        0.0
    );
}

#[test]
fn find_resolves_deleted_datasets_runs_and_fingerprints() {
    let (_d, ws, l) = setup();
    l.reserve(ACTOR, "r1", "distill", &ev(), 1e-5, None)
        .unwrap()
        .commit(ACTOR)
        .unwrap();
    std::fs::remove_dir_all(dataset::dir_of(&ws, "d")).unwrap();
    let f = Ledger::find(&ws, "d").unwrap();
    assert_eq!(f.fingerprint(), l.fingerprint());
    assert_eq!(f.summary(1e-5).unwrap().runs.len(), 1);
    assert_eq!(
        Ledger::of_run(&ws, "r1").unwrap().fingerprint(),
        l.fingerprint()
    );
    assert_eq!(Ledger::find(&ws, l.fingerprint()).unwrap().dataset(), "d");
    assert_eq!(
        Ledger::find(&ws, "nope").unwrap_err().code(),
        "ledger-not-found"
    );
    assert_eq!(
        Ledger::find(&ws, &"ab".repeat(32)).unwrap_err().code(),
        "ledger-not-found"
    );
    // Even with the ledger file gone too, the log finds it, and the check refuses it.
    std::fs::remove_file(l.path()).unwrap();
    let e = Ledger::find(&ws, "d").unwrap().summary(1e-5).unwrap_err();
    assert_eq!(kind(&e), "missing");
    assert_eq!(rebuild(&ws, "d", ACTOR).unwrap().action, "rebuilt");
}

/// Turn a stored dataset back into a version-1 one and give it a version-1 ledger file.
fn make_v1(ws: &Workspace, name: &str, runs: &[&str]) -> (String, String) {
    let mut s = dataset::open(ws, name).unwrap();
    let v2 = s.meta.fingerprint.clone();
    let v1 = "5f".repeat(32);
    s.meta.version = 1;
    s.meta.fingerprint = v1.clone();
    dataset::rewrite_meta(&s).unwrap();
    write_v1_ledger(ws, name, runs);
    (v1, v2)
}

fn write_v1_ledger(ws: &Workspace, name: &str, runs: &[&str]) {
    let recs: Vec<serde_json::Value> = runs
        .iter()
        .flat_map(|r| {
            [
                serde_json::json!({"op": "reserve", "run": r, "events": [{"kind": "poisson-sampled-gaussian", "q": 0.01, "sigma": 1.1, "steps": 1000}],
                                   "delta": 1e-5, "epsilon": 1.4, "at": "2026-01-01T00:00:00Z"}),
                serde_json::json!({"op": "commit", "run": r, "at": "2026-01-01T00:01:00Z"}),
            ]
        })
        .collect();
    let v = serde_json::json!({"version": 1, "dataset": name, "records": recs});
    std::fs::create_dir_all(ws.ledger_dir()).unwrap();
    std::fs::write(
        ws.ledger_dir().join(format!("{name}.json")),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
}

#[test]
fn migration_is_audited_idempotent_and_resumes_the_spend() {
    let (_d, ws) = ws();
    store(&ws, "old", &images(8, 2, 0));
    let (v1, v2) = make_v1(&ws, "old", &["run-a", "run-b"]);
    write_v1_ledger(&ws, "gone", &["run-c"]);
    // Unmigrated: reads refuse rather than show an empty budget.
    assert_eq!(check_all(&ws).unwrap_err().code(), "ledger-not-migrated");
    assert_eq!(
        Ledger::find(&ws, "old").unwrap_err().code(),
        "ledger-not-migrated"
    );
    let m = migrate(&ws, ACTOR).unwrap();
    assert_eq!(
        m.datasets,
        vec![("old".to_string(), v2.clone(), v1.clone())]
    );
    assert_eq!(m.ledgers.len(), 2);
    let meta = dataset::open(&ws, "old").unwrap().meta;
    assert_eq!(
        (meta.fingerprint.as_str(), meta.fingerprint_v1.as_deref()),
        (v2.as_str(), Some(v1.as_str()))
    );
    assert!(meta.has_v2_fingerprint());
    let l = Ledger::open(&ws, &meta).unwrap();
    let s = l.summary(1e-5).unwrap();
    assert_eq!(s.runs.len(), 2);
    assert_eq!(s.runs[0].state, RunState::Committed);
    assert!(s.epsilon > 1.0);
    // The deleted dataset's history is kept under its name.
    let gone = Ledger::find(&ws, "gone").unwrap();
    assert_eq!(gone.summary(1e-5).unwrap().runs.len(), 1);
    assert_ne!(gone.fingerprint(), l.fingerprint());
    // The old fingerprint still resolves; the version-1 files are kept as evidence.
    assert_eq!(Ledger::find(&ws, &v1).unwrap().fingerprint(), v2);
    assert!(ws.ledger_dir().join("migrated-v1/old.json").is_file());
    assert!(!ws.ledger_dir().join("old.json").exists());
    let a = actions(&ws);
    assert_eq!(a.iter().filter(|x| *x == "dataset.migrate").count(), 1);
    assert_eq!(a.iter().filter(|x| *x == "ledger.migrate").count(), 2);
    // The spend is recomputable from the log alone: the baseline carries the records.
    let view = log::replay(&ws).unwrap();
    assert_eq!(view.ledgers[l.fingerprint()].records.len(), 4);
    // Idempotent.
    let n = log_records(&ws).len();
    assert!(migrate(&ws, ACTOR).unwrap().is_empty());
    assert_eq!(log_records(&ws).len(), n);
    assert!(check_all(&ws).unwrap().iter().all(|f| f.status == "ok"));
    // And it goes on: new reservations append after the baseline.
    drop(
        l.reserve(ACTOR, "r-new", "distill", &ev(), 1e-5, None)
            .unwrap(),
    );
    assert_eq!(l.runs().unwrap().len(), 3);
}

#[test]
fn migration_after_a_crash_neither_loses_nor_doubles() {
    let (_d, ws) = ws();
    store(&ws, "old", &images(8, 2, 0));
    make_v1(&ws, "old", &["run-a"]);
    test_hooks::crash_next_change();
    assert!(migrate(&ws, ACTOR).is_err());
    // The baseline is logged, the file not written, the version-1 file still there.
    assert!(ws.ledger_dir().join("old.json").exists());
    let meta = dataset::open(&ws, "old").unwrap().meta;
    assert!(matches!(
        Ledger::open(&ws, &meta).unwrap().check().unwrap().sync,
        Sync::PendingRepair { .. }
    ));
    migrate(&ws, ACTOR).unwrap();
    let a = actions(&ws);
    assert_eq!(a.iter().filter(|x| *x == "ledger.migrate").count(), 1);
    assert_eq!(a.iter().filter(|x| *x == "ledger.repair").count(), 1);
    let l = Ledger::open(&ws, &meta).unwrap();
    assert_eq!(l.runs().unwrap().len(), 1);
    assert!(!ws.ledger_dir().join("old.json").exists());
}

#[test]
fn fail_migration_refuses_an_unreadable_v1_ledger() {
    let (_d, ws) = ws();
    std::fs::write(ws.ledger_dir().join("x.json"), b"{not json").unwrap();
    assert_eq!(migrate(&ws, ACTOR).unwrap_err().code(), "ledger-corrupt");
    assert_eq!(check_all(&ws).unwrap_err().code(), "ledger-not-migrated");
}

#[test]
fn concurrent_reservations_keep_ledger_and_log_in_step() {
    let (_d, ws, l) = setup();
    std::thread::scope(|s| {
        for t in 0..3 {
            let l = l.clone();
            s.spawn(move || {
                for i in 0..3 {
                    l.reserve(ACTOR, &format!("r{t}-{i}"), "distill", &ev(), 1e-5, None)
                        .unwrap()
                        .commit(ACTOR)
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(l.runs().unwrap().len(), 9);
    assert!(check_all(&ws).unwrap().iter().all(|f| f.status == "ok"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn no_reserve_sequence_exceeds_cap(cap in 0.5f64..6.0,
                                       runs in proptest::collection::vec((0.001f64..0.1, 0.8f64..5.0, 1u64..300), 1..6)) {
        let (_d, _ws, l) = setup();
        for (i, (q, s, t)) in runs.iter().enumerate() {
            let _ = l.reserve(ACTOR, &format!("r{i}"), "distill", &[DpEvent::poisson_gaussian(*q, *s, *t)], 1e-5, Some(cap));
            let total = l.summary(1e-5).unwrap().epsilon;
            prop_assert!(total <= cap + 1e-12, "total {total} over cap {cap}");
        }
    }
}
