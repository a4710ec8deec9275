//! Roles, identity and permissions (issue 20): the audit actor is the OS identity; the
//! workspace is laid out so that private data is the owner's alone, a compliance group reads
//! the log and the budget (unlogged, saying so), a service group writes the log; the owner's
//! commands tighten private data readable beyond that, others are warned.
//!
//! Tests that need another user drop privileges with `setpriv` (the tests run as root, which
//! ignores file modes) and skip loudly where that is impossible.

use std::path::Path;

use retort::workspace::Workspace;
use serde_json::Value;

use crate::util::*;

const C: &str = "4343";
const S: &str = "4444";

/// A workspace with both groups, the dataset `phantoms` and one completed run; open to other
/// users up to the workspace folder. Returns the run id.
fn roles_ws() -> (TestWs, String) {
    let t = TestWs::new();
    t.open_to_others();
    t.run(&["init", "--compliance-group", C, "--service-group", S])
        .expect(0);
    let ws = Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "phantoms", &retort::demo::generate(8, 6)).unwrap();
    let r = t.run(&[
        "distill",
        "--dataset",
        "phantoms",
        "--epsilon",
        "1",
        "--ipc",
        "2",
        "--iterations",
        "2",
        "--seed",
        "7",
        "--json",
    ]);
    r.expect(0);
    let run = r.json()["run"].as_str().unwrap().to_string();
    (t, run)
}

fn last(t: &TestWs, action: &str) -> Value {
    t.audit_records()
        .into_iter()
        .rev()
        .find(|r| r["action"] == action)
        .unwrap_or_else(|| panic!("no {action} record"))
}

fn segments_bytes(t: &TestWs) -> Vec<Vec<u8>> {
    audit_segments(&t.ws)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Every file and folder under `dir`.
fn tree(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            out.extend(tree(&e.unwrap().path()));
        }
    }
    out
}

// See: issue 20
#[test]
fn the_audit_actor_is_the_os_identity_not_the_user_variable() {
    let t = TestWs::init();
    let mallory = [("USER", "dr.mallory"), ("LOGNAME", "dr.mallory")];
    t.run_env(&["keys", "show"], &mallory).expect(0);
    let me = retort::identity::Identity::read().actor();
    assert!(me.starts_with("user:") && !me.contains("mallory"), "{me}");
    let rec = last(&t, "keys.show");
    assert_eq!(rec["actor"], me.as_str());
    assert!(t
        .audit_records()
        .iter()
        .all(|r| !r["actor"].as_str().unwrap().contains("mallory")));
    // Shown in `audit show` and in the HTML report.
    t.run_env(&["audit", "show", "--action", "keys"], &mallory)
        .expect(0)
        .stdout_has(&[&me]);
    let html = t.path("report.html");
    t.run_env(
        &["audit", "report", "--html", html.to_str().unwrap()],
        &mallory,
    )
    .expect(0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Who acted"), "no actor section");
    assert!(page.contains(&me), "the report does not name {me}");
}

#[test]
fn fail_init_with_an_unknown_group_creates_nothing() {
    let t = TestWs::new();
    let r = t.run(&["--json", "init", "--compliance-group", "no-such-group-zz"]);
    r.expect(1).stderr_has(&["does not exist", "groupadd"]);
    assert_eq!(r.json()["error"]["code"], "access-group-unknown");
    assert!(!t.ws.exists());
    let r = t.run(&[
        "--json",
        "init",
        "--compliance-group",
        C,
        "--service-group",
        C,
    ]);
    r.expect(1);
    assert_eq!(r.json()["error"]["code"], "access-groups-same");
    assert!(!t.ws.exists());
}

#[test]
fn init_lays_out_the_permission_model_and_every_write_follows_it() {
    if !Other::available() {
        return;
    }
    let (t, run) = roles_ws();
    t.run(&["datasets", "show", "phantoms"]).expect(0);
    let (c, s) = (COMPLIANCE_GID, SERVICE_GID);
    let m = |rel: &str| mode_of(&t.ws.join(rel));
    assert_eq!(m(""), (0o2750, c), "the workspace folder is the gate");
    assert_eq!(m("retort.toml"), (0o640, c));
    assert_eq!(m("policies/active.toml"), (0o640, c));
    assert_eq!(m("keys").0, 0o2750);
    assert_eq!(m("keys").1, s);
    assert_eq!(m("keys/audit.key.pem"), (0o640, s));
    assert_eq!(m("keys/package.key.pem").0, 0o600);
    assert_eq!(m("keys/hmac.secret").0, 0o600);
    assert_eq!(m("audit"), (0o2775, s));
    assert_eq!(m("audit/checkpoints"), (0o2775, s));
    for seg in audit_segments(&t.ws) {
        assert_eq!(mode_of(&seg), (0o664, s), "{}", seg.display());
    }
    assert_eq!(m("ledger"), (0o2750, c));
    for f in std::fs::read_dir(t.ws.join("ledger")).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            assert_eq!(mode_of(&p), (0o640, c), "{}", p.display());
        }
    }
    // Private data: datasets (pixels, the real-image contact sheet), runs.
    assert!(t.ws.join("datasets/phantoms/contact_sheet.png").is_file());
    assert!(t.ws.join("runs").join(&run).join("run.json").is_file());
    for top in ["datasets", "runs"] {
        for p in tree(&t.ws.join(top)) {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode_of(&p).0 & 0o777, want, "{}", p.display());
        }
    }
    let show = t.run(&["access", "show"]);
    show.expect(0)
        .stdout_has(&["every file and folder matches the model"]);
    // A contact sheet written outside the workspace is owner-only too.
    let out = t.path("sheet.png");
    t.run(&[
        "datasets",
        "show",
        "phantoms",
        "--out",
        out.to_str().unwrap(),
    ])
    .expect(0);
    assert_eq!(mode_of(&out).0, 0o600);
}

#[test]
fn a_stranger_reads_nothing() {
    if !Other::available() {
        return;
    }
    let (t, run) = roles_ws();
    let x = Other::stranger();
    let r = t.run_as(&x, &["audit", "verify"]);
    r.expect(1).stderr_has(&["Permission denied"]);
    let ws = t.ws.to_str().unwrap();
    for p in [
        "",
        "/retort.toml",
        "/datasets/phantoms/dataset.json",
        "/keys/audit.key.pem",
    ] {
        let r = t.sh_as(&x, "/bin/cat", &[&format!("{ws}{p}")]);
        assert_ne!(r.status, 0, "a stranger read {ws}{p}");
    }
    // Even with the gate opened by mistake, private data and keys stay closed.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&t.ws, std::fs::Permissions::from_mode(0o2755)).unwrap();
    for p in [
        "datasets/phantoms/dataset.json".to_string(),
        "datasets/phantoms/train-images.u8".to_string(),
        format!("runs/{run}/run.json"),
        format!("runs/{run}/synthetic.parquet"),
        "keys/package.key.pem".into(),
        "keys/audit.key.pem".into(),
        "keys/hmac.secret".into(),
        "ledger".into(),
    ] {
        let r = t.sh_as(&x, "/bin/cat", &[&format!("{ws}/{p}")]);
        assert_ne!(r.status, 0, "a stranger read {p}");
    }
    for d in ["datasets", "runs", "keys"] {
        let r = t.sh_as(&x, "/bin/ls", &[&format!("{ws}/{d}")]);
        assert_ne!(r.status, 0, "a stranger listed {d}");
    }
}

#[test]
fn a_compliance_officer_reads_the_log_and_budget_unlogged_and_cannot_distill() {
    if !Other::available() {
        return;
    }
    let (t, _run) = roles_ws();
    let owner_total = t.run(&["--json", "budget", "phantoms"]).expect(0).json()["total"].clone();
    let before = segments_bytes(&t);
    let co = Other::compliance();
    let out = t.path("out");
    std::fs::create_dir(&out).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();

    let v = t.run_as(&co, &["audit", "verify"]);
    v.expect(0)
        .stderr_has(&["not recorded in the audit log"])
        .stdout_has(&["verdict: PASS", "ledgers: 1 checked"]);
    let j = t
        .run_as(&co, &["--json", "audit", "verify"])
        .expect(0)
        .json();
    assert!(j["unlogged"].is_string(), "{j}");
    t.run_as(&co, &["audit", "show"])
        .expect(0)
        .stdout_has(&["workspace.init", "ledger.reserve"]);
    let html = out.join("report.html");
    t.run_as(&co, &["audit", "report", "--html", html.to_str().unwrap()])
        .expect(0)
        .stderr_has(&["not recorded in the audit log"]);
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("Integrity"));
    t.run_as(&co, &["budget"])
        .expect(0)
        .stderr_has(&["not recorded in the audit log"])
        .stdout_has(&["Dataset phantoms"]);
    let b = t
        .run_as(&co, &["--json", "budget", "phantoms"])
        .expect(0)
        .json();
    assert_eq!(b["total"], owner_total);
    assert!(b["unlogged"].is_string());

    // Not the owner's commands: refused before acting, nothing logged.
    let d = t.run_as(
        &co,
        &[
            "distill",
            "--dataset",
            "phantoms",
            "--epsilon",
            "0.5",
            "--ipc",
            "1",
        ],
    );
    d.expect(1)
        .stderr_has(&["cannot write the audit log", "compliance users can run"]);
    t.run_as(&co, &["datasets", "list"]).expect(1);
    let ws = t.ws.to_str().unwrap();
    for p in ["datasets/phantoms/dataset.json", "keys/audit.key.pem"] {
        assert_ne!(
            t.sh_as(&co, "/bin/cat", &[&format!("{ws}/{p}")]).status,
            0,
            "{p}"
        );
    }
    assert_ne!(t.sh_as(&co, "/bin/ls", &[&format!("{ws}/runs")]).status, 0);
    assert_eq!(
        segments_bytes(&t),
        before,
        "a compliance read changed the log"
    );
    t.run(&["audit", "verify"]).expect(0);
}

#[test]
fn the_service_user_writes_the_log_and_reads_nothing_private() {
    if !Other::available() {
        return;
    }
    let (t, run) = roles_ws();
    let sv = Other::service();
    let r = t.run_as(&sv, &["budget"]);
    r.expect(0);
    assert!(!r.stderr.contains("not recorded"), "{}", r.stderr);
    let rec = last(&t, "budget");
    assert_eq!(rec["actor"], sv.actor().as_str());
    // Its record is sealed by a checkpoint it signed; the owner appends after it.
    let v = t.run(&["--json", "audit", "verify"]).expect(0).json();
    assert_eq!(v["unsealed_tail"], 0, "{v:#}");
    t.run(&["keys", "show"]).expect(0);
    t.run(&["audit", "verify"]).expect(0);
    let ws = t.ws.to_str().unwrap();
    assert_eq!(
        t.sh_as(&sv, "/bin/cat", &[&format!("{ws}/keys/audit.key.pem")])
            .status,
        0,
        "the service user cannot read the audit key"
    );
    for p in [
        "keys/package.key.pem".to_string(),
        "keys/hmac.secret".into(),
        "datasets/phantoms/dataset.json".into(),
        format!("runs/{run}/run.json"),
    ] {
        assert_ne!(
            t.sh_as(&sv, "/bin/cat", &[&format!("{ws}/{p}")]).status,
            0,
            "{p}"
        );
    }
}

#[test]
fn the_owner_tightens_private_data_readable_beyond_it_and_never_loosens() {
    let t = TestWs::init();
    let ws = Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "phantoms", &retort::demo::generate(3, 1)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let set = |rel: &str, m: u32| {
        std::fs::set_permissions(t.ws.join(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set("datasets", 0o755);
    set("datasets/phantoms/train-images.u8", 0o644);
    set("datasets/phantoms/dataset.json", 0o400);
    let r = t.run(&["budget"]);
    r.expect(0).stderr_has(&[
        "warning: private data was readable beyond the workspace owner; tightened 2 path(s): datasets 0755 -> 0700, datasets/phantoms/train-images.u8 0644 -> 0600",
    ]);
    assert_eq!(r.stderr.matches("warning:").count(), 1, "{}", r.stderr);
    assert_eq!(mode_of(&t.ws.join("datasets")).0 & 0o777, 0o700);
    assert_eq!(
        mode_of(&t.ws.join("datasets/phantoms/train-images.u8")).0,
        0o600
    );
    assert_eq!(
        mode_of(&t.ws.join("datasets/phantoms/dataset.json")).0,
        0o400
    );
    let rec = last(&t, "workspace.permissions");
    assert_eq!(rec["details"]["tightened"], 2);
    assert!(rec["details"]["changes"][0]
        .as_str()
        .unwrap()
        .contains("0755 -> 0700"));
    let again = t.run(&["budget"]);
    assert!(!again.stderr.contains("warning:"), "{}", again.stderr);
}

#[test]
fn others_are_warned_once_without_colour_and_change_nothing() {
    if !Other::available() {
        return;
    }
    let (t, _) = roles_ws();
    use std::os::unix::fs::PermissionsExt;
    let set = |rel: &str, m: u32| {
        std::fs::set_permissions(t.ws.join(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set("datasets", 0o755);
    set("datasets/phantoms", 0o755);
    set("datasets/phantoms/train-images.u8", 0o644);
    let r = t.run_as(&Other::compliance(), &["audit", "verify"]);
    r.expect(0).stderr_has(&[
        "warning: private data in this workspace is readable beyond its owner: datasets (0755), datasets/phantoms (0755), datasets/phantoms/train-images.u8 (0644)",
    ]);
    assert_eq!(r.stderr.matches("warning:").count(), 1, "{}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "colour codes: {:?}", r.stderr);
    // Log lines (tracing) carry no colour codes off a terminal either.
    let v = t.run_as(&Other::compliance(), &["-v", "audit", "verify"]);
    v.expect(0).stderr_has(&["step 1"]);
    assert!(!v.stderr.contains('\u{1b}'), "colour codes: {:?}", v.stderr);
    assert_eq!(
        mode_of(&t.ws.join("datasets/phantoms/train-images.u8")).0,
        0o644
    );
    // The owner's next command tightens it.
    t.run(&["budget"])
        .expect(0)
        .stderr_has(&["tightened 3 path(s)"]);
}

#[test]
fn access_set_gives_an_existing_workspace_its_groups() {
    if !Other::available() {
        return;
    }
    let t = TestWs::init();
    t.open_to_others();
    let ws = Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "phantoms", &retort::demo::generate(3, 1)).unwrap();
    let co = Other::compliance();
    t.run_as(&co, &["audit", "verify"]).expect(1);
    let r = t.run(&[
        "--json",
        "access",
        "set",
        "--compliance-group",
        C,
        "--service-group",
        S,
    ]);
    assert!(r.expect(0).json()["changed"].as_u64().unwrap() > 10);
    let rec = last(&t, "access.set");
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["details"]["compliance_group"], C);
    assert_eq!(mode_of(&t.ws), (0o2750, COMPLIANCE_GID));
    assert_eq!(
        mode_of(&t.ws.join("keys/audit.key.pem")),
        (0o640, SERVICE_GID)
    );
    assert_eq!(
        mode_of(&t.ws.join("datasets/phantoms/train-images.u8")).0,
        0o600
    );
    t.run(&["access", "show"])
        .expect(0)
        .stdout_has(&["every file and folder matches the model"]);
    t.run_as(&co, &["audit", "verify"]).expect(0);
    t.run_as(&Other::service(), &["budget"]).expect(0);
    t.run(&["audit", "verify"]).expect(0);
    // Back to the owner alone.
    t.run(&[
        "access",
        "set",
        "--no-compliance-group",
        "--no-service-group",
    ])
    .expect(0);
    assert_eq!(mode_of(&t.ws).0 & 0o777, 0o700);
    t.run_as(&co, &["audit", "verify"]).expect(1);
    let r = t.run(&[
        "--json",
        "access",
        "set",
        "--compliance-group",
        S,
        "--service-group",
        S,
    ]);
    assert_eq!(r.expect(1).json()["error"]["code"], "access-groups-same");
}

#[test]
fn fail_init_with_a_group_the_operator_is_not_in() {
    if !Other::available() {
        return;
    }
    let t = TestWs::new();
    t.open_to_others();
    let parent = t.path("home");
    std::fs::create_dir(&parent).unwrap();
    std::os::unix::fs::chown(&parent, Some(4242), Some(4242)).unwrap();
    let ws = parent.join("ws");
    let mut c = Other::stranger().command(&Other::bin());
    c.arg("--workspace")
        .arg(&ws)
        .args(["--json", "init", "--compliance-group", C]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("access-chown-failed"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("usermod -aG"));
    assert!(!ws.exists(), "a half-made workspace was left");
}
