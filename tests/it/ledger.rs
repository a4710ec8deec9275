//! The ledger bound to the signed audit log, through the real binary (issue 19 §4): a deleted,
//! rolled-back or hand-edited ledger is refused by `budget`, `audit verify` and any reservation
//! (exit 4, nothing else written); a crash between the reserve intent and the file write stays
//! charged and is repaired; `budget rebuild` recovers from the log; the budget follows the
//! images across names and splits; old workspaces migrate, audited.
// See: issue 19

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use retort::dp::DpEvent;
use serde_json::Value;

use crate::util::{charge, ledger_of, TestWs, TEST_ACTOR};

const FAST: &[&str] = &["--ipc", "2", "--iterations", "4", "--seed", "7"];

/// A workspace with the demo dataset `phantoms` (20 training images per class).
fn ws_with_demo() -> TestWs {
    let t = TestWs::init();
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "phantoms", &retort::demo::generate(20, 5)).unwrap();
    t
}

fn ev() -> Vec<DpEvent> {
    vec![DpEvent::poisson_gaussian(0.05, 2.0, 100)]
}

/// Every file of the workspace except the audit log and its checkpoints, with its bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == "audit" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn ledger_file(t: &TestWs) -> PathBuf {
    ledger_of(t, "phantoms").path()
}

/// The first JSON line of stdout (a report printed before the error line).
fn first_json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().next().expect("a report line")).unwrap()
}

/// Every path refuses the ledger with exit 4 and `ledger-log-mismatch` of `kind`, naming the
/// dataset and the way out; none of them writes anything outside the audit log.
fn assert_refused_everywhere(t: &TestWs, kind: &str) {
    let before = snapshot(&t.ws);
    let r = t.run(&["budget", "phantoms", "--json"]);
    r.expect(4);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "ledger-log-mismatch", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("phantoms") && msg.contains(kind), "{msg}");
    assert!(e["hint"]
        .as_str()
        .unwrap()
        .contains("retort budget rebuild phantoms"));
    t.run(&["budget"])
        .expect(4)
        .stderr_has(&["error:", "hint:", "phantoms"]);

    let r = t.run(&["audit", "verify", "--json"]);
    r.expect(4);
    let rep = first_json(&r.stdout);
    assert_eq!(rep["verdict"], "FAIL");
    assert_eq!(rep["intact"], true, "the log itself is intact");
    assert_eq!(rep["ledgers"]["mismatch"], 1, "{}", rep["ledgers"]);
    assert_eq!(rep["ledgers"]["findings"][0]["kind"], kind);
    assert_eq!(r.json()["error"]["code"], "ledger-log-mismatch");
    t.run(&["audit", "verify"])
        .expect(4)
        .stdout_has(&["mismatch", "phantoms"]);

    let mut args = vec![
        "distill",
        "--dataset",
        "phantoms",
        "--epsilon",
        "1",
        "--json",
    ];
    args.extend_from_slice(FAST);
    let r = t.run(&args);
    r.expect(4);
    assert_eq!(r.json()["error"]["code"], "ledger-log-mismatch");
    let mut args = vec!["plan", "--dataset", "phantoms", "--epsilon", "1"];
    args.extend_from_slice(FAST);
    t.run(&args).expect(4);

    assert_eq!(
        snapshot(&t.ws),
        before,
        "a refused command wrote outside audit/"
    );
    // The refusal itself is audited by the command's outcome record.
    let recs = t.audit_records();
    assert!(recs.iter().any(|r| r["action"] == "distill"
        && r["outcome"] == "error"
        && r["reason"] == "ledger-log-mismatch"));
    assert!(!recs.iter().any(|r| r["action"] == "distill.run"));
}

/// Every ledger record in the log has the shape `audit/record.schema.json` documents.
fn assert_ledger_records_fit_the_schema(t: &TestWs) {
    let hex64 = |v: &Value| {
        v.as_str().is_some_and(|s| {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    let mut seen = 0;
    for r in t.audit_records() {
        let a = r["action"].as_str().unwrap();
        if !a.starts_with("ledger.") {
            continue;
        }
        seen += 1;
        let d = &r["details"];
        assert!(
            hex64(&d["fingerprint"]) && r["object"] == d["fingerprint"],
            "{r}"
        );
        assert!(d["dataset"].is_string(), "{r}");
        match (a, r["outcome"].as_str().unwrap()) {
            ("ledger.reserve" | "ledger.commit" | "ledger.cancel" | "ledger.migrate", "intent") => {
                assert!(d["index"].is_u64(), "{r}");
                for rec in d["records"].as_array().unwrap() {
                    assert!(["reserve", "commit", "cancel"].contains(&rec["op"].as_str().unwrap()));
                    assert!(rec["run"].is_string() && rec["at"].is_string(), "{rec}");
                }
            }
            ("ledger.update", "ok") => {
                assert!(d["record_count"].is_u64() && hex64(&d["sha256"]), "{r}");
            }
            ("ledger.repair" | "ledger.rebuild", "intent") => {
                assert!(d["record_count"].is_u64(), "{r}");
            }
            other => panic!("unexpected ledger record {other:?}: {r}"),
        }
    }
    assert!(seen > 0);
}

/// Two committed runs; returns the ledger file as it was after the first.
fn two_runs(t: &TestWs) -> Vec<u8> {
    charge(t, "phantoms", "run-one", &ev(), Some(10.0));
    let old = std::fs::read(ledger_file(t)).unwrap();
    charge(t, "phantoms", "run-two", &ev(), Some(10.0));
    old
}

#[test]
fn fail_ledger_deleted() {
    let t = ws_with_demo();
    two_runs(&t);
    t.run(&["audit", "verify"]).expect(0);
    std::fs::remove_file(ledger_file(&t)).unwrap();
    assert_refused_everywhere(&t, "missing");
}

#[test]
fn fail_ledger_rolled_back() {
    let t = ws_with_demo();
    let old = two_runs(&t);
    std::fs::write(ledger_file(&t), old).unwrap();
    assert_refused_everywhere(&t, "rolled-back");
}

#[test]
fn fail_ledger_hand_edited() {
    let t = ws_with_demo();
    two_runs(&t);
    let p = ledger_file(&t);
    let good = std::fs::read(&p).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&good).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    };
    edit(&|v| v["records"] = serde_json::json!([]));
    assert_refused_everywhere(&t, "rolled-back");
    edit(&|v| v["records"][0]["epsilon"] = 0.001.into());
    assert_refused_everywhere(&t, "edited");
    edit(&|v| v["records"][2]["events"][0]["sigma"] = 40.0.into());
    assert_refused_everywhere(&t, "edited");
    std::fs::write(&p, &good).unwrap();
    t.run(&["budget", "phantoms"]).expect(0);
    t.run(&["audit", "verify"]).expect(0);
}

#[test]
fn rebuild_restores_a_deleted_ledger_from_the_log() {
    let t = ws_with_demo();
    two_runs(&t);
    let p = ledger_file(&t);
    let good = std::fs::read(&p).unwrap();
    let total = t.run(&["budget", "phantoms", "--json"]).expect(0).json()["total"].clone();
    std::fs::remove_file(&p).unwrap();
    let r = t.run(&["budget", "rebuild", "phantoms", "--json"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(
        (j["action"].as_str(), j["found"].as_str()),
        (Some("rebuilt"), Some("missing"))
    );
    assert_eq!(std::fs::read(&p).unwrap(), good);
    let b = t.run(&["budget", "phantoms", "--json"]).expect(0).json();
    assert_eq!(b["total"], total);
    assert_eq!(b["runs"].as_array().unwrap().len(), 2);
    t.run(&["audit", "verify"]).expect(0);
    let recs = t.audit_records();
    assert!(recs
        .iter()
        .any(|r| r["action"] == "ledger.rebuild" && r["outcome"] == "intent"));
    assert!(recs
        .iter()
        .any(|r| r["action"] == "budget.rebuild" && r["outcome"] == "ok"));
    assert_ledger_records_fit_the_schema(&t);
    // Again: nothing to do.
    let again = t
        .run(&["budget", "rebuild", "phantoms", "--json"])
        .expect(0)
        .json();
    assert_eq!(again["action"], "unchanged");
    // The log must verify before it is used as the source.
    let seg = t.ws.join("audit/segment-000000.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(
        &seg,
        text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"ok\" ", 1),
    )
    .unwrap();
    std::fs::remove_file(&p).unwrap();
    let r = t.run(&["budget", "rebuild", "phantoms", "--json"]);
    r.expect(4);
    assert_eq!(r.json()["error"]["code"], "ledger-log-unverified");
    assert!(
        !p.exists(),
        "nothing rebuilt from a log that does not verify"
    );
}

#[test]
fn crash_between_reserve_intent_and_ledger_write_stays_charged_and_is_repaired() {
    let t = ws_with_demo();
    charge(&t, "phantoms", "run-one", &ev(), Some(10.0));
    let p = ledger_file(&t);
    let before_crash = std::fs::read(&p).unwrap();
    // The crash: the reserve intent reached the log, the ledger file and its digest record
    // did not (put the file back and cut the digest record, the log's last line).
    let r = ledger_of(&t, "phantoms")
        .reserve(
            TEST_ACTOR,
            "run-crashed",
            "distill",
            &ev(),
            1e-5,
            Some(10.0),
        )
        .unwrap();
    drop(r);
    std::fs::write(&p, &before_crash).unwrap();
    let seg = t.ws.join("audit/segment-000000.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[lines.len() - 1].contains("\"ledger.update\""));
    assert!(lines[lines.len() - 2].contains("\"ledger.reserve\""));
    std::fs::write(&seg, lines[..lines.len() - 1].join("\n") + "\n").unwrap();

    // Still charged, not tampering: budget and verify pass and count it.
    let b = t.run(&["budget", "phantoms", "--json"]).expect(0).json();
    assert_eq!(b["pending_repair"], true);
    assert_eq!(b["runs"][1]["run"], "run-crashed");
    assert_eq!(b["runs"][1]["state"], "reserved");
    let v = t.run(&["audit", "verify", "--json"]).expect(0).json();
    assert_eq!(v["ledgers"]["pending_repair"], 1, "{}", v["ledgers"]);
    assert_eq!(
        std::fs::read(&p).unwrap(),
        before_crash,
        "reading repaired the file"
    );
    // The next reservation repairs it, audited, and goes on.
    let mut args = vec![
        "distill",
        "--dataset",
        "phantoms",
        "--epsilon",
        "1",
        "--json",
    ];
    args.extend_from_slice(FAST);
    t.run(&args).expect(0);
    let recs = t.audit_records();
    assert!(recs.iter().any(|r| r["action"] == "ledger.repair"));
    let b = t.run(&["budget", "phantoms", "--json"]).expect(0).json();
    assert_eq!(b["pending_repair"], false);
    assert_eq!(b["runs"].as_array().unwrap().len(), 3);
    t.run(&["audit", "verify"]).expect(0);
    assert_ledger_records_fit_the_schema(&t);
}

/// `root/<class>/<i>.png`: 8×8 grey images, each distinct.
fn png_folder(root: &Path, per_class: usize) {
    for (k, class) in ["cat", "dog"].iter().enumerate() {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            let px: Vec<u8> = (0..64)
                .map(|j| ((i * 37 + j * 3 + k * 101) % 256) as u8)
                .collect();
            let mut out = Vec::new();
            image::ImageEncoder::write_image(
                image::codecs::png::PngEncoder::new(&mut out),
                &px,
                8,
                8,
                image::ExtendedColorType::L8,
            )
            .unwrap();
            std::fs::write(d.join(format!("{i}.png")), out).unwrap();
        }
    }
}

fn fingerprint(t: &TestWs, name: &str) -> String {
    let m: Value = serde_json::from_slice(
        &std::fs::read(t.ws.join("datasets").join(name).join("dataset.json")).unwrap(),
    )
    .unwrap();
    m["fingerprint"].as_str().unwrap().to_string()
}

#[test]
fn reingesting_the_same_images_resumes_their_budget() {
    let t = TestWs::init();
    let src = t.path("images");
    png_folder(&src, 10);
    let ingest = |name: &str| {
        let r = t.run(&[
            "ingest",
            src.to_str().unwrap(),
            "--name",
            name,
            "--test-fraction",
            "0.3",
        ]);
        r.expect(0);
        r
    };
    ingest("pets");
    charge(&t, "pets", "run-one", &ev(), Some(10.0));
    let spent = t.run(&["budget", "pets", "--json"]).expect(0).json()["total"].clone();
    // The same images under another name, with a fresh random split: the same fingerprint,
    // and the spent budget is resumed.
    ingest("pets-again").stdout_has(&["ingested before (as pets)", "carries over"]);
    assert_eq!(fingerprint(&t, "pets-again"), fingerprint(&t, "pets"));
    let b = t.run(&["budget", "pets-again", "--json"]).expect(0).json();
    assert_eq!(b["total"], spent);
    assert_eq!(b["runs"][0]["run"], "run-one");
    charge(&t, "pets-again", "run-two", &ev(), Some(10.0));
    let b = t.run(&["budget", "pets", "--json"]).expect(0).json();
    assert_eq!(b["runs"].as_array().unwrap().len(), 2);
    assert_eq!(b["names"], serde_json::json!(["pets", "pets-again"]));
    t.run(&["budget", "pets"])
        .expect(0)
        .stdout_has(&["pets-again", "follows the images"]);
    // Deleting the dataset keeps its history findable by name.
    std::fs::remove_dir_all(t.ws.join("datasets/pets")).unwrap();
    t.run(&["budget", "pets"])
        .expect(0)
        .stdout_has(&["run-two"]);
    // A subset is another set of images: another fingerprint and a fresh budget
    // (SECURITY.md: the log shows both ingests).
    std::fs::remove_file(src.join("cat/0.png")).unwrap();
    ingest("pets-subset");
    assert_ne!(
        fingerprint(&t, "pets-subset"),
        fingerprint(&t, "pets-again")
    );
    let b = t.run(&["budget", "pets-subset", "--json"]).expect(0).json();
    assert_eq!(b["runs"].as_array().unwrap().len(), 0);
    t.run(&["budget", "no-such-set"]).expect(1);
    t.run(&["audit", "verify"]).expect(0);
}

#[test]
fn an_old_workspace_is_migrated_once_audited() {
    let t = ws_with_demo();
    // Make it look like a workspace from before version 2: a v1 fingerprint and a v1 ledger.
    let meta_path = t.ws.join("datasets/phantoms/dataset.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let v2 = meta["fingerprint"].clone();
    meta["version"] = 1.into();
    meta["fingerprint"] = "5f".repeat(32).into();
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    std::fs::write(
        t.ws.join("ledger/phantoms.json"),
        serde_json::json!({"version": 1, "dataset": "phantoms", "records": [
            {"op": "reserve", "run": "run-old", "events": [{"kind": "poisson-sampled-gaussian", "q": 0.05, "sigma": 2.0, "steps": 100}],
             "delta": 1e-5, "epsilon": 0.6, "at": "2026-01-01T00:00:00Z"},
            {"op": "commit", "run": "run-old", "at": "2026-01-01T00:01:00Z"}]})
        .to_string(),
    )
    .unwrap();
    let b = t.run(&["budget", "phantoms", "--json"]).expect(0).json();
    assert_eq!(b["runs"][0]["run"], "run-old");
    assert_eq!(b["fingerprint"], v2);
    let meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["fingerprint"], v2);
    assert_eq!(meta["fingerprint_v1"], "5f".repeat(32));
    assert!(t.ws.join("ledger/migrated-v1/phantoms.json").is_file());
    let count = |t: &TestWs, a: &str| {
        t.audit_records()
            .iter()
            .filter(|r| r["action"] == a)
            .count()
    };
    assert_eq!(
        (count(&t, "dataset.migrate"), count(&t, "ledger.migrate")),
        (1, 1)
    );
    t.run(&["budget", "phantoms"]).expect(0);
    assert_eq!(
        (count(&t, "dataset.migrate"), count(&t, "ledger.migrate")),
        (1, 1)
    );
    t.run(&["audit", "verify"]).expect(0);
    assert_ledger_records_fit_the_schema(&t);
}
