use std::io::Write as _;

use super::*;
use crate::audit::merkle::mth;
use crate::keys::{pem_encode, PKCS8_V1_PREFIX};

/// The RFC 8032 §7.1 TEST 1 key.
fn rfc8032_key() -> SigningKey {
    let seed =
        crate::digest::unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
    let mut der = PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    SigningKey::from_pkcs8_pem(&pem_encode(&der, "PRIVATE KEY"), "test").unwrap()
}

// Known answer from golang.org/x/mod/sumdb/note (note_test.go): the verifier key
// "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW" and its signed message.
// Checked independently with python `cryptography` while writing this test.
#[test]
fn go_sumdb_note_vector_key_id_and_signature() {
    let raw = b64()
        .decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
        .unwrap();
    assert_eq!(raw[0], 1, "algorithm byte: Ed25519");
    let key = PublicKey(raw[1..].try_into().unwrap());
    assert_eq!(hex(&key_id("PeterNeumann", &key)), "c74f20a3");
    let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    let (body, sigs) = parse_signed(text).unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(
        check_signed(&body, &sigs, "PeterNeumann", &key),
        SigCheck::Ok
    );
    let altered = body.replace("problem", "Problem");
    assert_eq!(
        check_signed(&altered, &sigs, "PeterNeumann", &key),
        SigCheck::BadSignature
    );
    assert_eq!(
        check_signed(&body, &sigs, "SomeoneElse", &key),
        SigCheck::UnknownKey
    );
}

// Key ID of the RFC 8032 test key under the reference's origin, computed independently:
// python3 -c 'import hashlib;print(hashlib.sha256(b"appliance-01.example/audit\n\x01"+bytes.fromhex("d75a98…511a")).hexdigest()[:8])'
#[test]
fn key_id_known_answer() {
    let k = rfc8032_key();
    assert_eq!(
        hex(&key_id("appliance-01.example/audit", &k.public())),
        "61383110"
    );
}

#[test]
fn sign_parse_roundtrip_and_forgeries() {
    let k = rfc8032_key();
    let root = mth(&[b"a", b"b", b"c"]);
    let text = sign_note("example/audit", 3, &root, &k);
    let expect = format!(
        "example/audit\n3\n{}\n\n\u{2014} example/audit ",
        b64().encode(root)
    );
    assert!(text.starts_with(&expect), "{text}");
    assert!(text.ends_with('\n') && text.lines().count() == 5);
    let note = parse_note(&text).unwrap();
    assert_eq!(note.size, 3);
    assert_eq!(note.root, root);
    assert_eq!(note.origin, "example/audit");
    assert_eq!(
        check_signature(&note, "example/audit", &k.public()),
        SigCheck::Ok
    );
    // The same key ID but a signature by another key: bad signature.
    let other = SigningKey::generate().unwrap();
    let mut forged = note.clone();
    forged.signatures[0].signature = other.sign(note.body.as_bytes()).to_vec();
    assert_eq!(
        check_signature(&forged, "example/audit", &k.public()),
        SigCheck::BadSignature
    );
    // Signed honestly by another key: unknown key.
    let by_other = parse_note(&sign_note("example/audit", 3, &root, &other)).unwrap();
    assert_eq!(
        check_signature(&by_other, "example/audit", &k.public()),
        SigCheck::UnknownKey
    );
    // A changed size breaks the signature.
    let bumped = parse_note(&text.replacen("\n3\n", "\n4\n", 1)).unwrap();
    assert_eq!(
        check_signature(&bumped, "example/audit", &k.public()),
        SigCheck::BadSignature
    );
}

#[test]
fn fail_malformed_notes() {
    let k = rfc8032_key();
    let good = sign_note("o/audit", 1, &mth(&[b"x"]), &k);
    for bad in [
        "",
        "o/audit\n1\n",
        good.trim_end(),
        &good.replace("\n1\n", "\n01\n"),
        &good.replace("\n1\n", "\n-1\n"),
        &good.replace("\n\n", "\n"),
        &good.replace('\u{2014}', "-"),
        "o/audit\n1\nAAAA\n\n\u{2014} o/audit AAAAAAAA\n",
        "o/audit\n99999999999999999999999\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} o/audit AAAAAAAA\n",
    ] {
        assert!(parse_note(bad).is_err(), "accepted {bad:?}");
    }
}

fn workspace() -> (tempfile::TempDir, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::create(&dir.path().join("ws"), "test-site").unwrap();
    KeyPaths::in_dir(&ws.keys_dir()).create_all().unwrap();
    (dir, ws)
}

fn append(ws: &Workspace, n: usize) {
    append_as(ws, n, "o")
}

fn append_as(ws: &Workspace, n: usize, prefix: &str) {
    let log = AuditLog::new(ws.audit_dir());
    let start = log.head().unwrap().next_seq;
    for i in 0..n as u64 {
        log.append(NewRecord::new(
            "user:t",
            "test.x",
            &format!("{prefix}{}", start + i),
            Outcome::Ok,
        ))
        .unwrap();
    }
}

fn all_lines(ws: &Workspace) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for seg in AuditLog::new(ws.audit_dir()).segments().unwrap() {
        let b = fs::read(seg).unwrap();
        v.extend(
            b.split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    v
}

#[test]
fn seal_covers_all_lines_and_extends_the_cache() {
    let (_d, ws) = workspace();
    let empty = seal(&ws).unwrap();
    assert_eq!(empty.size, 0);
    append(&ws, 5);
    let a = seal(&ws).unwrap();
    assert_eq!(a.size, 5);
    assert_eq!(a.root_hex, hex(&mth(&all_lines(&ws))));
    assert!(dir(&ws).join(STATE_FILE).exists());
    append(&ws, 4);
    let b = seal(&ws).unwrap();
    assert_eq!(b.size, 9);
    assert_eq!(b.root_hex, hex(&mth(&all_lines(&ws))));
    // Same result without the cache.
    fs::remove_file(dir(&ws).join(STATE_FILE)).unwrap();
    let c = seal(&ws).unwrap();
    assert_eq!(c, b);
    assert_eq!(latest(&ws).unwrap().unwrap(), b);
    let note = parse_note(&b.text).unwrap();
    let key = audit_key(&ws).unwrap().public();
    assert_eq!(check_signature(&note, &origin(&ws), &key), SigCheck::Ok);
    assert_eq!(list(&ws).unwrap().len(), 3);
}

#[test]
fn write_checkpoint_records_itself_and_covers_the_record() {
    let (_d, ws) = workspace();
    append(&ws, 3);
    let cp = write_checkpoint(&ws).unwrap();
    assert_eq!(cp.size, 4);
    let lines = all_lines(&ws);
    assert_eq!(lines.len(), 4);
    let rec: crate::audit::Record = serde_json::from_slice(&lines[3]).unwrap();
    assert_eq!(rec.action, "audit.checkpoint");
    assert_eq!(rec.details["size"], 4);
    assert_eq!(cp.root_hex, hex(&mth(&lines)));
}

#[test]
fn refuses_to_sign_over_a_broken_chain() {
    let (_d, ws) = workspace();
    append(&ws, 3);
    seal(&ws).unwrap();
    append(&ws, 2);
    // Edit a record after the cached boundary: the chain breaks at the next line.
    let seg = AuditLog::new(ws.audit_dir()).segments().unwrap()[0].clone();
    let text = fs::read_to_string(&seg).unwrap();
    let edited = text.replacen("\"o3\"", "\"oX\"", 1);
    assert_ne!(text, edited);
    fs::write(&seg, edited).unwrap();
    append(&ws, 1);
    let err = seal(&ws).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ChainBroken {
                code: "chain-break",
                ..
            }
        ),
        "{err}"
    );
    // An export checkpoint is refused before its record is written.
    let before = all_lines(&ws).len();
    assert!(matches!(
        write_checkpoint(&ws),
        Err(Error::ChainBroken { .. })
    ));
    assert_eq!(all_lines(&ws).len(), before);
}

#[test]
fn refuses_to_sign_a_history_inconsistent_with_its_last_checkpoint() {
    let (_d, ws) = workspace();
    append(&ws, 4);
    seal(&ws).unwrap();
    // Rewrite the whole log consistently (a new chain) and drop the cache: the new history
    // chains, but does not reproduce the signed root.
    let seg = AuditLog::new(ws.audit_dir()).segments().unwrap()[0].clone();
    fs::remove_file(&seg).unwrap();
    fs::remove_file(dir(&ws).join(STATE_FILE)).unwrap();
    append_as(&ws, 5, "rewritten");
    let err = seal(&ws).unwrap_err();
    assert!(matches!(err, Error::CheckpointInconsistent { .. }), "{err}");
}

#[test]
fn torn_tail_refuses_checkpoint() {
    let (_d, ws) = workspace();
    append(&ws, 2);
    let seg = AuditLog::new(ws.audit_dir()).segments().unwrap()[0].clone();
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"{\"seq\":2,").unwrap();
    let err = seal(&ws).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ChainBroken {
                code: "torn-tail",
                ..
            }
        ),
        "{err}"
    );
}

/// Cost of the end-of-command checkpoint on a large log, with and without the cache.
/// `cargo test --lib audit::checkpoint::tests::bench_seal -- --ignored --nocapture` (test profile: opt-level 2)
#[test]
#[ignore = "benchmark; run by hand"]
fn bench_seal() {
    let (_d, ws) = workspace();
    let n: usize = std::env::var("RETORT_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    // Write n canonical records quickly (one buffered write), then append through the API.
    let seg = ws.audit_dir().join("segment-000000.jsonl");
    let mut prev = crate::audit::record::GENESIS_PREV.to_string();
    let mut buf = Vec::new();
    for i in 0..n as u64 {
        let r = crate::audit::Record {
            seq: i,
            ts: "2026-11-29T10:00:00Z".into(),
            actor: "user:bench".into(),
            action: "keys.show".into(),
            object: format!("o{i}"),
            outcome: Outcome::Ok,
            reason: None,
            details: serde_json::json!({"dataset": "fmnist", "epsilon": 1.0}),
            prev: prev.clone(),
        };
        let line = r.canonical_line();
        prev = line_hash(line.as_bytes());
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    fs::write(&seg, &buf).unwrap();
    let t = std::time::Instant::now();
    seal(&ws).unwrap();
    let full = t.elapsed();
    append(&ws, 1);
    let t = std::time::Instant::now();
    seal(&ws).unwrap();
    let cached = t.elapsed();
    let t = std::time::Instant::now();
    let r = crate::audit::verify::verify(&ws, &Default::default()).unwrap();
    let verify = t.elapsed();
    assert!(r.intact);
    eprintln!(
        "records {} ({} MB): first seal (full read) {:.1} ms, next seal (cached) {:.2} ms, verify {:.1} ms",
        n + 1,
        buf.len() / 1_000_000,
        full.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        verify.as_secs_f64() * 1e3
    );
}
