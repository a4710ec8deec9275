//! `retort serve`: the mutual-TLS package service for partners (see `serve/` and
//! docs/serve.md). Runs until SIGTERM or Ctrl-C, then drains in-flight downloads, flushes the
//! audit records and returns; the dispatcher then appends the final record and checkpoint.
//!
//! The workspace lock is never taken: the server only reads packages and the partner table,
//! and the audit log locks per record, so other commands keep working while it runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Ctx, Report};
use crate::audit::{NewRecord, Outcome};
use crate::serve::{Options, Server, DEFAULT_MAX_CONNECTIONS};
use crate::Result;

/// Arguments of `retort serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address and port to listen on, e.g. 0.0.0.0:8443 or [::]:8443 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// The server certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The CA certificate(s) that sign partner client certificates (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_ca: PathBuf,
    /// Most partner connections served at once; a slot is taken only after a successful
    /// TLS handshake.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once, all peers together (more wait to be accepted).
    #[arg(long, value_name = "N", default_value_t = crate::serve::DEFAULT_MAX_HANDSHAKES)]
    pub max_handshakes: usize,
    /// Most TLS handshakes in progress at once from one address (IPv4 address or IPv6 /64);
    /// a connection beyond it is closed at once.
    #[arg(long, value_name = "N", default_value_t = crate::serve::DEFAULT_MAX_HANDSHAKES_PER_IP)]
    pub max_handshakes_per_ip: usize,
    /// Seconds a TLS handshake may take (and then the wait for a free connection slot).
    #[arg(long, value_name = "SECONDS", default_value_t = crate::serve::DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    pub handshake_timeout: u64,
    /// Seconds within which a request's head must be complete (bytes do not extend it).
    #[arg(long, value_name = "SECONDS", default_value_t = crate::serve::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub header_timeout: u64,
    /// Window of the minimum-rate rule: over every this many seconds of waiting for a client
    /// to take data, it must take --min-rate bytes per second (nothing at all: always cut).
    #[arg(long, value_name = "SECONDS", default_value_t = crate::serve::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
    /// Bytes per second a client must take while the server waits on it.
    #[arg(long, value_name = "BYTES", default_value_t = crate::serve::DEFAULT_MIN_RATE)]
    pub min_rate: u64,
    /// On shutdown, wait this many seconds for in-flight downloads before cutting them.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::serve::DEFAULT_DRAIN_TIMEOUT.as_secs())]
    pub drain_timeout: u64,
    /// Also accept TLS 1.2 clients (TLS 1.3 only by default).
    #[arg(long)]
    pub allow_tls12: bool,
}

/// Run `retort serve` until SIGTERM / Ctrl-C.
///
/// # Errors
/// `serve-*` startup errors (unreadable or mismatched certificate and key files, no partners,
/// address in use), workspace and audit errors.
pub fn run(args: Args, ctx: &mut Ctx) -> Result<Report> {
    let ws = ctx.open_audited("serve.run", &args.listen.to_string())?;
    for (flag, v, default) in [
        (
            "--idle-timeout",
            args.idle_timeout,
            crate::serve::DEFAULT_IDLE_TIMEOUT,
        ),
        (
            "--handshake-timeout",
            args.handshake_timeout,
            crate::serve::DEFAULT_HANDSHAKE_TIMEOUT,
        ),
        (
            "--header-timeout",
            args.header_timeout,
            crate::serve::DEFAULT_HEADER_TIMEOUT,
        ),
    ] {
        if v == 0 {
            return Err(super::usage(
                format!("{flag} must be at least 1 second"),
                format!(
                    "give {flag} a positive number of seconds (default {})",
                    default.as_secs()
                ),
            ));
        }
    }
    let secs = std::time::Duration::from_secs;
    let mut opts = Options::new(args.listen, args.cert, args.key, args.client_ca);
    opts.max_connections = args.max_connections;
    opts.max_handshakes = args.max_handshakes;
    opts.max_handshakes_per_ip = args.max_handshakes_per_ip;
    opts.handshake_timeout = secs(args.handshake_timeout);
    opts.header_timeout = secs(args.header_timeout);
    opts.min_rate = args.min_rate;
    opts.idle_timeout = secs(args.idle_timeout);
    opts.drain_timeout = std::time::Duration::from_secs(args.drain_timeout);
    opts.allow_tls12 = args.allow_tls12;
    opts.policy = ctx.policy.clone();
    ctx.detail("max_connections", opts.max_connections);
    ctx.detail("max_handshakes", opts.max_handshakes);
    ctx.detail("max_handshakes_per_ip", opts.max_handshakes_per_ip);
    ctx.detail("handshake_timeout_s", args.handshake_timeout);
    ctx.detail("header_timeout_s", args.header_timeout);
    ctx.detail("idle_timeout_s", args.idle_timeout);
    ctx.detail("min_rate", opts.min_rate);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("retort-serve")
        .build()
        .map_err(|e| crate::serve::Error::Startup {
            why: format!("tokio runtime: {e}"),
        })?;
    let summary = rt.block_on(async {
        let server = Server::bind(&ws, opts).await?;
        let addr = server
            .local_addr()
            .map_err(|e| crate::serve::Error::Startup {
                why: format!("local address: {e}"),
            })?;
        let id = server.identity().clone();
        ctx.record(
            &ws,
            NewRecord::new(&ctx.actor, "serve.start", &addr.to_string(), Outcome::Ok).details(
                serde_json::json!({
                    "server_cert_sha256": id.server_cert_sha256,
                    "client_ca_sha256": id.client_ca_sha256,
                    "partners": id.partners,
                    "policy": id.policy,
                }),
            ),
        )?;
        ctx.detail("listen", addr.to_string());
        ctx.say(format!(
            "listening on https://{addr} (partners: {}; server certificate SHA256 {})\npress Ctrl-C or send SIGTERM to stop",
            id.partners.join(", "),
            id.server_cert_sha256
        ));
        let summary = server.run(crate::serve::shutdown_signal()).await?;
        Ok::<_, crate::Error>(summary)
    })?;
    // Let the connection tasks' last clean-ups run before the runtime goes.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    ctx.detail("connections", summary.connections);
    ctx.detail("requests", summary.requests);
    ctx.detail("bytes_sent", summary.bytes_sent);
    ctx.detail("handshakes_refused", summary.handshakes_refused);
    ctx.detail("connections_cut", summary.connections_cut);
    ctx.detail("connections_dropped", summary.connections_dropped);
    let human = format!(
        "stopped: {} connections, {} requests, {} bytes sent, {} handshakes refused, {} connections dropped by limits{}\n",
        summary.connections,
        summary.requests,
        summary.bytes_sent,
        summary.handshakes_refused,
        summary.connections_dropped,
        if summary.connections_cut > 0 {
            format!(
                ", {} downloads cut at the drain timeout",
                summary.connections_cut
            )
        } else {
            String::new()
        }
    );
    let json = serde_json::to_value(&summary).expect("invariant: summary serializes");
    Ok(Report::new(human, json))
}
