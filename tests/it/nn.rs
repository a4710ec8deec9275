//! `retort bench dp-step` and `retort eval` through the real binary.

use crate::util::retort;

#[test]
fn bench_dp_step_prints_time_and_floor() {
    let r = retort(&[
        "bench",
        "dp-step",
        "--width",
        "4",
        "--batch",
        "8",
        "--reps",
        "2",
        "--threads",
        "1",
        "--json",
    ]);
    r.expect(0);
    let j = r.json();
    for k in [
        "ms_per_step",
        "samples_per_s",
        "model",
        "width",
        "batch",
        "threads",
        "floor_ms",
    ] {
        assert!(j.get(k).is_some(), "missing {k}: {j}");
    }
    assert_eq!(j["model"], "convnet");
    assert_eq!(j["batch"], 8);
    assert_eq!(j["threads"], 1);
    assert!(j["ms_per_step"].as_f64().unwrap() > 0.0);
    let m = retort(&[
        "bench", "dp-step", "--model", "mlp", "--width", "16", "--batch", "4", "--reps", "1",
        "--json",
    ]);
    m.expect(0);
    assert_eq!(m.json()["model"], "mlp");
    retort(&["bench", "dp-step", "--width", "0"]).expect(2);
}

#[test]
fn eval_writes_report_with_baselines() {
    let (t, id) = crate::util::workspace_with_real_run(12);
    let r = t.run(&[
        "eval",
        &id,
        "--json",
        "--models",
        "2",
        "--epochs",
        "2",
        "--width",
        "4",
        "--ceiling-steps",
        "2",
    ]);
    r.expect(0);
    let j = r.json();
    let acc = j["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(j["accuracy_std"].as_f64().unwrap() >= 0.0);
    // See: issue 21 (per-class figures): one row per class, synthetic beside the baselines,
    // in --json and in the internal eval.json.
    let rows = j["per_class"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["class"], "disc");
    for row in rows {
        for col in ["synthetic", "random_real", "all_real"] {
            let v = row[col].as_f64().unwrap_or_else(|| panic!("{col}: {row}"));
            assert!((0.0..=1.0).contains(&v), "{row}");
        }
    }
    assert_eq!(j["accuracies"].as_array().unwrap().len(), 2);
    // Hard labels only: the partner figure is the hard-label one. See: issue 22.
    assert_eq!(j["labels"], "hard");
    assert_eq!(j["accuracy_hard"], j["accuracy"]);
    assert!(j["accuracy_soft"].is_null());
    assert!(j["accuracy_mlp"].is_null() && j.get("other_models").is_some());
    assert_eq!(j["released"]["recipe"]["labels"], "hard");
    assert_eq!(j["test_images"], 24);
    let b = &j["baselines"];
    assert_eq!(b["random_real"]["private"], false);
    assert_eq!(b["random_real"]["train_images"], 8);
    assert_eq!(b["all_real"]["train_images"], 48);
    assert_eq!(b["all_real"]["capped"]["steps"], 2);
    assert!(j["compression"]["synthetic_bytes_f32"].as_u64().unwrap() > 0);
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.ws.join("runs").join(&id).join("eval.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["accuracy"], j["accuracy"]);
    assert_eq!(file["per_class"], j["per_class"]);
    // The run's utility share is released once, charged to the ledger first, and reused.
    // See: issue 19 (release boundary).
    assert_eq!(j["released_now"], true);
    let u = &j["released"];
    let acc = u["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(u["mechanism"]["sensitivity"], 2.0);
    assert!(u["noisy_count"].as_f64().is_some());
    assert!(t.ws.join("runs").join(&id).join("utility.json").is_file());
    let b = t.run(&["budget", "demo", "--json"]);
    b.expect(0);
    assert!(b.stdout.contains(&format!("{id}-utility")), "{}", b.stdout);
    // the training split was read only after an intent record
    let recs = t.audit_records();
    assert!(recs.iter().any(|r| r["action"] == "eval.read-train"));
    assert!(recs
        .iter()
        .any(|r| r["action"] == "eval" && r["outcome"] == "ok"));

    // human output has the table; --no-baselines reads no training data
    let h = t.run(&[
        "eval",
        &id,
        "--models",
        "1",
        "--epochs",
        "1",
        "--width",
        "4",
        "--no-baselines",
        "--model",
        "mlp",
    ]);
    h.expect(0).stdout_has(&[
        "synthetic (this run)",
        "per class",
        "compression",
        "RELEASED figures",
        "made earlier, reused",
    ]);
    assert!(!h.stdout.contains("random real"));
}

/// See: issue 22. A set with soft labels is evaluated both ways: `accuracy` (and the per-class
/// table and the utility release) with the soft labels a partner would use, `accuracy_hard`
/// beside it; the human table shows both rows.
#[test]
fn eval_with_soft_labels_reports_both() {
    let (t, id) = crate::util::workspace_with_real_run(12);
    crate::util::add_soft_labels(&t.ws.join("runs").join(&id));
    let r = t.run(&[
        "eval",
        &id,
        "--json",
        "--models",
        "1",
        "--epochs",
        "3",
        "--width",
        "4",
        "--no-baselines",
        "--also-mlp",
    ]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["labels"], "soft");
    // The other architecture: an MLP on the same labels (issue 22 item 4).
    let mlp = &j["other_models"]["mlp"];
    assert_eq!(mlp["model"]["kind"], "mlp");
    assert_eq!(mlp["model"]["hidden"], 256);
    assert_eq!(mlp["labels"], "soft");
    assert_eq!(j["accuracy_mlp"], mlp["accuracy"]);
    assert!((0.0..=1.0).contains(&mlp["accuracy"].as_f64().unwrap()));
    assert_eq!(j["accuracy_soft"], j["accuracy"]);
    let hard = j["accuracy_hard"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hard));
    let internal = &j["internal"];
    assert_eq!(internal["recipe"]["labels"], "soft");
    assert_eq!(internal["synthetic_hard"]["accuracy"], j["accuracy_hard"]);
    assert_eq!(internal["synthetic"]["accuracy"], j["accuracy"]);
    // The one utility release is of the soft-label models, and says so.
    assert_eq!(j["released"]["recipe"]["labels"], "soft");
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.ws.join("runs").join(&id).join("eval.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["accuracy_hard"], j["accuracy_hard"]);
    assert_eq!(file["accuracy_soft"], j["accuracy_soft"]);
    assert_eq!(file["other_models"]["mlp"]["accuracy"], j["accuracy_mlp"]);
    let rec = t
        .audit_records()
        .into_iter()
        .rfind(|r| r["action"] == "eval")
        .unwrap();
    assert_eq!(rec["details"]["labels"], "soft", "{rec}");
    let h = t.run(&[
        "eval",
        &id,
        "--models",
        "1",
        "--epochs",
        "1",
        "--width",
        "4",
        "--no-baselines",
    ]);
    h.expect(0).stdout_has(&[
        "synthetic, soft labels (partner)",
        "synthetic, hard labels",
        "made earlier, reused",
    ]);
}

/// The DP-SGD baseline spends budget: it is charged to the ledger before it reads data.
#[test]
fn eval_dp_baseline_is_charged_to_the_ledger() {
    let (t, id) = crate::util::workspace_with_real_run(12);
    let r = t.run(&[
        "eval",
        &id,
        "--json",
        "--models",
        "1",
        "--epochs",
        "1",
        "--width",
        "4",
        "--no-baselines",
        "--dp-baseline",
        "--dp-steps",
        "2",
    ]);
    r.expect(0);
    let j = r.json();
    let dp = &j["baselines"]["dp_sgd"];
    assert_eq!(dp["private"], true);
    assert!(dp["plan"]["epsilon"].as_f64().unwrap() <= 1.0 + 1e-9);
    let ledger_run = dp["ledger_run"].as_str().unwrap();
    let b = t.run(&["budget", "demo", "--json"]);
    b.expect(0);
    assert!(
        b.stdout.contains(ledger_run),
        "ledger lacks the baseline: {}",
        b.stdout
    );
    let recs = t.audit_records();
    assert!(recs.iter().any(|r| r["action"] == "eval.dp-baseline"));
}

#[test]
fn fail_eval_of_unfinished_or_missing_run() {
    let (t, id) = crate::util::workspace_with_real_run(12);
    let p = t.ws.join("runs").join(&id).join("run.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    rec["status"] = "running".into();
    std::fs::write(&p, rec.to_string()).unwrap();
    let r = t.run(&["eval", &id]);
    r.expect(1)
        .stderr_has(&["status \"running\"", "only a completed run", "hint:"]);
    assert!(!t.ws.join("runs").join(&id).join("eval.json").exists());
    t.run(&["eval", "no-such-run"])
        .expect(1)
        .stderr_has(&["no-such-run", "hint:"]);
    // A malformed id is wrong in itself: a usage error. See: issue 20 (CLI contract).
    t.run(&["eval", "../etc"]).expect(2);
}
