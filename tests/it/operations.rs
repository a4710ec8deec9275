//! Operations (issue 20, docs/operations.md): backup and restore of a workspace, how a
//! restored one is checked and repaired, and what a full disk does (the audited action is
//! refused, nothing is left half-written).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::*;

fn tar(args: &[&str], dir: &Path) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn newest_checkpoint(ws: &Path) -> PathBuf {
    let mut cps: Vec<PathBuf> = std::fs::read_dir(ws.join("audit/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("checkpoint-")
        })
        .collect();
    cps.sort();
    cps.pop().unwrap()
}

fn distill(t: &TestWs) {
    t.run(&[
        "distill",
        "--dataset",
        "demo",
        "--epsilon",
        "1",
        "--ipc",
        "2",
        "--iterations",
        "2",
        "--seed",
        "7",
    ])
    .expect(0);
}

/// As docs/operations.md §2: the whole workspace with modes; a restored workspace verifies;
/// a ledger older than its log is found (exit 4) and rebuilt from the log; a log older than
/// a checkpoint held elsewhere is found (exit 4).
#[test]
fn backup_restore_and_the_checks_of_a_restored_workspace() {
    let (t, _run) = workspace_with_real_run(6);
    let parent = t.dir.path();
    tar(&["--numeric-owner", "-cpf", "backup-1.tar", "ws"], parent);
    distill(&t);
    let total = t.run(&["--json", "budget", "demo"]).expect(0).json()["total"].clone();

    // A ledger restored from the older backup: rolled back against the log.
    let r1 = t.path("r1");
    std::fs::create_dir(&r1).unwrap();
    tar(&["--numeric-owner", "-xpf", "../backup-1.tar"], &r1);
    for e in std::fs::read_dir(r1.join("ws/ledger")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&p, t.ws.join("ledger").join(p.file_name().unwrap())).unwrap();
        }
    }
    let v = t.run(&["audit", "verify"]);
    v.expect(4).stdout_has(&["rolled-back"]);
    t.run(&["budget", "demo"])
        .expect(4)
        .stderr_has(&["retort budget rebuild demo"]);
    t.run(&["budget", "rebuild", "demo"]).expect(0);
    let after = t.run(&["--json", "budget", "demo"]).expect(0).json();
    assert_eq!(after["total"], total, "the rebuilt ledger lost a charge");
    t.run(&["audit", "verify"]).expect(0);

    // The whole older backup, restored elsewhere: intact in itself, modes kept…
    let r2 = t.path("r2");
    std::fs::create_dir(&r2).unwrap();
    tar(&["--numeric-owner", "-xpf", "../backup-1.tar"], &r2);
    let restored = TestWs {
        dir: tempfile::tempdir().unwrap(),
        ws: r2.join("ws"),
    };
    restored.run(&["audit", "verify"]).expect(0);
    for f in [
        "datasets/demo/train-images.u8",
        "keys/package.key.pem",
        "keys/hmac.secret",
    ] {
        assert_eq!(mode_of(&restored.ws.join(f)).0, 0o600, "{f}");
    }
    assert_eq!(mode_of(&restored.ws.join("datasets")).0 & 0o777, 0o700);
    // …but older than the newest checkpoint of the live log: truncated, exit 4.
    let newest = newest_checkpoint(&t.ws);
    let r = restored.run(&[
        "--json",
        "audit",
        "verify",
        "--checkpoint",
        newest.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 4, "{}", r.stderr);
    let report: Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    assert!(
        report["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["source"] == "external" && c["status"] == "truncated"),
        "{report:#}"
    );
}

/// Run retort under a file-size limit: writes past `limit` bytes fail with EFBIG (SIGXFSZ is
/// ignored, as a full disk fails a write with ENOSPC instead of killing the writer).
fn run_limited(t: &TestWs, limit: u64, args: &[&str]) -> Run {
    let out = Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec \"$@\"", "sh", "prlimit"])
        .arg(format!("--fsize={limit}:{limit}"))
        .arg(bin())
        .arg("--workspace")
        .arg(&t.ws)
        .args(args)
        .env_remove("RETORT_WORKSPACE")
        .output()
        .unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn datasets_entries(t: &TestWs) -> Vec<String> {
    std::fs::read_dir(t.ws.join("datasets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A full disk (a file-size limit here, which fails writes the same way, without root): the
/// audit record that cannot be written refuses the action before it acts, a record cut short
/// is removed again (no torn line), and a data file that cannot be written leaves nothing
/// behind and is recorded as the command's error.
#[test]
fn a_full_disk_refuses_the_action_and_leaves_nothing_half_written() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let t = TestWs::init();
    let src = t.path("src");
    retort::demo::write_png_folder(&retort::demo::generate(40, 5), &src).unwrap();
    let src = src.to_str().unwrap().to_string();
    let segment = audit_segments(&t.ws).pop().unwrap();
    let ingest = |name: &str| {
        vec!["--json", "ingest", &src, "--name", name]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // The log cannot take the intent record (no byte, then part of it): refused, untouched.
    for extra in [0u64, 10] {
        let before = std::fs::read(&segment).unwrap();
        let args = ingest("full");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run_limited(&t, before.len() as u64 + extra, &args);
        r.expect(1)
            .stderr_has(&["cannot write the audit log", "the action was refused"]);
        assert_eq!(r.json()["error"]["code"], "audit-append-failed");
        assert_eq!(
            std::fs::read(&segment).unwrap(),
            before,
            "the log changed (a torn record?) with {extra} byte(s) of room"
        );
        assert!(
            datasets_entries(&t).is_empty(),
            "{:?}",
            datasets_entries(&t)
        );
    }

    // Room for the records, not for the dataset: the write fails, nothing is published or
    // left behind, and the failure is in the log.
    let room = std::fs::metadata(&segment).unwrap().len() + 16 * 1024;
    let args = ingest("full");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_limited(&t, room, &args);
    r.expect(1)
        .stderr_has(&["File too large", "free space on the file system"]);
    assert!(
        datasets_entries(&t).is_empty(),
        "{:?}",
        datasets_entries(&t)
    );
    let recs = t.audit_records();
    let last = recs.last().unwrap();
    assert_eq!(last["action"], "dataset.ingest");
    assert_eq!(last["outcome"], "error");
    assert!(recs
        .iter()
        .any(|r| r["action"] == "dataset.ingest" && r["outcome"] == "intent"));

    // With space again: intact log, the ingest works.
    let v = t.run(&["--json", "audit", "verify"]).expect(0).json();
    assert_eq!(v["unsealed_tail"], 0, "{v:#}");
    t.run(&["ingest", &src, "--name", "full"]).expect(0);
}
