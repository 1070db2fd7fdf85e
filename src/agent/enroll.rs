//! Self-enrolment with a registration key: `POST /api/edgenodes/register {registrationKey, name}`
//! once, the answered credentials saved in the state dir (owner-readable only) and reused.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::state::{Options, write_json_atomically};

pub const CREDENTIALS_FILE: &str = "credentials.json";

/// A node's identity as saved in `<state dir>/credentials.json`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub node_id: Uuid,
    pub access_key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("node_id", &self.node_id)
            .field("access_key", &"<redacted>")
            .field("name", &self.name)
            .finish()
    }
}

pub fn credentials_file(state_dir: &Path) -> PathBuf {
    state_dir.join(CREDENTIALS_FILE)
}

pub async fn load_credentials(state_dir: &Path) -> anyhow::Result<Option<Credentials>> {
    let path = credentials_file(state_dir);
    match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a credentials file", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub async fn save_credentials(state_dir: &Path, credentials: &Credentials) -> anyhow::Result<()> {
    write_json_atomically(&credentials_file(state_dir), credentials, Options { private: true, sync: true }).await
}

/// Enrols a new node named `name` with a registration key.
pub async fn register(
    http: &reqwest::Client,
    server: &str,
    registration_key: &str,
    name: &str,
) -> anyhow::Result<Credentials> {
    let url = format!("{}/api/edgenodes/register", server.trim_end_matches('/'));
    let response = http
        .post(&url)
        .json(&json!({"registrationKey": registration_key, "name": name}))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("no error message");
        bail!("enrolling {name:?} failed: HTTP {status}: {error}");
    }
    let node_id = body
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
        .context("the enrolment answer has no node id")?;
    let access_key =
        body.get("accessKey").and_then(Value::as_str).context("the enrolment answer has no access key")?.to_owned();
    Ok(Credentials { node_id, access_key, name: Some(name.to_owned()), server: Some(server.to_owned()) })
}

/// The saved credentials, or a new enrolment saved for next time.
pub async fn ensure_enrolled(
    http: &reqwest::Client,
    server: &str,
    registration_key: &str,
    name: &str,
    state_dir: &Path,
) -> anyhow::Result<(Credentials, bool)> {
    if let Some(credentials) = load_credentials(state_dir).await? {
        return Ok((credentials, false));
    }
    let credentials = register(http, server, registration_key, name).await?;
    save_credentials(state_dir, &credentials).await.with_context(|| {
        format!("node {name:?} was enrolled as {} but its credentials could not be saved", credentials.node_id)
    })?;
    Ok((credentials, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_and_loads_credentials_privately() {
        let dir = std::env::temp_dir().join(format!("edgeflow-agent-creds-{}", Uuid::new_v4().simple()));
        assert!(load_credentials(&dir).await.unwrap().is_none());
        let credentials =
            Credentials { node_id: Uuid::new_v4(), access_key: "secret".into(), name: Some("n".into()), server: None };
        save_credentials(&dir, &credentials).await.unwrap();
        let loaded = load_credentials(&dir).await.unwrap().unwrap();
        assert_eq!((loaded.node_id, loaded.access_key.as_str()), (credentials.node_id, "secret"));
        assert!(!format!("{loaded:?}").contains("secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(credentials_file(&dir)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
