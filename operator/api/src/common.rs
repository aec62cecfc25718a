//! Types shared by the four kinds.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A DNS-1123 subdomain: what Kubernetes allows as the name of a Secret, ConfigMap or
/// IngressClass (the length is limited separately).
pub(crate) const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key of a Secret's or ConfigMap's data.
pub(crate) const DATA_KEY: &str = r"^[-._a-zA-Z0-9]+$";

/// A key in a Secret in the same namespace as the object that refers to it (for a Tenant: the
/// tenant's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253), pattern(DATA_KEY))]
    pub key: String,
}

/// A whole Secret in the same namespace as the object that refers to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))]
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

/// Schema of a container's `resources` (a `ResourceRequirements`) with the checks the API
/// server would otherwise only make on the Deployment built from it, after the object was
/// accepted: every value a quantity (`500m`, `2`, `1Gi`; an integer or a string), no request
/// negative, no limit zero or negative, resource names a container can have, no request above
/// its limit, and no resource claims (the pods Xin builds declare none).
pub(crate) fn container_resources_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = ResourceRequirements::json_schema(generator);
    let obj = schema.ensure_object();
    obj.insert("nullable".into(), Value::Bool(true));
    for (map, int_sign, quantity_sign, sign_message) in [
        (
            "limits",
            "self > 0",
            "quantity(self).isGreaterThan(quantity('0'))",
            "a limit must be greater than zero (omit the resource for no limit)",
        ),
        (
            "requests",
            "self >= 0",
            "!quantity(self).isLessThan(quantity('0'))",
            "a request must not be negative",
        ),
    ] {
        let Some(Value::Object(m)) = obj.get_mut("properties").and_then(|p| p.get_mut(map)) else {
            panic!("ResourceRequirements' schema has no {map} map");
        };
        m.insert("maxProperties".into(), json!(16));
        m.insert(
            "x-kubernetes-validations".into(),
            json!([{
                "rule": "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-') || k.contains('/'))",
                "message": "resource names are cpu, memory, ephemeral-storage, hugepages-<size> or a domain-qualified extended resource such as example.com/gpu",
            }]),
        );
        let Some(Value::Object(q)) = m.get_mut("additionalProperties") else {
            panic!("ResourceRequirements' {map} schema has no value schema");
        };
        q.insert("maxLength".into(), json!(64));
        q.insert(
            "x-kubernetes-validations".into(),
            json!([
                {
                    "rule": "type(self) == int || isQuantity(self)",
                    "message": "must be a quantity such as 500m, 2 or 1Gi",
                },
                {
                    "rule": format!("type(self) == int ? {int_sign} : (!isQuantity(self) || {quantity_sign})"),
                    "message": sign_message,
                },
            ]),
        );
    }
    obj.insert(
        "x-kubernetes-validations".into(),
        json!([
            {
                "rule": "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits) || !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || !quantity(string(self.requests[k])).isGreaterThan(quantity(string(self.limits[k]))))",
                "message": "a request must not exceed the limit of the same resource",
                "fieldPath": ".requests",
            },
            {
                "rule": "!has(self.claims) || size(self.claims) == 0",
                "message": "resource claims are not supported: the pods Xin builds declare no resourceClaims",
                "fieldPath": ".claims",
            },
        ]),
    );
    schema
}
