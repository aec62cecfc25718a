//! The operator's configuration: parsed once at start from flags or environment (the chart
//! sets the environment from its values).

use clap::Parser;
use xin_api::destination::{CidrList, DestinationList, DestinationPolicy};

#[derive(Parser, Clone, Debug)]
#[command(
    name = "xin-operator",
    version,
    about = "Reconciles xin.dev Tenants, Channels, AutomationRules and IngestionJobs"
)]
pub struct Config {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "XIN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,

    /// Elect a leader through a Lease, so only one replica reconciles.
    #[arg(long, env = "XIN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "XIN_LEASE_NAMESPACE", default_value = "xin-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "XIN_LEASE_NAME", default_value = "xin-operator")]
    pub lease_name: String,

    /// Image of the channel gateway.
    #[arg(
        long,
        env = "XIN_GATEWAY_IMAGE",
        default_value = "ghcr.io/xin-dev/xin-gateway:0.1.0"
    )]
    pub gateway_image: String,
    /// Image of the orchestrator.
    #[arg(
        long,
        env = "XIN_ORCHESTRATOR_IMAGE",
        default_value = "ghcr.io/xin-dev/xin-orchestrator:0.1.0"
    )]
    pub orchestrator_image: String,
    /// Image of the ingestion worker.
    #[arg(
        long,
        env = "XIN_INGEST_IMAGE",
        default_value = "ghcr.io/xin-dev/xin-ingest:0.1.0"
    )]
    pub ingest_image: String,
    /// Image of the automation worker.
    #[arg(
        long,
        env = "XIN_AUTOMATION_IMAGE",
        default_value = "ghcr.io/xin-dev/xin-automation:0.1.0"
    )]
    pub automation_image: String,
    /// Pull policy of the workload images.
    #[arg(long, env = "XIN_IMAGE_PULL_POLICY", default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,

    /// OTLP endpoint rendered into every workload as OTEL_EXPORTER_ENDPOINT.
    #[arg(long, env = "XIN_OTEL_EXPORTER_ENDPOINT")]
    pub otel_exporter_endpoint: Option<String>,
    /// OTLP headers (`k=v,k2=v2`) rendered as OTEL_EXPORTER_HEADERS.
    #[arg(long, env = "XIN_OTEL_EXPORTER_HEADERS")]
    pub otel_exporter_headers: Option<String>,

    /// Namespace the operator runs in: its pods may scrape tenant workloads' metrics.
    #[arg(long, env = "XIN_OPERATOR_NAMESPACE", default_value = "xin-system")]
    pub operator_namespace: String,

    /// Most reconciles of one kind running at once (bounds the load on the API server).
    #[arg(long, env = "XIN_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Seconds between periodic re-checks of an object that is Ready (watches trigger the rest).
    #[arg(long, env = "XIN_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,

    /// Comma-separated CIDRs and exact host names that tenant-supplied URLs (LLM, webhooks,
    /// CRM, ingestion sources) may reach although refused by default (loopback, private,
    /// metadata, cluster-internal), e.g. an on-premises LLM; rendered into the workloads.
    #[arg(
        long,
        env = "XIN_OUTBOUND_ALLOW",
        default_value = "",
        hide_default_value = true
    )]
    pub outbound_allow: DestinationList,
    /// Comma-separated CIDRs and exact host names tenant-supplied URLs never reach.
    #[arg(
        long,
        env = "XIN_OUTBOUND_DENY",
        default_value = "",
        hide_default_value = true
    )]
    pub outbound_deny: DestinationList,
    /// The cluster's Service range(s), comma-separated: refused as a destination.
    #[arg(long, env = "XIN_SERVICE_CIDR", default_value = "10.96.0.0/12", value_parser = service_cidr)]
    pub service_cidr: CidrList,
}

fn service_cidr(s: &str) -> Result<CidrList, String> {
    match s.parse::<CidrList>()? {
        l if l.0.is_empty() => Err("name at least one range".into()),
        l => Ok(l),
    }
}

impl Config {
    /// Defaults, for tests.
    pub fn for_tests() -> Self {
        Config::parse_from(["xin-operator"])
    }

    /// Where tenant-supplied URLs may go (the operator checks literal addresses and names).
    pub fn destination_policy(&self) -> DestinationPolicy {
        DestinationPolicy {
            allow: self.outbound_allow.clone(),
            deny: self.outbound_deny.clone(),
            service_ranges: self.service_cidr.clone(),
        }
    }
}
