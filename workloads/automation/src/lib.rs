//! `xin-automation`: runs a tenant's AutomationRules (`docs/automation.md`).
//!
//! - [`rules`]: the namespace's rules from a reflector (adds, edits, deletes, `suspend`).
//! - [`scheduler`]: crontab fire times → runs, once per rule and instant, `catchUp` applied.
//! - [`events`]: the orchestrator's outbox → runs of the rules an event matches.
//! - [`queue`]: the durable queue in the tenant's database (`SKIP LOCKED`, leases, retries,
//!   dead letters).
//! - [`dispatch`]: claims runs, runs [`actions`] (webhook, CRM, [`email`]), records outcomes.
//! - [`report`]: the rules' status, the operations asked by annotation, housekeeping.
#![forbid(unsafe_code)]

pub mod actions;
pub mod config;
pub mod dispatch;
pub mod email;
pub mod events;
pub mod metrics;
pub mod queue;
pub mod report;
pub mod rules;
pub mod scheduler;
pub mod secrets;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use kube::Api;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use xin_api::automation::AutomationRule;
use xin_runtime::HttpMetrics;
use xin_runtime::outbound::{Limits, Outbound};

use crate::actions::Actions;
use crate::config::Args;
use crate::metrics::Metrics;
use crate::rules::Rules;
use crate::secrets::Secrets;

/// Tuning, from [`Args`].
#[derive(Clone, Debug)]
pub struct Settings {
    pub concurrency: usize,
    pub claim_batch: usize,
    pub event_batch: usize,
    pub poll: Duration,
    pub lease: Duration,
    pub action_timeout: Duration,
    pub schedule_tolerance: chrono::Duration,
    pub catch_up_limit: usize,
    pub report_interval: Duration,
    pub retention_hours: usize,
}

impl Settings {
    pub fn from_args(a: &Args) -> Self {
        Settings {
            concurrency: a.concurrency,
            claim_batch: a.claim_batch,
            event_batch: a.event_batch,
            poll: a.poll(),
            lease: a.lease,
            action_timeout: a.action_timeout,
            schedule_tolerance: chrono::Duration::from_std(a.schedule_tolerance)
                .unwrap_or(chrono::Duration::seconds(120)),
            catch_up_limit: a.catch_up_limit,
            report_interval: a.report_interval,
            retention_hours: a.retention_hours,
        }
    }
}

/// Everything the loops share.
pub struct Worker {
    pub tenant: String,
    pub time_zone: String,
    pub pool: PgPool,
    pub rules: Rules,
    pub actions: Actions,
    pub metrics: Metrics,
    /// This process's lease token.
    pub owner: String,
    pub settings: Settings,
    /// Where statuses go; `None` writes none (benchmarks).
    pub api: Option<Api<AutomationRule>>,
    /// Rung when runs were queued or finished: the dispatcher looks at once.
    pub wake: Notify,
    /// Rule names with a queue-depth series (removed when the rule goes).
    pub known_rule_names: std::sync::Mutex<HashSet<String>>,
    /// The last database round trip of the loops worked (`/ready`).
    pub healthy: AtomicBool,
}

/// A random id (correlation ids, lease owners).
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The loops, until `stop` turns true; the dispatcher drains before this returns.
pub async fn run_loops(w: Arc<Worker>, stop: watch::Receiver<bool>) {
    let scheduler = {
        let (w, mut stop) = (w.clone(), stop.clone());
        tokio::spawn(async move {
            let mut memos = HashMap::new();
            loop {
                match scheduler::tick(&w, &mut memos, chrono::Utc::now()).await {
                    Ok(_) => w.healthy.store(true, Ordering::Relaxed),
                    Err(e) => {
                        w.healthy.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "scheduling failed; retrying");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = w.rules.changed() => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let events = {
        let (w, mut stop) = (w.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let full = match events::pump(&w).await {
                    Ok(n) => n >= w.settings.event_batch,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the outbox failed; retrying");
                        false
                    }
                };
                if full {
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(w.settings.poll) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let reporter = {
        let (w, mut stop) = (w.clone(), stop.clone());
        tokio::spawn(async move {
            let mut done = HashSet::new();
            let mut last_purge = None::<std::time::Instant>;
            loop {
                let purge = last_purge.is_none_or(|t| t.elapsed() > Duration::from_secs(600));
                if purge {
                    last_purge = Some(std::time::Instant::now());
                }
                if let Err(e) = report::housekeeping(&w, purge).await {
                    tracing::warn!(error = %e, "queue housekeeping failed; retrying");
                }
                if let Err(e) = report::operations(&w, &mut done).await {
                    tracing::warn!(error = %e, "acting on operation annotations failed; retrying");
                }
                match report::desired(&w).await {
                    Ok(d) => {
                        report::write(&w, &d).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the queue for the status; retrying")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(w.settings.report_interval) => {}
                    _ = w.rules.changed() => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    dispatch::run(w.clone(), stop).await;
    for t in [scheduler, events, reporter] {
        t.abort();
    }
}

/// The process: configuration checked, servers up, the rules watched, the loops run until
/// SIGTERM, then the attempts in flight finish.
pub async fn main(args: Args) -> Result<(), String> {
    args.check()?;
    let http = HttpMetrics::default();
    let metrics = Metrics::new(&args.tenant, &http);
    let outbound = Outbound::new(args.outbound.policy(), &http)?;
    let metrics_addr = format!("{}:{}", args.metrics_host, args.metrics_port)
        .parse()
        .map_err(|e| format!("AUTOMATION_METRICS_HOST/PORT: {e}"))?;
    xin_runtime::serve_metrics(
        metrics_addr,
        http.clone(),
        "AUTOMATION_METRICS_HOST/AUTOMATION_METRICS_PORT",
    )
    .await?;
    let pool =
        xin_store::connect(args.database_url.expose(), args.database_connections as u32).await?;
    xin_store::check_runtime_role(&pool).await?;
    xin_store::check_schema(&pool).await?;
    let kube = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
    let api: Api<AutomationRule> = Api::namespaced(kube.clone(), &args.namespace);
    let (rules, _watch) = Rules::watch(api.clone());
    let secrets = Secrets::new(
        Api::namespaced(kube, &args.namespace),
        &args.namespace,
        args.secret_ttl,
    );
    let worker = Arc::new(Worker {
        tenant: args.tenant.clone(),
        time_zone: args.time_zone.clone(),
        pool,
        rules,
        actions: Actions {
            tenant: args.tenant.clone(),
            // Redirects are not followed: a 301/302/303 would turn the POST into a GET without
            // the payload, and a receiver that moved should be edited into the rule.
            outbound: outbound.with_limits(Limits {
                max_redirects: 0,
                ..outbound.limits()
            }),
            secrets,
            timeout: args.action_timeout,
        },
        metrics,
        owner: new_id(),
        settings: Settings::from_args(&args),
        api: Some(api),
        wake: Notify::new(),
        known_rule_names: Default::default(),
        healthy: AtomicBool::new(true),
    });
    let addr = format!("{}:{}", args.http_host, args.http_port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        format!("cannot serve on {addr} (AUTOMATION_HTTP_HOST/AUTOMATION_HTTP_PORT): {e}")
    })?;
    tracing::info!(addr = %addr, "serving /health and /ready");
    let ready = worker.clone();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let w = ready.clone();
                async move {
                    if w.rules.is_ready() && w.healthy.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the rules are not listed yet or the database is unreachable")
                    }
                }
            }),
        );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tracing::info!(tenant = %args.tenant, namespace = %args.namespace, "waiting for the AutomationRules to be listed");
    tokio::select! {
        _ = worker.rules.ready() => {}
        _ = xin_runtime::shutdown_signal() => { server.abort(); return Ok(()); }
    }
    tracing::info!(rules = worker.rules.all().len(), "running");
    let (stop_tx, stop) = watch::channel(false);
    let loops = tokio::spawn(run_loops(worker.clone(), stop));
    xin_runtime::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = loops.await;
    server.abort();
    worker.pool.close().await;
    Ok(())
}
