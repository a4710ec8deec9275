//! Ed25519 keys (package signing, audit checkpoints) and the workspace HMAC secret.
//!
//! Private keys are stored as PKCS#8 **v1** PEM (`BEGIN PRIVATE KEY`, 48-byte DER: what
//! `openssl genpkey -algorithm ed25519` writes), mode 0600, and loaded with ring's
//! `Ed25519KeyPair::from_pkcs8_maybe_unchecked` (which also accepts v2). Public keys are
//! published as SPKI PEM, as a signify/minisign line, and as the SHA-256 fingerprint of the raw
//! 32-byte key. Secret material has no `Debug`/`Display`, is zeroized on drop, and is compared in
//! constant time.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

use crate::digest::{hex, sha256_hex, unhex};
use crate::error::{Class, Coded, IoError};
use crate::workspace::atomic_write_mode;

/// PKCS#8 v1 prefix for an Ed25519 private key (followed by the 32-byte seed).
pub const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// SPKI prefix for an Ed25519 public key (followed by the 32-byte key).
pub const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Key errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Refusing to overwrite a key file.
    #[error("key file {path} already exists; refusing to overwrite it")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// A key file or text is not in a format Retort reads.
    #[error("{what}: not a valid Ed25519 key: {why}")]
    Malformed {
        /// The file or input.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// The OS random generator failed.
    #[error("the operating system's random number generator failed")]
    Rng,
    /// File-system error.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] =
        &["key-exists", "key-malformed", "rng-failed", "key-io"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Exists { .. } => "key-exists",
            Error::Malformed { .. } => "key-malformed",
            Error::Rng => "rng-failed",
            Error::Io(_) => "key-io",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Exists { .. } => "move the old key away first if you really mean to replace it (see SECURITY.md on rotation)".into(),
            Error::Malformed { .. } => "give an Ed25519 key as SPKI PEM (`openssl pkey -pubout`), a signify/minisign public key file, or a PKCS#8 PEM private key".into(),
            Error::Rng => "check the host's entropy source (/dev/urandom, getrandom)".into(),
            Error::Io(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        Class::Input
    }
}

/// Result for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::random::random_bytes;

/// `N` bytes from the OS CSPRNG ([`crate::random::try_random_bytes`]) with this module's
/// coded error.
///
/// # Errors
/// `rng-failed`.
pub fn try_random_bytes<const N: usize>() -> Result<[u8; N]> {
    crate::random::try_random_bytes().map_err(|_| Error::Rng)
}

/// An Ed25519 signing key. No `Debug`, seed zeroized on drop.
pub struct SigningKey {
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Generate a fresh key from the OS CSPRNG.
    ///
    /// # Errors
    /// `rng-failed`.
    pub fn generate() -> Result<SigningKey> {
        let seed = Zeroizing::new(try_random_bytes::<32>()?);
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; 32]) -> Result<SigningKey> {
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_V1_PREFIX);
        der.extend_from_slice(seed);
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| Error::Malformed {
                what: "generated key".into(),
                why: e.to_string(),
            })?;
        Ok(SigningKey {
            seed: Zeroizing::new(*seed),
            pair,
        })
    }

    /// Parse a PKCS#8 (v1 or v2) PEM private key.
    ///
    /// # Errors
    /// `key-malformed`.
    pub fn from_pkcs8_pem(text: &str, what: &str) -> Result<SigningKey> {
        let der =
            Zeroizing::new(
                pem_decode(text, "PRIVATE KEY").ok_or_else(|| Error::Malformed {
                    what: what.into(),
                    why: "no `-----BEGIN PRIVATE KEY-----` block".into(),
                })?,
            );
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| Error::Malformed {
                what: what.into(),
                why: format!("ring rejected the PKCS#8 document: {e}"),
            })?;
        if der.len() < 48
            || der[..16] != PKCS8_V1_PREFIX[..] && der[..5] != [0x30, 0x51, 0x02, 0x01, 0x01]
        {
            return Err(Error::Malformed {
                what: what.into(),
                why: "unexpected PKCS#8 layout".into(),
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&der[16..48]);
        Ok(SigningKey { seed, pair })
    }

    /// Load from a PEM file.
    ///
    /// # Errors
    /// I/O or `key-malformed`.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| IoError::new("reading key", path, e))?,
        );
        Self::from_pkcs8_pem(&text, &path.display().to_string())
    }

    /// Write as PKCS#8 v1 PEM with mode 0600; refuses to overwrite.
    ///
    /// # Errors
    /// `key-exists` or I/O.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        self.save_new_mode(path, 0o600)
    }

    /// [`SigningKey::save_new`] with at most `mode`, capped by the folder
    /// ([`crate::workspace::new_file_mode`]): the audit key is `0640` for the service group
    /// where `keys/` has one, `0600` otherwise.
    ///
    /// # Errors
    /// `key-exists` or I/O.
    pub fn save_new_mode(&self, path: &Path, mode: u32) -> Result<()> {
        if path.exists() {
            return Err(Error::Exists { path: path.into() });
        }
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_V1_PREFIX);
        der.extend_from_slice(&self.seed[..]);
        let pem = Zeroizing::new(pem_encode(&der, "PRIVATE KEY"));
        atomic_write_mode(path, pem.as_bytes(), mode)?;
        Ok(())
    }

    /// Sign a message (pure Ed25519, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(raw)
    }
}

/// An Ed25519 public key (raw 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// SPKI DER (44 bytes).
    pub fn spki_der(&self) -> Vec<u8> {
        let mut v = SPKI_PREFIX.to_vec();
        v.extend_from_slice(&self.0);
        v
    }
    /// SPKI PEM (`BEGIN PUBLIC KEY`), what `openssl pkey -pubout` writes.
    pub fn spki_pem(&self) -> String {
        pem_encode(&self.spki_der(), "PUBLIC KEY")
    }
    /// Lowercase hex SHA-256 of the raw 32-byte key: the fingerprint partners pin.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.0)
    }
    /// signify/minisign key number: the first 8 bytes of SHA-256 of the raw key.
    pub fn keynum(&self) -> [u8; 8] {
        let mut k = [0u8; 8];
        k.copy_from_slice(&crate::digest::sha256(&self.0)[..8]);
        k
    }
    /// A signify public key file (`untrusted comment: …` line + base64("Ed" ‖ keynum ‖ key)),
    /// which minisign also reads.
    pub fn signify_pub(&self, comment: &str) -> String {
        let mut b = b"Ed".to_vec();
        b.extend_from_slice(&self.keynum());
        b.extend_from_slice(&self.0);
        format!(
            "untrusted comment: {comment}\n{}\n",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    }
    /// Verify a pure Ed25519 signature.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }
    /// Parse an SPKI PEM, a signify/minisign public key file, or a bare base64/hex raw key.
    ///
    /// # Errors
    /// `key-malformed`.
    pub fn parse(text: &str, what: &str) -> Result<PublicKey> {
        let bad = |why: &str| Error::Malformed {
            what: what.into(),
            why: why.into(),
        };
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            let der = pem_decode(text, "PUBLIC KEY").ok_or_else(|| bad("unreadable PEM block"))?;
            if der.len() != 44 || der[..12] != SPKI_PREFIX {
                return Err(bad("the PEM holds a public key that is not Ed25519"));
            }
            let mut raw = [0u8; 32];
            raw.copy_from_slice(&der[12..]);
            return Ok(PublicKey(raw));
        }
        // signify / minisign: optional comment line, then base64 of Ed ‖ keynum8 ‖ key32.
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.starts_with("untrusted comment:") {
                continue;
            }
            if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(line) {
                if b.len() == 42 && &b[..2] == b"Ed" {
                    let mut raw = [0u8; 32];
                    raw.copy_from_slice(&b[10..]);
                    return Ok(PublicKey(raw));
                }
                if b.len() == 32 {
                    let mut raw = [0u8; 32];
                    raw.copy_from_slice(&b);
                    return Ok(PublicKey(raw));
                }
            }
            if let Some(b) = unhex(line) {
                if b.len() == 32 {
                    let mut raw = [0u8; 32];
                    raw.copy_from_slice(&b);
                    return Ok(PublicKey(raw));
                }
            }
            break;
        }
        Err(bad(
            "expected an SPKI PEM, a signify/minisign public key, or 32 raw bytes in base64/hex",
        ))
    }
}

/// The workspace HMAC secret (keyed fingerprints of private datasets). No `Debug`.
pub struct HmacSecret(Zeroizing<Vec<u8>>);

impl HmacSecret {
    /// A fresh 32-byte secret.
    ///
    /// # Errors
    /// `rng-failed`.
    pub fn generate() -> Result<HmacSecret> {
        Ok(HmacSecret(Zeroizing::new(
            try_random_bytes::<32>()?.to_vec(),
        )))
    }
    /// Load (hex in a file, mode 0600).
    ///
    /// # Errors
    /// I/O or `key-malformed`.
    pub fn load(path: &Path) -> Result<HmacSecret> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| IoError::new("reading secret", path, e))?,
        );
        let b = unhex(text.trim())
            .filter(|b| b.len() >= 32)
            .ok_or_else(|| Error::Malformed {
                what: path.display().to_string(),
                why: "expected at least 32 bytes as hex".into(),
            })?;
        Ok(HmacSecret(Zeroizing::new(b)))
    }
    /// Save with mode 0600; refuses to overwrite.
    ///
    /// # Errors
    /// `key-exists` or I/O.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        if path.exists() {
            return Err(Error::Exists { path: path.into() });
        }
        let h = Zeroizing::new(format!("{}\n", hex(&self.0)));
        atomic_write_mode(path, h.as_bytes(), 0o600)?;
        Ok(())
    }
    /// HMAC-SHA256 of `msg`, hex.
    pub fn mac_hex(&self, msg: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        hex(ring::hmac::sign(&key, msg).as_ref())
    }
    /// An incremental HMAC-SHA256 context (for fingerprinting large datasets).
    pub fn context(&self) -> ring::hmac::Context {
        ring::hmac::Context::with_key(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0))
    }
}

/// Constant-time equality for secrets and MACs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Accumulate differences without branching on secret bytes.
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The workspace's key files.
#[derive(Debug, Clone)]
pub struct KeyPaths {
    /// Package-signing private key.
    pub package_key: PathBuf,
    /// Audit-checkpoint private key.
    pub audit_key: PathBuf,
    /// HMAC secret.
    pub hmac: PathBuf,
}

impl KeyPaths {
    /// The standard locations inside `keys_dir`.
    pub fn in_dir(keys_dir: &Path) -> KeyPaths {
        KeyPaths {
            package_key: keys_dir.join("package.key.pem"),
            audit_key: keys_dir.join("audit.key.pem"),
            hmac: keys_dir.join("hmac.secret"),
        }
    }
    /// Create all three; refuses to overwrite any.
    ///
    /// # Errors
    /// `key-exists`, `rng-failed`, I/O.
    pub fn create_all(&self) -> Result<()> {
        for p in [&self.package_key, &self.audit_key, &self.hmac] {
            if p.exists() {
                return Err(Error::Exists { path: p.clone() });
            }
        }
        SigningKey::generate()?.save_new(&self.package_key)?;
        // `retort serve` (the service user) signs audit checkpoints: readable by the service
        // group where `keys/` belongs to one (crate::access), owner-only otherwise.
        SigningKey::generate()?.save_new_mode(&self.audit_key, 0o640)?;
        HmacSecret::generate()?.save_new(&self.hmac)?;
        Ok(())
    }
}

/// PEM-encode DER with the given label (64-column base64).
pub fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("invariant: base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Decode the first PEM block with this label.
pub fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_pem_roundtrip_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        let k = SigningKey::generate().unwrap();
        k.save_new(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let der = pem_decode(&text, "PRIVATE KEY").unwrap();
        assert_eq!(der.len(), 48, "PKCS#8 v1 is 48 bytes");
        assert_eq!(der[..16], PKCS8_V1_PREFIX);
        let k2 = SigningKey::load(&p).unwrap();
        assert_eq!(k.public(), k2.public());
        let sig = k2.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hellO", &sig));
        assert!(matches!(k.save_new(&p), Err(Error::Exists { .. })));
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1 TEST 1: empty message.
        let seed =
            unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let mut s = [0u8; 32];
        s.copy_from_slice(&seed);
        let k = SigningKey::from_seed(&s).unwrap();
        assert_eq!(
            hex(&k.public().0),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(hex(&k.sign(b"")), "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
    }

    #[test]
    fn public_key_formats_parse_back() {
        let k = SigningKey::generate().unwrap().public();
        assert_eq!(PublicKey::parse(&k.spki_pem(), "pem").unwrap(), k);
        assert_eq!(PublicKey::parse(&k.signify_pub("c"), "sig").unwrap(), k);
        assert_eq!(PublicKey::parse(&hex(&k.0), "hex").unwrap(), k);
        assert!(PublicKey::parse("garbage", "x").is_err());
        assert_eq!(k.spki_der().len(), 44);
    }

    #[test]
    fn hmac_secret_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h");
        let s = HmacSecret::generate().unwrap();
        s.save_new(&p).unwrap();
        let s2 = HmacSecret::load(&p).unwrap();
        assert!(ct_eq(
            s.mac_hex(b"x").as_bytes(),
            s2.mac_hex(b"x").as_bytes()
        ));
    }
}
