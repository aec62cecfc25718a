//! The worker's metrics (beside the shared HTTP ones and `xin_outbound_refused_total`), on
//! `INGEST_METRICS_HOST:INGEST_METRICS_PORT`. Labels are the tenant (one per process) and
//! fixed sets: outcomes and failure reasons, never a document name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::AtomicU64;
use xin_runtime::HttpMetrics;

use crate::pipeline::FAILURE_REASONS;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tenant {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    tenant: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    tenant: String,
    reason: String,
}

#[derive(Clone)]
pub struct Metrics {
    tenant: String,
    documents: Family<Outcome, Counter>,
    chunks: Family<Outcome, Counter>,
    failures: Family<Reason, Counter>,
    embedding_requests: Family<Outcome, Counter>,
    duration: Family<Outcome, Histogram>,
    lag: Family<Tenant, Gauge<f64, AtomicU64>>,
    oldest_unfinished: Family<Tenant, Gauge<f64, AtomicU64>>,
}

impl Metrics {
    /// Registers every metric into `http`'s registry, with each label value a rate or an
    /// alert needs already at 0.
    pub fn new(tenant: &str, http: &HttpMetrics) -> Self {
        let m = Metrics {
            tenant: tenant.to_string(),
            documents: Family::default(),
            chunks: Family::default(),
            failures: Family::default(),
            embedding_requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                ])
            }),
            lag: Family::default(),
            oldest_unfinished: Family::default(),
        };
        let mut reg = http.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.register(
            "xin_ingest_documents",
            "Documents handled, by outcome (ingested, failed)",
            m.documents.clone(),
        );
        reg.register(
            "xin_ingest_chunks",
            "Chunks written, by outcome (inserted, updated, unchanged, deleted)",
            m.chunks.clone(),
        );
        reg.register(
            "xin_ingest_failures",
            "Documents that failed, by reason",
            m.failures.clone(),
        );
        reg.register(
            "xin_ingest_embedding_requests",
            "Embedding requests, by outcome (ok, retried, failed)",
            m.embedding_requests.clone(),
        );
        reg.register(
            "xin_ingest_run_duration_seconds",
            "Duration of an ingestion run, by outcome (Succeeded, Failed, Error)",
            m.duration.clone(),
        );
        reg.register(
            "xin_ingest_lag_seconds",
            "From the IngestionJob's creation to the end of this run",
            m.lag.clone(),
        );
        reg.register(
            "xin_ingest_oldest_unfinished_job_age_seconds",
            "Age of the oldest IngestionJob of the namespace that has not finished",
            m.oldest_unfinished.clone(),
        );
        for o in ["ingested", "failed"] {
            let _ = m.documents.get_or_create(&m.outcome(o));
        }
        for o in ["inserted", "updated", "unchanged", "deleted"] {
            let _ = m.chunks.get_or_create(&m.outcome(o));
        }
        for r in FAILURE_REASONS {
            let _ = m.failures.get_or_create(&m.reason(r));
        }
        // At 0 without embeddings too, so a dashboard's rate shows 0, not "no data".
        for o in ["ok", "retried", "failed"] {
            let _ = m.embedding_requests.get_or_create(&m.outcome(o));
        }
        m
    }

    fn outcome(&self, o: &str) -> Outcome {
        Outcome {
            tenant: self.tenant.clone(),
            outcome: o.into(),
        }
    }

    fn reason(&self, r: &str) -> Reason {
        Reason {
            tenant: self.tenant.clone(),
            reason: r.into(),
        }
    }

    fn tenant(&self) -> Tenant {
        Tenant {
            tenant: self.tenant.clone(),
        }
    }

    pub fn documents(&self, outcome: &'static str, n: u64) {
        self.documents
            .get_or_create(&self.outcome(outcome))
            .inc_by(n);
    }

    pub fn chunks(&self, outcome: &'static str, n: u64) {
        self.chunks.get_or_create(&self.outcome(outcome)).inc_by(n);
    }

    /// `reason` is one of [`FAILURE_REASONS`].
    pub fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&self.reason(reason)).inc();
    }

    pub fn embedding_request(&self, outcome: &'static str) {
        self.embedding_requests
            .get_or_create(&self.outcome(outcome))
            .inc();
    }

    pub fn finished(&self, outcome: &'static str, seconds: f64, lag: Option<f64>) {
        self.duration
            .get_or_create(&self.outcome(outcome))
            .observe(seconds);
        if let Some(l) = lag {
            self.lag.get_or_create(&self.tenant()).set(l);
        }
    }

    pub fn oldest_unfinished(&self, seconds: f64) {
        self.oldest_unfinished
            .get_or_create(&self.tenant())
            .set(seconds);
    }
}
