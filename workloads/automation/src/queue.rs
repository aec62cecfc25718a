//! The durable queue in the tenant's database (`automation_runs`, migration 0008): every
//! statement the worker runs on it. Statements are short (claim a batch, finish a batch) so
//! no transaction holds back vacuum; claims use `FOR UPDATE SKIP LOCKED`, so replicas never
//! take the same run; finishing only succeeds for the worker holding the run's lease.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// A run to queue.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub rule: String,
    pub rule_uid: String,
    /// Unique per rule: `schedule:<instant>`, `event:<id>`, `manual:<value>`.
    pub dedupe_key: String,
    pub trigger: &'static str,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub event_id: Option<i64>,
    /// What templates see besides the run itself (event, conversation, message, handoff).
    pub context: Value,
    pub correlation_id: String,
    pub run_after: DateTime<Utc>,
}

/// The idempotency key of a run: the same for every attempt (and for a dead-lettered run
/// queued again), different for every run. Derived, so it needs no extra write.
pub fn idempotency_key(rule_uid: &str, dedupe_key: &str) -> String {
    let d = Sha256::digest(format!("{rule_uid}\n{dedupe_key}"));
    format!("xin-{}", hex::encode(&d[..16]))
}

/// Queues `runs`; a run already queued (same rule and dedupe key) is left as it is. Returns
/// `(dedupe key, id)` of the runs this call inserted.
pub async fn enqueue(
    pool: &PgPool,
    tenant: &str,
    runs: &[NewRun],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    enqueue_in(pool, tenant, runs).await
}

/// [`enqueue`] on a connection or in a transaction.
pub async fn enqueue_in<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    tenant: &str,
    runs: &[NewRun],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    if runs.is_empty() {
        return Ok(vec![]);
    }
    let col = |f: fn(&NewRun) -> String| runs.iter().map(f).collect::<Vec<_>>();
    let keys: Vec<String> = runs
        .iter()
        .map(|r| idempotency_key(&r.rule_uid, &r.dedupe_key))
        .collect();
    sqlx::query_as(
        "INSERT INTO automation_runs (tenant, rule, rule_uid, dedupe_key, trigger, scheduled_for,
                                      event_id, context, correlation_id, idempotency_key, run_after)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                                  $7::bigint[], $8::jsonb[], $9::text[], $10::text[], $11::timestamptz[])
         ON CONFLICT (rule_uid, dedupe_key) DO NOTHING
         RETURNING dedupe_key, id",
    )
    .bind(tenant)
    .bind(col(|r| r.rule.clone()))
    .bind(col(|r| r.rule_uid.clone()))
    .bind(col(|r| r.dedupe_key.clone()))
    .bind(col(|r| r.trigger.to_string()))
    .bind(runs.iter().map(|r| r.scheduled_for).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.event_id).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.context.clone()).collect::<Vec<_>>())
    .bind(col(|r| r.correlation_id.clone()))
    .bind(keys)
    .bind(runs.iter().map(|r| r.run_after).collect::<Vec<_>>())
    .fetch_all(db)
    .await
}

/// A run this worker holds the lease of.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub rule: String,
    pub rule_uid: String,
    pub trigger: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub event_id: Option<i64>,
    pub context: Value,
    pub correlation_id: String,
    pub idempotency_key: String,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
}

/// Claims up to `n` due runs of the rules in `rules` (the active ones: a suspended or
/// deleted rule's runs wait), leasing them to `owner` for `lease`.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    rules: &[String],
    n: usize,
    lease: std::time::Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    if rules.is_empty() || n == 0 {
        return Ok(vec![]);
    }
    sqlx::query_as(
        "UPDATE automation_runs r
            SET state = 'running', attempts = r.attempts + 1, lease_owner = $1,
                lease_until = now() + make_interval(secs => $2), started_at = COALESCE(r.started_at, now())
           FROM (SELECT id FROM automation_runs
                  WHERE state = 'pending' AND run_after <= now() AND rule_uid = ANY($3)
                  ORDER BY run_after, id LIMIT $4
                  FOR UPDATE SKIP LOCKED) c
          WHERE r.id = c.id
      RETURNING r.id, r.rule, r.rule_uid, r.trigger, r.scheduled_for, r.event_id, r.context,
                r.correlation_id, r.idempotency_key, r.attempts",
    )
    .bind(owner)
    .bind(lease.as_secs_f64())
    .bind(rules)
    .bind(n as i64)
    .fetch_all(pool)
    .await
}

/// Runs whose lease ran out (their worker died or stalled) are pending again, due now. The
/// attempt they were on counts. Returns how many.
pub async fn release_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE automation_runs
            SET state = 'pending', lease_owner = NULL, lease_until = NULL, run_after = now(),
                last_error = COALESCE(last_error, 'the worker running it stopped before finishing')
          WHERE state = 'running' AND lease_until < now()",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// Failed; tried again at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// Failed for the last time (out of attempts, or a failure no retry can mend).
    Dead {
        error: String,
    },
}

/// Records the outcomes of attempts this worker ran (`(run, attempt number, outcome)`), in one
/// statement, and adds them to the rules' counters. An outcome for a run whose lease is no
/// longer this attempt's — it expired and another worker, or this one, took the run again —
/// changes nothing. Returns how many were recorded.
pub async fn finish(
    pool: &PgPool,
    tenant: &str,
    owner: &str,
    done: &[(i64, i32, Outcome)],
) -> Result<u64, sqlx::Error> {
    if done.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = done.iter().map(|(id, _, _)| *id).collect();
    let attempts: Vec<i32> = done.iter().map(|(_, a, _)| *a).collect();
    let states: Vec<&str> = done
        .iter()
        .map(|(_, _, o)| match o {
            Outcome::Succeeded => "succeeded",
            Outcome::Retry { .. } => "pending",
            Outcome::Dead { .. } => "dead",
        })
        .collect();
    let after: Vec<Option<DateTime<Utc>>> = done
        .iter()
        .map(|(_, _, o)| match o {
            Outcome::Retry { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    let errors: Vec<Option<String>> = done
        .iter()
        .map(|(_, _, o)| match o {
            Outcome::Succeeded => None,
            Outcome::Retry { error, .. } | Outcome::Dead { error } => Some(error.clone()),
        })
        .collect();
    let n: Option<i64> = sqlx::query_scalar(
        "WITH o AS (
            SELECT * FROM unnest($3::bigint[], $4::text[], $5::timestamptz[], $6::text[], $7::int[])
                AS o (id, state, run_after, error, attempt)
         ), upd AS (
            UPDATE automation_runs r
               SET state = o.state, run_after = COALESCE(o.run_after, r.run_after),
                   last_error = o.error, lease_owner = NULL, lease_until = NULL,
                   finished_at = CASE WHEN o.state = 'pending' THEN NULL ELSE now() END
              FROM o
             WHERE r.id = o.id AND r.lease_owner = $2 AND r.state = 'running' AND r.attempts = o.attempt
         RETURNING r.id, r.rule_uid, o.state, o.error
         ), stats AS (
            INSERT INTO automation_rule_stats AS s
                   (rule_uid, tenant, succeeded, failed, dead_lettered, last_run_at, last_error)
            SELECT rule_uid, $1,
                   count(*) FILTER (WHERE state = 'succeeded'),
                   count(*) FILTER (WHERE state = 'pending'),
                   count(*) FILTER (WHERE state = 'dead'),
                   now(),
                   (array_agg(error ORDER BY id DESC))[1]
              FROM upd GROUP BY rule_uid
            ON CONFLICT (rule_uid) DO UPDATE
               SET succeeded = s.succeeded + EXCLUDED.succeeded,
                   failed = s.failed + EXCLUDED.failed,
                   dead_lettered = s.dead_lettered + EXCLUDED.dead_lettered,
                   last_run_at = EXCLUDED.last_run_at,
                   last_error = EXCLUDED.last_error
         )
         SELECT count(*) FROM upd",
    )
    .bind(tenant)
    .bind(owner)
    .bind(ids)
    .bind(states)
    .bind(after)
    .bind(errors)
    .bind(attempts)
    .fetch_one(pool)
    .await?;
    Ok(n.unwrap_or(0) as u64)
}

/// Pending and running runs of every rule: `(rule uid, depth, oldest created)`.
pub async fn depths<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
) -> Result<Vec<(String, i64, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rule_uid, count(*), min(created_at) FROM automation_runs
          WHERE state IN ('pending', 'running') GROUP BY rule_uid",
    )
    .fetch_all(db)
    .await
}

/// A rule's counters.
#[derive(Clone, Debug, Default, PartialEq, sqlx::FromRow)]
pub struct Stats {
    pub rule_uid: String,
    pub succeeded: i64,
    pub failed: i64,
    pub dead_lettered: i64,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub async fn stats<'c, E: sqlx::PgExecutor<'c>>(db: E) -> Result<Vec<Stats>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rule_uid, succeeded, failed, dead_lettered, last_run_at, last_error
           FROM automation_rule_stats",
    )
    .fetch_all(db)
    .await
}

/// A run as `status.recentRuns` shows it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub rule_uid: String,
    pub trigger: String,
    pub state: String,
    pub attempts: i32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub conversation_id: Option<String>,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The newest `n` runs of every rule.
pub async fn recent<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    n: usize,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, rule_uid, trigger, state, attempts, scheduled_for,
                context #>> '{conversation,id}' AS conversation_id, idempotency_key,
                created_at, finished_at, last_error
           FROM (SELECT *, row_number() OVER (PARTITION BY rule_uid ORDER BY id DESC) AS n
                   FROM automation_runs) r
          WHERE n <= $1 ORDER BY rule_uid, id DESC",
    )
    .bind(n as i64)
    .fetch_all(db)
    .await
}

/// The runs of one rule, newest first (tests and tools).
pub async fn runs_of(pool: &PgPool, rule_uid: &str) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, rule_uid, trigger, state, attempts, scheduled_for,
                context #>> '{conversation,id}' AS conversation_id, idempotency_key,
                created_at, finished_at, last_error
           FROM automation_runs WHERE rule_uid = $1 ORDER BY id DESC",
    )
    .bind(rule_uid)
    .fetch_all(pool)
    .await
}

/// Moves run `id` of `rule_uid` out of state `from` with the assignments `set` (this
/// module's own SQL, never input): `Ok(Ok(()))` when it moved, else the state it is in
/// (`None`: the rule has no such run).
async fn transition<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    rule_uid: &str,
    id: i64,
    from: &str,
    set: &'static str,
) -> Result<Result<(), Option<String>>, sqlx::Error> {
    let sql = format!(
        "WITH upd AS (
            UPDATE automation_runs SET {set} WHERE id = $1 AND rule_uid = $2 AND state = $3 RETURNING id
         )
         SELECT EXISTS (SELECT 1 FROM upd),
                (SELECT state FROM automation_runs WHERE id = $1 AND rule_uid = $2)"
    );
    let (moved, state): (bool, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(rule_uid)
        .bind(from)
        .fetch_one(db)
        .await?;
    Ok(if moved { Ok(()) } else { Err(state) })
}

/// Queues a dead-lettered run of `rule_uid` again with fresh attempts (same idempotency key).
/// `Err` says why not.
pub async fn retry<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    rule_uid: &str,
    id: i64,
) -> Result<Result<(), String>, sqlx::Error> {
    let set = "state = 'pending', attempts = 0, run_after = now(), finished_at = NULL";
    Ok(transition(db, rule_uid, id, "dead", set)
        .await?
        .map_err(|state| match state {
            Some(s) => format!("run {id} is {s}, not dead-lettered"),
            None => format!("this rule has no run {id}"),
        }))
}

/// Cancels a pending run of `rule_uid`. `Err` says why not.
pub async fn cancel<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    rule_uid: &str,
    id: i64,
) -> Result<Result<(), String>, sqlx::Error> {
    let set =
        "state = 'cancelled', finished_at = now(), last_error = 'cancelled (xin.dev/cancel-run)'";
    Ok(transition(db, rule_uid, id, "pending", set)
        .await?
        .map_err(|state| match state {
            Some(s) => format!("run {id} is {s}; only a pending run can be cancelled"),
            None => format!("this rule has no run {id}"),
        }))
}

/// Forgets deleted rules (`uids`, from the watch's delete events): cancels their pending
/// runs, drops their schedules, counters and operations. Returns the runs cancelled.
pub async fn forget(pool: &PgPool, uids: &[String]) -> Result<u64, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE automation_runs SET state = 'cancelled', finished_at = now(),
                last_error = 'the AutomationRule was deleted'
          WHERE state = 'pending' AND rule_uid = ANY($1)",
    )
    .bind(uids)
    .execute(pool)
    .await?
    .rows_affected();
    for table in [
        "DELETE FROM automation_schedules WHERE rule_uid = ANY($1)",
        "DELETE FROM automation_rule_stats WHERE rule_uid = ANY($1)",
        "DELETE FROM automation_operations WHERE rule_uid = ANY($1)",
    ] {
        sqlx::query(table).bind(uids).execute(pool).await?;
    }
    Ok(n)
}

/// Cancels pending runs, queued more than an hour ago, of rules not in `known` (every rule the
/// namespace has): rules deleted while no worker watched. The hour keeps a replica whose
/// watch lags from cancelling the runs of a rule it has not seen yet.
pub async fn sweep_orphans(pool: &PgPool, known: &[String]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE automation_runs SET state = 'cancelled', finished_at = now(),
                last_error = 'the AutomationRule was deleted'
          WHERE state = 'pending' AND NOT (rule_uid = ANY($1))
            AND created_at < now() - interval '1 hour'",
    )
    .bind(known)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Deletes finished runs, and outbox events read, older than `hours`.
pub async fn purge(pool: &PgPool, hours: usize) -> Result<u64, sqlx::Error> {
    let runs = sqlx::query(
        "DELETE FROM automation_runs
          WHERE state IN ('succeeded', 'dead', 'cancelled')
            AND finished_at < now() - make_interval(hours => $1)",
    )
    .bind(hours as i32)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM outbox_events
          WHERE processed_at IS NOT NULL AND processed_at < now() - make_interval(hours => $1)",
    )
    .bind(hours as i32)
    .execute(pool)
    .await?;
    Ok(runs)
}
