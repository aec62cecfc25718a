//! What a Tenant's spec and namespace hold, read from the watches' stores: the namespace's
//! owner, the Channels the Channel controller marked routable (with their keys and
//! credentials), the AutomationRules, and the Secret values the workloads' configuration
//! digests cover.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use xin_api::channel::Channel;
use xin_api::common::condition::STALLED;
use xin_api::routes::Routes;
use xin_api::tenant::Tenant;

use xin_api::tenant::ADOPT_NAMESPACE_ANNOTATION;

use super::database::{Database, DatabasePlan};
use crate::builders::tenant::{
    DATABASE_ROTATION_HANDLED, DATABASE_SECRET, DATABASE_URL_KEY, SIGNING_KEY, SIGNING_SECRET,
    TENANT_UID_ANNOTATION,
};
use crate::component::Component;
use crate::controllers::Context;
use crate::controllers::resolve::{secret_key, secret_string};
use crate::error::{Error, ResolveError};

/// What the Tenant's pass works from.
#[derive(Debug)]
pub struct Resolved {
    pub namespace: String,
    pub channels: i32,
    pub rules: i32,
    /// The Secrets the rules name, sorted and unique.
    pub rule_secrets: Vec<String>,
    /// What the workloads need, or the user-fixable reason it cannot be read.
    pub workloads: Result<WorkloadInputs, Error>,
}

/// Everything the workloads' objects are built from besides the spec.
#[derive(Clone, PartialEq)]
pub struct WorkloadInputs {
    /// The database URL and LLM key (and the embedding key below), only to digest them into the pod templates' hash (a
    /// changed Secret rolls the pods); never rendered. The URL is set by the database step.
    pub db_url: Vec<u8>,
    /// What the database step works from, and (once it ran) what it produced.
    pub database_plan: DatabasePlan,
    pub database: Option<Database>,
    pub llm_key: Vec<u8>,
    /// The embedding API key, like the LLM key only digested.
    pub embedding_key: Vec<u8>,
    /// The tenant signing key: the existing one, or a fresh one when there is none yet.
    pub signing_key: Vec<u8>,
    /// The routes of the channels that resolve and that the Channel controller has not marked
    /// `Stalled`.
    pub routes: Routes,
    /// Channels that are not being deleted and whose Ingress the platform allows (their
    /// Ingress hosts).
    pub live_channels: Vec<Channel>,
    /// No channel is routable yet and no gateway exists: the first gateway waits for its
    /// first route rather than being rolled again moments later.
    pub gateway_waits: bool,
}

// The URL, the LLM key, the signing key and the routes hold secrets: never shown.
impl std::fmt::Debug for WorkloadInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::value;
        f.debug_struct("WorkloadInputs")
            .field("db_url", &value(&self.db_url))
            .field("database_plan", &self.database_plan)
            .field("database", &self.database)
            .field("llm_key", &value(&self.llm_key))
            .field("embedding_key", &value(&self.embedding_key))
            .field("signing_key", &value(&self.signing_key))
            .field("routes", &self.routes)
            .field(
                "live_channels",
                &self
                    .live_channels
                    .iter()
                    .map(|c| c.name_any())
                    .collect::<Vec<_>>(),
            )
            .field("gateway_waits", &self.gateway_waits)
            .finish()
    }
}

/// Whether the Channel controller has marked `ch` as not servable (`Stalled`: a credential or
/// its key is missing, or its Tenant is not ready for it). A channel it has not judged yet, or
/// whose status lags behind an edit, stays served as long as its route resolves: an edit
/// (suspending it, a new rate limit) must not take it off the gateway for a moment.
pub fn routable(ch: &Channel) -> bool {
    let stalled = ch.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == STALLED && c.status == "True")
    });
    !stalled
}

/// The namespace is free, already this Tenant's, or annotated for it to adopt: never take over
/// another Tenant's, nor a namespace someone made for something else.
fn check_owner(
    existing: Option<&Namespace>,
    ns: &str,
    tenant: &str,
    uid: &str,
) -> Result<(), ResolveError> {
    let Some(existing) = existing else {
        return Ok(());
    };
    let a = existing.annotations();
    match a.get(TENANT_UID_ANNOTATION).filter(|o| !o.is_empty()) {
        Some(owner) if owner == uid => Ok(()),
        Some(owner) => Err(ResolveError::NamespaceTaken {
            namespace: ns.into(),
            owner: owner.clone(),
        }),
        None if a.get(ADOPT_NAMESPACE_ANNOTATION).map(String::as_str) == Some(tenant) => Ok(()),
        None => Err(ResolveError::NamespaceNotAdoptable {
            namespace: ns.into(),
            tenant: tenant.into(),
            annotation: ADOPT_NAMESPACE_ANNOTATION,
        }),
    }
}

/// Reads everything a pass needs. Errors only the user can fix are returned inside
/// [`Resolved::workloads`] (the namespace is set up regardless); others end the pass.
pub async fn resolve(
    tenant: &Tenant,
    namespace: String,
    ctx: &Context,
) -> Result<Resolved, ResolveError> {
    let stores = &ctx.stores;
    let uid = tenant.uid().unwrap_or_default();
    // The watch sees only namespaces the operator labelled: one it has not (made by someone
    // else, or not made yet) is asked for, so it is never taken without the annotation.
    let existing = match stores.namespaces.get(&ObjectRef::new(&namespace)) {
        Some(n) => Some(n),
        None => Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&namespace)
            .await
            .map_err(|source| ResolveError::Kube {
                what: format!("namespace {namespace}"),
                source,
            })?
            .map(std::sync::Arc::new),
    };
    check_owner(existing.as_deref(), &namespace, &tenant.name_any(), &uid)?;
    // The operator's rights in the namespace, before its Secrets are read.
    super::access::ensure(tenant, &namespace, existing.as_deref(), ctx)
        .await
        .map_err(|e| ResolveError::Access {
            namespace: namespace.clone(),
            message: e.to_string(),
        })?;
    let in_ns = |o: &Option<String>| o.as_deref() == Some(namespace.as_str());
    let channels: Vec<Channel> = stores
        .channels
        .state()
        .iter()
        .filter(|c| in_ns(&c.namespace()))
        .map(|c| c.as_ref().clone())
        .collect();
    let rules: Vec<_> = stores
        .rules
        .state()
        .into_iter()
        .filter(|r| in_ns(&r.namespace()))
        .collect();
    let secrets = stores.secrets.store(&namespace).await?;
    // Never a platform Secret, whatever a rule names (such a rule is refused).
    let rule_secrets: std::collections::BTreeSet<String> = rules
        .iter()
        .flat_map(|r| crate::controllers::automation::secret_names(r))
        .filter(|n| {
            crate::controllers::automation::usable_by_rules(
                crate::controllers::resolve::secret(&secrets, &namespace, n).as_deref(),
                n,
                tenant,
                &ctx.config,
            )
        })
        .collect();
    let object = crate::error::object_name(tenant);
    let workloads = match workload_inputs(tenant, &namespace, &channels, &secrets, ctx).await {
        Err(e) if !e.user_fixable() => return Err(e),
        w => w.map_err(|e| Error::new(&object, e)),
    };
    Ok(Resolved {
        namespace,
        channels: channels.len() as i32,
        rules: rules.len() as i32,
        rule_secrets: rule_secrets.into_iter().collect(),
        workloads,
    })
}

async fn workload_inputs(
    tenant: &Tenant,
    ns: &str,
    channels: &[Channel],
    secrets: &Store<Secret>,
    ctx: &Context,
) -> Result<WorkloadInputs, ResolveError> {
    let database_plan = database_plan(tenant, ns, secrets)?;
    let llm_key = match tenant
        .spec
        .llm
        .as_ref()
        .and_then(|l| l.api_key_secret_ref.as_ref())
    {
        Some(r) => secret_key(secrets, ns, r)?,
        None => Vec::new(),
    };
    let embedding_key = match tenant
        .spec
        .embeddings
        .as_ref()
        .and_then(|e| e.api_key_secret_ref.as_ref())
    {
        Some(r) => secret_key(secrets, ns, r)?,
        None => Vec::new(),
    };
    let signing_key = signing_key(secrets, ns, ctx).await?;

    let now = ctx.now().0;
    // A Channel whose Ingress the platform refuses (a host not the Tenant's, an annotation off
    // the allowlist) is Stalled by its own controller: it gets no Ingress rule here either.
    let all_channels = ctx.stores.channels.state();
    let live_channels: Vec<Channel> = channels
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| {
            crate::controllers::ingress::check(
                c,
                tenant,
                &ctx.config,
                all_channels.iter().map(|o| o.as_ref()),
            )
            .is_ok()
        })
        .cloned()
        .collect();
    let mut routes = Routes {
        tenant: tenant.name_any(),
        channels: vec![],
    };
    for ch in live_channels.iter().filter(|c| routable(c)) {
        // A route that does not resolve (a Secret missing) is left out; the Channel's own pass
        // says why in its status.
        if let Ok(r) = crate::controllers::resolve::channel_route(secrets, ch, now) {
            routes.channels.push(r);
        }
    }
    let gateway_exists = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(&Component::Gateway.workload_name()).within(ns))
        .is_some()
        || crate::controllers::resolve::secret(secrets, ns, xin_api::routes::ROUTES_SECRET)
            .is_some();
    let gateway_waits = !channels.is_empty() && routes.channels.is_empty() && !gateway_exists;
    Ok(WorkloadInputs {
        db_url: vec![],
        database_plan,
        database: None,
        llm_key,
        embedding_key,
        signing_key,
        routes,
        live_channels,
        gateway_waits,
    })
}

/// The team's database URLs, or the runtime URL the operator wrote for a managed database.
fn database_plan(
    tenant: &Tenant,
    ns: &str,
    secrets: &Store<Secret>,
) -> Result<DatabasePlan, ResolveError> {
    let d = &tenant.spec.database;
    if let (Some(runtime), Some(owner)) = (&d.url_secret_ref, &d.owner_url_secret_ref) {
        return Ok(DatabasePlan::External {
            runtime_url: secret_string(secrets, ns, runtime)?,
            owner_url: secret_string(secrets, ns, owner)?,
        });
    }
    let existing = crate::controllers::resolve::secret(secrets, ns, DATABASE_SECRET);
    Ok(DatabasePlan::Managed {
        existing_url: existing
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(DATABASE_URL_KEY))
            .and_then(|v| String::from_utf8(v.0.clone()).ok()),
        rotation_handled: existing
            .as_ref()
            .and_then(|s| s.annotations().get(DATABASE_ROTATION_HANDLED).cloned()),
    })
}

/// The signing key is generated once and then only read back. It reaches the workloads as an
/// environment variable, so it is text (URL-safe base64 of 32 random bytes); a key that is not
/// text (written by an earlier version) could not be used and is replaced. Before a new key is
/// made, the Secret is read fresh: the watch may not show a key written moments ago.
async fn signing_key(
    secrets: &Store<Secret>,
    ns: &str,
    ctx: &Context,
) -> Result<Vec<u8>, ResolveError> {
    let usable = |s: Option<&Secret>| match s.and_then(|s| s.data.as_ref()?.get(SIGNING_KEY)) {
        Some(ByteString(k)) if !k.is_empty() && std::str::from_utf8(k).is_ok() => Some(k.clone()),
        _ => None,
    };
    let cached = crate::controllers::resolve::secret(secrets, ns, SIGNING_SECRET);
    if let Some(k) = usable(cached.as_deref()) {
        return Ok(k);
    }
    let live = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(SIGNING_SECRET)
        .await
        .map_err(|source| ResolveError::Kube {
            what: format!("Secret {ns}/{SIGNING_SECRET}"),
            source,
        })?;
    Ok(
        usable(live.as_ref())
            .unwrap_or_else(|| crate::controllers::channel::new_key().into_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ns(annotations: &[(&str, &str)]) -> Namespace {
        let mut n = Namespace::default();
        n.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        n
    }

    #[test]
    fn a_namespace_is_adopted_only_when_annotated_for_this_tenant() {
        let check = |n: Option<Namespace>| check_owner(n.as_ref(), "xin-acme", "acme", "uid-1");
        // None yet: the Tenant makes it. Already its own: fine.
        assert!(check(None).is_ok());
        assert!(check(Some(ns(&[(TENANT_UID_ANNOTATION, "uid-1")]))).is_ok());
        // Made by someone else, or released by a deleted Tenant: refused, naming the way out.
        let e = check(Some(ns(&[]))).unwrap_err();
        assert!(matches!(e, ResolveError::NamespaceNotAdoptable { .. }));
        assert!(e.to_string().contains("xin.dev/adopt=acme"), "{e}");
        assert!(check(Some(ns(&[(ADOPT_NAMESPACE_ANNOTATION, "globex")]))).is_err());
        // Annotated for this Tenant: adopted.
        assert!(check(Some(ns(&[(ADOPT_NAMESPACE_ANNOTATION, "acme")]))).is_ok());
        // Another Tenant's: never, annotation or not.
        let e = check(Some(ns(&[
            (TENANT_UID_ANNOTATION, "uid-2"),
            (ADOPT_NAMESPACE_ANNOTATION, "acme"),
        ])))
        .unwrap_err();
        assert!(matches!(e, ResolveError::NamespaceTaken { .. }));
    }
}
