//! The server's audit writer: one thread appends records in order, so request handlers never
//! block on `fsync` except where they must (the intent record before a download).
//!
//! [`AuditLog::append`] takes the audit lock per record, so other retort commands can keep
//! appending while the server runs; the server never holds the workspace lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::audit::{AuditLog, NewRecord};

/// A record to append, and where to report the result (intent records wait for it).
struct Job {
    rec: NewRecord,
    done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// Handle to the audit thread.
pub(crate) struct Auditor {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<Result<(), crate::audit::Error>>>>,
    healthy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish()
    }
}

impl Auditor {
    /// Start the audit thread for the log in `dir`.
    pub(crate) fn start(dir: PathBuf) -> Result<Auditor, super::Error> {
        let (tx, rx) = mpsc::channel::<Job>();
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let thread = std::thread::Builder::new()
            .name("retort-serve-audit".into())
            .spawn(move || {
                let log = AuditLog::new(dir);
                let mut last = Ok(());
                for job in rx {
                    let r = log.append(job.rec);
                    h.store(r.is_ok(), Ordering::SeqCst);
                    if let Some(done) = job.done {
                        let _ = done.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    }
                    if let Err(e) = r {
                        tracing::error!("audit append failed: {e}");
                        last = Err(e);
                    } else {
                        last = Ok(());
                    }
                }
                last
            })
            .map_err(|e| super::Error::Startup {
                why: format!("cannot start the audit thread: {e}"),
            })?;
        Ok(Auditor {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            healthy,
        })
    }

    /// Whether the last append succeeded (requests are refused with 503 while it has not).
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    fn send(&self, job: Job) -> bool {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// Queue a record (the outcome of a request); does not wait.
    pub(crate) fn record(&self, rec: NewRecord) {
        if !self.send(Job { rec, done: None }) {
            tracing::error!("audit record dropped: the audit thread has stopped");
        }
    }

    /// Append a record and wait until it is durable (intent before a download).
    ///
    /// # Errors
    /// The append error, as text.
    pub(crate) async fn record_durably(&self, rec: NewRecord) -> Result<(), String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        if !self.send(Job {
            rec,
            done: Some(done),
        }) {
            return Err("the audit thread has stopped".into());
        }
        wait.await
            .unwrap_or_else(|_| Err("the audit thread has stopped".into()))
    }

    /// Stop accepting records, write the queued ones, and report whether the last append
    /// worked.
    ///
    /// # Errors
    /// The last append error.
    pub(crate) fn close(&self) -> super::Result<()> {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle.map(|h| h.join()) {
            Some(Ok(r)) => r.map_err(Into::into),
            Some(Err(_)) => Err(super::Error::Startup {
                why: "the audit thread panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Outcome;

    #[tokio::test]
    async fn records_in_order_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let a = Auditor::start(dir.path().to_path_buf()).unwrap();
        for i in 0..5 {
            a.record(NewRecord::new(
                "partner:x",
                "serve.request",
                &format!("/{i}"),
                Outcome::Ok,
            ));
        }
        a.record_durably(NewRecord::new(
            "partner:x",
            "serve.download",
            "p",
            Outcome::Intent,
        ))
        .await
        .unwrap();
        a.close().unwrap();
        let text = std::fs::read_to_string(dir.path().join("segment-000000.jsonl")).unwrap();
        let objects: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["object"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(objects, ["/0", "/1", "/2", "/3", "/4", "p"]);
        // After close, durable records fail instead of hanging.
        assert!(a
            .record_durably(NewRecord::new("partner:x", "a", "b", Outcome::Ok))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn unwritable_log_is_reported_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("audit");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let a = Auditor::start(blocker).unwrap();
        assert!(a
            .record_durably(NewRecord::new(
                "partner:x",
                "serve.download",
                "p",
                Outcome::Intent
            ))
            .await
            .is_err());
        assert!(!a.healthy());
        assert!(a.close().is_err());
    }
}
