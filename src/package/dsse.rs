//! DSSE (Dead Simple Signing Envelope, protocol v1) with pure Ed25519.
//!
//! ```text
//! PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
//! ```
//! with lengths as ASCII decimal byte counts (not the pre-1.0 binary LE64). The envelope is one
//! JSON line `{"payloadType","payload","signatures":[{"keyid","sig"}]}` with standard base64
//! (padded) when written; readers accept standard or URL-safe, padded or not (spec).
//!
//! The `keyid` is the lowercase hex SHA-256 of
//! `{"keytype":"ed25519","keyval":{"public":"<hex raw key>"},"scheme":"ed25519"}`, which is what
//! python securesystemslib computes (and requires: it ignores signatures with another keyid).
//! It is a hint only: [`Envelope::verified_payload`] tries every signature with the trusted key.
//!
//! A verifier must check the signature over PAE *first* and only then parse the payload:
//! [`Envelope::verified_payload`] is the only way to get at the payload bytes.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};

/// The payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// At most this many signatures are examined (hostile envelopes may carry thousands).
pub const MAX_SIGNATURES: usize = 16;

/// Pre-authentication encoding (DSSE v1).
pub fn pae(payload_type: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + payload_type.len() + 32);
    v.extend_from_slice(b"DSSEv1 ");
    v.extend_from_slice(payload_type.len().to_string().as_bytes());
    v.push(b' ');
    v.extend_from_slice(payload_type);
    v.push(b' ');
    v.extend_from_slice(body.len().to_string().as_bytes());
    v.push(b' ');
    v.extend_from_slice(body);
    v
}

/// The securesystemslib key id of an Ed25519 public key.
pub fn keyid(key: &PublicKey) -> String {
    let doc = format!(
        r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
        crate::digest::hex(&key.0)
    );
    crate::digest::sha256_hex(doc.as_bytes())
}

/// One envelope signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Key id hint (unauthenticated).
    #[serde(default)]
    pub keyid: String,
    /// base64 of the 64-byte Ed25519 signature.
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload type (signed, inside PAE).
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// base64 of the payload bytes.
    pub payload: String,
    /// Signatures over PAE(payloadType, payload).
    pub signatures: Vec<Signature>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not one JSON line of the envelope shape.
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    /// No signature verifies with the trusted key.
    #[error("{0}")]
    BadSignature(String),
}

impl Envelope {
    /// Sign `payload` with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
        let sig = key.sign(&pae(payload_type.as_bytes(), payload));
        let b64 = base64::engine::general_purpose::STANDARD;
        Envelope {
            payload_type: payload_type.to_string(),
            payload: b64.encode(payload),
            signatures: vec![Signature {
                keyid: keyid(&key.public()),
                sig: b64.encode(sig),
            }],
        }
    }

    /// The envelope as one JSON line with a final newline (the `.jsonl` file's bytes).
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("invariant: envelope serializes");
        s.push('\n');
        s
    }

    /// Parse the contents of a `.jsonl` file holding exactly one envelope line.
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] for anything else (more lines, bad JSON, bad base64 is
    /// found later, when verifying).
    pub fn parse_line(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let bad = |s: String| EnvelopeError::Malformed(s);
        let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if line.contains(&b'\n') {
            return Err(bad(
                "the file holds more than one line; a package's provenance holds exactly one envelope".into(),
            ));
        }
        let env: Envelope =
            serde_json::from_slice(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if env.signatures.is_empty() {
            return Err(bad("the envelope has no signatures".into()));
        }
        Ok(env)
    }

    /// Check the signatures over PAE with the trusted key and return the payload bytes only if
    /// one verifies. The payload is not parsed here.
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] for undecodable base64, [`EnvelopeError::BadSignature`]
    /// when no signature verifies.
    pub fn verified_payload(&self, key: &PublicKey) -> Result<Vec<u8>, EnvelopeError> {
        let body = decode_b64(&self.payload)
            .ok_or_else(|| EnvelopeError::Malformed("payload is not base64".into()))?;
        let msg = pae(self.payload_type.as_bytes(), &body);
        let want = keyid(key);
        let mut tried = 0;
        for s in self.signatures.iter().take(MAX_SIGNATURES) {
            tried += 1;
            let Some(sig) = decode_b64(&s.sig) else {
                continue;
            };
            if sig.len() == 64 && key.verify(&msg, &sig) {
                return Ok(body);
            }
        }
        let hint = if self.signatures.iter().any(|s| s.keyid == want) {
            "a signature names the trusted key's keyid but does not verify: the payload or payloadType was changed after signing"
        } else {
            "no signature is by the trusted key"
        };
        Err(EnvelopeError::BadSignature(format!(
            "none of the {tried} signature(s) verifies over PAE with the trusted key (keyid {want}): {hint}"
        )))
    }
}

/// Decode standard or URL-safe base64, padded or not.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pae_spec_vector() {
        // DSSE protocol.md test vector.
        let v = pae(b"http://example.com/HelloWorld", b"hello world");
        assert_eq!(v, b"DSSEv1 29 http://example.com/HelloWorld 11 hello world");
        assert_eq!(pae(b"", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn pae_prefix_for_in_toto() {
        let body = vec![b'x'; 934];
        let v = pae(PAYLOAD_TYPE.as_bytes(), &body);
        // provenance.md §1.2 calls this prefix "37 bytes"; it is 43 (977 - 934), as counted here.
        assert_eq!(&v[..43], b"DSSEv1 28 application/vnd.in-toto+json 934 ");
        assert_eq!(v.len(), 977);
    }

    #[test]
    fn keyid_rfc8032_vector() {
        // RFC 8032 §7.1 TEST 1 public key; keyid computed by securesystemslib 1.x
        // (SSlibKey.from_crypto), recorded in tests/data/keyid.json.
        let raw = crate::digest::unhex(
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        )
        .unwrap();
        let mut k = [0u8; 32];
        k.copy_from_slice(&raw);
        let vec: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/keyid.json")).unwrap();
        assert_eq!(
            keyid(&PublicKey(k)),
            vec["keyid"].as_str().unwrap(),
            "keyid rule drifted from securesystemslib"
        );
    }

    #[test]
    fn key_format_vectors() {
        // tests/data/keyid.json: RFC 8032 TEST 1 key in the formats openssl / python write.
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/keyid.json")).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let sk = SigningKey::from_pkcs8_pem(&s("pkcs8_v1_pem"), "vector").unwrap();
        let pk = sk.public();
        assert_eq!(crate::digest::hex(&pk.0), s("public_hex"));
        assert_eq!(
            pk.spki_pem(),
            s("spki_pem"),
            "SPKI PEM differs from openssl's"
        );
        assert_eq!(PublicKey::parse(&s("spki_pem"), "pem").unwrap(), pk);
        assert_eq!(pk.fingerprint(), s("fingerprint_sha256"));
        let line = pk.signify_pub("c");
        assert_eq!(line.lines().nth(1).unwrap(), s("signify_pub_line"));
        assert_eq!(PublicKey::parse(&line, "signify").unwrap(), pk);
        // PKCS#8 v2 (what ring writes): seed ‖ 81 21 00 ‖ public key, 83 bytes.
        let seed = crate::digest::unhex(&s("seed_hex")).unwrap();
        let mut v2 = crate::digest::unhex("3051020101300506032b657004220420").unwrap();
        v2.extend_from_slice(&seed);
        v2.extend_from_slice(&[0x81, 0x21, 0x00]);
        v2.extend_from_slice(&pk.0);
        assert_eq!(v2.len(), 83);
        let pem = crate::keys::pem_encode(&v2, "PRIVATE KEY");
        let sk2 = SigningKey::from_pkcs8_pem(&pem, "v2").unwrap();
        assert_eq!(sk2.public(), pk);
        // Same key, same deterministic signature over the PAE spec vector.
        let msg = pae(b"http://example.com/HelloWorld", b"hello world");
        assert_eq!(sk.sign(&msg), sk2.sign(&msg));
        assert!(pk.verify(&msg, &sk.sign(&msg)));
    }

    #[test]
    fn pae_vector_file() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/dsse_pae.json")).unwrap();
        let got = pae(
            v["payload_type"].as_str().unwrap().as_bytes(),
            v["body"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(got, v["pae"].as_str().unwrap().as_bytes());
        // ring's signature equals openssl's, byte for byte (Ed25519 is deterministic).
        let k: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/keyid.json")).unwrap();
        let sk = SigningKey::from_pkcs8_pem(k["pkcs8_v1_pem"].as_str().unwrap(), "v").unwrap();
        assert_eq!(
            crate::digest::hex(&sk.sign(&got)),
            v["ed25519_sig_hex"].as_str().unwrap()
        );
    }

    #[test]
    fn fail_wrong_key_and_swapped_type() {
        let k = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let env = Envelope::sign(PAYLOAD_TYPE, b"{}", &k);
        assert_eq!(env.verified_payload(&k.public()).unwrap(), b"{}");
        assert!(matches!(
            env.verified_payload(&other.public()),
            Err(EnvelopeError::BadSignature(_))
        ));
        let mut swapped = env.clone();
        swapped.payload_type = "application/json".into();
        assert!(swapped.verified_payload(&k.public()).is_err());
        let mut bad_b64 = env.clone();
        bad_b64.payload = "!!!".into();
        assert!(matches!(
            bad_b64.verified_payload(&k.public()),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn fail_parse_hostile_lines() {
        for bad in [
            &b""[..],
            b"{}",
            b"null",
            b"{\"payloadType\":\"a\",\"payload\":\"\",\"signatures\":[]}",
            b"{\"payloadType\":\"a\",\"payload\":\"\",\"signatures\":[{\"sig\":\"\"}]}\n{}",
            b"\xff\xfe",
        ] {
            assert!(Envelope::parse_line(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn url_safe_unpadded_accepted() {
        let k = SigningKey::generate().unwrap();
        let mut env = Envelope::sign(PAYLOAD_TYPE, b"\xfb\xff payload?", &k);
        env.payload = env.payload.replace('+', "-").replace('/', "_");
        env.payload = env.payload.trim_end_matches('=').to_string();
        env.signatures[0].sig = env.signatures[0].sig.replace('+', "-").replace('/', "_");
        assert_eq!(
            env.verified_payload(&k.public()).unwrap(),
            b"\xfb\xff payload?"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn envelope_roundtrip(payload in proptest::collection::vec(any::<u8>(), 0..512),
                              ptype in "[a-z/+.-]{1,40}") {
            let k = SigningKey::generate().unwrap();
            let env = Envelope::sign(&ptype, &payload, &k);
            let line = env.to_line();
            prop_assert_eq!(line.matches('\n').count(), 1);
            let back = Envelope::parse_line(line.as_bytes()).unwrap();
            prop_assert_eq!(&back, &env);
            prop_assert_eq!(back.verified_payload(&k.public()).unwrap(), payload.clone());
            // Any flipped byte of the payload breaks the signature.
            if !payload.is_empty() {
                let mut p = payload.clone();
                p[0] ^= 1;
                let mut t = back.clone();
                t.payload = base64::engine::general_purpose::STANDARD.encode(&p);
                prop_assert!(t.verified_payload(&k.public()).is_err());
            }
        }

        #[test]
        fn pae_lengths_are_byte_counts(t in proptest::collection::vec(any::<u8>(), 0..64),
                                       b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let v = pae(&t, &b);
            let head = format!("DSSEv1 {} ", t.len());
            prop_assert!(v.starts_with(head.as_bytes()));
            prop_assert!(v.ends_with(&b));
            prop_assert_eq!(v.len(), head.len() + t.len() + 1 + b.len().to_string().len() + 1 + b.len());
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let k = PublicKey([3u8; 32]);
            if let Ok(e) = Envelope::parse_line(&bytes) {
                let _ = e.verified_payload(&k);
            }
        }
    }
}
