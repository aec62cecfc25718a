//! Chunk embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (the tenant's, through
//! the outbound client): batches of `EMBEDDING_BATCH_SIZE` inputs, `EMBEDDING_CONCURRENCY`
//! requests in flight, and every throttled or failed request (429, 408, 5xx, timeouts,
//! connection errors) retried with exponential backoff and full jitter, honouring a
//! `Retry-After` of up to 60 s, at most `EMBEDDING_MAX_ATTEMPTS` times. A batch either comes
//! back whole (one vector per input, in order, all of one dimension) or fails the run: no
//! chunk is written with a missing or a partial vector.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use xin_runtime::outbound::{Limits, Outbound, OutboundError};

use crate::config::EmbeddingConfig;
use crate::metrics::Metrics;

/// Why embedding failed; the run fails and the Job retries it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding endpoint refused the request: HTTP {0}")]
    Refused(u16),
    #[error("the embedding endpoint failed {attempts} times; last: {last}")]
    Exhausted { attempts: usize, last: String },
    #[error("the embedding endpoint's answer is unusable: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    NotAllowed(String),
}

pub struct Embedder {
    http: Outbound,
    config: EmbeddingConfig,
    retry_base: Duration,
    metrics: Metrics,
}

enum Attempt {
    Retry {
        why: String,
        after: Option<Duration>,
    },
    Fail(EmbedError),
}

impl Embedder {
    pub fn new(
        outbound: &Outbound,
        config: EmbeddingConfig,
        retry_base: Duration,
        metrics: Metrics,
    ) -> Self {
        let http = outbound.with_limits(Limits {
            timeout: config.timeout,
            // A batch of 2048 vectors of 8192 floats as JSON text.
            max_response_bytes: 256 << 20,
            max_redirects: 0,
        });
        Embedder {
            http,
            config,
            retry_base,
            metrics,
        }
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The dimensions asked of the model, when asked.
    pub fn dimensions(&self) -> Option<usize> {
        self.config.dimensions
    }

    /// One vector per text, in order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batches: Vec<&[String]> = texts.chunks(self.config.batch_size).collect();
        let results: Vec<Vec<Vec<f32>>> = futures::stream::iter(batches)
            .map(|b| self.batch(b))
            .buffered(self.config.concurrency)
            .try_collect()
            .await?;
        let vectors: Vec<Vec<f32>> = results.into_iter().flatten().collect();
        if let Some(first) = vectors.first()
            && vectors.iter().any(|v| v.len() != first.len())
        {
            return Err(EmbedError::BadAnswer(
                "vectors of different dimensions in one run".into(),
            ));
        }
        Ok(vectors)
    }

    async fn batch(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.once(inputs).await {
                Ok(v) => {
                    self.metrics.embedding_request("ok");
                    return Ok(v);
                }
                Err(Attempt::Fail(e)) => {
                    self.metrics.embedding_request("failed");
                    return Err(e);
                }
                Err(Attempt::Retry { why, after }) => {
                    self.metrics.embedding_request("retried");
                    if attempt >= self.config.max_attempts {
                        return Err(EmbedError::Exhausted {
                            attempts: attempt,
                            last: why,
                        });
                    }
                    let wait = after.unwrap_or_else(|| backoff(self.retry_base, attempt));
                    tracing::warn!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        reason = %why,
                        "embedding request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn once(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, Attempt> {
        let mut body = serde_json::json!({"model": self.config.model, "input": inputs});
        if let Some(d) = self.config.dimensions {
            body["dimensions"] = d.into();
        }
        let mut req = self.http.post(&self.config.url).json(&body);
        if let Some(k) = &self.config.api_key {
            req = req.bearer_auth(k.expose());
        }
        let resp = match self.http.send(req).await {
            Ok(r) => r,
            Err(e @ OutboundError::DestinationNotAllowed { .. }) => {
                return Err(Attempt::Fail(EmbedError::NotAllowed(e.to_string())));
            }
            Err(
                e
                @ (OutboundError::Timeout | OutboundError::Connect(_) | OutboundError::Request(_)),
            ) => {
                return Err(Attempt::Retry {
                    why: e.to_string(),
                    after: None,
                });
            }
            Err(e) => return Err(Attempt::Fail(EmbedError::BadAnswer(e.to_string()))),
        };
        let status = resp.status.as_u16();
        if status == 429 || status == 408 || resp.status.is_server_error() {
            let after = resp
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(60)));
            return Err(Attempt::Retry {
                why: format!("HTTP {status}"),
                after,
            });
        }
        if !resp.status.is_success() {
            return Err(Attempt::Fail(EmbedError::Refused(status)));
        }
        parse(&resp.body, inputs.len(), self.config.dimensions)
            .map_err(|e| Attempt::Fail(EmbedError::BadAnswer(e)))
    }
}

/// Exponential backoff with jitter: a random wait in [d/2, d], d = base · 2^(n−1), at
/// most 30 s.
pub fn backoff(base: Duration, attempt: usize) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16) as u32);
    let d = exp.min(Duration::from_secs(30));
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// The vectors of an answer, ordered by `index`; one per input, finite, of one dimension
/// (the asked one, when asked).
fn parse(body: &[u8], n: usize, dimensions: Option<usize>) -> Result<Vec<Vec<f32>>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        index: Option<usize>,
        embedding: Vec<f32>,
    }
    #[derive(serde::Deserialize)]
    struct Resp {
        data: Vec<Item>,
    }
    let r: Resp =
        serde_json::from_slice(body).map_err(|e| format!("not JSON of the expected shape: {e}"))?;
    if r.data.len() != n {
        return Err(format!("{} vectors for {n} inputs", r.data.len()));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    for (pos, item) in r.data.into_iter().enumerate() {
        let i = item.index.unwrap_or(pos);
        if i >= n || out[i].is_some() {
            return Err(format!("index {i} out of range or repeated"));
        }
        if item.embedding.is_empty() || item.embedding.iter().any(|x| !x.is_finite()) {
            return Err(format!("vector {i} is empty or not finite"));
        }
        out[i] = Some(item.embedding);
    }
    let out: Vec<Vec<f32>> = out.into_iter().map(|v| v.unwrap_or_default()).collect();
    let dim = out[0].len();
    if out.iter().any(|v| v.len() != dim) {
        return Err("vectors of different dimensions".into());
    }
    if let Some(d) = dimensions
        && d != dim
    {
        return Err(format!(
            "{dim} dimensions, {d} asked (EMBEDDING_DIMENSIONS)"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_ordered_by_index_and_checked() {
        let body =
            br#"{"data": [{"index": 1, "embedding": [0, 1]}, {"index": 0, "embedding": [1, 0]}]}"#;
        assert_eq!(
            parse(body, 2, None).unwrap(),
            vec![vec![1.0, 0.0], vec![0.0, 1.0]]
        );
        assert!(
            parse(body, 3, None)
                .unwrap_err()
                .contains("2 vectors for 3")
        );
        assert!(
            parse(body, 2, Some(3))
                .unwrap_err()
                .contains("EMBEDDING_DIMENSIONS")
        );
        let uneven = br#"{"data": [{"embedding": [0, 1]}, {"embedding": [1]}]}"#;
        assert!(parse(uneven, 2, None).is_err());
        let repeated =
            br#"{"data": [{"index": 0, "embedding": [0]}, {"index": 0, "embedding": [1]}]}"#;
        assert!(parse(repeated, 2, None).is_err());
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..30 {
            let d = backoff(base, attempt);
            let full = base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(30));
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }
}
