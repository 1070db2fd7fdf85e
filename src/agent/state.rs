//! The agent's state directory: `state.json` (runtime, finished jobs, shadow), written atomically
//! after each change; `resources/<versionId>` (downloaded files); `credentials.json` (enrolment).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::runtime::{PersistedRuntime, Runtime};

pub const STATE_FILE: &str = "state.json";
pub const RESOURCES_DIR: &str = "resources";

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

pub fn resources_dir(dir: &Path) -> PathBuf {
    dir.join(RESOURCES_DIR)
}

/// Reads the saved runtime. Missing: an empty runtime. Unreadable or corrupt: the file is moved
/// aside (`state.json.corrupt`) and the agent starts empty; the server still knows which jobs
/// are finished, so nothing reruns that it has a final state for.
pub async fn load(dir: &Path) -> anyhow::Result<(Runtime, Option<String>)> {
    let path = state_file(dir);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((Runtime::new(), None)),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    match serde_json::from_slice::<PersistedRuntime>(&bytes) {
        Ok(persisted) => Ok((Runtime::from_persisted(persisted), None)),
        Err(error) => {
            let aside = dir.join(format!("{STATE_FILE}.corrupt"));
            tokio::fs::rename(&path, &aside)
                .await
                .with_context(|| format!("cannot move the corrupt {} aside", path.display()))?;
            let warning =
                format!("{} was corrupt ({error}); moved to {}, starting empty", path.display(), aside.display());
            Ok((Runtime::new(), Some(warning)))
        }
    }
}

/// `sync`: make the new file durable before it replaces the old one.
pub async fn save(dir: &Path, runtime: &Runtime, sync: bool) -> anyhow::Result<()> {
    write_json_atomically(&state_file(dir), &runtime.to_persisted(), Options { private: false, sync }).await
}

/// How a file is written.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Readable by the owner only.
    pub private: bool,
    /// Synced to disk before the rename.
    pub sync: bool,
}

/// Writes `value` to a temporary file beside `path` and renames it over `path`, so a crash
/// leaves either the old file or the new one.
pub async fn write_json_atomically<T: Serialize>(path: &Path, value: &T, options: Options) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).context("cannot serialize the state")?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_atomically(&path, &bytes, options))
        .await
        .context("the state writer stopped")?
}

fn write_atomically(path: &Path, bytes: &[u8], Options { private, sync }: Options) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let temp = dir.join(format!(".{file_name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&temp).with_context(|| format!("cannot write {}", temp.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", temp.display()))?;
    if sync {
        file.sync_all().with_context(|| format!("cannot sync {}", temp.display()))?;
    }
    drop(file);
    std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::protocol::{Job, JobCommand};
    use uuid::Uuid;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("edgeflow-agent-test-{}", Uuid::new_v4().simple()))
    }

    #[tokio::test]
    async fn round_trips_through_the_state_dir() {
        let dir = temp_dir();
        let (empty, warning) = load(&dir).await.unwrap();
        assert!(warning.is_none());
        assert_eq!(empty.finished_count(), 0);

        let mut runtime = Runtime::new();
        let job = Job {
            id: Uuid::new_v4(),
            seq: 4,
            command: JobCommand::Remove,
            flow_definition_id: Some(Uuid::new_v4()),
            deployment_id: None,
            flow: None,
        };
        runtime.record_finished(&job, &Ok(()));
        runtime.set_shadow(serde_json::json!({"a": 1}), 2);
        save(&dir, &runtime, true).await.unwrap();
        save(&dir, &runtime, false).await.unwrap();
        let (loaded, _) = load(&dir).await.unwrap();
        assert_eq!(loaded.to_persisted(), runtime.to_persisted());
        assert!(!dir.join(".state.json.tmp").exists());

        std::fs::write(state_file(&dir), b"{not json").unwrap();
        let (fresh, warning) = load(&dir).await.unwrap();
        assert_eq!(fresh.finished_count(), 0);
        assert!(warning.unwrap().contains("corrupt"));
        assert!(dir.join("state.json.corrupt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
