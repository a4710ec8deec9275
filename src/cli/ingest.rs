//! `retort ingest SRC --name NAME`: read, validate, de-identify, resize and store a dataset.
//!
//! Order: validate the name → open the workspace (audited as `dataset.ingest`) → take the lock
//! → refuse an existing name → log intent → read → store atomically. A failure at any step
//! leaves no dataset behind. Audit details carry counts and reason codes only, never file
//! names (they can hold PHI); the operator's report lists skipped files with their reasons.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::{Ctx, Report};
use crate::ingest::{self, Format, Options};
use crate::Result;

/// Arguments of `retort ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The source: a folder of IDX pairs, of class folders (images or DICOM), a DICOM folder
    /// with --labels, or a Parquet file.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// Name of the new dataset (1-64 of a-z A-Z 0-9 - _ .).
    #[arg(long)]
    pub name: String,
    /// Source format.
    #[arg(long, default_value = "auto", value_parser = ["auto", "idx", "images", "dicom", "parquet"])]
    pub format: String,
    /// Resize every image to HxW (triangle filter; aspect ratio not kept), e.g. 64x64.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    pub size: Option<(usize, usize)>,
    /// Fraction of each class held out for testing (random split; default 0.2). Not allowed
    /// when the source has an official split (IDX train-*/t10k-*).
    #[arg(long, value_name = "F")]
    pub test_fraction: Option<f64>,
    /// Leave out files that cannot be read (listed with their reason) instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Output channels: 1 (gray) or 3 (RGB). Default: what the images are.
    #[arg(long, value_name = "1|3", value_parser = clap::value_parser!(u8).range(1..=3))]
    pub channels: Option<u8>,
    /// DICOM: CSV of `file,class` lines (file names relative to SRC) instead of class folders.
    #[arg(long, value_name = "CSV")]
    pub labels: Option<PathBuf>,
    /// Class names for integer labels (IDX, Parquet), comma-separated in label order.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub class_names: Option<Vec<String>>,
    /// Mark the dataset for privacy auditing only (public or test data): `retort privacy
    /// audit` runs on it; `plan` and `distill` refuse it, so it can never be packaged.
    #[arg(long)]
    pub audit_only: bool,
}

/// Parse `HxW` (also `H,W` or a single `N` for NxN).
fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let parts: Vec<&str> = s.split(['x', 'X', ',']).collect();
    let nums: Option<Vec<usize>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
    match nums.as_deref() {
        Some([n]) if *n > 0 => Ok((*n, *n)),
        Some([h, w]) if *h > 0 && *w > 0 => Ok((*h, *w)),
        Some([_] | [_, _]) => Err("height and width must be at least 1 pixel, e.g. 64x64".into()),
        _ => Err(format!("{s:?} is not a size; write HxW, e.g. 64x64")),
    }
}

/// Run `retort ingest`.
///
/// # Errors
/// Ingest errors (naming the file and the fix), `dataset-exists`, `workspace-locked`, audit
/// errors.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let t0 = Instant::now();
    crate::workspace::validate_name(&args.name)?;
    let ws = ctx.open_audited("dataset.ingest", &args.name)?;
    let format: Option<Format> = match args.format.as_str() {
        "auto" => None,
        f => Some(
            f.parse()
                .map_err(|e: String| super::usage(e, "see `retort ingest --help`"))?,
        ),
    };
    ctx.detail("format_requested", args.format.clone());
    let _lock = ws.lock(crate::workspace::DEFAULT_LOCK_WAIT)?;
    if crate::dataset::dir_of(&ws, &args.name).exists() {
        return Err(crate::dataset::Error::Exists { name: args.name }.into());
    }
    ctx.intent(
        &ws,
        "dataset.ingest",
        &args.name,
        json!({ "format_requested": args.format, "skip_invalid": args.skip_invalid, "audit_only": args.audit_only }),
    )?;
    let opts = Options {
        format,
        size: args.size,
        test_fraction: args.test_fraction,
        skip_invalid: args.skip_invalid,
        channels: args.channels.map(usize::from),
        labels: args.labels.clone(),
        class_names: args.class_names.clone(),
    };
    // Values wrong in themselves are refused before anything is read.
    opts.check()?;
    ctx.say(format!("reading {}", args.src.display()));
    let bar = ctx.show_progress().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg:24} [{bar:40}] {pos}/{len} ({eta})")
                .expect("invariant: template parses")
                .progress_chars("=> "),
        );
        b
    });
    let sink = |e: crate::progress::Event<'_>| {
        if let Some(b) = &bar {
            match e {
                crate::progress::Event::Start { label, total } => {
                    b.set_message(label.to_string());
                    b.set_length(total);
                    b.set_position(0);
                }
                crate::progress::Event::Advance(n) => b.inc(n),
                crate::progress::Event::Finish => {}
                _ => {}
            }
        }
    };
    let read = ingest::read(&args.src, &opts, &sink);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let out = read?;
    let reasons = out.reason_counts();
    ctx.detail("format", out.format.name());
    ctx.detail("files_read", out.read);
    ctx.detail("skipped", out.skipped.len());
    ctx.detail("skipped_reasons", json!(reasons));
    if let Some(inv) = out.dicom {
        ctx.detail(
            "deid",
            json!({ "identifying_attributes_dropped": inv.identifying, "private_attributes_dropped": inv.private }),
        );
    }
    let stored = crate::dataset::store_marked(&ws, &args.name, &out.dataset, args.audit_only)?;
    let m = &stored.meta;
    ctx.detail("audit_only", m.audit_only);
    ctx.detail("shape", json!(m.shape.to_vec()));
    ctx.detail("classes", m.classes.len());
    ctx.detail("train_count", m.train_count);
    ctx.detail("test_count", m.test_count);
    ctx.detail("split", json!(m.split));
    ctx.detail("fingerprint_hmac", m.fingerprint.clone());
    let seconds = t0.elapsed().as_secs_f64();

    let mut human = format!(
        "stored dataset {:?} ({} format): {} classes, shape {}x{}x{} (CxHxW), {} train / {} test images ({}) in {:.1} s\n",
        m.name,
        out.format.name(),
        m.classes.len(),
        m.shape.c,
        m.shape.h,
        m.shape.w,
        m.train_count,
        m.test_count,
        match m.split {
            crate::dataset::SplitInfo::Official => "official split kept".to_string(),
            crate::dataset::SplitInfo::Random { test_fraction, .. } =>
                format!("random split per class, {:.0}% held out", test_fraction * 100.0),
        },
        seconds
    );
    for n in &m.notes {
        human.push_str(&format!("  note: {n}\n"));
    }
    if !out.skipped.is_empty() {
        human.push_str(&format!("skipped {} invalid file(s):\n", out.skipped.len()));
        for s in &out.skipped {
            human.push_str(&format!(
                "  {}: {} [{}]\n",
                s.path.display(),
                s.reason,
                s.code
            ));
        }
    }
    if m.audit_only {
        human.push_str("marked audit-only: `retort privacy audit` can run on it; it can never be planned, distilled or packaged\n");
    }
    human.push_str(&format!("see it with `retort datasets show {}`\n", m.name));
    // The budget follows the images (keyed fingerprint): say so when they already spent some.
    match crate::ledger::Ledger::open(&ws, m).and_then(|l| l.check()) {
        Ok(c) if !c.records.is_empty() => {
            let others: Vec<&String> = c.names.iter().filter(|n| **n != m.name).collect();
            ctx.detail("budget_history", json!(others));
            human.push_str(&format!(
                "note: these images were ingested before (as {}); their spent privacy budget carries over: see `retort budget {}`\n",
                others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                m.name
            ));
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("the budget history of these images could not be checked: {e}"),
    }
    let skipped: Vec<_> = out
        .skipped
        .iter()
        .map(
            |s| json!({ "file": s.path.display().to_string(), "code": s.code, "reason": s.reason }),
        )
        .collect();
    Ok(Report::new(
        human,
        json!({
            "name": m.name,
            "format": out.format.name(),
            "shape": m.shape.to_vec(),
            "classes": m.classes,
            "train_count": m.train_count,
            "test_count": m.test_count,
            "per_class_train": m.per_class_train,
            "per_class_test": m.per_class_test,
            "split": m.split,
            "files_read": out.read,
            "skipped": skipped,
            "skipped_reasons": reasons,
            "notes": m.notes,
            "audit_only": m.audit_only,
            "seconds": seconds,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64x32"), Ok((64, 32)));
        assert_eq!(parse_size("28"), Ok((28, 28)));
        assert_eq!(parse_size("3,4"), Ok((3, 4)));
        for bad in ["", "0x4", "ax4", "1x2x3", "-1x4"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("0x4").unwrap_err().contains("at least 1 pixel"));
    }
}
