//! The decommission finalizer: on before any side effect, and off only after the product
//! runbook's decommission sequence succeeded — stop automations, invalidate every token
//! (webhook keys, routes, the tenant signing key), wait for the workloads to stop, then honour
//! `deletionPolicy` (the database, then the namespace).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::info;
use xin_api::channel::Channel;
use xin_api::tenant::{DeletionPolicy, Tenant, TenantStatus, tenant_namespace};

use crate::apply::{delete, delete_with, owned_by};
use crate::builders::MANAGER;
use crate::builders::tenant::{DATABASE_SECRET, SIGNING_SECRET, TENANT_UID_ANNOTATION};
use crate::component::Component;
use crate::conditions::{Health, reason, types};
use crate::controllers::Context;
use crate::controllers::runner::{
    Extra, Note, Pass, Reconcile, Requeue, api_error_pass, desired_status, patch_status,
};
use crate::error::{ApplyError, Cause, Error, FinalizeError};

pub const FINALIZER: &str = "xin.dev/decommission";

fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> FinalizeError {
    let what = what.into();
    move |source| FinalizeError::Kube { what, source }
}

/// Adds the finalizer when it is missing.
///
/// Server-side apply: `metadata.finalizers` is a set, so only our entry is touched, with no
/// read-modify-write and no conflict with other writers. The body carries the uid, so a
/// Tenant deleted meanwhile is never recreated.
pub async fn ensure(tenant: &Tenant, ctx: &Context) -> Result<(), FinalizeError> {
    if tenant.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": Tenant::api_version(&()),
        "kind": Tenant::kind(&()),
        "metadata": {"name": tenant.name_any(), "uid": tenant.uid(), "finalizers": [FINALIZER]},
    });
    Api::<Tenant>::all(ctx.client.clone())
        .patch(
            &tenant.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube("adding the finalizer"))?;
    Ok(())
}

/// Removes exactly our entry: reads the Tenant fresh and deletes it with a tested JSON patch,
/// so the entry goes even if another writer (an older operator, a user) added it.
async fn remove(tenant: &Tenant, ctx: &Context) -> Result<(), FinalizeError> {
    let api = Api::<Tenant>::all(ctx.client.clone());
    let name = tenant.name_any();
    let Some(live) = api
        .get_opt(&name)
        .await
        .map_err(kube("reading the Tenant"))?
    else {
        return Ok(());
    };
    let Some(i) = live.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    if live.uid() != tenant.uid() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]))
    .expect("a literal JSON patch");
    match api
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube("removing the finalizer")(e)),
    }
}

fn from_apply(e: ApplyError) -> FinalizeError {
    match e {
        ApplyError::Kube {
            verb,
            kind,
            name,
            source,
        } => FinalizeError::Kube {
            what: format!("{verb} {kind} {name}"),
            source,
        },
        other => FinalizeError::Step(other.to_string()),
    }
}

/// Deletes `component`'s HPA and Deployment (if this Tenant owns them) in the foreground.
/// Whether its Deployment still exists (its pods are still stopping). Read live: one created
/// moments ago may not be in the watch yet.
async fn stop_workload(
    component: Component,
    ns: &str,
    uid: &str,
    ctx: &Context,
) -> Result<bool, FinalizeError> {
    let name = component.workload_name();
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), ns);
    if let Some(h) = hpas
        .get_opt(&name)
        .await
        .map_err(kube(format!("reading HPA {name}")))?
        && owned_by(&h, uid)
    {
        delete(&hpas, &h).await.map_err(from_apply)?;
    }
    let Some(d) = deployments
        .get_opt(&name)
        .await
        .map_err(kube(format!("reading Deployment {name}")))?
    else {
        return Ok(false);
    };
    if !owned_by(&d, uid) {
        return Ok(false);
    }
    delete_with(&deployments, &d, PropagationPolicy::Foreground)
        .await
        .map_err(from_apply)?;
    Ok(true)
}

/// Decommissions a Tenant being deleted, then lets it go.
pub async fn decommission(
    tenant: &Tenant,
    ctx: &Context,
) -> Result<Pass<TenantStatus>, FinalizeError> {
    if !tenant.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Pass::gone());
    }
    let (client, stores) = (&ctx.client, &ctx.stores);
    // The watch may still show a Tenant whose decommission just finished: ask the API server
    // before running it again.
    let live = Api::<Tenant>::all(client.clone())
        .get_opt(&tenant.name_any())
        .await
        .map_err(kube("reading the Tenant"))?;
    if !live
        .is_some_and(|t| t.uid() == tenant.uid() && t.finalizers().iter().any(|f| f == FINALIZER))
    {
        return Ok(Pass::gone());
    }
    let uid = tenant.uid().unwrap_or_default();
    let ns = tenant_namespace(&tenant.name_any());
    info!(tenant = %tenant.name_any(), namespace = %ns, policy = ?tenant.spec.deletion_policy, "decommissioning tenant");
    // Say so on the object first: the steps below can take a while, or fail.
    let progress =
        Pass::new(tenant.owned_status(), decommission_health(tenant)).with_extra(Extra {
            type_: types::DECOMMISSIONING,
            status: true,
            reason: reason::DECOMMISSIONING,
            message: "stopping automations, deleting secrets, stopping the workloads, then the database per deletionPolicy"
                .into(),
        });
    if let Some(s) = desired_status(tenant, &progress, &ctx.now()) {
        patch_status(&Api::<Tenant>::all(client.clone()), tenant, &s)
            .await
            .map_err(|e| FinalizeError::Step(e.to_string()))?;
    }

    // 1. Stop automations: the worker goes first, so no scheduled action runs after this. Read
    //    live: one created moments ago may not be in the watch yet.
    stop_workload(Component::Automation, &ns, &uid, ctx).await?;

    // 2. Invalidate tokens: generated webhook Secrets (owned by this tenant's Channels), the
    //    gateway routes and the tenant signing Secret.
    let channel_uids: Vec<String> = stores
        .channels
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(ns.as_str()))
        .filter_map(|c| c.uid())
        .collect();
    let tokens = [
        xin_api::routes::ROUTES_SECRET.to_string(),
        SIGNING_SECRET.to_string(),
        DATABASE_SECRET.to_string(),
    ];
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let store = stores
        .secrets
        .store(&ns)
        .await
        .map_err(|e| FinalizeError::Step(e.to_string()))?;
    for s in store.state() {
        let webhook = channel_uids.iter().any(|u| owned_by(s.as_ref(), u))
            && s.owner_references()
                .iter()
                .any(|o| o.kind == Channel::kind(&()));
        let tenant_token = owned_by(s.as_ref(), &uid) && tokens.contains(&s.name_any());
        if webhook || tenant_token {
            delete(&secrets, s.as_ref()).await.map_err(from_apply)?;
        }
    }

    // 3. The workloads stop, and the data waits for them: every Deployment is deleted in the
    //    foreground (it stays until its pods are gone), and the database is not touched while
    //    one remains. A running ingestion Job (the operator may not delete Jobs) loses its
    //    sessions with the database below and goes with its namespace or its IngestionJob.
    let mut running = Vec::new();
    for c in [
        Component::Gateway,
        Component::Orchestrator,
        Component::Automation,
    ] {
        if stop_workload(c, &ns, &uid, ctx).await? {
            running.push(c.workload_name());
        }
    }
    if !running.is_empty() {
        let data = match tenant.spec.deletion_policy {
            DeletionPolicy::Delete => "dropped",
            DeletionPolicy::Retain => "closed",
        };
        return Ok(
            Pass::new(tenant.owned_status(), decommission_health(tenant))
                .with_extra(Extra {
                    type_: types::DECOMMISSIONING,
                    status: true,
                    reason: reason::DECOMMISSIONING,
                    message: format!(
                        "waiting for {} to stop before the database is {data}",
                        running.join(", ")
                    ),
                })
                .requeue(Requeue::After(std::time::Duration::from_secs(2))),
        );
    }

    // 4. The data: a platform-managed database dropped with its roles (`Delete`), or kept with
    //    its runtime login disabled (`Retain`); either way no session of the tenant remains.
    super::database::decommission(tenant, ctx)
        .await
        .map_err(FinalizeError::Step)?;

    // 5. The namespace: removed with everything in it, or kept (with the user's data) and
    //    released, so only a Tenant explicitly allowed to (the adoption annotation) takes it.
    let namespaces = Api::<Namespace>::all(client.clone());
    let live_ns = namespaces
        .get_opt(&ns)
        .await
        .map_err(kube(format!("reading namespace {ns}")))?;
    if let Some(n) = live_ns
        && n.annotations().get(TENANT_UID_ANNOTATION) == Some(&uid)
    {
        match tenant.spec.deletion_policy {
            DeletionPolicy::Delete => {
                if n.metadata.deletion_timestamp.is_none() {
                    namespaces
                        .delete(&ns, &DeleteParams::background())
                        .await
                        .map_err(kube(format!("deleting namespace {ns}")))?;
                }
            }
            DeletionPolicy::Retain => {
                let patch = json!({"metadata": {"annotations": {
                    TENANT_UID_ANNOTATION: null,
                    xin_api::tenant::ADOPT_NAMESPACE_ANNOTATION: null,
                }}});
                namespaces
                    .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube(format!("releasing namespace {ns}")))?;
                // Last: the operator's own rights in the namespace it no longer manages.
                super::access::release(&ns, ctx)
                    .await
                    .map_err(kube(format!("removing the operator's RoleBinding in {ns}")))?;
            }
        }
    }
    let fate = match tenant.spec.deletion_policy {
        DeletionPolicy::Delete => "deleted",
        DeletionPolicy::Retain => "retained",
    };
    ctx.event(
        tenant.object_ref(&()),
        kube::runtime::events::EventType::Normal,
        reason::DECOMMISSIONING,
        format!(
            "decommissioned: automations stopped, secrets deleted, database and namespace {ns} {fate}"
        ),
        "Decommission",
    )
    .await;
    remove(tenant, ctx).await?;
    stores.secrets.forget(&ns);
    Ok(Pass::gone())
}

/// The Ready/Reconciling/Stalled part while the Tenant is being deleted: what it was.
fn decommission_health(tenant: &Tenant) -> Health {
    let s = tenant.owned_status();
    let ready = s
        .conditions
        .iter()
        .find(|c| c.type_ == xin_api::common::condition::READY);
    match ready {
        Some(c) if c.status == "True" => Health::Ready {
            reason: reason_const(&c.reason),
            message: c.message.clone(),
        },
        Some(c) => Health::Progressing {
            reason: reason_const(&c.reason),
            message: c.message.clone(),
        },
        None => Health::Progressing {
            reason: reason::DECOMMISSIONING,
            message: "decommissioning".into(),
        },
    }
}

/// Condition reasons are constants; a reason read back from the object maps onto one.
fn reason_const(r: &str) -> &'static str {
    reason::ALL
        .iter()
        .find(|c| **c == r)
        .copied()
        .unwrap_or(reason::DECOMMISSIONING)
}

/// A failed pass, shown on the Tenant: a failed decommission says why the Tenant is not going
/// away, on the object and as an Event.
pub fn error_pass(tenant: &Tenant, e: &Error) -> Pass<TenantStatus> {
    if !matches!(*e.source, Cause::Finalize(_)) || tenant.metadata.deletion_timestamp.is_none() {
        return api_error_pass(tenant, e);
    }
    let message = format!(
        "decommission failed, the Tenant stays until it succeeds: {}",
        e.message()
    );
    Pass::new(tenant.owned_status(), decommission_health(tenant))
        .with_extra(Extra {
            type_: types::DECOMMISSIONING,
            status: false,
            reason: reason::DECOMMISSION_FAILED,
            message: message.clone(),
        })
        .event(Note {
            warning: true,
            reason: reason::DECOMMISSION_FAILED,
            message,
            action: "Decommission",
        })
        .requeue(Requeue::AwaitChange)
}
