//! cargo-fuzz target for the audit log reader and the checkpoint note parser.
//! Run (from the repo root): `cargo fuzz run --fuzz-dir tests/fuzz audit_log_reader`
//! (needs the `[[bin]] name = "audit_log_reader"` entry in tests/fuzz/Cargo.toml; see docs/audit.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    retort::audit::verify::fuzz_log_reader(data);
});
