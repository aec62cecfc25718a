//! Server-side apply without needless writes, and pruning of children by label and owner UID.
//!
//! Before applying, the live object is read and compared with the desired one: when every
//! field the operator sets already has the desired value, nothing is sent. Fields others set
//! (defaults, the HPA's `replicas`, other managers' labels) are not compared, so they never
//! cause a write, while an edit or removal of one of our fields does and is reverted.

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::builders::{MANAGED_BY, MANAGER};
use crate::error::{Error, Result};

/// Whether `live` already contains everything `desired` sets.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(lv, dv),
            None => is_empty(dv),
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (Value::Null, d) => is_empty(d),
        (l, d) => l == d,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Server-side apply `desired` through `api` unless the live object already matches.
/// Returns whether a write was made.
pub async fn apply<K>(api: &Api<K>, desired: &K) -> Result<bool>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let want = serde_json::to_value(desired).map_err(|e| Error::Serialize("a child object", e))?;
    if let Some(live) = api.get_opt(&name).await? {
        let have =
            serde_json::to_value(&live).map_err(|e| Error::Serialize("a child object", e))?;
        if contains(&have, &want) {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(true)
}

/// Deletes `name` if it exists, carries our managed-by label and is owned by `owner_uid`.
/// Never deletes an object the operator does not own. Returns whether a delete was sent.
pub async fn prune<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(live) = api.get_opt(name).await? else {
        return Ok(false);
    };
    if !owned_by(&live, owner_uid) || live.meta().deletion_timestamp.is_some() {
        return Ok(false);
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The object carries our managed-by label and an owner reference with `owner_uid`.
pub fn owned_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    obj.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        && obj.owner_references().iter().any(|o| o.uid == owner_uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_and_foreign_fields_do_not_count_as_drift() {
        let live = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x", "terminationMessagePath": "/dev/termination-log"}]}}},
                          "metadata": {"labels": {"a": "1", "other": "2"}, "resourceVersion": "7"}});
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}},
                             "metadata": {"labels": {"a": "1"}}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn an_edited_or_removed_field_is_drift() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}, "metadata": {"labels": {"a": "1"}}});
        let edited = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "y"}]}}}, "metadata": {"labels": {"a": "1"}}});
        let removed = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}, "metadata": {}});
        let extra_container = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}}, "metadata": {"labels": {"a": "1"}}});
        assert!(!contains(&edited, &desired));
        assert!(!contains(&removed, &desired));
        assert!(!contains(&extra_container, &desired));
    }

    #[test]
    fn numbers_compare_by_value_and_empty_collections_match_absence() {
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
        assert!(contains(&json!({}), &json!({"a": {}, "b": [], "c": null})));
        assert!(!contains(&json!({}), &json!({"a": false})));
    }
}
