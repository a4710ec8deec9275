//! One connection: admission (handshake places per peer address), the TLS handshake (bounded
//! in time, refusals audited), a connection slot (taken only now), then HTTP/1.1 with hyper
//! under the graceful-shutdown watcher. hyper enforces the request-head deadline; [`Pace`]
//! enforces the minimum rate at which a client must take the data it asked for. Every
//! connection closed by one of these limits is audited as `serve.connection` ([`dropped`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::routes::{self, Peer};
use super::{tls, Shared};
use crate::audit::{NewRecord, Outcome};

/// The key handshakes are counted under: the IPv4 address (also when IPv4-mapped), or the /64
/// prefix of an IPv6 address (one host usually holds a whole /64).
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Handshakes in progress per peer address.
#[derive(Debug)]
pub(crate) struct PeerLimiter {
    per_peer: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PeerLimiter {
    pub(crate) fn new(per_peer: usize) -> PeerLimiter {
        PeerLimiter {
            per_peer,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A place for one more handshake from `ip`, or `None` if it already has `per_peer`.
    pub(crate) fn enter(&self, ip: IpAddr) -> Option<PeerGuard> {
        let key = peer_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key).or_default();
        if *n >= self.per_peer {
            return None;
        }
        *n += 1;
        Some(PeerGuard {
            key,
            counts: self.counts.clone(),
        })
    }

    /// Handshakes in progress from `ip` (tests).
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&peer_key(ip)).copied().unwrap_or(0)
    }
}

/// One handshake place of a peer address; given back when dropped.
#[derive(Debug)]
pub(crate) struct PeerGuard {
    key: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What a connection holds until it has a connection slot: one of the overall handshake places
/// and one of its address's.
#[derive(Debug)]
pub(crate) struct Admission {
    _place: OwnedSemaphorePermit,
    _peer: PeerGuard,
}

impl Admission {
    /// Admit a connection from `ip` holding the overall place `place`, or `None` (the place is
    /// given back) when its address already has its share of handshakes in progress.
    pub(crate) fn new(
        place: OwnedSemaphorePermit,
        limiter: &PeerLimiter,
        ip: IpAddr,
    ) -> Option<Admission> {
        let peer = limiter.enter(ip)?;
        Some(Admission {
            _place: place,
            _peer: peer,
        })
    }
}

/// Count and audit (rate-limited) a connection closed by a limit or deadline.
pub(crate) fn dropped(
    shared: &Shared,
    actor: &str,
    peer: SocketAddr,
    reason: &'static str,
    why: String,
) {
    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("dropped the connection from {peer} ({reason}): {why}");
    shared.record_limited(
        reason,
        NewRecord::new(
            actor,
            "serve.connection",
            &peer.ip().to_string(),
            Outcome::Refused,
        )
        .reason(reason)
        .details(serde_json::json!({"peer": peer.to_string(), "why": why})),
    );
}

/// The audit actor of an authenticated peer (`partner:<name>`, or `partner:unknown` if the
/// partner was removed meanwhile).
async fn actor_of(shared: &Arc<Shared>, peer: &Peer) -> String {
    let partners = shared.partners.clone();
    let fp = peer.cert_sha256.clone();
    match tokio::task::spawn_blocking(move || partners.lookup(&fp)).await {
        Ok(Ok(Some(p))) => format!("partner:{}", p.name),
        _ => "partner:unknown".into(),
    }
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

pub(crate) async fn serve_connection(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    admission: Admission,
    slots: Arc<Semaphore>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let limits = shared.limits;
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
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
                shared.record_limited(
                    reason,
                    NewRecord::new(
                        "partner:unknown",
                        "serve.handshake",
                        &addr.ip().to_string(),
                        Outcome::Refused,
                    )
                    .reason(reason)
                    .details(details),
                );
            } else {
                tracing::debug!("handshake with {addr} failed: {e}");
            }
            return;
        }
        Err(_) => {
            dropped(
                &shared,
                "partner:unknown",
                addr,
                "serve-handshake-timeout",
                format!(
                    "the TLS handshake did not finish within {} s (--handshake-timeout)",
                    secs(limits.handshake_timeout)
                ),
            );
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
    // Only an authenticated partner takes a connection slot; it keeps its handshake places
    // while it waits, so waiting connections stay bounded too.
    let slot = match tokio::time::timeout(limits.handshake_timeout, slots.acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        Ok(Err(_)) => return, // the semaphore is never closed
        Err(_) => {
            let actor = actor_of(&shared, &peer).await;
            dropped(
                &shared,
                &actor,
                addr,
                "serve-busy",
                format!(
                    "no connection slot became free within {} s (all --max-connections are serving)",
                    secs(limits.handshake_timeout)
                ),
            );
            return;
        }
    };
    drop(admission);
    let state = Arc::new(ConnState::default());
    let io = Pace::new(tls, limits.idle_timeout, limits.min_rate, state.clone());
    let service_shared = shared.clone();
    let service_peer = peer.clone();
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        service_state.head_received();
        let shared = service_shared.clone();
        let peer = service_peer.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(req, &shared, &peer).await) }
    });
    let conn =
        super::http1_builder(limits.header_timeout).serve_connection(super::tokio_io(io), service);
    let result = watcher.watch(conn).await;
    drop(slot);
    let cut = if state.too_slow.load(Ordering::SeqCst) {
        Some((
            "serve-client-too-slow",
            format!(
                "the client took data slower than {} bytes/s over {} s of waiting (--min-rate, --idle-timeout)",
                limits.min_rate,
                secs(limits.idle_timeout)
            ),
        ))
    } else {
        match &result {
            Err(e) if e.is_timeout() && state.head_pending() => Some((
                "serve-header-timeout",
                format!(
                    "the request head was not complete within {} s (--header-timeout)",
                    secs(limits.header_timeout)
                ),
            )),
            _ => None,
        }
    };
    match (cut, result) {
        (Some((reason, why)), _) => {
            let actor = actor_of(&shared, &peer).await;
            dropped(&shared, &actor, addr, reason, why);
        }
        (None, Err(e)) => tracing::debug!("connection with {addr} ended: {e}"),
        (None, Ok(())) => {}
    }
}

/// What the connection code needs to know about a connection's traffic after hyper is done
/// with it.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Plaintext bytes read from the client.
    read: AtomicU64,
    /// `read` when the last request head was handed to the service.
    read_at_head: AtomicU64,
    /// Request heads received.
    requests: AtomicU64,
    /// The minimum-rate rule closed the connection.
    too_slow: AtomicBool,
}

impl ConnState {
    fn head_received(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.read_at_head
            .store(self.read.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Whether a request head was under way when the header deadline struck: no request yet on
    /// this connection, or bytes of the next one had arrived. (A kept-alive connection that
    /// just stays silent after its requests is closed at the same deadline, quietly.)
    fn head_pending(&self) -> bool {
        self.requests.load(Ordering::SeqCst) == 0
            || self.read.load(Ordering::SeqCst) > self.read_at_head.load(Ordering::SeqCst)
    }
}

/// An IO that enforces a minimum transfer rate on writes: while the server waits for the client
/// to take data (a write or flush returned `Pending`), the client must take at least
/// `min_rate` bytes per second of waiting, judged every `window` of accumulated waiting; a
/// window in which it took nothing always fails. Single bytes do not reset anything: a client
/// that reads a byte a second is cut after one or two windows. Reads pass through (the request
/// head has its own absolute deadline in hyper; request bodies are never read).
pub(crate) struct Pace<T> {
    inner: T,
    state: Arc<ConnState>,
    window: Duration,
    min_rate: u64,
    timer: Pin<Box<Sleep>>,
    /// A measurement is under way (it starts the first time the server waits on the client).
    active: bool,
    /// Waiting accumulated in the current measurement.
    waited: Duration,
    /// Bytes the client took during the current measurement.
    taken: u64,
    /// Since when the server has been waiting, if it is now.
    blocked_since: Option<Instant>,
    tripped: bool,
}

impl<T> Pace<T> {
    pub(crate) fn new(inner: T, window: Duration, min_rate: u64, state: Arc<ConnState>) -> Pace<T> {
        Pace {
            inner,
            state,
            window,
            min_rate,
            timer: Box::pin(tokio::time::sleep(window)),
            active: false,
            waited: Duration::ZERO,
            taken: 0,
            blocked_since: None,
            tripped: false,
        }
    }

    fn slow_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client takes data slower than the minimum rate",
        )
    }

    /// Judge the current measurement; `false` (and the connection is condemned) if the client
    /// took too little.
    fn judge(&mut self) -> bool {
        let need = self.min_rate as f64 * self.waited.as_secs_f64();
        if self.taken == 0 || (self.taken as f64) < need {
            self.tripped = true;
            self.state.too_slow.store(true, Ordering::SeqCst);
            return false;
        }
        self.waited = Duration::ZERO;
        self.taken = 0;
        true
    }

    /// The client took `n` bytes (or a flush completed: `n` = 0).
    fn progress(&mut self, n: usize) {
        if !self.active {
            return;
        }
        self.taken += n as u64;
        if let Some(since) = self.blocked_since.take() {
            self.waited += Instant::now().saturating_duration_since(since);
            if self.waited >= self.window && self.judge() {
                // Passed while no longer waiting: the next wait starts a new measurement.
                self.active = false;
            }
        }
    }

    /// The server waits on the client: arm (or check) the window timer.
    fn blocked<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.tripped {
            return Poll::Ready(Err(Self::slow_error()));
        }
        let now = Instant::now();
        if !self.active {
            self.active = true;
            self.waited = Duration::ZERO;
            self.taken = 0;
        }
        if self.blocked_since.is_none() {
            self.blocked_since = Some(now);
            let left = self.window.saturating_sub(self.waited);
            self.timer.as_mut().reset(now + left);
        }
        loop {
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let now = Instant::now();
                    let since = self.blocked_since.replace(now).unwrap_or(now);
                    self.waited += now.saturating_duration_since(since);
                    if !self.judge() {
                        return Poll::Ready(Err(Self::slow_error()));
                    }
                    // Still waiting, with a fresh measurement.
                    self.timer.as_mut().reset(now + self.window);
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Pace<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            this.state.read.fetch_add(n, Ordering::SeqCst);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Pace<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tripped {
            return Poll::Ready(Err(Self::slow_error()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.progress(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.blocked(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tripped {
            return Poll::Ready(Err(Self::slow_error()));
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.progress(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.blocked(cx),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped {
            return Poll::Ready(Err(Self::slow_error()));
        }
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                this.progress(0);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.blocked(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped {
            return Poll::Ready(Err(Self::slow_error()));
        }
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.blocked(cx),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pace<T>(io: T, window_ms: u64, min_rate: u64) -> (Pace<T>, Arc<ConnState>) {
        let state = Arc::new(ConnState::default());
        let p = Pace::new(
            io,
            Duration::from_millis(window_ms),
            min_rate,
            state.clone(),
        );
        (p, state)
    }

    /// Write `total` bytes through `w`; the error kind if it fails.
    async fn write_all(
        w: &mut (impl AsyncWrite + Unpin),
        total: usize,
    ) -> Result<(), io::ErrorKind> {
        let chunk = vec![7u8; 4096];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).await.map_err(|e| e.kind())?;
            left -= n;
        }
        w.flush().await.map_err(|e| e.kind())
    }

    #[tokio::test]
    async fn a_client_reading_a_byte_at_a_time_is_cut_although_bytes_keep_moving() {
        // The old idle timer was reset by every byte; this reader takes one every 20 ms
        // (50 bytes/s) and must be cut by a 2000 bytes/s minimum within a few windows.
        let (a, mut b) = tokio::io::duplex(64);
        let (mut p, state) = pace(a, 200, 2000);
        let reader = tokio::spawn(async move {
            let mut one = [0u8; 1];
            let mut got = 0usize;
            while let Ok(1) = b.read(&mut one).await {
                got += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            got
        });
        let t0 = std::time::Instant::now();
        let r = write_all(&mut p, 1 << 20).await;
        assert_eq!(r, Err(io::ErrorKind::TimedOut));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "cut before one window: {took:?}"
        );
        assert!(took < Duration::from_secs(2), "cut too late: {took:?}");
        assert!(state.too_slow.load(Ordering::SeqCst));
        drop(p);
        let got = reader.await.unwrap();
        assert!(
            got > 3,
            "the reader did take bytes ({got}), and was still cut"
        );
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_is_cut_even_without_a_minimum_rate() {
        let (a, _b) = tokio::io::duplex(64);
        let (mut p, state) = pace(a, 150, 0);
        let r = write_all(&mut p, 4096).await;
        assert_eq!(r, Err(io::ErrorKind::TimedOut));
        assert!(state.too_slow.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_steady_client_downloads_everything_through_many_windows() {
        // 64 KiB every 10 ms (about 6 MB/s) against a 1 MB/s minimum judged every 100 ms: the
        // writer waits on the reader all the time, through several windows, and is never cut.
        let (a, mut b) = tokio::io::duplex(64 << 10);
        let (mut p, state) = pace(a, 100, 1 << 20);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            let mut got = 0usize;
            loop {
                match b.read(&mut buf).await {
                    Ok(0) | Err(_) => break got,
                    Ok(n) => got += n,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let total = 4 << 20;
        let t0 = std::time::Instant::now();
        write_all(&mut p, total).await.unwrap();
        p.shutdown().await.unwrap();
        drop(p);
        assert_eq!(reader.await.unwrap(), total);
        assert!(!state.too_slow.load(Ordering::SeqCst));
        assert!(
            t0.elapsed() > Duration::from_millis(300),
            "too fast to span several windows"
        );
    }

    #[tokio::test]
    async fn waiting_for_a_request_is_not_judged_by_the_rate_rule() {
        // Reads are not the rate rule's business (the request head has hyper's deadline): a
        // silent client is not cut by Pace, and bytes read are counted for the head check.
        let (a, mut b) = tokio::io::duplex(64);
        let (mut p, state) = pace(a, 50, 1_000_000);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_millis(300), p.read(&mut buf)).await;
        assert!(r.is_err(), "the read must still be waiting");
        b.write_all(b"GET").await.unwrap();
        assert_eq!(p.read(&mut buf).await.unwrap(), 3);
        assert!(!state.too_slow.load(Ordering::SeqCst));
        assert!(state.head_pending());
        state.head_received();
        assert!(
            !state.head_pending(),
            "a silent kept-alive connection is not a slow head"
        );
        b.write_all(b"G").await.unwrap();
        assert_eq!(p.read(&mut buf).await.unwrap(), 1);
        assert!(state.head_pending());
    }

    #[test]
    fn handshake_places_per_address_and_ipv6_prefix() {
        let l = PeerLimiter::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = l.enter(a).unwrap();
        let g2 = l.enter(a).unwrap();
        assert!(l.enter(a).is_none(), "a third handshake from one address");
        let _g3 = l.enter(b).expect("another address is not affected");
        drop(g1);
        let g4 = l
            .enter(a)
            .expect("a place is given back when a handshake ends");
        drop((g2, g4));
        assert_eq!(l.count(a), 0);
        // IPv4-mapped IPv6 counts as the IPv4 address; an IPv6 /64 is one peer.
        let mapped: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        let _g5 = l.enter(mapped).unwrap();
        assert!(l.enter(b).is_none());
        let x: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::99".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::10".parse().unwrap();
        let _h1 = l.enter(x).unwrap();
        let _h2 = l.enter(y).unwrap();
        assert!(l.enter(x).is_none(), "same /64");
        assert!(l.enter(z).is_some(), "another /64");
    }
}
