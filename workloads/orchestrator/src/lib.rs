//! `xin-orchestrator`: the conversation service of one tenant (one Deployment per Tenant).
//! A signed JSON API for the gateway stores conversations and messages in PostgreSQL (scoped
//! to the tenant by row-level security), retrieves from the tenant's knowledge (hybrid
//! lexical + vector, bounded), answers through an OpenAI-compatible LLM with a timeout and a
//! fallback model — or extractively — and writes outbox events for the automation worker in
//! the same transaction as each change. See `docs/orchestrator.md`.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod db;
pub mod llm;
pub mod metrics;
pub mod retrieval;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use sqlx::PgPool;
use xin_runtime::HttpMetrics;
use xin_runtime::outbound::{Outbound, Verdict, redact_url};

pub use config::Config;
use llm::Llm;
use metrics::OrchestratorMetrics;
use retrieval::Retriever;

/// The service's state, shared by every request.
#[derive(Clone)]
pub struct Orchestrator(Arc<Inner>);

pub struct Inner {
    /// When the service was built (`/ready`'s grace for the embedding index).
    pub started: std::time::Instant,
    pub config: Config,
    pub pool: PgPool,
    pub retriever: Retriever,
    pub llm: Llm,
    pub metrics: OrchestratorMetrics,
}

impl Deref for Orchestrator {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Orchestrator {
    /// Builds the service on a tenant-scoped `pool` (`xin_store::connect`), registers its
    /// metrics into `http`'s registry, and — when embeddings are configured — loads the
    /// embedding index (restored from `RETRIEVAL_INDEX_DIR` when saved there) and keeps it
    /// fresh, in the background. A failed first load is logged and retried by the refresher;
    /// retrieval is lexical only until it succeeds.
    pub async fn new(config: Config, pool: PgPool, http: &HttpMetrics) -> Result<Self, String> {
        // The LLM and embedding endpoints are the tenant's: only the outbound client calls them.
        let client = Outbound::new(config.outbound.clone(), http)?;
        warn_refused_endpoints(&config, &client);
        let metrics = OrchestratorMetrics::register(http);
        metrics.spawn_outbox_reporter(pool.clone(), config.tenant.clone(), config.backlog_report);
        let retriever = Retriever::new(
            config.retrieval.clone(),
            config.embedding.as_ref(),
            client.clone(),
        );
        if let (Some(index), Some(e)) = (retriever.index(), &config.embedding) {
            // Loaded in the background: `/ready` waits for it (at most INDEX_READY_GRACE).
            let (vectors, bytes) = (metrics.index_vectors.clone(), metrics.index_bytes.clone());
            index.spawn_refresher(pool.clone(), e.refresh, move |index| {
                vectors.set(index.len() as i64);
                bytes.set(index.memory_usage() as i64);
            });
        }
        match retriever.refresh_term_stats(&pool).await {
            Ok(n) => tracing::info!(words = n, "word statistics loaded"),
            Err(e) => {
                tracing::warn!(error = %e, "word statistics not loaded yet; every word counts as rare until they are")
            }
        }
        retriever.spawn_term_stats_refresher(pool.clone(), retrieval::TERM_STATS_REFRESH);
        let llm = Llm::new(config.llm.clone(), client, metrics.clone());
        Ok(Orchestrator(Arc::new(Inner {
            started: std::time::Instant::now(),
            config,
            pool,
            retriever,
            llm,
            metrics,
        })))
    }
}

/// An endpoint the outbound policy refuses by its literal host is refused on every call
/// (and the answer degrades); say so once at start rather than only per message. Not a
/// startup error: the endpoint is the tenant's, and the rest of the service still works.
fn warn_refused_endpoints(config: &Config, client: &Outbound) {
    let endpoints = [
        ("LLM_ENDPOINT", config.llm.as_ref().map(|l| &l.endpoint)),
        (
            "EMBEDDING_ENDPOINT",
            config.embedding.as_ref().map(|e| &e.endpoint),
        ),
    ];
    for (var, endpoint) in endpoints {
        if let Some(Verdict::Refused(reason)) = endpoint.map(|e| client.policy().check_url(e)) {
            tracing::warn!(
                variable = var,
                reason = reason.as_str(),
                url = %redact_url(endpoint.map(String::as_str).unwrap_or_default()),
                "endpoint is not an allowed destination (XIN_OUTBOUND_ALLOW can allow it); every call to it is refused"
            );
        }
    }
}

/// The API (`/v1/...`, signed) and the probes, with correlation ids and HTTP metrics.
pub fn app(o: Orchestrator, metrics: HttpMetrics) -> Router {
    let v1 = Router::new()
        .route("/v1/messages", post(api::post_inbound_message))
        .route("/v1/conversations", post(api::create_conversation))
        .route("/v1/conversations/{id}", get(api::get_conversation))
        .route("/v1/conversations/{id}/messages", post(api::post_message))
        .route(
            "/v1/conversations/{id}/close",
            post(api::close_conversation),
        )
        .route("/v1/conversations/{id}/handoff", post(api::request_handoff))
        .route_layer(axum::middleware::from_fn_with_state(
            o.clone(),
            api::authenticate,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(api::ready))
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method)
        .with_state(o)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            xin_runtime::observe,
        ))
}
