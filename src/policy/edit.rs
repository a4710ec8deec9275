//! Editing a policy file in place (`retort policy add-partner`): comments, key order and
//! formatting of everything else are preserved (toml_edit), and the result is validated before
//! anyone writes it.

use std::path::Path;

use super::{parse, Error, Policy, Result};
use crate::keys::PublicKey;

/// A partner to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPartner {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Lowercase hex SHA-256 of the client certificate's DER.
    pub client_cert_sha256: Option<String>,
    /// The partner's Ed25519 public key.
    pub signing_key: Option<PublicKey>,
    /// Datasets it may receive (`None` = any).
    pub datasets: Option<Vec<String>>,
}

/// The SHA-256 (lowercase hex) of the DER of the first certificate in a PEM file, after checking
/// that it parses as X.509. This is what `openssl x509 -outform der | sha256sum` prints and what
/// `retort serve` compares against the presented client certificate.
///
/// # Errors
/// `policy-cert-invalid`.
pub fn cert_fingerprint(pem: &str, path: &Path) -> Result<String> {
    let bad = |why: &str| Error::BadCert {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let der = crate::keys::pem_decode(pem, "CERTIFICATE")
        .ok_or_else(|| bad("no -----BEGIN CERTIFICATE----- block with valid base64"))?;
    match x509_parser::parse_x509_certificate(&der) {
        Ok(([], _)) => {}
        Ok(_) => return Err(bad("trailing bytes after the certificate")),
        Err(e) => return Err(bad(&format!("not an X.509 certificate ({e})"))),
    }
    Ok(crate::digest::sha256_hex(&der))
}

/// Return `text` with `partner` appended as a `[[partners]]` entry, after checking that the
/// current text is a valid policy, that the name and certificate are not taken, and that the
/// result validates. `path` is for messages.
///
/// # Errors
/// Parse/validation errors of the old or new text, `policy-partner-exists`,
/// `policy-cert-in-use`.
pub fn add_partner_text(text: &str, path: &Path, partner: &NewPartner) -> Result<(String, Policy)> {
    let old = parse(text, path)?;
    if old.partner(&partner.name).is_some() {
        return Err(Error::PartnerExists {
            name: partner.name.clone(),
            path: path.to_path_buf(),
        });
    }
    if let Some(fp) = &partner.client_cert_sha256 {
        if let Some(other) = super::partner_by_cert(&old, fp) {
            return Err(Error::CertInUse {
                sha256: fp.clone(),
                other: other.name.clone(),
            });
        }
    }
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let at = super::raw::locate(text, e.span().map_or(0, |s| s.start), path);
        Error::Syntax {
            at,
            message: e.message().to_string(),
        }
    })?;
    let mut t = toml_edit::Table::new();
    t.insert("name", toml_edit::value(partner.name.as_str()));
    if let Some(d) = &partner.description {
        t.insert("description", toml_edit::value(d.as_str()));
    }
    if let Some(fp) = &partner.client_cert_sha256 {
        t.insert("client_cert_sha256", toml_edit::value(fp.as_str()));
    }
    if let Some(k) = &partner.signing_key {
        use base64::Engine;
        t.insert(
            "signing_key",
            toml_edit::value(base64::engine::general_purpose::STANDARD.encode(k.0)),
        );
    }
    if let Some(ds) = &partner.datasets {
        let mut a = toml_edit::Array::new();
        for d in ds {
            a.push(d.as_str());
        }
        t.insert("datasets", toml_edit::value(a));
    }
    // Comments after the last table belong to the document's trailing text; keep them where
    // they are (before the new entry) so the file reads in the order it was written.
    let trailing = doc.trailing().as_str().unwrap_or("").to_string();
    doc.set_trailing("");
    let sep = if trailing.is_empty() || trailing.ends_with("\n\n") {
        ""
    } else {
        "\n"
    };
    t.decor_mut().set_prefix(format!(
        "{trailing}{sep}# added by `retort policy add-partner` on {}\n",
        crate::workspace::now_rfc3339()
    ));
    match doc.get_mut("partners") {
        None => {
            let mut aot = toml_edit::ArrayOfTables::new();
            aot.push(t);
            doc.insert("partners", toml_edit::Item::ArrayOfTables(aot));
        }
        Some(toml_edit::Item::ArrayOfTables(aot)) => aot.push(t),
        Some(_) => {
            // `partners = [...]` written inline: the validated text parsed, so this is an array
            // of inline tables; append an inline table to keep the author's style.
            let arr = doc
                .get_mut("partners")
                .and_then(|i| i.as_array_mut())
                .ok_or_else(|| Error::Invalid {
                    at: super::raw::locate(text, 0, path),
                    key: "partners".into(),
                    why: "`partners` is neither [[partners]] tables nor an array".into(),
                    fix: "write each partner as a [[partners]] table".into(),
                })?;
            arr.push(t.into_inline_table());
        }
    }
    let new_text = doc.to_string();
    let new = parse(&new_text, path)?;
    Ok((new_text, new))
}

/// A policy change made in a workspace: what the audit records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    /// The active policy file.
    pub path: std::path::PathBuf,
    /// The policy's name after the change.
    pub name: String,
    /// SHA-256 of the file before.
    pub old_sha256: String,
    /// SHA-256 of the file after.
    pub new_sha256: String,
}

/// Add a partner to the workspace's active policy, as `retort policy add-partner` does: check the
/// current file and the result, append an `intent` audit record (`policy.change`, old and new
/// SHA-256), write the file atomically, then an `ok` record. For library callers such as
/// `retort demo`. The caller holds the workspace lock ([`crate::workspace::Workspace::lock`]).
///
/// # Errors
/// Policy errors of the current file or the edit (`policy-partner-exists`,
/// `policy-cert-in-use`, …), audit errors (then nothing is written), I/O.
pub fn add_partner_to_workspace(
    ws: &crate::workspace::Workspace,
    actor: &str,
    partner: &NewPartner,
) -> super::Result<PolicyChange> {
    change_workspace_policy(ws, actor, |old_text, path| {
        let (new_text, new_policy) = add_partner_text(old_text, path, partner)?;
        let details = serde_json::json!({
            "change": "add-partner",
            "partner": partner.name,
            "client_cert_sha256": partner.client_cert_sha256,
            "signing_key_sha256": partner.signing_key.map(|k| k.fingerprint()),
        });
        Ok((new_text, new_policy, details))
    })
}

/// Return `text` without the partner named `name`, after checking that the current text is a
/// valid policy that lists it, and that the result validates. Comments and the other entries
/// are kept. `path` is for messages.
///
/// # Errors
/// Parse/validation errors of the old or new text, `policy-partner-not-found`.
pub fn remove_partner_text(text: &str, path: &Path, name: &str) -> Result<(String, Policy)> {
    let old = parse(text, path)?;
    if old.partner(name).is_none() {
        return Err(Error::PartnerNotFound {
            name: name.into(),
            path: path.to_path_buf(),
        });
    }
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let at = super::raw::locate(text, e.span().map_or(0, |s| s.start), path);
        Error::Syntax {
            at,
            message: e.message().to_string(),
        }
    })?;
    let named = |n: Option<&toml_edit::Value>| n.and_then(|v| v.as_str()) == Some(name);
    let now_empty = match doc.get_mut("partners") {
        Some(toml_edit::Item::ArrayOfTables(aot)) => {
            aot.retain(|t| !named(t.get("name").and_then(|i| i.as_value())));
            aot.is_empty()
        }
        Some(item) => match item.as_array_mut() {
            Some(arr) => {
                arr.retain(|v| !named(v.as_inline_table().and_then(|t| t.get("name"))));
                arr.is_empty()
            }
            None => false,
        },
        None => false,
    };
    if now_empty {
        doc.remove("partners");
    }
    let new_text = doc.to_string();
    let new = parse(&new_text, path)?;
    if new.partner(name).is_some() {
        return Err(Error::Invalid {
            at: super::raw::locate(text, 0, path),
            key: "partners".into(),
            why: format!("partner {name:?} could not be removed from the file's layout"),
            fix: "remove its [[partners]] entry by hand and run `retort policy check`".into(),
        });
    }
    Ok((new_text, new))
}

/// Remove a partner from the workspace's active policy, as `retort policy remove-partner`
/// does, audited like [`add_partner_to_workspace`]. `retort serve` reads the partner table on
/// every request, so it stops answering that partner's certificate at once. Packages already
/// built for the partner stay in the workspace (and in the audit log). The caller holds the
/// workspace lock.
///
/// # Errors
/// `policy-partner-not-found`, policy errors of the current file, audit errors (then nothing
/// is written), I/O.
pub fn remove_partner_from_workspace(
    ws: &crate::workspace::Workspace,
    actor: &str,
    name: &str,
) -> super::Result<PolicyChange> {
    change_workspace_policy(ws, actor, |old_text, path| {
        let old = parse(old_text, path)?;
        let cert = old.partner(name).and_then(|p| p.client_cert_sha256.clone());
        let (new_text, new_policy) = remove_partner_text(old_text, path, name)?;
        let details = serde_json::json!({
            "change": "remove-partner",
            "partner": name,
            "client_cert_sha256": cert,
        });
        Ok((new_text, new_policy, details))
    })
}

/// The audited edit of the workspace's policy file: read it, let `edit` make the new text
/// (and the record's details), append an `intent` record (`policy.change`, with old and new
/// SHA-256), write the file atomically, then an `ok` record.
fn change_workspace_policy(
    ws: &crate::workspace::Workspace,
    actor: &str,
    edit: impl FnOnce(&str, &Path) -> Result<(String, Policy, serde_json::Value)>,
) -> Result<PolicyChange> {
    use crate::audit::{AuditLog, NewRecord, Outcome};
    let path = ws.policy_path();
    let old_bytes = std::fs::read(&path)
        .map_err(|e| Error::Read(crate::error::IoError::new("reading", &path, e)))?;
    let old_sha256 = crate::digest::sha256_hex(&old_bytes);
    let old_text = String::from_utf8(old_bytes).map_err(|e| Error::Syntax {
        at: super::raw::locate_bytes(e.as_bytes(), e.utf8_error().valid_up_to(), &path),
        message: "the file is not UTF-8 text".into(),
    })?;
    let (new_text, new_policy, mut details) = edit(&old_text, &path)?;
    let new_sha256 = crate::digest::sha256_hex(new_text.as_bytes());
    details["old_sha256"] = old_sha256.clone().into();
    details["new_sha256"] = new_sha256.clone().into();
    details["policy_path"] = path.display().to_string().into();
    let log = AuditLog::new(ws.audit_dir());
    // Intent first (fail closed): if the audit log cannot take it, the policy is not changed.
    log.append(
        NewRecord::new(actor, "policy.change", new_policy.name(), Outcome::Intent)
            .details(details.clone()),
    )?;
    crate::workspace::atomic_write(&path, new_text.as_bytes()).map_err(Error::Write)?;
    log.append(
        NewRecord::new(actor, "policy.change", new_policy.name(), Outcome::Ok).details(details),
    )?;
    Ok(PolicyChange {
        path,
        name: new_policy.name().to_string(),
        old_sha256,
        new_sha256,
    })
}
