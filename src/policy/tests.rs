//! Unit tests of the policy module: templates, golden parse errors with file:line:column,
//! decisions with their codes (unit + proptest), warnings, editing.

use super::*;
use proptest::prelude::*;

const BASE: &str = r#"version = 1
name = "t"

[budget]
dataset_epsilon_cap = 10.0
run_epsilon_cap = 4.0
max_delta = 1e-5

[distill]
methods = ["gm"]
max_images_per_class = 20

[[partners]]
name = "lab"
client_cert_sha256 = "AA:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99"
datasets = ["xray"]

[[partners]]
name = "nocert"

[datasets.xray]
epsilon_cap = 2.0
"#;

fn base() -> Policy {
    parse(BASE, Path::new("base.toml")).unwrap()
}

fn err(text: &str) -> Error {
    parse(text, Path::new("p.toml")).expect_err("must be rejected")
}

/// Replace the first occurrence of `from` in BASE.
fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn templates_validate() {
    for (name, text) in TEMPLATES {
        let p = parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.name(), *name);
        assert!(p.require_dicom_deidentification());
        assert!(p.run_epsilon_cap() <= p.dataset_epsilon_cap(""), "{name}");
        assert!(
            p.warnings(&CheckEnv::default()).is_empty(),
            "{name}: {:?}",
            p.warnings(&CheckEnv::default())
        );
    }
    assert!(template("strict").unwrap().contains("name = \"strict\""));
    assert!(template("nope").is_none());
}

#[test]
fn strict_is_stricter_than_default_and_research_looser() {
    let d = parse(template("default").unwrap(), Path::new("d")).unwrap();
    let s = parse(template("strict").unwrap(), Path::new("s")).unwrap();
    let r = parse(template("research").unwrap(), Path::new("r")).unwrap();
    assert!(s.run_epsilon_cap() < d.run_epsilon_cap() && d.run_epsilon_cap() < r.run_epsilon_cap());
    assert!(s.dataset_epsilon_cap("x") < d.dataset_epsilon_cap("x"));
    assert!(s.max_images_per_class() < d.max_images_per_class());
    assert!(s.max_delta() < d.max_delta());
}

#[test]
fn values_and_defaults() {
    let p = base();
    assert_eq!(p.dataset_epsilon_cap("xray"), 2.0);
    assert_eq!(p.dataset_epsilon_cap("other"), 10.0);
    assert_eq!(p.methods(), ["gm"]);
    assert_eq!(p.max_delta_times_records(), 1.0);
    assert!(!p.export_restricted());
    let lab = p.partner("lab").unwrap();
    assert_eq!(
        lab.client_cert_sha256.as_deref(),
        Some("aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899")
    );
    // No [distill]: both methods, 50 images per class.
    let minimal = "version = 1\nname = \"m\"\n[budget]\ndataset_epsilon_cap = 1\nrun_epsilon_cap = 1\nmax_delta = 1e-6\n";
    let p = parse(minimal, Path::new("m")).unwrap();
    assert_eq!(p.methods(), ["gm", "dm"]);
    assert_eq!(p.max_images_per_class(), 50);
    assert!(p.partners().is_empty());
}

/// Golden parse errors: (case, text, code, line, column, message part, hint part).
#[test]
fn golden_errors_name_file_line_column_and_fix() {
    let cases: Vec<(&str, String, &str, usize, usize, &str, &str)> = vec![
        (
            "fail_unknown_key",
            with("run_epsilon_cap", "run_epsilon_capp"),
            "policy-unknown-key",
            6,
            1,
            "unknown policy key `run_epsilon_capp` in [budget]",
            "did you mean `run_epsilon_cap`?",
        ),
        (
            "fail_wrong_type",
            with("run_epsilon_cap = 4.0", "run_epsilon_cap = \"high\""),
            "policy-wrong-type",
            6,
            19,
            "wrong type for `budget.run_epsilon_cap`",
            "write a number without quotes",
        ),
        (
            "fail_negative_epsilon",
            with("dataset_epsilon_cap = 10.0", "dataset_epsilon_cap = -1.0"),
            "policy-invalid-value",
            5,
            23,
            "budget.dataset_epsilon_cap",
            "positive number",
        ),
        (
            "fail_nan_epsilon",
            with("run_epsilon_cap = 4.0", "run_epsilon_cap = nan"),
            "policy-invalid-value",
            6,
            19,
            "finite",
            "positive number",
        ),
        (
            "fail_delta_one",
            with("max_delta = 1e-5", "max_delta = 1.0"),
            "policy-invalid-value",
            7,
            13,
            "below 1",
            "1e-5",
        ),
        (
            "fail_unknown_method",
            with("methods = [\"gm\"]", "methods = [\"gm\", \"gan\"]"),
            "policy-invalid-value",
            10,
            18,
            "unknown method \"gan\"",
            "gm, dm",
        ),
        (
            "fail_empty_methods",
            with("methods = [\"gm\"]", "methods = []"),
            "policy-invalid-value",
            10,
            11,
            "empty",
            "at least one method",
        ),
        (
            "fail_ipc_zero",
            with("max_images_per_class = 20", "max_images_per_class = 0"),
            "policy-invalid-value",
            11,
            24,
            "from 1 to 1000",
            "max_images_per_class",
        ),
        (
            "fail_bad_fingerprint",
            with("client_cert_sha256 = \"AA:", "client_cert_sha256 = \"ZZ:"),
            "policy-invalid-value",
            15,
            22,
            "not a SHA-256 fingerprint",
            "add-partner",
        ),
        (
            "fail_duplicate_partner",
            with("name = \"nocert\"", "name = \"lab\""),
            "policy-invalid-value",
            19,
            8,
            "listed twice",
            "merge",
        ),
        (
            "fail_deid_off",
            format!("{BASE}\n[ingest]\nrequire_dicom_deidentification = false\n"),
            "policy-invalid-value",
            25,
            34,
            "may not turn that off",
            "= true",
        ),
        (
            "fail_version",
            with("version = 1", "version = 2"),
            "policy-invalid-value",
            1,
            11,
            "format version 1",
            "version = 1",
        ),
        (
            "fail_syntax",
            with("[distill]", "[distill"),
            "policy-syntax",
            9,
            9,
            "not valid TOML",
            "line 9",
        ),
        (
            "fail_missing_max_delta",
            with("max_delta = 1e-5\n", ""),
            "policy-missing-key",
            4,
            1,
            "missing required policy key `max_delta` in [budget]",
            "under [budget]",
        ),
        (
            "fail_missing_budget",
            "version = 1\nname = \"x\"\n".into(),
            "policy-missing-key",
            1,
            1,
            "`budget`",
            "[budget] table",
        ),
        (
            "fail_unknown_top_level",
            format!("colour = \"blue\"\n{BASE}"),
            "policy-unknown-key",
            1,
            1,
            "unknown policy key `colour`",
            "remove or rename",
        ),
        (
            "fail_partner_unknown_key",
            with(
                "name = \"nocert\"",
                "name = \"nocert\"\nfingerprint = \"x\"",
            ),
            "policy-unknown-key",
            20,
            1,
            "`fingerprint` in [partners]",
            "client_cert_sha256",
        ),
        (
            "fail_partners_single_brackets",
            "version = 1\nname = \"x\"\n[budget]\ndataset_epsilon_cap = 1\nrun_epsilon_cap = 1\nmax_delta = 1e-6\n[partners]\nname = \"x\"\n".into(),
            "policy-wrong-type",
            7,
            1,
            "wrong type for `partners`: invalid type: table, expected a list",
            "[[partners]] table (double brackets)",
        ),
        (
            "fail_partner_singular",
            with("[[partners]]\nname = \"nocert\"", "[[partner]]\nname = \"nocert\""),
            "policy-unknown-key",
            18,
            3,
            "unknown policy key `partner`\n",
            "did you mean `partners`?",
        ),
        (
            "fail_dataset_rule_not_a_table",
            with("[datasets.xray]\nepsilon_cap = 2.0", "[datasets]\nxray = 2.0"),
            "policy-wrong-type",
            22,
            8,
            "wrong type for `datasets.xray`: invalid type: floating point `2.0`, expected a table",
            "write it as [datasets.xray]",
        ),
        (
            "fail_methods_not_a_list",
            with("methods = [\"gm\"]", "methods = \"gm\""),
            "policy-wrong-type",
            10,
            11,
            "expected a list",
            "methods = [",
        ),
        (
            "fail_bad_signing_key",
            with(
                "name = \"nocert\"",
                "name = \"nocert\"\nsigning_key = \"abc\"",
            ),
            "policy-invalid-value",
            20,
            15,
            "not an Ed25519 public key",
            "base64",
        ),
    ];
    for (case, text, code, line, col, msg, hint) in cases {
        let e = err(&text);
        let shown = e.to_string();
        assert_eq!(e.code(), code, "{case}: {shown}");
        assert!(
            shown.starts_with(&format!("p.toml:{line}:{col}: ")),
            "{case}: expected p.toml:{line}:{col}, got:\n{shown}"
        );
        assert!(
            shown.contains(msg),
            "{case}: message lacks {msg:?}:\n{shown}"
        );
        let h = e.hint().unwrap_or_default();
        assert!(h.contains(hint), "{case}: hint lacks {hint:?}: {h}");
        assert_eq!(e.class(), crate::error::Class::Input, "{case}");
    }
}

#[test]
fn snippet_points_at_the_column() {
    let e = err(&with("run_epsilon_cap = 4.0", "run_epsilon_cap = -4.0"));
    let s = e.to_string();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[1], "   6 | run_epsilon_cap = -4.0");
    assert_eq!(lines[2], "     |                   ^");
}

fn distill<'a>(ds: &'a str, eps: f64, delta: f64, total: f64) -> Request<'a> {
    Request::Distill(DistillRequest {
        dataset: ds,
        records: 60_000,
        method: "gm",
        epsilon: eps,
        delta,
        ipc: 10,
        dataset_total_epsilon: total,
        forecast: None,
    })
}

#[test]
fn distill_decisions_and_codes() {
    let p = base();
    assert_eq!(p.decide(&distill("other", 1.0, 1e-6, 5.0)), Decision::Allow);
    let code = |r: Request<'_>| p.decide(&r).code();
    assert_eq!(
        code(distill("other", 4.5, 1e-6, 5.0)),
        Some("policy-run-epsilon-cap")
    );
    assert_eq!(
        code(distill("other", 1.0, 1e-6, 10.5)),
        Some("policy-dataset-epsilon-cap")
    );
    // Per-dataset override is lower.
    assert_eq!(
        code(distill("xray", 1.0, 1e-6, 2.5)),
        Some("policy-dataset-epsilon-cap")
    );
    assert_eq!(
        code(distill("other", 1.0, 1e-4, 1.0)),
        Some("policy-delta-too-large")
    );
    let mut d = DistillRequest {
        dataset: "small",
        records: 100_000,
        method: "gm",
        epsilon: 1.0,
        delta: 1e-5,
        ipc: 10,
        dataset_total_epsilon: 1.0,
        forecast: None,
    };
    assert_eq!(
        p.decide(&Request::Distill(d.clone())).code(),
        Some("policy-delta-vs-records"),
        "delta = 1/n is not below 1/n"
    );
    d.records = 99_999;
    assert!(p.decide(&Request::Distill(d.clone())).is_allowed());
    d.records = 0;
    assert_eq!(
        p.decide(&Request::Distill(d.clone())).code(),
        Some("policy-delta-vs-records")
    );
    d.records = 1000;
    d.method = "dm";
    assert_eq!(
        p.decide(&Request::Distill(d.clone())).code(),
        Some("policy-method-not-allowed")
    );
    d.method = "gm";
    d.ipc = 21;
    assert_eq!(
        p.decide(&Request::Distill(d.clone())).code(),
        Some("policy-ipc-too-large")
    );
    for (eps, delta, total) in [
        (f64::NAN, 1e-6, 1.0),
        (-1.0, 1e-6, 1.0),
        (f64::INFINITY, 1e-6, 1.0),
        (1.0, 0.0, 1.0),
        (1.0, f64::NAN, 1.0),
        (1.0, 1e-6, f64::NAN),
        (1.0, 1e-6, -1.0),
    ] {
        assert_eq!(
            code(distill("other", eps, delta, total)),
            Some("policy-request-invalid"),
            "{eps} {delta} {total}"
        );
    }
}

#[test]
fn refusal_is_exit_3_with_hint() {
    let p = base();
    let e = p
        .decide(&distill("other", 5.0, 1e-6, 5.0))
        .into_result()
        .unwrap_err();
    assert_eq!(e.class(), crate::error::Class::Refused);
    assert_eq!(e.class().exit_code(), 3);
    assert_eq!(e.code(), "policy-run-epsilon-cap");
    assert!(e.to_string().contains("per-run cap of 4"));
    assert!(e.hint().unwrap().contains("--epsilon 4"));
    let top: crate::Error = e.into();
    assert_eq!(top.exit_code(), 3);
    assert_eq!(top.audit_outcome(), crate::audit::Outcome::Refused);
}

fn package<'a>(partner: &'a str, dataset: &'a str, who: &'a OsIdentity) -> Request<'a> {
    Request::Package(PackageRequest {
        partner,
        dataset,
        method: "gm",
        epsilon: 1.0,
        delta: 1e-6,
        ipc: 10,
        exporter: who,
    })
}

#[test]
fn package_decisions() {
    let p = base();
    let who = OsIdentity::named("alice", &["staff"]);
    assert!(p.decide(&package("lab", "xray", &who)).is_allowed());
    assert!(p.decide(&package("nocert", "anything", &who)).is_allowed());
    assert_eq!(
        p.decide(&package("stranger", "xray", &who)).code(),
        Some("policy-partner-not-allowed")
    );
    assert_eq!(
        p.decide(&package("lab", "ct", &who)).code(),
        Some("policy-partner-dataset-not-allowed")
    );
    // The run is checked against the policy as it is now.
    let mut r = PackageRequest {
        partner: "lab",
        dataset: "xray",
        method: "gm",
        epsilon: 6.0,
        delta: 1e-6,
        ipc: 10,
        exporter: &who,
    };
    assert_eq!(
        p.decide(&Request::Package(r.clone())).code(),
        Some("policy-run-epsilon-cap")
    );
    r.epsilon = 1.0;
    r.method = "dm";
    assert_eq!(
        p.decide(&Request::Package(r)).code(),
        Some("policy-method-not-allowed")
    );
    // Export restricted to a group or a user.
    let text = BASE.replacen(
        "[[partners]]",
        "[export]\ngroups = [\"exporters\"]\nusers = [\"bob\"]\n\n[[partners]]",
        1,
    );
    let q = parse(&text, Path::new("q")).unwrap();
    assert!(q.export_restricted());
    assert_eq!(
        q.decide(&package("lab", "xray", &who)).code(),
        Some("policy-exporter-not-allowed")
    );
    let member = OsIdentity::named("carol", &["exporters"]);
    assert!(q.decide(&package("lab", "xray", &member)).is_allowed());
    let bob = OsIdentity::named("bob", &[]);
    assert!(q.decide(&package("lab", "xray", &bob)).is_allowed());
}

#[test]
fn serve_and_partner_by_cert() {
    let p = base();
    let fp = "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899";
    assert_eq!(partner_by_cert(&p, fp).unwrap().name, "lab");
    assert_eq!(
        partner_by_cert(&p, &fp.to_ascii_uppercase()).unwrap().name,
        "lab"
    );
    assert!(p
        .decide(&Request::Serve(ServeRequest {
            client_cert_sha256: fp
        }))
        .is_allowed());
    let other = "00".repeat(32);
    assert!(partner_by_cert(&p, &other).is_none());
    assert!(partner_by_cert(&p, "").is_none());
    assert_eq!(
        p.decide(&Request::Serve(ServeRequest {
            client_cert_sha256: &other
        }))
        .code(),
        Some("policy-client-not-allowed")
    );
}

#[test]
fn ingest_deid() {
    let p = base();
    let r = |dicom, deidentify| p.decide(&Request::Ingest(IngestRequest { dicom, deidentify }));
    assert!(r(true, true).is_allowed());
    assert!(r(false, false).is_allowed());
    assert_eq!(r(true, false).code(), Some("policy-deid-required"));
}

#[test]
fn warnings_for_entries_that_never_match() {
    let text = BASE.replacen(
        "[[partners]]",
        "[export]\nusers = [\"root\", \"no-such-user-xyz\"]\ngroups = [\"no-such-group-xyz\"]\n\n[[partners]]",
        1,
    );
    let p = parse(&text, Path::new("w.toml")).unwrap();
    let env = CheckEnv {
        datasets: Some(vec!["ct".into()]),
        users: Some(["root".to_string()].into()),
        groups: Some(["root".to_string()].into()),
    };
    let w = p.warnings(&env);
    let codes: Vec<&str> = w.iter().map(|w| w.code).collect();
    assert!(codes.contains(&"policy-warn-partner-no-cert"), "{codes:?}");
    assert!(codes.contains(&"policy-warn-unknown-user"), "{codes:?}");
    assert!(codes.contains(&"policy-warn-unknown-group"), "{codes:?}");
    // [datasets.xray] and lab's datasets = ["xray"]: both never match.
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == "policy-warn-unknown-dataset")
            .count(),
        2
    );
    let user = w
        .iter()
        .find(|w| w.code == "policy-warn-unknown-user")
        .unwrap();
    let at = user.at.as_ref().unwrap();
    assert_eq!((at.line, at.column), (14, 18));
    assert!(user.to_string().starts_with("w.toml:14:18: "));
    // Nothing is known: only the partner warning remains.
    let w = p.warnings(&CheckEnv::default());
    assert_eq!(w.len(), 1, "{w:?}");
    // A run cap above the dataset cap never binds.
    let p = parse(
        &with("run_epsilon_cap = 4.0", "run_epsilon_cap = 12.0"),
        Path::new("x"),
    )
    .unwrap();
    assert!(p
        .warnings(&CheckEnv::default())
        .iter()
        .any(|w| w.code == "policy-warn-run-cap-above-dataset-cap"));
}

#[test]
fn codes_are_declared() {
    for c in Refusal::CODES.iter().chain(Warning::CODES) {
        assert!(Error::CODES.contains(c), "{c} missing from Error::CODES");
    }
    let mut all = Error::CODES.to_vec();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), Error::CODES.len());
}

fn test_cert() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["partner.example".into()]).unwrap();
    let fp = crate::digest::sha256_hex(ck.cert.der().as_ref());
    (ck.cert.pem(), fp)
}

#[test]
fn cert_fingerprint_is_sha256_of_der() {
    let (pem, fp) = test_cert();
    assert_eq!(cert_fingerprint(&pem, Path::new("c.pem")).unwrap(), fp);
    let e = cert_fingerprint("hello", Path::new("c.pem")).unwrap_err();
    assert_eq!(e.code(), "policy-cert-invalid");
    let junk = crate::keys::pem_encode(b"not a certificate", "CERTIFICATE");
    assert_eq!(
        cert_fingerprint(&junk, Path::new("c.pem"))
            .unwrap_err()
            .code(),
        "policy-cert-invalid"
    );
}

#[test]
fn add_partner_preserves_comments_and_validates() {
    let (pem, fp) = test_cert();
    let text = template("default").unwrap();
    let key = crate::keys::SigningKey::generate().unwrap().public();
    let np = NewPartner {
        name: "uni".into(),
        description: Some("research lab".into()),
        client_cert_sha256: Some(cert_fingerprint(&pem, Path::new("c")).unwrap()),
        signing_key: Some(key),
        datasets: Some(vec!["xray".into()]),
    };
    let (new_text, p) = add_partner_text(text, Path::new("a.toml"), &np).unwrap();
    assert!(
        new_text.starts_with(text.trim_end()),
        "existing text changed:\n{new_text}"
    );
    assert!(new_text.contains("# Partners allowed to receive packages."));
    let uni = p.partner("uni").unwrap();
    assert_eq!(uni.client_cert_sha256.as_deref(), Some(fp.as_str()));
    assert_eq!(uni.signing_key, Some(key));
    assert_eq!(partner_by_cert(&p, &fp).unwrap().name, "uni");
    // Twice: refused, by name and by certificate.
    let e = add_partner_text(&new_text, Path::new("a.toml"), &np).unwrap_err();
    assert_eq!(e.code(), "policy-partner-exists");
    let mut other = np.clone();
    other.name = "uni2".into();
    let e = add_partner_text(&new_text, Path::new("a.toml"), &other).unwrap_err();
    assert_eq!(e.code(), "policy-cert-in-use");
    // A second partner appends to the array of tables.
    other.client_cert_sha256 = None;
    let (t3, p3) = add_partner_text(&new_text, Path::new("a.toml"), &other).unwrap();
    assert_eq!(p3.partners().len(), 2);
    assert!(t3.starts_with(new_text.trim_end()));
    // A broken file is not edited.
    let e = add_partner_text("version = ", Path::new("b.toml"), &np).unwrap_err();
    assert_eq!(e.code(), "policy-syntax");
}

#[test]
fn fingerprints_normalize() {
    let h = "ab".repeat(32);
    assert_eq!(raw::normalize_fingerprint(&h).as_deref(), Some(h.as_str()));
    assert_eq!(
        raw::normalize_fingerprint(&format!("sha256:{}", h.to_uppercase())).as_deref(),
        Some(h.as_str())
    );
    assert!(raw::normalize_fingerprint(&"ab".repeat(31)).is_none());
    assert!(raw::normalize_fingerprint(&"zz".repeat(32)).is_none());
}

#[test]
fn load_file_hashes_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, BASE).unwrap();
    let l = load_file(&p).unwrap();
    assert_eq!(l.sha256, crate::digest::sha256_hex(BASE.as_bytes()));
    assert_eq!(l.name, "t");
    assert_eq!(l.identity_json()["sha256"], l.sha256.as_str());
    let e = load_file(&dir.path().join("missing.toml")).unwrap_err();
    assert_eq!(e.code(), "policy-unreadable");
    std::fs::write(&p, b"version = 1\nname = \"\xff\"\n").unwrap();
    let e = load_file(&p).unwrap_err();
    assert_eq!(e.code(), "policy-syntax");
    assert!(e.to_string().contains(":2:"), "{e}");
}

proptest! {
    /// No distill request is allowed that breaks any cap, whatever its values.
    #[test]
    fn allowed_distill_respects_every_cap(
        eps in prop_oneof![Just(f64::NAN), Just(-1.0), 0.0f64..20.0],
        delta in prop_oneof![Just(f64::NAN), 0.0f64..1e-3],
        total in prop_oneof![Just(f64::INFINITY), 0.0f64..20.0],
        records in 0u64..2_000_000,
        ipc in 0u32..100,
        dm in any::<bool>(),
        xray in any::<bool>(),
    ) {
        let p = base();
        let dataset = if xray { "xray" } else { "other" };
        let req = Request::Distill(DistillRequest {
            dataset, records, method: if dm { "dm" } else { "gm" }, epsilon: eps, delta, ipc,
            dataset_total_epsilon: total, forecast: None,
        });
        let d = p.decide(&req);
        if d.is_allowed() {
            prop_assert!(eps > 0.0 && eps <= p.run_epsilon_cap());
            prop_assert!(delta > 0.0 && delta <= p.max_delta());
            prop_assert!(delta * (records as f64) < 1.0);
            prop_assert!(total <= p.dataset_epsilon_cap(dataset));
            prop_assert!(ipc >= 1 && ipc <= p.max_images_per_class());
            prop_assert!(!dm);
        } else {
            prop_assert!(Refusal::CODES.contains(&d.code().unwrap()));
        }
    }

    /// Any text: parse never panics, and an error always carries a position inside the text.
    #[test]
    fn parse_never_panics(text in "[a-z_=\\[\\]\"0-9.\\n -]{0,200}") {
        if let Err(e) = parse(&text, Path::new("f.toml")) {
            let s = e.to_string();
            prop_assert!(s.starts_with("f.toml:"), "{}", s);
            prop_assert!(e.hint().is_some());
        }
    }

    /// The fuzzing hook on arbitrary bytes (and on mutations of a valid policy) never panics.
    #[test]
    fn fuzz_hook_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..600, junk in any::<u8>()) {
        fuzz_parse(&bytes);
        let mut b = BASE.as_bytes().to_vec();
        let i = cut.min(b.len().saturating_sub(1));
        b[i] = junk;
        fuzz_parse(&b);
        b.truncate(i);
        fuzz_parse(&b);
    }

    /// Mutating one numeric value of a valid policy either still validates or names its line.
    #[test]
    fn mutated_caps_are_validated(x in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -10.0f64..200.0]) {
        let text = with("run_epsilon_cap = 4.0", &format!("run_epsilon_cap = {}", toml_float(x)));
        match parse(&text, Path::new("m.toml")) {
            Ok(p) => prop_assert!(p.run_epsilon_cap() > 0.0 && p.run_epsilon_cap() <= 100.0),
            Err(e) => {
                prop_assert_eq!(e.code(), "policy-invalid-value");
                prop_assert!(e.to_string().starts_with("m.toml:6:19: "), "{}", e);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// add-partner on any template with any valid name and fingerprint yields a valid policy
    /// that finds the partner by its certificate, and keeps every original line.
    #[test]
    fn add_partner_roundtrip(
        t in 0usize..3,
        name in "[a-z0-9][a-z0-9._-]{0,20}",
        fp in proptest::collection::vec(any::<u8>(), 32),
        desc in proptest::option::of("[ -~]{0,40}"),
    ) {
        let (_, text) = TEMPLATES[t];
        let fp = crate::digest::hex(&fp);
        let np = NewPartner {
            name: name.clone(),
            description: desc,
            client_cert_sha256: Some(fp.clone()),
            signing_key: None,
            datasets: None,
        };
        let (new_text, p) = add_partner_text(text, Path::new("t.toml"), &np).unwrap();
        prop_assert_eq!(&partner_by_cert(&p, &fp).unwrap().name, &name);
        for line in text.lines() {
            prop_assert!(new_text.contains(line));
        }
        let again = parse(&new_text, Path::new("t.toml")).unwrap();
        prop_assert_eq!(again.partners().len(), 1);
    }
}

fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        "inf".into()
    } else {
        format!("{x:?}")
    }
}

#[test]
fn add_partner_to_workspace_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let ws = crate::workspace::Workspace::create(&dir.path().join("ws"), "site").unwrap();
    crate::workspace::atomic_write(&ws.policy_path(), template("default").unwrap().as_bytes())
        .unwrap();
    let np = NewPartner {
        name: "demo-partner".into(),
        description: None,
        client_cert_sha256: Some("cd".repeat(32)),
        signing_key: None,
        datasets: None,
    };
    let ch = add_partner_to_workspace(&ws, "user:test", &np).unwrap();
    assert_eq!(
        ch.old_sha256,
        crate::digest::sha256_hex(template("default").unwrap().as_bytes())
    );
    assert_eq!(
        ch.new_sha256,
        crate::digest::sha256_hex(&std::fs::read(ws.policy_path()).unwrap())
    );
    let l = load_active(&ws, None).unwrap();
    assert_eq!(
        partner_by_cert(&l.policy, &"cd".repeat(32)).unwrap().name,
        "demo-partner"
    );
    let log = std::fs::read_to_string(ws.audit_dir().join("segment-000000.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["outcome"], "intent");
    assert_eq!(recs[1]["outcome"], "ok");
    assert_eq!(recs[1]["details"]["new_sha256"], ch.new_sha256.as_str());
    // Second time: refused, nothing written, nothing logged.
    let e = add_partner_to_workspace(&ws, "user:test", &np).unwrap_err();
    assert_eq!(e.code(), "policy-partner-exists");
    assert_eq!(
        std::fs::read_to_string(ws.audit_dir().join("segment-000000.jsonl")).unwrap(),
        log
    );
}

#[test]
fn os_identity_comes_from_the_kernel() {
    let me = OsIdentity::current();
    assert!(!me.user.is_empty());
    if std::path::Path::new("/proc/self/status").exists() {
        assert!(!me.groups.is_empty(), "the primary group is always there");
        // The kernel's view, not $USER: the effective uid maps to this name.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap()
            .to_string();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        if let Some(name) = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        }) {
            assert_eq!(me.user, name);
        }
    }
}

/// A forecast of `verdict` with one piece of advice.
fn forecast_of(verdict: crate::distill::forecast::Verdict) -> crate::distill::forecast::Forecast {
    crate::distill::forecast::Forecast {
        snr: verdict.threshold() + 0.5,
        verdict,
        class_size: 100.0,
        smallest_class: false,
        class: None,
        epsilon_for_next: Some(6.0),
        advice: vec!["a larger epsilon (about epsilon = 6 for fair)".into()],
        calibrated: true,
        summary: String::new(),
    }
}

/// See: issue 21. `distill.min_forecast` and `privacy.public_class_counts` parse, validate
/// with a clear error, and the floor refuses a run forecast below it.
#[test]
fn forecast_floor_and_public_class_counts() {
    use crate::distill::forecast::Verdict;
    let p = base();
    assert_eq!(p.min_forecast(), None);
    assert!(!p.public_class_counts());
    let text = with(
        "max_images_per_class = 20",
        "max_images_per_class = 20\nmin_forecast = \"fair\"",
    ) + "\n[privacy]\npublic_class_counts = true\n";
    let f = parse(&text, Path::new("p.toml")).unwrap();
    assert_eq!(f.min_forecast(), Some(Verdict::Fair));
    assert!(f.public_class_counts());
    // An unknown verdict is an error at load, naming the key and the values.
    let e = err(&with(
        "max_images_per_class = 20",
        "max_images_per_class = 20\nmin_forecast = \"excellent\"",
    ));
    assert_eq!(e.code(), "policy-invalid-value");
    assert!(e.to_string().contains("distill.min_forecast"), "{e}");
    assert!(e.to_string().contains("excellent"), "{e}");
    assert!(e.hint().unwrap().contains("\"poor\", \"fair\" or \"good\""));
    let e = err(&format!("{BASE}\n[privacy]\npublic_counts = true\n"));
    assert_eq!(e.code(), "policy-unknown-key");
    // Decisions: below the floor refused with the advice in the hint; at or above allowed;
    // a policy without a floor allows a poor forecast.
    let decide = |pol: &Policy, v: Option<Verdict>| {
        let fc = v.map(forecast_of);
        pol.decide(&Request::Distill(DistillRequest {
            dataset: "other",
            records: 60_000,
            method: "gm",
            epsilon: 1.0,
            delta: 1e-6,
            ipc: 10,
            dataset_total_epsilon: 1.0,
            forecast: fc.as_ref(),
        }))
    };
    let Decision::Refuse(r) = decide(&f, Some(Verdict::Poor)) else {
        panic!("a poor forecast must be refused under a fair floor")
    };
    assert_eq!(r.code, "policy-forecast-below-floor");
    assert!(
        r.message.contains("poor") && r.message.contains("fair"),
        "{}",
        r.message
    );
    assert!(r.hint.contains("about epsilon = 6"), "{}", r.hint);
    assert!(decide(&f, Some(Verdict::Fair)).is_allowed());
    assert!(decide(&f, Some(Verdict::Good)).is_allowed());
    assert_eq!(
        decide(&f, None).code(),
        Some("policy-forecast-below-floor"),
        "no forecast under a floor fails closed"
    );
    assert!(decide(&p, Some(Verdict::Poor)).is_allowed());
    assert!(decide(&p, None).is_allowed());
    // Budget refusals come first.
    let over = forecast_of(Verdict::Poor);
    let d = f.decide(&Request::Distill(DistillRequest {
        dataset: "other",
        records: 60_000,
        method: "gm",
        epsilon: 4.5,
        delta: 1e-6,
        ipc: 10,
        dataset_total_epsilon: 4.5,
        forecast: Some(&over),
    }));
    assert_eq!(d.code(), Some("policy-run-epsilon-cap"));
}
