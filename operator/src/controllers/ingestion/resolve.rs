//! What an IngestionJob refers to: its Job as it is (from the watch, confirmed by the API
//! server before "no Job" is acted on) and, before the Job is created, its sources' ConfigMap
//! and Secret.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use xin_api::ingestion::IngestionJob;

use crate::controllers::Context;
use crate::controllers::resolve::secret_exists;
use crate::error::ResolveError;

/// The IngestionJob's Job as the watch shows it.
pub(super) fn cached_job(ctx: &Context, ns: &str, name: &str) -> Option<std::sync::Arc<Job>> {
    ctx.stores.jobs.get(&ObjectRef::new(name).within(ns))
}

/// The IngestionJob's Job read from the API server.
pub(super) async fn read_job(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<Job>, ResolveError> {
    Api::<Job>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| ResolveError::Kube {
            what: format!("Job {ns}/{name}"),
            source,
        })
}

/// What the sources refer to exists.
pub(super) async fn resolve_sources(
    ij: &IngestionJob,
    ctx: &Context,
) -> std::result::Result<(), ResolveError> {
    let ns = ij.namespace().unwrap_or_default();
    let src = &ij.spec.source;
    if let Some(cm) = &src.config_map {
        // Read once, when the Job is about to be created: no watch of every ConfigMap.
        let found = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&cm.name)
            .await
            .map_err(|source| ResolveError::Kube {
                what: format!("ConfigMap {ns}/{}", cm.name),
                source,
            })?
            .ok_or_else(|| ResolveError::ConfigMapNotFound {
                namespace: ns.clone(),
                name: cm.name.clone(),
            })?;
        let have = |k: &String| {
            found.data.as_ref().is_some_and(|d| d.contains_key(k))
                || found
                    .binary_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(k))
        };
        if let Some(missing) = cm.keys.iter().find(|k| !have(k)) {
            return Err(ResolveError::ConfigMapKeyMissing {
                namespace: ns.clone(),
                name: cm.name.clone(),
                key: missing.clone(),
            });
        }
    }
    let secret = src
        .url
        .as_ref()
        .and_then(|u| u.headers_secret_ref.as_ref())
        .or(src.s3.as_ref().map(|s| &s.credentials_secret_ref));
    if let Some(r) = secret {
        secret_exists(&ctx.stores.secrets.store(&ns).await?, &ns, &r.name)?;
    }
    Ok(())
}
