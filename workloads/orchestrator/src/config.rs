//! Configuration from the environment the operator renders (`orchestrator_env` in
//! `operator/src/builders/tenant.rs`), parsed once at start. Every bad value is an error that
//! names its variable; nothing here panics.

use std::time::Duration;

use clap::Parser;
use xin_runtime::args::{http_url, non_empty, positive, seconds};
use xin_runtime::outbound::{DEFAULT_SERVICE_CIDR, DestinationPolicy, OutboundArgs};

/// The command line / environment of `xin-orchestrator`. `Debug` redacts the secrets.
/// `Debug` shows every setting; the secrets are [`Redacted`].
#[derive(Parser, Clone, Debug)]
#[command(
    name = "xin-orchestrator",
    version,
    about = "The conversation API of one tenant: retrieval over its knowledge and answers through an LLM"
)]
pub struct Args {
    /// Tenant this orchestrator serves; every database session is scoped to it.
    #[arg(long, env = "XIN_TENANT", value_parser = non_empty("XIN_TENANT"))]
    pub tenant: String,
    /// Namespace of the tenant (informational; logged at start).
    #[arg(long, env = "XIN_NAMESPACE")]
    pub namespace: Option<String>,
    /// IANA time zone of the tenant (informational for now; timestamps are served in UTC).
    #[arg(long, env = "TENANT_TIME_ZONE", default_value = "UTC")]
    pub time_zone: String,
    /// Address of the API server.
    #[arg(long, env = "ORCHESTRATOR_HTTP_HOST", default_value = "0.0.0.0")]
    pub http_host: String,
    /// Port of the API server.
    #[arg(long, env = "ORCHESTRATOR_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Address of the metrics server (`/metrics`, `/health`).
    #[arg(long, env = "ORCHESTRATOR_METRICS_HOST", default_value = "0.0.0.0")]
    pub metrics_host: String,
    /// Port of the metrics server.
    #[arg(long, env = "ORCHESTRATOR_METRICS_PORT", default_value_t = 9101)]
    pub metrics_port: u16,
    /// PostgreSQL URL of the tenant's own database, as its runtime role: data rights only (the
    /// orchestrator refuses a role that can do more).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Redacted,
    /// Most connections in the database pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
    /// The tenant's signing key: every /v1 request must be signed with it (HMAC-SHA256).
    #[arg(long, env = "TENANT_SIGNING_KEY", hide_env_values = true,
          value_parser = signing_key)]
    pub signing_key: Redacted,
    /// Weight of vector similarity against the lexical score (0 = lexical only, 1 = vector only).
    #[arg(long, env = "RETRIEVAL_HYBRID_WEIGHT", default_value_t = 0.5,
          value_parser = unit_interval("RETRIEVAL_HYBRID_WEIGHT"))]
    pub hybrid_weight: f64,
    /// Chunks whose combined score is below this are not used (0..1).
    #[arg(long, env = "RETRIEVAL_MIN_SCORE", default_value_t = 0.2,
          value_parser = unit_interval("RETRIEVAL_MIN_SCORE"))]
    pub min_score: f64,
    /// Most chunks put into one prompt.
    #[arg(long, env = "RETRIEVAL_MAX_DOCUMENTS", default_value_t = 5,
          value_parser = positive("RETRIEVAL_MAX_DOCUMENTS", 1000))]
    pub max_documents: usize,
    /// Most tokens of retrieved context in one prompt (sum of the chunks' token counts).
    #[arg(long, env = "RETRIEVAL_CONTEXT_BUDGET_TOKENS", default_value_t = 2000,
          value_parser = positive("RETRIEVAL_CONTEXT_BUDGET_TOKENS", 1_000_000))]
    pub context_budget_tokens: usize,
    /// Comma-separated visibilities of the chunks retrieval may use (`public`, `internal`).
    #[arg(long, env = "RETRIEVAL_VISIBILITY", default_value = "public",
          value_parser = visibility_list)]
    pub visibility: Visibilities,
    /// A writable directory where the embedding index is saved (after its first load and
    /// after changes) and restored from at start, so a restarted container catches up from
    /// the database instead of reading every embedding again. Unset: rebuilt at every start.
    #[arg(long, env = "RETRIEVAL_INDEX_DIR")]
    pub index_dir: Option<std::path::PathBuf>,
    /// Base URL of an OpenAI-compatible API; answers come from `<url>/v1/chat/completions`.
    /// Without it every answer is extractive.
    #[arg(long, env = "LLM_ENDPOINT", value_parser = http_url("LLM_ENDPOINT"))]
    pub llm_endpoint: Option<String>,
    /// Model asked first (required with LLM_ENDPOINT).
    #[arg(long, env = "LLM_MODEL")]
    pub llm_model: Option<String>,
    /// Model asked when the first one times out or fails.
    #[arg(long, env = "LLM_FALLBACK_MODEL")]
    pub llm_fallback_model: Option<String>,
    /// Seconds to wait for one completion (fractions allowed, e.g. 0.5).
    #[arg(long, env = "LLM_TIMEOUT_SECONDS", default_value = "10",
          value_parser = seconds("LLM_TIMEOUT_SECONDS"))]
    pub llm_timeout: Duration,
    /// API key sent to the LLM endpoint as a bearer token.
    #[arg(long, env = "LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<Redacted>,
    /// Base URL of an OpenAI-compatible embeddings API (`<url>/v1/embeddings`), used to embed
    /// questions for vector retrieval. Without it retrieval is lexical only.
    #[arg(long, env = "EMBEDDING_ENDPOINT", value_parser = http_url("EMBEDDING_ENDPOINT"))]
    pub embedding_endpoint: Option<String>,
    /// Embedding model (required with EMBEDDING_ENDPOINT); must be the one the knowledge was
    /// embedded with.
    #[arg(long, env = "EMBEDDING_MODEL")]
    pub embedding_model: Option<String>,
    /// API key sent to the embedding endpoint as a bearer token.
    #[arg(long, env = "EMBEDDING_API_KEY", hide_env_values = true)]
    pub embedding_api_key: Option<Redacted>,
    /// Dimensions asked of the embedding model (models that can shorten their vectors); must
    /// match what the knowledge was embedded with (the operator renders the Tenant's to both).
    #[arg(long, env = "EMBEDDING_DIMENSIONS",
          value_parser = positive("EMBEDDING_DIMENSIONS", 8192))]
    pub embedding_dimensions: Option<usize>,
    /// Seconds to wait for a question's embedding before answering from lexical retrieval.
    #[arg(long, env = "EMBEDDING_TIMEOUT_SECONDS", default_value = "2",
          value_parser = seconds("EMBEDDING_TIMEOUT_SECONDS"))]
    pub embedding_timeout: Duration,
    /// Seconds between refreshes of the in-memory embedding index (new and changed chunks).
    #[arg(long, env = "EMBEDDING_REFRESH_SECONDS", default_value = "5",
          value_parser = seconds("EMBEDDING_REFRESH_SECONDS"))]
    pub embedding_refresh: Duration,
    /// Seconds between two readings of the outbox's backlog (`orchestrator_outbox_*` gauges).
    #[arg(long, env = "ORCHESTRATOR_BACKLOG_REPORT_SECONDS", default_value = "15",
          value_parser = seconds("ORCHESTRATOR_BACKLOG_REPORT_SECONDS"))]
    pub backlog_report: Duration,
    /// Comma-separated words or phrases that ask for a person (whole words, any case).
    #[arg(long, env = "HANDOFF_KEYWORDS", default_value = "human,agent,operator")]
    pub handoff_keywords: String,
    /// Where LLM_ENDPOINT and EMBEDDING_ENDPOINT (the tenant's) may lead.
    #[command(flatten)]
    pub outbound: OutboundArgs,
}

/// A parsed `RETRIEVAL_VISIBILITY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visibilities(pub Vec<String>);

/// Where and how to call an OpenAI-compatible endpoint. `Debug` redacts the API key.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// Base URL without a trailing slash.
    pub endpoint: String,
    pub model: String,
    pub fallback_model: Option<String>,
    pub timeout: Duration,
    pub api_key: Option<Redacted>,
}

/// `Debug` redacts the API key.
#[derive(Clone, Debug)]
pub struct EmbeddingConfig {
    pub endpoint: String,
    pub model: String,
    /// `dimensions` in each request, when set.
    pub dimensions: Option<usize>,
    pub timeout: Duration,
    pub api_key: Option<Redacted>,
    pub refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct RetrievalConfig {
    pub hybrid_weight: f64,
    pub min_score: f64,
    pub max_documents: usize,
    pub context_budget_tokens: usize,
    pub visibility: Vec<String>,
    /// Where the embedding index is saved and restored from (`RETRIEVAL_INDEX_DIR`).
    pub index_dir: Option<std::path::PathBuf>,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            hybrid_weight: 0.5,
            min_score: 0.2,
            max_documents: 5,
            context_budget_tokens: 2000,
            visibility: vec!["public".into()],
            index_dir: None,
        }
    }
}

/// Everything the service needs, validated. `Debug` redacts the signing key.
#[derive(Clone)]
pub struct Config {
    pub tenant: String,
    pub signing_key: Vec<u8>,
    pub retrieval: RetrievalConfig,
    pub llm: Option<LlmConfig>,
    pub embedding: Option<EmbeddingConfig>,
    /// Each keyword as its lower-cased words.
    pub handoff_keywords: Vec<Vec<String>>,
    /// Messages of the conversation sent to the LLM before the question.
    pub history_messages: usize,
    /// Destinations the LLM and embedding endpoints may lead to.
    pub outbound: DestinationPolicy,
    /// Between two readings of the outbox's backlog.
    pub backlog_report: Duration,
}

use xin_runtime::{Redacted, redacted};

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("tenant", &self.tenant)
            .field("signing_key", &redacted(&self.signing_key))
            .field("retrieval", &self.retrieval)
            .field("llm", &self.llm)
            .field("embedding", &self.embedding)
            .field("handoff_keywords", &self.handoff_keywords)
            .field("history_messages", &self.history_messages)
            .field("outbound", &self.outbound)
            .field("backlog_report", &self.backlog_report)
            .finish()
    }
}

impl Config {
    /// Defaults for `tenant` and `signing_key`: no LLM (extractive answers), no embeddings,
    /// the default outbound policy (nothing allowed beyond it).
    pub fn new(tenant: impl Into<String>, signing_key: impl Into<Vec<u8>>) -> Self {
        Config {
            tenant: tenant.into(),
            signing_key: signing_key.into(),
            retrieval: RetrievalConfig::default(),
            llm: None,
            embedding: None,
            handoff_keywords: parse_keywords("human,agent,operator"),
            history_messages: 10,
            outbound: DestinationPolicy {
                service_ranges: DEFAULT_SERVICE_CIDR
                    .parse()
                    .expect("the default service range parses"),
                ..DestinationPolicy::default()
            },
            backlog_report: Duration::from_secs(15),
        }
    }
}

impl Visibilities {
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl Args {
    /// Cross-field validation; the error names the variables involved.
    pub fn into_config(self) -> Result<Config, String> {
        let llm = match (self.llm_endpoint, self.llm_model) {
            (Some(endpoint), Some(model)) if !model.trim().is_empty() => Some(LlmConfig {
                endpoint,
                model,
                fallback_model: self.llm_fallback_model.filter(|m| !m.trim().is_empty()),
                timeout: self.llm_timeout,
                api_key: self.llm_api_key.filter(|k| !k.0.is_empty()),
            }),
            (Some(_), _) => return Err("LLM_MODEL is required when LLM_ENDPOINT is set".into()),
            (None, _) => None,
        };
        let embedding = match (self.embedding_endpoint, self.embedding_model) {
            (Some(endpoint), Some(model)) if !model.trim().is_empty() => Some(EmbeddingConfig {
                endpoint,
                model,
                dimensions: self.embedding_dimensions,
                timeout: self.embedding_timeout,
                api_key: self.embedding_api_key.filter(|k| !k.0.is_empty()),
                refresh: self.embedding_refresh,
            }),
            (Some(_), _) => {
                return Err("EMBEDDING_MODEL is required when EMBEDDING_ENDPOINT is set".into());
            }
            (None, _) => None,
        };
        let handoff_keywords = parse_keywords(&self.handoff_keywords);
        Ok(Config {
            tenant: self.tenant,
            signing_key: self.signing_key.0.into_bytes(),
            retrieval: RetrievalConfig {
                hybrid_weight: self.hybrid_weight,
                min_score: self.min_score,
                max_documents: self.max_documents,
                context_budget_tokens: self.context_budget_tokens,
                visibility: self.visibility.0,
                index_dir: self.index_dir,
            },
            llm,
            embedding,
            handoff_keywords,
            history_messages: 10,
            outbound: self.outbound.policy(),
            backlog_report: self.backlog_report,
        })
    }
}

/// `"human, talk to a person"` → `[["human"], ["talk","to","a","person"]]`.
pub fn parse_keywords(s: &str) -> Vec<Vec<String>> {
    s.split(',')
        .map(crate::api::words_lower)
        .filter(|w| !w.is_empty())
        .collect()
}

/// The tenant signing key: at least 16 bytes, as the gateway requires too.
fn signing_key(s: &str) -> Result<Redacted, String> {
    if s.len() < 16 {
        return Err("TENANT_SIGNING_KEY must be at least 16 bytes".into());
    }
    Ok(Redacted(s.to_string()))
}

fn unit_interval(var: &'static str) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s| match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{var} must be between 0 and 1, got {v}")),
        Err(_) => Err(format!("{var} must be a number between 0 and 1, got {s:?}")),
    }
}

fn visibility_list(s: &str) -> Result<Visibilities, String> {
    let mut out: Vec<String> = Vec::new();
    for v in s.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        if !matches!(v, "public" | "internal") {
            return Err(format!(
                "RETRIEVAL_VISIBILITY takes public and/or internal (comma-separated), got {v:?}"
            ));
        }
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    if out.is_empty() {
        return Err("RETRIEVAL_VISIBILITY must name at least one visibility".into());
    }
    Ok(Visibilities(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        let mut argv = vec![
            "xin-orchestrator",
            "--tenant",
            "acme",
            "--database-url",
            "postgres://x@h/db",
            "--signing-key",
            "a-test-signing-key",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let args = Args::try_parse_from([
            "xin-orchestrator",
            "--tenant",
            "acme",
            "--database-url",
            "postgres://orch:db-pa55word@db/acme",
            "--signing-key",
            "signing-key-0123456789-s3cret",
            "--llm-endpoint",
            "http://llm:8000",
            "--llm-model",
            "m",
            "--llm-api-key",
            "sk-llm-k3y",
            "--embedding-endpoint",
            "http://emb:8000",
            "--embedding-model",
            "e",
            "--embedding-api-key",
            "sk-emb-k3y",
        ])
        .unwrap();
        let config = args.clone().into_config().unwrap();
        for shown in [
            format!("{args:?}"),
            format!("{args:#?}"),
            format!("{config:?}"),
            format!("{config:#?}"),
        ] {
            for secret in ["db-pa55word", "s3cret", "sk-llm-k3y", "sk-emb-k3y"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            // `{:#?}` spreads `Some(<redacted>)` over lines.
            let compact: String = shown.split_whitespace().collect();
            assert!(
                compact.contains("acme") && compact.contains("Some(<redacted>"),
                "{shown}"
            );
        }
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = parse(&[]).unwrap().into_config().unwrap();
        assert_eq!(c.retrieval.hybrid_weight, 0.5);
        assert_eq!(c.retrieval.min_score, 0.2);
        assert_eq!(c.retrieval.max_documents, 5);
        assert_eq!(c.retrieval.context_budget_tokens, 2000);
        assert_eq!(c.retrieval.visibility, vec!["public"]);
        assert!(c.llm.is_none() && c.embedding.is_none());
        assert_eq!(c.handoff_keywords.len(), 3);
        assert_eq!(c.signing_key, b"a-test-signing-key");
        assert_eq!(c.outbound, Config::new("acme", "k").outbound);
        assert!(c.outbound.allow.is_empty());
        assert_eq!(c.outbound.service_ranges.to_string(), "10.96.0.0/12");
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        for (flag, value, var) in [
            ("--hybrid-weight", "1.5", "RETRIEVAL_HYBRID_WEIGHT"),
            ("--hybrid-weight", "-0.1", "RETRIEVAL_HYBRID_WEIGHT"),
            ("--hybrid-weight", "half", "RETRIEVAL_HYBRID_WEIGHT"),
            ("--min-score", "2", "RETRIEVAL_MIN_SCORE"),
            ("--max-documents", "0", "RETRIEVAL_MAX_DOCUMENTS"),
            (
                "--context-budget-tokens",
                "-5",
                "RETRIEVAL_CONTEXT_BUDGET_TOKENS",
            ),
            ("--llm-timeout", "0", "LLM_TIMEOUT_SECONDS"),
            ("--llm-timeout", "NaN", "LLM_TIMEOUT_SECONDS"),
            ("--llm-endpoint", "ftp://x", "LLM_ENDPOINT"),
            ("--llm-endpoint", "not a url", "LLM_ENDPOINT"),
            ("--visibility", "secret", "RETRIEVAL_VISIBILITY"),
            ("--outbound-allow", "10.0.0.0/40", "XIN_OUTBOUND_ALLOW"),
            ("--service-cidr", "cluster", "XIN_SERVICE_CIDR"),
        ] {
            let e = parse(&[&format!("{flag}={value}")]).unwrap_err();
            assert!(e.contains(var), "{flag}={value}: {e}");
        }
        let e = parse(&["--llm-endpoint", "http://llm:8000/"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(e.contains("LLM_MODEL"), "{e}");
        let e = parse(&["--embedding-endpoint", "http://e"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(e.contains("EMBEDDING_MODEL"), "{e}");
    }

    #[test]
    fn fractional_timeouts_trailing_slashes_and_visibility_lists_are_accepted() {
        let c = parse(&[
            "--llm-endpoint",
            "http://llm:8000/",
            "--llm-model",
            "m",
            "--llm-timeout",
            "0.5",
            "--visibility",
            "public, internal,public",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        let llm = c.llm.unwrap();
        assert_eq!(llm.endpoint, "http://llm:8000");
        assert_eq!(llm.timeout, Duration::from_millis(500));
        assert_eq!(c.retrieval.visibility, vec!["public", "internal"]);
    }
}
