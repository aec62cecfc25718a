//! `xin-orchestrator`: configuration from the environment the operator renders.

use std::net::SocketAddr;

use clap::Parser;
use xin_orchestrator::config::Args;
use xin_orchestrator::{Orchestrator, app};
use xin_runtime::HttpMetrics;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // JSON logs, and OTLP traces when OTEL_EXPORTER_ENDPOINT (or the OTEL_EXPORTER_OTLP_*
    // names) is set; also installs the rustls crypto provider reqwest needs.
    let _telemetry = xin_runtime::init_telemetry("xin-orchestrator");
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "xin-orchestrator stopped");
            eprintln!("xin-orchestrator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (http_host, http_port) = (args.http_host.clone(), args.http_port);
    let (metrics_host, metrics_port) = (args.metrics_host.clone(), args.metrics_port);
    let (url, max_connections) = (args.database_url.clone(), args.database_max_connections);
    let namespace = args.namespace.clone().unwrap_or_default();
    let config = args.into_config()?;
    let addr: SocketAddr = format!("{http_host}:{http_port}")
        .parse()
        .map_err(|e| format!("ORCHESTRATOR_HTTP_HOST/PORT: {e}"))?;
    let maddr: SocketAddr = format!("{metrics_host}:{metrics_port}")
        .parse()
        .map_err(|e| format!("ORCHESTRATOR_METRICS_HOST/PORT: {e}"))?;

    let pool = xin_store::connect(url.expose(), max_connections).await?;
    xin_store::check_runtime_role(&pool).await?;
    xin_store::check_schema(&pool).await?;

    let metrics = HttpMetrics::default();
    let orchestrator = Orchestrator::new(config, pool, &metrics).await?;
    xin_runtime::serve_metrics(
        maddr,
        metrics.clone(),
        "ORCHESTRATOR_METRICS_HOST/ORCHESTRATOR_METRICS_PORT",
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (ORCHESTRATOR_HTTP_HOST/PORT): {e}"))?;
    let c = &orchestrator.config;
    tracing::info!(
        %addr,
        metrics = %maddr,
        tenant = %c.tenant,
        namespace = %namespace,
        llm = c.llm.is_some(),
        fallback_model = c.llm.as_ref().is_some_and(|l| l.fallback_model.is_some()),
        embeddings = c.embedding.is_some(),
        hybrid_weight = c.retrieval.hybrid_weight,
        "xin-orchestrator serving"
    );
    axum::serve(listener, app(orchestrator, metrics))
        .with_graceful_shutdown(xin_runtime::shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))
}
