//! The orchestrator's own metrics, registered into the service registry of
//! [`xin_runtime::HttpMetrics`] (served on the metrics port beside the HTTP metrics).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use xin_runtime::HttpMetrics;

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

    pub fn answered(&self, path: &str) {
        self.answers
            .get_or_create(&PathLabels {
                path: path.to_string(),
            })
            .inc();
    }
}
