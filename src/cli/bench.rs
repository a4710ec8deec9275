//! `retort bench dp-step`: time the DP-SGD step through the one mechanism (the path training
//! takes: per-sample gradients as the per-record function, clipping, sum and noise in
//! `dp::mechanism`) on random 28×28×1 data and print it beside the floating-point floor (the
//! step's FLOPs over this machine's measured matrix-multiply rate). Compare with PyTorch +
//! Opacus using `bench/peer_opacus.py` (same network, same step, same thread count).

use super::{Ctx, Report};
use crate::nn::{bench, Activation, Arch, ConvNetConfig, MlpConfig, Net};
use crate::Result;
use rand::SeedableRng;

/// Arguments of `retort bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to time.
    #[command(subcommand)]
    pub cmd: BenchCmd,
}

/// `bench` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum BenchCmd {
    /// The DP-SGD step through the one mechanism (per-sample grads, clip, sum, noise, update).
    DpStep(DpStepArgs),
}

/// Arguments of `retort bench dp-step`.
#[derive(Debug, clap::Args)]
pub struct DpStepArgs {
    /// Network: the distillation ConvNet-3 or an MLP (784→W→10).
    #[arg(long, default_value = "convnet", value_parser = ["convnet", "mlp"])]
    pub model: String,
    /// ConvNet channels per layer, or the MLP's hidden width.
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Timed steps (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Worker threads [default: RAYON_NUM_THREADS, else all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Activation.
    #[arg(long, default_value = "relu", value_parser = ["relu", "gelu"])]
    pub activation: String,
}

/// Run `retort bench`.
///
/// # Errors
/// Usage errors for out-of-range sizes; engine errors.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    match args.cmd {
        BenchCmd::DpStep(a) => dp_step(a, ctx),
    }
}

fn dp_step(a: DpStepArgs, ctx: &mut Ctx) -> Result<Report> {
    if !(1..=4096).contains(&a.width) {
        return Err(super::usage(
            format!("--width {} is out of range", a.width),
            "use a width from 1 to 4096 (the literature's ConvNet uses 128)",
        ));
    }
    if !(1..=65536).contains(&a.batch) || !(1..=1000).contains(&a.reps) {
        return Err(super::usage(
            "--batch must be 1..65536 and --reps 1..1000",
            "e.g. --batch 256 --reps 5",
        ));
    }
    let act: Activation = a
        .activation
        .parse()
        .map_err(|e: String| super::usage(e, "use --activation relu or gelu"))?;
    let arch = match a.model.as_str() {
        "mlp" => Arch::Mlp(MlpConfig {
            inputs: 784,
            hidden: vec![a.width],
            classes: 10,
            activation: act,
        }),
        _ => Arch::ConvNet(ConvNetConfig {
            net_width: a.width,
            activation: act,
            ..ConvNetConfig::standard(1, 28, 28, 10)
        }),
    };
    let threads = a.threads.unwrap_or_else(rayon::current_num_threads);
    if !(1..=1024).contains(&threads) {
        return Err(super::usage(
            "--threads must be 1..1024",
            "e.g. --threads 2",
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| {
            super::usage(
                format!("cannot start {threads} threads: {e}"),
                "use fewer --threads",
            )
        })?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut net = Net::new(arch, &mut rng)?;
    ctx.say(format!(
        "timing {} DP steps of {} on {} random 28x28x1 images, {threads} threads ...",
        a.reps,
        net.describe(),
        a.batch
    ));
    let (times, gflops) = pool.install(|| -> Result<_> {
        let gflops = bench::matmul_gflops(1024, 3);
        let times = bench::dp_step(&mut net, a.batch, a.reps)?;
        Ok((times, gflops))
    })?;
    let step_gflop = net.train_flops_per_sample() * a.batch as f64 / 1e9;
    let floor_ms = step_gflop / gflops * 1e3;
    let samples_per_s = a.batch as f64 / (times.median_ms / 1e3);
    let human = format!(
        "model        {}\n\
         batch        {} (through dp::mechanism: clip C=1, f64 sum, Gaussian noise; SGD update)\n\
         threads      {threads}\n\
         step         {:.1} ms median, {:.1} ms best, over {} steps: {:?}\n\
         throughput   {:.0} samples/s\n\
         FLOPs        {:.1} GFLOP per step (forward + weight grads + input grads after layer 1)\n\
         matmul rate  {:.1} GFLOP/s measured ({threads} threads x 1024^3 single-threaded GEMM, best of 3)\n\
         floor        {:.1} ms per step; this step is {:.2}x the floor\n\
         compare      python3 bench/peer_opacus.py --model {} --width {} --batch {} --threads {threads}\n",
        net.describe(),
        a.batch,
        times.median_ms,
        times.min_ms,
        times.ms.len(),
        times.ms.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
        samples_per_s,
        step_gflop,
        gflops,
        floor_ms,
        times.median_ms / floor_ms,
        a.model,
        a.width,
        a.batch,
    );
    Ok(Report::new(
        human,
        serde_json::json!({
            "ms_per_step": times.median_ms,
            "min_ms_per_step": times.min_ms,
            "samples_per_s": samples_per_s,
            "model": a.model,
            "width": a.width,
            "batch": a.batch,
            "threads": threads,
            "params": net.num_params(),
            "gflop_per_step": step_gflop,
            "matmul_gflops": gflops,
            "floor_ms": floor_ms,
            "ratio_to_floor": times.median_ms / floor_ms,
        }),
    ))
}
