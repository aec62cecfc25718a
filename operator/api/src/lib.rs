//! The `xin.dev/v1alpha1` API: `Tenant`, `Channel`, `AutomationRule` and `IngestionJob`.
//! Shared by the operator (which reconciles them) and the workloads (which report progress in
//! their status). `crds/` is generated from these types by `cargo run -p xin-operator --bin crdgen`.
#![forbid(unsafe_code)]
// clippy misreads repeated `printcolumn(type_ = ...)` in the kube derive as duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod automation;
pub mod channel;
pub mod common;
pub mod destination;
pub mod ingestion;
pub mod routes;
pub mod secret;
pub mod tenant;
pub mod widget;

pub use automation::{AutomationRule, AutomationRuleSpec, AutomationRuleStatus};
pub use channel::{Channel, ChannelSpec, ChannelStatus, ChannelType};
pub use common::{HasConditions, SecretKeyRef, SecretRef};
pub use ingestion::{IngestionJob, IngestionJobSpec, IngestionJobStatus};
pub use secret::Redacted;
pub use tenant::{Tenant, TenantSpec, TenantStatus};

/// The API group.
pub const GROUP: &str = "xin.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD of the API, in the order `crds/` lists them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        Tenant::crd(),
        Channel::crd(),
        AutomationRule::crd(),
        IngestionJob::crd(),
    ]
}
