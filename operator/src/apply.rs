//! Server-side apply without needless writes, and pruning of children by label and owner UID.
//!
//! Before applying, the live object (as the watch holds it) is compared with the desired one:
//! when every field the operator sets already has the desired value, nothing is sent. Fields others set
//! (defaults, the HPA's `replicas`, other managers' labels) are not compared, so they never
//! cause a write, while an edit or removal of one of our fields does and is reverted. The
//! desired object also carries a digest of itself (`xin.dev/applied`): a field the operator
//! stops setting changes the digest, so the apply that removes it is sent too.

use std::fmt::Debug;

use std::sync::Arc;

use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::builders::{MANAGED_BY, MANAGER};
use crate::error::ApplyError;

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
        // The API server stores quantities canonically ("0.5" becomes "500m").
        (Value::String(l), Value::String(d)) => {
            l == d || quantity(l).is_some_and(|q| Some(q) == quantity(d))
        }
        (l, d) => l == d,
    }
}

/// The value of a Kubernetes quantity (`500m`, `1Gi`, `2`, `1e3`), in milli-units, when the
/// string is one; `None` for any other string.
pub fn quantity(s: &str) -> Option<i128> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "-" || num == "+" {
        return None;
    }
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let v: f64 = num.parse().ok()?;
    Some((v * mult * 1000.0).round() as i128)
}

/// Annotation with a digest of the object as the operator last applied it.
pub const APPLIED_ANNOTATION: &str = "xin.dev/applied";

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The digest of `desired` as applied, recorded in [`APPLIED_ANNOTATION`].
fn with_digest<K: Resource + Serialize + Clone>(desired: &K) -> Result<K, ApplyError> {
    let mut desired = desired.clone();
    let bytes = serde_json::to_vec(&desired).map_err(|e| ApplyError::Serialize {
        kind: kind_of(&desired),
        source: e,
    })?;
    let digest = crate::builders::hash_parts([bytes.as_slice()])[..16].to_string();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_ANNOTATION.into(), digest);
    Ok(desired)
}

fn kind_of<K: Resource>(_: &K) -> &'static str {
    std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("object")
}

fn matches<K: Serialize>(live: &K, want: &Value) -> bool {
    serde_json::to_value(live).is_ok_and(|have| contains(&have, want))
}

/// Whether `cached` already has every field `desired` sets (as [`apply`] compares them).
pub fn up_to_date<K>(cached: Option<&K>, desired: &K) -> bool
where
    K: Resource + Clone + Serialize,
{
    let Ok(desired) = with_digest(desired) else {
        return false;
    };
    let Ok(want) = serde_json::to_value(&desired) else {
        return false;
    };
    cached.is_some_and(|c| matches(c, &want))
}

/// Server-side applies `desired` unless the live object already has every field the operator
/// sets. `cached` is the object as the watch last saw it: when it matches, no request is made
/// at all. When it does not, the object is read fresh first (the watch may lag behind the
/// operator's own last write), so a write is sent only for a real difference.
/// Returns whether a write was made.
pub async fn apply<K>(api: &Api<K>, cached: Option<&K>, desired: &K) -> Result<bool, ApplyError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let kind = kind_of(desired);
    let desired = with_digest(desired)?;
    let want =
        serde_json::to_value(&desired).map_err(|e| ApplyError::Serialize { kind, source: e })?;
    let kube = |verb: &'static str, name: &str| {
        let name = name.to_string();
        move |source| ApplyError::Kube {
            verb,
            kind,
            name,
            source,
        }
    };
    if let Some(c) = cached {
        if matches(c, &want) {
            return Ok(false);
        }
        if let Some(live) = api.get_opt(&name).await.map_err(kube("read", &name))?
            && matches(&live, &want)
        {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(kube("apply", &name))?;
    Ok(true)
}

/// Applies every object of `desired` (concurrently), pruning nothing. Returns the writes made.
pub async fn apply_set<K>(
    api: &Api<K>,
    cached: &Store<K>,
    namespace: &str,
    desired: &[K],
) -> Result<usize, ApplyError>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let lookup = |name: &str| cached.get(&ObjectRef::new(name).within(namespace));
    let applied = futures::future::try_join_all(desired.iter().map(|d| {
        let live = lookup(&d.name_any());
        async move { apply(api, live.as_deref(), d).await }
    }))
    .await?;
    Ok(applied.into_iter().filter(|w| *w).count())
}

/// Applies every object of `desired` (concurrently), then deletes the objects of the same kind
/// in `namespace` that `owner_uid` owns, that carry our label and that are no longer desired.
/// `cached` is the watch's store of the kind. Never deletes an object the operator does not
/// own: the delete is conditional on the uid it saw.
pub async fn sync<K>(
    api: Api<K>,
    cached: &Store<K>,
    namespace: &str,
    owner_uid: &str,
    desired: Vec<K>,
) -> Result<usize, ApplyError>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let mut writes = apply_set(&api, cached, namespace, &desired).await?;
    for o in stale(cached.state(), namespace, owner_uid, &desired) {
        if delete(&api, o.as_ref()).await? {
            writes += 1;
        }
    }
    Ok(writes)
}

/// What [`sync`] prunes: of `seen` (the watch's objects of one kind), those in `namespace`
/// that carry our label and an owner reference to `owner_uid`, and whose name `desired` no
/// longer has. Anything else — another tenant's, a user's object without our label, one
/// owned by someone else — is never selected.
pub fn stale<K: Resource>(
    seen: Vec<Arc<K>>,
    namespace: &str,
    owner_uid: &str,
    desired: &[K],
) -> Vec<Arc<K>> {
    let wanted: Vec<String> = desired.iter().map(|d| d.name_any()).collect();
    seen.into_iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace))
        .filter(|o| owned_by(o.as_ref(), owner_uid) && !wanted.contains(&o.name_any()))
        .collect()
}

/// Deletes `obj` (as the watch saw it) unless it is already going, on the condition that the
/// live object is still the one with its uid. Returns whether a delete was sent.
pub async fn delete<K>(api: &Api<K>, obj: &K) -> Result<bool, ApplyError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    delete_with(api, obj, PropagationPolicy::Background).await
}

/// [`delete`] with a propagation policy: `Foreground` keeps the object (with a deletion
/// timestamp) until the garbage collector has removed its dependents, so "the Deployment is
/// gone" then means "its pods are gone".
pub async fn delete_with<K>(
    api: &Api<K>,
    obj: &K,
    propagation: PropagationPolicy,
) -> Result<bool, ApplyError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(false);
    }
    let name = obj.name_any();
    let dp = DeleteParams {
        propagation_policy: Some(propagation),
        preconditions: obj.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(true),
        // Gone already, or replaced by another object of the same name: not ours to delete.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(source) => Err(ApplyError::Kube {
            verb: "delete",
            kind: kind_of(obj),
            name,
            source,
        }),
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
    fn only_what_the_owner_no_longer_wants_and_carries_our_label_is_pruned() {
        use k8s_openapi::api::apps::v1::Deployment;
        let deployment = |ns: &str, name: &str, owner: Option<&str>, labelled: bool| {
            let mut d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
            }))
            .unwrap();
            if labelled {
                d.metadata.labels =
                    Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into());
            }
            if let Some(uid) = owner {
                d.metadata.owner_references = Some(vec![
                    serde_json::from_value(json!({"apiVersion": "xin.dev/v1alpha1",
                        "kind": "Tenant", "name": "acme", "uid": uid, "controller": true}))
                    .unwrap(),
                ]);
            }
            Arc::new(d)
        };
        let seen = vec![
            // The gateway after the last Channel went: ours, no longer desired.
            deployment("xin-acme", "xin-gateway", Some("uid-acme"), true),
            // Still desired.
            deployment("xin-acme", "xin-orchestrator", Some("uid-acme"), true),
            // A user's Deployment in the namespace (no label, or another owner).
            deployment("xin-acme", "their-app", None, false),
            deployment("xin-acme", "copied", Some("uid-acme"), false),
            deployment("xin-acme", "foreign", Some("uid-other"), true),
            // Another tenant's gateway.
            deployment("xin-globex", "xin-gateway", Some("uid-globex"), true),
        ];
        let desired = vec![(*seen[1]).clone()];
        let names: Vec<String> = stale(seen, "xin-acme", "uid-acme", &desired)
            .iter()
            .map(|d| d.name_any())
            .collect();
        assert_eq!(names, ["xin-gateway"]);
    }

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
    fn quantities_compare_by_value() {
        assert_eq!(quantity("500m"), quantity("0.5"));
        assert_eq!(quantity("1Gi"), quantity("1024Mi"));
        assert_eq!(quantity("1k"), quantity("1e3"));
        assert_eq!(quantity("web"), None);
        assert_eq!(quantity("2026-01-01T00:00:00Z"), None);
        assert!(contains(&json!({"cpu": "500m"}), &json!({"cpu": "0.5"})));
        assert!(!contains(&json!({"cpu": "500m"}), &json!({"cpu": "1"})));
        assert!(!contains(
            &json!({"image": "a:1"}),
            &json!({"image": "a:2"})
        ));
    }

    #[test]
    fn numbers_compare_by_value_and_empty_collections_match_absence() {
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
        assert!(contains(&json!({}), &json!({"a": {}, "b": [], "c": null})));
        assert!(!contains(&json!({}), &json!({"a": false})));
    }
}
