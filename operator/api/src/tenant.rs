//! `Tenant`: one customer of the platform, and everything it runs.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, impl_has_conditions};

/// A customer of the platform. Xin gives it a namespace (`xin-<name>`) with a quota,
/// default-deny network policies with one allowance per workload, least-privilege workload
/// identities, a signing Secret and the orchestrator; its Channels and AutomationRules add the
/// gateway and the automation worker.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "xin.dev",
    version = "v1alpha1",
    kind = "Tenant",
    status = "TenantStatus",
    shortname = "xt",
    category = "xin",
    derive = "PartialEq",
    doc = "A customer of the Xin platform: its namespace, quota, identities, signing Secret and orchestrator.",
    printcolumn(name = "Display name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.plan"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name: a Tenant's name must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit): its namespace is xin-<name>"),
    validation = Rule::new("size(self.metadata.name) <= 50").message("a Tenant's name must be at most 50 characters (its namespace is xin-<name>)"),
    validation = Rule::new("self.metadata.name != 'system'").message("the Tenant name system is reserved: xin-system is the Xin operator's namespace")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Human-readable name shown in dashboards and messages.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// IANA time zone (for example `Europe/Berlin`) used by schedules that do not name one.
    #[serde(default = "default_time_zone")]
    #[schemars(
        length(min = 1, max = 64),
        pattern(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")
    )]
    pub time_zone: String,
    /// Plan; sets the namespace's ResourceQuota and LimitRange.
    #[serde(default)]
    pub plan: Plan,
    /// The tenant's PostgreSQL database. Left empty, the operator provisions one (a database,
    /// an owner role for migrations and a runtime role with data rights only) on the platform
    /// server the chart names; or bring your own with `urlSecretRef` and `ownerUrlSecretRef`.
    #[serde(default)]
    pub database: DatabaseSpec,
    /// How the orchestrator reaches an OpenAI-compatible LLM. Without it, answers are extractive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSpec>,
    /// Embeddings for hybrid retrieval; lexical only without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<EmbeddingSpec>,
    /// Retrieval over the tenant's knowledge.
    #[serde(default)]
    pub retrieval: RetrievalSpec,
    /// Scaling and resources of the orchestrator Deployment.
    #[serde(default)]
    pub orchestrator: OrchestratorSpec,
    /// Extra egress for every workload of the tenant, to destinations the operator's
    /// NetworkPolicies keep closed: private and on-premises addresses (an in-house LLM, CRM or
    /// SMTP server). Allowed without it: DNS, the platform database and OTLP collector, and
    /// public addresses on the ports each workload calls (the providers' HTTPS, the port of
    /// `llm.endpoint`, HTTP(S) for ingestion sources and automation actions, SMTP).
    #[serde(default)]
    pub network: NetworkSpec,
    /// Scale the tenant's workloads to zero and stop schedules, keeping everything else.
    #[serde(default)]
    pub suspend: bool,
    /// What deleting the Tenant does to its namespace and data: `Retain` keeps them, `Delete`
    /// removes the namespace. Secrets that authenticate webhooks and the tenant are always
    /// deleted, so nothing can call in once the Tenant is gone.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// Plan tiers.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Plan {
    #[default]
    Starter,
    Growth,
    Enterprise,
}

/// What happens to the namespace when the Tenant is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Where the tenant's data lives: platform-managed (both fields left out), or a database of
/// the team's own (both set).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.urlSecretRef) == has(self.ownerUrlSecretRef)").message("database.urlSecretRef and database.ownerUrlSecretRef go together: both for a database of your own, neither for one the platform provisions"))]
pub struct DatabaseSpec {
    /// Bring your own: Secret key holding the `postgres://` URL the workloads use. Its role
    /// must have data rights only (not the owner of the tables, not a superuser, no
    /// `BYPASSRLS`, `CREATEROLE` or `CREATEDB`); the operator checks it and refuses otherwise.
    /// One database per Tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Bring your own: Secret key holding the URL of the role that owns the schema; only the
    /// migrations step (run by the operator) uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_url_secret_ref: Option<SecretKeyRef>,
}

/// Annotation on a Tenant asking for a new runtime database password (platform-managed
/// database): any new value rotates it once; the workloads roll onto it.
pub const ROTATE_DATABASE_PASSWORD_ANNOTATION: &str = "xin.dev/rotate-database-password";

/// Annotation on a pre-existing `xin-<name>` namespace that lets Tenant `<name>` adopt it; the
/// value is the Tenant's name. Without it the Tenant is not Ready (`NamespaceNotAdoptable`).
pub const ADOPT_NAMESPACE_ANNOTATION: &str = "xin.dev/adopt";

/// OpenAI-compatible chat completions endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.fallbackModel) || self.fallbackModel != self.model").message("llm.fallbackModel must differ from llm.model"))]
pub struct LlmSpec {
    /// Base URL of the API (the orchestrator calls `<endpoint>/v1/chat/completions`).
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s/$.?#][^\s]*$"))]
    pub endpoint: String,
    /// Model name.
    #[schemars(length(min = 1, max = 128))]
    pub model: String,
    /// Model tried when the first one times out or fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub fallback_model: Option<String>,
    /// Seconds to wait for one completion before the fallback.
    #[serde(default = "default_llm_timeout")]
    #[schemars(range(min = 1, max = 120))]
    pub timeout_seconds: i32,
    /// Secret key holding the API key, sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

fn default_llm_timeout() -> i32 {
    20
}

/// OpenAI-compatible embeddings endpoint: the ingestion worker embeds every chunk with it and
/// the orchestrator every question, so retrieval is hybrid (lexical and vector, weighted by
/// `retrieval.hybridWeight`). Without it retrieval is lexical only. Changing the model needs a
/// `Replace` ingestion of the knowledge: vectors of two models do not compare.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingSpec {
    /// Base URL of the API (`<endpoint>/v1/embeddings` is called).
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s/$.?#][^\s]*$"))]
    pub endpoint: String,
    /// Model name.
    #[schemars(length(min = 1, max = 128))]
    pub model: String,
    /// Dimensions to ask for (models that can shorten their vectors); the model's own
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub dimensions: Option<i32>,
    /// Secret key holding the API key, sent as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

/// How knowledge is retrieved for an answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalSpec {
    /// Weight of vector similarity against full-text rank (0 = lexical only, 1 = vector only).
    #[serde(default = "default_hybrid_weight")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub hybrid_weight: f64,
    /// Chunks scoring below this are not used.
    #[serde(default = "default_min_score")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_score: f64,
    /// Most chunks put into one prompt.
    #[serde(default = "default_max_documents")]
    #[schemars(range(min = 1, max = 50))]
    pub max_documents: i32,
    /// Most tokens of retrieved context in one prompt.
    #[serde(default = "default_context_budget")]
    #[schemars(range(min = 256, max = 131072))]
    pub context_budget_tokens: i32,
}

fn default_hybrid_weight() -> f64 {
    0.5
}
fn default_min_score() -> f64 {
    0.2
}
fn default_max_documents() -> i32 {
    5
}
fn default_context_budget() -> i32 {
    3000
}

impl Default for RetrievalSpec {
    fn default() -> Self {
        RetrievalSpec {
            hybrid_weight: default_hybrid_weight(),
            min_score: default_min_score(),
            max_documents: default_max_documents(),
            context_budget_tokens: default_context_budget(),
        }
    }
}

/// Orchestrator Deployment settings; the HPA scales between the bounds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("orchestrator.minReplicas must not exceed orchestrator.maxReplicas"))]
pub struct OrchestratorSpec {
    /// Fewest replicas (the HPA's minimum).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most replicas (the HPA's maximum).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Container resources; defaults come from the plan's LimitRange. Every value is a quantity
    /// (`500m`, `2`, `1Gi`); a limit is above zero, a request is not negative and not above the
    /// limit of the same resource; resource claims are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::container_resources_schema")]
    pub resources: Option<ResourceRequirements>,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    3
}

impl Default for OrchestratorSpec {
    fn default() -> Self {
        OrchestratorSpec {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            resources: None,
        }
    }
}

/// Egress the tenant's workloads may use beyond the operator's NetworkPolicies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Destinations every workload of the tenant may reach. Link-local and metadata ranges
    /// inside a wider CIDR stay closed, and so do private ranges (unless the platform allows
    /// private destinations): list the private network itself to open it.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub egress: Vec<EgressRule>,
    /// DNS domains the tenant's Channels may use as Ingress hosts: a host is allowed when it is
    /// one of them or a subdomain of one (`acme.example` allows `hooks.acme.example`). The
    /// platform may also allow hosts for every tenant by pattern (the chart's
    /// `ingress.allowedHosts`). Any other host is refused (`Ready=False`, `HostNotAllowed`), so a
    /// tenant can never claim another's host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 253),
            pattern(r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$")
        )
    )]
    pub allowed_domains: Vec<String>,
}

/// One allowed egress destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination network in CIDR notation, for example `10.20.0.0/24`.
    #[schemars(length(max = 43), pattern(r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"))]
    pub cidr: String,
    /// TCP ports; empty allows every port.
    #[serde(default)]
    #[schemars(length(max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

/// Observed state of a Tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, and `Decommissioning` while the Tenant is deleted.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Channels served by the tenant's gateway.
    #[serde(default)]
    pub channels: i32,
    /// AutomationRules run by the tenant's automation worker.
    #[serde(default)]
    pub automation_rules: i32,
    /// The tenant's database, once the migrations step has run on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<TenantDatabaseStatus>,
}

/// What the migrations step last did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantDatabaseStatus {
    /// `Managed` (provisioned by the operator) or `External` (the team's own).
    pub mode: String,
    /// `host:port/database`, never a user or password.
    pub name: String,
    /// The schema version the migrations step reached.
    pub schema_version: i64,
    /// The Secret (key `url`) holding the runtime URL of a platform-managed database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_name: Option<String>,
}

impl_has_conditions!(TenantStatus);

/// The namespace a Tenant owns. The name is derived, never chosen, so a Tenant cannot claim
/// an existing namespace such as `kube-system`.
pub fn tenant_namespace(tenant_name: &str) -> String {
    format!("xin-{tenant_name}")
}

/// The Tenant a namespace belongs to, by the naming rule above (the caller must still check
/// the Tenant exists and owns the namespace).
pub fn tenant_of_namespace(namespace: &str) -> Option<&str> {
    namespace.strip_prefix("xin-").filter(|t| !t.is_empty())
}
