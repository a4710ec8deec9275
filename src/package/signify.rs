//! The package's signify files: `keys/retort.signify.pub` and the embedded signature
//! `SHA256SUMS.sig`, written by [`super::sign`] and read back by [`super::verify`].
//!
//! Formats (OpenBSD signify(1); minisign reads the public key too):
//! - public key: `untrusted comment: <comment>\n` + base64("Ed" ‖ keynum ‖ key) + `\n`, where
//!   keynum is the first 8 bytes of SHA-256 of the raw key ([`crate::keys::PublicKey::keynum`]);
//! - embedded signature (`signify -S -e`): `untrusted comment: <comment>\n` +
//!   base64("Ed" ‖ keynum ‖ Ed25519 signature of the message) + `\n` + the message bytes.
//!
//! Retort writes exactly one comment per file and `verify` accepts only that comment and the
//! exact key file, so every byte of both files is checked. `signify-openbsd -C -p
//! keys/retort.signify.pub -x SHA256SUMS.sig` verifies a package without Retort (the interop
//! test in tests/it/package.rs runs it when installed).

use super::dsse::decode_b64;
use crate::keys::{PublicKey, SigningKey};

/// The untrusted comment of `SHA256SUMS.sig`. Retort writes exactly this and `verify` accepts
/// only this, so every byte of the file is checked.
pub const SUMS_SIG_COMMENT: &str =
    "verify with signify-openbsd -C -p keys/retort.signify.pub -x SHA256SUMS.sig";

/// The exact bytes of `keys/retort.signify.pub` for a key (its comment names the fingerprint).
pub fn pub_file(key: &PublicKey) -> String {
    key.signify_pub(&format!("retort package key SHA256 {}", key.fingerprint()))
}

/// A parsed signify embedded signature: `untrusted comment: …\n<base64(Ed‖keynum‖sig)>\n<message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    /// The untrusted comment.
    pub comment: String,
    /// The key number (8 bytes).
    pub keynum: [u8; 8],
    /// The Ed25519 signature.
    pub sig: [u8; 64],
    /// The signed message.
    pub message: Vec<u8>,
}

/// The signify embedded signature file for `message`.
pub fn sign_embedded(key: &SigningKey, comment: &str, message: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let mut raw = b"Ed".to_vec();
    raw.extend_from_slice(&key.public().keynum());
    raw.extend_from_slice(&key.sign(message));
    let mut out = format!(
        "untrusted comment: {comment}\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
    .into_bytes();
    out.extend_from_slice(message);
    out
}

/// Parse a signify embedded signature file. Checks the layout only; the caller verifies the
/// signature over [`Embedded::message`] with the key it trusts.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_embedded(bytes: &[u8]) -> Result<Embedded, String> {
    let (first, rest) = split_line(bytes).ok_or("no comment line")?;
    let comment = std::str::from_utf8(first)
        .ok()
        .and_then(|l| l.strip_prefix("untrusted comment: "))
        .ok_or("the first line is not `untrusted comment: …`")?;
    let (b64, message) = split_line(rest).ok_or("no signature line")?;
    let raw = std::str::from_utf8(b64)
        .ok()
        .and_then(decode_b64)
        .ok_or("the signature line is not base64")?;
    if raw.len() != 74 || &raw[..2] != b"Ed" {
        return Err(
            "the signature line is not an Ed25519 signify signature (74 bytes, `Ed`)".into(),
        );
    }
    let mut keynum = [0u8; 8];
    keynum.copy_from_slice(&raw[2..10]);
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&raw[10..]);
    Ok(Embedded {
        comment: comment.to_string(),
        keynum,
        sig,
        message: message.to_vec(),
    })
}

fn split_line(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == b'\n')?;
    Some((&b[..i], &b[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signify_roundtrip_and_tamper() {
        let k = SigningKey::generate().unwrap();
        let f = sign_embedded(&k, "verify with retort.signify.pub", b"SHA256 (a) = x\n");
        let e = parse_embedded(&f).unwrap();
        assert_eq!(e.message, b"SHA256 (a) = x\n");
        assert_eq!(e.keynum, k.public().keynum());
        assert!(k.public().verify(&e.message, &e.sig));
        for bad in [
            &b""[..],
            b"untrusted comment: x\n",
            b"comment\nRWQ=\n",
            b"untrusted comment: x\nRWQ=\nmsg",
        ] {
            assert!(parse_embedded(bad).is_err());
        }
    }

    #[test]
    fn pub_file_is_a_signify_key_line_naming_the_fingerprint() {
        let k = SigningKey::generate().unwrap().public();
        let f = pub_file(&k);
        let (comment, line) = f.split_once('\n').unwrap();
        assert_eq!(
            comment,
            format!(
                "untrusted comment: retort package key SHA256 {}",
                k.fingerprint()
            )
        );
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(PublicKey::parse(&f, "pub").unwrap(), k);
    }
}
