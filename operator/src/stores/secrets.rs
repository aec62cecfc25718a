//! The Secrets of the tenant namespaces: one watch per namespace, started on first use and
//! stopped when the Tenant is gone, so the operator needs Secret rights only in the tenant
//! namespaces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::info;

use super::drive;
use crate::error::ResolveError;

/// How long a reconcile waits for a new tenant namespace's Secrets to be listed.
const SECRETS_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The Secrets of the tenant namespaces, one watch per namespace.
pub struct TenantSecrets {
    pub(super) client: Client,
    pub(super) watches: Mutex<HashMap<String, NamespaceWatch>>,
    pub(super) on_event: Arc<dyn Fn(&Secret) + Send + Sync>,
}

pub(super) struct NamespaceWatch {
    store: Store<Secret>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NamespaceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TenantSecrets {
    /// The Secrets of namespace `ns`, once listed: starts watching it on first use.
    pub async fn store(&self, ns: &str) -> Result<Store<Secret>, ResolveError> {
        let store = {
            let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            match watches.get(ns) {
                Some(w) if !w.task.is_finished() => w.store.clone(),
                _ => {
                    let (reader, writer) = reflector::store();
                    let on_event = self.on_event.clone();
                    let api = Api::<Secret>::namespaced(self.client.clone(), ns);
                    let task = tokio::spawn(drive(
                        api,
                        watcher::Config::default(),
                        writer,
                        move |s: &Secret, _deleted| on_event(s),
                    ));
                    info!(namespace = ns, "watching the Secrets of a tenant namespace");
                    watches.insert(
                        ns.to_string(),
                        NamespaceWatch {
                            store: reader.clone(),
                            task,
                        },
                    );
                    reader
                }
            }
        };
        match tokio::time::timeout(SECRETS_SYNC_TIMEOUT, store.wait_until_ready()).await {
            Ok(Ok(())) => Ok(store),
            _ => Err(ResolveError::NotSynced {
                what: "the tenant namespace's Secrets",
            }),
        }
    }

    /// One Secret of a tenant namespace, from the watch.
    pub async fn get(&self, ns: &str, name: &str) -> Result<Option<Arc<Secret>>, ResolveError> {
        Ok(self.store(ns).await?.get(&ObjectRef::new(name).within(ns)))
    }

    /// Stops watching `ns` (its Tenant is gone).
    pub fn forget(&self, ns: &str) {
        let removed = self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ns);
        if removed.is_some() {
            info!(
                namespace = ns,
                "stopped watching the Secrets of a former tenant namespace"
            );
        }
    }

    /// Namespaces watched now (for tests and metrics).
    pub fn watched(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}
