//! Types shared by the four kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret in the same namespace as the object that refers to it (for a Tenant: the
/// tenant's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A whole Secret in the same namespace as the object that refers to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Condition types every kind reports (kstatus).
pub mod condition {
    /// The object's children exist and are healthy.
    pub const READY: &str = "Ready";
    /// The operator is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// The operator cannot make progress without a change from the user.
    pub const STALLED: &str = "Stalled";
}

/// Fields of every kind's status.
pub trait HasConditions {
    fn conditions(&self) -> &[Condition];
    fn observed_generation(&self) -> Option<i64>;
}

macro_rules! impl_has_conditions {
    ($($t:ty),*) => {$(
        impl $crate::common::HasConditions for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
        }
    )*};
}
pub(crate) use impl_has_conditions;
