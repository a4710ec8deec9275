//! `retort serve` (issue 9): mutual TLS, partner identity, the package API, refusals, audit,
//! graceful shutdown, and a bounded load test. Certificates are made here with rcgen; packages
//! are fixtures written like the package writer's output (`packages/<id>/` + `<id>.meta.json`).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use retort::digest::sha256_hex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::util::*;

// ---------------------------------------------------------------- certificates

struct Pem {
    cert: String,
    key: String,
    sha256: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str, sans: &[&str], expired: bool) -> Pem {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    Pem {
        sha256: sha256_hex(cert.der()),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Everything a test server needs, written into the test's temp dir.
struct Fixture {
    t: TestWs,
    ca_pem: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    clients: std::collections::HashMap<&'static str, (PathBuf, PathBuf, String)>,
}

impl Fixture {
    /// A workspace with partners alpha and beta registered, one package each, and client
    /// certificates: alpha, beta, `unmapped` (same CA, not registered), `expired` (alpha's
    /// CA, registered, expired), `foreign` (another CA, registered fingerprint).
    fn new(package_bytes: usize) -> Fixture {
        let t = TestWs::init();
        let hospital = ca("Retort test partner CA");
        let other = ca("Some other CA");
        let server = leaf(&hospital, "retort.test", &["localhost", "127.0.0.1"], false);
        let write = |name: &str, s: &str| {
            let p = t.path(name);
            std::fs::write(&p, s).unwrap();
            p
        };
        let ca_pem = write("ca.pem", &hospital.pem());
        let server_cert = write("server.pem", &server.cert);
        let server_key = write("server.key", &server.key);
        let mut clients = std::collections::HashMap::new();
        for (name, issuer, expired, register) in [
            ("alpha", &hospital, false, true),
            ("beta", &hospital, false, true),
            ("unmapped", &hospital, false, false),
            ("expired", &hospital, true, true),
            ("foreign", &other, false, true),
        ] {
            let c = leaf(issuer, name, &[], expired);
            let cert = write(&format!("{name}.pem"), &c.cert);
            let key = write(&format!("{name}.key"), &c.key);
            if register {
                // The real registration path: the active policy's partner list.
                t.run(&[
                    "policy",
                    "add-partner",
                    name,
                    "--client-cert",
                    cert.to_str().unwrap(),
                ])
                .expect(0);
            }
            clients.insert(name, (cert, key, c.sha256));
        }
        write_package(&t.ws, "pkg-alpha-1", "alpha", package_bytes);
        write_package(&t.ws, "pkg-beta-1", "beta", 1000);
        Fixture {
            t,
            ca_pem,
            server_cert,
            server_key,
            clients,
        }
    }

    fn start(&self, extra: &[&str]) -> Server {
        let mut c = Command::new(bin());
        c.arg("--workspace")
            .arg(&self.t.ws)
            .args(["--json", "serve", "--listen", "127.0.0.1:0", "--cert"])
            .arg(&self.server_cert)
            .arg("--key")
            .arg(&self.server_key)
            .arg("--client-ca")
            .arg(&self.ca_pem)
            .args(extra)
            .env_remove("RETORT_WORKSPACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Server::spawn(c)
    }

    /// [`Fixture::start`] as another user (the systemd unit's service user).
    fn start_as(&self, who: &Other, extra: &[&str]) -> Server {
        let mut c = who.command(&Other::bin());
        c.arg("--workspace")
            .arg(&self.t.ws)
            .args(["--json", "serve", "--listen", "127.0.0.1:0", "--cert"])
            .arg(&self.server_cert)
            .arg("--key")
            .arg(&self.server_key)
            .arg("--client-ca")
            .arg(&self.ca_pem)
            .args(extra)
            .env_remove("RETORT_WORKSPACE")
            .env("RETORT_LOG", "retort=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Server::spawn(c)
    }

    fn client(&self, who: &str) -> Client {
        let (cert, key, _) = &self.clients[who];
        Client::new(&self.ca_pem, Some((cert, key)))
    }
}

/// A package directory shaped like the package writer's, with BSD-style SHA256SUMS.
fn write_package(ws: &Path, id: &str, partner: &str, bytes: usize) {
    let dir = ws.join("packages").join(id);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let mut data = vec![0u8; bytes];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("data/synthetic.parquet", data),
        (
            "data/privacy_report.json",
            br#"{"epsilon":1.0,"delta":1e-5}"#.to_vec(),
        ),
        (
            "provenance.intoto.jsonl",
            b"{\"payloadType\":\"application/vnd.in-toto+json\"}\n".to_vec(),
        ),
        ("audit-checkpoint.txt", b"fixture\n".to_vec()),
        (
            "keys/retort.pub.pem",
            b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n".to_vec(),
        ),
    ];
    let mut sums = String::new();
    let mut size = 0;
    for (rel, content) in &files {
        std::fs::write(dir.join(rel), content).unwrap();
        size += content.len();
        if !rel.starts_with("keys/") {
            sums.push_str(&format!("SHA256 ({rel}) = {}\n", sha256_hex(content)));
        }
    }
    std::fs::write(dir.join("SHA256SUMS"), &sums).unwrap();
    let meta = serde_json::json!({
        "id": id, "run": format!("run-{id}"), "dataset": "ds", "partner": partner,
        "epsilon": 1.0, "delta": 1e-5, "created": "2026-11-29T10:00:00Z",
        "size_bytes": size + sums.len(), "files": files.iter().map(|f| f.0).collect::<Vec<_>>(),
    });
    std::fs::write(
        ws.join("packages").join(format!("{id}.meta.json")),
        meta.to_string(),
    )
    .unwrap();
}

/// Take a partner out of the active policy, as an operator does: `retort policy remove-partner`
/// (audited), while the server runs. See: issue 20
fn revoke(t: &TestWs, name: &str) {
    t.run(&["policy", "remove-partner", name]).expect(0);
}

// ---------------------------------------------------------------- the server process

struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn spawn(mut c: Command) -> Server {
        let mut child = c.spawn().expect("start retort serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("listening on https://") {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "server did not start; status {:?}\nstderr:\n{}\nstdout:\n{}",
                    out.status,
                    log.lock().unwrap(),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        };
        Server {
            child,
            addr,
            stderr: log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the server so far (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        self.try_peak_rss_kib()
            .expect("server process has no memory figures (exited?)")
    }

    /// [`Server::peak_rss_kib`], or `None` once the process has exited (a zombie's status
    /// has no memory lines).
    fn try_peak_rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// SIGTERM, wait (bounded) for a clean exit, return the final `--json` summary.
    fn stop(mut self) -> serde_json::Value {
        self.sigterm();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(50));
                assert!(
                    status.success(),
                    "server exited with {status}\nstderr:\n{}\nstdout:\n{out}",
                    self.stderr.lock().unwrap()
                );
                let last = out.lines().last().expect("no summary on stdout");
                return serde_json::from_str(last).unwrap();
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only reached when a test fails before stop(): don't leave the process behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- a Rust client

#[derive(Clone)]
struct Client {
    config: Arc<rustls::ClientConfig>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl Client {
    fn new(ca: &Path, cert_key: Option<(&PathBuf, &PathBuf)>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert_key {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> =
                    rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice())
                        .map(|c| c.unwrap())
                        .collect();
                let key: PrivateKeyDer<'static> =
                    rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice())
                        .unwrap()
                        .unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        Client {
            config: Arc::new(config),
        }
    }

    /// A TLS stream to the server, no HTTP on top (for clients that misbehave on purpose).
    async fn tls(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// Connect and complete the handshake (TLS 1.3: the server's verdict on our certificate
    /// arrives with the first read, so callers must make a request to see a refusal).
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Sender> {
        let tls = self.tls(addr).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn get_on(s: &mut Sender, path: &str) -> Result<(u16, Bytes), String> {
        s.ready().await.map_err(|e| e.to_string())?;
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = s.send_request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// One request on a fresh connection.
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
        let mut s = self.connect(addr).await.map_err(|e| e.to_string())?;
        Client::get_on(&mut s, path).await
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- checks

/// The audit chain: seq from 0 without gaps, each `prev` the SHA-256 of the previous line.
fn assert_audit_chain_intact(ws: &Path) {
    let segs = crate::util::audit_segments(ws);
    let mut prev = "0".repeat(64);
    let mut seq = 0u64;
    for s in segs {
        let text = std::fs::read_to_string(&s).unwrap();
        assert!(text.ends_with('\n'), "torn tail in {}", s.display());
        for line in text.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(r["seq"].as_u64(), Some(seq), "sequence gap at {line}");
            assert_eq!(
                r["prev"].as_str(),
                Some(prev.as_str()),
                "chain break at seq {seq}"
            );
            prev = sha256_hex(line.as_bytes());
            seq += 1;
        }
    }
    assert!(seq > 0);
}

/// The chain by hand, then `retort audit verify`: chain and checkpoints intact, and the
/// checkpoint written when the server stopped covers every record (nothing only
/// chain-protected).
fn assert_audit_intact(t: &TestWs) {
    assert_audit_chain_intact(&t.ws);
    let r = t.run(&["--json", "audit", "verify"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["intact"], true, "{j:#}");
    assert_eq!(
        j["unsealed_tail"], 0,
        "records after the last checkpoint: {j:#}"
    );
    let cps = j["checkpoints"].as_array().unwrap();
    assert!(
        !cps.is_empty() && cps.iter().all(|c| c["status"] == "ok"),
        "{j:#}"
    );
}

/// Untar in memory: path → bytes.
fn untar(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().display().to_string();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            out.insert(name, v);
        }
    }
    out
}

fn records(t: &TestWs, action: &str) -> Vec<serde_json::Value> {
    t.audit_records()
        .into_iter()
        .filter(|r| r["action"] == action)
        .collect()
}

#[test]
fn partner_lists_downloads_and_sees_only_its_own_packages() {
    let f = Fixture::new(300_000);
    let srv = f.start(&[]);
    let addr = srv.addr;
    let alpha = f.client("alpha");
    let beta = f.client("beta");
    rt().block_on(async {
        let mut s = alpha.connect(addr).await.unwrap();
        let (st, body) = Client::get_on(&mut s, "/healthz").await.unwrap();
        assert_eq!(st, 200);
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["partner"], "alpha");

        let (st, body) = Client::get_on(&mut s, "/v1/packages").await.unwrap();
        assert_eq!(st, 200);
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let pk = j["packages"].as_array().unwrap();
        assert_eq!(pk.len(), 1, "{j}");
        assert_eq!(pk[0]["id"], "pkg-alpha-1");
        for k in ["run", "epsilon", "delta", "created", "size"] {
            assert!(!pk[0][k].is_null(), "listing lacks {k}: {j}");
        }

        // The tar is the package directory under pkg-alpha-1/.
        let (st, body) = Client::get_on(&mut s, "/v1/packages/pkg-alpha-1.tar")
            .await
            .unwrap();
        assert_eq!(st, 200);
        let files = untar(&body);
        let dir = f.t.ws.join("packages/pkg-alpha-1");
        for rel in [
            "data/synthetic.parquet",
            "data/privacy_report.json",
            "SHA256SUMS",
            "keys/retort.pub.pem",
        ] {
            assert_eq!(
                files[&format!("pkg-alpha-1/{rel}")],
                std::fs::read(dir.join(rel)).unwrap(),
                "{rel} differs"
            );
        }
        // One file, same bytes, with a length.
        let (st, body) = Client::get_on(&mut s, "/v1/packages/pkg-alpha-1/data/synthetic.parquet")
            .await
            .unwrap();
        assert_eq!(st, 200);
        assert_eq!(
            body,
            std::fs::read(dir.join("data/synthetic.parquet")).unwrap()
        );

        // Another partner's package answers exactly like a package that does not exist.
        let (st_foreign, b_foreign) = Client::get_on(&mut s, "/v1/packages/pkg-beta-1.tar")
            .await
            .unwrap();
        let (st_missing, b_missing) = Client::get_on(&mut s, "/v1/packages/pkg-nope-1.tar")
            .await
            .unwrap();
        assert_eq!((st_foreign, st_missing), (404, 404));
        assert_eq!(b_foreign, b_missing);
        let (st, _) = Client::get_on(&mut s, "/v1/packages/pkg-beta-1/SHA256SUMS")
            .await
            .unwrap();
        assert_eq!(st, 404);
        let (st, _) = Client::get_on(&mut s, "/v1/packages/pkg-beta-1")
            .await
            .unwrap();
        assert_eq!(st, 404);

        // Path traversal in every spelling is a 404.
        for p in [
            "/v1/packages/pkg-alpha-1/../pkg-beta-1/SHA256SUMS",
            "/v1/packages/pkg-alpha-1/%2e%2e/pkg-beta-1/SHA256SUMS",
            "/v1/packages/pkg-alpha-1/data/..%2f..%2f..%2fretort.toml",
            "/v1/packages/pkg-alpha-1/%2e%2e%2f%2e%2e%2fretort.toml",
            "/v1/packages/..%2fretort.toml",
            "/v1/packages/pkg-alpha-1/data",
            "/v1/packages/pkg-alpha-1//etc/passwd",
        ] {
            let (st, _) = Client::get_on(&mut s, p).await.unwrap();
            assert_eq!(st, 404, "{p}");
        }
        // Beta sees its own package only.
        let (st, body) = beta.get(addr, "/v1/packages").await.unwrap();
        assert_eq!(st, 200);
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(j["packages"][0]["id"], "pkg-beta-1");
        assert_eq!(j["packages"].as_array().unwrap().len(), 1);
    });

    // curl with the right certificates downloads the tar; the package's sums then verify.
    let (cert, key, _) = &f.clients["alpha"];
    let url = format!(
        "https://localhost:{}/v1/packages/pkg-alpha-1.tar",
        addr.port()
    );
    let out_tar = f.t.path("curl.tar");
    let st = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", addr.port()))
        .arg("--cacert")
        .arg(&f.ca_pem)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("-o")
        .arg(&out_tar)
        .arg(&url)
        .status();
    match st {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED curl part: curl is not installed")
        }
        Err(e) => panic!("curl: {e}"),
        Ok(st) => {
            assert!(st.success(), "curl failed: {st}");
            let x = f.t.path("x");
            std::fs::create_dir(&x).unwrap();
            assert!(Command::new("tar")
                .arg("-xf")
                .arg(&out_tar)
                .arg("-C")
                .arg(&x)
                .status()
                .unwrap()
                .success());
            let ok = Command::new("sha256sum")
                .args(["--check", "--strict", "SHA256SUMS"])
                .current_dir(x.join("pkg-alpha-1"))
                .output()
                .unwrap();
            assert!(
                ok.status.success(),
                "{}",
                String::from_utf8_lossy(&ok.stdout)
            );
            // curl without a client certificate is refused.
            let st = Command::new("curl")
                .args(["--silent", "--fail", "-o", "/dev/null", "--resolve"])
                .arg(format!("localhost:{}:127.0.0.1", addr.port()))
                .arg("--cacert")
                .arg(&f.ca_pem)
                .arg(&url)
                .status()
                .unwrap();
            assert!(!st.success(), "curl without a certificate got the package");
        }
    }
    let summary = srv.stop();
    // 16 requests from the Rust clients, 1 from curl (the certificate-less curl never got one).
    assert_eq!(summary["requests"], 17, "{summary}");
    assert_eq!(summary["handshakes_refused"], 1, "{summary}");

    // Every request is audited with the partner, path, status and bytes.
    let dl = records(&f.t, "serve.download");
    let ok_tar = dl
        .iter()
        .find(|r| r["outcome"] == "ok" && r["details"]["format"] == "tar")
        .expect("no audited tar download");
    assert_eq!(ok_tar["actor"], "partner:alpha");
    assert_eq!(ok_tar["object"], "pkg-alpha-1");
    assert_eq!(ok_tar["details"]["status"], 200);
    assert_eq!(ok_tar["details"]["complete"], true);
    assert!(ok_tar["details"]["bytes"].as_u64().unwrap() > 300_000);
    assert!(
        dl.iter().any(|r| r["outcome"] == "intent"),
        "no intent before download"
    );
    let refused: Vec<_> = dl.iter().filter(|r| r["outcome"] == "refused").collect();
    assert!(refused
        .iter()
        .all(|r| r["reason"] == "serve-not-found" && r["details"]["status"] == 404));
    assert!(refused.iter().any(|r| r["object"] == "pkg-beta-1"));
    assert_eq!(records(&f.t, "serve.list").len(), 2);
    assert_eq!(records(&f.t, "serve.start").len(), 1);
    let run = records(&f.t, "serve.run");
    assert_eq!(run.len(), 1);
    assert_eq!(run[0]["outcome"], "ok");
    assert_audit_intact(&f.t);
}

#[test]
fn refused_clients_no_cert_other_ca_expired_unmapped_and_removed() {
    let f = Fixture::new(1000);
    let srv = f.start(&[]);
    let addr = srv.addr;
    let nocert = Client::new(&f.ca_pem, None);
    rt().block_on(async {
        for (who, client) in [
            ("no certificate", nocert.clone()),
            ("another CA", f.client("foreign")),
            ("expired", f.client("expired")),
            ("unmapped", f.client("unmapped")),
        ] {
            let r = client.get(addr, "/v1/packages").await;
            assert!(r.is_err(), "{who}: got {r:?}");
        }
        // A partner removed from the table loses access on its next request, even on a
        // connection opened before (TLS sessions and keep-alive do not outlive revocation).
        let alpha = f.client("alpha");
        let mut s = alpha.connect(addr).await.unwrap();
        assert_eq!(Client::get_on(&mut s, "/healthz").await.unwrap().0, 200);
        revoke(&f.t, "alpha");
        assert_eq!(Client::get_on(&mut s, "/v1/packages").await.unwrap().0, 403);
        assert!(
            alpha.get(addr, "/healthz").await.is_err(),
            "removed partner reconnected"
        );
    });
    let summary = srv.stop();
    assert_eq!(summary["handshakes_refused"], 5, "{summary}");
    let hs = records(&f.t, "serve.handshake");
    assert_eq!(hs.len(), 5, "{hs:#?}");
    assert!(hs
        .iter()
        .all(|r| r["outcome"] == "refused" && r["actor"] == "partner:unknown"));
    let errors: Vec<String> = hs
        .iter()
        .map(|r| r["details"]["tls_error"].as_str().unwrap().to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("No certificates")
            || e.contains("NoCertificates")
            || e.to_lowercase().contains("no certificate")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("UnknownIssuer") || e.to_lowercase().contains("unknown issuer")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Expired") || e.to_lowercase().contains("expired")),
        "{errors:?}"
    );
    let unknown: Vec<_> = hs
        .iter()
        .filter(|r| r["reason"] == "serve-partner-unknown")
        .collect();
    assert_eq!(unknown.len(), 2, "{hs:#?}");
    let fps: Vec<&str> = unknown
        .iter()
        .map(|r| r["details"]["cert_sha256"].as_str().unwrap())
        .collect();
    assert!(fps.contains(&f.clients["unmapped"].2.as_str()));
    assert!(fps.contains(&f.clients["alpha"].2.as_str()));
    let revoked = records(&f.t, "serve.request");
    assert!(revoked
        .iter()
        .any(|r| r["reason"] == "serve-partner-unknown" && r["details"]["status"] == 403));
    assert_audit_intact(&f.t);
}

#[test]
fn startup_errors_name_the_file_and_the_fix() {
    let f = Fixture::new(10);
    let run = |cert: &Path, key: &Path, ca: &Path| {
        f.t.run(&[
            "--json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--client-ca",
            ca.to_str().unwrap(),
        ])
    };
    let code = |r: &Run| r.json()["error"]["code"].as_str().unwrap().to_string();
    let missing = f.t.path("nope.pem");
    let r = run(&missing, &f.server_key, &f.ca_pem);
    r.expect(1).stderr_has(&["nope.pem", "hint:"]);
    assert_eq!(code(&r), "serve-file-unreadable");
    let (alpha_cert, alpha_key, _) = &f.clients["alpha"];
    let r = run(&f.server_cert, alpha_key, &f.ca_pem);
    r.expect(1).stderr_has(&["does not match", "openssl"]);
    assert_eq!(code(&r), "serve-key-mismatch");
    let r = run(&f.server_key, &f.server_key, &f.ca_pem);
    r.expect(1).stderr_has(&["server.key", "BEGIN CERTIFICATE"]);
    assert_eq!(code(&r), "serve-cert-invalid");
    let r = run(&f.server_cert, &f.server_cert, &f.ca_pem);
    r.expect(1);
    assert_eq!(code(&r), "serve-key-invalid");
    let r = run(&f.server_cert, &f.server_key, &f.server_key);
    r.expect(1).stderr_has(&["client CA"]);
    assert_eq!(code(&r), "serve-client-ca-invalid");
    let _ = alpha_cert;
    // Each failed start is audited with its code.
    let runs = records(&f.t, "serve.run");
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| r["outcome"] == "error"));
    assert_audit_intact(&f.t);

    // Nobody registered (a fresh workspace): refuse to start rather than serve no one.
    let empty = TestWs::init();
    let r = empty.run(&[
        "--json",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        f.server_cert.to_str().unwrap(),
        "--key",
        f.server_key.to_str().unwrap(),
        "--client-ca",
        f.ca_pem.to_str().unwrap(),
    ]);
    r.expect(1).stderr_has(&["add-partner"]);
    assert_eq!(code(&r), "serve-no-partners");
}

#[test]
fn sigterm_finishes_inflight_download_and_memory_stays_bounded() {
    // A 48 MiB package: the server must stream it, not hold it.
    const BIG: usize = 48 << 20;
    let f = Fixture::new(BIG);
    let srv = f.start(&[]);
    let addr = srv.addr;
    let before = srv.peak_rss_kib();
    let mut peak = before;
    let alpha = f.client("alpha");
    let got = rt().block_on(async {
        let mut s = alpha.connect(addr).await.unwrap();
        s.ready().await.unwrap();
        let req = hyper::Request::get("/v1/packages/pkg-alpha-1.tar")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut n = 0usize;
        let mut signalled = false;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                n += d.len();
            }
            // Sample the high-water mark while the server runs: after SIGTERM it exits as soon
            // as this download ends, and an exited process has no memory figures.
            if let Some(v) = srv.try_peak_rss_kib() {
                peak = peak.max(v);
            }
            if !signalled && n > (1 << 20) {
                // Mid-download: ask the server to stop; it must finish this download.
                srv.sigterm();
                signalled = true;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        n
    });
    assert!(got > BIG, "download cut short: {got} bytes");
    let peak = srv.try_peak_rss_kib().unwrap_or(0).max(peak);
    let summary = srv.stop();
    eprintln!(
        "serve: 48 MiB tar streamed; server peak RSS {peak} KiB (before the download {before} KiB)"
    );
    assert!(
        peak < before + (BIG as u64 / 1024) / 3,
        "server memory grew by {} KiB for a {} KiB download: not streaming",
        peak - before,
        BIG / 1024
    );
    assert_eq!(summary["connections_cut"], 0);
    let ok: Vec<_> = records(&f.t, "serve.download")
        .into_iter()
        .filter(|r| r["outcome"] == "ok")
        .collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["details"]["complete"], true);
    assert_eq!(ok[0]["details"]["bytes"].as_u64().unwrap() as usize, got);
    assert_audit_intact(&f.t);
}

/// Bounded load test on loopback: 32 concurrent clients × 20 tar downloads of a 256 KiB
/// package, each client on its own keep-alive connection. Prints requests/s, p99 latency and
/// the server's peak memory (`cargo test --test it serve::load -- --nocapture`).
#[test]
fn load_32_clients_x_20_downloads() {
    const CLIENTS: usize = 32;
    const EACH: usize = 20;
    let f = Fixture::new(256 << 10);
    // All 32 clients connect at once from one loopback address, which the default per-address
    // handshake limit (8 at a time) would partly close: allow them all, as a hospital would for
    // a partner that downloads in parallel through one address.
    let srv = f.start(&["--max-connections", "64", "--max-handshakes-per-ip", "32"]);
    let addr = srv.addr;
    let alpha = f.client("alpha");
    let expected = {
        let p = f.t.ws.join("packages/pkg-alpha-1/data/synthetic.parquet");
        std::fs::read(p).unwrap()
    };
    let start = Instant::now();
    let (lat, errors) = rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            let c = alpha.clone();
            let expected = expected.clone();
            tasks.spawn(async move {
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                let mut s = match c.connect(addr).await {
                    Ok(s) => s,
                    Err(e) => return (lat, vec![e.to_string()]),
                };
                for _ in 0..EACH {
                    let t0 = Instant::now();
                    match Client::get_on(&mut s, "/v1/packages/pkg-alpha-1.tar").await {
                        Ok((200, body)) => {
                            lat.push(t0.elapsed());
                            if untar(&body)["pkg-alpha-1/data/synthetic.parquet"] != expected {
                                errors.push("corrupt download".to_string());
                            }
                        }
                        Ok((st, _)) => errors.push(format!("status {st}")),
                        Err(e) => errors.push(e),
                    }
                }
                (lat, errors)
            });
        }
        let mut lat = Vec::new();
        let mut errors = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (l, e) = r.unwrap();
            lat.extend(l);
            errors.extend(e);
        }
        (lat, errors)
    });
    let wall = start.elapsed();
    let peak = srv.peak_rss_kib();
    let summary = srv.stop();
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(lat.len(), CLIENTS * EACH);
    let mut sorted = lat.clone();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
    let rps = lat.len() as f64 / wall.as_secs_f64();
    eprintln!(
        "serve load: {CLIENTS} clients x {EACH} downloads of a {} KiB package tar: {:.0} requests/s, \
         p50 {:.1} ms, p99 {:.1} ms, wall {:.2} s, server peak RSS {} KiB ({:.1} MiB/s)",
        (256 << 10) / 1024 + 1,
        rps,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        peak,
        summary["bytes_sent"].as_f64().unwrap() / wall.as_secs_f64() / (1 << 20) as f64,
    );
    // Bounded memory: far below what holding the downloads would take (640 × 256 KiB).
    assert!(peak < 160 * 1024, "server peak RSS {peak} KiB");
    // Audit: one intent and one outcome per download, chain intact.
    let dl = records(&f.t, "serve.download");
    assert_eq!(
        dl.iter().filter(|r| r["outcome"] == "ok").count(),
        CLIENTS * EACH
    );
    assert_eq!(
        dl.iter().filter(|r| r["outcome"] == "intent").count(),
        CLIENTS * EACH
    );
    assert_audit_intact(&f.t);
}

// ---------------------------------------------------------------- with a real package

mod real {
    //! A package made by `retort package` (issue 6) from a fixture run, fetched over mutual
    //! TLS and checked with `retort verify`. The run fixture mirrors tests/it/package.rs.
    use super::*;

    pub(super) const RUN_ID: &str = "run-20261129-5e55e55e";

    fn synthetic_parquet() -> Vec<u8> {
        crate::util::synthetic_parquet(&["a", "b"], 2, [1, 4, 4], 8)
    }

    fn png() -> Vec<u8> {
        let img = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([((x * 30 + y) % 256) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn run_json() -> serde_json::Value {
        serde_json::json!({
            "version": 1, "id": RUN_ID, "dataset": "phantoms",
            "dataset_fingerprint": "5f".repeat(32),
            "method": "gm", "status": "completed", "ipc": 2, "epsilon": 1.0, "delta": 1e-5,
            "privacy": {"epsilon": 0.97, "epsilon_rdp": 1.02, "epsilon_pld": 0.97, "accountant": "pld",
                        "noise_multiplier": 1.1, "sampling_rate": 0.01, "steps": 500, "clip_norm": 1.0,
                        "neighbouring": "add-remove-one-image"},
            "events": [{"kind": "poisson-sampled-gaussian", "q": 0.01, "sigma": 1.1, "steps": 500}],
            "hyperparameters": {"iterations": 500, "model": "convnet"},
            "policy": {"name": "default", "sha256": "ab".repeat(32)},
            "shape": [1, 4, 4], "classes": ["a", "b"],
            "started": "2026-11-29T10:00:00Z", "finished": "2026-11-29T10:05:00Z", "seconds": 300.0,
            "retort_version": "0.1.0"
        })
    }

    /// A completed run charged to the ledger, packaged for alpha; returns the package id.
    pub(super) fn package_for_alpha(t: &TestWs) -> String {
        let rd = t.ws.join("runs").join(RUN_ID);
        std::fs::create_dir_all(&rd).unwrap();
        std::fs::write(rd.join("run.json"), run_json().to_string()).unwrap();
        std::fs::write(rd.join("synthetic.parquet"), synthetic_parquet()).unwrap();
        std::fs::write(rd.join("contact_sheet.png"), png()).unwrap();
        let events: Vec<retort::dp::event::DpEvent> =
            serde_json::from_value(run_json()["events"].clone()).unwrap();
        crate::util::charge(t, "phantoms", RUN_ID, &events, Some(10.0));
        let j = t
            .run(&["package", RUN_ID, "--partner", "alpha", "--json"])
            .expect(0)
            .json();
        j["package"].as_str().unwrap().to_string()
    }

    pub(super) fn public_key(t: &TestWs) -> PathBuf {
        let r = t.run(&["keys", "export-public"]);
        r.expect(0);
        let s = r.stdout.find("-----BEGIN").expect("PEM on stdout");
        let e =
            r.stdout.find("-----END PUBLIC KEY-----").unwrap() + "-----END PUBLIC KEY-----".len();
        let p = t.path("hospital.pub.pem");
        std::fs::write(&p, format!("{}\n", &r.stdout[s..e])).unwrap();
        p
    }
}

#[test]
fn real_package_fetched_over_mtls_verifies() {
    let f = Fixture::new(1000);
    let id = real::package_for_alpha(&f.t);
    let key = real::public_key(&f.t);
    let srv = f.start(&[]);
    let addr = srv.addr;
    let alpha = f.client("alpha");
    let (list, tar_bytes, one) = rt().block_on(async {
        let mut s = alpha.connect(addr).await.unwrap();
        let list = Client::get_on(&mut s, "/v1/packages").await.unwrap();
        let tar = Client::get_on(&mut s, &format!("/v1/packages/{id}.tar"))
            .await
            .unwrap();
        let one = Client::get_on(&mut s, &format!("/v1/packages/{id}/data/synthetic.parquet"))
            .await
            .unwrap();
        (list, tar, one)
    });
    srv.stop();
    assert_eq!(list.0, 200);
    let j: serde_json::Value = serde_json::from_slice(&list.1).unwrap();
    assert!(
        j["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id.as_str() && p["run"] == real::RUN_ID),
        "{j}"
    );
    assert_eq!(one.0, 200);
    assert_eq!(
        one.1,
        std::fs::read(
            f.t.ws
                .join("packages")
                .join(&id)
                .join("data/synthetic.parquet")
        )
        .unwrap()
    );
    assert_eq!(tar_bytes.0, 200);
    let tar_path = f.t.path("fetched.tar");
    std::fs::write(&tar_path, &tar_bytes.1).unwrap();
    let x = f.t.path("fetched");
    std::fs::create_dir(&x).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap()
        .success());
    retort(&[
        "verify",
        x.join(&id).to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
    .expect(0);
    assert_audit_intact(&f.t);
}

// ---------------------------------------------------------------- hardening (issue 20)

/// `serve.connection` records (connections dropped by a limit or deadline) with `reason`:
/// the ones recorded one by one, and the count the rate limit summarised.
fn dropped_records(t: &TestWs, reason: &str) -> (Vec<serde_json::Value>, u64) {
    let all: Vec<_> = records(t, "serve.connection")
        .into_iter()
        .filter(|r| r["reason"] == reason)
        .collect();
    let (summaries, own): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|r| r["object"] == "suppressed");
    let suppressed = summaries
        .iter()
        .map(|r| r["details"]["suppressed"].as_u64().unwrap())
        .sum();
    (own, suppressed)
}

/// Many raw TCP connections that never start a handshake (from 127.0.0.2) take no connection
/// slot: a real partner (from 127.0.0.1) is served at once, on more connections in a row than
/// there are slots. The anonymous connections beyond the per-address limit are closed at once,
/// the others at the handshake deadline, and every one of them is audited.
#[test]
fn anonymous_connections_that_never_handshake_do_not_starve_partners() {
    const ANONYMOUS: usize = 60;
    let f = Fixture::new(1000);
    let srv = f.start(&[
        "--max-connections",
        "2",
        "--max-handshakes-per-ip",
        "4",
        "--handshake-timeout",
        "2",
    ]);
    let addr = srv.addr;
    let alpha = f.client("alpha");
    rt().block_on(async {
        use tokio::io::AsyncReadExt;
        let mut held = Vec::new();
        for _ in 0..ANONYMOUS {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            held.push(s.connect(addr).await.unwrap());
        }
        // Before any anonymous handshake times out, the partner gets served, four times in a
        // row with two slots.
        let t0 = Instant::now();
        for _ in 0..4 {
            let (st, _) = alpha.get(addr, "/healthz").await.unwrap();
            assert_eq!(st, 200);
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "the partner waited {:?} behind anonymous connections",
            t0.elapsed()
        );
        // Past the handshake deadline, the server has closed every anonymous connection.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for (i, s) in held.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await;
            assert!(
                matches!(r, Ok(Ok(0)) | Ok(Err(_))),
                "anonymous connection {i} is still open: {r:?}"
            );
        }
    });
    let summary = srv.stop();
    assert_eq!(
        summary["connections_dropped"], ANONYMOUS as u64,
        "{summary}"
    );
    assert_eq!(summary["requests"], 4, "{summary}");
    let (limit, limit_suppressed) = dropped_records(&f.t, "serve-handshake-limit");
    assert_eq!(
        limit.len() as u64 + limit_suppressed,
        ANONYMOUS as u64 - 4,
        "every connection over the per-address limit is counted"
    );
    assert!(limit.len() <= 20, "the rate limit summarises bursts");
    for r in &limit {
        assert_eq!(r["actor"], "partner:unknown");
        assert_eq!(r["object"], "127.0.0.2");
        assert_eq!(r["outcome"], "refused");
        assert!(r["details"]["why"]
            .as_str()
            .unwrap()
            .contains("--max-handshakes-per-ip"));
    }
    let (timeouts, timeouts_suppressed) = dropped_records(&f.t, "serve-handshake-timeout");
    assert_eq!(timeouts.len() as u64 + timeouts_suppressed, 4);
    assert!(timeouts.iter().all(|r| r["details"]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.2:")));
    assert_eq!(records(&f.t, "serve.health").len(), 4);
    assert_audit_intact(&f.t);
}

/// A partner that sends its request head one byte at a time is cut at the header deadline:
/// the trickled bytes do not extend it.
#[test]
fn slow_request_head_is_cut_at_the_deadline() {
    let f = Fixture::new(1000);
    let srv = f.start(&["--header-timeout", "2"]);
    let addr = srv.addr;
    let alpha = f.client("alpha");
    let (took, sent) = rt().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = alpha.tls(addr).await.unwrap();
        let t0 = Instant::now();
        let (mut rd, mut wr) = tokio::io::split(tls);
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 256];
            loop {
                match rd.read(&mut b).await {
                    Ok(0) | Err(_) => break Instant::now(),
                    Ok(_) => {}
                }
            }
        });
        let head = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut sent = 0;
        // Four bytes a second, never the whole head in 8 s: a deadline reset by each byte
        // would never strike.
        while !reader.is_finished() && t0.elapsed() < Duration::from_secs(8) {
            if wr.write_all(&head[sent..sent + 1]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let cut = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("the server did not close the connection")
            .unwrap();
        (cut - t0, sent)
    });
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "cut after {took:?}, expected at the 2 s header deadline"
    );
    assert!(sent >= 6, "only {sent} bytes were trickled before the cut");
    // A kept-alive connection that made its request and then stays silent is closed at the
    // same deadline, but that is not a drop: it is not recorded as one.
    let quiet = rt().block_on(async {
        let mut s = alpha.connect(addr).await.unwrap();
        let (st, _) = Client::get_on(&mut s, "/healthz").await.unwrap();
        assert_eq!(st, 200);
        let t0 = Instant::now();
        while !s.is_closed() && t0.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(s.is_closed(), "an idle kept-alive connection stayed open");
        t0.elapsed()
    });
    assert!(
        quiet < Duration::from_secs(4),
        "idle connection closed after {quiet:?}"
    );
    let summary = srv.stop();
    assert_eq!(summary["connections_dropped"], 1, "{summary}");
    assert_eq!(summary["requests"], 1, "{summary}");
    let (cut, _) = dropped_records(&f.t, "serve-header-timeout");
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0]["actor"], "partner:alpha");
    assert!(cut[0]["details"]["why"]
        .as_str()
        .unwrap()
        .contains("--header-timeout"));
    assert_audit_intact(&f.t);
}

/// A partner that reads its download a byte a second is dropped by the minimum-rate rule,
/// while a normal client downloads the same large package in full at the same time.
#[test]
fn slow_reader_is_dropped_while_a_normal_download_completes() {
    // Larger than what the kernel and TLS buffers hold, so the slow reader makes the server
    // wait on it.
    const BIG: usize = 24 << 20;
    let f = Fixture::new(BIG);
    let srv = f.start(&["--idle-timeout", "1", "--min-rate", "65536"]);
    let addr = srv.addr;
    let alpha = f.client("alpha");
    let expected =
        std::fs::read(f.t.ws.join("packages/pkg-alpha-1/data/synthetic.parquet")).unwrap();
    let (slow_total, full_len) = rt().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = alpha.tls(addr).await.unwrap();
        tls.write_all(b"GET /v1/packages/pkg-alpha-1.tar HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let slow = tokio::spawn(async move {
            let mut one = [0u8; 1];
            let mut got = 0usize;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(4) {
                match tls.read(&mut one).await {
                    Ok(1) => got += 1,
                    _ => return got,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // By now the server has given up on it: what is left is what was buffered.
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
            got + rest.len()
        });
        let (st, body) = alpha
            .get(addr, "/v1/packages/pkg-alpha-1.tar")
            .await
            .unwrap();
        assert_eq!(st, 200);
        assert_eq!(
            untar(&body)["pkg-alpha-1/data/synthetic.parquet"],
            expected,
            "the normal download is incomplete or corrupt"
        );
        (slow.await.unwrap(), body.len())
    });
    assert!(
        slow_total < full_len,
        "the slow reader received the whole package ({slow_total} of {full_len} bytes)"
    );
    let summary = srv.stop();
    assert_eq!(summary["connections_dropped"], 1, "{summary}");
    let (cut, _) = dropped_records(&f.t, "serve-client-too-slow");
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0]["actor"], "partner:alpha");
    assert!(cut[0]["details"]["why"]
        .as_str()
        .unwrap()
        .contains("--min-rate"));
    let downloads: Vec<_> = records(&f.t, "serve.download")
        .into_iter()
        .filter(|r| r["outcome"] != "intent")
        .collect();
    assert_eq!(downloads.len(), 2, "{downloads:#?}");
    let complete: Vec<_> = downloads
        .iter()
        .map(|r| r["details"]["complete"].as_bool().unwrap())
        .collect();
    assert!(
        complete.contains(&true) && complete.contains(&false),
        "{downloads:#?}"
    );
    assert!(downloads
        .iter()
        .any(|r| r["reason"] == "serve-download-incomplete"));
    assert_audit_intact(&f.t);
}

// ---------------------------------------------------------------- as the systemd unit runs it

/// The workspace in the model the unit expects (service group, compliance group), served by
/// the service user: it answers partners, and on SIGTERM writes its final record, signs a
/// checkpoint covering it and exits 0; its log lines carry no colour codes. See: issue 20
#[test]
fn the_service_user_serves_and_exits_0_on_sigterm_with_a_final_checkpoint() {
    if !Other::available() {
        return;
    }
    let f = Fixture::new(1000);
    f.t.open_to_others();
    f.t.run(&[
        "access",
        "set",
        "--compliance-group",
        &COMPLIANCE_GID.to_string(),
        "--service-group",
        &SERVICE_GID.to_string(),
    ])
    .expect(0);
    // The TLS files as /etc/retort/tls holds them: readable by the service group.
    use std::os::unix::fs::PermissionsExt;
    for p in [&f.server_cert, &f.server_key, &f.ca_pem] {
        std::os::unix::fs::chown(p, None, Some(SERVICE_GID)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let sv = Other::service();
    let srv = f.start_as(&sv, &[]);
    let addr = srv.addr;
    rt().block_on(async {
        let (status, body) = f
            .client("alpha")
            .get(addr, "/v1/packages/pkg-alpha-1.tar")
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert!(!body.is_empty());
        // A connection that never speaks TLS, so that the server logs a line (debug) to
        // check for colour codes.
        drop(tokio::net::TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let log = srv.stderr.clone();
    let summary = srv.stop(); // asserts exit status 0
    assert_eq!(summary["requests"], 1, "{summary}");
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("DEBUG") && log.contains("handshake"),
        "no log line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "colour codes in the log: {log:?}");
    let recs = f.t.audit_records();
    let stop = recs.last().unwrap();
    assert_eq!(stop["action"], "serve.run");
    assert_eq!(stop["outcome"], "ok");
    assert_eq!(stop["actor"], sv.actor().as_str());
    assert!(recs
        .iter()
        .any(|r| r["action"] == "serve.download" && r["actor"] == "partner:alpha"));
    // The final checkpoint, signed by the service user at the stop, covers the stop record.
    let cp = f.t.ws.join(format!(
        "audit/checkpoints/checkpoint-{:012}.txt",
        recs.len()
    ));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&cp)
        .unwrap_or_else(|e| panic!("no checkpoint over all {} records: {e}", recs.len()));
    assert_eq!(
        meta.uid(),
        sv.uid,
        "the final checkpoint was not signed by serve"
    );
    assert_audit_intact(&f.t);
    // It never read private data: the datasets and runs stay closed to it.
    let ws = f.t.ws.to_str().unwrap();
    assert_ne!(
        f.t.sh_as(&sv, "/bin/ls", &[&format!("{ws}/datasets")])
            .status,
        0
    );
}

/// `examples/retort-serve.service` as shipped: its command line parses, it runs in the
/// service group with the compliance group as a supplementary group, stops with SIGTERM with
/// time to drain, and its install notes create the workspace in that model.
#[test]
fn the_shipped_systemd_unit_runs_serve_in_the_service_group() {
    use clap::Parser;
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retort-serve.service"),
    )
    .unwrap();
    let text = unit.replace("\\\n", " ");
    let get = |k: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in the unit"))
            .trim()
            .to_string()
    };
    assert_eq!(get("User"), "retort");
    assert_eq!(get("Group"), "retort");
    assert_eq!(get("SupplementaryGroups"), "retort-audit");
    assert_eq!(get("KillSignal"), "SIGTERM");
    let exec = get("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert!(args[0].ends_with("/retort"), "{exec}");
    let cli = retort::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{exec}: {e}"));
    let retort::cli::Command::Serve(a) = cli.command else {
        panic!("ExecStart is not `retort serve`: {exec}")
    };
    let stop: u64 = get("TimeoutStopSec").parse().unwrap();
    assert!(
        stop > a.drain_timeout,
        "TimeoutStopSec {stop} <= --drain-timeout"
    );
    assert!(get("ReadWritePaths").ends_with("/workspace/audit"));
    assert!(
        unit.contains("--compliance-group retort-audit --service-group retort"),
        "the install notes must create the workspace with the unit's groups"
    );
}
