//! Progress reporting and cancellation, without printing: the library reports through a
//! callback ([`Sink`]) and checks a process-wide cancellation flag that the CLI sets on Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Coded;

/// A progress event.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A phase starts with `total` units of work (0 = unknown).
    Start {
        /// What is being done.
        label: &'a str,
        /// Units of work.
        total: u64,
    },
    /// `n` more units are done.
    Advance(u64),
    /// A status message.
    Message(&'a str),
    /// The phase is over.
    Finish,
}

/// Where progress goes.
pub type Sink<'a> = &'a (dyn Fn(Event<'_>) + Sync);

/// A sink that drops everything.
pub fn silent(_: Event<'_>) {}

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Ask long-running work to stop at its next check (the CLI calls this on Ctrl-C).
pub fn request_cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// True once cancellation was requested.
pub fn is_cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// `Err(Cancelled)` once cancellation was requested.
///
/// # Errors
/// `cancelled`.
pub fn check() -> Result<(), Cancelled> {
    if is_cancelled() {
        Err(Cancelled)
    } else {
        Ok(())
    }
}

/// The work stopped because cancellation was requested (Ctrl-C). Module errors wrap it (or map
/// it to their own `…-cancelled` code) and the top-level error reports it as `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled by the user")]
pub struct Cancelled;

impl Cancelled {
    /// Stable codes of this type.
    pub const CODES: &'static [&'static str] = &["cancelled"];
}

impl Coded for Cancelled {
    fn code(&self) -> &'static str {
        "cancelled"
    }
    fn hint(&self) -> Option<String> {
        Some("nothing was stored; run the command again to finish it".into())
    }
}
