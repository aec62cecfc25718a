//! Figures read from the watches' stores when `/metrics` is scraped, so they are never stale
//! and cost nothing between scrapes:
//! - `xin_operator_object_condition{kind,namespace,name,tenant,condition,status,reason}`: 1
//!   per object and condition, as kube-state-metrics shows built-in kinds. "Which Tenants are
//!   not Ready, and why" is `xin_operator_object_condition{kind="Tenant",condition="Ready",
//!   status="False"}`.
//! - `xin_operator_ingestion_lag_seconds{tenant}`: the age of the tenant's oldest IngestionJob
//!   that has not finished (neither `Succeeded` nor `Failed`), 0 when none: the ingestion-lag
//!   SLI.
//!
//! Only the replica that runs the controllers has the stores; a standby exports neither.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use xin_api::ingestion::Phase;
use xin_api::tenant::tenant_of_namespace;

use crate::controllers::runner::Reconcile;
use crate::stores::Stores;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub tenant: String,
    pub condition: String,
    pub status: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

/// The stores, once the controllers have them.
#[derive(Clone, Default)]
pub struct StoreFigures(pub(crate) Arc<OnceLock<Stores>>);

impl std::fmt::Debug for StoreFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFigures")
            .field("stores", &self.0.get().is_some())
            .finish()
    }
}

/// Adds one series per condition of every object of kind `K` in `store`.
fn conditions_of<K: Reconcile>(
    store: &kube::runtime::reflector::Store<K>,
    family: &Family<ConditionLabels, Gauge>,
) {
    let kind = K::kind(&()).to_string();
    for obj in store.state() {
        let namespace = obj.namespace().unwrap_or_default();
        let tenant = if namespace.is_empty() {
            obj.name_any()
        } else {
            tenant_of_namespace(&namespace)
                .unwrap_or_default()
                .to_string()
        };
        for c in K::conditions(&obj.owned_status()) {
            family
                .get_or_create(&ConditionLabels {
                    kind: kind.clone(),
                    namespace: namespace.clone(),
                    name: obj.name_any(),
                    tenant: tenant.clone(),
                    condition: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                })
                .set(1);
        }
    }
}

/// The age in seconds of each tenant's oldest unfinished IngestionJob at `now` (0 for a
/// Tenant with none).
pub fn ingestion_lag(stores: &Stores, now: Timestamp) -> BTreeMap<String, f64> {
    let mut lag: BTreeMap<String, f64> = stores
        .tenants
        .state()
        .iter()
        .map(|t| (t.name_any(), 0.0))
        .collect();
    for ij in stores.ingestion_jobs.state() {
        let finished = matches!(
            ij.status.as_ref().and_then(|s| s.phase.as_ref()),
            Some(Phase::Succeeded | Phase::Failed)
        );
        let (Some(created), false) = (ij.metadata.creation_timestamp.as_ref(), finished) else {
            continue;
        };
        let Some(tenant) = ij
            .namespace()
            .as_deref()
            .and_then(tenant_of_namespace)
            .map(str::to_string)
        else {
            continue;
        };
        let age = (now.as_millisecond() - created.0.as_millisecond()).max(0) as f64 / 1000.0;
        let e = lag.entry(tenant).or_default();
        *e = e.max(age);
    }
    lag
}

impl Collector for StoreFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stores) = self.0.get() else {
            return Ok(());
        };
        let conditions = Family::<ConditionLabels, Gauge>::default();
        conditions_of(&stores.tenants, &conditions);
        conditions_of(&stores.channels, &conditions);
        conditions_of(&stores.rules, &conditions);
        conditions_of(&stores.ingestion_jobs, &conditions);
        conditions.encode(encoder.encode_descriptor(
            "object_condition",
            "1 per object and condition, by kind, namespace, name, tenant, condition, status and reason",
            None,
            MetricType::Gauge,
        )?)?;
        let lag = Family::<TenantLabel, Gauge<f64, AtomicU64>>::default();
        for (tenant, seconds) in ingestion_lag(stores, Timestamp::now()) {
            lag.get_or_create(&TenantLabel { tenant }).set(seconds);
        }
        lag.encode(encoder.encode_descriptor(
            "ingestion_lag_seconds",
            "Age of the tenant's oldest IngestionJob not yet Succeeded or Failed (0 when none)",
            None,
            MetricType::Gauge,
        )?)
    }
}
