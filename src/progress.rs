//! Progress reporting and cancellation, without printing: the library reports through a
//! callback ([`Sink`]) and checks a process-wide cancellation flag that the CLI sets on Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};

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

/// `Err(Error::Cancelled)` once cancellation was requested.
///
/// # Errors
/// `cancelled`.
pub fn check() -> crate::Result<()> {
    if is_cancelled() {
        Err(crate::Error::Cancelled)
    } else {
        Ok(())
    }
}
