//! The forwarding worker: takes accepted messages from the inbox, asks the tenant's
//! orchestrator for the answer and sends it through the provider.
//!
//! Nothing accepted is lost: a row is leased (`locked_until`) rather than held in a
//! transaction, so a gateway that dies mid-way leaves it to be taken again when the lease
//! ends. The orchestrator is idempotent on the provider's message id, so a retry gets the
//! same answer without a second LLM call; the answer is stored before the reply is sent, and
//! the row is marked replied after. A crash between sending and marking can send a reply
//! twice (at-least-once); nothing is ever dropped. Failures back off exponentially; after
//! `max_attempts` the row is marked failed (a dead letter, with `last_error`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::Instrument;
use xin_runtime::signing;

use crate::reply::{self, ProviderApis};
use crate::routes::RouteTable;

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
    pub outcomes: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `replied`, `retry` or `failed`.
    pub outcome: String,
}

#[derive(sqlx::FromRow, Debug)]
struct Row {
    id: i64,
    channel: String,
    provider_message_id: String,
    sender: String,
    text: String,
    correlation_id: String,
    trace_context: Option<String>,
    attempts: i32,
    answer: Option<String>,
}

impl Forwarder {
    /// Runs until the process ends.
    pub async fn run(self) {
        loop {
            let batch = match self.lease_batch(32).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the inbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                // Other replicas' accepts and backoffs that end are found by polling.
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
                continue;
            }
            // At most one message per end user (the lease query's NOT EXISTS): all in parallel.
            futures::future::join_all(batch.into_iter().map(|r| self.handle(r))).await;
        }
    }

    async fn lease_batch(&self, n: i64) -> Result<Vec<Row>, sqlx::Error> {
        sqlx::query_as::<_, Row>(
            "UPDATE gateway_inbox SET locked_until = now() + make_interval(secs => $2)
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
             RETURNING id, channel, provider_message_id, sender, text, correlation_id,
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

    async fn handle(&self, row: Row) {
        let span = tracing::info_span!("forward", correlation_id = %row.correlation_id, channel = %row.channel, inbox_id = row.id);
        if let Some(tp) = &row.trace_context {
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(tp) {
                h.insert("traceparent", v);
                xin_runtime::continue_trace(&span, &h);
            }
        }
        let id = row.id;
        let attempts = row.attempts;
        // Keep the lease while working on the row (the orchestrator may wait on a slow LLM);
        // only a worker that died lets it lapse.
        let heartbeat = {
            let (pool, lease) = (self.pool.clone(), self.lease);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let _ = sqlx::query(
                        "UPDATE gateway_inbox SET locked_until = now() + make_interval(secs => $2) WHERE id = $1",
                    )
                    .bind(id)
                    .bind(lease.as_secs_f64())
                    .execute(&pool)
                    .await;
                }
            })
        };
        let result = self.deliver(row).instrument(span.clone()).await;
        heartbeat.abort();
        let _enter = span.enter();
        let outcome = match result {
            Ok(()) => "replied",
            Err(e) => {
                let give_up = !e.retry || attempts + 1 >= self.max_attempts;
                let backoff = backoff_seconds(attempts);
                let res = sqlx::query(
                    "UPDATE gateway_inbox SET attempts = attempts + 1, last_error = $2,
                       locked_until = CASE WHEN $3 THEN NULL ELSE now() + make_interval(secs => $4) END,
                       failed_at = CASE WHEN $3 THEN now() END
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&e.message)
                .bind(give_up)
                .bind(backoff)
                .execute(&self.pool)
                .await;
                if let Err(db) = res {
                    tracing::warn!(error = %db, "cannot record a forwarding failure; the lease will expire");
                }
                if give_up {
                    tracing::error!(error = %e.message, attempts = attempts + 1, "giving up on a message (dead letter)");
                    "failed"
                } else {
                    tracing::warn!(error = %e.message, attempts = attempts + 1, retry_in_s = backoff, "forwarding failed; will retry");
                    "retry"
                }
            }
        };
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    async fn deliver(&self, row: Row) -> Result<(), reply::SendError> {
        let route = self
            .routes
            .channel(&row.channel)
            .ok_or_else(|| reply::SendError {
                message: format!("channel {} is no longer in the routes", row.channel),
                retry: true,
            })?;
        let answer = match row.answer {
            Some(a) => a,
            None => {
                let (conversation, answer) = self.ask(&row).await?;
                sqlx::query(
                    "UPDATE gateway_inbox SET conversation_id = $2, answer = $3, answered_at = now() WHERE id = $1",
                )
                .bind(row.id)
                .bind(&conversation)
                .bind(&answer)
                .execute(&self.pool)
                .await
                .map_err(|e| retry(format!("cannot store the answer: {e}")))?;
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
        sqlx::query(
            "UPDATE gateway_inbox SET replied_at = now(), locked_until = NULL WHERE id = $1",
        )
        .bind(row.id)
        .execute(&self.pool)
        .await
        .map_err(|e| retry(format!("cannot mark the message replied: {e}")))?;
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

    /// Finds or creates the user's conversation and posts the message; returns the
    /// conversation id and the answer.
    async fn ask(&self, row: &Row) -> Result<(String, String), reply::SendError> {
        let conv = self
            .call(
                "/v1/conversations",
                json!({"channel": row.channel, "external_user": row.sender}),
                &row.correlation_id,
            )
            .await?;
        let conv_id = conv["id"]
            .as_str()
            .ok_or_else(|| retry("the orchestrator's conversation has no id".into()))?
            .to_string();
        let msg = self
            .call(
                &format!("/v1/conversations/{conv_id}/messages"),
                json!({"text": row.text, "client_message_id": row.provider_message_id}),
                &row.correlation_id,
            )
            .await?;
        let answer = msg
            .pointer("/answer/text")
            .and_then(Value::as_str)
            .ok_or_else(|| retry("the orchestrator's answer has no text".into()))?;
        Ok((conv_id, answer.to_string()))
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
