//! The worker's metrics (beside the shared HTTP ones and `xin_outbound_refused_total`), on
//! `AUTOMATION_METRICS_HOST:AUTOMATION_METRICS_PORT`. Labels are the tenant (one per process),
//! fixed sets (action kinds, outcomes, triggers) and rule names — the namespace's own
//! AutomationRules, which the platform team creates; a deleted rule's series are removed.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use xin_runtime::HttpMetrics;

pub const ACTIONS: [&str; 3] = ["webhook", "crm", "email"];
pub const OUTCOMES: [&str; 3] = ["succeeded", "failed", "dead_lettered"];
pub const TRIGGERS: [&str; 3] = ["schedule", "event", "manual"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tenant {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub tenant: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionOutcome {
    pub tenant: String,
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub tenant: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    pub tenant: String,
    pub trigger: String,
}

type FGauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
pub struct Metrics {
    pub tenant: String,
    pub queue_depth: Family<RuleLabel, Gauge>,
    pub queue_depth_all: Family<Tenant, Gauge>,
    pub oldest_pending: Family<Tenant, FGauge>,
    pub runs: Family<ActionOutcome, Counter>,
    pub failures: Family<ActionLabel, Counter>,
    pub duration: Family<ActionLabel, Histogram>,
    pub queued: Family<TriggerLabel, Counter>,
    pub events: Family<Tenant, Counter>,
}

impl Metrics {
    /// Registers every metric into `http`'s registry, each fixed label value at 0 already.
    pub fn new(tenant: &str, http: &HttpMetrics) -> Self {
        let m = Metrics {
            tenant: tenant.to_string(),
            queue_depth: Family::default(),
            queue_depth_all: Family::default(),
            oldest_pending: Family::default(),
            runs: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            queued: Family::default(),
            events: Family::default(),
        };
        let mut reg = http.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.register(
            "xin_automation_queue_depth",
            "Runs pending or running, per rule",
            m.queue_depth.clone(),
        );
        reg.register(
            "xin_automation_queue_depth_all",
            "Runs pending or running, all rules of the tenant",
            m.queue_depth_all.clone(),
        );
        reg.register(
            "xin_automation_oldest_pending_age_seconds",
            "Age of the oldest run pending or running (0 when none)",
            m.oldest_pending.clone(),
        );
        reg.register(
            "xin_automation_runs",
            "Attempts finished, by action kind and outcome (succeeded, failed = will retry, dead_lettered)",
            m.runs.clone(),
        );
        reg.register(
            "xin_automation_failures",
            "Failed attempts (retried or dead-lettered), by action kind",
            m.failures.clone(),
        );
        reg.register(
            "xin_automation_action_duration_seconds",
            "Duration of one action attempt, by action kind",
            m.duration.clone(),
        );
        reg.register(
            "xin_automation_runs_queued",
            "Runs queued, by trigger (schedule, event, manual)",
            m.queued.clone(),
        );
        reg.register(
            "xin_automation_events",
            "Orchestrator outbox events read",
            m.events.clone(),
        );
        drop(reg);
        let t = || Tenant {
            tenant: m.tenant.clone(),
        };
        let _ = m.queue_depth_all.get_or_create(&t());
        let _ = m.oldest_pending.get_or_create(&t());
        let _ = m.events.get_or_create(&t());
        for a in ACTIONS {
            let _ = m.failures.get_or_create(&m.action(a));
            for o in OUTCOMES {
                let _ = m.runs.get_or_create(&m.outcome(a, o));
            }
        }
        for tr in TRIGGERS {
            let _ = m.queued.get_or_create(&TriggerLabel {
                tenant: m.tenant.clone(),
                trigger: tr.into(),
            });
        }
        m
    }

    pub fn action(&self, a: &str) -> ActionLabel {
        ActionLabel {
            tenant: self.tenant.clone(),
            action: a.into(),
        }
    }

    pub fn outcome(&self, a: &str, o: &str) -> ActionOutcome {
        ActionOutcome {
            tenant: self.tenant.clone(),
            action: a.into(),
            outcome: o.into(),
        }
    }

    pub fn queued(&self, trigger: &str, n: u64) {
        self.queued
            .get_or_create(&TriggerLabel {
                tenant: self.tenant.clone(),
                trigger: trigger.into(),
            })
            .inc_by(n);
    }

    pub fn rule(&self, rule: &str) -> RuleLabel {
        RuleLabel {
            tenant: self.tenant.clone(),
            rule: rule.into(),
        }
    }

    pub fn tenant_label(&self) -> Tenant {
        Tenant {
            tenant: self.tenant.clone(),
        }
    }
}
