//! IngestionJob → one `batch/v1` Job; the status follows the Job. The Job is created once and
//! never changed; a finished IngestionJob whose Job was cleaned up (TTL) is not run again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::instrument;
use xin_api::ingestion::{IngestionJob, Phase};

use super::resolve::{self, Problem};
use super::{Context, error_policy, key, patch_status};
use crate::builders::MANAGED_BY;
use crate::builders::ingestion::{build_ingestion_job, job_name};
use crate::conditions::{Health, extra, merge, reason};
use crate::error::Result;

const KIND: &str = "IngestionJob";

pub fn controller(ctx: Arc<Context>) -> impl Stream<Item = super::ControllerResult<IngestionJob>> {
    let client = ctx.client.clone();
    let ours = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let controller = Controller::new(
        Api::<IngestionJob>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    controller
        .watches(
            Api::<xin_api::Tenant>::all(client.clone()),
            watcher::Config::default(),
            super::tenant_dependents(store),
        )
        // Job status matters here, so the whole Job is watched (only ours, by label).
        .owns_stream(
            watcher(Api::<Job>::all(client), ours)
                .touched_objects()
                .predicate_filter(predicates::resource_version, Default::default()),
        )
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
}

async fn check(
    ij: &IngestionJob,
    ctx: &Context,
) -> Result<std::result::Result<xin_api::Tenant, Problem>> {
    let ns = ij.namespace().unwrap_or_default();
    let tenant = match resolve::owning_tenant(&ctx.client, &ns).await? {
        Ok(t) => t,
        Err(p) => return Ok(Err(p)),
    };
    let src = &ij.spec.source;
    if let Some(cm) = &src.config_map {
        match Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&cm.name)
            .await?
        {
            None => {
                return Ok(Err(Problem::new(
                    reason::CONFIG_MAP_NOT_FOUND,
                    format!("ConfigMap {ns}/{} not found", cm.name),
                )));
            }
            Some(c) => {
                let have = |k: &String| {
                    c.data.as_ref().is_some_and(|d| d.contains_key(k))
                        || c.binary_data.as_ref().is_some_and(|d| d.contains_key(k))
                };
                if let Some(missing) = cm.keys.iter().find(|k| !have(k)) {
                    return Ok(Err(Problem::new(
                        "ConfigMapKeyMissing",
                        format!("ConfigMap {ns}/{} has no key {missing:?}", cm.name),
                    )));
                }
            }
        }
    }
    let secret = src
        .url
        .as_ref()
        .and_then(|u| u.headers_secret_ref.as_ref())
        .or(src.s3.as_ref().map(|s| &s.credentials_secret_ref));
    if let Some(r) = secret
        && let Err(p) = resolve::secret_exists(&ctx.client, &ns, &r.name).await?
    {
        return Ok(Err(p));
    }
    Ok(Ok(tenant))
}

/// Phase, times and health from the Job's status.
fn from_job(job: &Job) -> (Phase, Health) {
    let st = job.status.clone().unwrap_or_default();
    let cond = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
            .cloned()
    };
    if cond("Complete").is_some() {
        (
            Phase::Succeeded,
            Health::Ready {
                reason: reason::JOB_SUCCEEDED,
                message: "ingestion finished".into(),
            },
        )
    } else if let Some(f) = cond("Failed") {
        let msg = format!(
            "ingestion Job failed: {}",
            f.message.unwrap_or(f.reason.unwrap_or_default())
        );
        (
            Phase::Failed,
            Health::Stalled {
                reason: reason::JOB_FAILED,
                message: msg,
            },
        )
    } else if st.active.unwrap_or(0) > 0 {
        (
            Phase::Running,
            Health::Progressing {
                reason: reason::JOB_RUNNING,
                message: "ingestion Job is running".into(),
            },
        )
    } else {
        (
            Phase::Pending,
            Health::Progressing {
                reason: reason::PROGRESSING,
                message: "waiting for the ingestion Job to start".into(),
            },
        )
    }
}

#[instrument(skip_all, fields(ingestion_job = %ij.name_any(), namespace = ij.namespace().unwrap_or_default()))]
async fn reconcile(ij: Arc<IngestionJob>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    let res = reconcile_inner(&ij, &ctx).await;
    ctx.metrics.reconciled(KIND, start.elapsed());
    res
}

async fn reconcile_inner(ij: &IngestionJob, ctx: &Context) -> Result<Action> {
    let ns = ij.namespace().unwrap_or_default();
    let api = Api::<IngestionJob>::namespaced(ctx.client.clone(), &ns);
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns);
    let current = ij.status.clone().unwrap_or_default();
    let g = ij.metadata.generation;
    let name = job_name(&ij.name_any());
    let finished = matches!(current.phase, Some(Phase::Succeeded | Phase::Failed));

    let mut job = jobs.get_opt(&name).await?;
    if job.is_none() && finished {
        // The Job was cleaned up after it finished (TTL): never run it again.
        return Ok(Action::await_change());
    }
    if job.is_none() && current.job_name.is_some() {
        // Created once already, then deleted before its result was recorded: running it again
        // could ingest twice, so say so and let the user decide.
        let msg = format!(
            "Job {name} was deleted before its result was recorded; create a new IngestionJob to ingest again"
        );
        let mut desired = Health::Stalled {
            reason: "JobMissing",
            message: msg,
        }
        .conditions(g);
        desired.push(extra("Failed", true, "JobMissing", "", g));
        let conds = merge(&current.conditions, desired);
        patch_status(&api, ij, json!({"observedGeneration": g, "phase": Phase::Failed, "jobName": name, "conditions": conds})).await?;
        return Ok(Action::await_change());
    }
    if job.is_none() {
        let tenant = match check(ij, ctx).await? {
            Ok(t) => t,
            Err(p) => {
                ctx.report_stall(ij.object_ref(&()), &current.conditions, &p)
                    .await;
                let retry = ctx.retry_after(p.reason, &key(ij));
                let conds = merge(
                    &current.conditions,
                    Health::Stalled {
                        reason: p.reason,
                        message: p.message,
                    }
                    .conditions(g),
                );
                patch_status(
                    &api,
                    ij,
                    json!({"observedGeneration": g, "phase": Phase::Pending, "conditions": conds}),
                )
                .await?;
                return Ok(Action::requeue(retry));
            }
        };
        let desired = build_ingestion_job(ij, &tenant, &ctx.config)
            .map_err(|e| crate::error::Error::Serialize("ingestion Job", e))?;
        // Create, never update: the Job's template is immutable.
        match jobs
            .create(
                &kube::api::PostParams {
                    field_manager: Some(crate::builders::MANAGER.into()),
                    ..Default::default()
                },
                &desired,
            )
            .await
        {
            Ok(j) => job = Some(j),
            Err(kube::Error::Api(s)) if s.code == 409 => job = jobs.get_opt(&name).await?,
            Err(e) => return Err(e.into()),
        }
        ctx.event(
            ij.object_ref(&()),
            EventType::Normal,
            "JobCreated",
            format!("created Job {name}"),
            "Create",
        )
        .await;
    }
    let Some(job) = job else {
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    ctx.reset_backoff(&key(ij));
    let (phase, health) = from_job(&job);
    let st = job.status.clone().unwrap_or_default();
    let mut desired = health.conditions(g);
    desired.push(extra(
        "Complete",
        phase == Phase::Succeeded,
        if phase == Phase::Succeeded {
            reason::JOB_SUCCEEDED
        } else {
            reason::PROGRESSING
        },
        "",
        g,
    ));
    desired.push(extra(
        "Failed",
        phase == Phase::Failed,
        if phase == Phase::Failed {
            reason::JOB_FAILED
        } else {
            reason::PROGRESSING
        },
        "",
        g,
    ));
    let mut status = json!({
        "observedGeneration": g,
        "phase": phase,
        "jobName": name,
        "conditions": merge(&current.conditions, desired),
    });
    if let Some(s) = &st.start_time {
        status["startTime"] = json!(s);
    }
    if let Some(c) = &st.completion_time {
        status["completionTime"] = json!(c);
        if let Some(s) = &st.start_time {
            status["durationSeconds"] = json!(c.0.as_second() - s.0.as_second());
        }
    }
    patch_status(&api, ij, status).await?;
    Ok(match phase {
        Phase::Succeeded | Phase::Failed => Action::await_change(),
        _ => ctx.resync(),
    })
}
