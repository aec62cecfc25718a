//! The operator's configuration: parsed once at start from flags or environment (the chart
//! sets the environment from its values).

use std::collections::BTreeMap;

use clap::Parser;
use ipnet::IpNet;
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
    /// A Secret in each tenant namespace (key `headers`, `k=v,k2=v2`) that the workloads read
    /// OTEL_EXPORTER_HEADERS from, for a collector that wants per-tenant credentials: the
    /// platform puts it there (the operator neither creates nor reads it; a tenant without it
    /// exports without headers). Unset: the workloads export without headers, as an
    /// in-cluster collector expects.
    #[arg(long, env = "XIN_OTEL_TENANT_HEADERS_SECRET", value_parser = dns_subdomain)]
    pub otel_tenant_headers_secret: Option<String>,
    /// No longer supported (the platform's headers were copied into every tenant namespace):
    /// set, the operator refuses to start and says what to use instead.
    #[arg(
        long,
        env = "XIN_OTEL_EXPORTER_HEADERS",
        hide = true,
        hide_env_values = true
    )]
    pub otel_exporter_headers: Option<Redacted>,

    /// Admin URL of the platform PostgreSQL (`postgres://admin:password@host:5432/postgres`,
    /// a role with CREATEDB and CREATEROLE): with it, a Tenant that names no database of its
    /// own gets one provisioned. The workloads reach the same host and port. The chart sets it
    /// from a Secret; it is never logged.
    #[arg(long, env = "XIN_DATABASE_ADMIN_URL", hide_env_values = true)]
    pub database_admin_url: Option<Redacted>,

    /// Namespaces no Tenant may take as its own besides the operator's (comma-separated):
    /// the platform's data and monitoring namespaces, say.
    #[arg(
        long,
        env = "XIN_RESERVED_NAMESPACES",
        value_delimiter = ',',
        default_value = "xin-data,xin-monitoring"
    )]
    pub reserved_namespaces: Vec<String>,

    /// Namespace the operator runs in: its pods may scrape tenant workloads' metrics.
    #[arg(long, env = "XIN_OPERATOR_NAMESPACE", default_value = "xin-system")]
    pub operator_namespace: String,

    /// The operator's own ServiceAccount (in `XIN_OPERATOR_NAMESPACE`): the subject of its
    /// RoleBinding in each tenant namespace.
    #[arg(
        long,
        env = "XIN_OPERATOR_SERVICE_ACCOUNT",
        default_value = "xin-operator"
    )]
    pub operator_service_account: String,
    /// The ClusterRole the operator binds to itself in each tenant namespace it takes (its
    /// rights on Secrets and on deleting that namespace; the chart's `<release>-operator-tenant`).
    /// Unset: no binding is made, and the operator's ClusterRole must grant those rights.
    #[arg(long, env = "XIN_TENANT_ACCESS_CLUSTER_ROLE")]
    pub tenant_access_cluster_role: Option<String>,

    #[command(flatten)]
    pub network: NetworkPolicyConfig,

    /// Ingress hosts every Tenant's Channels may use besides the Tenant's own
    /// `spec.network.allowedDomains`, comma-separated patterns: `{tenant}` stands for the
    /// Tenant's name, a leading `*.` for one or more labels (`{tenant}.hooks.example.com,
    /// *.{tenant}.chat.example.com`). Empty: only the Tenants' own domains.
    #[arg(
        long,
        env = "XIN_INGRESS_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "",
        hide_default_value = true
    )]
    pub ingress_allowed_hosts: Vec<String>,
    /// Annotation keys a Channel may put on its Ingress, comma-separated: exact keys, or a
    /// prefix ending in `/*` for every key of that prefix. Anything else (an ingress
    /// controller's configuration snippets, say) is refused: `Ready=False`,
    /// `IngressAnnotationNotAllowed`.
    #[arg(
        long,
        env = "XIN_INGRESS_ANNOTATION_ALLOWLIST",
        value_delimiter = ',',
        default_value = "cert-manager.io/*"
    )]
    pub ingress_annotation_allowlist: Vec<String>,

    /// Telegram Bot API base URL: the operator calls `setWebhook` there to give Telegram a
    /// Telegram channel's new webhook key (a stand-in in tests).
    #[arg(
        long,
        env = "XIN_TELEGRAM_API_BASE",
        default_value = "https://api.telegram.org"
    )]
    pub telegram_api_base: String,
    /// Seconds between a new webhook key and its registration with Telegram: long enough for
    /// the gateway's pods to load the key from their mounted routes Secret (the kubelet
    /// refreshes a mounted Secret within its sync period plus its cache's lifetime, about a
    /// minute each by default), so Telegram never signs with a key the gateway lacks.
    #[arg(
        long,
        env = "XIN_TELEGRAM_REGISTER_DELAY_SECONDS",
        default_value_t = 120
    )]
    pub telegram_register_delay_seconds: u64,

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
    /// Comma-separated addresses or CIDR ranges of the proxies in front of the gateways (the
    /// ingress controller's pods, a load balancer): only from them is `X-Forwarded-For`
    /// believed, for the anonymous widget visitors' per-address limit; rendered into each
    /// gateway as `GATEWAY_TRUSTED_PROXIES`.
    #[arg(
        long,
        env = "XIN_GATEWAY_TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true
    )]
    pub gateway_trusted_proxies: CidrList,
    /// The cluster's Service range(s), comma-separated: refused as a destination.
    #[arg(long, env = "XIN_SERVICE_CIDR", default_value = "10.96.0.0/12", value_parser = service_cidr)]
    pub service_cidr: CidrList,
}

fn dns_subdomain(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a Secret name (a DNS-1123 subdomain)"))
    }
}

fn service_cidr(s: &str) -> Result<CidrList, String> {
    match s.parse::<CidrList>()? {
        l if l.0.is_empty() => Err("name at least one range".into()),
        l => Ok(l),
    }
}

/// A secret setting: parsed like a string, never shown by `Debug`.
pub use xin_api::Redacted;

/// Where the platform's own endpoints are, as the tenants' NetworkPolicies must name them.
/// A policy sees addresses and ports after a Service is resolved: give the addresses of the
/// pods or machines behind a Service, never its ClusterIP. An endpoint given neither CIDRs nor
/// a namespace is looked for in the private networks (10.0.0.0/8, 172.16.0.0/12,
/// 192.168.0.0/16, 100.64.0.0/10, fc00::/7), on its ports only.
#[derive(clap::Args, Clone, Debug)]
pub struct NetworkPolicyConfig {
    /// The platform PostgreSQL's addresses, comma-separated CIDRs (a database outside the cluster).
    #[arg(
        long = "netpol-database-cidrs",
        env = "XIN_NETPOL_DATABASE_CIDRS",
        value_delimiter = ','
    )]
    pub database_cidrs: Vec<IpNet>,
    /// The namespace of the platform PostgreSQL when it runs in the cluster.
    #[arg(
        long = "netpol-database-namespace",
        env = "XIN_NETPOL_DATABASE_NAMESPACE"
    )]
    pub database_namespace: Option<String>,
    /// Labels (`k=v,k2=v2`) of the PostgreSQL pods in that namespace; all its pods when unset.
    #[arg(
        long = "netpol-database-pod-labels",
        env = "XIN_NETPOL_DATABASE_POD_LABELS",
        requires = "database_namespace",
        value_parser = parse_labels
    )]
    pub database_pod_labels: Option<BTreeMap<String, String>>,
    /// The platform PostgreSQL's port (of its pods, not of its Service).
    #[arg(
        long = "netpol-database-port",
        env = "XIN_NETPOL_DATABASE_PORT",
        default_value_t = 5432
    )]
    pub database_port: u16,

    /// The OTLP collector's addresses, comma-separated CIDRs (reached only when
    /// XIN_OTEL_EXPORTER_ENDPOINT is set).
    #[arg(
        long = "netpol-otel-collector-cidrs",
        env = "XIN_NETPOL_OTEL_COLLECTOR_CIDRS",
        value_delimiter = ','
    )]
    pub otel_collector_cidrs: Vec<IpNet>,
    /// The namespace of the OTLP collector when it runs in the cluster.
    #[arg(
        long = "netpol-otel-collector-namespace",
        env = "XIN_NETPOL_OTEL_COLLECTOR_NAMESPACE"
    )]
    pub otel_collector_namespace: Option<String>,
    /// Labels (`k=v,k2=v2`) of the collector pods in that namespace; all its pods when unset.
    #[arg(
        long = "netpol-otel-collector-pod-labels",
        env = "XIN_NETPOL_OTEL_COLLECTOR_POD_LABELS",
        requires = "otel_collector_namespace",
        value_parser = parse_labels
    )]
    pub otel_collector_pod_labels: Option<BTreeMap<String, String>>,
    /// The collector's OTLP ports (gRPC 4317, HTTP 4318).
    #[arg(
        long = "netpol-otel-collector-ports",
        env = "XIN_NETPOL_OTEL_COLLECTOR_PORTS",
        value_delimiter = ',',
        default_values_t = [4317, 4318]
    )]
    pub otel_collector_ports: Vec<u16>,

    /// The namespace of the Prometheus that scrapes the workloads' metrics ports (the
    /// operator's namespace may too); empty for none.
    #[arg(
        long = "netpol-monitoring-namespace",
        env = "XIN_NETPOL_MONITORING_NAMESPACE",
        default_value = "monitoring"
    )]
    pub monitoring_namespace: String,

    /// The API server's addresses, comma-separated CIDRs: the addresses of the `kubernetes`
    /// Service's endpoints (`kubectl get endpointslice -n default -l
    /// kubernetes.io/service-name=kubernetes`), not its ClusterIP. Only the ingestion and
    /// automation workers reach it.
    #[arg(
        long = "netpol-api-server-cidrs",
        env = "XIN_NETPOL_API_SERVER_CIDRS",
        value_delimiter = ','
    )]
    pub api_server_cidrs: Vec<IpNet>,
    /// The API server's ports on those endpoints (6443 with kubeadm, 443 on most managed
    /// clusters).
    #[arg(
        long = "netpol-api-server-ports",
        env = "XIN_NETPOL_API_SERVER_PORTS",
        value_delimiter = ',',
        default_values_t = [443, 6443]
    )]
    pub api_server_ports: Vec<u16>,

    /// Let the workloads' public egress (providers, LLM, webhooks, sources, SMTP) reach private
    /// addresses too (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7).
    /// Link-local and metadata addresses stay closed.
    #[arg(
        long = "netpol-allow-private-destinations",
        env = "XIN_NETPOL_ALLOW_PRIVATE_DESTINATIONS",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub allow_private_destinations: bool,
}

/// `k=v,k2=v2` as labels.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
            _ => Err(format!("`{pair}` is not a label (`key=value`)")),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret_setting() {
        let c = Config::parse_from([
            "xin-operator",
            "--database-admin-url=postgres://admin:pw-of-admin@db:5432/postgres",
            "--otel-exporter-headers=x-api-key=key-of-platform",
        ]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("pw-of-admin"), "{shown}");
        assert!(!shown.contains("key-of-platform"), "{shown}");
        assert!(
            Config::try_parse_from(["xin-operator", "--otel-tenant-headers-secret=Bad_Name"])
                .is_err()
        );
    }

    #[test]
    fn network_endpoints_parse_from_flags() {
        let c = Config::parse_from([
            "xin-operator",
            "--netpol-database-cidrs=10.20.0.0/16,2001:db8::/64",
            "--netpol-otel-collector-namespace=observability",
            "--netpol-otel-collector-pod-labels=app=otel, tier = collector",
            "--netpol-monitoring-namespace=",
        ])
        .network;
        assert_eq!(c.database_cidrs.len(), 2);
        assert_eq!(c.database_port, 5432);
        assert_eq!(c.database_pod_labels, None);
        assert_eq!(
            c.otel_collector_pod_labels.unwrap(),
            BTreeMap::from([
                ("app".into(), "otel".into()),
                ("tier".into(), "collector".into())
            ])
        );
        assert_eq!(c.otel_collector_ports, [4317, 4318]);
        assert_eq!(c.api_server_ports, [443, 6443]);
        assert_eq!(c.monitoring_namespace, "");
        assert!(!c.allow_private_destinations);
    }

    #[test]
    fn bad_network_endpoints_are_refused_at_start() {
        let parse =
            |args: &[&str]| Config::try_parse_from(["xin-operator"].iter().chain(args)).map(|_| ());
        assert!(parse(&["--netpol-database-cidrs=10.0.0.0/33"]).is_err());
        assert!(parse(&["--netpol-database-pod-labels=app"]).is_err());
        // Pod labels without a namespace would select pods of the tenant namespace itself.
        assert!(parse(&["--netpol-database-pod-labels=app=pg"]).is_err());
        assert!(
            parse(&[
                "--netpol-database-namespace=pg",
                "--netpol-database-pod-labels=app=pg"
            ])
            .is_ok()
        );
    }
}
