//! A rule's health and its `Suspended` condition (the operator writes only these and
//! `observedGeneration`; the worker owns the rest of the status).

use xin_api::automation::{AutomationRule, AutomationRuleStatus};

use crate::conditions::{Health, reason, types};
use crate::controllers::runner::{Extra, Pass, Reconcile};

/// The pass of a rule whose references resolve and whose schedule is valid.
pub fn status(rule: &AutomationRule) -> Pass<AutomationRuleStatus> {
    let health = if rule.spec.suspend {
        Health::Ready {
            reason: reason::SUSPENDED,
            message: "paused: no schedule fires and no event is acted on".into(),
        }
    } else {
        Health::Ready {
            reason: reason::RECONCILED,
            message: "run by the tenant's automation worker".into(),
        }
    };
    Pass::new(rule.current_status(), health)
}

/// Shown on every pass, whatever the health.
pub(super) fn suspended(rule: &AutomationRule) -> Extra {
    let on = rule.spec.suspend;
    Extra {
        type_: types::SUSPENDED,
        status: on,
        reason: if on {
            reason::SUSPENDED
        } else {
            reason::ACTIVE
        },
        message: String::new(),
    }
}
