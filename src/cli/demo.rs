//! `retort demo`: the whole pipeline end to end on the embedded phantom dataset.

use std::path::PathBuf;
use std::time::Instant;

use super::{Ctx, Report};
use crate::Result;

/// Arguments of `retort demo` (the workspace is temporary unless `--workspace` is given).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training images per class to generate.
    #[arg(long, default_value_t = 300)]
    pub train_per_class: usize,
    /// Held-out test images per class to generate.
    #[arg(long, default_value_t = 100)]
    pub test_per_class: usize,
}

/// Run the demo.
///
/// # Errors
/// Any stage's error.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let t0 = Instant::now();
    let (root, keep): (PathBuf, bool) = match &ctx.workspace_arg {
        Some(p) => (p.clone(), true),
        None => {
            let dir = std::env::temp_dir().join(crate::workspace::new_id("retort-demo"));
            (dir, false)
        }
    };
    let mut lines = Vec::new();
    let mut step = |ctx: &Ctx, s: String| {
        ctx.say(&s);
        lines.push(s);
    };

    // 1. init
    let mut sub = Ctx::new(Some(root.clone()), false);
    sub.actor = ctx.actor.clone();
    let init = super::run_command(
        super::Command::Init(super::init::Args {
            site: "retort-demo".into(),
            policy_template: "default".into(),
        }),
        &mut sub,
    )?;
    step(
        ctx,
        format!(
            "[1] workspace      {}  (package key SHA256 {})",
            root.display(),
            init.json["package_key_sha256"].as_str().unwrap_or("?")
        ),
    );

    // 2. generate + store the demo dataset
    let ds = crate::demo::generate(args.train_per_class, args.test_per_class);
    let ws = crate::workspace::Workspace::open(&root)?;
    ctx.audit_in(&ws, "demo", "phantoms");
    {
        let _lock = ws.lock(crate::workspace::DEFAULT_LOCK_WAIT)?;
        let stored = crate::dataset::store(&ws, "phantoms", &ds)?;
        ctx.record(
            &ws,
            crate::audit::NewRecord::new(
                &ctx.actor,
                "dataset.ingest",
                "phantoms",
                crate::audit::Outcome::Ok,
            )
            .details(serde_json::json!({
                "format": "demo",
                "train_count": stored.meta.train_count,
                "test_count": stored.meta.test_count,
                "shape": stored.meta.shape.to_vec(),
                "fingerprint_hmac": stored.meta.fingerprint,
            })),
        )?;
        step(
            ctx,
            format!(
                "[2] dataset        phantoms: {} train / {} test images, {} classes ({}), 1x28x28",
                stored.meta.train_count,
                stored.meta.test_count,
                stored.meta.classes.len(),
                stored.meta.classes.join(", ")
            ),
        );
    }

    let secs = t0.elapsed().as_secs_f64();
    step(
        ctx,
        format!(
            "done in {secs:.1} s; workspace {}",
            if keep {
                "kept"
            } else {
                "is temporary (pass --workspace DIR to keep it)"
            }
        ),
    );
    let json = serde_json::json!({
        "workspace": root,
        "dataset": "phantoms",
        "run": serde_json::Value::Null,
        "package": serde_json::Value::Null,
        "seconds": secs,
    });
    Ok(Report::new(lines.join("\n") + "\n", json))
}
