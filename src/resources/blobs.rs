//! The blob store: resource content in an object store (a local directory by default, written
//! with fsync; S3 or compatible with the `s3` feature). Writes stream through `BlobWriter`, which
//! counts the bytes and computes sha256 and md5 on the way; reads stream ranges. Nothing here
//! holds a whole file in memory. The object store keeps no content type: that lives in Postgres.

use std::{
    io::SeekFrom,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream::BoxStream};
use md5::Md5;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
    local::LocalFileSystem, path::Path as BlobPath,
};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::config::Config;

/// Bytes gathered before a part is handed to the store (S3 needs at least 5 MiB per part).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts written at once per upload: with `PART_BYTES`, what bounds an upload's memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Read size when streaming a local file out.
const READ_CHUNK: usize = 256 * 1024;

/// A stream of a blob's bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What was written: size and digests (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub md5: String,
}

pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The directory of a local store: a crash mid-write leaves a staging file beside the blob's
    /// path (`<name>#<n>`) that the object store API cannot see, removed here on clean-up.
    local_root: Option<PathBuf>,
    description: String,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Blobs {
    /// The store `EDGEFLOW_BLOB_URL` names, or `<data dir>/blobs`.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        match config.blob_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => Self::local(&config.data_dir.join("blobs")),
            Some(url) if url.starts_with("s3://") => Self::s3(url),
            Some(url) => Self::local(Path::new(url.strip_prefix("file://").unwrap_or(url))),
        }
    }

    /// A local directory (created when missing), every write fsynced before it counts.
    pub fn local(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the blob directory {}", dir.display()))?;
        let root = std::fs::canonicalize(dir)?;
        let store = LocalFileSystem::new_with_prefix(&root)?.with_fsync(true).with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            description: format!("local directory {}", root.display()),
            local_root: Some(root),
        })
    }

    #[cfg(feature = "s3")]
    fn s3(url: &str) -> anyhow::Result<Self> {
        let rest = url.trim_start_matches("s3://");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "EDGEFLOW_BLOB_URL: expected s3://bucket/prefix");
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .context("configuring the S3 blob store (see the AWS_* variables)")?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        Ok(Self { store, local_root: None, description: format!("s3 bucket {bucket} prefix '{prefix}'") })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_url: &str) -> anyhow::Result<Self> {
        anyhow::bail!("EDGEFLOW_BLOB_URL is an s3:// URL, but this build has no S3 support: build with `--features s3`")
    }

    /// Starts writing the blob `key`; nothing is visible under the key until `finish`.
    pub fn writer(&self, key: &str) -> BlobWriter {
        BlobWriter {
            store: self.store.clone(),
            key: BlobPath::from(key),
            upload: None,
            sha256: Sha256::new(),
            md5: Md5::default(),
            size: 0,
        }
    }

    /// Streams `range` of the blob `key` (an empty range reads nothing).
    pub async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream, object_store::Error> {
        if range.is_empty() {
            return Ok(futures_util::stream::empty().boxed());
        }
        let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
        let result = self.store.get_opts(&BlobPath::from(key), options).await?;
        let range = result.range.clone();
        Ok(match result.payload {
            // A local file: read it in large chunks (the generic stream reads 8 KiB at a time).
            GetResultPayload::File(file, _) => {
                let mut file = tokio::fs::File::from_std(file);
                let length = range.end - range.start;
                futures_util::stream::once(async move {
                    file.seek(SeekFrom::Start(range.start)).await?;
                    Ok::<_, std::io::Error>(ReaderStream::with_capacity(file.take(length), READ_CHUNK))
                })
                .try_flatten()
                .boxed()
            }
            GetResultPayload::Stream(stream) => stream.map_err(std::io::Error::other).boxed(),
        })
    }

    /// Deletes the blob `key` (a missing one is fine), and any staging file a crashed write of it
    /// left behind in a local store.
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&BlobPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
        if let Some(root) = &self.local_root {
            remove_staging_files(root, key).await;
        }
        Ok(())
    }

    /// Whether the blob `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, object_store::Error> {
        match self.store.head(&BlobPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// Removes `<key>#<digits>` files: what the local store stages a write in before renaming it.
async fn remove_staging_files(root: &Path, key: &str) {
    let path = root.join(key);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return };
    let staged_prefix = format!("{name}#");
    while let Ok(Some(entry)) = entries.next_entry().await {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        if file_name
            .strip_prefix(&staged_prefix)
            .is_some_and(|suffix| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
    // Leave no empty directories behind (the store does the same for its own deletes).
    let mut current = Some(dir);
    while let Some(dir) = current {
        if dir == root || tokio::fs::remove_dir(dir).await.is_err() {
            break;
        }
        current = dir.parent();
    }
}

/// A blob being written. Bytes are hashed and counted as they pass, and handed to the store in
/// parts of `PART_BYTES` with at most `PARTS_IN_FLIGHT` in flight, so memory stays bounded
/// whatever the size. Dropping it unfinished abandons the write (the local store removes its
/// staging file; `abort` also tells a remote store).
pub struct BlobWriter {
    store: Arc<dyn ObjectStore>,
    key: BlobPath,
    upload: Option<WriteMultipart>,
    sha256: Sha256,
    md5: Md5,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size and digests of what was written so far.
    pub fn written(&self) -> Written {
        Written {
            size: self.size,
            sha256: hex::encode(self.sha256.clone().finalize()),
            md5: hex::encode(md5::Digest::finalize(self.md5.clone())),
        }
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), object_store::Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.sha256.update(&chunk);
        md5::Digest::update(&mut self.md5, &chunk);
        self.size += chunk.len() as u64;
        let upload = match &mut self.upload {
            Some(upload) => upload,
            none => {
                let started = self.store.put_multipart(&self.key).await?;
                none.insert(WriteMultipart::new_with_chunk_size(started, PART_BYTES))
            }
        };
        upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        upload.put(chunk);
        Ok(())
    }

    /// Makes the blob visible under its key and answers its size and digests.
    pub async fn finish(mut self) -> Result<Written, object_store::Error> {
        let written = self.written();
        match self.upload.take() {
            Some(upload) => {
                upload.finish().await?;
            }
            None => {
                self.store.put(&self.key, PutPayload::default()).await?;
            }
        }
        Ok(written)
    }

    /// Abandons the write, cleaning up what the store staged.
    pub async fn abort(mut self) {
        if let Some(upload) = self.upload.take()
            && let Err(err) = upload.abort().await
        {
            tracing::warn!(error = %err, key = %self.key, "aborting a blob upload failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(url: &str) -> Config {
        let mut config = Config::for_database("postgres://localhost/none");
        config.blob_url = Some(url.into());
        config
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_make_an_s3_store() {
        let blobs = Blobs::from_config(&config_with("s3://bucket/edgeflow/blobs")).expect("s3 store");
        assert!(format!("{blobs:?}").contains("bucket"), "{blobs:?}");
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_urls_need_the_s3_feature() {
        let err = Blobs::from_config(&config_with("s3://bucket/prefix")).expect_err("no s3 in this build");
        assert!(err.to_string().contains("--features s3"), "{err}");
    }

    #[tokio::test]
    async fn writes_hashes_reads_ranges_and_deletes() {
        let dir = std::env::temp_dir().join(format!("edgeflow-blobs-{}", uuid::Uuid::new_v4().simple()));
        let blobs = Blobs::local(&dir).expect("store");
        let mut writer = blobs.writer("org/res/ver/blob");
        writer.write(Bytes::from_static(b"hello ")).await.expect("write");
        writer.write(Bytes::from_static(b"world")).await.expect("write");
        let written = writer.finish().await.expect("finish");
        assert_eq!(written.size, 11);
        assert_eq!(written.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(written.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        let read: Vec<Bytes> =
            blobs.read("org/res/ver/blob", 6..11).await.expect("read").try_collect().await.expect("bytes");
        assert_eq!(read.concat(), b"world");
        std::fs::write(dir.join("org/res/ver/blob#1"), b"staged").expect("staging file");
        blobs.delete("org/res/ver/blob").await.expect("delete");
        assert!(!blobs.exists("org/res/ver/blob").await.expect("head"));
        assert!(!dir.join("org").exists(), "empty directories and staging files are removed");
        let empty = blobs.writer("empty").finish().await.expect("empty blob");
        assert_eq!(empty.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
