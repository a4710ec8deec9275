//! Building and signing a package, and publishing it into the workspace atomically.
//!
//! [`build_package`] is a pure function of its inputs: it returns every file of the package
//! in memory, so the same inputs give the same bytes (Ed25519 is deterministic). [`publish`]
//! writes them into a temporary directory under `packages/` and renames it into place, then
//! writes the index entry `packages/<id>.meta.json`, so a package is either complete or absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::dsse::{Envelope, PAYLOAD_TYPE};
use super::manifest::{privacy_report, sums, PackageMeta, ReportInputs};
use super::signify;
use super::statement::{ProvenanceInputs, Statement};
use super::{Error, Result};
use crate::dp::accountant::EpsilonReport;
use crate::error::IoError;
use crate::keys::SigningKey;
use crate::run::evaluation::UtilityRelease;
use crate::run::RunRecord;
use crate::workspace::{atomic_write, atomic_write_with, create_dir_all, publish_dir};

/// Everything a package is made from.
pub struct BuildInputs<'a> {
    /// The run (a validated record of a completed, charged run).
    pub run: &'a RunRecord,
    /// `synthetic.parquet` bytes.
    pub synthetic: &'a [u8],
    /// `contact_sheet.png` bytes.
    pub contact_sheet: &'a [u8],
    /// The run's released utility figures, if any (never the internal `eval.json`).
    pub utility: Option<&'a UtilityRelease>,
    /// The composition of every share the package carries: the stated guarantee.
    pub guarantee: &'a EpsilonReport,
    /// The dataset's budget after this run, as the ledger reports it.
    pub budget: &'a Value,
    /// The newest signed audit checkpoint, if the audit log provides one.
    pub checkpoint: Option<&'a [u8]>,
    /// The partner receiving the package.
    pub partner: &'a str,
    /// The workspace id (names the SLSA builder).
    pub workspace_id: &'a str,
    /// SHA-256 of the Retort binary, if known.
    pub retort_digest: Option<&'a str>,
    /// When the package is made (RFC 3339).
    pub packaged_on: &'a str,
    /// The package-signing key.
    pub key: &'a SigningKey,
}

/// A built package, in memory.
#[derive(Debug, Clone)]
pub struct Built {
    /// Relative path → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The run's epsilon.
    pub epsilon: f64,
    /// The run's delta.
    pub delta: f64,
    /// SHA-256 of the envelope file (recorded in the audit log).
    pub envelope_sha256: String,
}

/// Build every file of the package and sign it. Nothing is signed unless the privacy report
/// and the statement pass the release boundary ([`super::boundary`]).
///
/// # Errors
/// `package-unreleased-field` when a field or a Parquet column is neither declared public nor
/// released by a share the guarantee covers (a `soft_label` column needs the `teacher` share);
/// `dataset-format` when `synthetic.parquet` is not the partner format (soft labels that are
/// not probability vectors over the run's classes).
pub fn build_package(inp: &BuildInputs<'_>) -> Result<Built> {
    let mut files = BTreeMap::new();
    let name = std::path::Path::new(super::SYNTHETIC);
    let (columns, keys) = crate::dataset::parquet_columns_and_metadata_of(name, inp.synthetic)?;
    let report_v = privacy_report(&ReportInputs {
        run: inp.run,
        utility: inp.utility,
        guarantee: inp.guarantee,
        budget: inp.budget,
        columns: &columns,
    });
    let covers = super::boundary::covers(&report_v);
    super::boundary::check(
        "privacy_report.json",
        &report_v,
        super::boundary::REPORT,
        &covers,
    )?;
    super::boundary::check_parquet(&columns, &keys, &covers)?;
    if columns
        .iter()
        .any(|c| c == crate::dataset::SOFT_LABEL_COLUMN)
    {
        // A released column must be what its share releases: probability vectors over the
        // run's classes (the strict reader checks every row).
        let (_, classes) = crate::dataset::read_synthetic_parquet_of(name, inp.synthetic)?;
        if classes != inp.run.classes {
            return Err(crate::dataset::Error::Format {
                path: name.into(),
                why: "its classes are not the run's".into(),
            }
            .into());
        }
    }
    let mut report = serde_json::to_vec_pretty(&report_v).expect("invariant: report serializes");
    report.push(b'\n');
    files.insert(super::SYNTHETIC.to_string(), inp.synthetic.to_vec());
    files.insert(super::CONTACT_SHEET.to_string(), inp.contact_sheet.to_vec());
    files.insert(super::PRIVACY_REPORT.to_string(), report);

    let subjects: BTreeMap<String, String> = files
        .iter()
        .map(|(p, b)| (p.clone(), crate::digest::sha256_hex(b)))
        .collect();
    let checkpoint_sha = inp.checkpoint.map(crate::digest::sha256_hex);
    let stmt = Statement::for_run(
        inp.run,
        &subjects,
        &ProvenanceInputs {
            partner: inp.partner,
            workspace_id: inp.workspace_id,
            retort_digest: inp.retort_digest,
            packaged_on: inp.packaged_on,
            checkpoint_sha256: checkpoint_sha.as_deref(),
            guarantee: inp.guarantee,
            covers: &covers,
            columns: &columns,
        },
    );
    let stmt_v = serde_json::to_value(&stmt).expect("invariant: statement serializes");
    super::boundary::check(
        "the provenance statement",
        &stmt_v,
        super::boundary::STATEMENT,
        &covers,
    )?;
    let env = Envelope::sign(PAYLOAD_TYPE, &stmt.to_bytes(), inp.key).to_line();
    let envelope_sha256 = crate::digest::sha256_hex(env.as_bytes());
    files.insert(super::PROVENANCE.to_string(), env.into_bytes());
    if let Some(c) = inp.checkpoint {
        files.insert(super::CHECKPOINT.to_string(), c.to_vec());
    }

    let listed: BTreeMap<String, String> = files
        .iter()
        .map(|(p, b)| (p.clone(), crate::digest::sha256_hex(b)))
        .collect();
    let sums_text = sums(&listed);
    let sig = signify::sign_embedded(inp.key, signify::SUMS_SIG_COMMENT, sums_text.as_bytes());
    files.insert(super::SUMS.to_string(), sums_text.into_bytes());
    files.insert(super::SUMS_SIG.to_string(), sig);

    let public = inp.key.public();
    files.insert(super::PUB_PEM.to_string(), public.spki_pem().into_bytes());
    files.insert(
        super::PUB_SIGNIFY.to_string(),
        signify::pub_file(&public).into_bytes(),
    );
    Ok(Built {
        files,
        epsilon: inp.guarantee.epsilon,
        delta: inp.run.delta.get(),
        envelope_sha256,
    })
}

/// A package published in the workspace.
#[derive(Debug, Clone)]
pub struct PublishedPackage {
    /// Package id.
    pub id: String,
    /// `packages/<id>/`.
    pub dir: PathBuf,
    /// `packages/<id>.meta.json`.
    pub meta_path: PathBuf,
    /// The index entry.
    pub meta: PackageMeta,
}

/// Write `files` into a fresh directory `dest` (which must not exist), atomically: a
/// temporary sibling directory is filled, synced and renamed.
///
/// # Errors
/// `package-exists`, I/O.
pub fn write_dir(files: &BTreeMap<String, Vec<u8>>, dest: &Path) -> Result<()> {
    if dest.exists() {
        return Err(Error::Exists { path: dest.into() });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    create_dir_all(parent)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{name}.tmp-{}",
        crate::digest::hex(&crate::keys::random_bytes::<4>())
    ));
    let r = (|| -> Result<()> {
        for (rel, bytes) in files {
            let p = tmp.join(rel);
            if let Some(d) = p.parent() {
                create_dir_all(d)?;
            }
            atomic_write(&p, bytes)?;
        }
        publish_dir(&tmp, dest)?;
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r
}

/// Publish a built package as `packages/<id>/` plus `packages/<id>.meta.json`.
///
/// # Errors
/// `package-exists`, I/O.
pub fn publish(
    packages_dir: &Path,
    id: &str,
    built: &Built,
    run: &RunRecord,
    partner: &str,
    created: &str,
) -> Result<PublishedPackage> {
    let dir = packages_dir.join(id);
    write_dir(&built.files, &dir)?;
    let meta = PackageMeta {
        id: id.into(),
        run: run.id.clone(),
        dataset: run.dataset.clone(),
        partner: partner.into(),
        epsilon: built.epsilon,
        delta: built.delta,
        created: created.into(),
        size_bytes: built.files.values().map(|b| b.len() as u64).sum(),
        files: built.files.keys().cloned().collect(),
    };
    let meta_path = packages_dir.join(format!("{id}.meta.json"));
    let mut text = serde_json::to_vec_pretty(&meta).expect("invariant: meta serializes");
    text.push(b'\n');
    atomic_write(&meta_path, &text)?;
    Ok(PublishedPackage {
        id: id.into(),
        dir,
        meta_path,
        meta,
    })
}

/// Copy a published package out: `out/<id>/`, or with `tar` the single file `out/<id>.tar`.
///
/// # Errors
/// `package-exists`, I/O.
pub fn export_copy(pkg: &PublishedPackage, out: &Path, tar: bool, mtime: u64) -> Result<PathBuf> {
    create_dir_all(out)?;
    if tar {
        let dest = out.join(format!("{}.tar", pkg.id));
        if dest.exists() {
            return Err(Error::Exists { path: dest });
        }
        atomic_write_with(&dest, 0o644, |f| {
            super::export::write_tar(&pkg.dir, &pkg.id, mtime, std::io::BufWriter::new(f))?
                .into_inner()
                .map_err(|e| e.into_error())?;
            Ok(())
        })?;
        Ok(dest)
    } else {
        let dest = out.join(&pkg.id);
        let mut files = BTreeMap::new();
        for rel in &pkg.meta.files {
            let p = pkg.dir.join(rel);
            files.insert(
                rel.clone(),
                std::fs::read(&p).map_err(|e| IoError::new("reading", &p, e))?,
            );
        }
        write_dir(&files, &dest)?;
        Ok(dest)
    }
}

/// SHA-256 of a file, streamed.
///
/// # Errors
/// I/O.
pub fn file_sha256(path: &Path) -> std::result::Result<String, IoError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| IoError::new("reading", path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| IoError::new("reading", path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(crate::digest::hex(ctx.finish().as_ref()))
}
