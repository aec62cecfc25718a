//! Scheduled rules: queues a run for every fire time of a rule's crontab, in its zone.
//!
//! Where each rule has got to is a cursor in the database (`automation_schedules`), moved
//! under a row lock in the same transaction that queues the runs, so replicas take turns and
//! each fire time is decided once. A run is unique per rule and scheduled instant
//! (`schedule:<instant>`), so even two workers deciding the same time queue one run. Fire
//! times between the cursor and now are on time (within the tolerance) or missed, and missed
//! ones follow `catchUp` (`xin_api::automation::schedule::due`). A new rule's cursor starts
//! at its creation; a suspended rule's cursor stays where it was, so resuming applies
//! `catchUp` to what was missed meanwhile; an edited crontab or zone starts afresh at the edit.
//! Between fire times nothing touches the database: each rule's next time is kept in memory.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde_json::json;
use xin_api::automation::AutomationRule;
use xin_api::automation::schedule::{due, next_time, parse_cron, time_zone};

use crate::Worker;
use crate::queue::{NewRun, enqueue_in};

/// What the scheduler remembers of a rule between passes.
#[derive(Default)]
pub struct Memo {
    /// The crontab and zone last decided for.
    sig: String,
    suspended: bool,
    /// Nothing to do before this.
    next: Option<DateTime<Utc>>,
}

/// The rule's crontab and zone, or why it cannot be scheduled (the operator reports the same
/// in the rule's conditions).
pub fn plan(
    rule: &AutomationRule,
    tenant_zone: &str,
) -> Option<Result<(croner::Cron, chrono_tz::Tz, String), String>> {
    let s = rule.spec.trigger.schedule.as_ref()?;
    Some((|| {
        let cron = parse_cron(&s.cron)?;
        let tz = time_zone(s.time_zone.as_deref(), tenant_zone)?;
        Ok((
            cron,
            tz,
            format!(
                "{} {}",
                s.cron.split_whitespace().collect::<Vec<_>>().join(" "),
                tz.name()
            ),
        ))
    })())
}

/// One pass over the scheduled rules at `now`; returns the runs queued.
pub async fn tick(
    w: &Worker,
    memos: &mut HashMap<String, Memo>,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut queued = 0;
    let rules = w.rules.all();
    memos.retain(|uid, _| rules.iter().any(|r| r.uid().as_deref() == Some(uid)));
    for rule in rules {
        let Some(plan) = plan(&rule, &w.time_zone) else {
            continue;
        };
        let uid = rule.uid().unwrap_or_default();
        let memo = memos.entry(uid.clone()).or_default();
        let (cron, tz, sig) = match plan {
            Ok(p) => p,
            Err(e) => {
                if memo.sig != e {
                    tracing::warn!(rule = %rule.name_any(), error = %e, "rule not scheduled");
                    memo.sig = e;
                }
                continue;
            }
        };
        if rule.spec.suspend {
            memo.suspended = true;
            continue;
        }
        let fresh = memo.sig != sig || memo.suspended;
        if !fresh && memo.next.is_some_and(|n| now < n) {
            continue;
        }
        queued += decide(w, &rule, &uid, &cron, tz, &sig, now).await?;
        // An expression that never fires again (the operator refuses those) is not searched
        // for again until it is edited.
        *memo = Memo {
            sig: sig.clone(),
            suspended: false,
            next: Some(next_time(&cron, tz, now).unwrap_or(DateTime::<Utc>::MAX_UTC)),
        };
    }
    Ok(queued)
}

/// Moves the rule's cursor to `now`, queueing what is due on the way.
async fn decide(
    w: &Worker,
    rule: &AutomationRule,
    uid: &str,
    cron: &croner::Cron,
    tz: chrono_tz::Tz,
    sig: &str,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let created: DateTime<Utc> = rule
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
        .unwrap_or(now);
    let mut tx = w.pool.begin().await?;
    sqlx::query(
        "INSERT INTO automation_schedules (rule_uid, tenant, rule, schedule, cursor)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rule_uid) DO NOTHING",
    )
    .bind(uid)
    .bind(&w.tenant)
    .bind(rule.name_any())
    .bind(sig)
    .bind(created)
    .execute(&mut *tx)
    .await?;
    let (stored, cursor): (String, DateTime<Utc>) = sqlx::query_as(
        "SELECT schedule, cursor FROM automation_schedules WHERE rule_uid = $1 FOR UPDATE",
    )
    .bind(uid)
    .fetch_one(&mut *tx)
    .await?;
    // An edited schedule starts at the edit; a cursor ahead of this clock (another replica's
    // clock) is left alone.
    let cursor = if stored != sig { now } else { cursor };
    let policy = rule
        .spec
        .trigger
        .schedule
        .as_ref()
        .map(|s| s.catch_up)
        .unwrap_or_default();
    let d = due(
        cron,
        tz,
        cursor,
        now,
        policy,
        w.settings.schedule_tolerance,
        w.settings.catch_up_limit,
    );
    if d.missed > 0 {
        tracing::info!(
            rule = %rule.name_any(),
            missed = d.missed,
            more = d.missed_more,
            catch_up = ?policy,
            "scheduled runs were missed (the worker was down or the rule suspended)"
        );
    }
    let runs: Vec<NewRun> = d
        .runs
        .iter()
        .map(|t| NewRun {
            rule: rule.name_any(),
            rule_uid: uid.to_string(),
            dedupe_key: format!("schedule:{}", t.to_rfc3339()),
            trigger: "schedule",
            scheduled_for: Some(*t),
            event_id: None,
            context: json!({}),
            correlation_id: crate::new_id(),
            run_after: *t,
        })
        .collect();
    let inserted = enqueue_in(&mut *tx, &w.tenant, &runs).await?;
    if stored != sig || cursor < now {
        sqlx::query(
            "UPDATE automation_schedules SET cursor = GREATEST(cursor, $2), schedule = $3, rule = $4
              WHERE rule_uid = $1",
        )
            .bind(uid)
            .bind(now)
            .bind(sig)
        .bind(rule.name_any())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !inserted.is_empty() {
        w.metrics.queued("schedule", inserted.len() as u64);
        w.wake.notify_one();
    }
    Ok(inserted.len())
}
