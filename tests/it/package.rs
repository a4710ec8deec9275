//! `retort package` and `retort verify`: round trip, tamper cases, hostile input, determinism,
//! and interop with standard tools (openssl, python securesystemslib, signify-openbsd, pyarrow).
//!
//! Interop tests need the tools; without them they print "SKIPPED: …" — unless `CI` is set, in
//! which case a missing tool fails the test (`.ci/run` installs them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use retort::package::dsse::{Envelope, PAYLOAD_TYPE};

use crate::util::{Run, TestWs};

const RUN_ID: &str = "run-20261129-0badcafe";
const SHAPE: [usize; 3] = [1, 4, 4];
const CLASSES: [&str; 3] = ["circle", "square", "triangle"];
const IPC: usize = 2;

/// A synthetic.parquet in the partner format (DESIGN §4).
fn synthetic_parquet() -> Vec<u8> {
    crate::util::synthetic_parquet(&CLASSES, IPC, SHAPE, 16)
}

fn png() -> Vec<u8> {
    let img =
        image::GrayImage::from_fn(12, 8, |x, y| image::Luma([((x * 20 + y * 7) % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn run_json(status: &str) -> serde_json::Value {
    serde_json::json!({
        "version": 1, "id": RUN_ID, "dataset": "phantoms",
        "dataset_fingerprint": "5f".repeat(32),
        "method": "gm", "status": status, "ipc": IPC, "epsilon": 1.0, "delta": 1e-5,
        "privacy": {"epsilon": 0.97, "epsilon_rdp": 1.02, "epsilon_pld": 0.97, "accountant": "pld",
                    "noise_multiplier": 1.1, "sampling_rate": 0.01, "steps": 500, "clip_norm": 1.0,
                    "neighbouring": "add-remove-one-image"},
        "events": [{"kind": "poisson-sampled-gaussian", "q": 0.01, "sigma": 1.1, "steps": 500}],
        "hyperparameters": {"lr_images": 0.1, "iterations": 500, "model": "convnet", "noise_seed": 1234},
        "policy": {"name": "default", "sha256": "ab".repeat(32)},
        "shape": SHAPE, "classes": CLASSES,
        "started": "2026-11-29T10:00:00Z", "finished": "2026-11-29T10:05:00Z", "seconds": 300.0,
        "retort_version": "0.1.0"
    })
}

/// An initialised workspace with partner `acme` registered and one completed, evaluated run.
fn workspace_with_run() -> TestWs {
    let t = TestWs::init();
    t.run(&["policy", "add-partner", "acme"]).expect(0);
    charge_ledger(&t);
    let rd = t.ws.join("runs").join(RUN_ID);
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::write(rd.join("run.json"), run_json("completed").to_string()).unwrap();
    std::fs::write(rd.join("synthetic.parquet"), synthetic_parquet()).unwrap();
    std::fs::write(rd.join("contact_sheet.png"), png()).unwrap();
    std::fs::write(
        rd.join("eval.json"),
        serde_json::json!({"accuracy": 0.81, "accuracy_std": 0.02, "per_class": {"circle": 0.9},
                           "baselines": {"real": 0.95, "random": 0.33}, "comment": "free text dropped"})
            .to_string(),
    )
    .unwrap();
    t
}

/// Charge the run to the dataset's ledger, as `retort distill` does before reading data.
fn charge_ledger(t: &TestWs) {
    let events: Vec<retort::dp::event::DpEvent> =
        serde_json::from_value(run_json("completed")["events"].clone()).unwrap();
    crate::util::charge(t, "phantoms", RUN_ID, &events, Some(10.0));
}

fn package(t: &TestWs, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["package", RUN_ID, "--partner", "acme", "--json"];
    args.extend_from_slice(extra);
    t.run(&args).expect(0).json()
}

fn pub_pem(t: &TestWs) -> PathBuf {
    let r = t.run(&["keys", "export-public"]);
    r.expect(0);
    let p = t.path("retort.pub.pem");
    let pem_start = r.stdout.find("-----BEGIN").expect("PEM on stdout");
    let pem_end =
        r.stdout.find("-----END PUBLIC KEY-----").unwrap() + "-----END PUBLIC KEY-----".len();
    std::fs::write(&p, format!("{}\n", &r.stdout[pem_start..pem_end])).unwrap();
    p
}

/// The package key as a signify public key file, exported from the workspace (not taken from a
/// package: `verify` refuses that).
fn pub_signify(t: &TestWs) -> PathBuf {
    let r = t.run(&["keys", "export-public", "--format", "signify", "--json"]);
    r.expect(0);
    let p = t.path("retort.signify.pub");
    std::fs::write(&p, r.json()["public_key"].as_str().unwrap()).unwrap();
    p
}

fn verify(pkg: &Path, key: &str) -> Run {
    crate::util::retort(&["verify", pkg.to_str().unwrap(), "--key", key, "--json"])
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn files_of(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, pre: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let n = format!("{pre}{}", e.file_name().to_string_lossy());
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &format!("{n}/"), out);
            } else {
                out.push(n);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, "", &mut v);
    v.sort();
    v
}

const EXPECTED_FILES: [&str; 9] = [
    "SHA256SUMS",
    "SHA256SUMS.sig",
    "audit-checkpoint.txt",
    "data/contact_sheet.png",
    "data/privacy_report.json",
    "data/synthetic.parquet",
    "keys/retort.pub.pem",
    "keys/retort.signify.pub",
    "provenance.intoto.jsonl",
];

#[test]
fn package_then_verify_with_every_key_form() {
    let t = workspace_with_run();
    let out = t.path("out");
    let j = package(&t, &["--out", out.to_str().unwrap()]);
    let id = j["package"].as_str().unwrap().to_string();
    let dir = PathBuf::from(j["path"].as_str().unwrap());
    assert_eq!(dir, t.ws.join("packages").join(&id));
    assert_eq!(files_of(&dir), EXPECTED_FILES);
    assert_eq!(files_of(&out.join(&id)), EXPECTED_FILES);

    // The index entry serve reads.
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.ws.join("packages").join(format!("{id}.meta.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["id"], id.as_str());
    assert_eq!(meta["run"], RUN_ID);
    assert_eq!(meta["partner"], "acme");
    // The stated epsilon is the accountant's composition of the run's charged events (the
    // fixture's events compose to 1.0826; its `privacy.epsilon` of 0.97 is not what is stated).
    let eps = meta["epsilon"].as_f64().unwrap();
    assert!((eps - 1.0826).abs() < 1e-3, "{eps}");
    assert_eq!(
        meta["files"].as_array().unwrap().len(),
        EXPECTED_FILES.len()
    );
    assert!(meta["size_bytes"].as_u64().unwrap() > 1000);

    // Nothing private in what the partner gets: no seed, no dataset name, eval free text dropped.
    for f in ["provenance.intoto.jsonl", "data/privacy_report.json"] {
        let mut text = std::fs::read_to_string(dir.join(f)).unwrap();
        if f.ends_with(".jsonl") {
            let env: serde_json::Value = serde_json::from_str(&text).unwrap();
            text = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(env["payload"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap();
        }
        for secret in ["noise_seed", "1234", "phantoms", "free text"] {
            assert!(!text.contains(secret), "{f} contains {secret:?}:\n{text}");
        }
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data/privacy_report.json")).unwrap())
            .unwrap();
    assert_eq!(report["guarantee"]["epsilon"], meta["epsilon"]);
    assert_eq!(report["guarantee"]["covers"], serde_json::json!(["main"]));
    assert_eq!(report["guarantee"]["neighbouring"], "add-remove-one-image");
    assert_eq!(report["mechanism"]["noise_multiplier"], 1.1);
    // The internal eval.json (exact accuracy, non-private baselines) never enters a package:
    // this run made no utility release, so the package carries no utility figures.
    // See: issue 19 (release boundary).
    assert!(report["utility"].is_null(), "{}", report["utility"]);
    let text = std::fs::read_to_string(dir.join("data/privacy_report.json")).unwrap();
    for internal in ["baselines", "random_real", "free text", "accuracy_std"] {
        assert!(!text.contains(internal), "report carries {internal:?}");
    }
    retort::package::boundary::check_package(&dir).unwrap();
    assert!(report["plain_words"].as_array().unwrap().len() >= 4);
    let b = &report["dataset_budget"];
    assert_eq!(b["charges_counted"], 1);
    assert_eq!(b["cap"], 10.0);
    let after = b["epsilon_after_this_run"].as_f64().unwrap();
    assert!(after > 0.5 && after < 5.0, "{b}");
    assert!(b["plain_sum_after_this_run"].as_f64().unwrap() >= after);
    assert!((b["remaining"].as_f64().unwrap() - (10.0 - after)).abs() < 1e-9);

    // Audit: intent before, ok after.
    let recs = t.audit_records();
    let pk: Vec<_> = recs
        .iter()
        .filter(|r| r["action"] == "package.create")
        .collect();
    assert_eq!(pk.len(), 2, "{pk:?}");
    assert_eq!(pk[0]["outcome"], "intent");
    assert_eq!(pk[1]["outcome"], "ok");

    // verify: PEM, fingerprint, signify key; directory and copy.
    let pem = pub_pem(&t);
    let signify = pub_signify(&t);
    let fp = j["key_sha256"].as_str().unwrap();
    for (pkg, key) in [
        (&dir, pem.to_str().unwrap().to_string()),
        (&dir, fp.to_string()),
        (&dir, format!("SHA256:{fp}")),
        (&out.join(&id), signify.to_str().unwrap().to_string()),
    ] {
        let r = verify(pkg, &key);
        r.expect(0);
        let v = r.json();
        assert_eq!(v["ok"], true);
        assert_eq!(v["epsilon"], meta["epsilon"]);
        assert_eq!(v["delta"], 1e-5);
        let steps = v["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 12);
        assert!(steps.iter().all(|s| s["ok"] == true), "{steps:?}");
        assert_eq!(steps[3]["step"], "signature");
    }
    // Human output: numbered steps.
    crate::util::retort(&["verify", dir.to_str().unwrap(), "--key", fp])
        .expect(0)
        .stdout_has(&["[ 1] ok", "signature", "[12] ok", "OK: signed by"]);
}

#[test]
fn tar_export_verifies_and_is_plain_posix() {
    let t = workspace_with_run();
    let out = t.path("out");
    let j = package(&t, &["--out", out.to_str().unwrap(), "--tar"]);
    let id = j["package"].as_str().unwrap();
    let tar = out.join(format!("{id}.tar"));
    assert_eq!(j["export"].as_str().unwrap(), tar.to_str().unwrap());
    let r = verify(&tar, j["key_sha256"].as_str().unwrap());
    r.expect(0);
    // `tar -t` lists it under one top-level directory.
    if let Ok(o) = Command::new("tar").arg("-tf").arg(&tar).output() {
        let list = String::from_utf8_lossy(&o.stdout);
        assert!(
            list.lines().all(|l| l.starts_with(&format!("{id}/"))),
            "{list}"
        );
        assert!(list.contains(&format!("{id}/data/synthetic.parquet")));
    }
    // The same tar gzipped (as it is often mailed) verifies as it is, streamed. See: issue 20
    let bytes = std::fs::read(&tar).unwrap();
    let gz = out.join(format!("{id}.tar.gz"));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &bytes).unwrap();
    let gz_bytes = enc.finish().unwrap();
    std::fs::write(&gz, &gz_bytes).unwrap();
    let r = verify(&gz, j["key_sha256"].as_str().unwrap());
    r.expect(0);
    assert_eq!(r.json()["ok"], true);
    // A gzipped tar cut short is a package that cannot be read: refused (exit 4), never
    // half-trusted.
    std::fs::write(&gz, &gz_bytes[..gz_bytes.len() / 2]).unwrap();
    let r = verify(&gz, j["key_sha256"].as_str().unwrap());
    r.expect(4);
    assert_eq!(r.json()["error"]["exit_code"], 4, "{}", r.stdout);
    // --tar needs --out.
    t.run(&["package", RUN_ID, "--partner", "acme", "--tar"])
        .expect(2);
}

#[test]
fn fail_partner_not_allowed_and_bad_runs() {
    let t = workspace_with_run();
    let r = t.run(&["package", RUN_ID, "--partner", "stranger", "--json"]);
    r.expect(3).stderr_has(&["stranger", "hint:"]);
    assert_eq!(r.json()["error"]["code"], "policy-partner-not-allowed");
    assert!(
        std::fs::read_dir(t.ws.join("packages"))
            .unwrap()
            .next()
            .is_none(),
        "nothing written"
    );
    let recs = t.audit_records();
    assert_eq!(recs.last().unwrap()["outcome"], "refused");

    let r = t.run(&["package", "run-nope", "--partner", "acme", "--json"]);
    r.expect(1);
    assert_eq!(r.json()["error"]["code"], "run-not-found");

    let rd = t.ws.join("runs").join(RUN_ID);
    std::fs::write(rd.join("run.json"), run_json("cancelled").to_string()).unwrap();
    let r = t.run(&["package", RUN_ID, "--partner", "acme", "--json"]);
    r.expect(1);
    assert_eq!(r.json()["error"]["code"], "run-incomplete");

    // A run the ledger does not know is never published (exit 3).
    let other = "run-20261129-uncharged";
    let od = t.ws.join("runs").join(other);
    std::fs::create_dir_all(&od).unwrap();
    let mut rj = run_json("completed");
    rj["id"] = other.into();
    std::fs::write(od.join("run.json"), rj.to_string()).unwrap();
    std::fs::write(od.join("synthetic.parquet"), synthetic_parquet()).unwrap();
    std::fs::write(od.join("contact_sheet.png"), png()).unwrap();
    let r = t.run(&["package", other, "--partner", "acme", "--json"]);
    r.expect(3);
    assert_eq!(r.json()["error"]["code"], "run-not-charged");

    std::fs::write(rd.join("run.json"), "{not json").unwrap();
    let r = t.run(&["package", RUN_ID, "--partner", "acme", "--json"]);
    r.expect(1);
    assert_eq!(r.json()["error"]["code"], "run-invalid");
    assert!(std::fs::read_dir(t.ws.join("packages"))
        .unwrap()
        .next()
        .is_none());
}

/// Re-sign the envelope of `dir` with a fresh key, optionally with another payloadType.
fn resign(dir: &Path, payload_type: Option<&str>, replace_keys: bool) {
    let p = dir.join("provenance.intoto.jsonl");
    let env = Envelope::parse_line(&std::fs::read(&p).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&env.payload)
        .unwrap();
    let k = retort::keys::SigningKey::generate().unwrap();
    let new = Envelope::sign(payload_type.unwrap_or(PAYLOAD_TYPE), &payload, &k);
    std::fs::write(&p, new.to_line()).unwrap();
    if replace_keys {
        std::fs::write(dir.join("keys/retort.pub.pem"), k.public().spki_pem()).unwrap();
        std::fs::write(
            dir.join("keys/retort.signify.pub"),
            k.public().signify_pub("x"),
        )
        .unwrap();
    }
}

/// Keep the envelope's signature but swap the payloadType.
fn swap_type(dir: &Path) {
    let p = dir.join("provenance.intoto.jsonl");
    let mut env = Envelope::parse_line(&std::fs::read(&p).unwrap()).unwrap();
    env.payload_type = "application/vnd.in-toto.provenance+json".into();
    std::fs::write(&p, env.to_line()).unwrap();
}

fn flip(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

#[test]
fn fail_every_tamper_is_detected_by_verify() {
    let t = workspace_with_run();
    let j = package(&t, &[]);
    let dir = PathBuf::from(j["path"].as_str().unwrap());
    let pem = pub_pem(&t);
    let pem = pem.to_str().unwrap();

    // (name, tamper, expected first failed step, expected code)
    type Tamper = Box<dyn Fn(&Path)>;
    let mut cases: Vec<(String, Tamper, &str, &str)> = Vec::new();
    for f in EXPECTED_FILES {
        for at in [0usize, 40, usize::MAX] {
            let (step, code) = match f {
                "data/contact_sheet.png"
                | "data/privacy_report.json"
                | "data/synthetic.parquet" => ("subjects", "verify-digest-mismatch"),
                "provenance.intoto.jsonl" => (
                    "envelope|signature",
                    "verify-envelope-malformed|verify-signature-invalid",
                ),
                "SHA256SUMS" | "SHA256SUMS.sig" => {
                    ("sums-signature", "verify-sums-signature-invalid")
                }
                "audit-checkpoint.txt" => ("sums", "verify-sums-mismatch"),
                _ => ("key", "verify-key-mismatch"),
            };
            cases.push((
                format!("flip {f}@{at}"),
                Box::new(move |d: &Path| flip(&d.join(f), at)),
                step,
                code,
            ));
        }
        let (step, code) = match f {
            f if f.starts_with("data/") => ("subjects", "verify-missing-file"),
            "provenance.intoto.jsonl" => ("envelope", "verify-missing-file"),
            "SHA256SUMS" | "SHA256SUMS.sig" => ("sums-signature", "verify-missing-file"),
            "audit-checkpoint.txt" => ("sums", "verify-missing-file"),
            _ => ("key", "verify-missing-file"),
        };
        cases.push((
            format!("remove {f}"),
            Box::new(move |d: &Path| std::fs::remove_file(d.join(f)).unwrap()),
            step,
            code,
        ));
    }
    cases.push((
        "add data/extra.csv".into(),
        Box::new(|d: &Path| std::fs::write(d.join("data/extra.csv"), "a,b\n").unwrap()),
        "unlisted",
        "verify-unlisted-file",
    ));
    cases.push((
        "add data/sub/x".into(),
        Box::new(|d: &Path| {
            std::fs::create_dir(d.join("data/sub")).unwrap();
            std::fs::write(d.join("data/sub/x"), "").unwrap()
        }),
        "unlisted",
        "verify-unlisted-file",
    ));
    cases.push((
        "add top-level file".into(),
        Box::new(|d: &Path| std::fs::write(d.join("README"), "hi").unwrap()),
        "unlisted",
        "verify-unlisted-file",
    ));
    cases.push((
        "re-signed with another key".into(),
        Box::new(|d: &Path| resign(d, None, false)),
        "signature",
        "verify-signature-invalid",
    ));
    cases.push((
        "re-signed with another key, keys replaced".into(),
        Box::new(|d: &Path| resign(d, None, true)),
        "key",
        "verify-key-mismatch",
    ));
    cases.push((
        "swapped payloadType".into(),
        Box::new(swap_type),
        "signature",
        "verify-signature-invalid",
    ));
    cases.push((
        "re-signed with swapped payloadType, keys replaced".into(),
        Box::new(|d: &Path| resign(d, Some("application/json"), true)),
        "key",
        "verify-key-mismatch",
    ));
    cases.push((
        "symlink in data".into(),
        Box::new(|d: &Path| {
            std::os::unix::fs::symlink("/etc/passwd", d.join("data/link")).unwrap()
        }),
        "read",
        "verify-unsafe-package",
    ));
    cases.push((
        "envelope not JSON".into(),
        Box::new(|d: &Path| {
            std::fs::write(d.join("provenance.intoto.jsonl"), "{\"payloadType\":").unwrap()
        }),
        "envelope",
        "verify-envelope-malformed",
    ));
    cases.push((
        "two envelope lines".into(),
        Box::new(|d: &Path| {
            let p = d.join("provenance.intoto.jsonl");
            let l = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, format!("{l}{l}")).unwrap()
        }),
        "envelope",
        "verify-envelope-malformed",
    ));

    let mut failures = Vec::new();
    for (i, (name, tamper, step, code)) in cases.iter().enumerate() {
        let copy = t.path(&format!("tamper-{i}"));
        copy_dir(&dir, &copy);
        tamper(&copy);
        let r = verify(&copy, pem);
        let v = r.json();
        let got_step = v["failed_step"].as_str().unwrap_or("none").to_string();
        let got_code = v["error"]["code"].as_str().unwrap_or("none").to_string();
        let ok = r.status == 4
            && v["ok"] == false
            && step.split('|').any(|s| s == got_step)
            && code.split('|').any(|c| c == got_code)
            && r.stderr.contains("error:")
            && r.stderr.contains("hint:");
        if !ok {
            failures.push(format!(
                "{name}: exit {} step {got_step} code {got_code} (want {step} / {code})\n{}",
                r.status, r.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} undetected or misreported:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The untouched package still verifies, and a wrong pinned key is refused.
    verify(&dir, pem).expect(0);
    let other = t.path("other.pem");
    std::fs::write(
        &other,
        retort::keys::SigningKey::generate()
            .unwrap()
            .public()
            .spki_pem(),
    )
    .unwrap();
    let r = verify(&dir, other.to_str().unwrap());
    r.expect(4);
    assert_eq!(r.json()["error"]["code"], "verify-key-mismatch");
    let r = verify(&dir, &"0".repeat(64));
    r.expect(4);
    assert_eq!(r.json()["failed_step"], "key");
}

#[test]
fn fail_verify_input_errors_are_not_verification_failures() {
    let t = TestWs::new();
    let r = verify(&t.path("nope"), &"0".repeat(64));
    r.expect(1).stderr_has(&["nope", "hint:"]);
    let r = verify(&t.path(""), "not-a-key");
    r.expect(1);
    assert_eq!(r.json()["error"]["code"], "key-malformed");
}

fn hostile_tar(name: &[u8], kind: u8, body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
    h[156] = kind;
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(body);
    v.resize(v.len().div_ceil(512) * 512 + 1024, 0);
    v
}

#[test]
fn fail_hostile_tars_refused_cleanly() {
    let t = TestWs::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("traversal", hostile_tar(b"../../evil.txt", b'0', b"pwned")),
        ("absolute", hostile_tar(b"/tmp/evil.txt", b'0', b"pwned")),
        ("symlink", {
            let mut v = hostile_tar(b"pkg/data/link", b'2', b"");
            v[157..168].copy_from_slice(b"/etc/passwd");
            v
        }),
        (
            "garbage",
            b"this is not a tar file at all, just bytes".repeat(20),
        ),
        ("huge", {
            let mut v = hostile_tar(b"pkg/data/synthetic.parquet", b'0', b"");
            v[124..136].copy_from_slice(format!("{:011o}\0", 0o77777777777u64).as_bytes());
            v[148..156].copy_from_slice(b"        ");
            let sum: u32 = v[..512].iter().map(|&b| b as u32).sum();
            v[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            v
        }),
    ];
    for (what, bytes) in cases {
        let p = t.path(&format!("{what}.tar"));
        std::fs::write(&p, bytes).unwrap();
        let r = verify(&p, &"0".repeat(64));
        r.expect(4);
        assert_eq!(
            r.json()["error"]["code"],
            "verify-unsafe-package",
            "{what}: {}",
            r.stderr
        );
    }
    assert!(!t.dir.path().join("evil.txt").exists());
    assert!(!Path::new("/tmp/evil.txt").exists());
}

#[test]
fn packaging_twice_gives_identical_signed_content_but_documented_fields() {
    let t = workspace_with_run();
    let a = PathBuf::from(package(&t, &[])["path"].as_str().unwrap());
    let b = PathBuf::from(package(&t, &[])["path"].as_str().unwrap());
    assert_ne!(a, b);
    for f in [
        "data/synthetic.parquet",
        "data/privacy_report.json",
        "data/contact_sheet.png",
        "keys/retort.pub.pem",
        "keys/retort.signify.pub",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let stmt = |d: &Path| {
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("provenance.intoto.jsonl")).unwrap())
                .unwrap();
        let mut s: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(env["payload"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        // The documented non-deterministic fields (statement.rs "Determinism").
        s["predicate"]["runDetails"]["metadata"]["retort_packagedOn"] = serde_json::Value::Null;
        s["predicate"]["runDetails"]["byproducts"] = serde_json::Value::Null;
        s
    };
    assert_eq!(stmt(&a), stmt(&b));
}

#[test]
fn library_build_is_byte_deterministic() {
    use retort::package::sign::{build_package, BuildInputs};
    let run: retort::run::RunRecord = serde_json::from_value(run_json("completed")).unwrap();
    let guarantee = retort::dp::accountant::epsilon(&run.events, 1e-5).unwrap();
    let budget = serde_json::json!({"epsilon_after_this_run": guarantee.epsilon});
    let key = retort::keys::SigningKey::generate().unwrap();
    let (syn, png) = (synthetic_parquet(), png());
    let build = || {
        build_package(&BuildInputs {
            run: &run,
            synthetic: &syn,
            contact_sheet: &png,
            utility: None,
            guarantee: &guarantee,
            budget: &budget,
            checkpoint: Some(b"origin\n1\nroot\n"),
            partner: "acme",
            workspace_id: "00ff",
            retort_digest: Some(&"1".repeat(64)),
            packaged_on: "2026-11-29T12:00:00Z",
            key: &key,
        })
    };
    let (x, y) = (build().unwrap(), build().unwrap());
    assert_eq!(x.files, y.files);
    let files: BTreeMap<_, _> = x.files.clone();
    assert!(files.contains_key("audit-checkpoint.txt"));
    let snap = retort::package::Snapshot::from_memory(&files);
    let v =
        retort::package::verify_snapshot(&snap, &retort::package::TrustedKey::Key(key.public()));
    assert!(v.ok(), "{}", v.human());
    // A checkpoint that is not the signed byproduct is caught.
    let mut files2 = files.clone();
    files2.insert("audit-checkpoint.txt".into(), b"origin\n2\nroot\n".to_vec());
    let v = retort::package::verify_snapshot(
        &retort::package::Snapshot::from_memory(&files2),
        &retort::package::TrustedKey::Key(key.public()),
    );
    assert!(!v.ok());
}

// ---------------------------------------------------------------- interop with standard tools

/// Is `tool` runnable? Without it: skip loudly, or fail under CI.
fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .map(|o| o.status.success() || !o.stderr.is_empty())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required under CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

fn python_has(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 module {module} is required under CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: python3 module {module} is not installed");
    }
    ok
}

fn sh(cwd: &Path, script: &str) -> (bool, String) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A package dir plus a tampered copy (one flipped byte of the parquet).
fn package_and_tampered() -> (TestWs, PathBuf, PathBuf) {
    let t = workspace_with_run();
    let dir = PathBuf::from(package(&t, &[])["path"].as_str().unwrap());
    let bad = t.path("tampered");
    copy_dir(&dir, &bad);
    flip(&bad.join("data/synthetic.parquet"), 100);
    (t, dir, bad)
}

/// The openssl check of partners.md: rebuild PAE from the envelope, verify with the SPKI PEM.
const OPENSSL_PAE: &str = r#"set -eu
T=$(mktemp -d)
head -n1 provenance.intoto.jsonl > "$T/env.json"
python3 -c 'import json,sys;e=json.load(open(sys.argv[1]));open(sys.argv[2],"w").write(e["payloadType"]);print(e["payload"]);' "$T/env.json" "$T/type" | base64 -d > "$T/body"
python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["signatures"][0]["sig"])' "$T/env.json" | base64 -d > "$T/sig"
{ printf 'DSSEv1 %d ' "$(wc -c < "$T/type")"; cat "$T/type"; printf ' %d ' "$(wc -c < "$T/body")"; cat "$T/body"; } > "$T/pae"
openssl pkeyutl -verify -pubin -inkey keys/retort.pub.pem -rawin -in "$T/pae" -sigfile "$T/sig"
[ "$(cat "$T/type")" = "application/vnd.in-toto+json" ]
python3 -c 'import json,sys;[print(s["digest"]["sha256"]+"  "+s["name"]) for s in json.load(open(sys.argv[1]))["subject"]]' "$T/body" > "$T/subjects"
sha256sum -c --strict "$T/subjects"
rm -rf "$T"
"#;

#[test]
fn interop_openssl_verifies_pae_signature() {
    if !have("openssl", &["version"]) || !have("python3", &["--version"]) {
        return;
    }
    let (_t, dir, bad) = package_and_tampered();
    let (ok, out) = sh(&dir, OPENSSL_PAE);
    assert!(
        ok && out.contains("Signature Verified Successfully"),
        "{out}"
    );
    let (ok, out) = sh(&bad, OPENSSL_PAE);
    assert!(
        !ok && out.contains("FAILED"),
        "tampered parquet accepted:\n{out}"
    );
    // Swapped payloadType: openssl's signature check itself fails.
    let swapped = _t.path("swapped");
    copy_dir(&dir, &swapped);
    swap_type(&swapped);
    let (ok, out) = sh(&swapped, OPENSSL_PAE);
    assert!(
        !ok && out.contains("Signature Verification Failure"),
        "{out}"
    );
}

/// The openssl + jq script of docs/partners.md, verbatim (kept in sync by
/// `partners_doc_has_the_tested_script`).
const OPENSSL_JQ: &str = r#"#!/bin/sh
# usage: verify_openssl.sh PUBKEY.pem   (run inside the package directory; openssl >= 3.0, jq, base64, sha256sum)
set -eu
PUB=$1; T=$(mktemp -d)
head -n1 provenance.intoto.jsonl > "$T/env.json"
jq -j .payloadType "$T/env.json" > "$T/type"
jq -r .payload "$T/env.json" | tr '_-' '/+' | base64 -d > "$T/body"
jq -r '.signatures[0].sig' "$T/env.json" | tr '_-' '/+' | base64 -d > "$T/sig"
{ printf 'DSSEv1 %d ' "$(wc -c < "$T/type")"; cat "$T/type"; printf ' %d ' "$(wc -c < "$T/body")"; cat "$T/body"; } > "$T/pae"
openssl pkeyutl -verify -pubin -inkey "$PUB" -rawin -in "$T/pae" -sigfile "$T/sig"
[ "$(cat "$T/type")" = "application/vnd.in-toto+json" ] || { echo "bad payloadType" >&2; exit 1; }
jq -r '.subject[] | "\(.digest.sha256)  \(.name)"' "$T/body" > "$T/subjects"
sha256sum -c --strict "$T/subjects"
[ "$(find data -type f | LC_ALL=C sort)" = "$(cut -c67- "$T/subjects" | LC_ALL=C sort)" ] || { echo "unlisted or missing file under data/" >&2; exit 1; }
rm -rf "$T"
echo "provenance OK"
"#;

#[test]
fn partners_doc_has_the_tested_script() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/partners.md"))
            .unwrap();
    assert!(
        doc.contains(OPENSSL_JQ),
        "docs/partners.md drifted from the tested openssl script"
    );
}

#[test]
fn interop_openssl_jq_script_of_partner_guide() {
    if !have("openssl", &["version"]) || !have("jq", &["--version"]) {
        return;
    }
    let (t, dir, bad) = package_and_tampered();
    let script = t.path("verify_openssl.sh");
    std::fs::write(&script, OPENSSL_JQ).unwrap();
    let run = |d: &Path, key: &Path| sh(d, &format!("sh {} {}", script.display(), key.display()));
    let key = dir.join("keys/retort.pub.pem");
    let (ok, out) = run(&dir, &key);
    assert!(
        ok && out.contains("Signature Verified Successfully") && out.contains("provenance OK"),
        "{out}"
    );
    let (ok, out) = run(&bad, &key);
    assert!(!ok && out.contains("FAILED"), "{out}");
    let added = t.path("added");
    copy_dir(&dir, &added);
    std::fs::write(added.join("data/extra.csv"), "x\n").unwrap();
    let (ok, out) = run(&added, &key);
    assert!(!ok && out.contains("unlisted"), "{out}");
    let other = t.path("other.pem");
    std::fs::write(
        &other,
        retort::keys::SigningKey::generate()
            .unwrap()
            .public()
            .spki_pem(),
    )
    .unwrap();
    let (ok, out) = run(&dir, &other);
    assert!(
        !ok && out.contains("Signature Verification Failure"),
        "{out}"
    );
}

const SSLIB: &str = r#"
import json, hashlib, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.signer import SSlibKey
from securesystemslib.dsse import Envelope
key = SSlibKey.from_crypto(load_pem_public_key(open(sys.argv[1], "rb").read()))
env = Envelope.from_dict(json.loads(open("provenance.intoto.jsonl", "rb").readline()))
env.verify([key], 1)
assert env.payload_type == "application/vnd.in-toto+json", env.payload_type
stmt = json.loads(env.payload)
for s in stmt["subject"]:
    got = hashlib.sha256(open(s["name"], "rb").read()).hexdigest()
    assert got == s["digest"]["sha256"], "digest mismatch: " + s["name"]
print("securesystemslib: OK", key.keyid)
"#;

#[test]
fn interop_securesystemslib_verifies_envelope() {
    if !have("python3", &["--version"]) || !python_has("securesystemslib") {
        return;
    }
    let (t, dir, bad) = package_and_tampered();
    let script = t.path("sslib.py");
    std::fs::write(&script, SSLIB).unwrap();
    let run = |d: &Path, key: &Path| {
        sh(
            d,
            &format!("python3 {} {}", script.display(), key.display()),
        )
    };
    let (ok, out) = run(&dir, &dir.join("keys/retort.pub.pem"));
    assert!(ok, "{out}");
    // keyid agreement: the envelope's keyid is what securesystemslib computes.
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("provenance.intoto.jsonl")).unwrap())
            .unwrap();
    assert!(
        out.contains(env["signatures"][0]["keyid"].as_str().unwrap()),
        "{out}"
    );
    let (ok, out) = run(&bad, &dir.join("keys/retort.pub.pem"));
    assert!(!ok && out.contains("digest mismatch"), "{out}");
    let other = t.path("other.pem");
    std::fs::write(
        &other,
        retort::keys::SigningKey::generate()
            .unwrap()
            .public()
            .spki_pem(),
    )
    .unwrap();
    let (ok, out) = run(&dir, &other);
    assert!(!ok && out.contains("VerificationError"), "{out}");
    let swapped = t.path("swapped");
    copy_dir(&dir, &swapped);
    swap_type(&swapped);
    let (ok, out) = run(&swapped, &dir.join("keys/retort.pub.pem"));
    assert!(!ok, "{out}");
}

#[test]
fn interop_signify_checks_sha256sums() {
    if !have("signify-openbsd", &["-V"]) {
        return;
    }
    let (t, dir, bad) = package_and_tampered();
    let cmd = "signify-openbsd -C -p keys/retort.signify.pub -x SHA256SUMS.sig";
    let (ok, out) = sh(&dir, cmd);
    assert!(
        ok && out.contains("Signature Verified") && out.contains("data/synthetic.parquet: OK"),
        "{out}"
    );
    let (ok, out) = sh(&bad, cmd);
    assert!(!ok && out.contains("data/synthetic.parquet: FAIL"), "{out}");
    // Another key: signify refuses.
    let other = t.path("other.pub");
    std::fs::write(
        &other,
        retort::keys::SigningKey::generate()
            .unwrap()
            .public()
            .signify_pub("x"),
    )
    .unwrap();
    let (ok, out) = sh(
        &dir,
        &format!(
            "signify-openbsd -C -p {} -x SHA256SUMS.sig",
            other.display()
        ),
    );
    assert!(!ok, "{out}");
}

const PYARROW: &str = r#"
import pyarrow.parquet as pq, sys
t = pq.read_table("data/synthetic.parquet")
# retort.shape is file-level key-value metadata (also on the Arrow schema when the writer sets it).
meta = dict(pq.read_metadata("data/synthetic.parquet").metadata or {})
meta.update(t.schema.metadata or {})
assert t.column_names == ["label", "label_name", "image"], t.column_names
assert meta[b"retort.shape"] == b"1,4,4", meta
c, h, w = map(int, meta[b"retort.shape"].split(b","))
assert t.num_rows == 6
assert str(t.schema.field("label").type) == "int32"
assert len(t.column("image")[0].as_py()) == c * h * w
print("pyarrow: OK", t.num_rows, "rows", (c, h, w))
"#;

#[test]
fn interop_pyarrow_loads_parquet() {
    if !have("python3", &["--version"]) || !python_has("pyarrow") {
        return;
    }
    let (t, dir, _bad) = package_and_tampered();
    let script = t.path("pa.py");
    std::fs::write(&script, PYARROW).unwrap();
    let (ok, out) = sh(&dir, &format!("python3 {}", script.display()));
    assert!(ok && out.contains("pyarrow: OK 6 rows"), "{out}");
    // A damaged parquet (truncated footer) is rejected by pyarrow.
    let broken = t.path("broken");
    copy_dir(&dir, &broken);
    let p = broken.join("data/synthetic.parquet");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 10]).unwrap();
    let (ok, out) = sh(&broken, &format!("python3 {}", script.display()));
    assert!(!ok, "{out}");
}

/// A real run, evaluated and packaged: every field of the package is either declared public or
/// released by a share its guarantee covers, the utility figures are the released (noisy) ones,
/// and the stated epsilon is the composition of the main and utility shares.
/// See: issue 19 (release boundary).
#[test]
fn real_package_passes_the_release_boundary() {
    let (t, id) = crate::util::workspace_with_real_run(12);
    t.run(&["policy", "add-partner", "acme"]).expect(0);
    let e = t.run(&[
        "eval",
        &id,
        "--json",
        "--models",
        "1",
        "--epochs",
        "2",
        "--width",
        "4",
        "--ceiling-steps",
        "2",
    ]);
    e.expect(0);
    let released = e.json()["released"].clone();
    let internal = e.json()["internal"].clone();
    let p = t.run(&["package", &id, "--partner", "acme", "--json"]);
    p.expect(0);
    let j = p.json();
    let dir = PathBuf::from(j["path"].as_str().unwrap());
    retort::package::boundary::check_package(&dir).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data/privacy_report.json")).unwrap())
            .unwrap();
    assert_eq!(
        report["guarantee"]["covers"],
        serde_json::json!(["main", "utility"])
    );
    assert_eq!(report["utility"]["accuracy"], released["accuracy"]);
    assert!(report["release_boundary"]["released"]["/utility/accuracy"].is_string());
    // The stated epsilon is the accountant's composition of both shares' events.
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.ws.join("runs").join(&id).join("run.json")).unwrap(),
    )
    .unwrap();
    let mut events: Vec<retort::dp::DpEvent> =
        serde_json::from_value(rec["events"].clone()).unwrap();
    events.extend(
        serde_json::from_value::<Vec<retort::dp::DpEvent>>(released["share"]["events"].clone())
            .unwrap(),
    );
    let want = retort::dp::accountant::epsilon(&events, 1e-5)
        .unwrap()
        .epsilon;
    let got = report["guarantee"]["epsilon"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    assert!(got <= 1.0 + 1e-9, "{got}");
    // Nothing of the internal evaluation record is in the package.
    let text = std::fs::read_to_string(dir.join("data/privacy_report.json")).unwrap();
    assert!(!text.contains("random_real") && !text.contains("all_real"));
    assert_ne!(internal["accuracy"], report["utility"]["accuracy"]);
    // The partner's verifier agrees with the stated claims.
    let fp = j["key_sha256"].as_str().unwrap();
    let v = verify(&dir, fp);
    v.expect(0);
    assert_eq!(v.json()["epsilon"], report["guarantee"]["epsilon"]);
}

/// `verify --key FILE` with a key file that lives inside the package being checked proves
/// nothing (whoever altered the package replaced that key too): refused with exit 4 and a hint
/// to pin the fingerprint, by every route to the package's own key file. A key file elsewhere
/// that equals the package's key is the normal case and passes.
#[test]
fn fail_verify_refuses_a_key_taken_from_the_package() {
    use std::os::unix::fs::symlink;
    let t = workspace_with_run();
    let out = t.path("out");
    let j = package(&t, &["--out", out.to_str().unwrap()]);
    let id = j["package"].as_str().unwrap().to_string();
    let dir = PathBuf::from(j["path"].as_str().unwrap());
    let fp = j["key_sha256"].as_str().unwrap().to_string();
    let own_pem = dir.join("keys/retort.pub.pem");

    // The same package as a tar, and that tar extracted next to it.
    let out_tar = t.path("out-tar");
    let jt = package(&t, &["--out", out_tar.to_str().unwrap(), "--tar"]);
    let tid = jt["package"].as_str().unwrap().to_string();
    let tar = out_tar.join(format!("{tid}.tar"));
    let extracted = t.path("extracted");
    tar::Archive::new(std::fs::File::open(&tar).unwrap())
        .unpack(&extracted)
        .unwrap();

    let sym_key = t.path("link.pem");
    symlink(&own_pem, &sym_key).unwrap();
    let sym_pkg = t.path("pkg-link");
    symlink(&dir, &sym_pkg).unwrap();
    let hard_key = t.path("hard.pem");
    std::fs::hard_link(&own_pem, &hard_key).unwrap();
    let dotdot = dir.join("data/../keys/retort.pub.pem");

    let cases: Vec<(&str, PathBuf, PathBuf)> = vec![
        ("the embedded PEM", dir.clone(), own_pem.clone()),
        (
            "the embedded signify key",
            dir.clone(),
            dir.join("keys/retort.signify.pub"),
        ),
        ("through ..", dir.clone(), dotdot),
        ("through a symlinked key", dir.clone(), sym_key),
        ("through a symlinked package", sym_pkg, own_pem.clone()),
        ("a hard link to the embedded key", dir.clone(), hard_key),
        (
            "the key of a copy of the package (--out)",
            dir.clone(),
            out.join(&id).join("keys/retort.pub.pem"),
        ),
        (
            "the key of the tar's extracted copy",
            tar.clone(),
            extracted.join(&tid).join("keys/retort.pub.pem"),
        ),
    ];
    for (what, pkg, key) in &cases {
        let r = verify(pkg, key.to_str().unwrap());
        r.expect(4);
        let j = r.json();
        assert_eq!(
            j["error"]["code"], "verify-key-from-package",
            "{what}: {j:#}"
        );
        let msg = j["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
            + &r.stderr;
        assert!(msg.contains("proves nothing"), "{what}: {msg}");
        let hint = j["error"]["hint"].as_str().unwrap();
        assert!(
            hint.contains("--key <fingerprint>") && hint.contains("retort keys show"),
            "{what}: {hint}"
        );
        // Nothing is verified with that key: every later step that needs it is skipped.
        let v = j["error"]["report"].clone();
        let v = if v.is_null() { j.clone() } else { v };
        assert_eq!(v["failed_step"], "key", "{what}: {v:#}");
    }
    // Human output says why and what to do.
    crate::util::retort(&[
        "verify",
        dir.to_str().unwrap(),
        "--key",
        own_pem.to_str().unwrap(),
    ])
    .expect(4)
    .stderr_has(&[
        "inside the package",
        "proves nothing",
        "hint:",
        "--key <fingerprint>",
    ]);

    // A key file elsewhere with exactly the package key's bytes is fine (the normal case), for
    // the directory and the tar; so is the pinned fingerprint.
    let mine = t.path("hospital.pub.pem");
    std::fs::copy(&own_pem, &mine).unwrap();
    verify(&dir, mine.to_str().unwrap()).expect(0);
    verify(&tar, mine.to_str().unwrap()).expect(0);
    verify(&dir, &fp).expect(0);
    let sig = t.path("hospital.signify.pub");
    std::fs::copy(dir.join("keys/retort.signify.pub"), &sig).unwrap();
    verify(&extracted.join(&tid), sig.to_str().unwrap()).expect(0);
}

// ---------------------------------------------------------------- soft labels (issue 22)

/// The fake run of [`workspace_with_run`] with a DP teacher in its plan: shares `main` and
/// `teacher`, both charged at `distill` (the run's events are theirs, in order).
fn workspace_with_teacher_run() -> TestWs {
    let t = TestWs::init();
    t.run(&["policy", "add-partner", "acme"]).expect(0);
    let mut rj = run_json("completed");
    let main = rj["events"][0].clone();
    let teacher = serde_json::json!({"kind": "poisson-sampled-gaussian", "q": 0.01, "sigma": 4.0, "steps": 100});
    rj["version"] = 2.into();
    rj["events"] = serde_json::json!([main, teacher]);
    rj["shares"] = serde_json::json!([
        {"name": "main", "stage": "distill", "fraction": 0.9, "events": [main], "epsilon": 0.97,
         "what": "the gm method's release of the training split"},
        {"name": "teacher", "stage": "distill", "fraction": 0.1, "events": [teacher], "epsilon": 0.05,
         "what": "a DP-SGD teacher trained on the training split"},
    ]);
    let events: Vec<retort::dp::DpEvent> = serde_json::from_value(rj["events"].clone()).unwrap();
    crate::util::charge(&t, "phantoms", RUN_ID, &events, Some(10.0));
    let rd = t.ws.join("runs").join(RUN_ID);
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::write(rd.join("run.json"), rj.to_string()).unwrap();
    std::fs::write(rd.join("synthetic.parquet"), synthetic_parquet()).unwrap();
    std::fs::write(rd.join("contact_sheet.png"), png()).unwrap();
    t
}

/// See: issue 22. A run whose plan has the `teacher` share packages its soft labels: the
/// column travels byte for byte, the report and the statement say the teacher share releases
/// it, the guarantee covers that share, and the package passes the release boundary and
/// `verify`.
#[test]
fn soft_labels_travel_with_the_teacher_share() {
    let t = workspace_with_teacher_run();
    let soft = crate::util::add_soft_labels(&t.ws.join("runs").join(RUN_ID));
    let j = package(&t, &[]);
    let dir = PathBuf::from(j["path"].as_str().unwrap());
    retort::package::boundary::check_package(&dir).unwrap();
    let (set, classes) =
        retort::dataset::read_synthetic_parquet(&dir.join("data/synthetic.parquet")).unwrap();
    assert_eq!(set.soft_labels.as_deref(), Some(&soft[..]));
    assert_eq!(classes, CLASSES);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data/privacy_report.json")).unwrap())
            .unwrap();
    assert_eq!(
        report["guarantee"]["covers"],
        serde_json::json!(["main", "teacher"])
    );
    let col = report["synthetic"]["columns"]["soft_label"]
        .as_str()
        .unwrap();
    assert!(col.contains("\"teacher\""), "{col}");
    let words = report["plain_words"].to_string();
    assert!(
        words.contains("soft_label") && words.contains("\\\"teacher\\\" share"),
        "{words}"
    );
    let teacher = report["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "teacher")
        .unwrap();
    assert_eq!(teacher["in_this_package"], true);
    // The stated epsilon composes both shares.
    let events: Vec<retort::dp::DpEvent> = serde_json::from_value(
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(t.ws.join("runs").join(RUN_ID).join("run.json")).unwrap(),
        )
        .unwrap()["events"]
            .clone(),
    )
    .unwrap();
    let want = retort::dp::accountant::epsilon(&events, 1e-5)
        .unwrap()
        .epsilon;
    assert!((report["guarantee"]["epsilon"].as_f64().unwrap() - want).abs() < 1e-9);
    // The signed statement names the column's share too.
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("provenance.intoto.jsonl")).unwrap())
            .unwrap();
    let stmt: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let sc = &stmt["predicate"]["buildDefinition"]["internalParameters"]["synthetic_columns"];
    assert!(
        sc["soft_label"].as_str().unwrap().contains("\"teacher\""),
        "{sc}"
    );
    assert!(sc["image"].as_str().unwrap().contains("\"main\""), "{sc}");
    verify(&dir, j["key_sha256"].as_str().unwrap()).expect(0);
}

/// See: issue 22. Soft labels in a run whose plan has no `teacher` share (here: a real run,
/// its synthetic set given soft labels through the library) are not covered by the run's
/// guarantee: `package` refuses with `package-unreleased-field` (exit 3), publishes nothing,
/// and the audit log records the refusal. Soft labels that are not probability vectors are
/// refused by the writer before they reach a run.
#[test]
fn fail_soft_labels_without_a_teacher_share() {
    let (t, id) = crate::util::workspace_with_real_run(12);
    t.run(&["policy", "add-partner", "acme"]).expect(0);
    crate::util::add_soft_labels(&t.ws.join("runs").join(&id));
    let r = t.run(&["package", &id, "--partner", "acme", "--json"]);
    r.expect(3).stderr_has(&["soft_label", "teacher", "hint:"]);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "package-unreleased-field", "{e}");
    assert!(e["hint"].as_str().unwrap().contains("teacher"), "{e}");
    let published: Vec<_> = std::fs::read_dir(t.ws.join("packages"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pkg"))
        .collect();
    assert!(published.is_empty(), "nothing published");
    let last = t.audit_records().pop().unwrap();
    assert_eq!(last["outcome"], "refused", "{last}");
    // Without the column the same run packages.
    let p = t.ws.join("runs").join(&id).join("synthetic.parquet");
    let (mut set, classes) = retort::dataset::read_synthetic_parquet(&p).unwrap();
    set.soft_labels = None;
    retort::dataset::write_synthetic_parquet(&p, &set, &classes).unwrap();
    t.run(&["package", &id, "--partner", "acme", "--json"])
        .expect(0);
}

/// See: issue 22. A real run with the DP teacher (`distill --teacher`) writes the teacher's
/// soft labels into its synthetic set and packages them: the guarantee covers the `teacher`
/// share, the column passes the release boundary and `verify`; `eval` reports the soft- and
/// hard-label figures and the teacher's own held-out accuracy.
#[test]
fn real_teacher_run_packages_its_soft_labels() {
    let t = TestWs::init();
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "demo", &retort::demo::generate(12, 6)).unwrap();
    let r = t.run(&[
        "distill",
        "--dataset",
        "demo",
        "--epsilon",
        "2",
        "--ipc",
        "2",
        "--iterations",
        "2",
        "--seed",
        "7",
        "--teacher",
        "--json",
    ]);
    r.expect(0);
    let id = r.json()["run"].as_str().unwrap().to_string();
    let rd = t.ws.join("runs").join(&id);
    let (set, classes) =
        retort::dataset::read_synthetic_parquet(&rd.join("synthetic.parquet")).unwrap();
    let soft = set.soft_labels.as_ref().expect("the teacher's soft labels");
    assert_eq!(soft.len(), set.len() * classes.len());
    for row in soft.chunks(classes.len()) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-3, "{row:?}");
    }
    let e = t.run(&[
        "eval",
        &id,
        "--json",
        "--models",
        "1",
        "--epochs",
        "3",
        "--width",
        "4",
        "--no-baselines",
    ]);
    e.expect(0);
    let ej = e.json();
    assert_eq!(ej["labels"], "soft");
    assert!(ej["accuracy_hard"].as_f64().is_some() && ej["accuracy_soft"].as_f64().is_some());
    let ta = ej["teacher"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ta));
    assert!(ej["teacher"]["epsilon"].as_f64().unwrap() > 0.0);
    t.run(&["policy", "add-partner", "acme"]).expect(0);
    let p = t.run(&["package", &id, "--partner", "acme", "--json"]);
    p.expect(0);
    let j = p.json();
    let dir = PathBuf::from(j["path"].as_str().unwrap());
    retort::package::boundary::check_package(&dir).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("data/privacy_report.json")).unwrap())
            .unwrap();
    // Evaluated first, so the utility figures travel too.
    assert_eq!(
        report["guarantee"]["covers"],
        serde_json::json!(["main", "teacher", "utility"])
    );
    assert!(report["synthetic"]["columns"]["soft_label"]
        .as_str()
        .unwrap()
        .contains("\"teacher\""));
    verify(&dir, j["key_sha256"].as_str().unwrap()).expect(0);
}
