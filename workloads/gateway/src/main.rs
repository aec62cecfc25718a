//! `xin-gateway`: configuration from the environment the operator renders.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use xin_gateway::routes::{self, RouteTable};
use xin_gateway::{Gateway, app, migrate};
use xin_runtime::HttpMetrics;

#[derive(Parser, Debug)]
#[command(
    name = "xin-gateway",
    version,
    about = "Receives and verifies provider webhooks for one tenant's channels"
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
    /// PostgreSQL URL of the tenant's database (the inbox lives there).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    xin_runtime::init_logging();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "xin-gateway stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (initial, bytes) = routes::load(&args.routes_file)?;
    let table = RouteTable::default();
    table.set(initial);
    routes::watch(
        args.routes_file.clone(),
        table.clone(),
        bytes,
        Duration::from_secs(1),
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("cannot connect to the database (DATABASE_URL): {e}"))?;
    migrate(&pool)
        .await
        .map_err(|e| format!("database migration failed: {e}"))?;
    let metrics = HttpMetrics::default();
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
    tracing::info!(%addr, metrics = %maddr, tenant = %args.tenant, "xin-gateway serving");
    axum::serve(
        listener,
        app(Gateway::new(args.tenant, table, pool), metrics),
    )
    .with_graceful_shutdown(xin_runtime::shutdown_signal())
    .await
    .map_err(|e| format!("server failed: {e}"))
}
