//! Group commit of accepted messages into the inbox.
//!
//! Every accepted request (a provider webhook or a widget message) is written before it is
//! answered 200, so each one needs a durable commit. Committing each on its own makes the
//! server's log flush the limit (one `fsync` per request). Instead, requests hand their
//! messages to one committer task, which writes whatever has queued up meanwhile as one
//! statement in one commit and then answers each request with its own outcome:
//!
//! - a request is answered only after the commit that holds its rows (or that found them
//!   already there, a provider's retry);
//! - a batch holds at most [`InboxSettings::max_batch_rows`] messages (a request's messages
//!   are never split), and at most [`InboxSettings::commits_in_flight`] batches are being
//!   written at once; no timer holds a batch back: the wait is the commit in flight, so an
//!   idle gateway commits a lone request at once and a busy one gathers more per commit;
//! - a batch that fails fails only the requests in it (503, the caller retries); the next
//!   batch starts afresh.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::histogram::Histogram;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::providers::Inbound;

/// Limits of the group commit (`GATEWAY_ACCEPT_BATCH_ROWS`, `GATEWAY_ACCEPT_COMMITS_IN_FLIGHT`).
#[derive(Clone, Copy, Debug)]
pub struct InboxSettings {
    /// The most messages one commit writes (a request with more is written alone).
    pub max_batch_rows: usize,
    /// How many batches may be written at once, each on its own pooled connection.
    pub commits_in_flight: usize,
}

impl Default for InboxSettings {
    fn default() -> Self {
        InboxSettings {
            max_batch_rows: 256,
            commits_in_flight: 2,
        }
    }
}

/// Name of the histogram of messages per inbox commit.
pub const BATCH_MESSAGES: &str = "gateway_accept_batch_messages";

/// Buckets of [`BATCH_MESSAGES`]: 1 … 4,096 by powers of two.
fn batch_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 13,
    ))
}

/// Requests waiting for the committer before a request's own `send` waits (back pressure).
const QUEUE_REQUESTS: usize = 4096;

/// Why an accept failed: the caller answers 503 either way.
#[derive(Clone, Debug)]
pub enum AcceptError {
    /// The batch holding the request could not be written (logged once per batch).
    Write(Arc<sqlx::Error>),
    /// The committer task is gone (the runtime is shutting down).
    Stopped,
}

impl std::fmt::Display for AcceptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcceptError::Write(e) => write!(f, "the inbox write failed: {e}"),
            AcceptError::Stopped => f.write_str("the inbox committer stopped"),
        }
    }
}

struct Request {
    channel: String,
    messages: Vec<Inbound>,
    correlation_id: String,
    trace_context: Option<String>,
    done: oneshot::Sender<Result<u64, AcceptError>>,
}

/// The inbox writer of one gateway; cheap to clone. The committer task starts with the first
/// accept (inside the server's runtime).
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    queue: OnceLock<mpsc::Sender<Request>>,
}

/// What the committer task needs. It holds no sender of the queue, so the task ends when the
/// last [`Inbox`] clone is dropped.
#[derive(Clone)]
struct Writer {
    pool: PgPool,
    tenant: String,
    wake: Arc<Notify>,
    settings: InboxSettings,
    /// Messages per commit ([`BATCH_MESSAGES`]).
    batches: Histogram,
}

impl Inbox {
    pub fn new(pool: PgPool, tenant: String, wake: Arc<Notify>, settings: InboxSettings) -> Self {
        Inbox {
            inner: Arc::new(Inner {
                writer: Writer {
                    pool,
                    tenant,
                    wake,
                    settings: InboxSettings {
                        max_batch_rows: settings.max_batch_rows.max(1),
                        commits_in_flight: settings.commits_in_flight.max(1),
                    },
                    batches: batch_histogram(),
                },
                queue: OnceLock::new(),
            }),
        }
    }

    pub fn settings(&self) -> InboxSettings {
        self.inner.writer.settings
    }

    /// Requests handed over and waiting for a commit slot (not yet in a batch).
    pub fn queued(&self) -> usize {
        self.inner
            .queue
            .get()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }

    /// Messages per commit, one observation per commit tried ([`BATCH_MESSAGES`]).
    pub fn batch_sizes(&self) -> Histogram {
        self.inner.writer.batches.clone()
    }

    /// Writes `messages` of `channel` durably; a message already in the inbox (same channel and
    /// provider id) is skipped. Returns how many were new. Returns once the commit holding them
    /// is done.
    pub async fn accept(
        &self,
        channel: &str,
        messages: &[Inbound],
        correlation_id: &str,
        trace_context: Option<String>,
    ) -> Result<u64, AcceptError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let queue = self.inner.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
            tokio::spawn(commit_loop(self.inner.writer.clone(), rx));
            tx
        });
        let (done, answer) = oneshot::channel();
        queue
            .send(Request {
                channel: channel.to_string(),
                messages: messages.to_vec(),
                correlation_id: correlation_id.to_string(),
                trace_context,
                done,
            })
            .await
            .map_err(|_| AcceptError::Stopped)?;
        answer.await.unwrap_or(Err(AcceptError::Stopped))
    }
}

/// Takes a commit slot, then the first waiting request and every request queued behind it (up
/// to the row limit), and writes them in a task of their own while it gathers the next batch.
async fn commit_loop(inner: Writer, mut rx: mpsc::Receiver<Request>) {
    let slots = Arc::new(Semaphore::new(inner.settings.commits_in_flight));
    let mut held: Option<Request> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                // Every Inbox clone is gone: nothing more will come.
                None => return,
            },
        };
        let mut rows = first.messages.len();
        let mut batch = vec![first];
        while rows < inner.settings.max_batch_rows {
            match rx.try_recv() {
                Ok(r) if rows + r.messages.len() > inner.settings.max_batch_rows => {
                    held = Some(r);
                    break;
                }
                Ok(r) => {
                    rows += r.messages.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let outcome = write(&inner, &batch).await;
            drop(slot);
            inner.batches.observe(rows as f64);
            match outcome {
                Ok(new) => {
                    if new.iter().any(|n| *n > 0) {
                        inner.wake.notify_one();
                    }
                    for (r, n) in batch.into_iter().zip(new) {
                        let _ = r.done.send(Ok(n));
                    }
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        requests = batch.len(),
                        messages = rows,
                        "inbox write failed; the batch's requests are answered 503"
                    );
                    let e = AcceptError::Write(Arc::new(e));
                    for r in batch {
                        let _ = r.done.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// One statement, one commit: every message of the batch in arrival order (so inbox ids keep
/// it), duplicates skipped. Returns, per request, how many of its messages were new: a
/// message present twice in the batch counts for the first request that holds it.
async fn write(inner: &Writer, batch: &[Request]) -> Result<Vec<u64>, sqlx::Error> {
    let rows = batch.iter().map(|r| r.messages.len()).sum();
    let mut channels = Vec::with_capacity(rows);
    let mut ids = Vec::with_capacity(rows);
    let mut senders = Vec::with_capacity(rows);
    let mut texts = Vec::with_capacity(rows);
    let mut correlation = Vec::with_capacity(rows);
    let mut traces = Vec::with_capacity(rows);
    for r in batch {
        for m in &r.messages {
            channels.push(r.channel.as_str());
            ids.push(m.provider_message_id.as_str());
            senders.push(m.sender.as_str());
            texts.push(m.text.as_str());
            correlation.push(r.correlation_id.as_str());
            traces.push(r.trace_context.as_deref());
        }
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO gateway_inbox (tenant, channel, provider_message_id, sender, text, correlation_id, trace_context)
         SELECT $1, m.channel, m.id, m.sender, m.text, m.correlation_id, m.trace_context
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
              WITH ORDINALITY AS m(channel, id, sender, text, correlation_id, trace_context, n)
         ORDER BY m.n
         ON CONFLICT (tenant, channel, provider_message_id) DO NOTHING
         RETURNING channel, provider_message_id",
    )
    .bind(&inner.tenant)
    .bind(&channels)
    .bind(&ids)
    .bind(&senders)
    .bind(&texts)
    .bind(&correlation)
    .bind(&traces)
    .fetch_all(&inner.pool)
    .await?;
    Ok(new_per_request(batch, inserted))
}

fn new_per_request(batch: &[Request], inserted: Vec<(String, String)>) -> Vec<u64> {
    let mut unclaimed: HashSet<(&str, &str)> = inserted
        .iter()
        .map(|(c, id)| (c.as_str(), id.as_str()))
        .collect();
    batch
        .iter()
        .map(|r| {
            r.messages
                .iter()
                .filter(|m| unclaimed.remove(&(r.channel.as_str(), m.provider_message_id.as_str())))
                .count() as u64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(channel: &str, ids: &[&str]) -> Request {
        Request {
            channel: channel.into(),
            messages: ids
                .iter()
                .map(|id| Inbound {
                    provider_message_id: id.to_string(),
                    sender: "s".into(),
                    text: "t".into(),
                })
                .collect(),
            correlation_id: "c".into(),
            trace_context: None,
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn a_message_twice_in_a_batch_is_new_for_the_first_request_only() {
        let batch = [
            request("wa", &["1", "2"]),
            request("wa", &["2", "3"]),
            request("tg", &["1"]),
            request("wa", &["4"]),
        ];
        // "4" was already in the inbox (not returned).
        let inserted = [("wa", "1"), ("wa", "2"), ("wa", "3"), ("tg", "1")]
            .map(|(c, i)| (c.to_string(), i.to_string()))
            .to_vec();
        assert_eq!(new_per_request(&batch, inserted), [2, 1, 1, 0]);
    }
}
