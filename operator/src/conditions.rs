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
    pub const JOB_RUNNING: &str = "JobRunning";
    pub const JOB_SUCCEEDED: &str = "JobSucceeded";
    pub const JOB_FAILED: &str = "JobFailed";
    pub const DECOMMISSIONING: &str = "Decommissioning";
    pub const DECOMMISSION_FAILED: &str = "DecommissionFailed";
    pub const API_ERROR: &str = "ApiError";
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
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(32 * 1024).collect(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

impl Health {
    /// The three kstatus conditions for this outcome.
    pub fn conditions(&self, generation: Option<i64>) -> Vec<Condition> {
        let (ready, reconciling, stalled, reason, message) = match self {
            Health::Ready { reason, message } => (true, false, false, *reason, message),
            Health::Progressing { reason, message } => (false, true, false, *reason, message),
            Health::Stalled { reason, message } => (false, false, true, *reason, message),
        };
        vec![
            cond(READY, ready, reason, message, generation),
            cond(
                RECONCILING,
                reconciling,
                reason,
                if reconciling { message } else { "" },
                generation,
            ),
            cond(
                STALLED,
                stalled,
                reason,
                if stalled { message } else { "" },
                generation,
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
) -> Condition {
    cond(type_, status, reason, message, generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_keeps_the_transition_time() {
        let first = merge(
            &[],
            Health::Ready {
                reason: reason::RECONCILED,
                message: "ok".into(),
            }
            .conditions(Some(1)),
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = merge(
            &first,
            Health::Ready {
                reason: reason::RECONCILED,
                message: "ok".into(),
            }
            .conditions(Some(1)),
        );
        assert_eq!(
            first, second,
            "a no-op reconcile must produce an identical status"
        );
    }

    #[test]
    fn changed_status_gets_a_new_transition_time_and_other_types_survive() {
        let mut first = merge(
            &[],
            Health::Ready {
                reason: reason::RECONCILED,
                message: "ok".into(),
            }
            .conditions(Some(1)),
        );
        first.push(extra("CredentialsResolved", true, "Resolved", "", Some(1)));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = merge(
            &first,
            Health::Stalled {
                reason: reason::SECRET_NOT_FOUND,
                message: "Secret x not found".into(),
            }
            .conditions(Some(2)),
        );
        let ready = second.iter().find(|c| c.type_ == READY).unwrap();
        let old_ready = first.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "SecretNotFound");
        assert_ne!(ready.last_transition_time, old_ready.last_transition_time);
        assert!(second.iter().any(|c| c.type_ == "CredentialsResolved"));
        let stalled = second.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.message.as_str()),
            ("True", "Secret x not found")
        );
    }
}
