//! Lifecycle commands (issue 20): `runs list|show`, crashed runs, `datasets delete` (the budget
//! follows the images after a deletion), `policy remove-partner`, and the honest-output rules
//! that need a real workspace (`budget` of an unknown name, eval's cancel hint, the report's
//! budget figure).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The demo phantoms as an image folder (`ROOT/<class>/*.png`), as a hospital exports them.
fn png_folder(t: &TestWs, per_class: usize) -> String {
    let src = t.path("export");
    retort::demo::write_png_folder(&retort::demo::generate(per_class, per_class / 2), &src)
        .unwrap();
    src.display().to_string()
}

fn distill(t: &TestWs, dataset: &str) -> (String, f64) {
    let r = t.run(&[
        "--json",
        "distill",
        "--dataset",
        dataset,
        "--epsilon",
        "1",
        "--ipc",
        "2",
        "--iterations",
        "2",
        "--seed",
        "3",
    ]);
    r.expect(0);
    let j = r.json();
    (
        j["run"].as_str().unwrap().to_string(),
        j["epsilon"].as_f64().unwrap(),
    )
}

/// See: issue 20. Ingest, distill, delete, re-ingest the same images under another name: the
/// earlier spend is still there, under both names.
#[test]
fn deleted_dataset_keeps_its_budget_and_reingest_resumes_it() {
    let t = TestWs::init();
    let src = png_folder(&t, 12);
    t.run(&["ingest", &src, "--name", "chest", "--format", "images"])
        .expect(0);
    let (run, _) = distill(&t, "chest");
    let before = t.run(&["--json", "budget", "chest"]);
    before.expect(0);
    let total = before.json()["total"].as_f64().unwrap();
    assert!(total > 0.0);

    let d = t.run(&["--json", "datasets", "delete", "chest"]);
    d.expect(0);
    assert_eq!(d.json()["runs_kept"], serde_json::json!([run]));
    assert!(!t.ws.join("datasets/chest").exists(), "pixels removed");
    let left: Vec<_> = std::fs::read_dir(t.ws.join("datasets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
    t.run(&["datasets", "list"])
        .expect(0)
        .stdout_has(&["no datasets yet"]);
    // The history stays: by the old name, and in the audit log.
    let after = t.run(&["--json", "budget", "chest"]);
    after.expect(0);
    assert_eq!(after.json()["total"].as_f64().unwrap(), total);
    let recs = t.audit_records();
    let del: Vec<_> = recs
        .iter()
        .filter(|r| r["action"] == "dataset.delete")
        .collect();
    assert_eq!(del.len(), 2, "intent and outcome: {del:#?}");
    assert_eq!(del[0]["outcome"], "intent");
    assert_eq!(del[1]["outcome"], "ok");
    // The run stays too (a released output), and the deleted dataset cannot be shown.
    t.run(&["runs", "show", &run]).expect(0);
    t.run(&["datasets", "show", "chest"]).expect(1);

    // The same images under another name: the budget resumes.
    let r = t.run(&[
        "ingest",
        &src,
        "--name",
        "chest-again",
        "--format",
        "images",
    ]);
    r.expect(0).stdout_has(&["ingested before (as chest)"]);
    let again = t.run(&["--json", "budget", "chest-again"]);
    again.expect(0);
    let j = again.json();
    assert_eq!(j["total"].as_f64().unwrap(), total, "{j}");
    assert!(j["names"].as_array().unwrap().contains(&"chest".into()));
    assert_eq!(j["runs"][0]["run"], run.as_str());
    t.run(&["audit", "verify"]).expect(0);
}

/// See: issue 20. A run whose process was killed (`kill -9`) is found `running` by the next
/// command and marked `crashed`: audited, still charged, shown by `runs list`.
#[test]
fn killed_run_is_marked_crashed_by_the_next_command() {
    let t = TestWs::init();
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "demo", &retort::demo::generate(40, 10)).unwrap();
    let mut child = Command::new(bin())
        .args(["--workspace", t.ws.to_str().unwrap()])
        .args([
            "distill",
            "--dataset",
            "demo",
            "--epsilon",
            "1",
            "--ipc",
            "2",
            "--iterations",
            "100000",
        ])
        .env_remove("RETORT_WORKSPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the reservation (run.json says running), then kill it the hard way.
    let t0 = Instant::now();
    let run = loop {
        let found = std::fs::read_dir(t.ws.join("runs")).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.join("run.json").exists())
        });
        if let Some(p) = found {
            break p.file_name().unwrap().to_string_lossy().into_owned();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the distill never reserved"
        );
        assert!(child.try_wait().unwrap().is_none(), "distill ended early");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.ws.join("runs").join(&run).join("run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["status"], "running");

    let r = t.run(&["--json", "runs", "list"]);
    r.expect(0).stderr_has(&["marked crashed", run.as_str()]);
    let j = r.json();
    assert_eq!(j["runs"][0]["id"], run.as_str());
    assert_eq!(j["runs"][0]["status"], "crashed");
    let recs = t.audit_records();
    let crashed: Vec<_> = recs
        .iter()
        .filter(|r| r["action"] == "run.crashed")
        .collect();
    assert_eq!(crashed.len(), 1, "{crashed:#?}");
    assert_eq!(crashed[0]["outcome"], "error");
    assert_eq!(crashed[0]["reason"], "run-crashed");
    assert_eq!(crashed[0]["object"], run.as_str());
    // Still charged; no longer "in flight".
    let b = t.run(&["--json", "budget", "demo"]);
    b.expect(0);
    let b = b.json();
    assert!(b["total"].as_f64().unwrap() > 0.0, "{b}");
    assert_eq!(b["runs"][0]["state"], "cancelled", "{b}");
    assert_eq!(b["reserved"].as_f64().unwrap(), 0.0);
    // Found once: the next command has nothing to mark.
    t.run(&["runs", "show", &run])
        .expect(0)
        .stdout_has(&["CRASHED", "cancelled: still charged"]);
    assert_eq!(
        t.audit_records()
            .iter()
            .filter(|r| r["action"] == "run.crashed")
            .count(),
        1
    );
    // A crashed run cannot be evaluated or packaged.
    t.run(&["eval", &run]).expect(1).stderr_has(&["crashed"]);
    t.run(&["audit", "verify"]).expect(0);
}

/// See: issue 20. `datasets delete` refuses while a run on the dataset is running.
#[test]
fn fail_delete_while_a_run_is_running() {
    let t = TestWs::init();
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "demo", &retort::demo::generate(20, 10)).unwrap();
    let req = retort::distill::Request {
        epsilon: retort::dp::Epsilon::new(1.0).unwrap(),
        delta: retort::dp::Delta::new(1e-5).unwrap(),
        utility_share: 0.0,
        teacher: None,
        ipc: 2,
        method: None,
        iterations: Some(2),
        seed: Some(1),
    };
    let mut session = retort::audit::Session::begin(&ws, TEST_ACTOR, "distill", "demo").unwrap();
    // Reserved, not finished: this process is the run's live process.
    let reserved = retort::run::plan(&ws, "demo", &req, None)
        .unwrap()
        .reserve(&mut session)
        .unwrap();
    let mut del = retort::audit::Session::begin(&ws, TEST_ACTOR, "dataset.delete", "demo").unwrap();
    let e = retort::dataset::delete(&ws, &mut del, "demo").unwrap_err();
    assert_eq!(retort::error::Coded::code(&e), "dataset-in-use", "{e}");
    assert!(e.to_string().contains(reserved.id()));
    assert!(ws.root().join("datasets/demo/dataset.json").exists());
    drop(reserved);
}

/// See: issue 20. `policy remove-partner` is audited like add-partner, and refuses an unknown
/// name.
#[test]
fn remove_partner_is_an_audited_policy_change() {
    let t = TestWs::init();
    t.run(&[
        "policy",
        "add-partner",
        "acme",
        "--description",
        "a partner",
    ])
    .expect(0);
    t.run(&["policy", "add-partner", "zenith"]).expect(0);
    let before = std::fs::read_to_string(t.ws.join("policies/active.toml")).unwrap();
    let r = t.run(&["--json", "policy", "remove-partner", "acme"]);
    r.expect(0);
    let j = r.json();
    let after = std::fs::read_to_string(t.ws.join("policies/active.toml")).unwrap();
    assert!(
        !after.contains("\"acme\"") && after.contains("\"zenith\""),
        "{after}"
    );
    assert_eq!(
        j["old_sha256"].as_str().unwrap(),
        retort::digest::sha256_hex(before.as_bytes())
    );
    assert_eq!(
        j["new_sha256"].as_str().unwrap(),
        retort::digest::sha256_hex(after.as_bytes())
    );
    let changes: Vec<_> = t
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "policy.change" && r["details"]["change"] == "remove-partner")
        .collect();
    assert_eq!(changes.len(), 2, "intent then ok");
    assert_eq!(changes[1]["details"]["partner"], "acme");
    t.run(&[
        "policy",
        "check",
        t.ws.join("policies/active.toml").to_str().unwrap(),
    ])
    .expect(0);
    t.run(&["policy", "remove-partner", "acme"])
        .expect(1)
        .stderr_has(&["not listed", "retort policy show"]);
    // The last one goes too; the policy stays valid.
    t.run(&["policy", "remove-partner", "zenith"]).expect(0);
    t.run(&[
        "policy",
        "check",
        t.ws.join("policies/active.toml").to_str().unwrap(),
    ])
    .expect(0);
}

/// See: issue 20. A run that completed, listed and shown, with what became of it.
#[test]
fn runs_show_says_what_became_of_a_run() {
    let (t, run) = workspace_with_real_run(20);
    let r = t.run(&["--json", "runs", "show", &run]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["status"], "completed");
    assert_eq!(j["evaluated"], false);
    assert_eq!(j["charges"][0]["run"], run.as_str());
    assert_eq!(j["charges"][0]["state"], "committed");
    t.run(&["policy", "add-partner", "acme"]).expect(0);
    t.run(&["package", &run, "--partner", "acme"]).expect(0);
    let j = t.run(&["--json", "runs", "show", &run]).json();
    assert_eq!(j["packaged"], true);
    assert_eq!(j["packages"][0]["partner"], "acme");
    // An unreadable record is listed, never skipped.
    std::fs::create_dir_all(t.ws.join("runs/run-broken")).unwrap();
    std::fs::write(t.ws.join("runs/run-broken/run.json"), b"{not json").unwrap();
    let l = t.run(&["--json", "runs", "list"]);
    l.expect(0);
    let rows = l.json()["runs"].as_array().unwrap().clone();
    assert!(rows
        .iter()
        .any(|r| r["id"] == "run-broken" && r["status"] == "unreadable"));
    t.run(&["runs"])
        .expect(0)
        .stdout_has(&["run-broken", "UNREADABLE"]);
}

/// See: issue 20. `budget` of a name no dataset or ledger knows is an error, not a full budget.
#[test]
fn fail_budget_of_an_unknown_dataset() {
    let t = TestWs::init();
    t.run(&["budget", "nonexist"])
        .expect(1)
        .stderr_has(&["no dataset and no budget history named \"nonexist\""]);
    let r = t.run(&["--json", "budget", "nonexist"]);
    r.expect(1);
    assert_eq!(r.json()["error"]["code"], "ledger-not-found");
    // A stored dataset that spent nothing yet: its budget, with no minus zero anywhere.
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "fresh", &retort::demo::generate(3, 1)).unwrap();
    let r = t.run(&["budget", "fresh"]);
    r.expect(0).stdout_has(&["no runs yet"]);
    assert!(!r.stdout.contains("-0.0"), "{}", r.stdout);
}

/// See: issue 20. The report's headline budget is the accountant's total, as `retort budget`
/// prints it, with the plain sum beside it; unreadable records are listed.
#[test]
fn report_budget_is_the_accountants_total() {
    let (t, _run) = workspace_with_real_run(20);
    distill(&t, "demo");
    let b = t.run(&["--json", "budget", "demo"]).json();
    let (total, plain) = (
        b["total"].as_f64().unwrap(),
        b["plain_sum"].as_f64().unwrap(),
    );
    assert!(total < plain, "two runs compose below their plain sum: {b}");
    std::fs::create_dir_all(t.ws.join("runs/run-broken")).unwrap();
    std::fs::write(t.ws.join("runs/run-broken/run.json"), b"{not json").unwrap();
    let out = t.path("report.html");
    let r = t.run(&["--json", "audit", "report", "--html", out.to_str().unwrap()]);
    r.expect(0);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(
        html.contains(&format!("spent &epsilon; = {total:.3}")),
        "the accountant's total {total:.3} is the headline:\n{html}"
    );
    assert!(html.contains(&format!("plain sum of the runs&#39; &epsilon;: {plain:.3}")));
    assert!(html.contains("run-broken"), "unreadable record listed");
    assert!(html.contains("Not counted above"));
}
