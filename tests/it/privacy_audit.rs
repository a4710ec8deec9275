//! `retort privacy audit` and `--audit-only` datasets through the real binary: the audit runs
//! on demo phantoms ingested for auditing, writes its JSON result and log record, spends no
//! budget and shows in the compliance report; refusals both ways (`fail_*`).

use std::path::Path;

use crate::util::TestWs;

/// The demo phantoms (`per_class` per class) as a folder of PNG class folders.
fn phantom_folder(root: &Path, per_class: usize) {
    let ds = retort::demo::generate(per_class, 0);
    let side = ds.train.shape.h as u32;
    for i in 0..ds.train.len() {
        let class = &ds.classes[ds.train.labels[i] as usize];
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        image::GrayImage::from_raw(side, side, ds.train.image(i).to_vec())
            .unwrap()
            .save(dir.join(format!("{i}.png")))
            .unwrap();
    }
}

fn ingest(t: &TestWs, name: &str, audit_only: bool) {
    let src = t.path(&format!("src-{name}"));
    phantom_folder(&src, 12);
    let src = src.to_string_lossy().into_owned();
    let mut args = vec!["ingest", src.as_str(), "--name", name, "--json"];
    if audit_only {
        args.push("--audit-only");
    }
    let r = t.run(&args);
    r.expect(0);
    assert_eq!(r.json()["audit_only"], audit_only);
}

const FAST: [&str; 8] = [
    "--canaries",
    "60",
    "--ipc",
    "2",
    "--iterations",
    "2",
    "--epsilon",
    "50",
];

#[test]
fn audit_of_phantoms_reports_bounds_and_spends_nothing() {
    let t = TestWs::init();
    ingest(&t, "ph", true);
    let mut args = vec!["privacy", "audit", "--dataset", "ph", "--json"];
    args.extend(FAST);
    let r = t.run(&args);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["epsilon"], 50.0);
    assert_eq!(j["delta"], 1e-5);
    assert_eq!(j["canaries"], 60);
    let scores = j["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2);
    assert_eq!(scores[0]["score"], "white-box");
    assert_eq!(scores[1]["score"], "black-box");
    for s in scores {
        let e = s["epsilon_lower_bound"].as_f64().unwrap();
        assert!((0.0..=50.0).contains(&e), "{s}");
        assert!(s["correct"].as_u64().unwrap() <= s["guesses"].as_u64().unwrap());
        assert!((0.0..=1.0).contains(&s["auroc"].as_f64().unwrap()));
        assert!((0.0..=1.0).contains(&s["tpr_at_1pct_fpr"].as_f64().unwrap()));
    }
    // The JSON file in the workspace and the log record agree with the output.
    let files: Vec<_> = std::fs::read_dir(t.ws.join("audits"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files[0].path()).unwrap()).unwrap();
    assert_eq!(
        saved["scores"][0]["epsilon_lower_bound"],
        scores[0]["epsilon_lower_bound"]
    );
    assert!(saved["releases"].as_u64().unwrap() >= 1);
    let recs = t.audit_records();
    let rec = recs
        .iter()
        .rev()
        .find(|r| r["action"] == "privacy.audit" && r["outcome"] == "ok")
        .expect("an ok privacy.audit record");
    assert_eq!(rec["object"], "ph");
    assert_eq!(rec["details"]["scores"][0]["score"], "white-box");
    assert!(recs
        .iter()
        .any(|r| r["action"] == "privacy.audit" && r["outcome"] == "intent"));
    // No budget spent: no ledger record for the dataset.
    let b = t.run(&["budget", "ph", "--json"]);
    if b.status == 0 {
        assert_eq!(b.json()["total"], 0.0, "{}", b.stdout);
        assert_eq!(b.json()["runs"].as_array().map_or(0, |v| v.len()), 0);
    } else {
        assert_eq!(
            b.json()["error"]["code"],
            "ledger-not-found",
            "{}",
            b.stderr
        );
    }
    // The compliance report shows the latest audit per method.
    let html = t.path("report.html");
    t.run(&["audit", "report", "--html", html.to_str().unwrap()])
        .expect(0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Empirical privacy audits"), "{page}");
    assert!(page.contains("white-box"));
}

#[test]
fn fail_plan_and_distill_on_an_audit_only_dataset() {
    let t = TestWs::init();
    ingest(&t, "pub", true);
    for cmd in ["plan", "distill"] {
        let r = t.run(&[cmd, "--dataset", "pub", "--epsilon", "1", "--json"]);
        r.expect(3);
        assert_eq!(r.json()["error"]["code"], "run-audit-only", "{cmd}");
        let r = t.run(&[cmd, "--dataset", "pub", "--epsilon", "1"]);
        r.expect(3).stderr_has(&["audit", "hint: "]);
    }
    assert!(
        !t.ws.join("runs").exists()
            || std::fs::read_dir(t.ws.join("runs"))
                .unwrap()
                .next()
                .is_none()
    );
    let refused = t
        .audit_records()
        .into_iter()
        .filter(|r| r["outcome"] == "refused" && r["reason"] == "run-audit-only")
        .count();
    assert_eq!(refused, 4);
}

#[test]
fn fail_audit_on_a_dataset_not_marked_audit_only() {
    let t = TestWs::init();
    ingest(&t, "private", false);
    let mut args = vec!["privacy", "audit", "--dataset", "private", "--json"];
    args.extend(FAST);
    let r = t.run(&args);
    r.expect(3);
    assert_eq!(r.json()["error"]["code"], "run-not-audit-only");
    assert!(!t.ws.join("audits").exists());
    let recs = t.audit_records();
    let last = recs.last().unwrap();
    assert_eq!(last["action"], "privacy.audit");
    assert_eq!(last["outcome"], "refused");
    // Refused before anything was read: no intent record.
    assert!(!recs
        .iter()
        .any(|r| r["action"] == "privacy.audit" && r["outcome"] == "intent"));
}
