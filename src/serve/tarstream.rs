//! A package directory as a POSIX (GNU) tar, built while it is sent: a blocking task walks the
//! directory and writes the archive into a bounded channel of 64 KiB chunks, so memory use is
//! a few chunks per download whatever the package size. If the client goes away the channel
//! closes and the writer stops.
//!
//! Entries are `<id>/…` in sorted order, regular files and directories only (symbolic links
//! and special files are skipped), with mode 0644/0755, owner 0 and the files' modification
//! times, so `tar -xf <id>.tar` recreates the package directory for `retort verify`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::body::Inner;

const CHUNK: usize = 64 * 1024;
const CHANNEL_CHUNKS: usize = 4;

/// Stream `dir` as a tar whose entries start with `prefix/`.
pub(crate) fn stream(dir: PathBuf, prefix: String) -> Inner {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        if let Err(e) = write_tar(&dir, &prefix, ChanWriter::new(tx)) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!("tar of {} failed: {e}", dir.display());
                let _ = err_tx.blocking_send(Err(e));
            }
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Write the tar of `dir` (entries under `prefix/`) to `out`.
///
/// # Errors
/// I/O errors reading the directory or writing `out`.
pub(crate) fn write_tar<W: Write>(dir: &Path, prefix: &str, out: W) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let mut h = dir_header();
    b.append_data(&mut h, format!("{prefix}/"), io::empty())?;
    add_dir(&mut b, dir, Path::new(prefix))?;
    b.into_inner()?.flush()
}

fn dir_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn add_dir<W: Write>(b: &mut tar::Builder<W>, dir: &Path, name: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type()?;
        let path = e.path();
        let entry_name = name.join(e.file_name());
        if ft.is_dir() {
            let mut h = dir_header();
            b.append_data(&mut h, format!("{}/", entry_name.display()), io::empty())?;
            add_dir(b, &path, &entry_name)?;
        } else if ft.is_file() {
            let f = fs::File::open(&path)?;
            let meta = f.metadata()?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(meta.len());
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(
                meta.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
            );
            // `take` guards against a file growing while it is read; a shrinking file makes
            // the tar crate fail the entry, which aborts the download (audited incomplete).
            b.append_data(&mut h, &entry_name, io::Read::take(f, meta.len()))?;
        } else {
            tracing::warn!("not serving {} (not a regular file)", path.display());
        }
    }
    Ok(())
}

/// A `Write` that sends 64 KiB chunks into the response channel (blocking when it is full).
struct ChanWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChanWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChanWriter {
        ChanWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len().min(CHUNK);
        let n = data.len().min(room.max(1));
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_round_trips_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pkg");
        fs::create_dir_all(p.join("data")).unwrap();
        fs::write(p.join("data/a.bin"), vec![7u8; 100_000]).unwrap();
        fs::write(p.join("SHA256SUMS"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("data/link")).unwrap();
        let mut out = Vec::new();
        write_tar(&p, "pkg-1", &mut out).unwrap();
        let mut ar = tar::Archive::new(out.as_slice());
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == "pkg-1/data/a.bin" {
                let mut v = Vec::new();
                io::Read::read_to_end(&mut e, &mut v).unwrap();
                assert_eq!(v, vec![7u8; 100_000]);
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "pkg-1/",
                "pkg-1/SHA256SUMS",
                "pkg-1/data/",
                "pkg-1/data/a.bin"
            ]
        );
    }
}
