//! What the controllers read instead of asking the API server: one reflector store per kind
//! they reconcile or own, fed by one watch each, and the Secrets of each tenant namespace.
//!
//! Every watch event is also a trigger: it is mapped to the objects it concerns (a child to
//! its owner, a Secret to the Tenant of its namespace and the Channels and rules that name it,
//! a Tenant to everything in its namespace) and sent to their controllers. So an idle resync
//! reads from memory and makes no request at all, and drift is still seen at once: a child is
//! watched as a full object, and an edited one differs from what the operator would apply.
//!
//! Secrets are the exception to "one cluster-wide watch per kind": the operator watches them
//! only in the namespaces of its Tenants (one watch per tenant namespace, started when the
//! Tenant's namespace exists and stopped when the Tenant is gone), so it needs Secret rights
//! in those namespaces only — they can come from a Role bound per namespace rather than a
//! ClusterRole.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;
use xin_api::automation::AutomationRule;
use xin_api::channel::Channel;
use xin_api::ingestion::IngestionJob;
use xin_api::tenant::{Tenant, tenant_namespace};

use crate::builders::TENANT_LABEL;
use crate::component::managed_by_selector;

mod secrets;
mod triggers;
pub use secrets::TenantSecrets;
use triggers::{Seen, controlling};
pub use triggers::{TriggerQueues, Triggers};

/// Every store the controllers read.
#[derive(Clone)]
pub struct Stores {
    pub tenants: Store<Tenant>,
    pub channels: Store<Channel>,
    pub rules: Store<AutomationRule>,
    pub ingestion_jobs: Store<IngestionJob>,
    pub namespaces: Store<Namespace>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub network_policies: Store<NetworkPolicy>,
    pub service_accounts: Store<ServiceAccount>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
    pub ingresses: Store<Ingress>,
    pub jobs: Store<Job>,
    pub secrets: Arc<TenantSecrets>,
}

/// Runs one watch into `writer`, calling `on` for every object it reports (listed, changed or
/// deleted, with `true` for deleted). Watch errors (including an object that cannot be deserialised, which fails the
/// list of its kind) are logged and retried with backoff, never fatal.
pub(crate) async fn drive<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    mut on: impl FnMut(&K, bool) + Send + 'static,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).to_string();
    watcher(api, config)
        .default_backoff()
        // Who set which field is never compared, and is a large part of every object: not
        // kept in memory.
        .modify(|o: &mut K| {
            o.meta_mut().managed_fields = None;
        })
        .reflect(writer)
        .for_each(|ev| {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => on(&o, false),
                Ok(watcher::Event::Delete(o)) => on(&o, true),
                Ok(_) => {}
                Err(e) => warn!(kind, error = %e, "watch failed; retrying with backoff"),
            }
            std::future::ready(())
        })
        .await
}

/// The stores, the queues their events feed, and the futures that drive the watches (to be
/// polled for as long as the controllers run).
pub struct Wiring {
    pub stores: Stores,
    pub queues: TriggerQueues,
    pub drivers: Vec<BoxFuture<'static, ()>>,
}

/// Sets up every watch of the operator.
pub fn wire(client: &Client) -> Wiring {
    let (triggers, queues) = Triggers::new();
    let ours = || watcher::Config::default().labels(&managed_by_selector());
    let mut drivers: Vec<BoxFuture<'static, ()>> = Vec::new();

    macro_rules! reflect {
        ($t:ty, $config:expr, $on:expr) => {{
            let (reader, writer) = reflector::store::<$t>();
            drivers.push(drive(Api::<$t>::all(client.clone()), $config, writer, $on).boxed());
            reader
        }};
    }
    // A child wakes the Tenant that controls it.
    macro_rules! child {
        ($t:ty) => {{
            let t = triggers.clone();
            reflect!($t, ours(), move |o: &$t, _| {
                if let Some(name) = controlling::<Tenant>(o) {
                    let _ = t.tenant.unbounded_send(ObjectRef::new(&name));
                }
            })
        }};
    }

    // The primary kinds: each change wakes the object itself (status-only changes excepted:
    // they are this operator's own writes or a worker's report), and some wake the Tenant.
    let channels = {
        let t = triggers.clone();
        let mut seen = Seen::default();
        reflect!(
            Channel,
            watcher::Config::default(),
            move |c: &Channel, gone| {
                if seen.changed(c, gone) {
                    let _ = t.channel.unbounded_send(ObjectRef::from_obj(c));
                }
                // Its status says whether it is routable: the Tenant renders the routes.
                t.tenant_of(c.namespace().as_deref());
            }
        )
    };
    let rules = {
        let t = triggers.clone();
        let mut seen = Seen::default();
        reflect!(
            AutomationRule,
            watcher::Config::default(),
            move |r: &AutomationRule, gone| {
                // The worker's status reports (every few seconds) are not news to either
                // controller: only the spec, metadata and existence are.
                let changed = seen.changed(r, gone);
                if changed {
                    let _ = t.rule.unbounded_send(ObjectRef::from_obj(r));
                }
                // The rules decide whether the automation worker runs, and which Secrets its
                // Role names.
                if changed || gone {
                    t.tenant_of(r.namespace().as_deref());
                }
            }
        )
    };
    let ingestion_jobs = {
        let t = triggers.clone();
        let mut seen = Seen::default();
        reflect!(
            IngestionJob,
            watcher::Config::default(),
            move |ij: &IngestionJob, gone| {
                // The worker's report is news: it decides the outcome.
                let worker = ij.status.as_ref().and_then(|s| s.worker.as_ref());
                let report = worker.map(|w| (w.state, w.finished_at.as_ref().map(|t| t.0)));
                if seen.changed_with(ij, gone, report) {
                    let _ = t.ingestion.unbounded_send(ObjectRef::from_obj(ij));
                }
            }
        )
    };
    let secrets = {
        let t = triggers.clone();
        let (channels, rules) = (channels.clone(), rules.clone());
        Arc::new(TenantSecrets {
            client: client.clone(),
            watches: Mutex::new(HashMap::new()),
            on_event: Arc::new(move |s: &Secret| {
                let ns = s.namespace();
                let name = s.name_any();
                t.tenant_of(ns.as_deref());
                for c in channels.state() {
                    if c.namespace() == ns
                        && (crate::controllers::channel::references_secret(&c, &name)
                            || controlling::<Channel>(s).as_deref() == Some(&c.name_any()))
                    {
                        let _ = t.channel.unbounded_send(ObjectRef::from_obj(c.as_ref()));
                    }
                }
                for r in rules.state() {
                    if r.namespace() == ns
                        && crate::controllers::automation::references_secret(&r, &name)
                    {
                        let _ = t.rule.unbounded_send(ObjectRef::from_obj(r.as_ref()));
                    }
                }
            }),
        })
    };

    let tenants = {
        let t = triggers.clone();
        let (channels, rules, ijs) = (channels.clone(), rules.clone(), ingestion_jobs.clone());
        let mut seen = Seen::default();
        reflect!(
            Tenant,
            watcher::Config::default(),
            move |tenant: &Tenant, gone| {
                if seen.changed(tenant, gone) {
                    let _ = t.tenant.unbounded_send(ObjectRef::from_obj(tenant));
                }
                // A Tenant that finishes setting up (or changes) wakes what waits for it.
                let ns = Some(tenant_namespace(&tenant.name_any()));
                for c in channels.state().iter().filter(|c| c.namespace() == ns) {
                    let _ = t.channel.unbounded_send(ObjectRef::from_obj(c.as_ref()));
                }
                for r in rules.state().iter().filter(|r| r.namespace() == ns) {
                    let _ = t.rule.unbounded_send(ObjectRef::from_obj(r.as_ref()));
                }
                for ij in ijs.state().iter().filter(|ij| ij.namespace() == ns) {
                    let _ = t.ingestion.unbounded_send(ObjectRef::from_obj(ij.as_ref()));
                }
            }
        )
    };

    let namespaces = {
        let t = triggers.clone();
        reflect!(Namespace, ours(), move |n: &Namespace, _| {
            if let Some(name) = n.labels().get(TENANT_LABEL) {
                let _ = t.tenant.unbounded_send(ObjectRef::new(name));
            }
        })
    };
    let jobs = {
        let t = triggers.clone();
        reflect!(Job, ours(), move |j: &Job, _| {
            if let (Some(name), Some(ns)) = (controlling::<IngestionJob>(j), j.namespace()) {
                let _ = t
                    .ingestion
                    .unbounded_send(ObjectRef::new(&name).within(&ns));
            }
        })
    };

    let stores = Stores {
        tenants,
        channels,
        rules,
        ingestion_jobs,
        namespaces,
        deployments: child!(Deployment),
        services: child!(Service),
        hpas: child!(HorizontalPodAutoscaler),
        pdbs: child!(PodDisruptionBudget),
        network_policies: child!(NetworkPolicy),
        service_accounts: child!(ServiceAccount),
        roles: child!(Role),
        role_bindings: child!(RoleBinding),
        quotas: child!(ResourceQuota),
        limit_ranges: child!(LimitRange),
        ingresses: child!(Ingress),
        jobs,
        secrets,
    };
    Wiring {
        stores,
        queues,
        drivers,
    }
}

impl Stores {
    /// Waits until every cluster-wide watch has listed once.
    pub async fn wait_until_ready(&self) {
        macro_rules! wait {
            ($($s:ident),*) => {$(
                loop {
                    match tokio::time::timeout(std::time::Duration::from_secs(30), self.$s.wait_until_ready()).await {
                        Ok(Ok(())) => break,
                        Ok(Err(_)) => {
                            warn!(store = stringify!($s), "a watch stopped before it listed");
                            break;
                        }
                        // Missing rights, or an object of the kind that cannot be read: the
                        // watch's own warnings say which.
                        Err(_) => warn!(store = stringify!($s), "still waiting for a watch to list"),
                    }
                }
            )*};
        }
        wait!(
            tenants,
            channels,
            rules,
            ingestion_jobs,
            namespaces,
            deployments,
            services,
            hpas,
            pdbs,
            network_policies,
            service_accounts,
            roles,
            role_bindings,
            quotas,
            limit_ranges,
            ingresses,
            jobs
        );
    }
}
