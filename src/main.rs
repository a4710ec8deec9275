//! The `retort` command: a thin shell over the library (see `retort::cli`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = retort::cli::main_entry(std::env::args_os().collect());
    ExitCode::from(code)
}
