//! The HTTP API (read-only, JSON where structured):
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | `{"status":"ok","partner":NAME}` |
//! | `GET /v1/packages` | `{"partner":NAME,"packages":[{"id","run","epsilon","delta","created","size"}…]}` |
//! | `GET /v1/packages/{id}` | that package's entry |
//! | `GET /v1/packages/{id}.tar` | the package directory as a tar, streamed |
//! | `GET /v1/packages/{id}/{path}` | one file of the package, streamed |
//!
//! A package is visible to a partner only if its index entry (`packages/<id>.meta.json`) names
//! that partner and the policy in force still lets the partner receive the package's dataset
//! (the partner's `datasets` list). Anything else, including another partner's package, is the same 404, so a
//! partner learns nothing about packages that are not theirs. Paths are percent-decoded one
//! segment at a time; empty, `.`/`..` and dot-file segments, encoded slashes and symbolic
//! links anywhere on the way are refused (404), so no request reaches outside the package.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::body::{full, Audited, Entry, Inner};
use super::{package_dir, tarstream, PartnerInfo, Shared};
use crate::audit::{NewRecord, Outcome};

/// Who is on the other end of an established connection (set by [`super::conn`] after the
/// handshake).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) cert_sha256: String,
}

/// The package index entry written next to each package (`packages/<id>.meta.json`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Meta {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) run: String,
    pub(crate) partner: String,
    #[serde(default)]
    pub(crate) dataset: Option<String>,
    #[serde(default)]
    pub(crate) epsilon: Option<f64>,
    #[serde(default)]
    pub(crate) delta: Option<f64>,
    #[serde(default)]
    pub(crate) created: String,
    #[serde(default)]
    pub(crate) size_bytes: Option<u64>,
}

impl Meta {
    fn listing(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "run": self.run,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "created": self.created,
            "size": self.size_bytes,
        })
    }
}

/// The longest request path copied into an audit record.
const MAX_AUDITED_PATH: usize = 256;

/// Answer one request; every answer carries its own audit record.
pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    peer: &Peer,
) -> Response<Audited> {
    let raw_path = req.uri().path().to_string();
    let method = req.method().clone();
    drop(req);
    let path: String = raw_path.chars().take(MAX_AUDITED_PATH).collect();
    let mut details = serde_json::Map::new();
    details.insert("peer".into(), peer.addr.to_string().into());
    details.insert("method".into(), method.as_str().into());
    details.insert("path".into(), path.clone().into());
    let partner = {
        let partners = shared.partners.clone();
        let fp = peer.cert_sha256.clone();
        tokio::task::spawn_blocking(move || partners.lookup(&fp)).await
    };
    let info = match partner {
        Ok(Ok(Some(info))) => info,
        Ok(Ok(None)) => {
            // Removed from the table while the connection was open.
            details.insert("cert_sha256".into(), peer.cert_sha256.clone().into());
            let e = entry("partner:unknown", "serve.request", &path, details);
            return error(shared, e, StatusCode::FORBIDDEN, "serve-partner-unknown");
        }
        _ => {
            let e = entry("partner:unknown", "serve.request", &path, details);
            return error(shared, e, StatusCode::SERVICE_UNAVAILABLE, "serve-internal");
        }
    };
    details.insert("policy_sha256".into(), info.policy_sha256.clone().into());
    let partner = info.name.clone();
    let actor = format!("partner:{partner}");
    if !shared.audit.healthy() {
        let e = entry(&actor, "serve.request", &path, details);
        return error(
            shared,
            e,
            StatusCode::SERVICE_UNAVAILABLE,
            "serve-audit-unavailable",
        );
    }
    if method != Method::GET {
        let e = entry(&actor, "serve.request", &path, details);
        let mut r = error(
            shared,
            e,
            StatusCode::METHOD_NOT_ALLOWED,
            "serve-method-not-allowed",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let segs: Vec<&str> = raw_path.split('/').skip(1).collect();
    match segs.as_slice() {
        ["healthz"] => {
            let body = serde_json::json!({"status": "ok", "partner": partner});
            json(
                shared,
                entry(&actor, "serve.health", "healthz", details),
                &body,
            )
        }
        ["v1", "packages"] | ["v1", "packages", ""] => {
            let list = {
                let dir = shared.packages_dir.clone();
                let p = info.clone();
                tokio::task::spawn_blocking(move || list_packages(&dir, &p)).await
            };
            let Ok(list) = list else {
                let e = entry(&actor, "serve.list", "packages", details);
                return error(
                    shared,
                    e,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "serve-internal",
                );
            };
            details.insert("count".into(), list.len().into());
            let body = serde_json::json!({
                "partner": partner,
                "packages": list.iter().map(Meta::listing).collect::<Vec<_>>(),
            });
            json(
                shared,
                entry(&actor, "serve.list", "packages", details),
                &body,
            )
        }
        ["v1", "packages", id] if id.ends_with(".tar") => {
            let id = &id[..id.len() - 4];
            let Some(meta) = visible(shared, &info, id).await else {
                return not_found(shared, entry(&actor, "serve.download", id, details));
            };
            details.insert("format".into(), "tar".into());
            download_tar(shared, entry(&actor, "serve.download", &meta.id, details)).await
        }
        ["v1", "packages", id] => {
            let Some(meta) = visible(shared, &info, id).await else {
                return not_found(shared, entry(&actor, "serve.request", id, details));
            };
            json(
                shared,
                entry(&actor, "serve.show", &meta.id, details),
                &meta.listing(),
            )
        }
        ["v1", "packages", id, rest @ ..] => {
            let (Some(rel), Some(meta)) = (safe_relative(rest), visible(shared, &info, id).await)
            else {
                return not_found(shared, entry(&actor, "serve.download", id, details));
            };
            details.insert("format".into(), "file".into());
            details.insert("file".into(), rel.display().to_string().into());
            download_file(
                shared,
                entry(&actor, "serve.download", &meta.id, details),
                &rel,
            )
            .await
        }
        _ => not_found(shared, entry(&actor, "serve.request", &path, details)),
    }
}

fn entry(
    actor: &str,
    action: &'static str,
    object: &str,
    details: serde_json::Map<String, serde_json::Value>,
) -> Entry {
    Entry {
        actor: actor.into(),
        action,
        object: object.chars().take(MAX_AUDITED_PATH).collect(),
        status: 200,
        reason: None,
        details,
    }
}

fn respond(
    shared: &Arc<Shared>,
    mut e: Entry,
    status: StatusCode,
    ctype: &'static str,
    body: Inner,
) -> Response<Audited> {
    e.status = status.as_u16();
    let mut r = Response::new(Audited::new(body, e, shared.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn json(shared: &Arc<Shared>, e: Entry, v: &serde_json::Value) -> Response<Audited> {
    let mut text = serde_json::to_vec_pretty(v).expect("invariant: JSON values serialize");
    text.push(b'\n');
    respond(shared, e, StatusCode::OK, "application/json", full(text))
}

fn error(
    shared: &Arc<Shared>,
    mut e: Entry,
    status: StatusCode,
    code: &'static str,
) -> Response<Audited> {
    e.reason = Some(code);
    let body = serde_json::json!({"error": code, "status": status.as_u16()});
    let mut text = serde_json::to_vec(&body).expect("invariant: JSON values serialize");
    text.push(b'\n');
    respond(shared, e, status, "application/json", full(text))
}

/// The one "not found" answer, identical for missing and foreign packages.
fn not_found(shared: &Arc<Shared>, e: Entry) -> Response<Audited> {
    error(shared, e, StatusCode::NOT_FOUND, "serve-not-found")
}

/// Log the intent durably before any package byte leaves (fail closed).
async fn intent(shared: &Arc<Shared>, e: &Entry) -> Result<(), String> {
    let rec = NewRecord::new(&e.actor, e.action, &e.object, Outcome::Intent)
        .details(serde_json::Value::Object(e.details.clone()));
    shared.audit.record_durably(rec).await
}

async fn download_tar(shared: &Arc<Shared>, e: Entry) -> Response<Audited> {
    if let Err(why) = intent(shared, &e).await {
        tracing::error!("download refused, audit log unavailable: {why}");
        return error(
            shared,
            e,
            StatusCode::SERVICE_UNAVAILABLE,
            "serve-audit-unavailable",
        );
    }
    let id = e.object.clone();
    let body = tarstream::stream(package_dir(&shared.packages_dir, &id), id.clone());
    let mut r = respond(shared, e, StatusCode::OK, "application/x-tar", body);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.tar\"")) {
        r.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    r
}

async fn download_file(shared: &Arc<Shared>, e: Entry, rel: &Path) -> Response<Audited> {
    let dir = package_dir(&shared.packages_dir, &e.object);
    let path = {
        let rel = rel.to_path_buf();
        tokio::task::spawn_blocking(move || no_symlinks_below(&dir, &rel)).await
    };
    let Ok(Some(path)) = path else {
        return not_found(shared, e);
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return not_found(shared, e),
    };
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return not_found(shared, e),
    };
    if let Err(why) = intent(shared, &e).await {
        tracing::error!("download refused, audit log unavailable: {why}");
        return error(
            shared,
            e,
            StatusCode::SERVICE_UNAVAILABLE,
            "serve-audit-unavailable",
        );
    }
    use http_body_util::BodyExt;
    // Exactly `len` bytes, read in 64 KiB chunks.
    let reader = tokio::io::AsyncReadExt::take(file, len);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024);
    let frames = futures_util::StreamExt::map(stream, |r| r.map(hyper::body::Frame::data));
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    let ctype = content_type(rel);
    let mut r = respond(shared, e, StatusCode::OK, ctype, body);
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

fn content_type(rel: &Path) -> &'static str {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("jsonl") => "application/jsonl",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("png") => "image/png",
        Some("pem") => "application/x-pem-file",
        Some("txt" | "sig" | "pub") => "text/plain; charset=utf-8",
        _ if name == "SHA256SUMS" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The package `id` if it exists and was made for `partner`.
async fn visible(shared: &Arc<Shared>, partner: &PartnerInfo, id: &str) -> Option<Meta> {
    crate::workspace::validate_name(id).ok()?;
    let dir = shared.packages_dir.clone();
    let (partner, id) = (partner.clone(), id.to_string());
    tokio::task::spawn_blocking(move || {
        let meta = read_meta(&dir, &id)?;
        allowed(&dir, &id, &meta, &partner).then_some(meta)
    })
    .await
    .ok()
    .flatten()
}

/// The package's index entry names this partner (and this id), the partner may still receive
/// the package's dataset under the policy in force, and the package directory is published.
fn allowed(dir: &Path, id: &str, meta: &Meta, partner: &PartnerInfo) -> bool {
    let dataset_ok = match (&partner.datasets, &meta.dataset) {
        (None, _) => true,
        (Some(list), Some(d)) => list.iter().any(|x| x == d),
        (Some(_), None) => false,
    };
    meta.partner == partner.name
        && meta.id == id
        && dataset_ok
        && std::fs::symlink_metadata(package_dir(dir, id)).is_ok_and(|m| m.is_dir())
}

fn read_meta(dir: &Path, id: &str) -> Option<Meta> {
    let path = dir.join(format!("{id}.meta.json"));
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<Meta>(&text) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("skipping {}: {e}", path.display());
            None
        }
    }
}

/// This partner's packages, newest first.
fn list_packages(dir: &Path, partner: &PartnerInfo) -> Vec<Meta> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<Meta> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".meta.json")?;
            crate::workspace::validate_name(id).ok()?;
            let m = read_meta(dir, id)?;
            allowed(dir, id, &m, partner).then_some(m)
        })
        .collect();
    v.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    v
}

/// Decode a request path below a package into a safe relative path, or `None`.
pub(crate) fn safe_relative(segs: &[&str]) -> Option<PathBuf> {
    if segs.is_empty() || segs.len() > 16 {
        return None;
    }
    let mut p = PathBuf::new();
    for s in segs {
        let d = percent_decode(s)?;
        let bad = d.is_empty()
            || d.starts_with('.')
            || d.contains(['/', '\\', '\0'])
            || d.chars().any(char::is_control);
        if bad {
            return None;
        }
        p.push(d);
    }
    Some(p)
}

/// Strict percent-decoding to UTF-8; `None` on a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits exactly (`u8::from_str_radix` would also take a sign: "%+f").
            out.push(crate::digest::unhex(s.get(i + 1..i + 3)?)?[0]);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `dir/rel` if no component below `dir` is a symbolic link and it is a regular file.
fn no_symlinks_below(dir: &Path, rel: &Path) -> Option<PathBuf> {
    let mut p = dir.to_path_buf();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(n) => p.push(n),
            _ => return None,
        }
        let m = std::fs::symlink_metadata(&p).ok()?;
        if m.file_type().is_symlink() {
            return None;
        }
    }
    std::fs::symlink_metadata(&p)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_confined() {
        assert_eq!(
            safe_relative(&["data", "synthetic.parquet"]).unwrap(),
            PathBuf::from("data/synthetic.parquet")
        );
        assert_eq!(
            safe_relative(&["data", "a%20b.png"]).unwrap(),
            PathBuf::from("data/a b.png")
        );
        for bad in [
            vec![".."],
            vec!["data", ".."],
            vec!["%2e%2e", "etc"],
            vec!["data", "..%2f..%2fretort.toml"],
            vec!["data%2F..", "x"],
            vec!["", "x"],
            vec!["x", ""],
            vec!["."],
            vec![".hidden"],
            vec!["a%00b"],
            vec!["a%zz"],
            vec!["a%+f"],
            vec!["a%4"],
            vec!["a%c3"],
            vec!["a\\..\\b"],
            vec![],
        ] {
            assert!(safe_relative(&bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("data")).unwrap();
        std::fs::write(pkg.join("data/f"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), pkg.join("data/l")).unwrap();
        std::os::unix::fs::symlink(dir.path(), pkg.join("up")).unwrap();
        assert!(no_symlinks_below(&pkg, Path::new("data/f")).is_some());
        assert!(no_symlinks_below(&pkg, Path::new("data/l")).is_none());
        assert!(no_symlinks_below(&pkg, Path::new("up/secret")).is_none());
        assert!(
            no_symlinks_below(&pkg, Path::new("data")).is_none(),
            "a directory is not a file"
        );
        assert!(no_symlinks_below(&pkg, Path::new("data/missing")).is_none());
    }

    #[test]
    fn listing_filters_by_partner_and_needs_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let meta = |id: &str, partner: &str, created: &str| {
            serde_json::json!({"id": id, "run": "r", "dataset": "ds", "partner": partner,
                "epsilon": 1.0, "delta": 1e-5, "created": created, "size_bytes": 3, "files": []})
            .to_string()
        };
        for (id, p, c) in [
            ("p1", "alpha", "2026-01-01T00:00:00Z"),
            ("p2", "beta", "2026-01-02T00:00:00Z"),
            ("p3", "alpha", "2026-01-03T00:00:00Z"),
        ] {
            std::fs::create_dir(d.join(id)).unwrap();
            std::fs::write(d.join(format!("{id}.meta.json")), meta(id, p, c)).unwrap();
        }
        // An index entry without its directory (not yet published) is not listed.
        std::fs::write(
            d.join("p4.meta.json"),
            meta("p4", "alpha", "2026-01-04T00:00:00Z"),
        )
        .unwrap();
        // An entry whose id does not match its file name is ignored.
        std::fs::create_dir(d.join("p5")).unwrap();
        std::fs::write(
            d.join("p5.meta.json"),
            meta("p1", "alpha", "2026-01-05T00:00:00Z"),
        )
        .unwrap();
        std::fs::write(d.join("junk.meta.json"), b"{not json").unwrap();
        let who = |name: &str, datasets: Option<Vec<String>>| PartnerInfo {
            name: name.into(),
            datasets,
            policy_sha256: String::new(),
        };
        let ids = |p: &PartnerInfo| -> Vec<String> {
            list_packages(d, p).into_iter().map(|m| m.id).collect()
        };
        assert_eq!(ids(&who("alpha", None)), ["p3", "p1"]);
        assert_eq!(ids(&who("beta", None)), ["p2"]);
        assert!(ids(&who("gamma", None)).is_empty());
        // A partner restricted to other datasets by the policy in force sees nothing.
        assert_eq!(ids(&who("alpha", Some(vec!["ds".into()]))), ["p3", "p1"]);
        assert!(ids(&who("alpha", Some(vec!["other".into()]))).is_empty());
    }
}
