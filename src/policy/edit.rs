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
        Ok((rest, _)) if rest.is_empty() => {}
        Ok(_) => return Err(bad("trailing bytes after the certificate")),
        Err(e) => return Err(bad(&format!("not an X.509 certificate ({e})"))),
    }
    Ok(crate::workspace::hex(
        ring::digest::digest(&ring::digest::SHA256, &der).as_ref(),
    ))
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
    t.decor_mut().set_prefix(format!(
        "\n# added by `retort policy add-partner` on {}\n",
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
