//! Resource downloads for deploy jobs: each file is fetched with the node's own credentials,
//! its size and sha256 checked while it streams, and kept under `<state dir>/resources/<versionId>`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::tunnel::protocol::DeployResource;

/// Where to fetch from and as whom.
#[derive(Clone)]
pub struct Downloader {
    pub http: reqwest::Client,
    /// The server base URL, for relative download URLs.
    pub server: String,
    pub authorization: String,
    /// `None`: check the file, then discard it.
    pub dir: Option<PathBuf>,
}

impl Downloader {
    /// Fetches and checks every resource of a flow; the first problem fails the whole deploy.
    pub async fn fetch_all(&self, resources: &[DeployResource]) -> Result<(), String> {
        for resource in resources {
            self.fetch(resource).await.map_err(|error| {
                let name = resource.path.as_deref().map(|p| format!(" ({p})")).unwrap_or_default();
                format!("resource {} version {}{name}: {error}", resource.resource_id, resource.version_id)
            })?;
        }
        Ok(())
    }

    async fn fetch(&self, resource: &DeployResource) -> Result<(), String> {
        let expected_size = u64::try_from(resource.size_in_bytes).map_err(|_| "negative sizeInBytes".to_owned())?;
        let expected_sha = resource.sha256.trim().to_ascii_lowercase();
        let target = self.dir.as_ref().map(|dir| dir.join(resource.version_id.to_string()));
        if let Some(target) = &target
            && file_matches(target, expected_size, &expected_sha).await
        {
            return Ok(());
        }

        let url = if resource.download_url.starts_with('/') {
            format!("{}{}", self.server.trim_end_matches('/'), resource.download_url)
        } else {
            resource.download_url.clone()
        };
        let mut response = self
            .http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .send()
            .await
            .map_err(|error| format!("download failed: {}", error_chain(&error)))?;
        if !response.status().is_success() {
            return Err(format!("download failed: HTTP {}", response.status()));
        }

        let mut file = None;
        let temp = target.as_ref().map(|t| t.with_extension("part"));
        if let (Some(dir), Some(temp)) = (&self.dir, &temp) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            file =
                Some(tokio::fs::File::create(temp).await.map_err(|e| format!("cannot write {}: {e}", temp.display()))?);
        }
        let result = async {
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) =
                response.chunk().await.map_err(|error| format!("download interrupted: {}", error_chain(&error)))?
            {
                size += chunk.len() as u64;
                if size > expected_size {
                    return Err(format!("size mismatch: more than the expected {expected_size} bytes"));
                }
                hasher.update(&chunk);
                if let Some(file) = file.as_mut() {
                    file.write_all(&chunk).await.map_err(|e| format!("cannot write the file: {e}"))?;
                }
            }
            if size != expected_size {
                return Err(format!("size mismatch: got {size} bytes, expected {expected_size}"));
            }
            let actual = hex::encode(hasher.finalize());
            if actual != expected_sha {
                return Err(format!("sha256 mismatch: got {actual}, expected {expected_sha}"));
            }
            if let Some(mut file) = file.take() {
                file.flush().await.map_err(|e| format!("cannot write the file: {e}"))?;
                file.sync_all().await.map_err(|e| format!("cannot write the file: {e}"))?;
            }
            Ok(())
        }
        .await;
        if let (Some(temp), Some(target)) = (&temp, &target) {
            match &result {
                Ok(()) => tokio::fs::rename(temp, target).await.map_err(|e| format!("cannot store the file: {e}"))?,
                Err(_) => {
                    let _ = tokio::fs::remove_file(temp).await;
                }
            }
        }
        result
    }

    /// Deletes stored files no installed flow uses any more.
    pub async fn prune(&self, in_use: &HashSet<Uuid>) {
        let Some(dir) = &self.dir else { return };
        let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let keep = name.to_str().and_then(|n| n.parse::<Uuid>().ok()).is_some_and(|id| in_use.contains(&id));
            if !keep {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }
}

/// A stored file with the expected size and hash need not be fetched again.
async fn file_matches(path: &Path, size: u64, sha256: &str) -> bool {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.len() == size => {}
        _ => return false,
    }
    let path = path.to_owned();
    let sha256 = sha256.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).ok()?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).ok()?;
        Some(hex::encode(hasher.finalize()) == sha256)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
