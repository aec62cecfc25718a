//! The four controllers and what they share.

pub mod automation;
pub mod channel;
pub mod ingestion;
pub mod resolve;
pub mod tenant;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::apply::contains;
use crate::builders::MANAGER;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Metrics,
    recorder: Recorder,
    backoff: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        // One recorder for the process, so repeated Events are grouped into series.
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// Exponential backoff per object (5 s, 10 s, ... up to 5 min) for an object that waits
    /// for something the user must fix; reset once it is healthy again.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut m = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_string()).or_insert(0);
        let d = Duration::from_secs((5u64 << (*n).min(6)).min(300));
        *n = n.saturating_add(1);
        d
    }

    /// When to look again at an object stalled on `reason`: soon when it only waits for its
    /// Tenant to finish setting up, with backoff for what the user must fix.
    pub fn retry_after(&self, reason: &str, key: &str) -> Duration {
        if reason == crate::conditions::reason::TENANT_NOT_READY {
            // A change of the Tenant triggers a reconcile anyway (see `tenant_dependents`);
            // this is only the safety net.
            Duration::from_secs(10)
        } else {
            self.backoff(key)
        }
    }

    pub fn reset_backoff(&self, key: &str) {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn resync(&self) -> Action {
        Action::requeue(Duration::from_secs(self.config.resync_seconds))
    }

    /// Publishes an Event about `obj`. A failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        obj: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let recorder = &self.recorder;
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &obj).await {
            warn!(error = %e, reason, "could not publish an event");
        }
    }
}

/// Maps a Tenant to the objects of kind `K` in its namespace, from a controller's store: a
/// Tenant that finishes setting up (or changes) wakes the objects waiting for it.
pub fn tenant_dependents<K>(
    store: kube::runtime::reflector::Store<K>,
) -> impl Fn(xin_api::Tenant) -> Vec<kube::runtime::reflector::ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    move |t: xin_api::Tenant| {
        let ns = xin_api::tenant::tenant_namespace(&t.name_any());
        store
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
            .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}

impl Context {
    /// Publishes a Warning Event for a stalled object, once per distinct reason and message
    /// (compared with the `Ready` condition it already shows), so retries do not flood Events.
    pub async fn report_stall(
        &self,
        obj: ObjectReference,
        conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        p: &resolve::Problem,
    ) {
        let shown = conditions
            .iter()
            .find(|c| c.type_ == xin_api::common::condition::READY);
        if shown.is_some_and(|c| c.reason == p.reason && c.message == p.message) {
            return;
        }
        self.event(
            obj,
            EventType::Warning,
            p.reason,
            p.message.clone(),
            "Reconcile",
        )
        .await;
    }
}

/// Key of an object for backoff bookkeeping.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Patches the status of `obj` with server-side apply, only when `desired` is not already
/// there. `desired` holds exactly the status fields this operator owns.
pub async fn patch_status<K>(api: &Api<K>, obj: &K, desired: Value) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let current =
        serde_json::to_value(obj).map_err(|e| Error::Serialize("an object's status", e))?;
    let current = current.get("status").unwrap_or(&Value::Null);
    // A `null` in `desired` means "this field must be absent": it is left out of the apply,
    // and server-side apply removes a field its manager no longer sets.
    let mut desired = desired;
    let cleared: Vec<String> = desired
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(m) = desired.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    let stale = cleared
        .iter()
        .any(|k| !current.get(k).unwrap_or(&Value::Null).is_null());
    if !stale && contains(current, &desired) {
        return Ok(false);
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(true)
}

/// The error policy of every controller: count the failure by kind and error, log it, and
/// retry with backoff. Never crash.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&()).to_string();
    ctx.metrics.failed(&kind, err.metric_label());
    let delay = if err.is_transient() {
        Duration::from_millis(500 + u64::from(rand::random::<u16>() % 1500))
    } else {
        ctx.backoff(&key(obj.as_ref()))
    };
    warn!(kind, name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), error = %err, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Runs every controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    futures::join!(
        tenant::controller(ctx.clone()).for_each(log_result("Tenant")),
        channel::controller(ctx.clone()).for_each(log_result("Channel")),
        automation::controller(ctx.clone()).for_each(log_result("AutomationRule")),
        ingestion::controller(ctx.clone()).for_each(log_result("IngestionJob")),
    );
    info!("controllers stopped");
}

pub type ControllerResult<K> = std::result::Result<
    (kube::runtime::reflector::ObjectRef<K>, Action),
    kube::runtime::controller::Error<Error, kube::runtime::watcher::Error>,
>;

fn log_result<K: Resource>(
    kind: &'static str,
) -> impl Fn(ControllerResult<K>) -> std::future::Ready<()> {
    use kube::runtime::controller::Error as CErr;
    move |res| {
        match res {
            // A child changed after its owner was deleted: nothing to do.
            Err(CErr::ObjectNotFound(r)) => {
                tracing::debug!(kind, object = %r, "owner already gone")
            }
            // Includes objects that cannot be deserialised: reported, never a crash loop.
            Err(e) => warn!(kind, error = %e, "controller event failed"),
            Ok(_) => {}
        }
        std::future::ready(())
    }
}
