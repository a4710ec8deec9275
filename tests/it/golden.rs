//! Golden CLI cases: `tests/cmd/<command>/<case>.toml`, each one command line with its exit
//! status and its stdout/stderr (trycmd's conventions), so the command-line contract — help,
//! error messages with their hints, exit codes, `--json` shapes — cannot drift unseen.
//!
//! A case:
//! ```toml
//! args = ["budget", "nonexist"]      # after `retort`; RETORT_WORKSPACE points at the fixture
//! setup = "init"                      # none (default) | init | dataset | run
//! before = [["policy", "add-partner", "p1"]]   # commands run first (each must exit 0)
//! status = 1
//! stdout = "..."                      # optional; checked when present
//! stderr = """
//! error: no dataset and no budget history named "nonexist" in the workspace
//! hint: [..]
//! """
//! json_keys = ["error.code", "error.hint"]   # optional: keys the last stdout line's JSON has
//! json = { "error.code" = "ledger-not-found" } # optional: values at those keys
//! ```
//! Wildcards: `[..]` matches anything within a line, a line `...` any number of lines.
//! `[WS]` is the workspace path, `[ROOT]` its temporary folder, `[RUN]` the fixture's run id;
//! in `args` only, `[REPO]` is the repository (for its shipped files, e.g. `policies/`).
//! Fixtures are built once per test process and copied per case.
//!
//! To (re)write the expected output of cases from what the binary prints now:
//! `RETORT_GOLDEN_BLESS=1 cargo test --test it golden` (review the diff, then put wildcards
//! where output varies: times, key fingerprints).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::util::{bin, TestWs};

/// A fixture workspace built once: its template directory and run id.
struct Fixture {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    run: Option<String>,
}

fn fixture(kind: &str) -> &'static Fixture {
    static INIT: OnceLock<Fixture> = OnceLock::new();
    static DATASET: OnceLock<Fixture> = OnceLock::new();
    static RUN: OnceLock<Fixture> = OnceLock::new();
    let build = |with_dataset: bool, with_run: bool| {
        let t = TestWs::init();
        let mut run = None;
        if with_dataset {
            let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
            retort::dataset::store(&ws, "demo", &retort::demo::generate(30, 12)).unwrap();
        }
        if with_run {
            let r = t.run(&[
                "--json",
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
            ]);
            r.expect(0);
            run = Some(r.json()["run"].as_str().unwrap().to_string());
        }
        let TestWs { dir, ws } = t;
        Fixture { _dir: dir, ws, run }
    };
    match kind {
        "init" => INIT.get_or_init(|| build(false, false)),
        "dataset" => DATASET.get_or_init(|| build(true, false)),
        "run" => RUN.get_or_init(|| build(true, true)),
        other => panic!("unknown setup {other:?} (none, init, dataset, run)"),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
    // Keep the modes (owner-only private folders): a copy made with the umask would be
    // tightened, with a warning, by the first command.
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
}

/// Does `actual` match `expected` (trycmd wildcards, see the module doc)?
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|i| lines_match(rest, &actual[i..])),
        Some((e, rest)) => {
            !actual.is_empty() && line_matches(e, actual[0]) && lines_match(rest, &actual[1..])
        }
    }
}

fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn text_matches(expected: &str, actual: &str) -> bool {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    lines_match(&e, &a)
}

/// The value at a dotted path (`error.code`) of a JSON object.
fn at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(v, |v, k| match (v, k.parse::<usize>()) {
            (serde_json::Value::Array(a), Ok(i)) => a.get(i),
            _ => v.get(k),
        })
}

struct Outcome {
    status: i32,
    stdout: String,
    stderr: String,
}

fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let case: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: not TOML: {e}", path.display()))?;
    let strings = |v: &toml::Value| -> Vec<String> {
        v.as_array()
            .expect("an array of strings")
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    };
    let args = strings(case.get("args").expect("args"));
    let setup = case.get("setup").and_then(|s| s.as_str()).unwrap_or("none");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let mut run_id = None;
    if setup != "none" {
        let f = fixture(setup);
        copy_tree(&f.ws, &ws);
        run_id = f.run.clone();
    }
    for d in case
        .get("mkdir")
        .map(strings)
        .unwrap_or_default()
        .into_iter()
    {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    if let Some(files) = case.get("files").and_then(|f| f.as_table()) {
        for (name, content) in files {
            let content = content.as_str().expect("file content is a string");
            let bytes = match content.strip_prefix("hex:") {
                Some(h) => (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect(),
                None => content.as_bytes().to_vec(),
            };
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }
    let root = dir.path().display().to_string();
    let ws_s = ws.display().to_string();
    let subst_in = |s: &str| {
        let mut s = s
            .replace("[WS]", &ws_s)
            .replace("[ROOT]", &root)
            .replace("[REPO]", env!("CARGO_MANIFEST_DIR"));
        if let Some(r) = &run_id {
            s = s.replace("[RUN]", r);
        }
        s
    };
    let exec = |args: &[String]| -> Outcome {
        let o = Command::new(bin())
            .args(args.iter().map(|a| subst_in(a)))
            .env("RETORT_WORKSPACE", &ws)
            .env_remove("RETORT_POLICY")
            .env_remove("RETORT_LOG")
            .env("COLUMNS", "100")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let subst_out = |b: &[u8]| {
            let mut s = String::from_utf8_lossy(b)
                .replace(&ws_s, "[WS]")
                .replace(&root, "[ROOT]");
            if let Some(r) = &run_id {
                s = s.replace(r.as_str(), "[RUN]");
            }
            s
        };
        Outcome {
            status: o.status.code().unwrap_or(-1),
            stdout: subst_out(&o.stdout),
            stderr: subst_out(&o.stderr),
        }
    };
    if let Some(before) = case.get("before").and_then(|b| b.as_array()) {
        for b in before {
            let o = exec(&strings(b));
            if o.status != 0 {
                return Err(format!(
                    "{}: a `before` command exited {}:\n{}",
                    path.display(),
                    o.status,
                    o.stderr
                ));
            }
        }
    }
    let out = exec(&args);
    if std::env::var_os("RETORT_GOLDEN_BLESS").is_some() {
        bless(path, &text, &out);
        return Ok(());
    }
    let mut problems = Vec::new();
    let want = case
        .get("status")
        .and_then(|s| s.as_integer())
        .expect("status") as i32;
    if out.status != want {
        problems.push(format!("exit status {} (expected {want})", out.status));
    }
    for (key, actual) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if let Some(e) = case.get(key).and_then(|s| s.as_str()) {
            if !text_matches(e, actual) {
                problems.push(format!(
                    "{key} differs\n--- expected\n{e}\n--- actual\n{actual}"
                ));
            }
        }
    }
    let keys = case.get("json_keys").map(strings).unwrap_or_default();
    let values = case.get("json").and_then(|j| j.as_table());
    if !keys.is_empty() || values.is_some() {
        let last = out.stdout.lines().last().unwrap_or("");
        match serde_json::from_str::<serde_json::Value>(last) {
            Err(e) => problems.push(format!("the last stdout line is not JSON ({e}): {last}")),
            Ok(j) => {
                for k in &keys {
                    if at(&j, k).is_none() {
                        problems.push(format!("the JSON has no {k}: {j}"));
                    }
                }
                for (k, v) in values.into_iter().flatten() {
                    let want: serde_json::Value = serde_json::to_value(v).unwrap();
                    if at(&j, k) != Some(&want) {
                        problems.push(format!("JSON {k} is {:?}, expected {want}", at(&j, k)));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} (retort {}):\n{}\n--- stdout\n{}\n--- stderr\n{}",
            path.display(),
            args.join(" "),
            problems.join("\n"),
            out.stdout,
            out.stderr
        ))
    }
}

/// Write what the binary printed into the case: the status, and stdout/stderr where the case
/// has those keys.
fn bless(path: &Path, text: &str, out: &Outcome) {
    let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
    doc["status"] = toml_edit::value(i64::from(out.status));
    for (key, actual) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if doc.get(key).is_none() {
            continue;
        }
        doc[key] = toml_edit::value(actual.as_str());
    }
    let mut s = doc.to_string();
    // Multi-line strings read better as TOML's triple-quoted literals.
    for key in ["stdout", "stderr"] {
        if let Some(v) = doc.get(key).and_then(|v| v.as_str()) {
            if v.contains('\n') && !v.contains("'''") {
                let encoded = toml_edit::value(v).to_string();
                s = s.replace(
                    &format!("{key} = {}", encoded.trim()),
                    &format!("{key} = '''\n{v}'''"),
                );
            }
        }
    }
    std::fs::write(path, s).unwrap();
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cmd");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every golden case under tests/cmd (a few cases per thread, so the run stays short).
#[test]
fn golden_cli_cases() {
    let all = cases();
    assert!(all.len() >= 40, "expected the golden cases under tests/cmd");
    let threads = 4;
    let chunks: Vec<Vec<PathBuf>> = (0..threads)
        .map(|t| all.iter().skip(t).step_by(threads).cloned().collect())
        .collect();
    // Build the fixtures first, on one thread (they run `retort` themselves).
    for kind in ["init", "dataset", "run"] {
        fixture(kind);
    }
    let failures: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = chunks
            .iter()
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .filter_map(|p| run_case(p).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} golden case(s) failed:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}

#[test]
fn wildcards_match_like_trycmd() {
    assert!(line_matches("a [..] c", "a bbb c"));
    assert!(line_matches("[..]", ""));
    assert!(!line_matches("a [..] c", "a bbb d"));
    assert!(line_matches("x[..]y[..]z", "x1y2z"));
    assert!(!line_matches("ab[..]ba", "aba"));
    assert!(text_matches("one\n...\nfour\n", "one\ntwo\nthree\nfour\n"));
    assert!(text_matches("one\n...\n", "one\n"));
    assert!(!text_matches("one\ntwo\n", "one\n"));
    assert!(!text_matches("one\n", "one\ntwo\n"));
}
