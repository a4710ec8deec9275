//! Fuzz target: the policy TOML parser, validator, warnings and a decision. Must never panic
//! (a reachable panic on input is a bug). Needs this entry in tests/fuzz/Cargo.toml:
//!
//! ```toml
//! [[bin]]
//! name = "policy_toml"
//! path = "fuzz_targets/policy_toml.rs"
//! test = false
//! doc = false
//! bench = false
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retort::policy::fuzz_parse(data);
});
