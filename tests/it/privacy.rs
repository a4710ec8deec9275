//! `retort privacy` and `retort budget` through the real binary, and the crash-safety of the
//! ledger (a process killed between reserve and commit leaves the budget charged).

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use retort::dp::DpEvent;
use retort::ledger::Ledger;
use retort::workspace::Workspace;

use crate::util::{bin, TestWs, TEST_ACTOR};

fn reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/accounting.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn retort(args: &[&str]) -> crate::util::Run {
    let o = Command::new(bin()).args(args).output().unwrap();
    crate::util::Run {
        status: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn epsilon_command_answers_the_reference_grid() {
    let r = reference();
    let rows = r["rows"].as_array().unwrap();
    // Every third row through the binary (the library test covers every row).
    for row in rows.iter().step_by(3) {
        let f = |k: &str| row[k].as_f64().unwrap().to_string();
        let steps = row["steps"].as_u64().unwrap().to_string();
        let run = retort(&[
            "privacy",
            "epsilon",
            "--q",
            &f("q"),
            "--sigma",
            &f("sigma"),
            "--steps",
            &steps,
            "--delta",
            &f("delta"),
            "--json",
        ]);
        run.expect(0);
        let j = run.json();
        let eps = j["epsilon"].as_f64().unwrap();
        let rdp = j["epsilon_rdp"].as_f64().unwrap();
        assert!(eps <= rdp);
        assert!(matches!(j["accountant"].as_str(), Some("pld" | "rdp")));
        if let Some(pld) = row["eps_pld"].as_f64().filter(|p| *p > 1e-3) {
            let rel = (eps - pld) / pld;
            assert!((-0.005..=0.03).contains(&rel), "{row}: {eps} vs {pld}");
        }
    }
}

#[test]
fn epsilon_human_output_explains() {
    retort(&[
        "privacy", "epsilon", "--q", "0.01", "--sigma", "1.1", "--steps", "1000", "--delta", "1e-5",
    ])
    .expect(0)
    .stdout_has(&["PLD", "RDP", "one record", "delta"]);
}

#[test]
fn calibrate_command() {
    let run = retort(&[
        "privacy",
        "calibrate",
        "--epsilon",
        "1",
        "--q",
        "0.01",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
        "--json",
    ]);
    run.expect(0);
    let j = run.json();
    let s = j["sigma"].as_f64().unwrap();
    assert!((s / 1.4166 - 1.0).abs() < 0.02, "sigma {s}");
    assert!(j["epsilon_achieved"].as_f64().unwrap() <= 1.0);
}

#[test]
fn fail_invalid_privacy_values() {
    for args in [
        [
            "--q", "0.01", "--sigma", "1", "--steps", "10", "--delta", "2",
        ],
        [
            "--q", "0", "--sigma", "1", "--steps", "10", "--delta", "1e-5",
        ],
        [
            "--q", "0.01", "--sigma", "NaN", "--steps", "10", "--delta", "1e-5",
        ],
        [
            "--q",
            "0.01",
            "--sigma=-1",
            "--steps",
            "10",
            "--delta",
            "1e-5",
            "--json",
        ],
    ] {
        let mut a = vec!["privacy", "epsilon"];
        a.extend(args);
        // A value wrong in itself is a usage error (exit 2). See: issue 20
        retort(&a).expect(2).stderr_has(&["error:", "hint:"]);
    }
    retort(&[
        "privacy",
        "calibrate",
        "--epsilon=-1",
        "--q",
        "0.01",
        "--steps",
        "10",
        "--delta",
        "1e-5",
    ])
    .expect(2)
    .stderr_has(&["epsilon"]);
}

#[test]
fn budget_of_empty_and_charged_dataset() {
    let t = TestWs::init();
    t.run(&["budget"]).expect(0).stdout_has(&["No dataset"]);
    let l = crate::util::ledger_of(&t, "chest");
    l.reserve(
        TEST_ACTOR,
        "run-a",
        "distill",
        &[DpEvent::poisson_gaussian(0.01, 1.1, 1000)],
        1e-5,
        None,
    )
    .unwrap()
    .commit(TEST_ACTOR)
    .unwrap();
    let before = std::fs::read(l.path()).unwrap();
    let run = t.run(&["budget", "chest", "--json"]);
    run.expect(0);
    let j = run.json();
    assert!((j["total"].as_f64().unwrap() - 1.515).abs() < 0.03, "{j}");
    assert_eq!(j["runs"][0]["state"], "committed");
    assert_eq!(
        std::fs::read(l.path()).unwrap(),
        before,
        "budget must not change the ledger"
    );
    let policy = t.dir.path().join("p.toml");
    std::fs::write(
        &policy,
        retort::policy::template("default")
            .unwrap()
            .replace("dataset_epsilon_cap = 10.0", "dataset_epsilon_cap = 8.0"),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let run = t.run(&["--policy", p, "budget", "chest", "--json"]);
    run.expect(0);
    let j = run.json();
    assert_eq!(j["cap"], 8.0);
    let rem = j["remaining"].as_f64().unwrap();
    assert!((rem - (8.0 - j["total"].as_f64().unwrap())).abs() < 1e-12);
    t.run(&["--policy", p, "budget", "chest"])
        .expect(0)
        .stdout_has(&["run-a", "remaining", "one image"]);
}

/// Child half of `killed_between_reserve_and_commit_stays_charged`: reserve, announce, then wait
/// to be killed (never commits).
#[test]
fn helper_reserve_then_wait_to_be_killed() {
    let Ok(root) = std::env::var("RETORT_TEST_KILL_WS") else {
        return; // only meaningful as the child process of the test below
    };
    let ws = Workspace::open(Path::new(&root)).unwrap();
    let l = Ledger::open(&ws, &retort::dataset::open(&ws, "chest").unwrap().meta).unwrap();
    let r = l
        .reserve(
            TEST_ACTOR,
            "run-killed",
            "distill",
            &[DpEvent::poisson_gaussian(0.02, 1.0, 500)],
            1e-5,
            Some(50.0),
        )
        .unwrap();
    println!("RESERVED {}", r.epsilon);
    std::thread::sleep(std::time::Duration::from_secs(120));
    r.commit(TEST_ACTOR).unwrap();
}

#[test]
fn killed_between_reserve_and_commit_stays_charged() {
    let t = TestWs::init();
    crate::util::ledger_of(&t, "chest");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "privacy::helper_reserve_then_wait_to_be_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RETORT_TEST_KILL_WS", &t.ws)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(out);
    while !line.contains("RESERVED") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child ended before reserving"
        );
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no commit
    child.wait().unwrap();
    let run = t.run(&["budget", "chest", "--json"]);
    run.expect(0);
    let j = run.json();
    assert_eq!(j["runs"][0]["run"], "run-killed");
    assert_eq!(j["runs"][0]["state"], "reserved");
    assert!(j["total"].as_f64().unwrap() > 0.5, "{j}");
    assert!(j["reserved"].as_f64().unwrap() > 0.5, "{j}");
    // And the next reservation is checked against a total that includes it.
    let l = crate::util::ledger_of(&t, "chest");
    let charged = j["total"].as_f64().unwrap();
    let e = l
        .reserve(
            TEST_ACTOR,
            "run-next",
            "distill",
            &[DpEvent::poisson_gaussian(0.02, 1.0, 500)],
            1e-5,
            Some(charged + 0.01),
        )
        .unwrap_err();
    assert_eq!(retort::error::Coded::code(&e), "budget-exceeded");
}
