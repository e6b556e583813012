//! A local directory standing in for Cloud Storage ([`Storage::local`]).

use std::ops::Range;

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt, TryStreamExt};

use super::handle::ObjectInfo;
use crate::{
    error::{Error, Result},
    uri::GcsUri,
};

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

pub(super) fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Storage {
        message: format!("{}: {e}", path.display()),
        http_status: (e.kind() == std::io::ErrorKind::NotFound).then_some(404),
        source: Some(Box::new(e)),
    }
}

/// The file (or directory) behind `gs://BUCKET/OBJECT` in a directory
/// standing in for Cloud Storage: `root/BUCKET/SEG/…`, one level per
/// `/`-separated segment of `object`, empty segments skipped (`a//b`,
/// `/a/b` and `a/b/` are all `root/BUCKET/a/b`), so a leading `/` never
/// makes the path absolute. `.` and `..` segments are refused by
/// [`GcsUri`] already; a caller that takes names from elsewhere, or wants
/// stricter names (the emulator refuses encoded `..`, drive letters and
/// `//`), checks them before calling this.
pub(crate) fn object_path(root: &Path, bucket: &str, object: &str) -> PathBuf {
    let mut p = root.join(bucket);
    for seg in object.split('/').filter(|s| !s.is_empty()) {
        p.push(seg);
    }
    p
}

pub(super) fn path(root: &Path, uri: &GcsUri) -> PathBuf {
    object_path(root, uri.bucket(), uri.object())
}

/// Writes to a hidden file beside the target, renamed into place by
/// `finish`: a reader never sees half an object.
pub(super) struct Writer {
    pub(super) uri: GcsUri,
    pub(super) tmp: PathBuf,
    pub(super) target: PathBuf,
    pub(super) file: tokio::io::BufWriter<tokio::fs::File>,
    pub(super) len: u64,
}

impl Writer {
    pub(super) async fn create(root: &Path, uri: &GcsUri) -> Result<Writer> {
        let target = path(root, uri);
        let parent = target.parent().unwrap_or(root).to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| io(&parent, e))?;
        let tmp = parent.join(format!(".upload-{:016x}.partial", fastrand::u64(..)));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io(&tmp, e))?;
        Ok(Writer {
            uri: uri.clone(),
            tmp,
            target,
            file: tokio::io::BufWriter::with_capacity(1 << 18, file),
            len: 0,
        })
    }

    pub(super) async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len() as u64;
        self.file
            .write_all(data)
            .await
            .map_err(|e| io(&self.tmp, e))
    }

    /// Publishes only if nothing is at the target yet (a hard link
    /// cannot replace a file): `None` when something was.
    pub(super) async fn finish_new(mut self) -> Result<Option<ObjectInfo>> {
        self.file.flush().await.map_err(|e| io(&self.tmp, e))?;
        let linked = tokio::fs::hard_link(&self.tmp, &self.target).await;
        let _ = tokio::fs::remove_file(&self.tmp).await;
        match linked {
            Ok(()) => Ok(Some(self.info().await?)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io(&self.target, e)),
        }
    }

    pub(super) async fn finish(mut self) -> Result<ObjectInfo> {
        self.file.flush().await.map_err(|e| io(&self.tmp, e))?;
        tokio::fs::rename(&self.tmp, &self.target)
            .await
            .map_err(|e| io(&self.target, e))?;
        self.info().await
    }

    /// Replaces the object only if its generation is still `generation`:
    /// `None` (and nothing written) when it is not. Atomic within this
    /// process (one lock for every local replace); across processes the
    /// check and the rename are two steps, so a directory shared by
    /// several processes gives only a best-effort precondition.
    pub(super) async fn finish_if_generation(
        mut self,
        generation: u64,
    ) -> Result<Option<ObjectInfo>> {
        static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        self.file.flush().await.map_err(|e| io(&self.tmp, e))?;
        let _held = LOCK.lock().await;
        let current = match tokio::fs::metadata(&self.target).await {
            Ok(m) if m.is_file() => generation_of(&m),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&self.target, e)),
        };
        if current != Some(generation) {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Ok(None);
        }
        tokio::fs::rename(&self.tmp, &self.target)
            .await
            .map_err(|e| io(&self.target, e))?;
        self.info().await.map(Some)
    }

    async fn info(&self) -> Result<ObjectInfo> {
        let m = tokio::fs::metadata(&self.target)
            .await
            .map_err(|e| io(&self.target, e))?;
        Ok(ObjectInfo {
            uri: self.uri.clone(),
            size: self.len,
            generation: generation_of(&m),
        })
    }
}

/// A local file's stand-in for a generation: its modification time in
/// nanoseconds, mixed with its inode on Unix (every write here renames a
/// new file into place, so both change with each write).
pub(super) fn generation_of(m: &std::fs::Metadata) -> Option<u64> {
    let nanos = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as u64;
    #[cfg(unix)]
    let nanos = nanos ^ std::os::unix::fs::MetadataExt::ino(m).rotate_left(40);
    Some(nanos.max(1))
}

pub(super) async fn metadata(root: &Path, uri: &GcsUri) -> Result<Option<ObjectInfo>> {
    let p = path(root, uri);
    match tokio::fs::metadata(&p).await {
        Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
            uri: uri.clone(),
            size: m.len(),
            generation: generation_of(&m),
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&p, e)),
    }
}

pub(super) async fn delete(root: &Path, uri: &GcsUri) -> Result<()> {
    let p = path(root, uri);
    tokio::fs::remove_file(&p).await.map_err(|e| io(&p, e))
}

pub(super) async fn read(
    root: &Path,
    uri: &GcsUri,
    range: Option<Range<u64>>,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    let p = path(root, uri);
    let mut file = tokio::fs::File::open(&p).await.map_err(|e| io(&p, e))?;
    let limit = match range {
        Some(r) => {
            // As Cloud Storage answers: nothing from past the end is a 416.
            let len = file.metadata().await.map_err(|e| io(&p, e))?.len();
            if r.start > 0 && r.start >= len && r.end > r.start {
                return Err(Error::Storage {
                    message: format!("reading {uri}: HTTP 416 Range Not Satisfiable"),
                    http_status: Some(416),
                    source: None,
                });
            }
            file.seek(std::io::SeekFrom::Start(r.start))
                .await
                .map_err(|e| io(&p, e))?;
            r.end.saturating_sub(r.start)
        }
        None => u64::MAX,
    };
    let name = p.clone();
    Ok(
        tokio_util::io::ReaderStream::with_capacity(file.take(limit), 256 << 10)
            .map_err(move |e| io(&name, e))
            .boxed(),
    )
}

/// Objects under `prefix`, in name order (hidden partial uploads left
/// out).
pub(super) fn list(root: &Path, prefix: &GcsUri) -> BoxStream<'static, Result<ObjectInfo>> {
    let root = root.to_path_buf();
    let prefix = prefix.clone();
    futures::stream::once(async move {
        tokio::task::spawn_blocking(move || walk(&root, &prefix))
            .await
            .map_err(|e| Error::config(format!("listing failed: {e}")))?
    })
    .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

pub(super) fn walk(root: &Path, prefix: &GcsUri) -> Result<Vec<ObjectInfo>> {
    let bucket = root.join(prefix.bucket());
    // Walk from the deepest directory the prefix names.
    let dir_part = &prefix.object()[..prefix.object().rfind('/').map_or(0, |i| i + 1)];
    let start = object_path(root, prefix.bucket(), dir_part);
    let mut out = Vec::new();
    let mut todo = vec![start];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io(&d, e))?;
            let p = entry.path();
            let ty = entry.file_type().map_err(|e| io(&p, e))?;
            if ty.is_dir() {
                todo.push(p);
            } else if ty.is_file() {
                let Ok(rel) = p.strip_prefix(&bucket) else {
                    continue;
                };
                let name = rel.to_string_lossy().replace('\\', "/");
                let hidden = name
                    .rsplit('/')
                    .next()
                    .is_some_and(|b| b.starts_with(".upload-"));
                if hidden || !name.starts_with(prefix.object()) {
                    continue;
                }
                let meta = entry.metadata().map_err(|e| io(&p, e))?;
                out.push(ObjectInfo {
                    uri: GcsUri::parse_field(
                        &format!("gs://{}/{name}", prefix.bucket()),
                        "object",
                    )?,
                    size: meta.len(),
                    generation: generation_of(&meta),
                });
            }
        }
    }
    out.sort_by(|a, b| a.uri.object().cmp(b.uri.object()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> GcsUri {
        GcsUri::parse_field(s, "uri").unwrap()
    }

    /// The layout data directories already hold: one directory per bucket,
    /// one level per segment.
    #[test]
    fn objects_map_to_bucket_and_segments() {
        let root = Path::new("/data/gcs");
        assert_eq!(
            path(root, &uri("gs://bkt/in/prompts.jsonl")),
            Path::new("/data/gcs/bkt/in/prompts.jsonl")
        );
        assert_eq!(path(root, &uri("gs://bkt")), Path::new("/data/gcs/bkt"));
        assert_eq!(
            path(root, &uri("gs://bkt/out/")),
            Path::new("/data/gcs/bkt/out")
        );
        assert_eq!(
            object_path(root, "bkt", "a//b/"),
            Path::new("/data/gcs/bkt/a/b")
        );
    }

    /// A leading '/' (an "absolute" object name) stays below the bucket.
    #[test]
    fn absolute_object_names_stay_below_the_bucket() {
        let root = Path::new("/data/gcs");
        let p = path(root, &uri("gs://bkt//etc/passwd"));
        assert_eq!(p, Path::new("/data/gcs/bkt/etc/passwd"));
        assert!(object_path(root, "bkt", "/x").starts_with("/data/gcs/bkt"));
    }

    /// `..` never reaches the mapping: the URI refuses it.
    #[test]
    fn dot_dot_names_are_refused_before_mapping() {
        assert!(GcsUri::parse_field("gs://bkt/a/../b", "uri").is_err());
        assert!(GcsUri::parse_field("gs://bkt/..", "uri").is_err());
    }
}
