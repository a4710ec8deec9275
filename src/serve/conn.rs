//! One connection: TLS handshake (bounded in time, refusals audited), partner identity, then
//! HTTP/1.1 with hyper under the graceful-shutdown watcher. [`Idle`] closes connections that
//! move no bytes in either direction for the idle timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::routes::{self, Peer};
use super::{tls, Shared, HANDSHAKE_TIMEOUT};
use crate::audit::{NewRecord, Outcome};

pub(crate) async fn serve_connection(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    idle: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let io = Idle::new(tcp, idle);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            if let Some((reason, cert, why)) = tls::refusal(&e) {
                shared
                    .counters
                    .handshakes_refused
                    .fetch_add(1, Ordering::Relaxed);
                let mut details = serde_json::json!({"peer": addr.to_string(), "tls_error": why});
                if let Some(c) = cert {
                    details["cert_sha256"] = c.into();
                }
                let (own, suppressed) = shared.refusals.admit();
                if suppressed > 0 {
                    shared.audit.record(super::suppressed_record(suppressed));
                }
                if own {
                    shared.audit.record(
                        NewRecord::new(
                            "partner:unknown",
                            "serve.handshake",
                            &addr.ip().to_string(),
                            Outcome::Refused,
                        )
                        .reason(reason)
                        .details(details),
                    );
                }
            } else {
                tracing::debug!("handshake with {addr} failed: {e}");
            }
            return;
        }
        Err(_) => {
            tracing::debug!("handshake with {addr} timed out");
            return;
        }
    };
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        // The verifier makes a certificate mandatory; nothing to serve without one.
        return;
    };
    let peer = Peer {
        addr,
        cert_sha256: tls::cert_fingerprint(cert.as_ref()),
    };
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = service_shared.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(req, &shared, &peer).await) }
    });
    let conn = super::http1_builder().serve_connection(super::tokio_io(tls), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection with {addr} ended: {e}");
    }
}

/// An IO that fails with `TimedOut` once no byte has moved in either direction for `limit`.
pub(crate) struct Idle<T> {
    inner: T,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> Idle<T> {
    pub(crate) fn new(inner: T, limit: Duration) -> Idle<T> {
        Idle {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    fn touch(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.limit);
    }

    /// On `Pending`, check (and arm) the idle timer.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.touch();
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.touch();
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.pending(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_connection_times_out_and_active_one_does_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::from_millis(150));
        // Active: bytes every 50 ms keep it open past the limit.
        let writer = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                b.write_all(b"x").await.unwrap();
            }
            b // keep the other end open, silent
        });
        let mut buf = [0u8; 1];
        for _ in 0..6 {
            idle.read_exact(&mut buf).await.unwrap();
        }
        let _b = writer.await.unwrap();
        let e = idle.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
