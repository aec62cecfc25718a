//! IngestionJob → one `batch/v1` Job; the status follows the Job. The Job is created once and
//! never changed; a finished IngestionJob whose Job was cleaned up (TTL) is not run again, and
//! one whose Job was deleted before its result was recorded is not run twice.
//!
//! One pass: [`resolve`] (the Tenant, the sources' ConfigMap and Secret, the Job as it is) →
//! [`decide`] (pure: create the Job, wait, follow it, or stop) → [`validate_sources`] before a
//! create → create → [`status`].

pub mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use xin_api::ingestion::{IngestionJob, IngestionJobStatus, Phase};

use super::Context;
use super::resolve::{owning_tenant, secret_exists};
use super::runner::{Note, Pass, Reconcile, Requeue, status_fields};
use crate::builders::MANAGER;
use crate::builders::ingestion::{build_ingestion_job, job_name};
use crate::conditions::reason;
use crate::config::Config;
use crate::error::{ApplyError, Error, OnObject, ResolveError, Result, ValidateError, object_name};

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

/// The URL sources and the S3 endpoint are not destinations the outbound policy refuses by
/// their literal host (the worker checks what names resolve to). Checked before the Job is
/// created: the spec cannot change afterwards.
pub fn validate_sources(
    ij: &IngestionJob,
    config: &Config,
) -> std::result::Result<(), ValidateError> {
    let src = &ij.spec.source;
    let policy = config.destination_policy();
    for (i, url) in src.url.iter().flat_map(|u| u.urls.iter()).enumerate() {
        ValidateError::check_destination(&policy, format!("spec.source.url.urls[{i}]"), url)?;
    }
    if let Some(s3) = &src.s3 {
        ValidateError::check_destination(&policy, "spec.source.s3.endpoint", &s3.endpoint)?;
    }
    Ok(())
}

/// What the sources refer to exists.
async fn resolve_sources(
    ij: &IngestionJob,
    ctx: &Context,
) -> std::result::Result<(), ResolveError> {
    let ns = ij.namespace().unwrap_or_default();
    let src = &ij.spec.source;
    if let Some(cm) = &src.config_map {
        // Read once, when the Job is about to be created: no watch of every ConfigMap.
        let found = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&cm.name)
            .await
            .map_err(|source| ResolveError::Kube {
                what: format!("ConfigMap {ns}/{}", cm.name),
                source,
            })?
            .ok_or_else(|| ResolveError::ConfigMapNotFound {
                namespace: ns.clone(),
                name: cm.name.clone(),
            })?;
        let have = |k: &String| {
            found.data.as_ref().is_some_and(|d| d.contains_key(k))
                || found
                    .binary_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(k))
        };
        if let Some(missing) = cm.keys.iter().find(|k| !have(k)) {
            return Err(ResolveError::ConfigMapKeyMissing {
                namespace: ns.clone(),
                name: cm.name.clone(),
                key: missing.clone(),
            });
        }
    }
    let secret = src
        .url
        .as_ref()
        .and_then(|u| u.headers_secret_ref.as_ref())
        .or(src.s3.as_ref().map(|s| &s.credentials_secret_ref));
    if let Some(r) = secret {
        secret_exists(&ctx.stores.secrets.store(&ns).await?, &ns, &r.name)?;
    }
    Ok(())
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
        let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns);
        let read = || async {
            jobs.get_opt(&name)
                .await
                .map_err(|source| ResolveError::Kube {
                    what: format!("Job {ns}/{name}"),
                    source,
                })
        };
        let cached = ctx.stores.jobs.get(&ObjectRef::new(&name).within(&ns));
        let mut decision = decide(&ij, cached.as_deref());
        // "No Job" is acted on only once the API server confirms it: the watch may not show a
        // Job created moments ago, and a wrong answer would fail or run it twice.
        if matches!(decision, Decision::JobMissing | Decision::Create) {
            decision = decide(&ij, read().await.on(&object)?.as_ref());
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
                let pending = |e: &Error| Pass::stalled(status::pending(&ij), e);
                let tenant = match owning_tenant(&ctx.stores.tenants, &ns).on(&object) {
                    Ok(t) => t,
                    Err(e) if e.user_fixable() => return Ok(pending(&e)),
                    Err(e) => return Err(e),
                };
                if let Err(e) = validate_sources(&ij, &ctx.config).on(&object) {
                    return Ok(pending(&e));
                }
                match resolve_sources(&ij, &ctx).await.on(&object) {
                    Err(e) if e.user_fixable() => return Ok(pending(&e)),
                    other => other?,
                }
                let desired = build_ingestion_job(&ij, &tenant, &ctx.config)
                    .map_err(|source| crate::error::BuildError::Serialize {
                        what: "the ingestion Job",
                        source,
                    })
                    .on(&object)?;
                let created = create(&ctx, &ns, &desired).await.on(&object)?;
                let note = Note {
                    warning: false,
                    reason: reason::JOB_CREATED,
                    message: format!("created Job {name}"),
                    action: "Create",
                };
                match created {
                    Some(job) => return Ok(status::follow(&ij, &name, &job).event(note)),
                    // It exists already (created meanwhile): follow it.
                    None => match read().await.on(&object)? {
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

/// Creates the Job, never updates it: its template is immutable. `None` when it exists.
async fn create(
    ctx: &Context,
    ns: &str,
    job: &Job,
) -> std::result::Result<Option<Job>, ApplyError> {
    let pp = kube::api::PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match Api::<Job>::namespaced(ctx.client.clone(), ns)
        .create(&pp, job)
        .await
    {
        Ok(j) => Ok(Some(j)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(source) => Err(ApplyError::Kube {
            verb: "create",
            kind: "Job",
            name: job.name_any(),
            source,
        }),
    }
}
