//! Test helpers: a temporary workspace and a runner for the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `retort` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_retort"))
}

/// The shared test data folder (`../shared/data` from the repo root), if present.
pub fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    p.is_dir().then_some(p)
}

/// Skip (loudly) when the shared data folder is absent.
#[macro_export]
macro_rules! need_shared_data {
    () => {
        match $crate::util::shared_data() {
            Some(p) => p,
            None => {
                eprintln!("SKIPPED: ../shared/data is absent");
                return;
            }
        }
    };
}

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// The last stdout line parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        let last = self
            .stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no stdout; stderr:\n{}", self.stderr));
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "last line is not JSON ({e}): {last}\nstderr:\n{}",
                self.stderr
            )
        })
    }
    /// Assert the exit status, printing everything on mismatch.
    #[track_caller]
    pub fn expect(&self, status: i32) -> &Run {
        assert_eq!(
            self.status, status,
            "expected exit {status}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        );
        self
    }
    /// Assert stderr contains all of these.
    #[track_caller]
    pub fn stderr_has(&self, parts: &[&str]) -> &Run {
        for p in parts {
            assert!(
                self.stderr.contains(p),
                "stderr lacks {p:?}:\n{}",
                self.stderr
            );
        }
        self
    }
    /// Assert stdout contains all of these.
    #[track_caller]
    pub fn stdout_has(&self, parts: &[&str]) -> &Run {
        for p in parts {
            assert!(
                self.stdout.contains(p),
                "stdout lacks {p:?}:\n{}",
                self.stdout
            );
        }
        self
    }
}

/// A temporary directory with a workspace path inside it (not yet created).
pub struct TestWs {
    pub dir: tempfile::TempDir,
    pub ws: PathBuf,
}

impl TestWs {
    /// A fresh temp dir; the workspace is `<tmp>/ws` and does not exist yet.
    pub fn new() -> TestWs {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        TestWs { dir, ws }
    }
    /// A fresh temp dir with an initialised workspace.
    pub fn init() -> TestWs {
        let t = TestWs::new();
        t.run(&["init"]).expect(0);
        t
    }
    /// Run `retort --workspace <ws> args…`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }
    /// Run with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = Command::new(bin());
        c.arg("--workspace").arg(&self.ws).args(args);
        c.env_remove("RETORT_WORKSPACE");
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().expect("run retort"))
    }
    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// All audit records of the workspace, parsed.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        audit_segments(&self.ws)
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A workspace holding the demo phantoms (`per_class` training images per class, stored as
/// dataset `demo`) and one completed run distilled from them with fast settings (ipc 2):
/// a real, charged run, as `eval` and `package` require. Returns the run id.
pub fn workspace_with_real_run(per_class: usize) -> (TestWs, String) {
    let t = TestWs::init();
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    retort::dataset::store(&ws, "demo", &retort::demo::generate(per_class, 6)).unwrap();
    let r = t.run(&[
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
        "--json",
    ]);
    r.expect(0);
    let id = r.json()["run"].as_str().unwrap().to_string();
    (t, id)
}

/// Run the binary without a workspace argument.
pub fn retort(args: &[&str]) -> Run {
    let mut c = Command::new(bin());
    c.args(args).env_remove("RETORT_WORKSPACE");
    Run::from(c.output().expect("run retort"))
}

/// A `synthetic.parquet` in the partner format (DESIGN §4), written with arrow directly:
/// `ipc` images per class of `shape` (C,H,W), class-major, pixel `i` = `(i % (levels+1)) / levels`.
pub fn synthetic_parquet(
    classes: &[&str],
    ipc: usize,
    shape: [usize; 3],
    levels: usize,
) -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, StringArray,
    };
    use arrow_schema::{DataType, Field, Schema};
    use parquet::file::metadata::KeyValue;

    let n = classes.len() * ipc;
    let len = shape.iter().product::<usize>();
    let labels: Vec<i32> = (0..n).map(|i| (i / ipc) as i32).collect();
    let names: Vec<&str> = labels.iter().map(|&l| classes[l as usize]).collect();
    let values: Vec<f32> = (0..n * len)
        .map(|i| (i % (levels + 1)) as f32 / levels as f32)
        .collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let image = FixedSizeListArray::new(
        item.clone(),
        len as i32,
        Arc::new(Float32Array::from(values)),
        None,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("label", DataType::Int32, false),
        Field::new("label_name", DataType::Utf8, false),
        Field::new("image", DataType::FixedSizeList(item, len as i32), false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from(labels)) as ArrayRef,
            Arc::new(StringArray::from(names)),
            Arc::new(image),
        ],
    )
    .unwrap();
    let shape_s = format!("{},{},{}", shape[0], shape[1], shape[2]);
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![
            KeyValue::new("retort.shape".into(), shape_s),
            KeyValue::new("retort.version".into(), "0.1.0".to_string()),
        ]))
        .build();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// The audit log's segment files of workspace `ws`, in order.
pub fn audit_segments(ws: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(ws.join("audit"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("segment-")
        })
        .collect();
    segs.sort();
    segs
}

/// The audit actor the library-driven test helpers log as.
pub const TEST_ACTOR: &str = "user:test";

/// The stored dataset `name`, stored first (a small demo set) when it is not there yet.
pub fn ensure_dataset(ws: &retort::workspace::Workspace, name: &str) -> retort::dataset::Meta {
    match retort::dataset::open(ws, name) {
        Ok(s) => s.meta,
        Err(_) => {
            retort::dataset::store(ws, name, &retort::demo::generate(3, 1))
                .unwrap()
                .meta
        }
    }
}

/// The ledger of dataset `name` (stored first when missing), as `retort distill` opens it.
pub fn ledger_of(t: &TestWs, name: &str) -> retort::ledger::Ledger {
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    let meta = ensure_dataset(&ws, name);
    retort::ledger::Ledger::open(&ws, &meta).unwrap()
}

/// Charge `run` to the ledger of dataset `name` and commit it, as `retort distill` does.
pub fn charge(t: &TestWs, name: &str, run: &str, events: &[retort::dp::DpEvent], cap: Option<f64>) {
    ledger_of(t, name)
        .reserve(TEST_ACTOR, run, "distill", events, 1e-5, cap)
        .unwrap()
        .commit(TEST_ACTOR)
        .unwrap();
}

/// Another OS user for tests that need one: the tests run as root, which ignores file modes,
/// so they drop privileges with util-linux `setpriv` to numeric ids (no `/etc/passwd` entry
/// needed). See [`Other::available`].
#[derive(Debug, Clone)]
pub struct Other {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
}

/// The compliance group the permission tests use.
pub const COMPLIANCE_GID: u32 = 4343;
/// The service group the permission tests use.
pub const SERVICE_GID: u32 = 4444;

impl Other {
    /// A user in no group of the workspace.
    pub fn stranger() -> Other {
        Other {
            uid: 4242,
            gid: 4242,
            groups: vec![],
        }
    }
    /// A compliance officer: a member of [`COMPLIANCE_GID`].
    pub fn compliance() -> Other {
        Other {
            uid: 5001,
            gid: 5001,
            groups: vec![COMPLIANCE_GID],
        }
    }
    /// The service user: primary group [`SERVICE_GID`], member of [`COMPLIANCE_GID`] (as the
    /// systemd unit's `Group=` and `SupplementaryGroups=` make it).
    pub fn service() -> Other {
        Other {
            uid: 6001,
            gid: SERVICE_GID,
            groups: vec![COMPLIANCE_GID],
        }
    }

    /// Whether privileges can be dropped here (root, `setpriv` present and working); prints a
    /// loud SKIPPED line when not.
    pub fn available() -> bool {
        let me = retort::identity::Identity::read();
        if !me.is_root() {
            eprintln!("SKIPPED: not running as root, so no other user can be tested (run the tests as root, as CI does)");
            return false;
        }
        let ok = Command::new("setpriv")
            .args([
                "--reuid=4242",
                "--regid=4242",
                "--clear-groups",
                "--",
                "true",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: `setpriv` (util-linux) is missing or cannot drop privileges here");
        }
        ok
    }

    /// The `retort` binary as other users can run it: the built one when its path is open to
    /// them, else a copy in a world-readable temp folder (a checkout under a `0700` home).
    pub fn bin() -> PathBuf {
        static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        BIN.get_or_init(|| {
            let reachable = Other::stranger()
                .command(&bin())
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            if reachable {
                return bin();
            }
            use std::os::unix::fs::PermissionsExt;
            let dir = std::env::temp_dir().join(format!("retort-it-bin-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let copy = dir.join("retort");
            std::fs::copy(bin(), &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            copy
        })
        .clone()
    }

    /// The `setpriv` command line prefix that runs a program as this user.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid));
        if self.groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            let g: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            c.arg(format!("--groups={}", g.join(",")));
        }
        c.arg("--").arg(program);
        c
    }

    /// The audit actor this user is recorded as (its uid has no passwd entry; the login uid
    /// is inherited from the test process).
    pub fn actor(&self) -> String {
        let me = retort::identity::Identity::read();
        let login = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&l| l != u32::MAX && l != self.uid);
        match login {
            Some(l) => format!(
                "user:uid:{} (login {})",
                self.uid,
                if Some(l) == me.uid {
                    me.user.clone()
                } else {
                    retort::identity::user_name(l)
                }
            ),
            None => format!("user:uid:{}", self.uid),
        }
    }
}

impl TestWs {
    /// Let other users reach the temp dir (tempdir makes it 0700); the workspace's own modes
    /// then decide what they may do.
    pub fn open_to_others(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    /// Run `retort --workspace <ws> args…` as another user.
    pub fn run_as(&self, who: &Other, args: &[&str]) -> Run {
        let mut c = who.command(&Other::bin());
        c.arg("--workspace").arg(&self.ws).args(args);
        c.env_remove("RETORT_WORKSPACE");
        Run::from(c.output().expect("run setpriv retort"))
    }
    /// Run any program as another user.
    pub fn sh_as(&self, who: &Other, program: &str, args: &[&str]) -> Run {
        let mut c = who.command(Path::new(program));
        c.args(args).current_dir(self.dir.path());
        Run::from(c.output().expect("run setpriv"))
    }
}

/// Mode bits (with set-group-id) and group of a path.
pub fn mode_of(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.gid())
}

/// Add soft labels (a smoothed one-hot of each hard label) to a run's `synthetic.parquet`
/// through the library, as a run with a DP teacher writes them. Returns them.
pub fn add_soft_labels(run_dir: &std::path::Path) -> Vec<f32> {
    let p = run_dir.join("synthetic.parquet");
    let (mut set, classes) = retort::dataset::read_synthetic_parquet(&p).unwrap();
    let k = classes.len();
    let mut soft = Vec::new();
    for &l in &set.labels {
        soft.extend((0..k).map(|j| {
            if j == l as usize {
                0.7
            } else {
                0.3 / (k - 1) as f32
            }
        }));
    }
    set.soft_labels = Some(soft.clone());
    retort::dataset::write_synthetic_parquet(&p, &set, &classes).unwrap();
    soft
}
