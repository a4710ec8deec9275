//! `retort distill` (being built: see the issue that owns it).

use super::{Ctx, Report};
use crate::Result;

/// Arguments of `retort distill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments (not yet defined).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Run `retort distill`.
///
/// # Errors
/// Always, until the command is built.
pub fn run(_args: Args, _ctx: &mut Ctx) -> Result<Report> {
    Err(super::usage(
        "`retort distill` is not available in this build yet",
        "see README.md for the commands this version supports",
    ))
}
