//! The simulated flow runtime: which flow versions are installed and whether they run, which
//! jobs are finished (so a redelivered job is not run twice), and the desired shadow.
//! Pure state, no I/O: the worker feeds it jobs and persists it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::tunnel::protocol::{DeployFlow, FlowReport, Job, JobCommand, JobUpdate, JobUpdateState};

/// How many finished job ids are remembered (the server never redelivers older ones in practice:
/// it redelivers only jobs it has no final state for).
pub const FINISHED_JOBS_KEPT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FlowState {
    Running,
    Stopped,
    Failed,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// One installed flow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledFlow {
    pub flow_definition_id: Uuid,
    pub flow_id: Uuid,
    pub version: i64,
    pub name: String,
    pub state: FlowState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource versions it uses (files under `<state dir>/resources/<versionId>`).
    #[serde(default)]
    pub resource_versions: Vec<Uuid>,
    #[serde(default)]
    pub content: Value,
}

impl InstalledFlow {
    pub fn from_deploy(flow: &DeployFlow) -> Self {
        Self {
            flow_definition_id: flow.flow_definition_id,
            flow_id: flow.flow_id,
            version: flow.version,
            name: flow.name.clone(),
            state: FlowState::Running,
            error: None,
            resource_versions: flow.resources.iter().map(|r| r.version_id).collect(),
            content: flow.content.clone(),
        }
    }

    pub fn report(&self) -> FlowReport {
        FlowReport {
            flow_definition_id: self.flow_definition_id,
            flow_id: Some(self.flow_id),
            version: Some(self.version),
            state: self.state.as_str().to_owned(),
            error: self.error.clone(),
        }
    }
}

/// A job's final state, kept to answer its redelivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishedJob {
    pub id: Uuid,
    pub seq: i64,
    pub state: JobUpdateState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FinishedJob {
    pub fn update(&self) -> JobUpdate {
        JobUpdate { job_id: self.id, state: self.state, error: self.error.clone() }
    }
}

/// The desired shadow last received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowState {
    pub desired: Value,
    pub version: i64,
}

#[derive(Debug, Default, Clone)]
pub struct Runtime {
    flows: BTreeMap<Uuid, InstalledFlow>,
    finished: HashMap<Uuid, FinishedJob>,
    /// Finished ids, oldest first, to bound `finished`.
    finished_order: VecDeque<Uuid>,
    last_job_seq: Option<i64>,
    shadow: Option<ShadowState>,
}

impl Runtime {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn flows(&self) -> impl Iterator<Item = &InstalledFlow> {
        self.flows.values()
    }

    pub fn flow(&self, flow_definition_id: Uuid) -> Option<&InstalledFlow> {
        self.flows.get(&flow_definition_id)
    }

    pub fn reports(&self) -> Vec<FlowReport> {
        self.flows.values().map(InstalledFlow::report).collect()
    }

    pub fn running_count(&self) -> usize {
        self.flows.values().filter(|f| f.state == FlowState::Running).count()
    }

    /// Every resource version some installed flow uses.
    pub fn resource_versions_in_use(&self) -> std::collections::HashSet<Uuid> {
        self.flows.values().flat_map(|f| f.resource_versions.iter().copied()).collect()
    }

    pub fn finished(&self, job_id: Uuid) -> Option<&FinishedJob> {
        self.finished.get(&job_id)
    }

    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }

    /// The highest seq among finished jobs (for `hello`).
    pub fn last_job_seq(&self) -> Option<i64> {
        self.last_job_seq
    }

    pub fn shadow(&self) -> Option<&ShadowState> {
        self.shadow.as_ref()
    }

    pub fn set_shadow(&mut self, desired: Value, version: i64) {
        self.shadow = Some(ShadowState { desired, version });
    }

    /// Applies a job's effect on the runtime. A deploy's resources must already be in place.
    pub fn apply(&mut self, job: &Job) -> Result<(), String> {
        match job.command {
            JobCommand::Deploy => {
                let flow = job.flow.as_ref().ok_or("deploy job without a flow")?;
                if job.flow_definition_id.is_some_and(|id| id != flow.flow_definition_id) {
                    return Err("the job's flowDefinitionId does not match its flow".into());
                }
                // One version per flow definition: this replaces whatever ran before.
                self.flows.insert(flow.flow_definition_id, InstalledFlow::from_deploy(flow));
                Ok(())
            }
            JobCommand::Start | JobCommand::Stop => {
                let id = job.flow_definition_id.ok_or("job without a flowDefinitionId")?;
                let flow = self.flows.get_mut(&id).ok_or("flow not deployed")?;
                flow.state = if job.command == JobCommand::Start { FlowState::Running } else { FlowState::Stopped };
                flow.error = None;
                Ok(())
            }
            JobCommand::Remove => {
                let id = job.flow_definition_id.ok_or("job without a flowDefinitionId")?;
                // Removing what is not there leaves the node as asked: not an error.
                self.flows.remove(&id);
                Ok(())
            }
        }
    }

    /// Remembers a job's final state (forgetting the oldest past [`FINISHED_JOBS_KEPT`]).
    pub fn record_finished(&mut self, job: &Job, result: &Result<(), String>) -> FinishedJob {
        let finished = FinishedJob {
            id: job.id,
            seq: job.seq,
            state: if result.is_ok() { JobUpdateState::Succeeded } else { JobUpdateState::Failed },
            error: result.as_ref().err().cloned(),
        };
        if self.finished.insert(job.id, finished.clone()).is_none() {
            self.finished_order.push_back(job.id);
        }
        while self.finished_order.len() > FINISHED_JOBS_KEPT {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
        self.last_job_seq = Some(self.last_job_seq.map_or(job.seq, |seq| seq.max(job.seq)));
        finished
    }

    pub fn to_persisted(&self) -> PersistedRuntime {
        PersistedRuntime {
            format: 1,
            flows: self.flows.values().cloned().collect(),
            finished_jobs: self.finished_order.iter().filter_map(|id| self.finished.get(id).cloned()).collect(),
            last_job_seq: self.last_job_seq,
            shadow: self.shadow.clone(),
        }
    }

    pub fn from_persisted(persisted: PersistedRuntime) -> Self {
        let mut runtime = Self {
            flows: persisted.flows.into_iter().map(|f| (f.flow_definition_id, f)).collect(),
            last_job_seq: persisted.last_job_seq,
            shadow: persisted.shadow,
            ..Self::default()
        };
        let skip = persisted.finished_jobs.len().saturating_sub(FINISHED_JOBS_KEPT);
        for job in persisted.finished_jobs.into_iter().skip(skip) {
            if runtime.finished.insert(job.id, job.clone()).is_none() {
                runtime.finished_order.push_back(job.id);
            }
        }
        runtime
    }
}

/// The runtime as written to `<state dir>/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedRuntime {
    pub format: u32,
    #[serde(default)]
    pub flows: Vec<InstalledFlow>,
    #[serde(default)]
    pub finished_jobs: Vec<FinishedJob>,
    #[serde(default)]
    pub last_job_seq: Option<i64>,
    #[serde(default)]
    pub shadow: Option<ShadowState>,
}

/// Whether `fail_fraction` picks this job to fail: the first 8 bytes of sha256(job id), as a
/// fraction of 2^64, are below `fail_fraction`. The same id always gives the same answer, so a
/// test can count the failures it should see.
pub fn fails_by_fraction(job_id: Uuid, fail_fraction: f64) -> bool {
    if fail_fraction <= 0.0 {
        return false;
    }
    if fail_fraction >= 1.0 {
        return true;
    }
    let digest = Sha256::digest(job_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let point = u64::from_be_bytes(first) as f64 / (u64::MAX as f64 + 1.0);
    point < fail_fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::protocol::DeployResource;
    use serde_json::json;

    fn job(command: JobCommand, seq: i64, flow_definition_id: Uuid, flow: Option<DeployFlow>) -> Job {
        Job {
            id: Uuid::new_v4(),
            seq,
            command,
            flow_definition_id: Some(flow_definition_id),
            deployment_id: None,
            flow,
        }
    }

    fn flow(flow_definition_id: Uuid, version: i64) -> DeployFlow {
        DeployFlow {
            flow_definition_id,
            flow_id: Uuid::new_v4(),
            version,
            name: "Temperature".into(),
            content: json!({"modules": []}),
            resources: vec![DeployResource {
                resource_id: Uuid::new_v4(),
                version_id: Uuid::new_v4(),
                path: Some("model.bin".into()),
                size_in_bytes: 3,
                sha256: String::new(),
                download_url: String::new(),
            }],
        }
    }

    #[test]
    fn applies_deploy_start_stop_remove() {
        let mut runtime = Runtime::new();
        let definition = Uuid::new_v4();
        assert_eq!(runtime.apply(&job(JobCommand::Start, 1, definition, None)), Err("flow not deployed".into()));
        assert_eq!(runtime.apply(&job(JobCommand::Stop, 1, definition, None)), Err("flow not deployed".into()));

        let v1 = flow(definition, 1);
        runtime.apply(&job(JobCommand::Deploy, 2, definition, Some(v1.clone()))).unwrap();
        assert_eq!(runtime.running_count(), 1);
        assert_eq!(runtime.resource_versions_in_use().len(), 1);
        runtime.apply(&job(JobCommand::Stop, 3, definition, None)).unwrap();
        assert_eq!(runtime.reports()[0].state, "stopped");
        assert_eq!(runtime.running_count(), 0);

        // Another version replaces the first, running.
        let v2 = flow(definition, 2);
        runtime.apply(&job(JobCommand::Deploy, 4, definition, Some(v2.clone()))).unwrap();
        let reports = runtime.reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (reports[0].flow_id, reports[0].version, reports[0].state.as_str()),
            (Some(v2.flow_id), Some(2), "running")
        );
        assert!(!runtime.resource_versions_in_use().contains(&v1.resources[0].version_id));

        // A second definition sits beside it.
        let other = Uuid::new_v4();
        runtime.apply(&job(JobCommand::Deploy, 5, other, Some(flow(other, 1)))).unwrap();
        assert_eq!(runtime.reports().len(), 2);

        runtime.apply(&job(JobCommand::Remove, 6, definition, None)).unwrap();
        runtime.apply(&job(JobCommand::Remove, 7, definition, None)).unwrap();
        assert_eq!(runtime.reports().len(), 1);
        assert!(runtime.flow(other).is_some());

        let mut bad = job(JobCommand::Deploy, 8, definition, None);
        assert!(runtime.apply(&bad).is_err());
        bad.flow = Some(flow(other, 3));
        assert!(runtime.apply(&bad).is_err(), "mismatched definition");
    }

    #[test]
    fn remembers_finished_jobs_bounded() {
        let mut runtime = Runtime::new();
        let definition = Uuid::new_v4();
        let failed = job(JobCommand::Start, 1, definition, None);
        runtime.record_finished(&failed, &Err("flow not deployed".into()));
        let finished = runtime.finished(failed.id).unwrap();
        assert_eq!(finished.state, JobUpdateState::Failed);
        assert_eq!(finished.update().error.as_deref(), Some("flow not deployed"));
        assert_eq!(runtime.last_job_seq(), Some(1));

        let mut first = None;
        for seq in 2..(FINISHED_JOBS_KEPT as i64 + 10) {
            let next = job(JobCommand::Remove, seq, definition, None);
            first.get_or_insert(next.id);
            runtime.record_finished(&next, &Ok(()));
        }
        assert_eq!(runtime.finished_count(), FINISHED_JOBS_KEPT);
        assert!(runtime.finished(failed.id).is_none(), "the oldest are forgotten");
        assert_eq!(runtime.last_job_seq(), Some(FINISHED_JOBS_KEPT as i64 + 9));
        // Recording the same job twice keeps one entry.
        let again = job(JobCommand::Remove, 1, definition, None);
        runtime.record_finished(&again, &Ok(()));
        runtime.record_finished(&again, &Ok(()));
        assert_eq!(runtime.finished_count(), FINISHED_JOBS_KEPT);
        assert_eq!(runtime.last_job_seq(), Some(FINISHED_JOBS_KEPT as i64 + 9), "seq never goes back");
    }

    #[test]
    fn persists_and_restores() {
        let mut runtime = Runtime::new();
        let definition = Uuid::new_v4();
        let deploy = job(JobCommand::Deploy, 1, definition, Some(flow(definition, 1)));
        runtime.apply(&deploy).unwrap();
        runtime.record_finished(&deploy, &Ok(()));
        let failed = job(JobCommand::Start, 2, Uuid::new_v4(), None);
        runtime.record_finished(&failed, &Err("flow not deployed".into()));
        runtime.set_shadow(json!({"sampleRate": 5}), 3);

        let text = serde_json::to_string(&runtime.to_persisted()).unwrap();
        let restored = Runtime::from_persisted(serde_json::from_str(&text).unwrap());
        assert_eq!(restored.reports(), runtime.reports());
        assert_eq!(restored.finished(deploy.id), runtime.finished(deploy.id));
        assert_eq!(restored.finished(failed.id).unwrap().state, JobUpdateState::Failed);
        assert_eq!(restored.last_job_seq(), Some(2));
        assert_eq!(restored.shadow(), runtime.shadow());
        assert_eq!(restored.to_persisted(), runtime.to_persisted());
    }

    #[test]
    fn fail_fraction_is_deterministic_and_about_right() {
        let ids: Vec<Uuid> = (0..10_000).map(|_| Uuid::new_v4()).collect();
        assert!(ids.iter().all(|id| !fails_by_fraction(*id, 0.0)));
        assert!(ids.iter().all(|id| fails_by_fraction(*id, 1.0)));
        let failing = ids.iter().filter(|id| fails_by_fraction(**id, 0.25)).count();
        assert!((2_200..2_800).contains(&failing), "{failing} of 10000 at 0.25");
        for id in &ids[..100] {
            assert_eq!(fails_by_fraction(*id, 0.25), fails_by_fraction(*id, 0.25));
            // A job that fails at a fraction fails at every larger one.
            if fails_by_fraction(*id, 0.1) {
                assert!(fails_by_fraction(*id, 0.5));
            }
        }
    }
}
