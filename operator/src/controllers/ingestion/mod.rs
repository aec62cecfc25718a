//! IngestionJob → one `batch/v1` Job; the status follows the Job. The Job is created once and
//! never changed; a finished IngestionJob whose Job was cleaned up (TTL) is not run again, and
//! one whose Job was deleted before its result was recorded is not run twice.
//!
//! One pass, top to bottom: [`resolve`] (the Job as it is; "no Job" confirmed by the API
//! server) → [`decide`] (pure: create the Job, wait, follow it, or stop) → for a create:
//! resolve the Tenant and the sources' ConfigMap and Secret → [`validate`] (the sources'
//! destinations) → [`children`] (the Job, pure) → [`apply`] (create, never update) →
//! [`status`].

pub mod apply;
pub mod children;
pub mod resolve;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use xin_api::ingestion::{IngestionJob, IngestionJobStatus, Phase};

use super::Context;
use super::resolve::owning_tenant;
use super::runner::{Note, Pass, Reconcile, Requeue, status_fields};
use crate::builders::ingestion::job_name;
use crate::conditions::reason;
use crate::error::{ApplyError, Error, OnObject, Result, object_name};
pub use validate::validate_sources;

/// What to do with an IngestionJob, decided from its status and its Job.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Finished, and its Job was cleaned up after (TTL): nothing to do, ever.
    Done,
    /// Its Job was deleted before the result was recorded: running it again could ingest
    /// twice, so it fails and the user decides.
    JobMissing,
    /// No Job yet: create it.
    Create,
    /// Follow the Job's status.
    Follow(Box<Job>),
    /// A Job of that name belongs to an earlier IngestionJob of the same name (deleted and
    /// applied again): wait for the garbage collector to remove it.
    PreviousJob,
}

pub fn decide(ij: &IngestionJob, job: Option<&Job>) -> Decision {
    let current = ij.status.clone().unwrap_or_default();
    let finished = matches!(current.phase, Some(Phase::Succeeded | Phase::Failed));
    let controller = |j: &Job| {
        j.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone())
    };
    match job {
        Some(j) if controller(j).is_some_and(|u| Some(u) != ij.metadata.uid) => {
            Decision::PreviousJob
        }
        Some(j) => Decision::Follow(Box::new(j.clone())),
        None if finished => Decision::Done,
        None if current.job_name.is_some() => Decision::JobMissing,
        None => Decision::Create,
    }
}

impl Reconcile for IngestionJob {
    type Status = IngestionJobStatus;

    /// The fields the operator writes: phase, Job name, times, conditions (the worker owns
    /// the counts and failures).
    fn owned_status(&self) -> IngestionJobStatus {
        let s = self.status.clone().unwrap_or_default();
        IngestionJobStatus {
            observed_generation: s.observed_generation,
            conditions: s.conditions,
            phase: s.phase,
            job_name: s.job_name,
            start_time: s.start_time,
            completion_time: s.completion_time,
            duration_seconds: s.duration_seconds,
            ..IngestionJobStatus::default()
        }
    }
    status_fields!(IngestionJobStatus);
    fn api(client: kube::Client, namespace: &str) -> kube::Api<Self> {
        Api::namespaced(client, namespace)
    }
    fn store(ctx: &Context) -> Store<IngestionJob> {
        ctx.stores.ingestion_jobs.clone()
    }

    async fn reconcile(
        ij: Arc<IngestionJob>,
        ctx: Arc<Context>,
    ) -> Result<Pass<IngestionJobStatus>> {
        let object = object_name(ij.as_ref());
        let ns = ij.namespace().unwrap_or_default();
        let name = job_name(&ij.name_any());
        let mut decision = decide(&ij, resolve::cached_job(&ctx, &ns, &name).as_deref());
        // "No Job" is acted on only once the API server confirms it: the watch may not show a
        // Job created moments ago, and a wrong answer would fail or run it twice.
        if matches!(decision, Decision::JobMissing | Decision::Create) {
            let live = resolve::read_job(&ctx, &ns, &name).await.on(&object)?;
            decision = decide(&ij, live.as_ref());
        }
        let job = match decision {
            Decision::Done => return Ok(Pass::gone()),
            Decision::PreviousJob => {
                let waiting = crate::conditions::Health::Progressing {
                    reason: reason::PROGRESSING,
                    message: format!(
                        "waiting for Job {name} of an earlier IngestionJob of this name to be removed"
                    ),
                };
                return Ok(Pass::new(status::pending(&ij), waiting)
                    .requeue(Requeue::After(Duration::from_secs(5))));
            }
            Decision::JobMissing => {
                let e = Error::new(&object, ApplyError::JobMissing { name: name.clone() });
                return Ok(status::job_missing(&ij, &name, &e));
            }
            Decision::Follow(job) => *job,
            Decision::Create => {
                // A problem the user must fix keeps the IngestionJob pending (stalled).
                let pending = |e: &Error| Pass::stalled(status::pending(&ij), e);
                let tenant = match owning_tenant(&ctx.stores.tenants, &ns).on(&object) {
                    Ok(t) => t,
                    Err(e) if e.user_fixable() => return Ok(pending(&e)),
                    Err(e) => return Err(e),
                };
                match resolve::resolve_sources(&ij, &ctx).await.on(&object) {
                    Err(e) if e.user_fixable() => return Ok(pending(&e)),
                    other => other?,
                }
                if let Err(e) = validate_sources(&ij, &ctx.config).on(&object) {
                    return Ok(pending(&e));
                }
                let children::IngestionChildren { job } =
                    children::build_ingestion_children(&ij, &tenant, &ctx.config).on(&object)?;
                let created = apply::create(&ctx, &ns, &job).await.on(&object)?;
                let note = Note {
                    warning: false,
                    reason: reason::JOB_CREATED,
                    message: format!("created Job {name}"),
                    action: "Create",
                };
                match created {
                    Some(job) => return Ok(status::follow(&ij, &name, &job).event(note)),
                    // It exists already (created meanwhile): follow it.
                    None => match resolve::read_job(&ctx, &ns, &name).await.on(&object)? {
                        Some(job) => job,
                        None => {
                            return Ok(Pass::new(status::pending(&ij), status::waiting())
                                .requeue(Requeue::After(Duration::from_secs(5))));
                        }
                    },
                }
            }
        };
        Ok(status::follow(&ij, &name, &job))
    }
}
