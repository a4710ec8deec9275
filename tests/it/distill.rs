//! `retort plan` and `retort distill` end to end (issue 5).

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::TestWs;

/// A workspace holding the small demo dataset `phantoms` (per_class train images per class).
fn ws_with_demo(per_class: usize) -> TestWs {
    let t = TestWs::init();
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    let ds = retort::demo::generate(per_class, 5);
    retort::dataset::store(&ws, "phantoms", &ds).unwrap();
    t
}

/// Every file under `dir` with its bytes (to prove a command changed nothing).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

const FAST: &[&str] = &["--ipc", "2", "--iterations", "4", "--seed", "7"];

#[test]
fn plan_reads_metadata_only_and_spends_nothing() {
    let t = ws_with_demo(20);
    let ledger0 = snapshot(&t.ws.join("ledger"));
    let runs0 = snapshot(&t.ws.join("runs"));
    let mut args = vec!["plan", "--dataset", "phantoms", "--epsilon", "1", "--json"];
    args.extend_from_slice(FAST);
    let r = t.run(&args);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["method"], "dm");
    assert_eq!(j["records"], 80);
    // One Poisson-sampled release per feature net (64 nets on a set this small).
    assert_eq!(j["steps"], 64);
    assert_eq!(j["events"][0]["kind"], "poisson-sampled-gaussian");
    assert_eq!(j["sampling_rate"], 1.0);
    assert!(j["noise_multiplier"].as_f64().unwrap() > 3.0);
    let eps = j["epsilon"].as_f64().unwrap();
    assert!(eps <= 1.0 + 1e-9 && eps > 0.9, "epsilon {eps}");
    assert!(j["epsilon_rdp"].as_f64().unwrap() >= eps);
    assert_eq!(j["decision"]["allowed"], true);
    assert!(j["estimated_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(j["spent"], 0);
    assert_eq!(
        snapshot(&t.ws.join("ledger")),
        ledger0,
        "plan changed the ledger"
    );
    assert_eq!(snapshot(&t.ws.join("runs")), runs0, "plan wrote a run");
}

#[test]
fn distill_charges_the_ledger_and_writes_a_loadable_run() {
    let t = ws_with_demo(20);
    let ledger0 = snapshot(&t.ws.join("ledger"));
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
    r.expect(0);
    let j = r.json();
    let run = j["run"].as_str().unwrap().to_string();
    assert!(j["epsilon"].as_f64().unwrap() <= 1.0 + 1e-9);
    assert_eq!(j["delta"].as_f64().unwrap(), 1e-5);
    assert!(j["seconds"].as_f64().unwrap() > 0.0);
    let dir = t.ws.join("runs").join(&run);
    for f in ["synthetic.parquet", "contact_sheet.png", "run.json"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["method"], "dm");
    assert_eq!(rec["ipc"], 2);
    assert_eq!(rec["privacy"]["neighbouring"], "add-remove-one-image");
    // Default dm: one Poisson-sampled Gaussian release per feature net.
    assert_eq!(rec["events"][0]["kind"], "poisson-sampled-gaussian");
    assert_eq!(
        rec["events"][0]["steps"], rec["hyperparameters"]["nets"],
        "{}",
        rec["events"]
    );
    assert_eq!(rec["shape"], serde_json::json!([1, 28, 28]));
    // The synthetic set loads with the partner-format reader: 4 classes x 2 images in [0, 1].
    let (set, classes) =
        retort::dataset::read_synthetic_parquet(&dir.join("synthetic.parquet")).unwrap();
    assert_eq!(classes.len(), 4);
    assert_eq!(set.labels.len(), 8);
    assert!(set.data.iter().all(|&x| (0.0..=1.0).contains(&x)));
    // The ledger changed (the run is charged), and the audit log has intent and outcome.
    assert_ne!(snapshot(&t.ws.join("ledger")), ledger0);
    let recs = t.audit_records();
    assert!(recs
        .iter()
        .any(|r| r["action"] == "distill.run" && r["outcome"] == "intent"));
    assert!(recs
        .iter()
        .any(|r| r["action"] == "distill" && r["outcome"] == "ok" && r["object"] == run.as_str()));
}

/// Issue 22: `--teacher` plans a "teacher" share beside the main release (both charged at
/// distill, composed to the target), trains the DP teacher, keeps it in the run directory only,
/// and publishes its parameters with the run's hyper-parameters; `--no-teacher` plans none.
#[test]
fn distill_with_a_teacher_charges_its_share_and_keeps_it_in_the_run() {
    let t = ws_with_demo(30);
    let mut args = vec![
        "distill",
        "--dataset",
        "phantoms",
        "--epsilon",
        "2",
        "--teacher",
        "--json",
    ];
    args.extend_from_slice(FAST);
    let r = t.run(&args);
    r.expect(0);
    let j = r.json();
    assert!(j["epsilon"].as_f64().unwrap() <= 2.0 + 1e-9);
    let run = j["run"].as_str().unwrap().to_string();
    let dir = t.ws.join("runs").join(&run);
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    let names: Vec<&str> = rec["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // (The default policy also plans a utility share, charged at eval.)
    assert_eq!(names[..2], ["main", "teacher"], "{}", rec["shares"]);
    let teacher_events = &rec["shares"][1]["events"];
    for e in teacher_events.as_array().unwrap() {
        assert!(
            rec["events"].as_array().unwrap().contains(e),
            "the teacher's events are charged with the run: {}",
            rec["events"]
        );
    }
    let steps = rec["hyperparameters"]["teacher"]["steps"].as_u64().unwrap();
    assert_eq!(teacher_events[0]["steps"].as_u64(), Some(steps));
    // The teacher stays in the run directory; it reads the run's image shape.
    let teacher =
        retort::distill::teacher::Teacher::read(&dir.join(retort::distill::teacher::FILE)).unwrap();
    assert_eq!(teacher.classes, 4);
    assert_eq!(teacher.events.len(), 1);
    // Without a teacher: one share, no teacher file.
    let mut args = vec![
        "plan",
        "--dataset",
        "phantoms",
        "--epsilon",
        "2",
        "--no-teacher",
        "--no-benchmark",
        "--json",
    ];
    args.extend_from_slice(FAST);
    let p = t.run(&args);
    p.expect(0);
    assert!(p.json()["shares"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["name"] != "teacher"));
    assert!(p.json()["teacher"].is_null());
    let both = t.run(&[
        "plan",
        "--dataset",
        "phantoms",
        "--epsilon",
        "2",
        "--teacher",
        "--no-teacher",
    ]);
    both.expect(2);
}

#[test]
fn fail_distill_over_the_cap_is_refused_and_changes_nothing() {
    let t = ws_with_demo(20);
    let ledger0 = snapshot(&t.ws.join("ledger"));
    let runs0 = snapshot(&t.ws.join("runs"));
    let mut args = vec!["distill", "--dataset", "phantoms", "--epsilon", "500"];
    args.extend_from_slice(FAST);
    let r = t.run(&args);
    r.expect(3);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert_eq!(
        snapshot(&t.ws.join("ledger")),
        ledger0,
        "refusal touched the ledger"
    );
    assert_eq!(snapshot(&t.ws.join("runs")), runs0, "refusal wrote a run");
    let recs = t.audit_records();
    assert!(recs
        .iter()
        .any(|r| r["action"] == "distill" && r["outcome"] == "refused"));
    assert!(!recs.iter().any(|r| r["action"] == "distill.run"));
}

#[test]
fn fail_bad_parameters_are_usage_errors() {
    let t = ws_with_demo(5);
    t.run(&["plan", "--dataset", "phantoms", "--epsilon", "-1"])
        .expect(2);
    t.run(&[
        "plan",
        "--dataset",
        "phantoms",
        "--epsilon",
        "1",
        "--method",
        "xx",
    ])
    .expect(2);
    t.run(&["plan", "--dataset", "nope", "--epsilon", "1"])
        .expect(1);
}

#[cfg(unix)]
#[test]
fn cancelled_run_is_marked_and_stays_charged() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let t = ws_with_demo(40);
    let ledger0 = snapshot(&t.ws.join("ledger"));
    let mut child = Command::new(crate::util::bin())
        .arg("--workspace")
        .arg(&t.ws)
        .args([
            "distill",
            "--dataset",
            "phantoms",
            "--epsilon",
            "1",
            "--ipc",
            "2",
            "--iterations",
            "100000",
            "--seed",
            "1",
        ])
        .env_remove("RETORT_WORKSPACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the run is reserved and running (its run.json exists), then send SIGINT.
    let runs = t.ws.join("runs");
    let t0 = std::time::Instant::now();
    loop {
        let started = runs.exists()
            && std::fs::read_dir(&runs)
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| e.path().join("run.json").exists());
        if started {
            break;
        }
        assert!(t0.elapsed().as_secs() < 120, "run never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    let dirs: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(dirs.len(), 1);
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs[0].path().join("run.json")).unwrap()).unwrap();
    assert_eq!(rec["status"], "cancelled");
    assert!(!dirs[0].path().join("synthetic.parquet").exists());
    assert_ne!(
        snapshot(&t.ws.join("ledger")),
        ledger0,
        "a cancelled run must stay charged"
    );
}

/// Fashion-MNIST from the shared data folder (IDX, gzip): (train, test).
fn fashion() -> Option<(retort::dataset::Images, retort::dataset::Images)> {
    use std::io::Read;
    let dir = crate::util::shared_data()
        .or_else(|| Some(std::path::PathBuf::from("/work/shared/data")).filter(|p| p.is_dir()))?
        .join("fashion-mnist");
    let read = |f: &str| -> Vec<u8> {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join(f)).unwrap())
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    let shape = retort::dataset::Shape { c: 1, h: 28, w: 28 };
    let load = |img: &str, lab: &str| {
        let (px, lb) = (read(img), read(lab));
        let mut im = retort::dataset::Images::new(shape);
        for (i, &l) in lb[8..].iter().enumerate() {
            im.push(&px[16 + i * 784..16 + (i + 1) * 784], l as u32);
        }
        im
    };
    Some((
        load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ))
}

/// Timing of dm's two phases on real Fashion-MNIST images (not a test of correctness; run with
/// `cargo test --test it distill::measure_dm_timing -- --ignored --nocapture`).
#[cfg(feature = "measure")]
#[test]
#[ignore]
fn measure_dm_timing() {
    use retort::distill::dm;
    let Some((train, _)) = fashion() else {
        eprintln!("SKIPPED: fashion-mnist absent");
        return;
    };
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let idx: Vec<usize> = (0..n).collect();
    let sub = train.select(&idx);
    let mut p = dm::DmParams::defaults(60_000, 10);
    p.nets = 2;
    p.iterations = 5;
    let nets = dm::nets(&p, sub.shape, 10, 1).unwrap();
    let t = std::time::Instant::now();
    let (rel, _) = retort::distill::measure::dm_release_unaccounted(
        &sub,
        10,
        &p,
        &nets,
        3.7,
        &retort::progress::silent,
    )
    .unwrap();
    let emb = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    dm::synthesise(
        &rel,
        sub.shape,
        10,
        10,
        &p,
        &nets,
        &[],
        1,
        &retort::progress::silent,
    )
    .unwrap();
    let syn = t.elapsed().as_secs_f64();
    eprintln!(
        "embedding: {:.3} ms per image per net ({n} images, {} nets, {emb:.1} s); synthesis: {:.3} s per iteration ({} nets/iter)",
        emb * 1000.0 / (n * p.nets) as f64,
        p.nets,
        syn / p.iterations as f64,
        p.nets_per_iteration.min(p.nets)
    );
}

/// Utility measurement on Fashion-MNIST (not a pass/fail test; run with
/// `PER_CLASS=500 EPS=1 cargo test --release --test it distill::measure_dm_fashion -- --ignored --nocapture`).
/// Draws PER_CLASS training images per class at random (seeded, public choice of subset), runs
/// the default `dm` plan at EPS (delta 1e-5), trains MODELS fresh ConvNets (width 128, EPOCHS
/// epochs of the standard recipe) on the 10 images per class, tests on the full test split;
/// prints the same for 10 random real images per class (non-private reference).
#[cfg(feature = "measure")]
#[test]
#[ignore]
fn measure_dm_fashion() {
    use rand::{seq::SliceRandom, SeedableRng};
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let per_class = env("PER_CLASS", 500.0) as usize;
    let eps = env("EPS", 1.0);
    let models = env("MODELS", 2.0) as usize;
    let epochs = env("EPOCHS", 300.0) as usize;
    let width = env("WIDTH", 128.0) as usize;
    // DATA=demo: the demo's phantoms (PER_CLASS training, 100 held-out images per class, four
    // classes) instead of Fashion-MNIST.
    let demo = std::env::var("DATA").as_deref() == Ok("demo");
    let (train, test) = if demo {
        let d = retort::demo::generate(per_class, 100);
        (d.train, d.test)
    } else {
        let Some(t) = fashion() else {
            eprintln!("SKIPPED: fashion-mnist absent");
            return;
        };
        t
    };
    let k = if demo { 4 } else { 10 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut idx: Vec<usize> = Vec::new();
    // RARE=c:m gives class c only m training images (an imbalanced cohort).
    let rare: Option<(u32, usize)> = std::env::var("RARE").ok().map(|s| {
        let (c, m) = s.split_once(':').expect("RARE=class:count");
        (c.parse().unwrap(), m.parse().unwrap())
    });
    for c in 0..k as u32 {
        let mut of: Vec<usize> = (0..train.len()).filter(|&i| train.labels[i] == c).collect();
        of.shuffle(&mut rng);
        let want = match rare {
            Some((r, m)) if r == c => m,
            _ => per_class,
        };
        idx.extend(of.into_iter().take(want));
    }
    idx.shuffle(&mut rng);
    let sub = train.select(&idx);
    let classes: Vec<String> = (0..k).map(|c| c.to_string()).collect();
    // SAVE_REAL_PQ=path: ten random real images per class of the same subset, in the partner
    // format, for the independent evaluator's random-real reference.
    if let Ok(path) = std::env::var("SAVE_REAL_PQ") {
        let real = retort::eval::random_per_class(&sub, &vec![10; k], 7);
        retort::dataset::write_synthetic_parquet(std::path::Path::new(&path), &real, &classes)
            .unwrap();
    }
    let meta = retort::dataset::Meta {
        version: 1,
        name: "fmnist".into(),
        shape: sub.shape,
        classes,
        train_count: sub.len(),
        test_count: test.len(),
        per_class_train: sub.per_class(k),
        per_class_test: test.per_class(k),
        source_format: "idx".into(),
        split: retort::dataset::SplitInfo::Official,
        notes: vec![],
        created: String::new(),
        fingerprint: String::new(),
        fingerprint_v1: None,
        files: Default::default(),
        audit_only: false,
    };
    let iterations = std::env::var("ITERS").ok().and_then(|s| s.parse().ok());
    let plan = retort::distill::plan(
        &meta,
        &retort::distill::Request {
            epsilon: retort::dp::Epsilon::new(eps).unwrap(),
            delta: retort::dp::Delta::new(1e-5).unwrap(),
            utility_share: 0.0,
            teacher: None,
            ipc: 10,
            method: match std::env::var("METHOD").as_deref() {
                Ok("gm") => Some(retort::distill::Method::Gm),
                _ => None,
            },
            iterations,
            seed: Some(1),
        },
    )
    .unwrap();
    let mut plan = plan;
    // DM='{"nets":20,...}' overrides dm parameters (a JSON object merged into the plan's).
    if let (Ok(patch), retort::distill::plan::Params::Dm(p)) =
        (std::env::var("DM"), &mut plan.params)
    {
        let mut v = serde_json::to_value(&*p).unwrap();
        let patch: serde_json::Value = serde_json::from_str(&patch).expect("DM must be JSON");
        for (k, x) in patch.as_object().expect("DM must be an object") {
            assert!(v.get(k).is_some(), "unknown dm parameter {k}");
            v[k] = x.clone();
        }
        *p = serde_json::from_value(v).unwrap();
        plan.recalibrate().unwrap();
    }
    // TEACHER=off drops the DP teacher; TEACHER='{"fraction":0.3,...}' patches its defaults.
    match std::env::var("TEACHER").as_deref() {
        Ok("off") => plan.set_teacher(None).unwrap(),
        Ok(patch) => {
            let base = plan.teacher.as_ref().map_or_else(
                || retort::distill::teacher::TeacherParams::defaults(sub.len()),
                |t| t.params.clone(),
            );
            let mut v = serde_json::to_value(&base).unwrap();
            let patch: serde_json::Value = serde_json::from_str(patch).expect("TEACHER: JSON");
            for (k, x) in patch.as_object().expect("TEACHER must be an object") {
                assert!(v.get(k).is_some(), "unknown teacher parameter {k}");
                v[k] = x.clone();
            }
            plan.set_teacher(Some(serde_json::from_value(v).unwrap()))
                .unwrap();
        }
        Err(_) => {}
    }
    eprintln!("params: {}", serde_json::to_string(&plan.params).unwrap());
    eprintln!(
        "teacher: {}; shares: {}",
        serde_json::to_string(&plan.teacher).unwrap(),
        plan.shares
            .iter()
            .map(|s| format!("{} eps {:.3}", s.name, s.epsilon))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The utility forecast (average class, then the smallest class as with
    // `public_class_counts`), printed beside the measured accuracy.
    for public in [false, true] {
        let f = retort::distill::forecast::forecast(&plan, &meta, public).unwrap();
        eprintln!(
            "forecast (class counts public: {public}): {} at SNR {:.2} for a class of {}",
            serde_json::to_string(&f.verdict).unwrap(),
            f.snr,
            f.class_size
        );
    }
    let testf = test.to_float();
    if std::env::var("TEACHER_ONLY").is_ok() {
        let tp = plan.teacher.as_ref().expect("TEACHER_ONLY needs a teacher");
        let t = std::time::Instant::now();
        let teacher = retort::distill::measure::teacher_unaccounted(
            &sub,
            &tp.params,
            k,
            tp.noise_multiplier,
            &retort::progress::silent,
        )
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "teacher {per_class}/class eps {eps} (alone {:.3}, sigma {:.3}, q {:.4}, steps {}): held-out accuracy {:.4} in {secs:.0} s",
            plan.shares.iter().find(|s| s.name == "teacher").unwrap().epsilon,
            tp.noise_multiplier,
            tp.sampling_rate,
            tp.steps,
            teacher.accuracy(&testf).unwrap().0
        );
        return;
    }
    if std::env::var("PROBE_WARMUP").is_ok() {
        probe_warmup(&plan, &sub, &test);
        return;
    }
    let t = std::time::Instant::now();
    let out =
        retort::distill::measure::run_unaccounted(&plan, &sub, &retort::progress::silent).unwrap();
    let secs = t.elapsed().as_secs_f64();
    if let Ok(path) = std::env::var("SAVE") {
        save_set(&out.synthetic, std::path::Path::new(&path));
    }
    if let Some(t) = &out.teacher {
        eprintln!(
            "teacher held-out accuracy {:.4}",
            t.accuracy(&testf).unwrap().0
        );
    }
    if let Ok(path) = std::env::var("SAVE_PQ") {
        retort::dataset::write_synthetic_parquet(
            std::path::Path::new(&path),
            &out.synthetic,
            &plan.classes,
        )
        .unwrap();
    }
    if std::env::var("NO_EVAL").is_ok() {
        eprintln!(
            "{} fashion {per_class}/class eps {eps}: distill {secs:.0} s (private {:.0} s, synthesis {:.0} s), not evaluated",
            plan.method, out.private_seconds, out.synthesis_seconds
        );
        return;
    }
    let recipe = retort::eval::Recipe::standard(retort::eval::Model::ConvNet { width }, epochs);
    let s = retort::eval::score(
        &recipe,
        &out.synthetic,
        &testf,
        k,
        models,
        0,
        &retort::progress::silent,
    )
    .unwrap();
    let b = if std::env::var("SKIP_REAL").is_ok() {
        None
    } else {
        let real = retort::eval::random_per_class(&sub, &vec![10; k], 7);
        Some(
            retort::eval::score(
                &recipe,
                &real,
                &testf,
                k,
                models,
                0,
                &retort::progress::silent,
            )
            .unwrap(),
        )
    };
    eprintln!(
        "{} fashion {per_class}/class eps {eps} (q {:?}, steps {}): sigma {:.3}, distill {secs:.0} s (private {:.0} s), \
         accuracy {:.4} (per model {:?}); random real 10/class {:?} (per model {:?}); {} epochs x {models} models; diag {}",
        plan.method,
        plan.sampling_rate,
        plan.steps,
        plan.noise_multiplier,
        out.private_seconds,
        s.accuracy,
        s.accuracies,
        b.as_ref().map(|b| b.accuracy),
        b.as_ref().map(|b| &b.accuracies),
        epochs,
        out.diagnostics
    );
}

#[test]
fn plan_gm_shows_poisson_sampling_and_steps() {
    let t = ws_with_demo(20);
    let r = t.run(&[
        "plan",
        "--dataset",
        "phantoms",
        "--epsilon",
        "2",
        "--method",
        "gm",
        "--iterations",
        "3",
        "--no-benchmark",
        "--json",
    ]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["method"], "gm");
    assert_eq!(j["steps"], 30);
    let q = j["sampling_rate"].as_f64().unwrap();
    assert!(q > 0.0 && q <= 1.0);
    assert_eq!(j["events"][0]["kind"], "poisson-sampled-gaussian");
    assert!(j["epsilon"].as_f64().unwrap() <= 2.0 + 1e-9);
    assert!(j["estimated_seconds"].is_null());
}

/// Raw dump of a synthetic set for [`measure_eval_saved`]: JSON `{"shape","labels","data"}`.
#[cfg(feature = "measure")]
fn save_set(set: &retort::dataset::FloatImages, path: &std::path::Path) {
    let v = serde_json::json!({"shape": set.shape, "labels": set.labels, "data": set.data});
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// Measurement, not a test: re-evaluate a set saved by `SAVE=path measure_dm_fashion`
/// (`SET=path MODELS=3 EPOCHS=1000 cargo test --test it distill::measure_eval_saved -- --ignored
/// --nocapture`).
#[test]
#[ignore]
fn measure_eval_saved() {
    let Some((_, test)) = fashion() else {
        eprintln!("SKIPPED: fashion-mnist absent");
        return;
    };
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::env::var("SET").unwrap()).unwrap()).unwrap();
    let set = retort::dataset::FloatImages {
        shape: serde_json::from_value(v["shape"].clone()).unwrap(),
        labels: serde_json::from_value(v["labels"].clone()).unwrap(),
        data: serde_json::from_value(v["data"].clone()).unwrap(),
        soft_labels: None,
    };
    let mut recipe = retort::eval::Recipe::standard(
        retort::eval::Model::ConvNet {
            width: env("WIDTH", 128),
        },
        env("EPOCHS", 300),
    );
    recipe.batch = env("BATCH", 256);
    let s = retort::eval::score(
        &recipe,
        &set,
        &test.to_float(),
        10,
        env("MODELS", 2),
        0,
        &retort::progress::silent,
    )
    .unwrap();
    eprintln!(
        "saved set: accuracy {:.4} ± {:.4} (per model {:?}), {} epochs, {:.0} s",
        s.accuracy, s.accuracy_std, s.accuracies, recipe.epochs, s.train_seconds
    );
}

#[cfg(feature = "measure")]
/// PROBE_WARMUP=1 with a `warmup` in DM: run only the DP-SGD warm-up of the plan and print each
/// snapshot's test accuracy (how discriminative the trained feature nets are) and the time.
fn probe_warmup(
    plan: &retort::distill::Plan,
    sub: &retort::dataset::Images,
    test: &retort::dataset::Images,
) {
    use retort::distill::dm;
    let retort::distill::plan::Params::Dm(p) = &plan.params else {
        panic!("PROBE_WARMUP needs a dm plan");
    };
    let q = p.sample_rate.expect("per-net releases");
    let mut nets = dm::nets(p, plan.shape, 10, plan.seed).unwrap();
    let t = std::time::Instant::now();
    let trained = retort::distill::measure::dm_warm_up_unaccounted(
        sub,
        p,
        &mut nets,
        q,
        plan.noise_multiplier,
        &retort::progress::silent,
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let mut testf = test.to_float();
    testf.data.iter_mut().for_each(|v| *v -= 0.5);
    let accs: Vec<String> = nets
        .iter()
        .zip(&trained)
        .filter(|(_, &t)| t)
        .map(|(n, _)| format!("{:.3}", retort::eval::accuracy(n, &testf, 10).unwrap().0))
        .collect();
    eprintln!(
        "warmup sigma {:.3} q {q:.4} steps {}: {secs:.0} s; snapshot test accuracies {}",
        plan.noise_multiplier,
        plan.steps,
        accs.join(" ")
    );
}

/// Distances between the unit-normalised embeddings (final map + block means) of 200 random
/// Fashion-MNIST training images under a few default random feature nets: the scale the
/// random Fourier features' bandwidth (`rff_bandwidth`) is compared with. Prints quantiles
/// within and across classes.
#[cfg(feature = "measure")]
#[test]
#[ignore]
fn measure_embedding_distances() {
    let Some((train, _)) = fashion() else {
        eprintln!("SKIPPED: fashion-mnist absent");
        return;
    };
    let p = retort::distill::dm::DmParams::defaults(60_000, 10);
    let nets = retort::distill::dm::nets(&p, train.shape, 10, 1).unwrap();
    let idx: Vec<usize> = (0..200).map(|i| i * 293 % train.len()).collect();
    let mut x = Vec::new();
    for &i in &idx {
        x.extend(train.image(i).iter().map(|&v| v as f32 / 255.0 - 0.5));
    }
    for net in nets.iter().take(3) {
        let e = net.embed_with_means(&x).unwrap();
        let f = e.len() / idx.len();
        let rows: Vec<Vec<f32>> = e
            .chunks(f)
            .map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                r.iter().map(|v| v / n).collect()
            })
            .collect();
        let (mut same, mut diff) = (Vec::new(), Vec::new());
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                let d: f32 = rows[i]
                    .iter()
                    .zip(&rows[j])
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                if train.labels[idx[i]] == train.labels[idx[j]] {
                    same.push(d);
                } else {
                    diff.push(d);
                }
            }
        }
        let q = |v: &mut Vec<f32>| {
            v.sort_by(f32::total_cmp);
            [0.1, 0.5, 0.9].map(|t| v[(t * (v.len() - 1) as f64) as usize])
        };
        eprintln!(
            "embedding distance quantiles (10/50/90%): same class {:?}, different {:?}",
            q(&mut same),
            q(&mut diff)
        );
    }
}

/// A policy file: the default template with `extra` lines after `[distill]`'s keys and, when
/// `public_counts`, a `[privacy]` table making per-class counts public.
fn policy_with(t: &TestWs, extra: &str, public_counts: bool) -> String {
    let mut text = retort::policy::template("default").unwrap().replacen(
        "max_images_per_class = 50\n",
        &format!("max_images_per_class = 50\n{extra}\n"),
        1,
    );
    if public_counts {
        text.push_str("\n[privacy]\npublic_class_counts = true\n");
    }
    let path = t.ws.parent().unwrap().join("forecast-policy.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// See: issue 21. `plan` states the utility forecast in words (with a warning when poor) and
/// as a `forecast` object in --json, before anything is spent.
#[test]
fn plan_shows_the_utility_forecast() {
    let t = ws_with_demo(20);
    let args = [
        "plan",
        "--dataset",
        "phantoms",
        "--epsilon",
        "1",
        "--no-benchmark",
    ];
    let h = t.run(&args);
    h.expect(0).stdout_has(&[
        "utility forecast: poor — each class's released statistics carry a signal-to-noise of",
        "about 20 images per class at epsilon 1",
        "What would help: a larger epsilon (about epsilon = ",
        "warning: the utility forecast is poor",
    ]);
    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(&args);
    let j = t.run(&json_args).expect(0).json();
    let f = &j["forecast"];
    assert_eq!(f["verdict"], "poor", "{f}");
    assert_eq!(f["class_size"], 20.0);
    assert_eq!(f["smallest_class"], false);
    assert!(f["snr"].as_f64().unwrap() > 0.0);
    let advice: Vec<&str> = f["advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(advice[0].starts_with("a larger epsilon"), "{advice:?}");
    assert!(advice.contains(&"more images per class"), "{advice:?}");
    assert_eq!(j["spent"], 0);
    // A larger epsilon at the advised value is no longer poor.
    let e = f["epsilon_for_next"].as_f64().unwrap();
    let e = format!("{e}");
    let j2 = t
        .run(&[
            "--json",
            "plan",
            "--dataset",
            "phantoms",
            "--epsilon",
            &e,
            "--no-benchmark",
        ])
        .expect(0)
        .json();
    assert_ne!(j2["forecast"]["verdict"], "poor", "{}", j2["forecast"]);
    let recs = t.audit_records();
    assert!(recs
        .iter()
        .any(|r| r["action"] == "plan" && r["details"]["forecast"] == "poor"));
}

/// See: issue 21. A policy floor refuses `distill` below it with exit 3 and the stable code,
/// before anything is charged, and the refusal is audited; `plan` shows the same decision.
#[test]
fn fail_distill_below_the_policy_forecast_floor_is_refused() {
    let t = ws_with_demo(20);
    let policy = policy_with(&t, "min_forecast = \"fair\"", false);
    let ledger0 = snapshot(&t.ws.join("ledger"));
    let runs0 = snapshot(&t.ws.join("runs"));
    let mut args = vec![
        "--policy",
        &policy,
        "distill",
        "--dataset",
        "phantoms",
        "--epsilon",
        "1",
    ];
    args.extend_from_slice(FAST);
    let r = t.run(&args);
    r.expect(3).stderr_has(&[
        "utility forecast of this run on dataset \"phantoms\" is poor",
        "below policy \"default\"'s floor of fair",
        "hint: raise the forecast with a larger epsilon (about epsilon = ",
    ]);
    assert_eq!(
        snapshot(&t.ws.join("ledger")),
        ledger0,
        "refusal touched the ledger"
    );
    assert_eq!(snapshot(&t.ws.join("runs")), runs0, "refusal wrote a run");
    let recs = t.audit_records();
    let refused = recs
        .iter()
        .find(|r| r["action"] == "distill" && r["outcome"] == "refused")
        .expect("the refusal is audited");
    assert_eq!(refused["reason"], "policy-forecast-below-floor");
    assert!(!recs.iter().any(|r| r["action"] == "distill.run"));
    // plan shows the decision.
    let plan_under = |policy: &str| {
        t.run(&[
            "--json",
            "--policy",
            policy,
            "plan",
            "--dataset",
            "phantoms",
            "--epsilon",
            "1",
            "--no-benchmark",
        ])
        .expect(0)
        .json()
    };
    let j = plan_under(&policy);
    assert_eq!(j["decision"]["allowed"], false);
    assert_eq!(j["decision"]["code"], "policy-forecast-below-floor");
    // A floor of "poor" refuses nothing; an unknown verdict is an error at policy load.
    let poor = policy_with(&t, "min_forecast = \"poor\"", false);
    assert_eq!(plan_under(&poor)["decision"]["allowed"], true);
    let bad = policy_with(&t, "min_forecast = \"great\"", false);
    t.run(&["policy", "check", &bad]).expect(1).stderr_has(&[
        "invalid value for `distill.min_forecast`",
        "hint: set `min_forecast` to \"poor\", \"fair\" or \"good\"",
    ]);
}

/// See: issue 21 (imbalance). With `privacy.public_class_counts` the forecast speaks of the
/// smallest class; without it, of the average (per-class counts are not public by default).
#[test]
fn public_class_counts_make_the_forecast_speak_of_the_smallest_class() {
    let t = TestWs::init();
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    let mut ds = retort::demo::generate(40, 5);
    // Keep 8 of the 40 training images of class 3 ("twin"): a fifth of the others.
    let mut train = retort::dataset::Images::new(ds.train.shape);
    let mut kept = 0;
    for i in 0..ds.train.len() {
        let label = ds.train.labels[i];
        if label == 3 {
            if kept == 8 {
                continue;
            }
            kept += 1;
        }
        train.push(ds.train.image(i), label);
    }
    ds.train = train;
    retort::dataset::store(&ws, "uneven", &ds).unwrap();
    let plan = |extra: &[&str]| {
        let mut a: Vec<&str> = vec!["--json"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[
            "plan",
            "--dataset",
            "uneven",
            "--epsilon",
            "1",
            "--no-benchmark",
        ]);
        t.run(&a).expect(0).json()
    };
    let avg = plan(&[]);
    assert_eq!(avg["forecast"]["smallest_class"], false);
    assert_eq!(avg["forecast"]["class_size"], 32.0);
    let policy = policy_with(&t, "", true);
    let small = plan(&["--policy", &policy]);
    let f = &small["forecast"];
    assert_eq!(f["smallest_class"], true, "{f}");
    assert_eq!(f["class"], "twin");
    assert_eq!(f["class_size"], 8.0);
    assert!(f["snr"].as_f64().unwrap() < avg["forecast"]["snr"].as_f64().unwrap());
    assert!(
        small["public_metadata"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("per-class training counts")),
        "{}",
        small["public_metadata"]
    );
    let h = t.run(&[
        "--policy",
        &policy,
        "plan",
        "--dataset",
        "uneven",
        "--epsilon",
        "1",
        "--no-benchmark",
    ]);
    h.expect(0)
        .stdout_has(&["(the smallest class, \"twin\", 8 images at epsilon 1)"]);
}
