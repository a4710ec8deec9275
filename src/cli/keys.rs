//! `retort keys`: fingerprints and public keys of the package-signing and audit keys.

use super::{Ctx, Report};
use crate::keys::{KeyPaths, SigningKey};
use crate::Result;

/// Arguments of `retort keys`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do (default: show).
    #[command(subcommand)]
    pub cmd: Option<KeysCmd>,
}

/// `keys` subcommands.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum KeysCmd {
    /// Print both keys' SHA-256 fingerprints (of the raw 32-byte public key).
    Show,
    /// Print a public key on stdout (the package-signing key unless --audit).
    ExportPublic {
        /// Export the audit-checkpoint key instead.
        #[arg(long)]
        audit: bool,
        /// Format: pem (SPKI, what openssl reads), signify (also a minisign key), hex (raw key).
        #[arg(long, default_value = "pem", value_parser = ["pem", "signify", "hex"])]
        format: String,
    },
}

/// Run `keys`.
///
/// # Errors
/// Workspace and key errors.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let cmd = args.cmd.unwrap_or(KeysCmd::Show);
    let action = match cmd {
        KeysCmd::Show => "keys.show",
        KeysCmd::ExportPublic { .. } => "keys.export-public",
    };
    let ws = ctx.open_audited(action, "keys")?;
    let kp = KeyPaths::in_dir(&ws.keys_dir());
    let pkg = SigningKey::load(&kp.package_key)?.public();
    let aud = SigningKey::load(&kp.audit_key)?.public();
    match cmd {
        KeysCmd::Show => Ok(Report::new(
            format!(
                "package-signing key  ed25519  SHA256 {}\n  file: {}\naudit key            ed25519  SHA256 {}\n  file: {}\n(fingerprint = SHA-256 of the raw 32-byte public key; partners pin the package key's fingerprint out of band)\n",
                pkg.fingerprint(),
                kp.package_key.display(),
                aud.fingerprint(),
                kp.audit_key.display()
            ),
            serde_json::json!({
                "package_key": {"algorithm": "ed25519", "sha256": pkg.fingerprint(), "path": kp.package_key},
                "audit_key": {"algorithm": "ed25519", "sha256": aud.fingerprint(), "path": kp.audit_key},
            }),
        )),
        KeysCmd::ExportPublic { audit, format } => {
            let (name, key) = if audit { ("audit", aud) } else { ("package", pkg) };
            ctx.detail("key", name);
            ctx.detail("format", format.clone());
            let text = match format.as_str() {
                "signify" => key.signify_pub(&format!("retort {name} public key {}", &key.fingerprint()[..16])),
                "hex" => format!("{}\n", crate::digest::hex(&key.0)),
                _ => key.spki_pem(),
            };
            Ok(Report::new(
                text.clone(),
                serde_json::json!({"key": name, "format": format, "public_key": text, "sha256": key.fingerprint()}),
            ))
        }
    }
}
