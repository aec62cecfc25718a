//! Configuration from the environment the operator renders into the worker's Deployment
//! (`build_automation_deployment` in `operator/src/builders/automation.rs`), parsed once at
//! start. Every bad value is an error that names its variable; nothing here panics.

use std::time::Duration;

use clap::Parser;
use xin_runtime::Redacted;
use xin_runtime::args::{non_empty, positive, seconds};
use xin_runtime::outbound::OutboundArgs;

/// The command line / environment of `xin-automation`. `Debug` shows every setting; the
/// database URL is [`Redacted`].
#[derive(Parser, Clone, Debug)]
#[command(
    name = "xin-automation",
    version,
    about = "Runs a tenant's AutomationRules: schedules, conversation events, a durable queue of webhook, CRM and email actions"
)]
pub struct Args {
    /// Tenant whose rules this runs.
    #[arg(long, env = "XIN_TENANT", value_parser = non_empty("XIN_TENANT"))]
    pub tenant: String,
    /// Namespace of the tenant: its AutomationRules and the Secrets they name.
    #[arg(long, env = "XIN_NAMESPACE", value_parser = non_empty("XIN_NAMESPACE"))]
    pub namespace: String,
    /// The Tenant's time zone: schedules without their own `timeZone` run in it.
    #[arg(long, env = "TENANT_TIME_ZONE", default_value = "UTC", value_parser = time_zone)]
    pub time_zone: String,
    /// PostgreSQL URL of the tenant's own database, as its runtime role (data rights only).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Redacted,
    /// Connections in the database pool.
    #[arg(long, env = "AUTOMATION_DATABASE_CONNECTIONS", default_value_t = 8,
          value_parser = positive("AUTOMATION_DATABASE_CONNECTIONS", 100))]
    pub database_connections: usize,
    /// Address of the HTTP server (`/health`, `/ready`).
    #[arg(long, env = "AUTOMATION_HTTP_HOST", default_value = "0.0.0.0")]
    pub http_host: String,
    /// Port of the HTTP server.
    #[arg(long, env = "AUTOMATION_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Address of the metrics server (`/metrics`, `/health`).
    #[arg(long, env = "AUTOMATION_METRICS_HOST", default_value = "0.0.0.0")]
    pub metrics_host: String,
    /// Port of the metrics server.
    #[arg(long, env = "AUTOMATION_METRICS_PORT", default_value_t = 9104)]
    pub metrics_port: u16,
    /// Actions running at once in this process.
    #[arg(long, env = "AUTOMATION_CONCURRENCY", default_value_t = 64,
          value_parser = positive("AUTOMATION_CONCURRENCY", 4096))]
    pub concurrency: usize,
    /// Runs claimed from the queue in one statement.
    #[arg(long, env = "AUTOMATION_CLAIM_BATCH", default_value_t = 64,
          value_parser = positive("AUTOMATION_CLAIM_BATCH", 1000))]
    pub claim_batch: usize,
    /// Outbox events read in one transaction.
    #[arg(long, env = "AUTOMATION_EVENT_BATCH", default_value_t = 500,
          value_parser = positive("AUTOMATION_EVENT_BATCH", 10_000))]
    pub event_batch: usize,
    /// Milliseconds between looks at an idle queue and outbox.
    #[arg(long, env = "AUTOMATION_POLL_MILLISECONDS", default_value_t = 250,
          value_parser = positive("AUTOMATION_POLL_MILLISECONDS", 60_000))]
    pub poll_ms: usize,
    /// Seconds a claimed run is held: a worker that dies mid-run leaves it to another after
    /// this. At least twice `AUTOMATION_ACTION_TIMEOUT_SECONDS`.
    #[arg(long, env = "AUTOMATION_LEASE_SECONDS", default_value = "90",
          value_parser = seconds("AUTOMATION_LEASE_SECONDS"))]
    pub lease: Duration,
    /// Seconds one action (HTTP call or email) may take.
    #[arg(long, env = "AUTOMATION_ACTION_TIMEOUT_SECONDS", default_value = "30",
          value_parser = seconds("AUTOMATION_ACTION_TIMEOUT_SECONDS"))]
    pub action_timeout: Duration,
    /// A scheduled time this late is still on time (queued whatever `catchUp` says); older
    /// ones were missed and follow the rule's `catchUp`.
    #[arg(long, env = "AUTOMATION_SCHEDULE_TOLERANCE_SECONDS", default_value = "120",
          value_parser = seconds("AUTOMATION_SCHEDULE_TOLERANCE_SECONDS"))]
    pub schedule_tolerance: Duration,
    /// Most missed runs `catchUp: RunAll` makes up per rule (the most recent ones).
    #[arg(long, env = "AUTOMATION_CATCH_UP_LIMIT", default_value_t = 100,
          value_parser = positive("AUTOMATION_CATCH_UP_LIMIT", 10_000))]
    pub catch_up_limit: usize,
    /// Seconds between status reports to the AutomationRules (only changes are written).
    #[arg(long, env = "AUTOMATION_REPORT_SECONDS", default_value = "5",
          value_parser = seconds("AUTOMATION_REPORT_SECONDS"))]
    pub report_interval: Duration,
    /// Seconds a Secret read through the API is reused (rotations apply within this).
    #[arg(long, env = "AUTOMATION_SECRET_CACHE_SECONDS", default_value = "10",
          value_parser = seconds("AUTOMATION_SECRET_CACHE_SECONDS"))]
    pub secret_ttl: Duration,
    /// Hours finished runs are kept (for `status.recentRuns` and inspection).
    #[arg(long, env = "AUTOMATION_RETENTION_HOURS", default_value_t = 168,
          value_parser = positive("AUTOMATION_RETENTION_HOURS", 24 * 366))]
    pub retention_hours: usize,
    /// Where webhook and CRM URLs and SMTP hosts (the tenant's) may lead.
    #[command(flatten)]
    pub outbound: OutboundArgs,
}

fn time_zone(s: &str) -> Result<String, String> {
    s.parse::<chrono_tz::Tz>()
        .map(|_| s.to_string())
        .map_err(|_| format!("TENANT_TIME_ZONE: {s:?} is not in the tz database"))
}

impl Args {
    /// Checks across settings.
    pub fn check(&self) -> Result<(), String> {
        if self.lease < self.action_timeout * 2 {
            return Err(format!(
                "AUTOMATION_LEASE_SECONDS ({}) must be at least twice AUTOMATION_ACTION_TIMEOUT_SECONDS ({}): a run still in progress must not be taken over",
                self.lease.as_secs(),
                self.action_timeout.as_secs()
            ));
        }
        Ok(())
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms as u64)
    }
}
