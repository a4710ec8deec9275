//! `retort verify PKG --key PUBKEY`: the partner's check of a package, offline, without a
//! workspace. PKG is a package directory, its tar, or that tar gzipped; PUBKEY an SPKI PEM file, a signify/minisign
//! public key file, or the key's SHA-256 fingerprint (compared with the key in the package).
//! Exit 0 only if every step passes; exit 4 naming the first failed step otherwise.

use std::path::PathBuf;

use super::{Ctx, Report};
use crate::package::{verify_package, Limits, TrustedKey};
use crate::Result;

/// Arguments of `retort verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package: a directory, a tar file, or a gzipped tar (.tar.gz).
    pub package: PathBuf,
    /// The hospital's public key: SPKI PEM file, signify public key file, or SHA-256 fingerprint.
    #[arg(long, value_name = "PUBKEY")]
    pub key: String,
}

/// Run `retort verify`.
///
/// # Errors
/// `verify-*` codes (exit 4) for a package that fails a step; input errors (exit 1) when the
/// package path or the key cannot be read, or the file is xz/zstd/bzip2-compressed.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let key = TrustedKey::from_arg(&args.key)?;
    let v = verify_package(&args.package, &key, &Limits::default())?;
    let human = format!("verifying {}\n{}", args.package.display(), v.human());
    let v = match v.into_result() {
        Ok(v) => v,
        Err(e) => {
            // The steps go to stderr; the error (exit 4) names the first failed step, and with
            // --json the last stdout line carries the whole report (see render.rs).
            ctx.say(human.trim_end());
            return Err(e.into());
        }
    };
    let mut json = v.to_json();
    json["package"] = serde_json::json!(args.package);
    let summary = format!(
        "{human}OK: signed by ed25519 SHA256 {}; epsilon {} delta {:e}\n",
        v.key_sha256.as_deref().unwrap_or("?"),
        v.epsilon.map_or("?".into(), |e| super::render::num(e, 4)),
        v.delta.unwrap_or(f64::NAN)
    );
    Ok(Report::new(summary, json))
}
