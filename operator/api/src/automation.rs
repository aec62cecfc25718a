//! `AutomationRule`: a scheduled or event-driven action of a tenant.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, SecretRef, impl_has_conditions};

/// A scheduled or event-driven action, run by the tenant's automation worker. The worker
/// reports runs in the status; the operator owns the conditions.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "xin.dev",
    version = "v1alpha1",
    kind = "AutomationRule",
    namespaced,
    status = "AutomationRuleStatus",
    shortname = "xar",
    category = "xin",
    derive = "PartialEq",
    doc = "A scheduled or event-driven action of a tenant, run by its automation worker.",
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last run", type_ = "date", json_path = ".status.lastRunTime"),
    printcolumn(name = "Next run", type_ = "date", json_path = ".status.nextRunTime"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AutomationRuleSpec {
    /// When the rule runs: exactly one of `schedule` or `event`.
    pub trigger: Trigger,
    /// What the rule does: exactly one of `webhook`, `crm` or `email`.
    pub action: Action,
    /// Retries of a failed run before it is dead-lettered.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Pause the rule: no schedule fires and no event is acted on until resumed.
    #[serde(default)]
    pub suspend: bool,
}

/// The rule's trigger.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.schedule) != has(self.event)").message("trigger needs exactly one of schedule or event"))]
pub struct Trigger {
    /// Run on a cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleTrigger>,
    /// Run on conversation events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventTrigger>,
}

/// A cron schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTrigger {
    /// Standard 5-field crontab expression (minute hour day-of-month month day-of-week),
    /// for example `0 9 * * 1-5` for weekdays at 09:00.
    #[schemars(length(min = 9, max = 128), pattern(r"^\S+\s+\S+\s+\S+\s+\S+\s+\S+$"))]
    pub cron: String,
    /// IANA time zone of the schedule; the Tenant's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        pattern(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")
    )]
    pub time_zone: Option<String>,
    /// What to do about runs missed while the worker was down or the rule suspended.
    #[serde(default)]
    pub catch_up: CatchUpPolicy,
}

/// Missed-run policy.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum CatchUpPolicy {
    /// Missed runs are dropped.
    #[default]
    Skip,
    /// One run makes up for all missed ones.
    RunOnce,
    /// Every missed run is made up (bounded by the worker).
    RunAll,
}

/// Conversation events.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTrigger {
    /// Event types that fire the rule.
    #[schemars(length(min = 1, max = 8))]
    pub types: Vec<EventType>,
    /// Only events that match this filter fire the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<EventFilter>,
}

/// Conversation event types emitted by the orchestrator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum EventType {
    MessageReceived,
    ConversationCreated,
    ConversationClosed,
    HandoffRequested,
}

/// Narrows which events fire a rule; every given field must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    /// Only events of these Channels (by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 253)))]
    pub channels: Vec<String>,
    /// Only messages whose text contains this (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub text_contains: Option<String>,
}

/// The rule's action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.webhook) ? 1 : 0) + (has(self.crm) ? 1 : 0) + (has(self.email) ? 1 : 0) == 1").message("action needs exactly one of webhook, crm or email"))]
pub struct Action {
    /// POST a signed JSON event to a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookAction>,
    /// Call a CRM's HTTP API with a templated body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm: Option<CrmAction>,
    /// Send an email over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAction>,
}

/// Outgoing webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAction {
    /// Destination URL.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s/$.?#][^\s]*$"))]
    pub url: String,
    /// Secret whose keys and values are sent as extra headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretRef>,
    /// Secret key with the HMAC-SHA256 key that signs the body (`X-Xin-Signature-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
}

/// CRM HTTP call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrmAction {
    /// Endpoint URL.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s/$.?#][^\s]*$"))]
    pub endpoint: String,
    /// Secret key with the bearer token.
    pub auth_secret_ref: SecretKeyRef,
    /// Request body template (`{{ conversation.id }}`, `{{ message.text }}`, ...).
    #[schemars(length(min = 1, max = 16384))]
    pub body_template: String,
}

/// Email over SMTP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailAction {
    /// Secret with `host`, `port`, `username`, `password` and `from`.
    pub smtp_secret_ref: SecretRef,
    /// Recipients.
    #[schemars(
        length(min = 1, max = 50),
        inner(length(max = 254), pattern(r"^[^@\s]+@[^@\s]+$"))
    )]
    pub to: Vec<String>,
    /// Subject template.
    #[schemars(length(min = 1, max = 998))]
    pub subject_template: String,
    /// Body template.
    #[schemars(length(min = 1, max = 65536))]
    pub body_template: String,
}

/// Retries with exponential backoff.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backoffSeconds <= self.maxBackoffSeconds").message("retry.backoffSeconds must not exceed retry.maxBackoffSeconds"))]
pub struct RetryPolicy {
    /// Attempts of one run, the first included.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: i32,
    /// Delay before the first retry; doubles each time.
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 1, max = 3600))]
    pub backoff_seconds: i32,
    /// Longest delay between retries.
    #[serde(default = "default_max_backoff")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_backoff_seconds: i32,
}

fn default_attempts() -> i32 {
    5
}
fn default_backoff() -> i32 {
    10
}
fn default_max_backoff() -> i32 {
    600
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_attempts(),
            backoff_seconds: default_backoff(),
            max_backoff_seconds: default_max_backoff(),
        }
    }
}

/// Observed state of an AutomationRule. The run fields are written by the automation worker
/// under its own field manager; the operator writes `observedGeneration` and `conditions`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutomationRuleStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, `Suspended`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// When the rule last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// When a scheduled rule runs next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// Runs that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i64>,
    /// Runs that failed (and may be retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// Runs that exhausted their retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<i64>,
    /// The last run's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Runs waiting in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
}

impl_has_conditions!(AutomationRuleStatus);
