//! Mutual-TLS package service for partners (`retort serve`).
//!
//! Partners pull the signed packages made for them over HTTPS, read-only. What this module
//! guarantees:
//! - **Authentication.** TLS 1.3 (1.2 only when asked for), a client certificate is mandatory
//!   and must chain to the configured client CA (rustls' `WebPkiClientVerifier`, ring
//!   provider). The partner's identity is the SHA-256 fingerprint of its certificate (DER),
//!   looked up in the workspace's partner table; a certificate that chains but is not
//!   registered is refused during the handshake, and the table is looked up again on every
//!   request so a removed partner loses access without a restart.
//! - **Authorisation without existence leaks.** A partner sees only packages whose index entry
//!   (`packages/<id>.meta.json`) names it; another partner's package answers 404, exactly like a
//!   package that does not exist.
//! - **Audit.** Every request is recorded (partner, path, status, bytes) with actor
//!   `partner:<name>`, and so are handshakes that rustls refuses. A package download is
//!   preceded by an intent record and is refused (503) if that record cannot be written (fail
//!   closed). The server never holds the workspace lock; the audit log takes its own lock per
//!   record.
//! - **Operations.** Streaming downloads (a tar is built on the fly, a file is read in chunks),
//!   bounded connections, header size and idle time, graceful shutdown on SIGTERM / Ctrl-C
//!   (in-flight downloads finish, then the audit log is closed and checkpointed).
//!
//! The library never prints; the CLI (`cli/serve.rs`) reports through [`Server::local_addr`]
//! and the [`Summary`] that [`Server::run`] returns.

mod audit;
mod body;
mod conn;
mod partners;
mod routes;
mod tarstream;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::{Class, Coded};
use crate::workspace::Workspace;

pub use partners::{PartnerDirectory, PartnerInfo};

/// Default for `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// A connection with no traffic in either direction for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake must finish within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line + headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most header fields accepted in a request.
pub const MAX_HEADERS: usize = 64;
/// How long a shutdown waits for in-flight downloads before closing them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of this module (all at startup: once serving, failures are per request and audited).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A certificate, key or CA file cannot be read.
    #[error("cannot read the {what} file {path}: {source}")]
    Unreadable {
        /// Which file ("server certificate", "server key", "client CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server certificate file holds no usable PEM certificate.
    #[error("{path}: not a PEM certificate chain ({why})")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The server key file holds no usable PEM private key.
    #[error("{path}: not a PEM private key ({why})")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the key {key} does not match the certificate {cert} ({why})")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
    /// The client CA file holds no usable CA certificate.
    #[error("{path}: no usable client CA certificate ({why})")]
    BadClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No partner has a client certificate registered, so nobody could connect.
    #[error("no partner has a client certificate registered in {source_name}")]
    NoPartners {
        /// Where partners were looked up.
        source_name: String,
    },
    /// The listening socket cannot be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid option values.
    #[error("invalid serve option: {what}")]
    BadOption {
        /// What is wrong.
        what: String,
    },
    /// The async runtime or another part of the server could not start.
    #[error("the server could not start: {why}")]
    Startup {
        /// What failed.
        why: String,
    },
    /// The workspace cannot be opened (code and hint of the workspace error).
    #[error(transparent)]
    Workspace(#[from] crate::workspace::Error),
    /// The policy in force cannot be read or does not validate (code and hint of the policy
    /// error).
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    /// The audit log cannot be written (code and hint of the audit error).
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable codes of this module, including the per-request reason codes the server writes
    /// into audit records. The wrapped workspace, policy and audit errors keep their own
    /// modules' codes.
    pub const CODES: &'static [&'static str] = &[
        "serve-file-unreadable",
        "serve-cert-invalid",
        "serve-key-invalid",
        "serve-key-mismatch",
        "serve-client-ca-invalid",
        "serve-no-partners",
        "serve-bind-failed",
        "serve-option-invalid",
        "serve-startup-failed",
        // Per-request / per-handshake reasons (audit records only):
        "serve-handshake-refused",
        "serve-partner-unknown",
        "serve-not-found",
        "serve-method-not-allowed",
        "serve-audit-unavailable",
        "serve-internal",
        "serve-download-incomplete",
    ];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Unreadable { .. } => "serve-file-unreadable",
            Error::BadCert { .. } => "serve-cert-invalid",
            Error::BadKey { .. } => "serve-key-invalid",
            Error::KeyMismatch { .. } => "serve-key-mismatch",
            Error::BadClientCa { .. } => "serve-client-ca-invalid",
            Error::NoPartners { .. } => "serve-no-partners",
            Error::Bind { .. } => "serve-bind-failed",
            Error::BadOption { .. } => "serve-option-invalid",
            Error::Startup { .. } => "serve-startup-failed",
            Error::Workspace(e) => e.code(),
            Error::Policy(e) => e.code(),
            Error::Audit(e) => e.code(),
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Unreadable { path, .. } => format!(
                "check that {} exists and is readable by the user running retort (keys: mode 0600, owned by that user)",
                path.display()
            ),
            Error::BadCert { .. } => "give --cert a PEM file starting with -----BEGIN CERTIFICATE----- (the server certificate first, then any intermediates); see docs/serve.md".into(),
            Error::BadKey { .. } => "give --key the PEM private key (PKCS#8, PKCS#1 or SEC1) that was generated with the server certificate's request; see docs/serve.md".into(),
            Error::KeyMismatch { .. } => "--cert and --key must be a pair: compare `openssl x509 -in CERT -noout -pubkey` with `openssl pkey -in KEY -pubout`".into(),
            Error::BadClientCa { .. } => "give --client-ca the PEM certificate of the CA that signs partner certificates (not a partner certificate, not the server key); see docs/serve.md".into(),
            Error::NoPartners { .. } => "register a partner's client certificate first: `retort policy add-partner NAME --client-cert PEM`".into(),
            Error::Bind { .. } => "choose a free address with --listen (ports below 1024 need privileges; see the systemd unit in examples/)".into(),
            Error::BadOption { .. } => "see `retort serve --help`".into(),
            Error::Startup { .. } => "check the host's limits (open files, threads) and try again".into(),
            Error::Workspace(e) => return e.hint(),
            Error::Policy(e) => return e.hint(),
            Error::Audit(e) => return e.hint(),
        })
    }
    fn class(&self) -> Class {
        match self {
            Error::BadOption { .. } => Class::Usage,
            Error::Workspace(e) => e.class(),
            Error::Policy(e) => e.class(),
            Error::Audit(e) => e.class(),
            _ => Class::Input,
        }
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on (port 0 picks a free port; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// PEM certificate chain of the server (leaf first).
    pub cert: PathBuf,
    /// PEM private key of the server certificate.
    pub key: PathBuf,
    /// PEM certificate(s) of the CA that signs partner certificates.
    pub client_ca: PathBuf,
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Close connections idle this long.
    pub idle_timeout: Duration,
    /// Also offer TLS 1.2 (TLS 1.3 only by default).
    pub allow_tls12: bool,
    /// How long a shutdown waits for in-flight downloads.
    pub drain_timeout: Duration,
    /// Policy file to use instead of the workspace's active policy (the global `--policy`).
    pub policy: Option<PathBuf>,
}

impl Options {
    /// Options with the defaults for limits and timeouts.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Options {
        Options {
            listen,
            cert,
            key,
            client_ca,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            allow_tls12: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            policy: None,
        }
    }
}

/// What a server did, returned when it stops.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Connections accepted (TCP).
    pub connections: u64,
    /// Handshakes refused (no, unknown, expired or unregistered certificate, protocol errors).
    pub handshakes_refused: u64,
    /// HTTP requests answered.
    pub requests: u64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// Connections cut at the end of the drain timeout.
    pub connections_cut: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_records_are_rate_limited_and_summarised() {
        let l = RefusalLimiter::new();
        let admitted = (0..50).filter(|_| l.admit().0).count();
        assert_eq!(admitted, MAX_REFUSAL_RECORDS_PER_SECOND as usize);
        assert_eq!(
            l.take_suppressed(),
            50 - MAX_REFUSAL_RECORDS_PER_SECOND as u64
        );
        assert_eq!(l.take_suppressed(), 0);
    }

    #[test]
    fn codes_are_prefixed() {
        assert!(Error::CODES.iter().all(|c| c.starts_with("serve-")));
    }
}

/// Counters shared by all connections.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
}

/// At most this many refused-handshake records are written per second; the rest are counted
/// and summarised in one record, so a flood of bad handshakes cannot fill the disk.
pub const MAX_REFUSAL_RECORDS_PER_SECOND: u32 = 20;

/// Rate limit for refused-handshake audit records.
#[derive(Debug)]
pub(crate) struct RefusalLimiter {
    state: std::sync::Mutex<(std::time::Instant, u32, u64)>,
}

impl RefusalLimiter {
    fn new() -> RefusalLimiter {
        RefusalLimiter {
            state: std::sync::Mutex::new((std::time::Instant::now(), 0, 0)),
        }
    }

    /// Whether this refusal gets its own record, and how many earlier ones were suppressed and
    /// must now be reported in a summary record.
    pub(crate) fn admit(&self) -> (bool, u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let mut report = 0;
        if now.duration_since(s.0) >= Duration::from_secs(1) {
            report = s.2;
            *s = (now, 0, 0);
        }
        if s.1 < MAX_REFUSAL_RECORDS_PER_SECOND {
            s.1 += 1;
            (true, report)
        } else {
            s.2 += 1;
            (false, report)
        }
    }

    /// Suppressed refusals not yet reported (at shutdown).
    pub(crate) fn take_suppressed(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut s.2)
    }
}

/// The summary record for suppressed handshake refusals.
pub(crate) fn suppressed_record(n: u64) -> crate::audit::NewRecord {
    crate::audit::NewRecord::new(
        "partner:unknown",
        "serve.handshake",
        "suppressed",
        crate::audit::Outcome::Refused,
    )
    .reason("serve-handshake-refused")
    .details(serde_json::json!({
        "suppressed": n,
        "why": format!("more than {MAX_REFUSAL_RECORDS_PER_SECOND} refused handshakes in one second; counted, not recorded one by one"),
    }))
}

/// State every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) packages_dir: PathBuf,
    pub(crate) partners: Arc<PartnerDirectory>,
    pub(crate) audit: audit::Auditor,
    pub(crate) counters: Counters,
    pub(crate) refusals: RefusalLimiter,
}

/// Facts about the server's TLS identity, for the startup audit record and the operator.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct Identity {
    /// SHA-256 (hex) of the server certificate (DER).
    pub server_cert_sha256: String,
    /// SHA-256 (hex) of each client CA certificate (DER).
    pub client_ca_sha256: Vec<String>,
    /// Partners that can connect (names), at startup.
    pub partners: Vec<String>,
    /// The policy in force at startup (`{"name","sha256","path"}`).
    pub policy: serde_json::Value,
}

/// A bound, configured server; [`Server::run`] serves until the shutdown future resolves.
pub struct Server {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    options: Options,
    identity: Identity,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listener.local_addr().ok())
            .field("options", &self.options)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Load the certificates and key, check them, load the partner table, and bind the
    /// listening socket. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// `serve-file-unreadable`, `serve-cert-invalid`, `serve-key-invalid`,
    /// `serve-key-mismatch`, `serve-client-ca-invalid`, `serve-no-partners`,
    /// `serve-bind-failed`, `serve-option-invalid`; workspace errors.
    pub async fn bind(ws: &Workspace, options: Options) -> Result<Server> {
        if options.max_connections == 0 {
            return Err(Error::BadOption {
                what: "--max-connections must be at least 1".into(),
            });
        }
        let partners = Arc::new(PartnerDirectory::new(ws.root(), options.policy.clone()));
        let names = partners.names()?;
        let policy = partners.policy_identity()?;
        if names.is_empty() {
            return Err(Error::NoPartners {
                source_name: format!(
                    "the policy {}",
                    policy["path"].as_str().unwrap_or("in force")
                ),
            });
        }
        let loaded = tls::server_config(&options, partners.clone())?;
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: options.listen,
                source,
            })?;
        let identity = Identity {
            server_cert_sha256: loaded.server_cert_sha256,
            client_ca_sha256: loaded.client_ca_sha256,
            partners: names,
            policy,
        };
        let shared = Arc::new(Shared {
            packages_dir: ws.packages_dir(),
            partners,
            audit: audit::Auditor::start(ws.audit_dir())?,
            counters: Counters::default(),
            refusals: RefusalLimiter::new(),
        });
        Ok(Server {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(loaded.config),
            shared,
            options,
            identity,
        })
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    /// Never in practice (the socket is bound); an I/O error otherwise.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's TLS identity and the partners that can connect.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Serve until `shutdown` resolves, then stop accepting, let in-flight requests finish
    /// (up to the drain timeout), and flush every audit record. Returns what was served.
    ///
    /// # Errors
    /// `audit-*` if the final audit records cannot be flushed.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<Summary> {
        let Server {
            listener,
            acceptor,
            shared,
            options,
            identity: _,
        } = self;
        let limit = Arc::new(Semaphore::new(options.max_connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => p.expect("invariant: the semaphore is never closed"),
            };
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            shared.counters.connections.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            let shared = shared.clone();
            let acceptor = acceptor.clone();
            let watcher = graceful.watcher();
            let idle = options.idle_timeout;
            // Reap finished connection tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                conn::serve_connection(tcp, peer, acceptor, shared, idle, watcher).await;
                drop(permit);
            });
        }
        drop(listener);
        // Drain: watched connections finish their requests; connections still in their
        // handshake are bounded by the handshake timeout and then shut down at once.
        let deadline = tokio::time::Instant::now() + options.drain_timeout;
        let drained = tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_ok()
            && tokio::time::timeout_at(deadline, async {
                while tasks.join_next().await.is_some() {}
            })
            .await
            .is_ok();
        let mut cut = 0u64;
        if !drained {
            cut = tasks.len() as u64;
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        // Every response body is dropped by now, so every record is queued: flush them.
        let c = &shared.counters;
        let summary = Summary {
            connections: c.connections.load(Ordering::Relaxed),
            handshakes_refused: c.handshakes_refused.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            connections_cut: cut,
        };
        let suppressed = shared.refusals.take_suppressed();
        if suppressed > 0 {
            shared.audit.record(suppressed_record(suppressed));
        }
        shared.audit.close()?;
        Ok(summary)
    }
}

/// A future that resolves on SIGTERM, or once Ctrl-C has been pressed (the CLI's Ctrl-C handler
/// sets [`crate::progress::is_cancelled`]; a second Ctrl-C aborts, as everywhere in Retort).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        while !crate::progress::is_cancelled() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = term => {}
        _ = interrupt => {}
    }
}

/// The http1 connection settings: header limits and the header-read timeout.
pub(crate) fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    b
}

/// Wrap an IO for hyper.
pub(crate) fn tokio_io<T>(io: T) -> TokioIo<T> {
    TokioIo::new(io)
}

/// The package directory of `id` under `packages_dir`.
pub(crate) fn package_dir(packages_dir: &Path, id: &str) -> PathBuf {
    packages_dir.join(id)
}
