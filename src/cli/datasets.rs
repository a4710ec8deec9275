//! `retort datasets [list | show NAME | delete NAME]`: what is stored; `show` writes a contact
//! sheet PNG (sample training images, one row per class, labelled) and says where; `delete`
//! removes a dataset's pixels, keeping its budget and audit history.

use std::path::PathBuf;

use serde_json::json;

use super::{Ctx, Report};
use crate::dataset::{self, Split};
use crate::Result;

/// Arguments of `retort datasets`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do (default: list).
    #[command(subcommand)]
    pub cmd: Option<Sub>,
}

/// `datasets` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum Sub {
    /// List stored datasets.
    List,
    /// Show one dataset and write a contact sheet of sample images per class.
    Show {
        /// The dataset.
        name: String,
        /// Where to write the contact sheet PNG (default: datasets/NAME/contact_sheet.png in
        /// the workspace). It shows real images: keep it as private as the data.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Sample images per class on the sheet.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=256))]
        per_class: u16,
    },
    /// Delete a dataset: its pixels, labels and directory, atomically (audited). Refused while
    /// a run on it is running. The ledger and the audit log keep its history: `retort budget
    /// NAME` still shows its spend, and re-ingesting the same images (under any name) resumes
    /// their spent budget. Runs and packages made from it are kept.
    Delete {
        /// The dataset.
        name: String,
    },
}

/// Run `retort datasets`.
///
/// # Errors
/// `dataset-not-found`, `dataset-in-use`, `name-invalid` (exit 2), workspace and I/O errors.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    match args.cmd.unwrap_or(Sub::List) {
        Sub::List => list(ctx),
        Sub::Show {
            name,
            out,
            per_class,
        } => show(ctx, &name, out, per_class as usize),
        Sub::Delete { name } => delete(ctx, &name),
    }
}

fn delete(ctx: &mut Ctx, name: &str) -> Result<Report> {
    crate::workspace::validate_name(name)?;
    let ws = ctx.open_audited("dataset.delete", name)?;
    let d = dataset::delete(&ws, ctx.session_required()?, name)?;
    let human = format!(
        "deleted dataset {:?}: {} training and {} held-out images removed
  kept: its privacy budget history (`retort budget {}`; re-ingesting the same images resumes it), the audit log, {} run(s) and their packages
",
        d.name,
        d.train_count,
        d.test_count,
        d.name,
        d.runs_kept.len()
    );
    Ok(Report::new(
        human,
        serde_json::to_value(&d).expect("invariant: deletion report serializes"),
    ))
}

fn list(ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("dataset.list", "")?;
    let names = dataset::list(&ws)?;
    let mut human = String::new();
    let mut rows = Vec::new();
    if names.is_empty() {
        human.push_str("no datasets yet; add one with `retort ingest SRC --name NAME`\n");
    } else {
        human.push_str(&format!(
            "{:<24} {:>10} {:>8} {:>8} {:>8}  {}\n",
            "NAME", "SHAPE", "CLASSES", "TRAIN", "TEST", "FORMAT"
        ));
    }
    for n in &names {
        let m = dataset::open(&ws, n)?.meta;
        human.push_str(&format!(
            "{:<24} {:>10} {:>8} {:>8} {:>8}  {}\n",
            m.name,
            format!("{}x{}x{}", m.shape.c, m.shape.h, m.shape.w),
            m.classes.len(),
            m.train_count,
            m.test_count,
            m.source_format
        ));
        rows.push(json!({
            "name": m.name, "shape": m.shape.to_vec(), "classes": m.classes,
            "train_count": m.train_count, "test_count": m.test_count,
            "source_format": m.source_format, "created": m.created,
        }));
    }
    ctx.detail("count", names.len());
    Ok(Report::new(human, json!({ "datasets": rows })))
}

fn show(ctx: &mut Ctx, name: &str, out: Option<PathBuf>, per_class: usize) -> Result<Report> {
    crate::workspace::validate_name(name)?;
    let ws = ctx.open_audited("dataset.show", name)?;
    let stored = dataset::open(&ws, name)?;
    let m = stored.meta.clone();
    let train = stored.load(Split::Train)?;
    let png = dataset::contact_sheet_png(&train, &m.classes, Some(per_class));
    let path = out.unwrap_or_else(|| stored.dir.join("contact_sheet.png"));
    let _lock = if path.starts_with(ws.root()) {
        Some(ws.lock(crate::workspace::DEFAULT_LOCK_WAIT)?)
    } else {
        None
    };
    // Real images: owner-only wherever it is written (0600), whatever the folder allows.
    crate::workspace::atomic_write_mode(&path, &png, 0o600)?;
    ctx.detail("contact_sheet_images_per_class", per_class);
    ctx.detail("contact_sheet_in_workspace", path.starts_with(ws.root()));
    let mut human = format!(
        "dataset {:?}: {} format, shape {}x{}x{} (CxHxW), created {}\n  split: {}\n",
        m.name,
        m.source_format,
        m.shape.c,
        m.shape.h,
        m.shape.w,
        m.created,
        match &m.split {
            dataset::SplitInfo::Official => "official (from the source)".to_string(),
            dataset::SplitInfo::Random { test_fraction, .. } =>
                format!("random per class, {:.0}% held out", test_fraction * 100.0),
        }
    );
    human.push_str(&format!("  {:<24} {:>8} {:>8}\n", "CLASS", "TRAIN", "TEST"));
    for (i, c) in m.classes.iter().enumerate() {
        human.push_str(&format!(
            "  {:<24} {:>8} {:>8}\n",
            c,
            m.per_class_train.get(i).copied().unwrap_or(0),
            m.per_class_test.get(i).copied().unwrap_or(0)
        ));
    }
    human.push_str(&format!(
        "  {:<24} {:>8} {:>8}\n",
        "total", m.train_count, m.test_count
    ));
    for n in &m.notes {
        human.push_str(&format!("  note: {n}\n"));
    }
    human.push_str(&format!(
        "contact sheet ({} training images per class at most): {}\n",
        per_class,
        path.display()
    ));
    Ok(Report::new(
        human,
        json!({
            "name": m.name,
            "shape": m.shape.to_vec(),
            "classes": m.classes,
            "train_count": m.train_count,
            "test_count": m.test_count,
            "per_class_train": m.per_class_train,
            "per_class_test": m.per_class_test,
            "source_format": m.source_format,
            "split": m.split,
            "notes": m.notes,
            "created": m.created,
            "fingerprint": m.fingerprint,
            "contact_sheet": path.display().to_string(),
        }),
    ))
}
