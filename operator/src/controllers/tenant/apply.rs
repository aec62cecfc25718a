//! Applies a Tenant's children in a deliberate order — namespace, guard rails, identities,
//! then what the workloads mount, then the workloads — and prunes, kind by kind, what the
//! Tenant owns and no longer wants.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use xin_api::tenant::Tenant;

use super::children::{GuardRails, TenantChildren, Workloads};
use crate::apply::{apply as apply_one, apply_set, sync};
use crate::builders::network::TenantNetworkPolicies;
use crate::controllers::Context;
use crate::error::ApplyError;

pub async fn apply(
    tenant: &Tenant,
    children: TenantChildren,
    ctx: &Context,
) -> Result<(), ApplyError> {
    let TenantChildren {
        namespace,
        guard_rails,
        workloads,
    } = children;
    let (c, s) = (&ctx.client, &ctx.stores);
    let ns = namespace.name_any();
    let uid = tenant.uid().unwrap_or_default();
    let cached = s.namespaces.get(&ObjectRef::new(&ns));
    apply_one(&Api::all(c.clone()), cached.as_deref(), &namespace).await?;

    let GuardRails {
        quota,
        limits,
        network_policies,
        service_accounts,
        roles,
        role_bindings,
    } = guard_rails;
    let TenantNetworkPolicies {
        default_deny,
        gateway,
        orchestrator,
        ingestion,
        automation,
    } = network_policies;
    let network_policies = vec![default_deny, gateway, orchestrator, ingestion, automation];
    // Independent of each other: applied concurrently. Their desired set never shrinks (the
    // same objects for every Tenant), so they are applied, never pruned — which also keeps
    // delete rights on them out of the operator's ClusterRole. Except the NetworkPolicies:
    // earlier versions had one policy (`xin-allow`) where this one has one per component, so
    // what the Tenant owns beyond the current set is pruned (after the new set is applied).
    let (quotas, limit_ranges, policies, accounts, role_api, bindings) = (
        Api::namespaced(c.clone(), &ns),
        Api::namespaced(c.clone(), &ns),
        Api::namespaced(c.clone(), &ns),
        Api::namespaced(c.clone(), &ns),
        Api::namespaced(c.clone(), &ns),
        Api::namespaced(c.clone(), &ns),
    );
    let (quota, limits) = ([quota], [limits]);
    futures::try_join!(
        apply_set(&quotas, &s.quotas, &ns, &quota),
        apply_set(&limit_ranges, &s.limit_ranges, &ns, &limits),
        sync(policies, &s.network_policies, &ns, &uid, network_policies),
        apply_set(&accounts, &s.service_accounts, &ns, &service_accounts),
        apply_set(&role_api, &s.roles, &ns, &roles),
    )?;
    // A RoleBinding is checked against its Role (the operator may only bind what it holds):
    // the Roles must exist first.
    apply_set(&bindings, &s.role_bindings, &ns, &role_bindings).await?;

    let Some(Workloads {
        secrets,
        deployments,
        services,
        pdbs,
        hpas,
        ingresses,
        wake,
    }) = workloads
    else {
        return Ok(());
    };
    // What the pods mount first: new pods must find it.
    let secret_store = s
        .secrets
        .store(&ns)
        .await
        .map_err(|_| ApplyError::NotSynced { what: "Secrets" })?;
    sync(
        Api::namespaced(c.clone(), &ns),
        &secret_store,
        &ns,
        &uid,
        secrets,
    )
    .await?;
    let deployments_api: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    futures::try_join!(
        sync(
            deployments_api.clone(),
            &s.deployments,
            &ns,
            &uid,
            deployments
        ),
        sync(
            Api::namespaced(c.clone(), &ns),
            &s.services,
            &ns,
            &uid,
            services
        ),
        sync(Api::namespaced(c.clone(), &ns), &s.pdbs, &ns, &uid, pdbs),
    )?;
    for (name, replicas) in wake {
        wake_up(&deployments_api, &s.deployments, &ns, &name, replicas).await?;
    }
    futures::try_join!(
        sync(Api::namespaced(c.clone(), &ns), &s.hpas, &ns, &uid, hpas),
        sync(
            Api::namespaced(c.clone(), &ns),
            &s.ingresses,
            &ns,
            &uid,
            ingresses
        ),
    )?;
    Ok(())
}

/// After a resume the Deployment still has the `replicas: 0` of the suspension, and an HPA
/// never scales a target at zero. Scale it up once through the scale subresource, as the HPA
/// itself would, so `replicas` stays out of the operator's applied fields.
async fn wake_up(
    api: &Api<Deployment>,
    cached: &kube::runtime::reflector::Store<Deployment>,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<(), ApplyError> {
    let at_zero = |d: &Deployment| d.spec.replicas == Some(0);
    if !cached
        .get(&ObjectRef::new(name).within(ns))
        .is_some_and(|d| at_zero(&d))
    {
        return Ok(());
    }
    let kube = |verb| {
        move |source| ApplyError::Kube {
            verb,
            kind: "Deployment",
            name: name.to_string(),
            source,
        }
    };
    // The watch may lag behind the apply that ended the suspension: confirm on the live object.
    if !api
        .get_opt(name)
        .await
        .map_err(kube("read"))?
        .is_some_and(|d| at_zero(&d))
    {
        return Ok(());
    }
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube("scale"))?;
    Ok(())
}
