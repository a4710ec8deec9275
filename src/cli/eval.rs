//! `retort eval RUN`: train fresh models on a run's synthetic set, test them on the dataset's
//! held-out split, compare with baselines (internal), make the run's utility release (the
//! figures packages carry), and print a table.

use super::progress::Bar;
use super::{Ctx, Report};
use crate::eval::Recipe;
use crate::run::evaluation::{self, EvalOptions, Evaluation};
use crate::run::Completed;
use crate::workspace::validate_name;
use crate::Result;

/// Arguments of `retort eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run id (as `retort runs list` shows it).
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
    /// read. Its figure stays internal (never in a package).
    #[arg(long)]
    pub dp_baseline: bool,
    /// DP-SGD steps of that baseline (expected batch 256, clip 1).
    #[arg(long, default_value_t = 200)]
    pub dp_steps: u64,
}

/// Run `retort eval`.
///
/// # Errors
/// `run-*` (missing, unfinished or uncharged run), dataset, ledger and engine errors,
/// `cancelled`.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    if validate_name(&args.run).is_err() {
        return Err(super::usage(
            format!("{:?} is not a valid run id", args.run),
            "give a run id as `retort runs list` shows it, e.g. run-20261201-1a2b3c4d",
        ));
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
    let run = Completed::open(&ws, &args.run)?;
    let opts = EvalOptions {
        recipe: Recipe::standard(evaluation::model_of(&args.model, args.width), args.epochs),
        models: args.models,
        seed: args.seed,
        baselines: !args.no_baselines,
        ceiling_steps: args.ceiling_steps,
        dp_baseline_steps: args.dp_baseline.then_some(args.dp_steps),
    };
    ctx.say(format!(
        "evaluating run {} ({} synthetic images) on the held-out split of {}",
        args.run,
        run.record().ipc * run.record().classes.len(),
        run.record().dataset
    ));
    let bar = Bar::new(ctx.show_progress());
    let sink = |e: crate::progress::Event<'_>| bar.event(e);
    let phase = |p: &str| bar.set_prefix(&format!("[{p}] "));
    let show = ctx.show_progress();
    let say_phase = |p: &str| {
        phase(p);
        if show {
            eprintln!("eval: {p}");
        }
    };
    let ev = {
        let session = ctx.session_required()?;
        evaluation::evaluate(&ws, &run, &opts, session, &say_phase, &sink)?
    };
    let json = serde_json::json!({
        "run": ev.record.run,
        "dataset": ev.record.dataset,
        "accuracy": ev.record.accuracy,
        "accuracy_std": ev.record.accuracy_std,
        "accuracies": ev.record.synthetic.accuracies,
        "per_class": ev.record.synthetic.per_class,
        "models": ev.record.models,
        "test_images": ev.record.test_images,
        "baselines": ev.record.baselines,
        "compression": ev.record.compression,
        "synthetic": ev.record.synthetic,
        "internal": ev.record,
        "released": ev.utility,
        "released_now": ev.released_now,
        "no_release_reason": ev.no_release_reason,
    });
    Ok(Report::new(human(&ev, &run), json))
}

fn pct(a: f64) -> String {
    format!("{:5.1}%", 100.0 * a)
}

fn human(ev: &Evaluation, run: &Completed) -> String {
    let r = &ev.record;
    let mut s = format!(
        "run {} on {} ({} held-out test images)\n\nINTERNAL figures (exact; they stay in the workspace):\n",
        r.run, r.dataset, r.test_images
    );
    s += &format!(
        "  {:<34} {:>8} {:>7} {:>8} {:>9}\n",
        "training set", "accuracy", "± std", "images", "private"
    );
    let row = |name: &str, sc: &crate::eval::Score, private: &str| {
        format!(
            "  {:<34} {:>8} {:>6.1}% {:>8} {:>9}\n",
            name,
            pct(sc.accuracy),
            100.0 * sc.accuracy_std,
            sc.train_images,
            private
        )
    };
    s += &row("synthetic (this run)", &r.synthetic, "DP");
    if let Some(b) = r.baselines.get("random_real") {
        s += &row("random real, same per class", &b.score, "no (ref)");
    }
    if let Some(b) = r.baselines.get("all_real") {
        s += &row("all real (ceiling, capped)", &b.score, "no (ref)");
    }
    if let Some(b) = r.baselines.get("dp_sgd") {
        s += &row("DP-SGD on real, same (ε, δ)", &b.score, "DP");
    }
    s += "  per class (synthetic):\n";
    for (k, v) in r.synthetic.per_class.iter().enumerate() {
        let name = run
            .record()
            .classes
            .get(k)
            .map(String::as_str)
            .unwrap_or("?");
        s += &format!(
            "    {:<24} {}\n",
            name,
            v.map(pct).unwrap_or_else(|| "  –  ".into())
        );
    }
    match &ev.utility {
        Some(u) => {
            s += &format!(
                "\nRELEASED figures (what packages carry; {} release, epsilon {:.4} of the run's budget, noise std {:.1} on each count):\n  accuracy {} ± {:.1}% (noise)\n",
                if ev.released_now { "made now" } else { "made earlier, reused" },
                u.share.epsilon,
                u.mechanism.noise_std,
                pct(u.accuracy),
                100.0 * u.accuracy_noise_std
            );
        }
        None => {
            s += &format!(
                "\nno utility figures are released for partners: {}\n",
                ev.no_release_reason.as_deref().unwrap_or("none planned")
            );
        }
    }
    if let Some(c) = &r.compression {
        s += &format!(
            "\ncompression: {} synthetic images vs {} real; training {:.1} s per model\n",
            c["synthetic_images"],
            c["full_images"],
            c["synthetic_train_seconds_per_model"]
                .as_f64()
                .unwrap_or(0.0)
        );
    }
    s
}
