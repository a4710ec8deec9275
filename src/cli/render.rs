//! Rendering: human text or `--json` (one JSON object as the last stdout line), and errors as
//! `error: <what>` + `hint: <what to do>` on stderr.

use super::{Ctx, Report};
use crate::Result;

/// Print the result and return the exit code.
pub fn emit(ctx: &Ctx, result: Result<Report>) -> u8 {
    match result {
        Ok(report) => {
            if ctx.json {
                println!(
                    "{}",
                    serde_json::to_string(&report.json).expect("invariant: JSON serializes")
                );
            } else if ctx.quiet < 2 && !report.human.is_empty() {
                print!("{}", report.human);
                if !report.human.ends_with('\n') {
                    println!();
                }
            }
            0
        }
        Err(e) => {
            let hint = e.hint();
            eprintln!("error: {e}");
            if let Some(h) = &hint {
                eprintln!("hint: {h}");
            }
            if ctx.json {
                let mut v = serde_json::json!({
                    "error": { "code": e.code(), "message": e.to_string(), "hint": hint, "exit_code": e.exit_code() }
                });
                // `retort verify --json` failing: the report (`ok`, `steps`, …) goes with the error.
                if let (crate::Error::Verify(ve), Some(obj)) = (&e, v.as_object_mut()) {
                    if let Some(serde_json::Value::Object(report)) = ve.report() {
                        for (k, x) in report {
                            obj.insert(k.clone(), x.clone());
                        }
                    }
                }
                println!("{v}");
            }
            e.exit_code()
        }
    }
}
