//! `AutomationRule`: a scheduled or event-driven action of a tenant. [`schedule`] and
//! [`template`] hold the rules both the operator (validation) and the automation worker
//! (execution) apply, so the two can never disagree about a crontab or a template.

pub mod schedule;
pub mod template;

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
    // A string, not a date: kubectl shows a future date as `<invalid>`.
    printcolumn(name = "Next run", type_ = "string", json_path = ".status.nextRunTime"),
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

/// Conversation event types emitted by the orchestrator (`docs/automation.md`, "Events").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum EventType {
    MessageReceived,
    ConversationCreated,
    ConversationClosed,
    HandoffRequested,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::MessageReceived,
        EventType::ConversationCreated,
        EventType::ConversationClosed,
        EventType::HandoffRequested,
    ];

    /// The `kind` of the orchestrator's outbox rows (`outbox_events.kind`).
    pub const fn kind(self) -> &'static str {
        match self {
            EventType::MessageReceived => "message_received",
            EventType::ConversationCreated => "conversation_created",
            EventType::ConversationClosed => "conversation_closed",
            EventType::HandoffRequested => "handoff_requested",
        }
    }

    /// The type of an outbox row's `kind`.
    pub fn from_kind(kind: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.kind() == kind)
    }
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
    /// Request body template: JSON in which every `{{ … }}` renders as a complete JSON literal
    /// (`"text": {{ message.text }}`, no quotes around it); see docs/automation.md.
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
    /// Runs waiting in the queue or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    /// The most recent runs, newest first (at most [`RECENT_RUNS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<RunSummary>,
    /// The answer to each operation requested by annotation (`xin.dev/run-now`, ...), one
    /// entry per annotation: the last value acted on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationResult>,
    /// The request the action would send for a sample event (`xin.dev/test-action`), rendered
    /// without sending it; Secret values are not shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<ActionPreview>,
    /// The schedule's next fire times (`xin.dev/simulate`), in the rule's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<Simulation>,
}

/// How many runs `status.recentRuns` lists.
pub const RECENT_RUNS: usize = 10;

/// One run of a rule, as the worker's queue holds it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run's id (for `xin.dev/retry-run` and `xin.dev/cancel-run`).
    pub id: i64,
    /// `Schedule`, `Event` or `Manual`.
    pub trigger: String,
    /// `Pending`, `Running`, `Succeeded`, `DeadLettered` or `Cancelled`.
    pub state: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// The scheduled time a `Schedule` run stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Time>,
    /// The conversation of an `Event` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Sent with every attempt (`Idempotency-Key` header, the email's `Message-ID`).
    pub idempotency_key: String,
    /// When it was queued.
    pub created_at: Time,
    /// When it succeeded, was dead-lettered or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The worker's answer to an operation annotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationResult {
    /// The annotation, for example `xin.dev/run-now`.
    pub annotation: String,
    /// The value acted on.
    pub value: String,
    /// `Done` or `Refused`.
    pub result: String,
    /// What happened, or why not.
    pub message: String,
    /// When.
    pub time: Time,
}

/// A rendered action request (`xin.dev/test-action`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionPreview {
    /// The annotation value this answers.
    pub value: String,
    /// `POST` for HTTP actions, `SMTP` for email.
    pub method: String,
    /// The URL, or `smtp://host:port` (the host read from the Secret).
    pub target: String,
    /// Headers in order; values that come from Secrets are shown as `<from Secret …>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// The body (for email: the subject line, a blank line, the text).
    pub body: String,
    /// The sample event it was rendered for.
    pub sample: String,
}

/// The next fire times of a schedule (`xin.dev/simulate`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Simulation {
    /// The annotation value this answers (the count asked for).
    pub value: String,
    /// The zone the times are in.
    pub time_zone: String,
    /// RFC 3339 times with the zone's offset, for example `2026-03-30T09:00:00+02:00`.
    pub next_run_times: Vec<String>,
}

/// Headers the worker sets itself, which a webhook's headers Secret cannot replace.
pub const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "idempotency-key",
    "x-xin-signature-256",
    "x-xin-timestamp",
    "x-correlation-id",
];

/// A header from a webhook's headers Secret (key = name, value = value) can be sent as is: the
/// name is an HTTP token and not one the worker sets, the value has no line breaks or other
/// control characters. The error names the key, never the value.
pub fn check_header(name: &str, value: &[u8]) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(format!("header name {name:?} is not an HTTP token"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "header {name} is set by the worker and cannot be overridden"
        ));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "the value of header {name} contains a line break or another control character"
        ));
    }
    Ok(())
}

/// Operation annotations the worker answers in `status.operations`.
pub mod annotations {
    /// Queue a run now; any new value (for example `$(date +%s)`) queues one more.
    pub const RUN_NOW: &str = "xin.dev/run-now";
    /// Render the action for a sample event into `status.preview`, sending nothing.
    pub const TEST_ACTION: &str = "xin.dev/test-action";
    /// List the schedule's next N (1–50) fire times in `status.simulation`.
    pub const SIMULATE: &str = "xin.dev/simulate";
    /// Queue a dead-lettered run (by id) again, with fresh attempts.
    pub const RETRY_RUN: &str = "xin.dev/retry-run";
    /// Cancel a pending run (by id).
    pub const CANCEL_RUN: &str = "xin.dev/cancel-run";
    pub const ALL: [&str; 5] = [RUN_NOW, TEST_ACTION, SIMULATE, RETRY_RUN, CANCEL_RUN];
}

impl_has_conditions!(AutomationRuleStatus);
