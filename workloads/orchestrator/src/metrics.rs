//! The orchestrator's own metrics, registered into the service registry of
//! [`xin_runtime::HttpMetrics`] (served on the metrics port beside the HTTP metrics).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use sqlx::PgPool;
use std::sync::atomic::AtomicU64;
use xin_runtime::HttpMetrics;

/// `orchestrator_outbox_pending` counts at most this many events, and shows one more when
/// there are more.
pub const OUTBOX_COUNT_CAP: i64 = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmLabels {
    pub model: String,
    pub outcome: String,
}

#[derive(Clone)]
pub struct OrchestratorMetrics {
    /// `orchestrator_answers_total{path}`.
    pub answers: Family<PathLabels, Counter>,
    /// `orchestrator_llm_request_seconds{model,outcome}`.
    pub llm_seconds: Family<LlmLabels, Histogram>,
    /// `orchestrator_retrieval_seconds`.
    pub retrieval_seconds: Histogram,
    /// `orchestrator_outbox_pending`: events the automation worker has not read yet.
    pub outbox_pending: Gauge,
    /// `orchestrator_outbox_oldest_pending_age_seconds`.
    pub outbox_oldest: Gauge<f64, AtomicU64>,
    pub index_vectors: Gauge,
    pub index_bytes: Gauge,
}

impl OrchestratorMetrics {
    pub fn register(http: &HttpMetrics) -> Self {
        let m = OrchestratorMetrics {
            answers: Family::default(),
            llm_seconds: Family::new_with_constructor(|| {
                Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0])
            }),
            retrieval_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            outbox_pending: Gauge::default(),
            outbox_oldest: Gauge::default(),
            index_vectors: Gauge::default(),
            index_bytes: Gauge::default(),
        };
        let mut reg = http.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.register(
            "orchestrator_answers",
            "Answers by how they were produced (llm, fallback, extractive)",
            m.answers.clone(),
        );
        reg.register(
            "orchestrator_llm_request_seconds",
            "Duration of LLM completion requests by model and outcome",
            m.llm_seconds.clone(),
        );
        reg.register(
            "orchestrator_retrieval_seconds",
            "Duration of knowledge retrieval (question embedding included)",
            m.retrieval_seconds.clone(),
        );
        reg.register(
            "orchestrator_outbox_pending",
            "Conversation events in the outbox not yet read by the automation worker (counted up to 100,001)",
            m.outbox_pending.clone(),
        );
        reg.register(
            "orchestrator_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox event not yet read (0 when none)",
            m.outbox_oldest.clone(),
        );
        reg.register(
            "orchestrator_embedding_index_vectors",
            "Knowledge chunks in the embedding index (0 until its first load; without embeddings configured, always 0)",
            m.index_vectors.clone(),
        );
        reg.register(
            "orchestrator_embedding_index_bytes",
            "Bytes the embedding index holds (int8 vectors and the HNSW graph), as the index reports them",
            m.index_bytes.clone(),
        );
        drop(reg);
        m
    }

    pub fn observe_llm(&self, model: &str, outcome: &str, d: Duration) {
        self.llm_seconds
            .get_or_create(&LlmLabels {
                model: model.to_string(),
                outcome: outcome.to_string(),
            })
            .observe(d.as_secs_f64());
    }

    /// Reads `tenant`'s outbox backlog once into the gauges, on the partial index of unread
    /// events: the oldest is the first entry, and the count stops at
    /// [`OUTBOX_COUNT_CAP`] + 1 (a tenant without AutomationRules has nothing reading its
    /// outbox, and its backlog is every event it ever had).
    pub async fn refresh_outbox(&self, pool: &PgPool, tenant: &str) -> Result<(), sqlx::Error> {
        let (pending, oldest): (i64, f64) = sqlx::query_as(
            "SELECT
               (SELECT count(*) FROM (SELECT 1 FROM outbox_events
                  WHERE tenant = $1 AND processed_at IS NULL LIMIT $2) waiting),
               COALESCE((SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 FROM outbox_events
                  WHERE tenant = $1 AND processed_at IS NULL ORDER BY id LIMIT 1), 0)",
        )
        .bind(tenant)
        .bind(OUTBOX_COUNT_CAP + 1)
        .fetch_one(pool)
        .await?;
        self.outbox_pending.set(pending);
        self.outbox_oldest.set(oldest.max(0.0));
        Ok(())
    }

    /// Refreshes the outbox gauges every `every`, for as long as the runtime runs; a failed
    /// read is logged once per run of failures and the gauges keep their last values.
    pub fn spawn_outbox_reporter(&self, pool: PgPool, tenant: String, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match me.refresh_outbox(&pool, &tenant).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the outbox's backlog; the gauges keep their last values");
                    }
                    Err(_) => {}
                }
            }
        });
    }

    pub fn answered(&self, path: &str) {
        self.answers
            .get_or_create(&PathLabels {
                path: path.to_string(),
            })
            .inc();
    }
}
