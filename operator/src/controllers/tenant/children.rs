//! Every child of a Tenant, built by pure functions from a [`ValidatedTenant`]: no client, no
//! clock, no randomness, so the result is compared with committed golden files in the tests.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;

use super::validate::ValidatedTenant;
use crate::builders::automation::build_automation_deployment;
use crate::builders::gateway::{
    build_gateway_deployment, build_gateway_ingress, build_routes_secret,
};
use crate::builders::hash_parts;
use crate::builders::network::{TenantNetworkPolicies, build_tenant_network_policies};
use crate::builders::tenant::*;
use crate::component::Component;
use crate::config::Config;
use crate::error::BuildError;

/// Everything a Tenant owns. Applied by destructuring without `..`: a child built here but
/// never applied does not compile.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantChildren {
    /// Not owned by the Tenant (its deletion policy decides its fate).
    pub namespace: Namespace,
    pub guard_rails: GuardRails,
    /// `None` while a Secret the workloads need is missing: then the workloads that exist are
    /// left as they are (nothing is pruned) until it is there.
    pub workloads: Option<Workloads>,
}

/// The namespace's guard rails: they need nothing from the user's Secrets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GuardRails {
    pub quota: ResourceQuota,
    pub limits: LimitRange,
    pub network_policies: TenantNetworkPolicies,
    pub service_accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
}

/// The workloads and what they mount. Each list is the whole desired set of its kind: what
/// the Tenant owns beyond it is pruned.
#[derive(Clone, PartialEq, Serialize)]
pub struct Workloads {
    pub secrets: Vec<Secret>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub hpas: Vec<HorizontalPodAutoscaler>,
    pub ingresses: Vec<Ingress>,
    /// Deployments to scale up to this many replicas if they are at zero (after a resume, an
    /// HPA never scales a target at zero).
    pub wake: Vec<(String, i32)>,
}

// The Secrets hold the signing key and the database URL: `Debug` shows their names only.
impl std::fmt::Debug for Workloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workloads")
            .field("secrets", &crate::redact::SecretList(&self.secrets))
            .field("deployments", &self.deployments)
            .field("services", &self.services)
            .field("pdbs", &self.pdbs)
            .field("hpas", &self.hpas)
            .field("ingresses", &self.ingresses)
            .field("wake", &self.wake)
            .finish()
    }
}

pub fn build_tenant_children(
    v: &ValidatedTenant,
    config: &Config,
) -> Result<TenantChildren, BuildError> {
    let (t, ns) = (&v.tenant, v.namespace.as_str());
    let components = [
        Component::Orchestrator,
        Component::Gateway,
        Component::Automation,
        Component::Ingestion,
    ];
    let guard_rails = GuardRails {
        quota: build_resource_quota(t, ns),
        limits: build_limit_range(t, ns),
        network_policies: build_tenant_network_policies(t, ns, config),
        service_accounts: components
            .iter()
            .map(|c| build_service_account(t, ns, *c))
            .collect(),
        roles: components
            .iter()
            .filter_map(|c| build_role(t, ns, *c, &v.rule_secrets))
            .collect(),
        role_bindings: components
            .iter()
            .filter_map(|c| build_role_binding(t, ns, *c))
            .collect(),
    };
    let workloads = match &v.workloads {
        Ok(_) => Some(build_workloads(v, config)?),
        Err(_) => None,
    };
    Ok(TenantChildren {
        namespace: build_namespace(t, ns),
        guard_rails,
        workloads,
    })
}

fn build_workloads(v: &ValidatedTenant, config: &Config) -> Result<Workloads, BuildError> {
    let (t, ns) = (&v.tenant, v.namespace.as_str());
    let inputs = v.workloads.as_ref().expect("checked by the caller");
    let suspended = t.spec.suspend;
    let serialize = |what| move |source| BuildError::Serialize { what, source };
    let mut w = Workloads {
        secrets: vec![build_signing_secret(t, ns, &inputs.signing_key)],
        deployments: vec![],
        services: vec![],
        pdbs: vec![],
        hpas: vec![],
        ingresses: vec![],
        wake: vec![],
    };
    if let Some((url, handled)) = inputs.database.as_ref().and_then(|d| d.managed.as_ref()) {
        w.secrets
            .push(build_database_secret(t, ns, url, handled.as_deref()));
    }
    // While suspended, the Deployments have `replicas: 0` and no HPA; otherwise the HPA owns
    // `replicas` (left out of the applied object) and a Deployment at zero is woken.
    let scaled = |w: &mut Workloads, c: Component, min: i32, max: i32| {
        if !suspended {
            w.hpas.push(build_hpa(t, ns, c, min, max));
            w.wake.push((c.workload_name(), min));
        }
    };

    // The orchestrator always runs.
    let orch = &t.spec.orchestrator;
    let env = orchestrator_env(t, ns, config);
    let env_json = serde_json::to_vec(&env).map_err(serialize("the orchestrator's environment"))?;
    let mut parts = vec![
        env_json.as_slice(),
        &inputs.db_url,
        &inputs.llm_key,
        &inputs.signing_key,
    ];
    // Only when there is one: a Tenant without embeddings keeps the digest (and pods) it had.
    if !inputs.embedding_key.is_empty() {
        parts.push(&inputs.embedding_key);
    }
    let hash = hash_parts(parts);
    let (volumes, mounts) = crate::builders::tenant::orchestrator_index_volume(t).unzip();
    w.deployments.push(build_workload_deployment(
        t,
        ns,
        config,
        WorkloadParts {
            component: Component::Orchestrator,
            image: config.orchestrator_image.clone(),
            env,
            resources: orch.resources.clone(),
            config_hash: hash,
            volumes: volumes.into_iter().collect(),
            mounts: mounts.into_iter().collect(),
            replicas: suspended.then_some(0),
            probe_path: Some("/ready"),
        },
    ));
    w.services
        .push(build_service(t, ns, Component::Orchestrator));
    w.pdbs.push(build_pdb(t, ns, Component::Orchestrator));
    scaled(
        &mut w,
        Component::Orchestrator,
        orch.min_replicas,
        orch.max_replicas,
    );

    // The gateway serves every routable channel, while there are channels.
    if !inputs.live_channels.is_empty() && !inputs.gateway_waits {
        let routes_secret = build_routes_secret(t, ns, &inputs.routes)
            .map_err(serialize("the gateway's routes"))?;
        let routes_bytes = routes_secret
            .data
            .as_ref()
            .and_then(|d| d.get(xin_api::routes::ROUTES_KEY))
            .map(|b| b.0.clone())
            .unwrap_or_default();
        let hash = hash_parts([routes_bytes.as_slice(), &inputs.db_url, &inputs.signing_key]);
        w.secrets.push(routes_secret);
        w.deployments
            .push(build_gateway_deployment(t, ns, config, hash));
        w.services.push(build_service(t, ns, Component::Gateway));
        w.pdbs.push(build_pdb(t, ns, Component::Gateway));
        scaled(&mut w, Component::Gateway, 1, 5);
        let live: Vec<&xin_api::Channel> = inputs.live_channels.iter().collect();
        w.ingresses.extend(build_gateway_ingress(t, ns, &live));
    }

    // The automation worker runs while there are rules. The random signing key in the
    // digest keeps the annotation from revealing anything about the database URL.
    if v.rules > 0 {
        let hash = hash_parts([
            inputs.signing_key.as_slice(),
            &inputs.db_url,
            t.spec.time_zone.as_bytes(),
        ]);
        w.deployments
            .push(build_automation_deployment(t, ns, config, hash));
        scaled(&mut w, Component::Automation, 1, 3);
    }
    Ok(w)
}
