//! kstatus conditions: computed from what the reconcile saw, `lastTransitionTime` kept when
//! the status did not change, so an unchanged object gets an identical status (and no write).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use xin_api::common::condition::{READY, RECONCILING, STALLED};

/// Condition reasons, one constant each (linkerd2's habit): operators grep for them.
pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const PROGRESSING: &str = "Progressing";
    pub const SUSPENDED: &str = "Suspended";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const CONFIG_MAP_NOT_FOUND: &str = "ConfigMapNotFound";
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
    pub const TENANT_NOT_READY: &str = "TenantNotReady";
    pub const TENANT_DELETING: &str = "TenantDeleting";
    pub const INVALID_TIME_ZONE: &str = "InvalidTimeZone";
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
    pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
    pub const INVALID_HEADERS: &str = "InvalidHeaders";
    pub const PLATFORM_SECRET: &str = "PlatformSecret";
    pub const JOB_RUNNING: &str = "JobRunning";
    pub const JOB_SUCCEEDED: &str = "JobSucceeded";
    pub const JOB_FAILED: &str = "JobFailed";
    pub const DECOMMISSIONING: &str = "Decommissioning";
    pub const DECOMMISSION_FAILED: &str = "DecommissionFailed";
    pub const API_ERROR: &str = "ApiError";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const NAMESPACE_CONFLICT: &str = "NamespaceConflict";
    pub const CONFIG_MAP_KEY_MISSING: &str = "ConfigMapKeyMissing";
    pub const JOB_MISSING: &str = "JobMissing";
    pub const RESOLVED: &str = "Resolved";
    pub const ACTIVE: &str = "Active";
    pub const JOB_CREATED: &str = "JobCreated";
    pub const WEBHOOK_KEY_ROTATED: &str = "WebhookKeyRotated";
    pub const SECRET_VALUE_EMPTY: &str = "SecretValueEmpty";
    pub const NAMESPACE_NOT_ADOPTABLE: &str = "NamespaceNotAdoptable";
    pub const DATABASE_NOT_CONFIGURED: &str = "DatabaseNotConfigured";
    pub const DATABASE_UNAVAILABLE: &str = "DatabaseUnavailable";
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const DATABASE_ROLE_TOO_POWERFUL: &str = "DatabaseRoleTooPowerful";
    pub const DATABASE_PASSWORD_ROTATED: &str = "DatabasePasswordRotated";
    pub const DESTINATION_NOT_ALLOWED: &str = "DestinationNotAllowed";
    pub const INVALID_TELEGRAM_SECRET_TOKEN: &str = "InvalidTelegramSecretToken";
    pub const REGISTERED: &str = "Registered";
    pub const NO_PUBLIC_URL: &str = "NoPublicUrl";
    pub const REGISTRATION_PENDING: &str = "RegistrationPending";
    pub const REGISTRATION_FAILED: &str = "RegistrationFailed";
    pub const KEY_NOT_GENERATED: &str = "KeyNotGenerated";
    pub const HOST_NOT_ALLOWED: &str = "HostNotAllowed";
    pub const INGRESS_ANNOTATION_NOT_ALLOWED: &str = "IngressAnnotationNotAllowed";
    pub const AWAITING_WORKER_REPORT: &str = "AwaitingWorkerReport";
    /// The ingestion worker failed the run for a reason this operator does not know.
    pub const INGESTION_FAILED: &str = "IngestionFailed";

    /// Every reason above.
    pub const ALL: &[&str] = &[
        RECONCILED,
        PROGRESSING,
        SUSPENDED,
        SECRET_NOT_FOUND,
        SECRET_KEY_MISSING,
        CONFIG_MAP_NOT_FOUND,
        TENANT_NOT_FOUND,
        TENANT_NOT_READY,
        TENANT_DELETING,
        INVALID_TIME_ZONE,
        INVALID_SCHEDULE,
        JOB_RUNNING,
        JOB_SUCCEEDED,
        JOB_FAILED,
        DECOMMISSIONING,
        DECOMMISSION_FAILED,
        API_ERROR,
        INVALID_SPEC,
        NAMESPACE_CONFLICT,
        CONFIG_MAP_KEY_MISSING,
        JOB_MISSING,
        RESOLVED,
        ACTIVE,
        JOB_CREATED,
        WEBHOOK_KEY_ROTATED,
        SECRET_VALUE_EMPTY,
        NAMESPACE_NOT_ADOPTABLE,
        DATABASE_NOT_CONFIGURED,
        DATABASE_UNAVAILABLE,
        MIGRATION_FAILED,
        DATABASE_ROLE_TOO_POWERFUL,
        DATABASE_PASSWORD_ROTATED,
        DESTINATION_NOT_ALLOWED,
        INVALID_TELEGRAM_SECRET_TOKEN,
        REGISTERED,
        NO_PUBLIC_URL,
        REGISTRATION_PENDING,
        REGISTRATION_FAILED,
        KEY_NOT_GENERATED,
        HOST_NOT_ALLOWED,
        INGRESS_ANNOTATION_NOT_ALLOWED,
        AWAITING_WORKER_REPORT,
        INGESTION_FAILED,
    ];
}

/// Kind-specific condition types.
pub mod types {
    pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
    /// Telegram channels: whether Telegram has acknowledged the current webhook key.
    pub const TELEGRAM_WEBHOOK_REGISTERED: &str = "TelegramWebhookRegistered";
    pub const SUSPENDED: &str = "Suspended";
    pub const COMPLETE: &str = "Complete";
    pub const FAILED: &str = "Failed";
    pub const DECOMMISSIONING: &str = "Decommissioning";
}

/// The outcome of one reconcile, turned into Ready / Reconciling / Stalled.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// Everything exists and is healthy.
    Ready {
        reason: &'static str,
        message: String,
    },
    /// Work is under way (children not yet available).
    Progressing {
        reason: &'static str,
        message: String,
    },
    /// Cannot progress without a change by the user (missing Secret, invalid input).
    Stalled {
        reason: &'static str,
        message: String,
    },
}

fn cond(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(32 * 1024).collect(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

impl Health {
    /// The three kstatus conditions for this outcome.
    pub fn conditions(&self, generation: Option<i64>, now: &Time) -> Vec<Condition> {
        let (ready, reconciling, stalled, reason, message) = match self {
            Health::Ready { reason, message } => (true, false, false, *reason, message),
            Health::Progressing { reason, message } => (false, true, false, *reason, message),
            Health::Stalled { reason, message } => (false, false, true, *reason, message),
        };
        vec![
            cond(READY, ready, reason, message, generation, now),
            cond(
                RECONCILING,
                reconciling,
                reason,
                if reconciling { message } else { "" },
                generation,
                now,
            ),
            cond(
                STALLED,
                stalled,
                reason,
                if stalled { message } else { "" },
                generation,
                now,
            ),
        ]
    }
}

/// Merges `desired` into `current`: a condition whose status did not change keeps its
/// `lastTransitionTime`; conditions of other types in `current` are kept.
pub fn merge(current: &[Condition], desired: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = current
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for mut d in desired {
        if let Some(old) = current.iter().find(|c| c.type_ == d.type_)
            && old.status == d.status
        {
            d.last_transition_time = old.last_transition_time.clone();
        }
        out.push(d);
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// A kind-specific condition (for example `CredentialsResolved`).
pub fn extra(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    cond(type_, status, reason, message, generation, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn ok() -> Health {
        Health::Ready {
            reason: reason::RECONCILED,
            message: "ok".into(),
        }
    }

    #[test]
    fn unchanged_status_keeps_the_transition_time() {
        let first = merge(&[], ok().conditions(Some(1), &at("2026-01-01T00:00:00Z")));
        let second = merge(
            &first,
            ok().conditions(Some(1), &at("2026-01-01T00:05:00Z")),
        );
        assert_eq!(
            first, second,
            "a no-op reconcile must produce an identical status"
        );
    }

    #[test]
    fn changed_status_gets_a_new_transition_time_and_other_types_survive() {
        let t0 = at("2026-01-01T00:00:00Z");
        let t1 = at("2026-01-01T00:05:00Z");
        let mut first = merge(&[], ok().conditions(Some(1), &t0));
        first.push(extra(
            types::CREDENTIALS_RESOLVED,
            true,
            reason::RESOLVED,
            "",
            Some(1),
            &t0,
        ));
        let second = merge(
            &first,
            Health::Stalled {
                reason: reason::SECRET_NOT_FOUND,
                message: "Secret x not found".into(),
            }
            .conditions(Some(2), &t1),
        );
        let ready = second.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "SecretNotFound");
        assert_eq!(ready.last_transition_time, t1);
        assert!(
            second
                .iter()
                .any(|c| c.type_ == types::CREDENTIALS_RESOLVED)
        );
        let stalled = second.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.message.as_str()),
            ("True", "Secret x not found")
        );
        // Reconciling stayed False: its transition time is the first one.
        let reconciling = second.iter().find(|c| c.type_ == RECONCILING).unwrap();
        assert_eq!(reconciling.last_transition_time, t0);
    }
}
