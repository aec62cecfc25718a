//! An IngestionJob's status from its Job, as pure functions.

use k8s_openapi::api::batch::v1::Job;
use xin_api::ingestion::{
    IngestionJob, IngestionJobStatus, Phase, WorkerReport, WorkerState, worker_reason,
};

use crate::conditions::{Health, reason, types};
use crate::controllers::runner::{Extra, Pass, Requeue};
use crate::error::Error;

/// The operator's fields before a Job exists.
pub fn pending(ij: &IngestionJob) -> IngestionJobStatus {
    IngestionJobStatus {
        observed_generation: ij.metadata.generation,
        phase: Some(Phase::Pending),
        ..IngestionJobStatus::default()
    }
}

pub fn waiting() -> Health {
    Health::Progressing {
        reason: reason::PROGRESSING,
        message: "waiting for the ingestion Job to start".into(),
    }
}

/// A reason the worker gave, as one of the known constants (condition reasons are a fixed
/// set operators grep for); [`reason::INGESTION_FAILED`] for any other.
fn worker_reason(r: Option<&str>) -> &'static str {
    r.and_then(|r| worker_reason::ALL.iter().find(|k| **k == r).copied())
        .unwrap_or(reason::INGESTION_FAILED)
}

/// Phase and health from the worker's report and the Job's status. Only the worker's report
/// makes an IngestionJob `Succeeded`: a Job can complete without the worker having ingested
/// anything (a pod that exited early, or a node that only pretends to run pods), and that must
/// not read as knowledge ingested. A failed Job fails the IngestionJob unless the worker
/// reported success first.
pub fn from_job(job: &Job, worker: Option<&WorkerReport>) -> (Phase, Health) {
    let st = job.status.clone().unwrap_or_default();
    let cond = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
            .cloned()
    };
    match worker.map(|w| w.state) {
        Some(WorkerState::Succeeded) => {
            let h = Health::Ready {
                reason: reason::JOB_SUCCEEDED,
                message: "ingestion finished".into(),
            };
            return (Phase::Succeeded, h);
        }
        Some(WorkerState::Failed) => {
            let w = worker.expect("matched Some");
            let h = Health::Stalled {
                reason: worker_reason(w.reason.as_deref()),
                message: format!(
                    "ingestion failed: {}",
                    w.message.as_deref().unwrap_or("the worker gave no detail")
                ),
            };
            return (Phase::Failed, h);
        }
        _ => {}
    }
    if let Some(f) = cond("Failed") {
        let mut message = format!(
            "ingestion Job failed: {}",
            f.message.unwrap_or(f.reason.unwrap_or_default())
        );
        // What the worker said of its last attempt, when it said something.
        if let Some(m) = worker.and_then(|w| w.message.as_deref()) {
            message.push_str("; the worker's last report: ");
            message.push_str(m);
        }
        let h = Health::Stalled {
            reason: reason::JOB_FAILED,
            message,
        };
        (Phase::Failed, h)
    } else if cond("Complete").is_some() {
        let h = Health::Progressing {
            reason: reason::AWAITING_WORKER_REPORT,
            message: "the ingestion Job finished; waiting for the worker's report in \
                      status.worker"
                .into(),
        };
        (Phase::Running, h)
    } else if st.active.unwrap_or(0) > 0 || worker.is_some() {
        let h = Health::Progressing {
            reason: reason::JOB_RUNNING,
            message: "ingestion Job is running".into(),
        };
        (Phase::Running, h)
    } else {
        (Phase::Pending, waiting())
    }
}

/// `Complete` and `Failed`; `failed_reason` is the reason the IngestionJob failed for.
fn outcome(phase: Phase, failed_reason: &'static str) -> [Extra; 2] {
    let flag = |type_, on: bool, reason_on| Extra {
        type_,
        status: on,
        reason: if on { reason_on } else { reason::PROGRESSING },
        message: String::new(),
    };
    [
        flag(
            types::COMPLETE,
            phase == Phase::Succeeded,
            reason::JOB_SUCCEEDED,
        ),
        flag(types::FAILED, phase == Phase::Failed, failed_reason),
    ]
}

/// The health an IngestionJob finished with, from its `Ready` condition.
fn kept_health(
    phase: Phase,
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<Health> {
    let ready = conditions
        .iter()
        .find(|c| c.type_ == xin_api::common::condition::READY)?;
    let known = |r: &str| {
        reason::ALL
            .iter()
            .chain(worker_reason::ALL)
            .find(|k| **k == r)
            .copied()
    };
    let reason = known(&ready.reason)?;
    let message = ready.message.clone();
    Some(match phase {
        Phase::Succeeded => Health::Ready { reason, message },
        _ => Health::Stalled { reason, message },
    })
}

/// When the Job's condition `type_` became true.
fn cond_time(
    job: &Job,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .and_then(|c| c.last_transition_time.clone())
}

/// The pass of an IngestionJob whose Job exists.
pub fn follow(ij: &IngestionJob, job_name: &str, job: &Job) -> Pass<IngestionJobStatus> {
    let worker = ij.status.as_ref().and_then(|s| s.worker.as_ref());
    let (mut phase, mut health) = from_job(job, worker);
    // An outcome is final: a pod the Job runs again after the worker reported (a node lost)
    // reports `Running` for a while, and that must not take the IngestionJob back.
    let current = ij.status.clone().unwrap_or_default();
    let mut kept = false;
    if let Some(done @ (Phase::Succeeded | Phase::Failed)) = current.phase
        && done != phase
        && let Some(h) = kept_health(done, &current.conditions)
    {
        (phase, health, kept) = (done, h, true);
    }
    let st = job.status.clone().unwrap_or_default();
    // Finished when the worker says so (or when the Job failed without its report).
    let start_time = st
        .start_time
        .or_else(|| worker.and_then(|w| w.started_at.clone()));
    let completion_time = match phase {
        Phase::Succeeded | Phase::Failed => worker
            .and_then(|w| w.finished_at.clone())
            .or(st.completion_time)
            .or_else(|| cond_time(job, "Failed")),
        _ => None,
    };
    let (start_time, completion_time) = if kept {
        (current.start_time, current.completion_time)
    } else {
        (start_time, completion_time)
    };
    let duration = match (&start_time, &completion_time) {
        (Some(s), Some(c)) => Some((c.0.as_second() - s.0.as_second()).max(0)),
        _ => None,
    };
    let status = IngestionJobStatus {
        observed_generation: ij.metadata.generation,
        phase: Some(phase),
        job_name: Some(job_name.into()),
        start_time,
        completion_time,
        duration_seconds: duration,
        ..IngestionJobStatus::default()
    };
    let requeue = match phase {
        Phase::Succeeded | Phase::Failed => Requeue::AwaitChange,
        _ => Requeue::Resync,
    };
    let failed_reason = match &health {
        Health::Stalled { reason, .. } => reason,
        _ => reason::JOB_FAILED,
    };
    let [complete, failed] = outcome(phase, failed_reason);
    // A finished Job is final: no retries with backoff.
    Pass::new(status, health)
        .with_extra(complete)
        .with_extra(failed)
        .requeue(requeue)
}

/// The pass of an IngestionJob whose Job was deleted before its result was recorded.
pub fn job_missing(ij: &IngestionJob, job_name: &str, e: &Error) -> Pass<IngestionJobStatus> {
    let status = IngestionJobStatus {
        observed_generation: ij.metadata.generation,
        phase: Some(Phase::Failed),
        job_name: Some(job_name.into()),
        ..IngestionJobStatus::default()
    };
    Pass::stalled(status, e)
        .with_extra(Extra {
            type_: types::FAILED,
            status: true,
            reason: e.reason(),
            message: String::new(),
        })
        .requeue(Requeue::AwaitChange)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::super::{Decision, decide};
    use super::*;
    use crate::error::ApplyError;
    use crate::golden;

    fn ij(status: serde_json::Value) -> IngestionJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1", "kind": "IngestionJob",
            "metadata": {"name": "faq", "namespace": "xin-acme", "uid": "uid-faq", "generation": 1},
            "spec": {"source": {"configMap": {"name": "faq"}}},
            "status": status,
        }))
        .unwrap()
    }

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "ingest-faq", "namespace": "xin-acme"},
            "spec": {"template": {"spec": {"containers": []}}},
            "status": status,
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time("2026-11-30T12:00:00Z".parse().unwrap())
    }

    #[test]
    fn the_status_follows_the_job_and_the_outcome_the_workers_report() {
        let complete = serde_json::json!({"startTime": "2026-11-30T11:00:00Z", "completionTime": "2026-11-30T11:02:05Z",
            "conditions": [{"type": "Complete", "status": "True"}]});
        let none = serde_json::json!({});
        let cases = [
            ("pending", serde_json::json!({}), none.clone()),
            (
                "running",
                serde_json::json!({"active": 1, "startTime": "2026-11-30T11:00:00Z"}),
                serde_json::json!({"worker": {"state": "Running", "startedAt": "2026-11-30T11:00:03Z"}, "documents": 10, "chunks": 31}),
            ),
            // The pod exited but no report came: not Succeeded (a fake node completes pods
            // without running them).
            ("awaiting-report", complete.clone(), none.clone()),
            (
                "succeeded",
                complete.clone(),
                serde_json::json!({"worker": {"state": "Succeeded", "startedAt": "2026-11-30T11:00:03Z",
                    "finishedAt": "2026-11-30T11:02:01Z"}, "documents": 3, "chunks": 3}),
            ),
            (
                "failed-threshold",
                complete.clone(),
                serde_json::json!({"worker": {"state": "Failed", "reason": "FailureThresholdExceeded",
                    "message": "3 of 4 documents failed; spec.failureThreshold allows 10 %",
                    "startedAt": "2026-11-30T11:00:03Z", "finishedAt": "2026-11-30T11:00:09Z"}}),
            ),
            (
                "failed",
                serde_json::json!({"startTime": "2026-11-30T11:00:00Z",
                    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
                        "lastTransitionTime": "2026-11-30T11:05:00Z"}]}),
                none.clone(),
            ),
        ];
        for (name, st, worker) in cases {
            let obj = ij(worker);
            let out = follow(&obj, "ingest-faq", &job(st)).outcome(&obj, &now());
            golden::check(&format!("ingestion/{name}.status"), &out);
        }
        // A Job out of retries says what the worker said of its last attempt.
        let trying = WorkerReport {
            state: WorkerState::Running,
            reason: Some("SourceUnavailable".into()),
            message: Some(
                "attempt failed, the Job retries it: ConfigMap xin-acme/faq not found".into(),
            ),
            ..WorkerReport::default()
        };
        let failed_job = job(
            serde_json::json!({"conditions": [{"type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit"}]}),
        );
        match from_job(&failed_job, Some(&trying)) {
            (Phase::Failed, Health::Stalled { reason, message }) => {
                assert_eq!(reason, reason::JOB_FAILED);
                assert!(message.ends_with("the worker's last report: attempt failed, the Job retries it: ConfigMap xin-acme/faq not found"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Once Succeeded, a pod run again (reporting Running) does not take it back.
        let rerun = ij(serde_json::json!({
            "phase": "Succeeded", "jobName": "ingest-faq",
            "startTime": "2026-11-30T11:00:00Z", "completionTime": "2026-11-30T11:02:01Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "JobSucceeded", "message": "ingestion finished",
                "lastTransitionTime": "2026-11-30T11:02:01Z"}],
            "worker": {"state": "Running"}}));
        let again = follow(&rerun, "ingest-faq", &job(serde_json::json!({"active": 1})));
        let st = again.status.clone().unwrap();
        assert_eq!(st.phase, Some(Phase::Succeeded));
        assert_eq!(
            st.completion_time,
            rerun.status.as_ref().unwrap().completion_time
        );
        assert!(matches!(
            again.health,
            Health::Ready {
                reason: reason::JOB_SUCCEEDED,
                ..
            }
        ));
        // An unknown reason from a worker is reported as the generic one.
        let odd = WorkerReport {
            state: WorkerState::Failed,
            reason: Some("Whatever".into()),
            ..WorkerReport::default()
        };
        let (phase, health) = from_job(&job(complete), Some(&odd));
        assert_eq!(phase, Phase::Failed);
        assert!(matches!(
            health,
            Health::Stalled {
                reason: reason::INGESTION_FAILED,
                ..
            }
        ));
    }

    #[test]
    fn a_finished_job_stops_and_a_deleted_one_is_not_run_twice() {
        let done = ij(serde_json::json!({"phase": "Succeeded", "jobName": "ingest-faq"}));
        assert_eq!(decide(&done, None), Decision::Done);
        let started = ij(serde_json::json!({"phase": "Running", "jobName": "ingest-faq"}));
        assert_eq!(decide(&started, None), Decision::JobMissing);
        let new = ij(serde_json::json!({}));
        assert_eq!(decide(&new, None), Decision::Create);
        // A Job left by an earlier IngestionJob of the same name is not followed.
        let mut old = job(serde_json::json!({}));
        old.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "xin.dev/v1alpha1".into(),
                kind: "IngestionJob".into(),
                name: "faq".into(),
                uid: "uid-of-the-deleted-one".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        assert_eq!(decide(&new, Some(&old)), Decision::PreviousJob);
        old.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-faq".into();
        assert_eq!(
            decide(&new, Some(&old)),
            Decision::Follow(Box::new(old.clone()))
        );
        let j = job(serde_json::json!({}));
        assert_eq!(
            decide(&new, Some(&j)),
            Decision::Follow(Box::new(j.clone()))
        );

        let e = Error::new(
            "IngestionJob xin-acme/faq",
            ApplyError::JobMissing {
                name: "ingest-faq".into(),
            },
        );
        let out = job_missing(&started, "ingest-faq", &e).outcome(&started, &now());
        golden::check("ingestion/job-missing.status", &out);
        assert!(out.stalled);
        assert_eq!(out.requeue, Requeue::AwaitChange);
    }

    #[test]
    fn a_refused_source_stalls_before_any_job_is_created() {
        let config = crate::config::Config::for_tests();
        let with = |source: serde_json::Value| {
            let mut obj = ij(serde_json::json!({}));
            obj.spec.source = serde_json::from_value(source).unwrap();
            obj
        };
        let refused = with(serde_json::json!({"url": {"urls": [
            "https://docs.example.com/faq",
            "http://[::ffff:169.254.169.254]/latest/meta-data/iam?x=1",
        ]}}));
        let e = super::super::validate_sources(&refused, &config).unwrap_err();
        let e = Error::new("IngestionJob xin-acme/faq", e);
        let out = Pass::stalled(pending(&refused), &e).outcome(&refused, &now());
        golden::check("ingestion/refused-source.status", &out);
        assert!(out.stalled);
        let s3 = with(
            serde_json::json!({"s3": {"endpoint": "http://minio.storage.svc:9000",
            "bucket": "docs", "credentialsSecretRef": {"name": "s3"}}}),
        );
        let e = super::super::validate_sources(&s3, &config).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.source.s3.endpoint http://minio.storage.svc:9000/ is not an allowed destination: a cluster-internal host name"
        );
        let fine = with(serde_json::json!({"url": {"urls": ["https://docs.example.com/faq"]}}));
        assert!(super::super::validate_sources(&fine, &config).is_ok());
        assert!(super::super::validate_sources(&ij(serde_json::json!({})), &config).is_ok());
    }

    #[test]
    fn the_job_runs_the_worker_with_its_configuration_digest() {
        let t = crate::builders::tenant::tests::tenant("acme");
        let job = crate::builders::ingestion::build_ingestion_job(
            &ij(serde_json::json!({})),
            &t,
            &crate::config::Config::for_tests(),
        )
        .unwrap();
        golden::check("ingestion/job.children", &job);
        let annotations = job
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap();
        assert_eq!(
            annotations[crate::builders::CONFIG_HASH_ANNOTATION].len(),
            64
        );
    }
}
