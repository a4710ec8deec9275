//! Response bodies: every response is wrapped in [`Audited`], which counts the bytes handed to
//! the connection and appends the request's audit record when the response is done (sent in
//! full, cut short by the client, or dropped at shutdown).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

use super::Shared;
use crate::audit::{NewRecord, Outcome};

/// Any response body before auditing.
pub(crate) type Inner = UnsyncBoxBody<Bytes, io::Error>;

/// A body held in memory (JSON answers, errors).
pub(crate) fn full(bytes: impl Into<Bytes>) -> Inner {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the audit record of a request says, apart from the byte count and completeness.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) actor: String,
    pub(crate) action: &'static str,
    pub(crate) object: String,
    pub(crate) status: u16,
    /// Reason code for refusals and errors.
    pub(crate) reason: Option<&'static str>,
    pub(crate) details: serde_json::Map<String, serde_json::Value>,
}

/// A response body that audits itself when dropped.
pub(crate) struct Audited {
    inner: Inner,
    sent: u64,
    expected: Option<u64>,
    ended: bool,
    failed: Option<String>,
    started: Instant,
    entry: Option<(Entry, Arc<Shared>)>,
}

impl Audited {
    pub(crate) fn new(inner: Inner, entry: Entry, shared: Arc<Shared>) -> Audited {
        let expected = inner.size_hint().exact();
        Audited {
            inner,
            sent: 0,
            expected,
            ended: false,
            failed: None,
            started: Instant::now(),
            entry: Some((entry, shared)),
        }
    }

    fn complete(&self) -> bool {
        self.failed.is_none()
            && (self.ended || self.inner.is_end_stream() || self.expected == Some(self.sent))
    }
}

impl Body for Audited {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed = Some(e.to_string());
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        let Some((entry, shared)) = self.entry.take() else {
            return;
        };
        let complete = self.complete();
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .bytes_sent
            .fetch_add(self.sent, Ordering::Relaxed);
        let mut details = entry.details;
        details.insert("status".into(), entry.status.into());
        details.insert("bytes".into(), self.sent.into());
        details.insert("complete".into(), complete.into());
        details.insert(
            "ms".into(),
            (self.started.elapsed().as_millis() as u64).into(),
        );
        if let Some(why) = &self.failed {
            details.insert("body_error".into(), why.clone().into());
        }
        let (outcome, reason) = match (entry.status, entry.reason) {
            (200..=299, _) if !complete => (Outcome::Error, Some("serve-download-incomplete")),
            (200..=299, _) => (Outcome::Ok, None),
            (400..=499, r) => (Outcome::Refused, r),
            (_, r) => (Outcome::Error, r.or(Some("serve-internal"))),
        };
        let mut rec = NewRecord::new(&entry.actor, entry.action, &entry.object, outcome)
            .details(serde_json::Value::Object(details));
        rec.reason = reason.map(str::to_string);
        shared.audit.record(rec);
    }
}
