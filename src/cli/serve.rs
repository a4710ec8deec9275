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
    /// Most connections served at once (more wait to be accepted).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Close a connection after this many seconds without traffic.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::serve::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
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
    if args.idle_timeout == 0 {
        return Err(super::usage(
            "--idle-timeout must be at least 1 second",
            "give --idle-timeout a positive number of seconds (default 30)",
        ));
    }
    let mut opts = Options::new(args.listen, args.cert, args.key, args.client_ca);
    opts.max_connections = args.max_connections;
    opts.idle_timeout = std::time::Duration::from_secs(args.idle_timeout);
    opts.drain_timeout = std::time::Duration::from_secs(args.drain_timeout);
    opts.allow_tls12 = args.allow_tls12;
    opts.policy = ctx.policy.clone();
    ctx.detail("max_connections", opts.max_connections);
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
    let human = format!(
        "stopped: {} connections, {} requests, {} bytes sent, {} handshakes refused{}\n",
        summary.connections,
        summary.requests,
        summary.bytes_sent,
        summary.handshakes_refused,
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
