//! The worker's report in its IngestionJob's status, applied server-side under the field
//! manager `xin-ingest`: the counts, the first [`MAX_FAILURES`] failures and their total, and
//! `status.worker` (state, reason, message, start and end). The operator owns the rest of the
//! status and decides the phase from this report. Progress is reported at most every
//! [`PROGRESS_INTERVAL`]; the final report is retried until it lands (or the run fails, and
//! the Job runs it again).

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::Mutex;
use xin_api::ingestion::{IngestionFailure, IngestionJob, WorkerReport, WorkerState};

pub const FIELD_MANAGER: &str = "xin-ingest";
/// Failures listed in the status; `failedDocuments` counts them all.
pub const MAX_FAILURES: usize = 50;
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// What the worker reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub state: WorkerState,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub documents: i64,
    pub chunks: i64,
    pub failed: i64,
    pub failures: Vec<IngestionFailure>,
}

impl Report {
    pub fn status(&self) -> serde_json::Value {
        let worker = WorkerReport {
            state: self.state,
            reason: self.reason.clone(),
            message: self.message.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
        };
        serde_json::json!({
            "documents": self.documents,
            "chunks": self.chunks,
            "failedDocuments": self.failed,
            "failures": self.failures.iter().take(MAX_FAILURES).collect::<Vec<_>>(),
            "worker": worker,
        })
    }
}

/// Writes reports to the IngestionJob, or nowhere (benchmarks, runs without an API server).
pub struct Reporter {
    /// The IngestionJob's API, name and uid (a precondition of every patch).
    target: Option<(Api<IngestionJob>, String, Option<String>)>,
    last: Mutex<Option<Instant>>,
    sent: Mutex<Option<Report>>,
}

impl Reporter {
    pub fn new(api: Api<IngestionJob>, name: &str, uid: Option<String>) -> Self {
        Reporter {
            target: Some((api, name.to_string(), uid)),
            last: Mutex::new(None),
            sent: Mutex::new(None),
        }
    }

    pub fn none() -> Self {
        Reporter {
            target: None,
            last: Mutex::new(None),
            sent: Mutex::new(None),
        }
    }

    /// The last report that reached the IngestionJob.
    pub async fn last(&self) -> Option<Report> {
        self.sent.lock().await.clone()
    }

    async fn apply(&self, report: &Report) -> Result<(), kube::Error> {
        let Some((api, name, uid)) = &self.target else {
            return Ok(());
        };
        let mut metadata = serde_json::json!({"name": name});
        if let Some(uid) = uid {
            // Refused (409) when the object of that name is another one.
            metadata["uid"] = uid.as_str().into();
        }
        let patch = serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1",
            "kind": "IngestionJob",
            "metadata": metadata,
            "status": report.status(),
        });
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        *self.sent.lock().await = Some(report.clone());
        Ok(())
    }

    /// Whether a progress report would go out now (none went out in the last
    /// [`PROGRESS_INTERVAL`], and there is an IngestionJob to write to).
    pub async fn due(&self) -> bool {
        self.target.is_some()
            && self
                .last
                .lock()
                .await
                .is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL)
    }

    /// A progress report, unless one went out less than [`PROGRESS_INTERVAL`] ago; a failed
    /// one is logged and skipped (the next one, or the final one, carries the figures).
    pub async fn progress(&self, report: &Report) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.apply(report).await {
            tracing::warn!(error = %e, "cannot report progress in the IngestionJob's status");
        }
    }

    /// The final report, retried with backoff for about two minutes.
    pub async fn finish(&self, report: &Report, retry_base: Duration) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.apply(report).await {
                Ok(()) => return Ok(()),
                // Forbidden, gone, or another object by now: retrying will not help.
                Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 || s.code == 409 => {
                    return Err(format!(
                        "cannot report the result in the IngestionJob's status: {}",
                        s.message
                    ));
                }
                Err(e) if attempt >= 8 => {
                    return Err(format!(
                        "cannot report the result in the IngestionJob's status: {e}"
                    ));
                }
                Err(e) => {
                    let wait = crate::embed::backoff(retry_base, attempt);
                    tracing::warn!(error = %e, attempt, "cannot report the result yet; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
