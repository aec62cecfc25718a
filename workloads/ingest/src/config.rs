//! Configuration from the environment the operator renders for the Job
//! (`build_ingestion_job` in `operator/src/builders/ingestion.rs`), parsed once at start. Every
//! bad value is an error that names its variable; nothing here panics.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use xin_api::ingestion::IngestionJobSpec;
use xin_runtime::Redacted;
use xin_runtime::args::{http_url, non_empty, positive, seconds};
use xin_runtime::outbound::OutboundArgs;

/// The command line / environment of `xin-ingest`. `Debug` shows every setting; the secrets
/// are [`Redacted`].
#[derive(Parser, Clone, Debug)]
#[command(
    name = "xin-ingest",
    version,
    about = "Runs one IngestionJob into the tenant's knowledge store, then exits"
)]
pub struct Args {
    /// Tenant whose knowledge this writes.
    #[arg(long, env = "XIN_TENANT", value_parser = non_empty("XIN_TENANT"))]
    pub tenant: String,
    /// Namespace of the tenant and of the IngestionJob.
    #[arg(long, env = "XIN_NAMESPACE", value_parser = non_empty("XIN_NAMESPACE"))]
    pub namespace: String,
    /// Name of the IngestionJob: its status receives the worker's report.
    #[arg(long = "job", env = "INGEST_JOB_NAME", value_parser = non_empty("INGEST_JOB_NAME"))]
    pub job: String,
    /// UID of the IngestionJob: the worker reports to that object only (not to one deleted and
    /// re-created with the same name).
    #[arg(long = "job-uid", env = "INGEST_JOB_UID")]
    pub job_uid: Option<String>,
    /// The IngestionJob's spec as JSON (the operator renders it unless it is larger than
    /// 32 KiB; then, and when unset, the worker reads it from the IngestionJob).
    #[arg(long, env = "INGEST_SPEC", value_parser = spec)]
    pub spec: Option<IngestionJobSpec>,
    /// PostgreSQL URL of the tenant's own database, as its runtime role (data rights only).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Redacted,
    /// Address of the metrics server (`/metrics`, `/health`).
    #[arg(long, env = "INGEST_METRICS_HOST", default_value = "0.0.0.0")]
    pub metrics_host: String,
    /// Port of the metrics server.
    #[arg(long, env = "INGEST_METRICS_PORT", default_value_t = 9103)]
    pub metrics_port: u16,
    /// Seconds the metrics server stays up after the run (so a scrape sees the final figures).
    #[arg(long, env = "INGEST_METRICS_LINGER_SECONDS", default_value = "0",
          value_parser = seconds_or_zero("INGEST_METRICS_LINGER_SECONDS"))]
    pub metrics_linger: Duration,
    /// Documents read and parsed at once.
    #[arg(long, env = "INGEST_CONCURRENCY", default_value_t = 8,
          value_parser = positive("INGEST_CONCURRENCY", 256))]
    pub concurrency: usize,
    /// Largest document read, in bytes (a larger one fails with `TooLarge`).
    #[arg(long, env = "INGEST_MAX_DOCUMENT_BYTES", default_value_t = 16 << 20,
          value_parser = positive("INGEST_MAX_DOCUMENT_BYTES", 1 << 30))]
    pub max_document_bytes: usize,
    /// Most documents one IngestionJob may hold (objects under an S3 prefix, records of the
    /// JSONL files); more fails the run (`TooManyDocuments`) before anything is written.
    #[arg(long, env = "INGEST_MAX_DOCUMENTS", default_value_t = 100_000,
          value_parser = positive("INGEST_MAX_DOCUMENTS", 10_000_000))]
    pub max_documents: usize,
    /// Seconds one document fetch (URL, object) may take, redirects and body included.
    #[arg(long, env = "INGEST_FETCH_TIMEOUT_SECONDS", default_value = "60",
          value_parser = seconds("INGEST_FETCH_TIMEOUT_SECONDS"))]
    pub fetch_timeout: Duration,
    /// `Upsert` jobs commit every this many documents (progress survives a restart); a
    /// `Replace` commits once, at the end.
    #[arg(long, env = "INGEST_BATCH_DOCUMENTS", default_value_t = 1000,
          value_parser = positive("INGEST_BATCH_DOCUMENTS", 1_000_000))]
    pub batch_documents: usize,
    /// Directory of the URL source's headers Secret, one file per header (mounted by the
    /// operator).
    #[arg(long, env = "INGEST_HEADERS_DIR")]
    pub headers_dir: Option<PathBuf>,
    /// Access key of the S3 source (from its credentials Secret).
    #[arg(long, env = "INGEST_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<Redacted>,
    /// Secret key of the S3 source.
    #[arg(long, env = "INGEST_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Redacted>,
    /// Base URL of an OpenAI-compatible embeddings API (`<url>/v1/embeddings`); lexical only
    /// without.
    #[arg(long, env = "EMBEDDING_ENDPOINT", value_parser = http_url("EMBEDDING_ENDPOINT"))]
    pub embedding_endpoint: Option<String>,
    /// Embedding model (required with EMBEDDING_ENDPOINT): the orchestrator's.
    #[arg(long, env = "EMBEDDING_MODEL")]
    pub embedding_model: Option<String>,
    /// Dimensions asked of the model.
    #[arg(long, env = "EMBEDDING_DIMENSIONS",
          value_parser = positive("EMBEDDING_DIMENSIONS", 8192))]
    pub embedding_dimensions: Option<usize>,
    /// API key sent to the embedding endpoint as a bearer token.
    #[arg(long, env = "EMBEDDING_API_KEY", hide_env_values = true)]
    pub embedding_api_key: Option<Redacted>,
    /// Chunks per embedding request.
    #[arg(long, env = "EMBEDDING_BATCH_SIZE", default_value_t = 64,
          value_parser = positive("EMBEDDING_BATCH_SIZE", 2048))]
    pub embedding_batch_size: usize,
    /// Embedding requests in flight at once.
    #[arg(long, env = "EMBEDDING_CONCURRENCY", default_value_t = 4,
          value_parser = positive("EMBEDDING_CONCURRENCY", 64))]
    pub embedding_concurrency: usize,
    /// Attempts of one embedding request (429, 5xx, timeouts and connection errors are
    /// retried with exponential backoff and jitter, honouring `Retry-After`).
    #[arg(long, env = "EMBEDDING_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = positive("EMBEDDING_MAX_ATTEMPTS", 100))]
    pub embedding_max_attempts: usize,
    /// Seconds one embedding request may take.
    #[arg(long, env = "EMBEDDING_TIMEOUT_SECONDS", default_value = "60",
          value_parser = seconds("EMBEDDING_TIMEOUT_SECONDS"))]
    pub embedding_timeout: Duration,
    /// First backoff between attempts (embedding requests and database writes); doubled each
    /// time up to 30 s, with jitter.
    #[arg(long, env = "INGEST_RETRY_BASE_MILLISECONDS", default_value_t = 500,
          value_parser = positive("INGEST_RETRY_BASE_MILLISECONDS", 60_000))]
    pub retry_base_ms: usize,
    /// Where URL, S3 and embedding endpoints (the tenant's) may lead.
    #[command(flatten)]
    pub outbound: OutboundArgs,
}

/// The embedding endpoint, when one is configured. `Debug` redacts the key.
#[derive(Clone, Debug)]
pub struct EmbeddingConfig {
    pub url: String,
    pub model: String,
    pub dimensions: Option<usize>,
    pub api_key: Option<Redacted>,
    pub batch_size: usize,
    pub concurrency: usize,
    pub max_attempts: usize,
    pub timeout: Duration,
}

impl Args {
    /// The embedding settings; an endpoint without a model is an error.
    pub fn embedding(&self) -> Result<Option<EmbeddingConfig>, String> {
        match (&self.embedding_endpoint, &self.embedding_model) {
            (None, _) => Ok(None),
            (Some(_), None) => {
                Err("EMBEDDING_MODEL is required when EMBEDDING_ENDPOINT is set".into())
            }
            (Some(_), Some(m)) if m.trim().is_empty() => {
                Err("EMBEDDING_MODEL is required when EMBEDDING_ENDPOINT is set".into())
            }
            (Some(e), Some(m)) => Ok(Some(EmbeddingConfig {
                url: format!("{e}/v1/embeddings"),
                model: m.clone(),
                dimensions: self.embedding_dimensions,
                api_key: self.embedding_api_key.clone().filter(|k| !k.0.is_empty()),
                batch_size: self.embedding_batch_size,
                concurrency: self.embedding_concurrency,
                max_attempts: self.embedding_max_attempts,
                timeout: self.embedding_timeout,
            })),
        }
    }

    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.retry_base_ms as u64)
    }
}

fn spec(s: &str) -> Result<IngestionJobSpec, String> {
    serde_json::from_str(s).map_err(|e| format!("INGEST_SPEC is not an IngestionJob spec: {e}"))
}

fn seconds_or_zero(var: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{var} must be a number of seconds from 0 to 3600, got {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        let mut argv = vec![
            "xin-ingest",
            "--tenant",
            "acme",
            "--namespace",
            "xin-acme",
            "--job",
            "faq",
            "--database-url",
            "postgres://u:secret-password@db/x",
        ];
        if !extra.contains(&"--spec") {
            argv.extend(["--spec", r#"{"source": {"configMap": {"name": "faq"}}}"#]);
        }
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_the_spec_parse_and_secrets_stay_out_of_debug() {
        let a = parse(&["--embedding-api-key", "sk-very-secret"]).unwrap();
        assert_eq!(a.metrics_port, 9103);
        assert_eq!(a.spec.as_ref().unwrap().chunking.size, 800);
        assert!(a.embedding().unwrap().is_none());
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("secret-password") && !shown.contains("sk-very-secret"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (args, var) in [
            (vec!["--spec", "{}"], "INGEST_SPEC"),
            (vec!["--concurrency", "0"], "INGEST_CONCURRENCY"),
            (
                vec!["--embedding-endpoint", "ftp://x"],
                "EMBEDDING_ENDPOINT",
            ),
            (vec!["--fetch-timeout", "0"], "INGEST_FETCH_TIMEOUT_SECONDS"),
        ] {
            let e = parse(&args).unwrap_err();
            assert!(e.contains(var), "{args:?}: {e}");
        }
        let a = parse(&["--embedding-endpoint", "http://e/"]).unwrap();
        assert!(a.embedding().unwrap_err().contains("EMBEDDING_MODEL"));
        let a = parse(&[
            "--embedding-endpoint",
            "http://e/",
            "--embedding-model",
            "m",
        ])
        .unwrap();
        assert_eq!(
            a.embedding().unwrap().unwrap().url,
            "http://e/v1/embeddings"
        );
    }
}
