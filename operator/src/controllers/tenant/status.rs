//! A Tenant's status: its namespace, what it serves, and its health — computed by a pure
//! function from the validated Tenant and which workloads the API server reports available.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use xin_api::tenant::TenantStatus;

use super::validate::ValidatedTenant;
use crate::component::Component;
use crate::conditions::{Health, reason};
use crate::controllers::runner::{Pass, Requeue};
use crate::stores::Stores;

/// The workloads the Tenant runs now, and whether each has an available replica.
pub type Availability = BTreeMap<Component, bool>;

/// The components a Tenant runs: the orchestrator, the gateway while it has channels, the
/// automation worker while it has rules.
pub fn wanted(v: &ValidatedTenant) -> Vec<Component> {
    let mut out = vec![Component::Orchestrator];
    if v.channels > 0 {
        out.push(Component::Gateway);
    }
    if v.rules > 0 {
        out.push(Component::Automation);
    }
    out
}

/// Reads from the Deployments' watch which wanted workloads are available.
pub fn availability(v: &ValidatedTenant, stores: &Stores) -> Availability {
    wanted(v)
        .into_iter()
        .map(|c| {
            let d = stores
                .deployments
                .get(&ObjectRef::new(&c.workload_name()).within(&v.namespace));
            let available = d
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            (c, available >= 1)
        })
        .collect()
}

/// The pass of a Tenant whose children were applied.
pub fn pass(v: &ValidatedTenant, available: &Availability) -> Pass<TenantStatus> {
    let t = &v.tenant;
    let status = TenantStatus {
        observed_generation: t.metadata.generation,
        conditions: vec![],
        namespace: Some(v.namespace.clone()),
        channels: v.channels,
        automation_rules: v.rules,
        // What the database step did now, or what it did last (kept while it cannot run).
        database: match &v.workloads {
            Ok(i) => i.database.as_ref().map(|d| d.status.clone()),
            Err(_) => None,
        }
        .or_else(|| t.status.as_ref().and_then(|s| s.database.clone())),
    };
    let inputs = match &v.workloads {
        Ok(i) => i,
        // The server may be back in a moment: retry, without calling it the user's problem.
        Err(e) if e.reason == reason::DATABASE_UNAVAILABLE => {
            return Pass::new(
                status,
                Health::Progressing {
                    reason: e.reason,
                    message: e.message.clone(),
                },
            )
            .requeue(Requeue::After(Duration::from_secs(30)));
        }
        Err(e) => {
            return Pass::new(
                status,
                Health::Stalled {
                    reason: e.reason,
                    message: e.message.clone(),
                },
            );
        }
    };
    let rotated = inputs.database.as_ref().is_some_and(|d| d.rotated);
    let pass = pass_of_workloads(v, inputs, status, available);
    if rotated {
        return pass.event(crate::controllers::runner::Note {
            warning: false,
            reason: reason::DATABASE_PASSWORD_ROTATED,
            message: "the runtime database password was rotated; the workloads roll onto it".into(),
            action: "RotateDatabasePassword",
        });
    }
    pass
}

fn pass_of_workloads(
    v: &ValidatedTenant,
    inputs: &super::resolve::WorkloadInputs,
    status: TenantStatus,
    available: &Availability,
) -> Pass<TenantStatus> {
    let t = &v.tenant;
    let waiting: Vec<String> = available
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(c, _)| c.workload_name())
        .collect();
    if t.spec.suspend {
        return Pass::new(
            status,
            Health::Ready {
                reason: reason::SUSPENDED,
                message: "suspended: workloads are scaled to zero".into(),
            },
        );
    }
    if waiting.is_empty() {
        let message = format!(
            "{} channel(s), {} automation rule(s) served",
            inputs.routes.channels.len(),
            v.rules
        );
        return Pass::new(
            status,
            Health::Ready {
                reason: reason::RECONCILED,
                message,
            },
        );
    }
    Pass::new(
        status,
        Health::Progressing {
            reason: reason::PROGRESSING,
            message: format!("waiting for {} to become available", waiting.join(", ")),
        },
    )
    .requeue(Requeue::After(Duration::from_secs(10)))
}
