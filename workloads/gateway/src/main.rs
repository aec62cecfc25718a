//! `xin-gateway`: configuration from the environment the operator renders.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use xin_gateway::backlog::Backlog;
use xin_gateway::forward::{Forwarder, OutcomeLabels};
use xin_gateway::inbox::InboxSettings;
use xin_gateway::reply::ProviderApis;
use xin_gateway::routes::{self, RouteTable};
use xin_gateway::{Gateway, app};
use xin_runtime::{HttpMetrics, Redacted};

/// `Debug` shows every setting; the secrets (`DATABASE_URL`, `TENANT_SIGNING_KEY`) are
/// [`Redacted`].
#[derive(Parser, Debug)]
#[command(
    name = "xin-gateway",
    version,
    about = "Receives and verifies provider webhooks and widget messages for one tenant's channels, stores them durably, forwards them to the tenant's orchestrator and replies through the provider",
    after_help = "Tracing: OTEL_EXPORTER_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and OTEL_EXPORTER_HEADERS (comma-separated key=value; or OTEL_EXPORTER_OTLP_HEADERS). Logs: RUST_LOG (default info). See docs/gateway.md."
)]
struct Args {
    /// Tenant this gateway serves.
    #[arg(long, env = "XIN_TENANT")]
    tenant: String,
    /// Address of the webhook server.
    #[arg(long, env = "GATEWAY_HTTP_HOST", default_value = "0.0.0.0")]
    http_host: String,
    /// Port of the webhook server.
    #[arg(long, env = "GATEWAY_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// The routes file rendered by the operator (re-read when it changes).
    #[arg(
        long,
        env = "GATEWAY_ROUTES_FILE",
        default_value = "/etc/xin/routes/routes.json"
    )]
    routes_file: PathBuf,
    /// Address of the metrics server.
    #[arg(long, env = "GATEWAY_METRICS_HOST", default_value = "0.0.0.0")]
    metrics_host: String,
    /// Port of the metrics server.
    #[arg(long, env = "GATEWAY_METRICS_PORT", default_value_t = 9102)]
    metrics_port: u16,
    /// PostgreSQL URL of the tenant's own database (the inbox lives there), as its runtime
    /// role: data rights only (the gateway refuses a role that can do more).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Redacted,
    /// Base URL of the tenant's orchestrator.
    #[arg(long, env = "ORCHESTRATOR_URL")]
    orchestrator_url: String,
    /// The tenant signing key: signs calls to the orchestrator and widget sessions.
    #[arg(long, env = "TENANT_SIGNING_KEY", hide_env_values = true)]
    signing_key: Redacted,
    /// Telegram Bot API base URL.
    #[arg(
        long,
        env = "TELEGRAM_API_BASE",
        default_value = "https://api.telegram.org"
    )]
    telegram_api_base: String,
    /// Meta Graph API base URL (WhatsApp Cloud API and Instagram Send API), with version.
    #[arg(
        long,
        env = "META_GRAPH_API_BASE",
        default_value = "https://graph.facebook.com/v21.0"
    )]
    meta_graph_api_base: String,
    /// Lifetime of a widget session token, in seconds.
    #[arg(long, env = "WIDGET_SESSION_TTL_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(60..=86400))]
    widget_session_ttl_seconds: u64,
    /// Attempts to answer and reply to a message before it is set aside as failed.
    #[arg(long, env = "GATEWAY_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=100))]
    max_attempts: i32,
    /// How long to wait for the orchestrator's answer, in seconds: above its worst case (two
    /// LLM timeouts and retrieval), or a slow answer would be asked for twice.
    #[arg(long, env = "GATEWAY_ORCHESTRATOR_TIMEOUT_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=3600))]
    orchestrator_timeout_seconds: u64,
    /// How long a worker holds a message it is forwarding before another may take it, in
    /// seconds; renewed every third of it while the worker is busy with the message.
    #[arg(long, env = "GATEWAY_FORWARD_LEASE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    forward_lease_seconds: u64,
    /// Messages forwarded to the orchestrator at once, at most; new ones are leased as soon
    /// as one finishes.
    #[arg(long, env = "GATEWAY_FORWARD_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    forward_concurrency: u16,
    /// Seconds between two readings of the inbox's backlog (`gateway_inbox_*` gauges).
    #[arg(long, env = "GATEWAY_BACKLOG_REPORT_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    backlog_report_seconds: u64,
    /// How long a client may take to send a request's line and headers, in seconds (from the
    /// connection, or from the end of its previous request); then the connection is closed.
    #[arg(long, env = "GATEWAY_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    header_read_timeout_seconds: u64,
    /// How long a client may take to send a request's body, in seconds; then 408.
    #[arg(long, env = "GATEWAY_BODY_READ_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    body_read_timeout_seconds: u64,

    /// The most messages one inbox commit writes (group commit of concurrent accepts).
    #[arg(long, env = "GATEWAY_ACCEPT_BATCH_ROWS", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=4096))]
    accept_batch_rows: u16,

    /// How many inbox commits may be in flight at once (each holds a pooled connection).
    #[arg(long, env = "GATEWAY_ACCEPT_COMMITS_IN_FLIGHT", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    accept_commits_in_flight: u8,

    /// Proxies (addresses or CIDR ranges, separated by commas) whose `X-Forwarded-For` names
    /// the client, for the anonymous visitors' per-address limit; from no other peer is that
    /// header believed. Empty: the TCP peer is the client.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let _telemetry = xin_runtime::init_telemetry("xin-gateway");
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "xin-gateway stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if args.signing_key.0.len() < 16 {
        return Err("TENANT_SIGNING_KEY must be at least 16 bytes".into());
    }
    for (var, v) in [
        ("ORCHESTRATOR_URL", &args.orchestrator_url),
        ("TELEGRAM_API_BASE", &args.telegram_api_base),
        ("META_GRAPH_API_BASE", &args.meta_graph_api_base),
    ] {
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(format!(
                "{var} must be an http:// or https:// URL, got {v:?}"
            ));
        }
    }
    let trusted_proxies = xin_gateway::client::parse_trusted(&args.trusted_proxies)?;
    let (initial, bytes) = routes::load(&args.routes_file)?;
    let table = RouteTable::default();
    table.set(initial);
    let metrics = HttpMetrics::default();
    routes::watch(
        args.routes_file.clone(),
        table.clone(),
        bytes,
        Duration::from_secs(1),
        &metrics,
    );
    let pool = xin_store::connect(args.database_url.expose(), 16).await?;
    xin_store::check_runtime_role(&pool).await?;
    xin_store::check_schema(&pool).await?;
    let outcomes = Family::<OutcomeLabels, Counter>::default();
    metrics
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .register(
            "gateway_forwarded_messages",
            "Inbox messages handled by the forwarding worker, by outcome (replied, retry, failed, lease_lost)",
            outcomes.clone(),
        );
    let maddr: SocketAddr = format!("{}:{}", args.metrics_host, args.metrics_port)
        .parse()
        .map_err(|e| format!("GATEWAY_METRICS_HOST/PORT: {e}"))?;
    xin_runtime::serve_metrics(
        maddr,
        metrics.clone(),
        "GATEWAY_METRICS_HOST/GATEWAY_METRICS_PORT",
    )
    .await?;
    let addr: SocketAddr = format!("{}:{}", args.http_host, args.http_port)
        .parse()
        .map_err(|e| format!("GATEWAY_HTTP_HOST/PORT: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (GATEWAY_HTTP_HOST/PORT): {e}"))?;
    let mut gw = Gateway::new(
        args.tenant.clone(),
        table.clone(),
        pool.clone(),
        args.signing_key.0.clone().into_bytes(),
    )
    .with_inbox_settings(InboxSettings {
        max_batch_rows: usize::from(args.accept_batch_rows),
        commits_in_flight: usize::from(args.accept_commits_in_flight),
    });
    gw.widget_session_ttl = Duration::from_secs(args.widget_session_ttl_seconds);
    gw.trusted_proxies = Arc::new(trusted_proxies);
    let backlog = Backlog::register(&metrics, &gw.polls);
    gw.body_read_timeout = Duration::from_secs(args.body_read_timeout_seconds);
    let forwarder = Forwarder {
        pool,
        routes: table,
        client: xin_runtime::http_client(Duration::from_secs(args.orchestrator_timeout_seconds)),
        orchestrator: args.orchestrator_url,
        signing_key: Arc::new(args.signing_key.0.into_bytes()),
        apis: ProviderApis {
            telegram: args.telegram_api_base,
            meta: args.meta_graph_api_base,
        },
        wake: gw.wake.clone(),
        answered: gw.answered.clone(),
        lease: Duration::from_secs(args.forward_lease_seconds),
        max_attempts: args.max_attempts,
        concurrency: usize::from(args.forward_concurrency),
        outcomes,
        backlog: backlog.clone(),
    };
    let reporter = tokio::spawn(backlog.report(
        forwarder.pool.clone(),
        Duration::from_secs(args.backlog_report_seconds),
    ));
    let worker = tokio::spawn(forwarder.run());
    tracing::info!(%addr, metrics = %maddr, tenant = %args.tenant, "xin-gateway serving");
    let served = xin_gateway::serve(
        listener,
        app(gw, metrics),
        Duration::from_secs(args.header_read_timeout_seconds),
        xin_runtime::shutdown_signal(),
    )
    .await
    .map_err(|e| format!("server failed: {e}"));
    // A message being forwarded now keeps its lease and is taken again after a restart.
    worker.abort();
    reporter.abort();
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_database_password_or_the_signing_key() {
        let args = Args::try_parse_from([
            "xin-gateway",
            "--tenant",
            "acme",
            "--database-url",
            "postgres://gw:db-pa55word@db:5432/acme",
            "--orchestrator-url",
            "http://orchestrator:8080",
            "--signing-key",
            "signing-key-0123456789-s3cret",
        ])
        .unwrap();
        let shown = format!("{args:?} {args:#?}");
        assert!(
            !shown.contains("db-pa55word") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(
            shown.contains("acme") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
