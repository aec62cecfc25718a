//! `xin-ingest`: runs one IngestionJob into the tenant's knowledge store and exits. The
//! operator renders its configuration into the Job ([`config`]); [`pipeline`] is the run;
//! [`report`] writes its result into the IngestionJob's status, from which the operator
//! decides the phase. `docs/ingestion.md` is the user's guide.
#![forbid(unsafe_code)]

pub mod chunk;
pub mod config;
pub mod embed;
pub mod formats;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod source;

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use xin_api::ingestion::{IngestionJob, Phase, WorkerState};
use xin_runtime::HttpMetrics;
use xin_runtime::outbound::Outbound;

use crate::config::Args;
use crate::embed::Embedder;
use crate::metrics::Metrics;
use crate::pipeline::{Run, RunError};
use crate::report::{Report, Reporter};
use crate::source::{Open, Source};

/// How a process ends: the Job retries a run that ended in [`Exit::Retry`].
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The run finished (Succeeded, or Failed for a reason a retry would not change) and was
    /// reported.
    Done(WorkerState),
    /// The run could not finish; the message says why.
    Retry(String),
}

/// The whole process after parsing its arguments: metrics server, database, source, run,
/// report.
pub async fn main(args: Args) -> Exit {
    let started = Instant::now();
    let metrics_http = HttpMetrics::default();
    let metrics = Metrics::new(&args.tenant, &metrics_http);
    let outbound = match Outbound::new(args.outbound.policy(), &metrics_http) {
        Ok(o) => o,
        Err(e) => return Exit::Retry(e),
    };
    let addr = format!("{}:{}", args.metrics_host, args.metrics_port);
    let server = match addr.parse() {
        Ok(a) => {
            xin_runtime::serve_metrics(
                a,
                metrics_http.clone(),
                "INGEST_METRICS_HOST/INGEST_METRICS_PORT",
            )
            .await
        }
        Err(e) => Err(format!("INGEST_METRICS_HOST/PORT: {e}")),
    };
    if let Err(e) = server {
        return Exit::Retry(e);
    }
    let kube = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => return Exit::Retry(format!("cannot reach the Kubernetes API: {e}")),
    };
    let api: Api<IngestionJob> = Api::namespaced(kube.clone(), &args.namespace);
    let list = match api.list(&Default::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            return Exit::Retry(format!(
                "cannot read the IngestionJobs of {}: {e}",
                args.namespace
            ));
        }
    };
    backlog(&list, &metrics);
    // Its own IngestionJob: the very one the Job was made for, not one re-created with its
    // name; and not one whose result is in already (a pod run again after it reported).
    let Some(own) = list.iter().find(|ij| {
        ij.metadata.name.as_deref() == Some(args.job.as_str())
            && args
                .job_uid
                .as_deref()
                .is_none_or(|u| ij.metadata.uid.as_deref() == Some(u))
    }) else {
        return Exit::Retry(format!(
            "IngestionJob {}/{} (uid {}) not found: deleted, or re-created since this Job was made",
            args.namespace,
            args.job,
            args.job_uid.as_deref().unwrap_or("any")
        ));
    };
    if let Some(state @ (WorkerState::Succeeded | WorkerState::Failed)) = own
        .status
        .as_ref()
        .and_then(|s| s.worker.as_ref())
        .map(|w| w.state)
    {
        tracing::info!(
            ?state,
            "this IngestionJob's result is in already; nothing to do"
        );
        return Exit::Done(state);
    }
    let created = own.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let reporter = Reporter::new(api.clone(), &args.job, own.metadata.uid.clone());
    let mut args = args;
    if args.spec.is_none() {
        // A spec too large for the environment is not rendered: it is the object's.
        args.spec = Some(own.spec.clone());
    }

    let exit = run(&args, kube, &outbound, &reporter, &metrics).await;
    let (outcome, report) = match &exit {
        Ok(r) => (
            match r.state {
                WorkerState::Failed => "Failed",
                _ => "Succeeded",
            },
            Some(r),
        ),
        Err(_) => ("Error", None),
    };
    let lag = created.map(|c| (jiff::Timestamp::now() - c).get_seconds() as f64);
    metrics.finished(
        outcome,
        started.elapsed().as_secs_f64(),
        lag.filter(|_| report.is_some()),
    );
    let exit = match exit {
        Ok(report) => match reporter.finish(&report, args.retry_base()).await {
            Ok(()) => {
                tracing::info!(
                    state = ?report.state,
                    reason = report.reason.as_deref().unwrap_or(""),
                    documents = report.documents,
                    chunks = report.chunks,
                    failed = report.failed,
                    seconds = started.elapsed().as_secs_f64(),
                    "ingestion finished: {}",
                    report.message.as_deref().unwrap_or("")
                );
                Exit::Done(report.state)
            }
            Err(e) => Exit::Retry(e),
        },
        Err(e) => {
            // Still Running: the Job tries again, and the operator fails the IngestionJob
            // when the Job runs out of retries. The figures reported last stay; the message
            // says what went wrong.
            let mut note = reporter.last().await.unwrap_or_default();
            note.state = WorkerState::Running;
            note.reason = Some(e.reason().into());
            note.message = Some(format!("attempt failed, the Job retries it: {e}"));
            let _ = reporter.finish(&note, args.retry_base()).await;
            Exit::Retry(e.to_string())
        }
    };
    if !args.metrics_linger.is_zero() {
        tokio::time::sleep(args.metrics_linger).await;
    }
    exit
}

async fn run(
    args: &Args,
    kube: kube::Client,
    outbound: &Outbound,
    reporter: &Reporter,
    metrics: &Metrics,
) -> Result<Report, RunError> {
    let pool = xin_store::connect(args.database_url.expose(), 4)
        .await
        .map_err(RunError::Database)?;
    xin_store::check_runtime_role(&pool)
        .await
        .map_err(RunError::Database)?;
    xin_store::check_schema(&pool)
        .await
        .map_err(RunError::Database)?;
    let embedding = match args.embedding() {
        Ok(e) => e,
        // A setting the operator renders: another try would not change it.
        Err(e) => {
            return Ok(Report {
                state: WorkerState::Failed,
                reason: Some(xin_api::ingestion::worker_reason::INVALID_CONFIGURATION.into()),
                message: Some(e),
                started_at: Some(pipeline::now()),
                finished_at: Some(pipeline::now()),
                ..Report::default()
            });
        }
    };
    let embedder =
        embedding.map(|c| Embedder::new(outbound, c, args.retry_base(), metrics.clone()));
    let s3_keys = match (&args.s3_access_key_id, &args.s3_secret_access_key) {
        (Some(k), Some(s)) => Some((k.expose().to_string(), s.expose().to_string())),
        _ => None,
    };
    let source = Source::open(Open {
        spec: &args
            .spec
            .as_ref()
            .expect("set from the IngestionJob when not rendered")
            .source,
        namespace: &args.namespace,
        kube: Some(kube),
        outbound,
        headers_dir: args.headers_dir.as_deref(),
        s3_keys,
        max_bytes: args.max_document_bytes,
        timeout: args.fetch_timeout,
    })
    .await
    .map_err(|e| RunError::Source(e.0))?;
    let spec = args
        .spec
        .as_ref()
        .expect("set from the IngestionJob when not rendered");
    let result = Run {
        tenant: &args.tenant,
        job: &args.job,
        spec,
        source: &source,
        pool: &pool,
        embedder: embedder.as_ref(),
        reporter,
        metrics,
        concurrency: args.concurrency,
        batch_documents: args.batch_documents,
        max_documents: args.max_documents,
        retry_base: args.retry_base(),
        heavy: Run::heavy_parses(),
    }
    .run()
    .await;
    pool.close().await;
    result
}

/// The age of the namespace's oldest unfinished IngestionJob (the backlog gauge).
fn backlog(list: &[IngestionJob], metrics: &Metrics) {
    let now = jiff::Timestamp::now();
    let oldest = list
        .iter()
        .filter(|ij| {
            !matches!(
                ij.status.as_ref().and_then(|s| s.phase),
                Some(Phase::Succeeded | Phase::Failed)
            )
        })
        .filter_map(|ij| ij.metadata.creation_timestamp.as_ref().map(|t: &Time| t.0))
        .min();
    if let Some(o) = oldest {
        metrics.oldest_unfinished((now - o).get_seconds() as f64);
    }
}
