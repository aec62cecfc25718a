//! Claims due runs and runs them, at most `AUTOMATION_CONCURRENCY` at once; outcomes are
//! recorded in batches by one task (one statement for many runs). A run whose attempt fails is
//! retried after an exponential backoff with jitter within the rule's `retry`, then
//! dead-lettered with the last error; a failure no retry can mend is dead-lettered at once.
//! On shutdown nothing new is claimed, the attempts in flight finish and their outcomes are
//! recorded; a worker killed instead leaves its leases to expire (the runs are taken again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tracing::Instrument;
use xin_api::automation::AutomationRule;

use crate::Worker;
use crate::actions::{Failure, backoff, kind};
use crate::queue::{Claimed, Outcome, claim, finish};

/// How one attempt ended, for the recorder.
struct Done {
    id: i64,
    attempt: i32,
    outcome: Outcome,
    action: &'static str,
}

/// The outcome of an attempt under the rule's retry policy.
pub fn outcome(rule: &AutomationRule, attempt: i32, result: Result<(), Failure>) -> Outcome {
    match result {
        Ok(()) => Outcome::Succeeded,
        Err(Failure::Permanent(error)) => Outcome::Dead { error },
        Err(Failure::Retryable(error)) => {
            let r = &rule.spec.retry;
            if attempt >= r.max_attempts {
                Outcome::Dead {
                    error: format!("{error} (attempt {attempt} of {})", r.max_attempts),
                }
            } else {
                let d = backoff(attempt, r.backoff_seconds, r.max_backoff_seconds);
                Outcome::Retry {
                    at: chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or_default(),
                    error: format!("{error} (attempt {attempt} of {})", r.max_attempts),
                }
            }
        }
    }
}

/// Runs until `stop` turns true, then drains.
///
/// Claims go in full batches: besides the `AUTOMATION_CONCURRENCY` attempts running, one
/// batch may wait in the process for a free slot, and the next batch is claimed once a whole
/// batch has finished. (A waiting run waits at most for the attempts ahead of it, each bounded
/// by the action timeout; the lease is at least twice that.)
pub async fn run(w: Arc<Worker>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(w.settings.concurrency));
    let batch = w.settings.claim_batch.min(w.settings.concurrency);
    let capacity = w.settings.concurrency + batch;
    let held = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(Notify::new());
    let (tx, rx) = mpsc::unbounded_channel::<Done>();
    let recorder = tokio::spawn(record(w.clone(), rx));
    loop {
        if *stop.borrow() {
            break;
        }
        let room = capacity.saturating_sub(held.load(Ordering::SeqCst));
        if room < batch {
            tokio::select! {
                _ = freed.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let active = w.rules.active_uids();
        let claimed = match claim(&w.pool, &w.owner, &active, batch, w.settings.lease).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim runs; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(w.settings.poll) => {}
                _ = w.wake.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        held.fetch_add(claimed.len(), Ordering::SeqCst);
        for run in claimed {
            let (w, tx, permits) = (w.clone(), tx.clone(), permits.clone());
            let (held, freed) = (held.clone(), freed.clone());
            tokio::spawn(async move {
                if let Ok(_permit) = permits.acquire_owned().await {
                    let done = attempt(&w, run).await;
                    let _ = tx.send(done);
                }
                held.fetch_sub(1, Ordering::SeqCst);
                freed.notify_one();
            });
        }
    }
    // Drain: every claimed run has sent its outcome (or the lease is over).
    let drained = tokio::time::timeout(w.settings.lease, async {
        while held.load(Ordering::SeqCst) > 0 {
            freed.notified().await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "attempts still running at shutdown; their leases will expire and other workers take them"
        );
    }
    drop(tx);
    let _ = recorder.await;
}

/// One attempt, in a span with the run's ids.
async fn attempt(w: &Worker, run: Claimed) -> Done {
    let Some(rule) = w.rules.by_uid(&run.rule_uid) else {
        return Done {
            id: run.id,
            attempt: run.attempts,
            outcome: Outcome::Dead {
                error: "the AutomationRule was deleted".into(),
            },
            action: "webhook",
        };
    };
    let action = kind(&rule);
    let span = tracing::info_span!(
        "automation_run",
        tenant = %w.tenant,
        rule = %run.rule,
        run_id = run.id,
        correlation_id = %run.correlation_id,
        idempotency_key = %run.idempotency_key,
        trigger = %run.trigger,
        action,
        attempt = run.attempts,
    );
    async {
        let started = Instant::now();
        // The whole attempt (Secret reads, DNS, every address of a relay) within the action
        // timeout, so it never outlives its lease.
        let result =
            match tokio::time::timeout(w.settings.action_timeout, w.actions.run(&rule, &run)).await
            {
                Ok(r) => r,
                Err(_) => Err(Failure::Retryable(format!(
                    "timed out after {} s (AUTOMATION_ACTION_TIMEOUT_SECONDS)",
                    w.settings.action_timeout.as_secs()
                ))),
            };
        w.metrics
            .duration
            .get_or_create(&w.metrics.action(action))
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "run succeeded"
            ),
            Err(f) => tracing::warn!(error = %f.message(), "run attempt failed"),
        }
        Done {
            id: run.id,
            attempt: run.attempts,
            outcome: outcome(&rule, run.attempts, result),
            action,
        }
    }
    .instrument(span)
    .await
}

/// Records outcomes in batches: what arrives within 5 ms of the first, up to 1,000 at once.
async fn record(w: Arc<Worker>, mut rx: mpsc::UnboundedReceiver<Done>) {
    let mut batch: Vec<Done> = Vec::new();
    let mut failures_at_shutdown = 0;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(d) => batch.push(d),
                None => return,
            }
        }
        // Whatever else arrives within a few milliseconds joins the statement.
        let gather = tokio::time::Instant::now() + Duration::from_millis(5);
        while batch.len() < 1000 {
            match tokio::time::timeout_at(gather, rx.recv()).await {
                Ok(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        let rows: Vec<(i64, i32, Outcome)> = batch
            .iter()
            .map(|d| (d.id, d.attempt, d.outcome.clone()))
            .collect();
        match finish(&w.pool, &w.tenant, &w.owner, &rows).await {
            Ok(_) => {
                for d in batch.drain(..) {
                    let o = match d.outcome {
                        Outcome::Succeeded => "succeeded",
                        Outcome::Retry { .. } => "failed",
                        Outcome::Dead { .. } => "dead_lettered",
                    };
                    w.metrics
                        .runs
                        .get_or_create(&w.metrics.outcome(d.action, o))
                        .inc();
                    if o != "succeeded" {
                        w.metrics
                            .failures
                            .get_or_create(&w.metrics.action(d.action))
                            .inc();
                    }
                }
                w.wake.notify_one();
            }
            Err(e) => {
                // Kept and tried again; if the process ends first, the leases expire and the
                // runs are attempted again (at-least-once). At shutdown (the channel closed),
                // a few tries only: the process must exit.
                tracing::warn!(error = %e, runs = batch.len(), "cannot record run outcomes; retrying");
                if rx.is_closed() {
                    failures_at_shutdown += 1;
                    if failures_at_shutdown >= 5 {
                        tracing::warn!(
                            runs = batch.len(),
                            "outcomes not recorded at shutdown; the runs will be attempted again"
                        );
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
