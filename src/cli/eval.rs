//! `retort eval RUN`: train fresh models on a run's synthetic set, test them on the dataset's
//! held-out split, compare with baselines (internal), make the run's utility release (the
//! figures packages carry), and print a table.

use super::progress::Bar;
use super::{Ctx, Report};
use crate::run::evaluation::{self, Effort, EffortChoice, EvalOptions, Evaluation};
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
    /// The standard recipe of the literature (3 models of width 128, 300 epochs, a 200-step
    /// all-real ceiling: minutes to tens of minutes on 2 cores) instead of settings sized to
    /// the set (2 models of width 32, epochs so that each model sees about 6000 images).
    #[arg(long)]
    pub full: bool,
    /// ConvNet channels per layer, or MLP hidden units [default: 32; 128 with --full].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub width: Option<u64>,
    /// Fresh models per training set (mean ± std over them) [default: 2; 3 with --full].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub models: Option<u64>,
    /// Epochs on the synthetic set (and on the random-real baseline) [default: sized to the
    /// set, 20 to 300; 300 with --full]. The literature uses 1000 for MNIST-like sets.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub epochs: Option<u64>,
    /// First model's initialisation seed (public; model m uses seed + m).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the non-private baselines (they read the private training split).
    #[arg(long)]
    pub no_baselines: bool,
    /// Also train MLPs (one hidden layer of 256 units; same recipe, labels and number of
    /// models) on the synthetic set: an internal figure showing whether the set's value is
    /// specific to the evaluation ConvNet.
    #[arg(long)]
    pub also_mlp: bool,
    /// SGD steps (batch 256) of the all-real-data ceiling, one model: a cap so it stays
    /// affordable on 2 cores [default: about ten passes over the training split, 20 to 200;
    /// 200 with --full].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub ceiling_steps: Option<u64>,
    /// Also train a DP-SGD classifier directly on the real training split at the run's
    /// (epsilon, delta). It reads private data, so it SPENDS BUDGET: its privacy event is
    /// reserved in the dataset's ledger (checked against the policy's cap) before anything is
    /// read. Its figure stays internal (never in a package).
    #[arg(long)]
    pub dp_baseline: bool,
    /// DP-SGD steps of that baseline (expected batch 256, clip 1).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub dp_steps: u64,
}

/// Run `retort eval`.
///
/// # Errors
/// `run-*` (missing, unfinished or uncharged run), dataset, ledger and engine errors,
/// `run-eval-cancelled`.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    validate_name(&args.run)?;
    let ws = ctx.open_audited("eval", &args.run)?;
    let run = Completed::open(&ws, &args.run)?;
    let as_usize = |x: Option<u64>| x.map(|v| usize::try_from(v).unwrap_or(usize::MAX));
    let choice = EffortChoice {
        effort: Some(if args.full {
            Effort::Full
        } else {
            Effort::Scaled
        }),
        model: Some(args.model.clone()),
        width: as_usize(args.width),
        models: as_usize(args.models),
        epochs: as_usize(args.epochs),
        ceiling_steps: as_usize(args.ceiling_steps),
    };
    let mut opts = EvalOptions::for_run(
        &ws,
        &run,
        &choice,
        args.seed,
        !args.no_baselines,
        args.dp_baseline.then_some(args.dp_steps),
    )?;
    opts.also_mlp = args.also_mlp.then_some(evaluation::ALSO_MLP_HIDDEN);
    ctx.detail("effort", opts.effort.clone());
    ctx.say(format!(
        "evaluating run {} ({} synthetic images) on the held-out split of {}\neffort: {}{}",
        args.run,
        run.record().ipc * run.record().classes.len(),
        run.record().dataset,
        opts.effort,
        if args.full {
            ""
        } else {
            " (--full for the standard recipe)"
        }
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
        "labels": ev.record.labels,
        "accuracy_hard": ev.record.accuracy_hard,
        "accuracy_soft": ev.record.accuracy_soft,
        "accuracy_mlp": ev.record.other_models.get("mlp").map(|m| m.score.accuracy),
        "teacher": ev.record.teacher,
        "other_models": ev.record.other_models,
        "accuracies": ev.record.synthetic.accuracies,
        "per_class": ev.record.per_class,
        "models": ev.record.models,
        "test_images": ev.record.test_images,
        "baselines": ev.record.baselines,
        "compression": ev.record.compression,
        "effort": opts.effort,
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

/// A column of the per-class table: its header and how to read it from a row.
type Column = (&'static str, fn(&evaluation::PerClass) -> Option<f64>);

/// The per-class table: classes as rows, one column per training set that was evaluated.
fn per_class_table(rows: &[evaluation::PerClass], run: &Completed) -> String {
    let cols: [Column; 4] = [
        ("synthetic", |r| r.synthetic),
        ("random real", |r| r.random_real),
        ("all real", |r| r.all_real),
        ("DP-SGD", |r| r.dp_sgd),
    ];
    let shown: Vec<_> = cols
        .iter()
        .enumerate()
        .filter(|(i, (_, f))| *i == 0 || rows.iter().any(|r| f(r).is_some()))
        .map(|(_, c)| c)
        .collect();
    let width = rows
        .iter()
        .map(|r| r.class.chars().count())
        .chain(std::iter::once(5))
        .max()
        .unwrap_or(5)
        .min(24);
    let mut s = format!("  per class (held-out accuracy):\n    {:<width$}", "class");
    for (name, _) in &shown {
        s += &format!(" {name:>11}");
    }
    s.push('\n');
    for r in rows {
        let name: String = r.class.chars().take(width).collect();
        s += &format!("    {name:<width$}");
        for (_, f) in &shown {
            s += &format!(" {:>11}", f(r).map(pct).unwrap_or_else(|| "–".into()));
        }
        s.push('\n');
    }
    if rows.is_empty() {
        s += &format!(
            "    (not recorded for the {} classes of this run)\n",
            run.record().classes.len()
        );
    }
    s
}

fn human(ev: &Evaluation, run: &Completed) -> String {
    let r = &ev.record;
    let mut s = format!(
        "run {} on {} ({} held-out test images)\neffort: {}\n\nINTERNAL figures (exact; they stay in the workspace):\n",
        r.run,
        r.dataset,
        r.test_images,
        r.effort.as_deref().unwrap_or("as recorded")
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
    match &r.synthetic_hard {
        Some(h) => {
            s += &row("synthetic, soft labels (partner)", &r.synthetic, "DP");
            s += &row("synthetic, hard labels", h, "DP");
        }
        None => s += &row("synthetic (this run)", &r.synthetic, "DP"),
    }
    if let Some(m) = r.other_models.get("mlp") {
        let name = format!("synthetic, MLP ({} labels)", m.labels.as_str());
        s += &row(&name, &m.score, "DP");
    }
    if let Some(b) = r.baselines.get("random_real") {
        s += &row("random real, same per class", &b.score, "no (ref)");
    }
    if let Some(b) = r.baselines.get("all_real") {
        s += &row("all real (ceiling, capped)", &b.score, "no (ref)");
    }
    if let Some(b) = r.baselines.get("dp_sgd") {
        s += &row("DP-SGD on real, same (ε, δ)", &b.score, "DP");
    }
    if let Some(t) = &r.teacher {
        s += &format!(
            "  DP teacher's own predictions (its share, epsilon {:.3} alone): {} on the held-out split — what the soft labels carry; internal\n",
            t.epsilon,
            pct(t.accuracy)
        );
    }
    if !r.baselines.is_empty() {
        s += "  (\"ref\" rows are trained on real pixels without privacy: what the same number of real images, or all of them, would give; they are never released)\n";
    }
    if r.synthetic_hard.is_some() {
        s += "  (the set has soft labels: a partner trains on them (docs/partners.md), so the soft-label models give the headline accuracy, the per-class table and the released figures)\n";
    }
    s += &per_class_table(&r.per_class, run);
    match &ev.utility {
        Some(u) => {
            s += &format!(
                "\nRELEASED figures (what packages carry; {} release, epsilon {} of the run's budget, noise std {:.1} on each count):\n  accuracy {} ± {:.1}% (noise)\n",
                if ev.released_now { "made now" } else { "made earlier, reused" },
                super::render::eps(u.share.epsilon),
                u.mechanism.noise_std,
                pct(u.accuracy),
                100.0 * u.accuracy_noise_std
            );
            if u.accuracy_noise_std > 0.25 {
                s += "  (the noise is larger than the figure it blurs: the held-out split is too small for this share of the budget; the figure tells a partner almost nothing)\n";
            }
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
