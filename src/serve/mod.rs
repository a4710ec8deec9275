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
//!   graceful shutdown on SIGTERM / Ctrl-C (in-flight downloads finish, then the audit log is
//!   closed and checkpointed).
//! - **Bounded connections** (see `conn`). A connection slot is taken only after a successful
//!   handshake; handshakes in progress are limited per peer address and overall and have a
//!   deadline; a request head has an absolute deadline; a client must take response data at a
//!   minimum rate. Every connection closed by one of these limits is audited
//!   (`serve.connection`, rate-limited with the refused handshakes).
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

/// Default for `--max-connections`: partner connections served at once (a slot is taken only
/// after a successful handshake).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default for `--max-handshakes`: TLS handshakes in progress at once, all peers together
/// (more connections wait in the kernel's accept queue).
pub const DEFAULT_MAX_HANDSHAKES: usize = 128;
/// Default for `--max-handshakes-per-ip`: TLS handshakes in progress at once from one peer
/// address (IPv4 address or IPv6 /64); a connection beyond it is closed at once.
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: usize = 8;
/// Default for `--idle-timeout`: the window over which the minimum transfer rate is measured
/// while the server waits for a client to take data (a client that takes nothing for this
/// long is always cut).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `--min-rate`: bytes per second a client must take while the server waits on it.
pub const DEFAULT_MIN_RATE: u64 = 4096;
/// Default for `--handshake-timeout`: a TLS handshake (and the wait for a connection slot after
/// it) must finish within this time.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `--header-timeout`: a request head must be complete this long after the server
/// starts reading it (an absolute deadline: bytes arriving do not extend it).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
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
        // Connections closed by a limit or deadline (audit records only):
        "serve-handshake-timeout",
        "serve-handshake-limit",
        "serve-header-timeout",
        "serve-client-too-slow",
        "serve-busy",
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
    /// Most partner connections served at once. A slot is taken only after a successful
    /// handshake; an authenticated connection waits up to `handshake_timeout` for one.
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once, all peers together; more connections wait in
    /// the kernel's accept queue.
    pub max_handshakes: usize,
    /// Most TLS handshakes in progress at once from one peer address (IPv4 address, IPv6 /64);
    /// a connection beyond it is closed at once.
    pub max_handshakes_per_ip: usize,
    /// A TLS handshake, and then the wait for a connection slot, must each finish within this.
    pub handshake_timeout: Duration,
    /// A request head must be complete within this of the server starting to read it.
    pub header_timeout: Duration,
    /// The window of the minimum-rate rule: over every `idle_timeout` of waiting for a client
    /// to take data, it must take `min_rate` bytes per second.
    pub idle_timeout: Duration,
    /// Bytes per second a client must take while the server waits on it (0: no rate rule,
    /// only the idle window).
    pub min_rate: u64,
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
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_ip: DEFAULT_MAX_HANDSHAKES_PER_IP,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
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
    /// Connections closed by a limit or deadline: handshakes over the per-address limit or
    /// past their deadline, no connection slot in time, a request head past its deadline, a
    /// client taking data slower than the minimum rate (each audited as `serve.connection`).
    pub connections_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_records_are_rate_limited_and_summarised() {
        let l = RefusalLimiter::new();
        let admitted = (0..50)
            .filter(|i| {
                let reason = if i % 2 == 0 {
                    "serve-handshake-refused"
                } else {
                    "serve-header-timeout"
                };
                l.admit(reason).0
            })
            .count();
        assert_eq!(admitted, MAX_REFUSAL_RECORDS_PER_SECOND as usize);
        // The 30 suppressed ones are counted per reason (records 20..50 alternate).
        assert_eq!(
            l.take_suppressed(),
            vec![
                ("serve-handshake-refused", 15),
                ("serve-header-timeout", 15)
            ]
        );
        assert!(l.take_suppressed().is_empty());
        // Summary records name the right action.
        let r = suppressed_record("serve-header-timeout", 3);
        assert_eq!(r.action, "serve.connection");
        let r = suppressed_record("serve-partner-unknown", 3);
        assert_eq!(r.action, "serve.handshake");
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
    pub(crate) dropped: AtomicU64,
}

/// At most this many connection-level records (refused handshakes, dropped connections) are
/// written per second; the rest are counted and summarised in one record per reason, so a flood
/// of bad or slow clients cannot fill the disk.
pub const MAX_REFUSAL_RECORDS_PER_SECOND: u32 = 20;

/// Rate limit for connection-level audit records (refused handshakes, dropped connections).
#[derive(Debug)]
pub(crate) struct RefusalLimiter {
    state: std::sync::Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    /// Start of the current one-second window.
    since: std::time::Instant,
    /// Records admitted in it.
    admitted: u32,
    /// Suppressed records not yet summarised, per reason code.
    suppressed: std::collections::BTreeMap<&'static str, u64>,
}

impl RefusalLimiter {
    fn new() -> RefusalLimiter {
        RefusalLimiter {
            state: std::sync::Mutex::new(LimiterState {
                since: std::time::Instant::now(),
                admitted: 0,
                suppressed: std::collections::BTreeMap::new(),
            }),
        }
    }

    /// Whether this record (with reason code `reason`) is written on its own, and the earlier
    /// suppressed ones (per reason) that must now be reported in summary records.
    pub(crate) fn admit(&self, reason: &'static str) -> (bool, Vec<(&'static str, u64)>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let mut report = Vec::new();
        if now.duration_since(s.since) >= Duration::from_secs(1) {
            report = std::mem::take(&mut s.suppressed).into_iter().collect();
            s.since = now;
            s.admitted = 0;
        }
        if s.admitted < MAX_REFUSAL_RECORDS_PER_SECOND {
            s.admitted += 1;
            (true, report)
        } else {
            *s.suppressed.entry(reason).or_default() += 1;
            (false, report)
        }
    }

    /// Suppressed records not yet reported, per reason (at shutdown).
    pub(crate) fn take_suppressed(&self) -> Vec<(&'static str, u64)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut s.suppressed).into_iter().collect()
    }
}

/// The summary record for `n` suppressed records with reason `reason`.
pub(crate) fn suppressed_record(reason: &'static str, n: u64) -> crate::audit::NewRecord {
    let action = match reason {
        "serve-handshake-refused" | "serve-partner-unknown" => "serve.handshake",
        _ => "serve.connection",
    };
    crate::audit::NewRecord::new(
        "partner:unknown",
        action,
        "suppressed",
        crate::audit::Outcome::Refused,
    )
    .reason(reason)
    .details(serde_json::json!({
        "suppressed": n,
        "why": format!("more than {MAX_REFUSAL_RECORDS_PER_SECOND} refused handshakes or dropped connections in one second; counted, not recorded one by one"),
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
    /// Handshakes in progress per peer address.
    pub(crate) handshaking: conn::PeerLimiter,
    /// The connection limits and deadlines in force.
    pub(crate) limits: Limits,
}

impl Shared {
    /// Write a connection-level record (refused handshake, dropped connection) through the
    /// rate limit, with the summary of what the limit suppressed before it.
    pub(crate) fn record_limited(&self, reason: &'static str, rec: crate::audit::NewRecord) {
        let (own, suppressed) = self.refusals.admit(reason);
        for (r, n) in suppressed {
            self.audit.record(suppressed_record(r, n));
        }
        if own {
            self.audit.record(rec);
        }
    }
}

/// The connection limits and deadlines (from [`Options`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) handshake_timeout: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) min_rate: u64,
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
        for (flag, v) in [
            ("--max-connections", options.max_connections),
            ("--max-handshakes", options.max_handshakes),
            ("--max-handshakes-per-ip", options.max_handshakes_per_ip),
        ] {
            if v == 0 {
                return Err(Error::BadOption {
                    what: format!("{flag} must be at least 1"),
                });
            }
        }
        for (flag, v) in [
            ("--handshake-timeout", options.handshake_timeout),
            ("--header-timeout", options.header_timeout),
            ("--idle-timeout", options.idle_timeout),
        ] {
            if v.is_zero() {
                return Err(Error::BadOption {
                    what: format!("{flag} must be at least 1 second"),
                });
            }
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
            handshaking: conn::PeerLimiter::new(options.max_handshakes_per_ip),
            limits: Limits {
                handshake_timeout: options.handshake_timeout,
                header_timeout: options.header_timeout,
                idle_timeout: options.idle_timeout,
                min_rate: options.min_rate,
            },
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
        // A connection slot is taken only after a successful handshake (in `conn`); before
        // that a connection holds one of `max_handshakes` places, and at most
        // `max_handshakes_per_ip` of them per peer address, so anonymous connections that never
        // finish a handshake cannot starve partners of slots.
        let slots = Arc::new(Semaphore::new(options.max_connections));
        let handshakes = Arc::new(Semaphore::new(options.max_handshakes));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let place = tokio::select! {
                _ = &mut shutdown => break,
                p = handshakes.clone().acquire_owned() => p.expect("invariant: the semaphore is never closed"),
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
            // Reap finished connection tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            let Some(admission) = conn::Admission::new(place, &shared.handshaking, peer.ip())
            else {
                // Too many handshakes from this address already: close at once.
                drop(tcp);
                conn::dropped(
                    &shared,
                    "partner:unknown",
                    peer,
                    "serve-handshake-limit",
                    format!(
                        "{} TLS handshakes from this address are already in progress (--max-handshakes-per-ip)",
                        options.max_handshakes_per_ip
                    ),
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let shared = shared.clone();
            let acceptor = acceptor.clone();
            let watcher = graceful.watcher();
            let slots = slots.clone();
            tasks.spawn(async move {
                conn::serve_connection(tcp, peer, acceptor, shared, admission, slots, watcher)
                    .await;
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
            connections_dropped: c.dropped.load(Ordering::Relaxed),
        };
        for (reason, n) in shared.refusals.take_suppressed() {
            shared.audit.record(suppressed_record(reason, n));
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

/// The http1 connection settings: header limits and the header deadline. hyper's
/// `header_read_timeout` is an absolute deadline, armed when it starts reading a request head
/// (also the next one on a kept-alive connection) and not extended by bytes that arrive.
pub(crate) fn http1_builder(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
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
