//! Workspace, keys, audit append path, CLI conventions.

use crate::util::*;

#[test]
fn init_creates_workspace_keys_and_audits() {
    let t = TestWs::new();
    let r = t.run(&["--json", "init"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["package_key_sha256"].as_str().unwrap().len(), 64);
    for f in [
        "retort.toml",
        "keys/package.key.pem",
        "keys/audit.key.pem",
        "keys/hmac.secret",
        "policies/active.toml",
    ] {
        assert!(t.ws.join(f).exists(), "{f} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "keys/package.key.pem",
        "keys/audit.key.pem",
        "keys/hmac.secret",
    ] {
        let mode = std::fs::metadata(t.ws.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f} has mode {mode:o}");
    }
    let recs = t.audit_records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["action"], "workspace.init");
    assert_eq!(recs[0]["outcome"], "ok");
}

#[test]
fn init_refuses_to_overwrite() {
    let t = TestWs::init();
    let before = std::fs::read(t.ws.join("keys/package.key.pem")).unwrap();
    t.run(&["init"])
        .expect(1)
        .stderr_has(&["already holds a Retort workspace", "hint:"]);
    assert_eq!(
        std::fs::read(t.ws.join("keys/package.key.pem")).unwrap(),
        before
    );
}

#[test]
fn missing_workspace_names_it_and_the_fix() {
    let t = TestWs::new();
    t.run(&["keys", "show"])
        .expect(1)
        .stderr_has(&["is not a Retort workspace", "retort init"]);
}

#[test]
fn keys_export_public_is_spki_pem_matching_fingerprint() {
    let t = TestWs::init();
    let show = t.run(&["--json", "keys", "show"]);
    let fp = show.expect(0).json()["package_key"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let pem = t.run(&["keys", "export-public"]);
    pem.expect(0).stdout_has(&["-----BEGIN PUBLIC KEY-----"]);
    let k = retort::keys::PublicKey::parse(&pem.stdout, "stdout").unwrap();
    assert_eq!(k.fingerprint(), fp);
    let audit = t.run(&["keys", "export-public", "--audit"]);
    let ka = retort::keys::PublicKey::parse(&audit.stdout, "stdout").unwrap();
    assert_ne!(ka, k, "audit key must differ from the package key");
}

#[test]
fn every_command_on_a_workspace_is_audited_with_chain() {
    let t = TestWs::init();
    t.run(&["keys", "show"]).expect(0);
    t.run(&["keys", "export-public"]).expect(0);
    let recs = t.audit_records();
    assert_eq!(recs.len(), 3);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], i as u64);
    }
    assert_eq!(recs[2]["action"], "keys.export-public");
}

#[test]
fn usage_errors_exit_2() {
    retort(&["no-such-command"]).expect(2);
    retort(&["init", "--no-such-flag"]).expect(2);
}

#[test]
fn json_error_is_last_line() {
    let t = TestWs::new();
    let r = t.run(&["--json", "keys", "show"]);
    r.expect(1);
    assert_eq!(r.json()["error"]["code"], "workspace-missing");
}

/// The README's main job, end to end (small sizes so the test stays quick): every stage runs,
/// the package verifies with the pinned key, and the audit log verifies afterwards.
#[test]
fn demo_runs_end_to_end_and_everything_verifies() {
    let t = TestWs::new();
    let r = t.run(&[
        "--json",
        "demo",
        "--train-per-class",
        "40",
        "--test-per-class",
        "10",
        "--iterations",
        "20",
    ]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["dataset"], "phantoms");
    let run = j["run"].as_str().unwrap();
    let pkg = j["package"].as_str().unwrap();
    assert!(t
        .ws
        .join("runs")
        .join(run)
        .join("synthetic.parquet")
        .exists());
    assert!(t
        .ws
        .join("packages")
        .join(pkg)
        .join("provenance.intoto.jsonl")
        .exists());
    assert!(j["epsilon"].as_f64().unwrap() <= 1.0 + 1e-9);
    // A partner verifies the package with the key exported from the workspace.
    let key = t.path("retort.pub.pem");
    std::fs::write(
        &key,
        t.run(&["keys", "export-public"])
            .expect(0)
            .stdout
            .as_bytes(),
    )
    .unwrap();
    let pkg_dir = t.ws.join("packages").join(pkg);
    retort(&[
        "verify",
        pkg_dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
    .expect(0);
    // The budget shows the run, and the audit log (with its checkpoints) is intact.
    let b = t.run(&["--json", "budget", "phantoms"]);
    assert!(b.expect(0).json()["total"].as_f64().unwrap() > 0.0);
    t.run(&["audit", "verify"]).expect(0);
    let recs = t.audit_records();
    for action in [
        "workspace.init",
        "dataset.ingest",
        "distill.run",
        "package.create",
    ] {
        assert!(
            recs.iter().any(|r| r["action"] == action),
            "no {action} record"
        );
    }
}
