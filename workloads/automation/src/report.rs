//! What the worker tells the rules, and what it is asked through them.
//!
//! **Status** (server-side apply under the field manager `xin-automation`, the operator owns
//! `observedGeneration` and the conditions): last and next run, succeeded / failed /
//! dead-lettered counts, last error, queue depth, the recent runs, and the answers to
//! operations. Computed from the database every `AUTOMATION_REPORT_SECONDS` (and when a rule
//! changes); written only when it differs from what the rule shows.
//!
//! **Operations** by annotation, each value acted on once whichever replica sees it first
//! (`automation_operations`): `xin.dev/run-now`, `xin.dev/test-action`, `xin.dev/simulate`,
//! `xin.dev/retry-run`, `xin.dev/cancel-run`; the answer is in `status.operations` (and
//! `status.preview`, `status.simulation`).
//!
//! Also the housekeeping: deleted rules forgotten, expired leases released, old runs purged,
//! the queue gauges.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use xin_api::automation::schedule::next_times;
use xin_api::automation::{
    ActionPreview, AutomationRule, AutomationRuleStatus, OperationResult, RECENT_RUNS, RunSummary,
    Simulation, annotations,
};

use crate::Worker;
use crate::queue::{self, NewRun, RunRow, enqueue_in};
use crate::scheduler::plan;

pub const FIELD_MANAGER: &str = "xin-automation";

/// The part of a rule's status the worker owns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    pub succeeded: Option<i64>,
    pub failed: Option<i64>,
    pub dead_lettered: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub queue_depth: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<RunSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<ActionPreview>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulation: Option<Simulation>,
}

impl WorkerStatus {
    /// What a rule shows now.
    pub fn of(s: &AutomationRuleStatus) -> Self {
        WorkerStatus {
            last_run_time: s.last_run_time.clone(),
            next_run_time: s.next_run_time.clone(),
            succeeded: s.succeeded,
            failed: s.failed,
            dead_lettered: s.dead_lettered,
            last_error: s.last_error.clone(),
            queue_depth: s.queue_depth,
            recent_runs: s.recent_runs.clone(),
            operations: s.operations.clone(),
            preview: s.preview.clone(),
            simulation: s.simulation.clone(),
        }
    }
}

/// A time as the API server keeps it (whole seconds).
pub fn time(t: DateTime<Utc>) -> Time {
    Time(jiff::Timestamp::from_second(t.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

fn state_name(s: &str) -> &'static str {
    match s {
        "pending" => "Pending",
        "running" => "Running",
        "succeeded" => "Succeeded",
        "dead" => "DeadLettered",
        _ => "Cancelled",
    }
}

fn trigger_name(s: &str) -> &'static str {
    match s {
        "schedule" => "Schedule",
        "event" => "Event",
        _ => "Manual",
    }
}

pub fn summary(r: &RunRow) -> RunSummary {
    RunSummary {
        id: r.id,
        trigger: trigger_name(&r.trigger).into(),
        state: state_name(&r.state).into(),
        attempts: r.attempts,
        scheduled_for: r.scheduled_for.map(time),
        conversation_id: r.conversation_id.clone(),
        idempotency_key: r.idempotency_key.clone(),
        created_at: time(r.created_at),
        finished_at: r.finished_at.map(time),
        last_error: r.last_error.clone(),
    }
}

#[derive(sqlx::FromRow)]
struct OpRow {
    rule_uid: String,
    annotation: String,
    value: String,
    result: String,
    message: String,
    detail: Option<Value>,
    at: DateTime<Utc>,
}

/// The statuses every rule should show, from the database.
pub async fn desired(w: &Worker) -> Result<HashMap<String, WorkerStatus>, sqlx::Error> {
    // One snapshot: counters, depths and recent runs that agree with each other.
    let mut tx = w.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let stats: HashMap<String, queue::Stats> = queue::stats(&mut *tx)
        .await?
        .into_iter()
        .map(|s| (s.rule_uid.clone(), s))
        .collect();
    let depths = queue::depths(&mut *tx).await?;
    let mut recent: HashMap<String, Vec<RunSummary>> = HashMap::new();
    for r in queue::recent(&mut *tx, RECENT_RUNS).await? {
        recent
            .entry(r.rule_uid.clone())
            .or_default()
            .push(summary(&r));
    }
    let ops: Vec<OpRow> = sqlx::query_as(
        "SELECT DISTINCT ON (rule_uid, annotation) rule_uid, annotation, value, result, message, detail, at
           FROM automation_operations ORDER BY rule_uid, annotation, at DESC",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // Gauges.
    let m = &w.metrics;
    let total: i64 = depths.iter().map(|d| d.1).sum();
    m.queue_depth_all
        .get_or_create(&m.tenant_label())
        .set(total);
    let oldest = depths.iter().map(|d| d.2).min();
    m.oldest_pending
        .get_or_create(&m.tenant_label())
        .set(oldest.map_or(0.0, |o| {
            (Utc::now() - o).num_milliseconds().max(0) as f64 / 1000.0
        }));
    let depth: HashMap<&str, i64> = depths.iter().map(|(u, n, _)| (u.as_str(), *n)).collect();
    let now = Utc::now();
    let mut out = HashMap::new();
    for rule in w.rules.all() {
        let uid = rule.uid().unwrap_or_default();
        let s = stats.get(&uid).cloned().unwrap_or_default();
        let d = depth.get(uid.as_str()).copied().unwrap_or(0);
        m.queue_depth
            .get_or_create(&m.rule(&rule.name_any()))
            .set(d);
        let next = match plan(&rule, &w.time_zone) {
            Some(Ok((cron, tz, _))) if !rule.spec.suspend => next_times(&cron, tz, now, 1)
                .first()
                .map(|t| time(t.with_timezone(&Utc))),
            _ => None,
        };
        let mut st = WorkerStatus {
            last_run_time: s.last_run_at.map(time),
            next_run_time: next,
            succeeded: Some(s.succeeded),
            failed: Some(s.failed),
            dead_lettered: Some(s.dead_lettered),
            last_error: s.last_error.clone(),
            queue_depth: Some(d),
            recent_runs: recent.remove(&uid).unwrap_or_default(),
            ..WorkerStatus::default()
        };
        for o in ops.iter().filter(|o| o.rule_uid == uid) {
            st.operations.push(OperationResult {
                annotation: o.annotation.clone(),
                value: o.value.clone(),
                result: o.result.clone(),
                message: o.message.clone(),
                time: time(o.at),
            });
            if o.result == "Done" {
                match o.annotation.as_str() {
                    annotations::TEST_ACTION => {
                        st.preview = o
                            .detail
                            .clone()
                            .and_then(|d| serde_json::from_value(d).ok())
                    }
                    annotations::SIMULATE => {
                        st.simulation = o
                            .detail
                            .clone()
                            .and_then(|d| serde_json::from_value(d).ok())
                    }
                    _ => {}
                }
            }
        }
        out.insert(uid, st);
    }
    Ok(out)
}

/// Writes each rule's status where it differs from what the rule shows; returns how many.
pub async fn write(w: &Worker, desired: &HashMap<String, WorkerStatus>) -> usize {
    let Some(api) = &w.api else { return 0 };
    let mut written = 0;
    for rule in w.rules.all() {
        let uid = rule.uid().unwrap_or_default();
        let Some(want) = desired.get(&uid) else {
            continue;
        };
        let have = WorkerStatus::of(&rule.status.clone().unwrap_or_default());
        if &have == want {
            continue;
        }
        let patch = json!({
            "apiVersion": "xin.dev/v1alpha1",
            "kind": "AutomationRule",
            // The uid makes the apply fail (409) on a rule re-created with the same name.
            "metadata": {"name": rule.name_any(), "uid": uid},
            "status": want,
        });
        match api
            .patch_status(
                &rule.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => written += 1,
            Err(e) => {
                tracing::warn!(rule = %rule.name_any(), error = %e, "cannot report the rule's status")
            }
        }
    }
    written
}

/// Acts on operation annotations not acted on yet; returns how many.
pub async fn operations(
    w: &Worker,
    done: &mut HashSet<(String, String, String)>,
) -> Result<usize, sqlx::Error> {
    let mut n = 0;
    for rule in w.rules.all() {
        let uid = rule.uid().unwrap_or_default();
        for a in annotations::ALL {
            let Some(value) = rule.annotations().get(a).map(|v| v.trim().to_string()) else {
                continue;
            };
            if value.is_empty() || value.len() > 256 {
                continue;
            }
            let key = (uid.clone(), a.to_string(), value.clone());
            if done.contains(&key) {
                continue;
            }
            let mut tx = w.pool.begin().await?;
            let fresh: Option<i32> = sqlx::query_scalar(
                "INSERT INTO automation_operations (rule_uid, annotation, value, result, message)
                 VALUES ($1, $2, $3, 'Pending', '') ON CONFLICT DO NOTHING RETURNING 1",
            )
            .bind(&uid)
            .bind(a)
            .bind(&value)
            .fetch_optional(&mut *tx)
            .await?;
            if fresh.is_none() {
                tx.rollback().await?;
                done.insert(key);
                continue;
            }
            let (result, message, detail) = act(w, &rule, &uid, a, &value, &mut tx).await?;
            tracing::info!(rule = %rule.name_any(), annotation = a, value = %value, result, message = %message, "operation");
            sqlx::query(
                "UPDATE automation_operations SET result = $4, message = $5, detail = $6, at = now()
                  WHERE rule_uid = $1 AND annotation = $2 AND value = $3",
            )
            .bind(&uid)
            .bind(a)
            .bind(&value)
            .bind(result)
            .bind(&message)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            done.insert(key);
            n += 1;
        }
    }
    Ok(n)
}

type Answer = (&'static str, String, Option<Value>);

async fn act(
    w: &Worker,
    rule: &Arc<AutomationRule>,
    uid: &str,
    annotation: &str,
    value: &str,
    tx: &mut sqlx::PgConnection,
) -> Result<Answer, sqlx::Error> {
    let refused = |m: String| Ok(("Refused", m, None));
    let run_id = || {
        value
            .parse::<i64>()
            .map_err(|_| format!("{value:?} is not a run id (see status.recentRuns)"))
    };
    match annotation {
        annotations::RUN_NOW => {
            if rule.spec.suspend {
                return refused(
                    "the rule is suspended; resume it first (spec.suspend: false)".into(),
                );
            }
            let run = NewRun {
                rule: rule.name_any(),
                rule_uid: uid.to_string(),
                dedupe_key: format!("manual:{value}"),
                trigger: "manual",
                scheduled_for: None,
                event_id: None,
                context: json!({}),
                correlation_id: crate::new_id(),
                run_after: Utc::now(),
            };
            let ids = enqueue_in(&mut *tx, &w.tenant, &[run]).await?;
            w.metrics.queued("manual", ids.len() as u64);
            w.wake.notify_one();
            Ok(match ids.first() {
                Some((_, id)) => ("Done", format!("run {id} queued"), None),
                None => (
                    "Refused",
                    "a run for this value was queued before".into(),
                    None,
                ),
            })
        }
        annotations::RETRY_RUN | annotations::CANCEL_RUN => {
            let id = match run_id() {
                Ok(id) => id,
                Err(m) => return refused(m),
            };
            let r = if annotation == annotations::RETRY_RUN {
                queue::retry(&mut *tx, uid, id).await?
            } else {
                queue::cancel(&mut *tx, uid, id).await?
            };
            Ok(match r {
                Ok(()) if annotation == annotations::RETRY_RUN => {
                    w.wake.notify_one();
                    (
                        "Done",
                        format!("run {id} queued again with fresh attempts"),
                        None,
                    )
                }
                Ok(()) => ("Done", format!("run {id} cancelled"), None),
                Err(m) => ("Refused", m, None),
            })
        }
        annotations::SIMULATE => {
            let n = match value.parse::<usize>() {
                Ok(n @ 1..=50) => n,
                _ => return refused(format!("{value:?} is not a count from 1 to 50")),
            };
            match plan(rule, &w.time_zone) {
                None => refused("an event rule has no schedule to simulate".into()),
                Some(Err(e)) => refused(e),
                Some(Ok((cron, tz, _))) => {
                    let times: Vec<String> = next_times(&cron, tz, Utc::now(), n)
                        .iter()
                        .map(|t| t.to_rfc3339())
                        .collect();
                    let sim = Simulation {
                        value: value.to_string(),
                        time_zone: tz.name().to_string(),
                        next_run_times: times,
                    };
                    let msg = format!("next {n} fire times in {} in status.simulation", tz.name());
                    Ok(("Done", msg, serde_json::to_value(sim).ok()))
                }
            }
        }
        annotations::TEST_ACTION => match w.actions.preview(rule, value).await {
            Ok(p) => Ok((
                "Done",
                "rendered for a sample run, not sent: status.preview".into(),
                serde_json::to_value(p).ok(),
            )),
            Err(m) => refused(m),
        },
        _ => refused("unknown operation".into()),
    }
}

/// Housekeeping: forget deleted rules, release expired leases, purge old runs.
pub async fn housekeeping(w: &Worker, purge: bool) -> Result<(), sqlx::Error> {
    let deleted = w.rules.take_deleted();
    if !deleted.is_empty() {
        match queue::forget(&w.pool, &deleted).await {
            Ok(n) => {
                for uid in &deleted {
                    tracing::info!(rule_uid = %uid, cancelled = n, "deleted rule forgotten; its pending runs cancelled");
                }
            }
            Err(e) => {
                w.rules.return_deleted(deleted);
                return Err(e);
            }
        }
    }
    // Gauges of rules that are gone.
    let names: HashSet<String> = w.rules.all().iter().map(|r| r.name_any()).collect();
    let stale: Vec<_> = {
        let m = &w.metrics;
        let mut v = Vec::new();
        for name in w
            .known_rule_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            if !names.contains(&name) {
                v.push(name);
            }
        }
        for n in &v {
            m.queue_depth.remove(&m.rule(n));
        }
        v
    };
    drop(stale);
    w.known_rule_names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(names);
    let released = queue::release_expired(&w.pool).await?;
    if released > 0 {
        tracing::warn!(
            runs = released,
            "runs whose worker stopped mid-run are queued again"
        );
        w.wake.notify_one();
    }
    if purge {
        queue::sweep_orphans(&w.pool, &w.rules.uids()).await?;
        queue::purge(&w.pool, w.settings.retention_hours).await?;
    }
    Ok(())
}
