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

/// A command-line error clap found before the command ran: printed as clap prints it (help and
/// version to stdout with exit 0; errors to stderr with exit 2), and under `--json` an error
/// line on stdout like every other failure's (`code` `usage`, exit code 2).
pub fn clap_error(e: &clap::Error, json: bool) -> u8 {
    let code = if e.use_stderr() { 2 } else { 0 };
    let _ = e.print();
    if json && code != 0 {
        let (message, hint) = clap_parts(&e.to_string());
        let v = serde_json::json!({
            "error": { "code": "usage", "message": message, "hint": hint, "exit_code": code }
        });
        println!("{v}");
    }
    code
}

/// The first line of a clap error (without `error: `) and a hint from its `tip:` and `Usage:`
/// lines.
fn clap_parts(text: &str) -> (String, String) {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let message = lines
        .next()
        .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_string())
        .unwrap_or_else(|| "invalid command line".into());
    let mut hint: Vec<String> = Vec::new();
    for l in lines {
        if let Some(t) = l.strip_prefix("tip: ") {
            hint.push(t.to_string());
        } else if let Some(u) = l.strip_prefix("Usage: ") {
            hint.push(format!("usage: {u}"));
        }
    }
    hint.push("see `retort --help` or `retort <command> --help`".into());
    (message, hint.join("; "))
}

/// A number for people: `digits` decimals, never `-0` (full precision stays in `--json`).
pub fn num(x: f64, digits: usize) -> String {
    let s = format!("{:.*}", digits, x);
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// An epsilon for people (4 decimals, never `-0.0000`).
pub fn eps(x: f64) -> String {
    num(x, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people_never_show_minus_zero() {
        assert_eq!(eps(-0.0), "0.0000");
        assert_eq!(eps(-0.00001), "0.0000");
        assert_eq!(eps(-0.5), "-0.5000");
        assert_eq!(eps(1.23456789), "1.2346");
        assert_eq!(num(2.0, 0), "2");
    }

    #[test]
    fn clap_errors_split_into_message_and_hint() {
        let (m, h) = clap_parts(
            "error: unexpected argument '--frob' found\n\n  tip: to pass '--frob' as a value, use '-- --frob'\n\nUsage: retort init [OPTIONS]\n\nFor more information, try '--help'.\n",
        );
        assert_eq!(m, "unexpected argument '--frob' found");
        assert!(
            h.contains("to pass '--frob' as a value") && h.contains("usage: retort init [OPTIONS]")
        );
    }
}
