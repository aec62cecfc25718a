//! What one pass over an object concludes ([`Pass`]: the status fields the operator owns, the
//! object's health, extra conditions, Events and when to look again), and the pure step from a
//! pass to the status to write ([`desired_status`]), which the golden tests compare too.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use super::Reconcile;
use crate::conditions::{Health, extra, merge, reason};
use crate::error::Error;

/// When to reconcile an object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Requeue {
    /// At the periodic re-check (`XIN_RESYNC_SECONDS`).
    Resync,
    /// After this long.
    After(Duration),
    /// Only when something it watches changes.
    AwaitChange,
}

/// A kind-specific condition of a pass (for example `CredentialsResolved`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Extra {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// An Event a pass publishes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    pub action: &'static str,
}

/// What one pass over an object concluded.
#[derive(Clone, Debug, PartialEq)]
pub struct Pass<S> {
    /// The status fields this operator owns (conditions are filled in by the runner); `None`
    /// when the object is gone and nothing is left to report.
    pub status: Option<S>,
    pub health: Health,
    pub extra: Vec<Extra>,
    pub requeue: Requeue,
    pub events: Vec<Note>,
}

impl<S> Pass<S> {
    pub fn new(status: S, health: Health) -> Self {
        Pass {
            status: Some(status),
            health,
            extra: vec![],
            requeue: Requeue::Resync,
            events: vec![],
        }
    }

    /// The pass of an object stalled on a problem only the user can fix.
    pub fn stalled(status: S, e: &Error) -> Self {
        Pass::new(
            status,
            Health::Stalled {
                reason: e.reason(),
                message: e.message(),
            },
        )
    }

    /// The object is gone: no status, no requeue.
    pub fn gone() -> Self {
        Pass {
            status: None,
            health: Health::Progressing {
                reason: reason::PROGRESSING,
                message: String::new(),
            },
            extra: vec![],
            requeue: Requeue::AwaitChange,
            events: vec![],
        }
    }

    pub fn with_extra(mut self, e: Extra) -> Self {
        self.extra.push(e);
        self
    }

    pub fn requeue(mut self, r: Requeue) -> Self {
        self.requeue = r;
        self
    }

    pub fn event(mut self, n: Note) -> Self {
        self.events.push(n);
        self
    }
}

/// The accessors of [`Reconcile`] every status type has in the same shape (all four kinds'
/// statuses have `conditions` and `observed_generation`).
macro_rules! status_fields {
    ($status:ty) => {
        fn conditions(s: &$status) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
            &s.conditions
        }
        fn conditions_mut(
            s: &mut $status,
        ) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
            &mut s.conditions
        }
        fn observed_generation_mut(s: &mut $status) -> &mut Option<i64> {
            &mut s.observed_generation
        }
    };
}
pub(crate) use status_fields;

/// The pass shown after an error that is not the user's: the current status, `Reconciling`
/// with reason `ApiError` and the error's message.
pub fn api_error_pass<K: Reconcile>(obj: &K, e: &Error) -> Pass<K::Status> {
    Pass::new(
        obj.current_status(),
        Health::Progressing {
            reason: reason::API_ERROR,
            message: format!(
                "retrying after an error ({}): {}",
                e.metric_label(),
                e.message()
            ),
        },
    )
}

/// What a pass ends in, for the tests' golden files: the status written (if any), when the
/// object is looked at again, and the Events published.
#[derive(Serialize)]
pub struct Outcome<S> {
    pub status: Option<S>,
    pub requeue: Requeue,
    pub stalled: bool,
    pub events: Vec<Note>,
}

impl<S: Clone> Pass<S> {
    /// The outcome of this pass over `obj` at `now`.
    pub fn outcome<K: Reconcile<Status = S>>(&self, obj: &K, now: &Time) -> Outcome<S> {
        Outcome {
            status: desired_status(obj, self, now),
            requeue: self.requeue,
            stalled: matches!(self.health, Health::Stalled { .. }),
            events: self.events.clone(),
        }
    }
}

/// The status to write after `pass`, or `None` when the current one already says it.
pub fn desired_status<K: Reconcile>(
    obj: &K,
    pass: &Pass<K::Status>,
    now: &Time,
) -> Option<K::Status> {
    let mut desired = pass.status.clone()?;
    let current = obj.owned_status();
    let generation = obj.meta().generation;
    let mut conds = pass.health.conditions(generation, now);
    conds.extend(
        pass.extra
            .iter()
            .map(|e| extra(e.type_, e.status, e.reason, &e.message, generation, now)),
    );
    *K::conditions_mut(&mut desired) = merge(K::conditions(&current), conds);
    (desired != current).then_some(desired)
}
