//! Verify a Retort package with the library, as a partner's own tooling would.
//!
//! ```sh
//! cargo run --example verify_package -- PACKAGE_DIR_OR_TAR PUBKEY_PEM_OR_FINGERPRINT
//! ```
//!
//! Prints every numbered step; exits 0 when the package verifies, 4 when a step fails (the
//! same contract as `retort verify`), 1 when the inputs cannot be read.

use std::path::Path;
use std::process::ExitCode;

use retort::error::Coded;
use retort::package::{verify_package, Limits, TrustedKey};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pkg, key] = args.as_slice() else {
        eprintln!("usage: verify_package PACKAGE_DIR_OR_TAR PUBKEY_PEM_OR_FINGERPRINT");
        return ExitCode::from(2);
    };
    let key = match TrustedKey::from_arg(key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // Read safely (no unpacking, size limits, no links) and run every step.
    let v = match verify_package(Path::new(pkg), &key, &Limits::default()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", v.human());
    match v.into_result() {
        Ok(v) => {
            let stmt = v
                .statement
                .as_ref()
                .expect("a verified package has a statement");
            println!(
                "OK: epsilon {:?} delta {:?}; {} signed files:",
                v.epsilon,
                v.delta,
                stmt.subject.len()
            );
            for s in &stmt.subject {
                println!("  {}  {}", s.digest["sha256"], s.name);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}\ncode: {}", e.code());
            ExitCode::from(4)
        }
    }
}
