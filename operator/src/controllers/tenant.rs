//! Tenant → namespace, quota, limits, network policy, identities, signing Secret,
//! orchestrator; plus the gateway (while Channels exist) and the automation worker (while
//! AutomationRules exist). Deletion runs the decommission sequence in a finalizer.

use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff;
use kube::api::{DeleteParams, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};
use xin_api::automation::AutomationRule;
use xin_api::channel::Channel;
use xin_api::routes::Routes;
use xin_api::tenant::{DeletionPolicy, Tenant, tenant_namespace, tenant_of_namespace};

use super::resolve::{self, Problem, webhook_secret_name};
use super::{Context, error_policy, key, patch_status};
use crate::apply::{apply, prune};
use crate::builders::automation::build_automation_deployment;
use crate::builders::gateway::{
    build_gateway_deployment, build_gateway_ingress, build_routes_secret,
};
use crate::builders::tenant::*;
use crate::builders::{MANAGED_BY, TENANT_LABEL, hash_parts};
use crate::conditions::{Health, extra, merge, reason};
use crate::error::{Error, Result};

pub const FINALIZER: &str = "xin.dev/decommission";
const KIND: &str = "Tenant";

pub fn controller(ctx: Arc<Context>) -> impl Stream<Item = super::ControllerResult<Tenant>> {
    let client = ctx.client.clone();
    let ours = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    macro_rules! child {
        ($t:ty) => {
            watcher(
                Api::<PartialObjectMeta<$t>>::all(client.clone()),
                ours.clone(),
            )
            .touched_objects()
            .predicate_filter(predicates::resource_version, Default::default())
        };
    }
    let to_tenant = |ns: Option<String>| {
        ns.as_deref()
            .and_then(tenant_of_namespace)
            .map(ObjectRef::<Tenant>::new)
            .into_iter()
    };
    Controller::new(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .watches_stream(child!(Deployment), owner)
    .watches_stream(child!(Service), owner)
    .watches_stream(child!(HorizontalPodAutoscaler), owner)
    .watches_stream(child!(PodDisruptionBudget), owner)
    .watches_stream(child!(Secret), owner)
    .watches_stream(child!(NetworkPolicy), owner)
    .watches_stream(child!(ServiceAccount), owner)
    .watches_stream(child!(Role), owner)
    .watches_stream(child!(RoleBinding), owner)
    .watches_stream(child!(ResourceQuota), owner)
    .watches_stream(child!(LimitRange), owner)
    .watches_stream(child!(Ingress), owner)
    .watches_stream(child!(Namespace), |ns| {
        ns.labels()
            .get(TENANT_LABEL)
            .map(|t| ObjectRef::<Tenant>::new(t))
            .into_iter()
    })
    .watches_stream(
        watcher(
            Api::<Channel>::all(client.clone()),
            watcher::Config::default(),
        )
        .touched_objects()
        .predicate_filter(predicates::resource_version, Default::default()),
        move |ch| to_tenant(ch.namespace()),
    )
    .watches_stream(
        watcher(
            Api::<PartialObjectMeta<AutomationRule>>::all(client.clone()),
            watcher::Config::default(),
        )
        .touched_objects(),
        move |r| to_tenant(r.namespace()),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
}

/// The Tenant that controls a child, as a cluster-scoped reference. (`owns_stream` would key
/// a cluster-scoped owner by the child's namespace, so one Tenant could be reconciled under
/// two keys at once.)
fn owner<K: Resource>(child: PartialObjectMeta<K>) -> Option<ObjectRef<Tenant>> {
    child
        .owner_references()
        .iter()
        .find(|o| {
            o.controller == Some(true) && o.kind == "Tenant" && o.api_version == "xin.dev/v1alpha1"
        })
        .map(|o| ObjectRef::new(&o.name))
}

#[instrument(skip_all, fields(tenant = %tenant.name_any()))]
async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let start = Instant::now();
    let api = Api::<Tenant>::all(ctx.client.clone());
    let has_finalizer = tenant.finalizers().iter().any(|f| f == FINALIZER);
    let res = if tenant.metadata.deletion_timestamp.is_none() {
        // The finalizer goes on before any side effect, so nothing is left behind.
        if !has_finalizer {
            set_finalizer(&api, &tenant, true).await?;
        }
        let res = apply_tenant(&tenant, &ctx).await;
        if let Err(e) = &res
            && !e.is_transient()
        {
            // Visible where users look, not only in the operator's logs.
            let health = Health::Progressing {
                reason: reason::API_ERROR,
                message: format!("retrying after an error ({}): {e}", e.metric_label()),
            };
            let _ = write_status(&tenant, &api, health, None).await;
        }
        res
    } else if has_finalizer {
        match decommission(&tenant, &ctx).await {
            Ok(a) => set_finalizer(&api, &tenant, false).await.map(|_| a),
            Err(e) => {
                // Say why the Tenant is not going away, on the object and as an Event.
                let msg = format!("decommission failed, the Tenant stays until it succeeds: {e}");
                let conds = merge(
                    &tenant.status.clone().unwrap_or_default().conditions,
                    vec![extra(
                        "Decommissioning",
                        false,
                        reason::DECOMMISSION_FAILED,
                        &msg,
                        tenant.metadata.generation,
                    )],
                );
                let _ = patch_status(&api, &tenant, status_with(&tenant, conds)).await;
                ctx.event(
                    tenant.object_ref(&()),
                    EventType::Warning,
                    reason::DECOMMISSION_FAILED,
                    msg,
                    "Decommission",
                )
                .await;
                Err(e)
            }
        }
    } else {
        Ok(Action::await_change())
    };
    ctx.metrics.reconciled(KIND, start.elapsed());
    res
}

/// Adds or removes the decommission finalizer.
///
/// Adding uses server-side apply: `metadata.finalizers` is a set, so only our entry is
/// touched, with no read-modify-write and no conflict with other writers (kube's JSON-patch
/// helper fails its `test` whenever the cached Tenant lags, which at 100 tenants sent them into
/// error backoff). The body carries the uid, so a Tenant deleted meanwhile is never recreated.
/// Removing reads the Tenant fresh and deletes exactly our entry with a tested JSON patch, so
/// the entry goes even if another writer (an older operator, a user) added it.
async fn set_finalizer(api: &Api<Tenant>, tenant: &Tenant, present: bool) -> Result<()> {
    let name = tenant.name_any();
    if present {
        let body = json!({
            "apiVersion": Tenant::api_version(&()),
            "kind": Tenant::kind(&()),
            "metadata": {"name": name, "uid": tenant.uid(), "finalizers": [FINALIZER]},
        });
        api.patch(
            &name,
            &kube::api::PatchParams::apply(crate::builders::MANAGER).force(),
            &kube::api::Patch::Apply(&body),
        )
        .await?;
        return Ok(());
    }
    let Some(live) = api.get_opt(&name).await? else {
        return Ok(());
    };
    if live.uid() != tenant.uid() {
        return Ok(());
    }
    let Some(i) = live.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]))
    .map_err(|e| Error::Serialize("finalizer patch", e))?;
    match api
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads what the spec refers to; `Err(Problem)` when the user has to act.
struct Inputs {
    db_url: Vec<u8>,
    llm_key: Vec<u8>,
}

async fn inputs(tenant: &Tenant, ns: &str, ctx: &Context) -> Result<Result<Inputs, Problem>> {
    if tenant.spec.time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Ok(Err(Problem::new(
            reason::INVALID_TIME_ZONE,
            format!(
                "spec.timeZone {:?} is not an IANA time zone (for example Europe/Berlin)",
                tenant.spec.time_zone
            ),
        )));
    }
    let db_url =
        match resolve::secret_key(&ctx.client, ns, &tenant.spec.database.url_secret_ref).await? {
            Ok(v) => v,
            Err(p) => return Ok(Err(p)),
        };
    let llm_key = match tenant
        .spec
        .llm
        .as_ref()
        .and_then(|l| l.api_key_secret_ref.as_ref())
    {
        Some(r) => match resolve::secret_key(&ctx.client, ns, r).await? {
            Ok(v) => v,
            Err(p) => return Ok(Err(p)),
        },
        None => Vec::new(),
    };
    Ok(Ok(Inputs { db_url, llm_key }))
}

async fn apply_tenant(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let client = &ctx.client;
    let name = tenant.name_any();
    let uid = tenant.uid().unwrap_or_default();
    let ns = tenant_namespace(&name);
    let cfg = &ctx.config;
    let tenants = Api::<Tenant>::all(client.clone());

    // The operator's own namespace is never a tenant's (the API refuses the name `system`,
    // this catches an operator installed into another `xin-` namespace).
    if ns == cfg.operator_namespace || ns == cfg.lease_namespace {
        let p = Problem::new(
            "NamespaceConflict",
            format!(
                "namespace {ns} is the Xin operator's own namespace; choose another Tenant name"
            ),
        );
        return stalled(tenant, &tenants, ctx, p, None).await;
    }
    // A namespace that another Tenant claimed is never taken over.
    let namespaces = Api::<Namespace>::all(client.clone());
    if let Some(existing) = namespaces.get_opt(&ns).await?
        && let Some(owner) = existing.annotations().get(TENANT_UID_ANNOTATION)
        && !owner.is_empty()
        && *owner != uid
    {
        let p = Problem::new(
            "NamespaceConflict",
            format!("namespace {ns} belongs to another Tenant (uid {owner})"),
        );
        return stalled(tenant, &tenants, ctx, p, None).await;
    }
    apply(&namespaces, &build_namespace(tenant, &ns)).await?;

    let in_ns = |_: ()| ns.as_str();
    macro_rules! api {
        ($t:ty) => {
            Api::<$t>::namespaced(client.clone(), in_ns(()))
        };
    }
    // Namespace-level guard rails first: they do not depend on the user's Secrets. They are
    // independent of each other, so they are applied concurrently.
    let (sas, roles, rbs) = (api!(ServiceAccount), api!(Role), api!(RoleBinding));
    let built_sas: Vec<_> = [ORCHESTRATOR, GATEWAY, AUTOMATION, INGEST]
        .iter()
        .map(|c| build_service_account(tenant, &ns, c))
        .collect();
    let built_roles: Vec<_> = [AUTOMATION, INGEST]
        .iter()
        .map(|c| build_role(tenant, &ns, c))
        .collect();
    let built_rbs: Vec<_> = [AUTOMATION, INGEST]
        .iter()
        .map(|c| build_role_binding(tenant, &ns, c))
        .collect();
    let (quotas, limits, netpols) = (api!(ResourceQuota), api!(LimitRange), api!(NetworkPolicy));
    let (quota, limit) = (
        build_resource_quota(tenant, &ns),
        build_limit_range(tenant, &ns),
    );
    let (deny, allow) = (
        build_default_deny(tenant, &ns),
        build_allow_policy(tenant, &ns, cfg),
    );
    futures::try_join!(
        apply(&quotas, &quota),
        apply(&limits, &limit),
        apply(&netpols, &deny),
        apply(&netpols, &allow),
        futures::future::try_join_all(built_sas.iter().map(|o| apply(&sas, o))),
        futures::future::try_join_all(built_roles.iter().map(|o| apply(&roles, o))),
    )?;
    // A RoleBinding is checked against its Role (the operator may only bind what it holds):
    // the Roles must exist first.
    futures::future::try_join_all(built_rbs.iter().map(|o| apply(&rbs, o))).await?;

    let channels: Vec<Channel> = api!(Channel).list(&ListParams::default()).await?.items;
    let rules = api!(AutomationRule)
        .list(&ListParams::default())
        .await?
        .items
        .len() as i32;

    let inputs = match inputs(tenant, &ns, ctx).await? {
        Ok(i) => i,
        Err(p) => {
            return stalled(
                tenant,
                &tenants,
                ctx,
                p,
                Some((&ns, channels.len() as i32, rules)),
            )
            .await;
        }
    };

    // The signing key is generated once and then only read back. It reaches the workloads
    // as an environment variable, so it is text (URL-safe base64 of 32 random bytes); a key
    // that is not text (written by an earlier version) could not be used and is replaced.
    let secrets = api!(Secret);
    let signing_key = match secrets
        .get_opt(SIGNING_SECRET)
        .await?
        .and_then(|s| s.data?.remove(SIGNING_KEY))
    {
        Some(ByteString(k)) if !k.is_empty() && std::str::from_utf8(&k).is_ok() => k,
        _ => crate::controllers::channel::new_key().into_bytes(),
    };
    apply(&secrets, &build_signing_secret(tenant, &ns, &signing_key)).await?;
    match &cfg.otel_exporter_headers {
        Some(h) => {
            apply(&secrets, &build_otel_secret(tenant, &ns, h)).await?;
        }
        None => {
            prune(&secrets, crate::builders::OTEL_SECRET, &uid).await?;
        }
    }

    let suspended = tenant.spec.suspend;
    let orch = &tenant.spec.orchestrator;
    let env = orchestrator_env(tenant, &ns, cfg);
    let env_json = serde_json::to_vec(&env).map_err(|e| Error::Serialize("orchestrator env", e))?;
    let orch_hash = hash_parts([
        env_json.as_slice(),
        &inputs.db_url,
        &inputs.llm_key,
        &signing_key,
    ]);
    let orch_deploy = build_workload_deployment(
        tenant,
        &ns,
        cfg,
        WorkloadParts {
            component: ORCHESTRATOR,
            image: cfg.orchestrator_image.clone(),
            env,
            ports: vec![("http".into(), HTTP_PORT), ("metrics".into(), 9101)],
            resources: orch.resources.clone(),
            config_hash: orch_hash,
            volumes: vec![],
            mounts: vec![],
            replicas: suspended.then_some(0),
            probe_path: Some("/ready"),
        },
    );
    let deployments = api!(Deployment);
    let hpas = api!(HorizontalPodAutoscaler);
    let orch_svc = build_service(
        tenant,
        &ns,
        ORCHESTRATOR,
        &[("http", HTTP_PORT), ("metrics", 9101)],
    );
    let orch_pdb = build_pdb(tenant, &ns, ORCHESTRATOR);
    let (services, pdbs) = (api!(Service), api!(PodDisruptionBudget));
    futures::try_join!(
        apply(&deployments, &orch_deploy),
        apply(&services, &orch_svc),
        apply(&pdbs, &orch_pdb),
    )?;
    if !suspended {
        wake(
            &deployments,
            &workload_name(ORCHESTRATOR),
            orch.min_replicas,
        )
        .await?;
    }
    if suspended {
        prune(&hpas, &workload_name(ORCHESTRATOR), &uid).await?;
    } else {
        apply(
            &hpas,
            &build_hpa(
                tenant,
                &ns,
                ORCHESTRATOR,
                orch.min_replicas,
                orch.max_replicas,
            ),
        )
        .await?;
    }

    // The gateway serves every channel whose credentials and keys resolve.
    let now = jiff::Timestamp::now();
    let mut routes = Routes {
        tenant: name.clone(),
        channels: vec![],
    };
    for ch in &channels {
        if ch.meta().deletion_timestamp.is_some() {
            continue;
        }
        if let Ok(r) = resolve::channel_route(client, ch, now).await? {
            routes.channels.push(r);
        }
    }
    let gw = workload_name(GATEWAY);
    // Before any channel resolves (its webhook Secret is created by the Channel controller),
    // a first gateway would only be rolled again moments later: wait for one route.
    let gw_waits = !channels.is_empty()
        && routes.channels.is_empty()
        && deployments.get_opt(&gw).await?.is_none();
    if gw_waits {
        // Nothing to apply yet; the Channel's status change wakes this Tenant.
    } else if channels.is_empty() {
        prune(&api!(Ingress), &gw, &uid).await?;
        prune(&hpas, &gw, &uid).await?;
        prune(&api!(PodDisruptionBudget), &gw, &uid).await?;
        prune(&api!(Service), &gw, &uid).await?;
        prune(&deployments, &gw, &uid).await?;
        prune(&secrets, xin_api::routes::ROUTES_SECRET, &uid).await?;
    } else {
        let routes_secret = build_routes_secret(tenant, &ns, &routes)
            .map_err(|e| Error::Serialize("gateway routes", e))?;
        let routes_bytes =
            &routes_secret.data.as_ref().expect("built with data")[xin_api::routes::ROUTES_KEY].0;
        let gw_hash = hash_parts([routes_bytes.as_slice(), &inputs.db_url, &signing_key]);
        // The routes first: the new pods must find them mounted.
        apply(&secrets, &routes_secret).await?;
        let gw_deploy = build_gateway_deployment(
            tenant,
            &ns,
            cfg,
            &tenant.spec.database.url_secret_ref,
            gw_hash,
        );
        let gw_svc = build_service(
            tenant,
            &ns,
            GATEWAY,
            &[("http", HTTP_PORT), ("metrics", 9102)],
        );
        let gw_pdb = build_pdb(tenant, &ns, GATEWAY);
        futures::try_join!(
            apply(&deployments, &gw_deploy),
            apply(&services, &gw_svc),
            apply(&pdbs, &gw_pdb),
        )?;
        if suspended {
            prune(&hpas, &gw, &uid).await?;
        } else {
            wake(&deployments, &gw, 1).await?;
            apply(&hpas, &build_hpa(tenant, &ns, GATEWAY, 1, 5)).await?;
        }
        let live: Vec<&Channel> = channels
            .iter()
            .filter(|c| c.meta().deletion_timestamp.is_none())
            .collect();
        match build_gateway_ingress(tenant, &ns, &live) {
            Some(ing) => {
                apply(&api!(Ingress), &ing).await?;
            }
            None => {
                prune(&api!(Ingress), &gw, &uid).await?;
            }
        }
    }

    let auto = workload_name(AUTOMATION);
    if rules == 0 {
        prune(&hpas, &auto, &uid).await?;
        prune(&deployments, &auto, &uid).await?;
    } else {
        // The random signing key in the digest keeps the annotation from revealing anything
        // about the database URL.
        let hash = hash_parts([
            signing_key.as_slice(),
            &inputs.db_url,
            tenant.spec.time_zone.as_bytes(),
        ]);
        apply(
            &deployments,
            &build_automation_deployment(tenant, &ns, cfg, hash),
        )
        .await?;
        if suspended {
            prune(&hpas, &auto, &uid).await?;
        } else {
            wake(&deployments, &auto, 1).await?;
            apply(&hpas, &build_hpa(tenant, &ns, AUTOMATION, 1, 3)).await?;
        }
    }

    // Health from the workloads the API server reports.
    let mut waiting = Vec::new();
    let mut wanted = vec![ORCHESTRATOR];
    if !channels.is_empty() {
        wanted.push(GATEWAY);
    }
    if rules > 0 {
        wanted.push(AUTOMATION);
    }
    if !suspended {
        for c in &wanted {
            let d = deployments.get_opt(&workload_name(c)).await?;
            let available = d
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            if available < 1 {
                waiting.push(workload_name(c));
            }
        }
    }
    let health = if suspended {
        Health::Ready {
            reason: reason::SUSPENDED,
            message: "suspended: workloads are scaled to zero".into(),
        }
    } else if waiting.is_empty() {
        Health::Ready {
            reason: reason::RECONCILED,
            message: format!(
                "{} channel(s), {} automation rule(s) served",
                routes.channels.len(),
                rules
            ),
        }
    } else {
        Health::Progressing {
            reason: reason::PROGRESSING,
            message: format!("waiting for {} to become available", waiting.join(", ")),
        }
    };
    ctx.reset_backoff(&key(tenant));
    let action = if matches!(health, Health::Progressing { .. }) {
        Action::requeue(std::time::Duration::from_secs(10))
    } else {
        ctx.resync()
    };
    write_status(
        tenant,
        &tenants,
        health,
        Some((&ns, channels.len() as i32, rules)),
    )
    .await?;
    Ok(action)
}

/// After a resume the Deployment still has the `replicas: 0` of the suspension, and an HPA
/// never scales a target at zero. Scale it up once through the scale subresource, as the HPA
/// itself would, so `replicas` stays out of the operator's applied fields.
async fn wake(deployments: &Api<Deployment>, name: &str, replicas: i32) -> Result<()> {
    let live = deployments.get_opt(name).await?;
    if live.and_then(|d| d.spec.replicas) == Some(0) {
        let patch = json!({"spec": {"replicas": replicas}});
        deployments
            .patch_scale(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

/// The whole status this operator owns, with `conditions` replaced: a server-side apply of
/// only some fields would remove the others.
fn status_with(
    tenant: &Tenant,
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> serde_json::Value {
    let s = tenant.status.clone().unwrap_or_default();
    json!({
        "observedGeneration": s.observed_generation,
        "namespace": s.namespace,
        "channels": s.channels,
        "automationRules": s.automation_rules,
        "conditions": conditions,
    })
}

async fn write_status(
    tenant: &Tenant,
    api: &Api<Tenant>,
    health: Health,
    counts: Option<(&str, i32, i32)>,
) -> Result<()> {
    let current = tenant.status.clone().unwrap_or_default();
    let conditions = merge(
        &current.conditions,
        health.conditions(tenant.metadata.generation),
    );
    let mut status = json!({
        "observedGeneration": tenant.metadata.generation,
        "conditions": conditions,
    });
    match counts {
        Some((ns, channels, rules)) => {
            status["namespace"] = json!(ns);
            status["channels"] = json!(channels);
            status["automationRules"] = json!(rules);
        }
        // Keep what was reported: a partial server-side apply would remove it.
        None => {
            status["namespace"] = json!(current.namespace);
            status["channels"] = json!(current.channels);
            status["automationRules"] = json!(current.automation_rules);
        }
    }
    patch_status(api, tenant, status).await?;
    Ok(())
}

async fn stalled(
    tenant: &Tenant,
    api: &Api<Tenant>,
    ctx: &Context,
    p: Problem,
    counts: Option<(&str, i32, i32)>,
) -> Result<Action> {
    ctx.report_stall(
        tenant.object_ref(&()),
        tenant.status.as_ref().map_or(&[][..], |s| &s.conditions),
        &p,
    )
    .await;
    write_status(
        tenant,
        api,
        Health::Stalled {
            reason: p.reason,
            message: p.message,
        },
        counts,
    )
    .await?;
    Ok(Action::requeue(ctx.backoff(&key(tenant))))
}

/// The product runbook's decommission sequence: stop automations, invalidate every token
/// (webhook keys, routes, the tenant signing key), then honour `deletionPolicy`.
async fn decommission(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let client = &ctx.client;
    let name = tenant.name_any();
    let uid = tenant.uid().unwrap_or_default();
    let ns = tenant_namespace(&name);
    info!(tenant = %name, namespace = %ns, policy = ?tenant.spec.deletion_policy, "decommissioning tenant");
    let api = Api::<Tenant>::all(client.clone());
    let conds = merge(
        &tenant.status.clone().unwrap_or_default().conditions,
        vec![extra(
            "Decommissioning",
            true,
            reason::DECOMMISSIONING,
            "stopping automations, deleting secrets",
            tenant.metadata.generation,
        )],
    );
    patch_status(&api, tenant, status_with(tenant, conds)).await?;

    // 1. Stop automations: the worker goes first, so no scheduled action runs after this.
    let auto = workload_name(AUTOMATION);
    prune(
        &Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns),
        &auto,
        &uid,
    )
    .await?;
    prune(
        &Api::<Deployment>::namespaced(client.clone(), &ns),
        &auto,
        &uid,
    )
    .await?;

    // 2. Invalidate tokens: generated webhook Secrets (owned by this tenant's Channels), the
    //    gateway routes and the tenant signing Secret.
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    for ch in Api::<Channel>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
    {
        if let Some(ch_uid) = ch.uid() {
            prune(&secrets, &webhook_secret_name(&ch.name_any()), &ch_uid).await?;
        }
    }
    prune(&secrets, xin_api::routes::ROUTES_SECRET, &uid).await?;
    prune(&secrets, SIGNING_SECRET, &uid).await?;

    // 3. The namespace: removed with everything in it, or kept (with the user's data) and
    //    released so a new Tenant of the same name can adopt it.
    let namespaces = Api::<Namespace>::all(client.clone());
    if let Some(n) = namespaces.get_opt(&ns).await?
        && n.annotations().get(TENANT_UID_ANNOTATION) == Some(&uid)
    {
        match tenant.spec.deletion_policy {
            DeletionPolicy::Delete => {
                if n.metadata.deletion_timestamp.is_none() {
                    namespaces.delete(&ns, &DeleteParams::background()).await?;
                }
            }
            DeletionPolicy::Retain => {
                let patch = json!({"metadata": {"annotations": {TENANT_UID_ANNOTATION: null}}});
                namespaces
                    .patch(
                        &ns,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await?;
            }
        }
    }
    ctx.event(
        tenant.object_ref(&()),
        EventType::Normal,
        reason::DECOMMISSIONING,
        format!(
            "decommissioned: automations stopped, secrets deleted, namespace {ns} {}",
            if tenant.spec.deletion_policy == DeletionPolicy::Delete {
                "deleted"
            } else {
                "retained"
            }
        ),
        "Decommission",
    )
    .await;
    Ok(Action::await_change())
}
