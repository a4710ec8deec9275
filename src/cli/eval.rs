//! `retort eval RUN`: train fresh models on a run's synthetic set, test them on the dataset's
//! held-out split, compare with baselines, write `runs/<id>/eval.json` and print a table.

use std::path::Path;

use super::{Ctx, Report};
use crate::dataset::{self, read_synthetic_parquet, FloatImages, Split};
use crate::eval::{self, Model, Recipe, Score};
use crate::progress::Event;
use crate::workspace::{atomic_write, validate_name};
use crate::Result;

/// Arguments of `retort eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run id (a directory under the workspace's runs/).
    pub run: String,
    /// Network to train: the distillation ConvNet-3 or an MLP with one hidden layer.
    #[arg(long, default_value = "convnet", value_parser = ["convnet", "mlp"])]
    pub model: String,
    /// ConvNet channels per layer, or MLP hidden units.
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    /// Fresh models per training set (mean ± std over them).
    #[arg(long, default_value_t = 3)]
    pub models: usize,
    /// Epochs on the synthetic set (and on the random-real baseline). The literature uses
    /// 1000 for MNIST-like sets; 300 keeps a 2-core host within minutes.
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// First model's initialisation seed (public; model m uses seed + m).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the non-private baselines (they read the private training split).
    #[arg(long)]
    pub no_baselines: bool,
    /// SGD steps (batch 256) of the all-real-data ceiling, one model: a cap so it stays
    /// affordable on 2 cores.
    #[arg(long, default_value_t = 200)]
    pub ceiling_steps: usize,
    /// Also train a DP-SGD classifier directly on the real training split at the run's
    /// (epsilon, delta). It reads private data, so it SPENDS BUDGET: its privacy event is
    /// reserved in the dataset's ledger (checked against the policy's cap) before anything is
    /// read, like a distillation run.
    #[arg(long)]
    pub dp_baseline: bool,
    /// DP-SGD steps of that baseline (expected batch 256, clip 1).
    #[arg(long, default_value_t = 200)]
    pub dp_steps: u64,
}

/// Run `retort eval`.
///
/// # Errors
/// `eval-run` (missing or unfinished run), `eval-mismatch`, dataset and engine errors,
/// `cancelled`.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    if validate_name(&args.run).is_err() {
        return Err(run_err(&args.run, "not a valid run id"));
    }
    if !(1..=4096).contains(&args.width) || !(1..=100).contains(&args.models) {
        return Err(super::usage(
            "--width must be 1..4096 and --models 1..100",
            "e.g. --width 128 --models 3",
        ));
    }
    if !(1..=100_000).contains(&args.epochs)
        || args.ceiling_steps > 1_000_000
        || !(1..=1_000_000).contains(&args.dp_steps)
    {
        return Err(super::usage(
            "--epochs must be 1..100000, --ceiling-steps at most 1000000, --dp-steps 1..1000000",
            "e.g. --epochs 300 --ceiling-steps 200 --dp-steps 200",
        ));
    }
    let ws = ctx.open_audited("eval", &args.run)?;
    let dir = ws.runs_dir().join(&args.run);
    let rec = read_run(&dir, &args.run)?;
    let ds_name = rec
        .get("dataset")
        .and_then(|v| v.as_str())
        .ok_or_else(|| run_err(&args.run, "run.json names no dataset"))?
        .to_string();
    let stored = dataset::open(&ws, &ds_name)?;
    let classes = stored.num_classes();
    let parquet = dir.join("synthetic.parquet");
    let (syn, _names) = read_synthetic_parquet(&parquet)?;
    check_match(&args.run, &ds_name, &syn, stored.meta.shape, classes)?;
    ctx.detail("dataset", ds_name.clone());
    let test = stored.load(Split::Test)?.to_float();
    let model = match args.model.as_str() {
        "mlp" => Model::Mlp { hidden: args.width },
        _ => Model::ConvNet { width: args.width },
    };
    let recipe = Recipe::standard(model, args.epochs);
    let bar = if ctx.show_progress() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let what = std::sync::Mutex::new(String::new());
    let sink = |e: Event<'_>| match e {
        Event::Start { label, total } => {
            bar.set_length(total);
            bar.set_position(0);
            let w = what.lock().map(|w| w.clone()).unwrap_or_default();
            bar.set_message(format!("{w} {label}"));
        }
        Event::Advance(n) => bar.inc(n),
        _ => {}
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:40} {bar:30} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let set_what = |s: &str| {
        if let Ok(mut w) = what.lock() {
            *w = s.to_string();
        }
    };
    ctx.say(format!(
        "evaluating run {} ({} synthetic images) on {} held-out test images of {ds_name}",
        args.run,
        syn.len(),
        test.len()
    ));
    set_what("synthetic:");
    let synthetic = eval::score(&recipe, &syn, &test, classes, args.models, args.seed, &sink)?;
    let mut baselines = serde_json::Map::new();
    let mut full_score: Option<(Score, usize)> = None;
    if !args.no_baselines {
        ctx.intent(
            &ws,
            "eval.read-train",
            &args.run,
            serde_json::json!({"dataset": ds_name, "purpose": "non-private reference baselines (random real, all real); internal only, never released"}),
        )?;
        let train = stored.load(Split::Train)?;
        let per_class = syn.per_class(classes);
        let rand_set = eval::random_per_class(&train, &per_class, args.seed ^ 0x5eed);
        set_what("random real:");
        let rnd = eval::score(
            &recipe,
            &rand_set,
            &test,
            classes,
            args.models,
            args.seed,
            &sink,
        )?;
        baselines.insert(
            "random_real".into(),
            baseline_json(&rnd, "same number of real training images per class, drawn at random: a NON-PRIVATE reference (real pixels); internal only"),
        );
        let full = train.to_float();
        let mut ceiling = Recipe::standard(model, usize::MAX / 2);
        ceiling.max_steps = Some(args.ceiling_steps.max(1));
        set_what("all real:");
        let fs = eval::score(&ceiling, &full, &test, classes, 1, args.seed, &sink)?;
        let epochs = fs.steps as f64 * ceiling.batch as f64 / full.len().max(1) as f64;
        let mut j = baseline_json(
            &fs,
            "all real training images: the NON-PRIVATE ceiling; internal only",
        );
        j["capped"] = serde_json::json!({
            "steps": fs.steps, "batch": ceiling.batch, "epochs": epochs, "models": 1,
            "why": "training on all data is capped so it stays affordable on a 2-core host; the ceiling is therefore an underestimate"
        });
        baselines.insert("all_real".into(), j);
        full_score = Some((fs, full.len()));
    }
    if args.dp_baseline {
        set_what("DP-SGD:");
        let j = dp_sgd_baseline(&args, ctx, &ws, &rec, &stored, model, &test, &sink)?;
        baselines.insert("dp_sgd".into(), j);
    }
    bar.finish_and_clear();
    let class_names = &stored.meta.classes;
    let syn_bytes = std::fs::metadata(&parquet).map(|m| m.len()).unwrap_or(0);
    let full_n = stored.meta.train_count;
    let full_bytes = (full_n * stored.meta.shape.len()) as u64;
    let compression = compression_json(
        &synthetic,
        syn.len(),
        syn_bytes,
        full_n,
        full_bytes,
        full_score.as_ref(),
    );
    let per_class: Vec<serde_json::Value> = synthetic
        .per_class
        .iter()
        .enumerate()
        .map(|(k, a)| serde_json::json!({"label": k, "class": class_names.get(k), "accuracy": a}))
        .collect();
    let out = serde_json::json!({
        "version": 1,
        "run": args.run,
        "dataset": ds_name,
        "accuracy": synthetic.accuracy,
        "accuracy_std": synthetic.accuracy_std,
        "accuracies": synthetic.accuracies,
        "per_class": per_class,
        "models": args.models,
        "test_images": test.len(),
        "measured_on": "the dataset's held-out test split (evaluation only)",
        "protocol": {
            "recipe": recipe, "models": args.models, "seed": args.seed,
            "network": eval_describe(model, stored.meta.shape, classes),
        },
        "synthetic": synthetic,
        "baselines": baselines,
        "compression": compression,
        "evaluated": crate::workspace::now_rfc3339(),
        "retort_version": crate::VERSION,
    });
    {
        let _lock = ws.lock(crate::workspace::DEFAULT_LOCK_WAIT)?;
        let bytes = serde_json::to_vec_pretty(&out).expect("invariant: JSON serializes");
        atomic_write(&dir.join("eval.json"), &bytes)?;
    }
    ctx.detail("accuracy", synthetic.accuracy);
    ctx.detail("models", args.models);
    ctx.detail("baselines", !args.no_baselines);
    Ok(Report::new(human(&out, class_names), out))
}

/// The DP-SGD baseline: plan, reserve its event in the ledger under the policy's dataset cap
/// (fail closed, before reading), log intent, train one model, commit (or cancel: it stays
/// charged).
#[allow(clippy::too_many_arguments)]
fn dp_sgd_baseline(
    args: &Args,
    ctx: &mut Ctx,
    ws: &crate::workspace::Workspace,
    rec: &serde_json::Value,
    stored: &dataset::Stored,
    model: Model,
    test: &FloatImages,
    sink: crate::progress::Sink<'_>,
) -> Result<serde_json::Value> {
    let eps = rec.get("epsilon").and_then(|v| v.as_f64());
    let delta = rec.get("delta").and_then(|v| v.as_f64());
    let (Some(eps), Some(delta)) = (eps, delta) else {
        return Err(run_err(
            &args.run,
            "run.json has no epsilon/delta for the DP-SGD baseline",
        ));
    };
    let ds = stored.meta.name.clone();
    let plan =
        eval::plan_dp_baseline(eps, delta, stored.meta.train_count, 256, args.dp_steps, 1.0)?;
    let loaded = crate::policy::load_active(ws, ctx.policy.as_deref())?;
    let cap = loaded.policy.dataset_epsilon_cap(&ds);
    let id = crate::workspace::new_id("evaldp");
    let reservation = crate::ledger::Ledger::open(ws, &ds)?.reserve(
        &id,
        std::slice::from_ref(&plan.event),
        delta,
        Some(cap),
    )?;
    ctx.intent(
        ws,
        "eval.dp-baseline",
        &id,
        serde_json::json!({"run": args.run, "dataset": ds, "epsilon": plan.epsilon, "delta": delta,
            "events": [plan.event], "policy": {"name": loaded.name, "sha256": loaded.sha256}}),
    )?;
    ctx.detail("dp_baseline_ledger_run", id.clone());
    let result = stored
        .load(Split::Train)
        .map_err(crate::Error::from)
        .and_then(|train| {
            let mut allowance =
                crate::dp::mechanism::Allowance::new(std::slice::from_ref(&plan.event))?;
            eval::dp_baseline(
                &plan,
                model,
                &crate::dp::mechanism::Records::new(&train),
                &mut allowance,
                test,
                stored.num_classes(),
                1,
                args.seed,
                sink,
            )
        });
    match result {
        Ok(score) => {
            reservation.commit()?;
            let mut j = serde_json::to_value(&score).expect("invariant: score serializes");
            j["private"] = true.into();
            j["what"] = "DP-SGD classifier trained directly on the real training split at the run's (epsilon, delta); one model; charged to the ledger".into();
            j["ledger_run"] = id.into();
            j["plan"] = serde_json::to_value(&plan).expect("invariant: plan serializes");
            Ok(j)
        }
        Err(e) => {
            let _ = reservation.cancel();
            Err(e)
        }
    }
}

fn run_err(run: &str, why: impl Into<String>) -> crate::Error {
    eval::Error::Run {
        run: run.into(),
        why: why.into(),
    }
    .into()
}

fn read_run(dir: &Path, run: &str) -> Result<serde_json::Value> {
    let p = dir.join("run.json");
    let bytes =
        std::fs::read(&p).map_err(|e| run_err(run, format!("cannot read {}: {e}", p.display())))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| run_err(run, format!("{} is not valid JSON: {e}", p.display())))?;
    match v.get("status").and_then(|s| s.as_str()) {
        Some("completed") => Ok(v),
        Some(s) => Err(run_err(
            run,
            format!("its status is {s:?}, not \"completed\""),
        )),
        None => Err(run_err(run, "run.json has no status")),
    }
}

fn check_match(
    run: &str,
    ds: &str,
    syn: &FloatImages,
    shape: dataset::Shape,
    classes: usize,
) -> Result<()> {
    let bad = |why: String| -> crate::Error {
        eval::Error::Mismatch {
            run: run.into(),
            dataset: ds.into(),
            why,
        }
        .into()
    };
    if syn.shape != shape {
        return Err(bad(format!(
            "images are {}x{}x{}, the dataset's are {}x{}x{}",
            syn.shape.c, syn.shape.h, syn.shape.w, shape.c, shape.h, shape.w
        )));
    }
    if syn.is_empty() {
        return Err(bad("the synthetic set is empty".into()));
    }
    if let Some(l) = syn.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(bad(format!(
            "label {l} but the dataset has {classes} classes"
        )));
    }
    Ok(())
}

fn eval_describe(model: Model, shape: dataset::Shape, classes: usize) -> String {
    crate::nn::Net::zeroed(model.arch(shape, classes))
        .map(|n| n.describe())
        .unwrap_or_else(|e| e.to_string())
}

fn baseline_json(s: &Score, what: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("invariant: score serializes");
    v["private"] = serde_json::Value::Bool(false);
    v["what"] = serde_json::Value::String(what.into());
    v
}

fn compression_json(
    syn: &Score,
    syn_n: usize,
    syn_bytes: u64,
    full_n: usize,
    full_bytes: u64,
    full: Option<&(Score, usize)>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "synthetic_images": syn_n,
        "synthetic_bytes": syn_bytes,
        "full_images": full_n,
        "full_bytes": full_bytes,
        "full_bytes_note": "training split as stored (8-bit pixels)",
        "images_ratio": syn_n as f64 / full_n.max(1) as f64,
        "synthetic_train_seconds_per_model": syn.train_seconds,
    });
    if let Some((fs, n)) = full {
        let per_step = fs.train_seconds / fs.steps.max(1) as f64;
        let epoch = per_step * n.div_ceil(256) as f64;
        v["full_train_seconds_capped"] = fs.train_seconds.into();
        v["full_train_seconds_per_epoch_estimated"] = epoch.into();
        v["accuracy_ratio"] = (syn.accuracy / fs.accuracy.max(1e-12)).into();
    }
    v
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map(|a| format!("{:5.1}%", 100.0 * a))
        .unwrap_or_else(|| "    – ".into())
}

fn human(out: &serde_json::Value, classes: &[String]) -> String {
    let mut s = format!(
        "run {} on {} ({} held-out test images; figures measured on the held-out test split)\n\n",
        out["run"].as_str().unwrap_or(""),
        out["dataset"].as_str().unwrap_or(""),
        out["test_images"]
    );
    s += &format!(
        "{:<34} {:>8} {:>7} {:>8} {:>8}\n",
        "training set", "accuracy", "± std", "images", "private"
    );
    let row = |name: &str, v: &serde_json::Value, private: &str| {
        format!(
            "{:<34} {:>8} {:>6.1}% {:>8} {:>8}\n",
            name,
            pct(&v["accuracy"]),
            100.0 * v["accuracy_std"].as_f64().unwrap_or(0.0),
            v["train_images"].to_string(),
            private
        )
    };
    s += &row("synthetic (this run)", &out["synthetic"], "DP");
    if let Some(b) = out["baselines"].get("random_real") {
        s += &row("random real, same per class", b, "no (ref)");
    }
    if let Some(b) = out["baselines"].get("all_real") {
        s += &row("all real (ceiling, capped)", b, "no (ref)");
    }
    if let Some(b) = out["baselines"].get("dp_sgd") {
        s += &row("DP-SGD on real, same (ε, δ)", b, "DP");
    }
    s += "\nper class (synthetic):\n";
    if let Some(pc) = out["per_class"].as_array() {
        for (k, v) in pc.iter().enumerate() {
            let name = classes.get(k).map(String::as_str).unwrap_or("?");
            s += &format!("  {:<24} {}\n", name, pct(&v["accuracy"]));
        }
    }
    let c = &out["compression"];
    s += &format!(
        "\ncompression: {} synthetic images ({} bytes) vs {} real ({} bytes); training {:.1} s per model",
        c["synthetic_images"], c["synthetic_bytes"], c["full_images"], c["full_bytes"],
        c["synthetic_train_seconds_per_model"].as_f64().unwrap_or(0.0)
    );
    if let Some(e) = c["full_train_seconds_per_epoch_estimated"].as_f64() {
        s += &format!(
            " vs {e:.1} s per epoch on all data; accuracy ratio {:.2}",
            c["accuracy_ratio"].as_f64().unwrap_or(0.0)
        );
    }
    s += "\n";
    s
}
