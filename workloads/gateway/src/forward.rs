//! The forwarding worker: takes accepted messages from the inbox, asks the tenant's
//! orchestrator for the answer and sends it through the provider.
//!
//! Nothing accepted is lost: a row is leased (`locked_until`) rather than held in a
//! transaction, so a gateway that dies mid-way leaves it to be taken again when the lease
//! ends. Each lease carries a random owner token (`lease_owner`): renewing it, recording a
//! failure, storing the answer and marking the row replied only succeed while the row still
//! carries the worker's token, so a worker that stalled past its lease (the row since taken by
//! another) stops instead of overwriting the new owner's work. The orchestrator is idempotent
//! on the provider's message id, so a retry gets the same answer without a second LLM call;
//! the answer is stored before the reply is sent, and the row is marked replied after. A crash
//! (or a lost lease) between sending and marking can send a reply twice (at-least-once);
//! nothing is ever dropped. Failures back off exponentially; after `max_attempts` the row is
//! marked failed (a dead letter, with `last_error`).
//!
//! Up to `concurrency` messages are forwarded at once; the worker leases new rows as soon as
//! slots free, not batch by batch. Every log line of a message's forwarding is in its
//! `forward` span, so it carries that message's correlation id.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;
use xin_runtime::signing;

use crate::reply::{self, ProviderApis};
use crate::routes::RouteTable;

/// Default of `GATEWAY_FORWARD_CONCURRENCY`.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Most rows leased in one statement.
const LEASE_BATCH: usize = 32;

/// What the worker needs.
#[derive(Clone)]
pub struct Forwarder {
    pub pool: PgPool,
    pub routes: RouteTable,
    pub client: reqwest::Client,
    /// Base URL of the tenant's orchestrator.
    pub orchestrator: String,
    pub signing_key: Arc<Vec<u8>>,
    pub apis: ProviderApis,
    /// Woken by the webhook handlers after an accept, so forwarding starts at once.
    pub wake: Arc<Notify>,
    /// Notified after an answer is stored (widget long polls wait on it).
    pub answered: Arc<Notify>,
    pub lease: Duration,
    pub max_attempts: i32,
    /// Messages forwarded at once, at most (`GATEWAY_FORWARD_CONCURRENCY`).
    pub concurrency: usize,
    pub outcomes: Family<OutcomeLabels, Counter>,
    /// Where a replied message's accept-to-reply time is recorded.
    pub backlog: crate::backlog::Backlog,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `replied`, `retry`, `failed` or `lease_lost`.
    pub outcome: String,
}

/// A row this worker holds a lease on (`lease_owner` is its token).
#[derive(sqlx::FromRow)]
pub struct Leased {
    pub id: i64,
    pub lease_owner: String,
    pub channel: String,
    pub provider_message_id: String,
    pub sender: String,
    pub text: String,
    pub correlation_id: String,
    pub trace_context: Option<String>,
    pub attempts: i32,
    pub answer: Option<String>,
}

/// Why forwarding a message stopped short of replying.
enum Stop {
    Failed(reply::SendError),
    /// Another worker holds the row now; the step that found it out.
    LeaseLost(&'static str),
}

impl From<reply::SendError> for Stop {
    fn from(e: reply::SendError) -> Self {
        Stop::Failed(e)
    }
}

impl Forwarder {
    /// Runs until the process ends (aborting it drops the messages in flight; their leases
    /// lapse and they are taken again).
    pub async fn run(self) {
        let concurrency = self.concurrency.max(1);
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let free = concurrency.saturating_sub(tasks.len());
            if free == 0 {
                tasks.join_next().await;
                continue;
            }
            let batch = match self.lease_batch(free.min(LEASE_BATCH) as i64).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the inbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                // Nothing to take now: wait for an accept here, a message finishing (its
                // user's next one may be free), or the poll that finds other replicas' accepts
                // and backoffs that end.
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
                continue;
            }
            // At most one message per end user (the lease query's NOT EXISTS): all in parallel.
            for row in batch {
                let me = self.clone();
                tasks.spawn(async move { me.handle(row).await });
            }
        }
    }

    /// Leases up to `n` pending rows, each with a new owner token.
    pub async fn lease_batch(&self, n: i64) -> Result<Vec<Leased>, sqlx::Error> {
        sqlx::query_as::<_, Leased>(
            "UPDATE gateway_inbox SET locked_until = now() + make_interval(secs => $2),
                                      lease_owner = gen_random_uuid()::text
             WHERE id IN (
               SELECT id FROM gateway_inbox i
               WHERE replied_at IS NULL AND failed_at IS NULL
                 AND (locked_until IS NULL OR locked_until < now())
                 -- one end user's messages strictly in order, across retries and replicas
                 AND NOT EXISTS (
                   SELECT 1 FROM gateway_inbox o
                   WHERE o.channel = i.channel AND o.sender = i.sender AND o.id < i.id
                     AND o.replied_at IS NULL AND o.failed_at IS NULL)
               ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, lease_owner, channel, provider_message_id, sender, text, correlation_id,
                       trace_context, attempts, answer",
        )
        .bind(n)
        .bind(self.lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map(|mut v| {
            v.sort_by_key(|r| r.id);
            v
        })
    }

    /// Extends the lease; `false` when the row is no longer this lease's.
    pub async fn renew(&self, row: &Leased) -> Result<bool, sqlx::Error> {
        self.renew_lease(row.id, &row.lease_owner).await
    }

    async fn renew_lease(&self, id: i64, owner: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE gateway_inbox SET locked_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(self.lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Stores the orchestrator's answer; `false` when the row is no longer this lease's.
    pub async fn store_answer(
        &self,
        row: &Leased,
        conversation: &str,
        answer: &str,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE gateway_inbox SET conversation_id = $3, answer = $4, answered_at = now()
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(row.id)
        .bind(&row.lease_owner)
        .bind(conversation)
        .bind(answer)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Marks the row replied and ends the lease: the seconds since the message was
    /// accepted, or `None` when the row is no longer this lease's (another worker owns it,
    /// and may send the reply again).
    pub async fn mark_replied(&self, row: &Leased) -> Result<Option<f64>, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE gateway_inbox SET replied_at = clock_timestamp(), locked_until = NULL
             WHERE id = $1 AND lease_owner = $2
             RETURNING EXTRACT(EPOCH FROM clock_timestamp() - received_at)::float8",
        )
        .bind(row.id)
        .bind(&row.lease_owner)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records a failed attempt: retried after `backoff` seconds, or set aside when
    /// `give_up`; `false` when the row is no longer this lease's.
    pub async fn record_failure(
        &self,
        row: &Leased,
        error: &str,
        give_up: bool,
        backoff: f64,
    ) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE gateway_inbox SET attempts = attempts + 1, last_error = $3,
               locked_until = CASE WHEN $4 THEN NULL ELSE now() + make_interval(secs => $5) END,
               failed_at = CASE WHEN $4 THEN now() END
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(row.id)
        .bind(&row.lease_owner)
        .bind(error)
        .bind(give_up)
        .bind(backoff)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Forwards one leased row, every log line in its `forward` span.
    async fn handle(&self, row: Leased) {
        let span = tracing::info_span!("forward", correlation_id = %row.correlation_id, channel = %row.channel, inbox_id = row.id);
        if let Some(tp) = &row.trace_context {
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(tp) {
                h.insert("traceparent", v);
                xin_runtime::continue_trace(&span, &h);
            }
        }
        self.forward(row).instrument(span).await;
    }

    async fn forward(&self, row: Leased) {
        // Keep the lease while working on the row (the orchestrator may wait on a slow LLM);
        // only a worker that died lets it lapse. The heartbeat ends when the lease is lost.
        let mut heartbeat = tokio::spawn(
            {
                let me = self.clone();
                let (id, owner) = (row.id, row.lease_owner.clone());
                async move { me.heartbeat(id, owner).await }
            }
            .instrument(tracing::Span::current()),
        );
        let result = tokio::select! {
            r = self.deliver(&row) => r,
            _ = &mut heartbeat => Err(Stop::LeaseLost("renewing the lease")),
        };
        heartbeat.abort();
        let outcome = match result {
            Ok(()) => "replied",
            Err(Stop::LeaseLost(step)) => {
                tracing::warn!(
                    step,
                    "lost the lease on this message to another worker; stopping without replying \
                     further (if the reply was already sent, the new owner may send it again)"
                );
                "lease_lost"
            }
            Err(Stop::Failed(e)) => {
                let give_up = !e.retry || row.attempts + 1 >= self.max_attempts;
                let backoff = backoff_seconds(row.attempts);
                match self
                    .record_failure(&row, &e.message, give_up, backoff)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(error = %e.message, "forwarding failed, and the lease is lost to another worker; not recording it");
                        return self.count("lease_lost");
                    }
                    Err(db) => {
                        tracing::warn!(error = %db, "cannot record a forwarding failure; the lease will expire")
                    }
                }
                if give_up {
                    tracing::error!(error = %e.message, attempts = row.attempts + 1, "giving up on a message (dead letter)");
                    "failed"
                } else {
                    tracing::warn!(error = %e.message, attempts = row.attempts + 1, retry_in_s = backoff, "forwarding failed; will retry");
                    "retry"
                }
            }
        };
        self.count(outcome);
    }

    fn count(&self, outcome: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Renews the lease every third of it; returns once the row is no longer this lease's.
    async fn heartbeat(&self, id: i64, owner: String) {
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match self.renew_lease(id, &owner).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease; trying again")
                }
            }
        }
    }

    async fn deliver(&self, row: &Leased) -> Result<(), Stop> {
        let route = self
            .routes
            .channel(&row.channel)
            .ok_or_else(|| reply::SendError {
                message: format!("channel {} is no longer in the routes", row.channel),
                retry: true,
            })?;
        let db = |what: &str, e: sqlx::Error| Stop::Failed(retry(format!("{what}: {e}")));
        let answer = match &row.answer {
            Some(a) => {
                // Answered by an earlier attempt: only the reply is left; still ours?
                if !self
                    .renew(row)
                    .await
                    .map_err(|e| db("cannot renew the lease", e))?
                {
                    return Err(Stop::LeaseLost("before sending the stored answer"));
                }
                a.clone()
            }
            None => {
                let (conversation, answer) = self.ask(row).await?;
                if !self
                    .store_answer(row, &conversation, &answer)
                    .await
                    .map_err(|e| db("cannot store the answer", e))?
                {
                    return Err(Stop::LeaseLost("storing the answer"));
                }
                self.answered.notify_waiters();
                answer
            }
        };
        reply::send(
            &self.client,
            &self.apis,
            &route,
            &row.sender,
            &answer,
            self.trace_headers(&row.correlation_id),
        )
        .await?;
        let Some(took) = self
            .mark_replied(row)
            .await
            .map_err(|e| db("cannot mark the message replied", e))?
        else {
            return Err(Stop::LeaseLost("marking the message replied"));
        };
        self.backlog.replied(&row.channel, took);
        tracing::info!("message answered and replied");
        Ok(())
    }

    fn trace_headers(&self, correlation_id: &str) -> reqwest::header::HeaderMap {
        let mut h = http::HeaderMap::new();
        xin_runtime::inject_trace(&mut h);
        if let Ok(v) = http::HeaderValue::from_str(correlation_id) {
            h.insert(xin_runtime::REQUEST_ID, v);
        }
        h
    }

    /// Posts the message to the user's open conversation (found or created by the
    /// orchestrator, in the same call); returns the conversation id and the answer.
    async fn ask(&self, row: &Leased) -> Result<(String, String), reply::SendError> {
        let answered = self
            .call(
                "/v1/messages",
                json!({
                    "channel": row.channel,
                    "external_user": row.sender,
                    "text": row.text,
                    "client_message_id": row.provider_message_id,
                }),
                &row.correlation_id,
            )
            .await?;
        let conv_id = answered
            .pointer("/conversation/id")
            .and_then(Value::as_str)
            .ok_or_else(|| retry("the orchestrator's answer has no conversation id".into()))?;
        let answer = answered
            .pointer("/answer/text")
            .and_then(Value::as_str)
            .ok_or_else(|| retry("the orchestrator's answer has no text".into()))?;
        Ok((conv_id.to_string(), answer.to_string()))
    }

    async fn call(
        &self,
        path: &str,
        body: Value,
        correlation_id: &str,
    ) -> Result<Value, reply::SendError> {
        let bytes = serde_json::to_vec(&body).expect("a JSON value serialises");
        let ts = signing::now();
        let sig = signing::sign(&self.signing_key, ts, "POST", path, &bytes);
        let resp = self
            .client
            .post(format!("{}{path}", self.orchestrator.trim_end_matches('/')))
            .headers(self.trace_headers(correlation_id))
            .header(signing::TIMESTAMP_HEADER, ts.to_string())
            .header(signing::SIGNATURE_HEADER, sig)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .send()
            .await
            .map_err(|e| retry(format!("orchestrator unreachable: {}", e.without_url())))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let detail: String = text.chars().take(300).collect();
            // A message the orchestrator refuses as invalid will be refused again; anything
            // else (auth during a key change, a closed conversation, overload) may pass later.
            return Err(reply::SendError {
                message: format!("orchestrator answered {status} on {path}: {detail}"),
                retry: !matches!(status.as_u16(), 400 | 413 | 422),
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| retry(format!("orchestrator answer is not JSON: {e}")))
    }
}

fn retry(message: String) -> reply::SendError {
    reply::SendError {
        message,
        retry: true,
    }
}

/// How long a message waits before its next attempt after `attempts` earlier failures:
/// 1, 2, 4 … seconds, doubling up to 256 s (2⁸) and staying there.
fn backoff_seconds(attempts: i32) -> f64 {
    2f64.powi(attempts.clamp(0, 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_256_seconds() {
        let waits: Vec<f64> = (0..12).map(backoff_seconds).collect();
        assert_eq!(
            waits,
            [1., 2., 4., 8., 16., 32., 64., 128., 256., 256., 256., 256.]
        );
        assert_eq!(backoff_seconds(i32::MAX), 256.);
    }
}
