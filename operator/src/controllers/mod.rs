//! The four controllers and what they share: the [`Context`] of every reconcile and the
//! generic runner ([`runner`]) that wires, times and reports each of them the same way.

pub mod automation;
pub mod channel;
pub mod ingestion;
pub mod ingress;
pub mod resolve;
pub mod runner;
pub mod tenant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::builders::MANAGER;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::stores::{Stores, Wiring};

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Metrics,
    pub stores: Stores,
    /// The platform database's admin, when the chart gives one (platform-managed databases).
    pub database: Option<xin_store::provision::Admin>,
    /// Calls to Telegram's Bot API (`setWebhook`).
    pub http: reqwest::Client,
    recorder: Recorder,
    backoff: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Metrics, stores: Stores) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        // One recorder for the process, so repeated Events are grouped into series.
        // `main` has checked the URL parses.
        let database = config
            .database_admin_url
            .as_ref()
            .and_then(|u| xin_store::provision::Admin::new(&u.0).ok());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("a client with only timeouts set always builds");
        Context {
            database,
            http,
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            stores,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// The clock of every reconcile (conditions' transition times, key expiry), in whole
    /// seconds as the API server stores times.
    pub fn now(&self) -> Time {
        let now = k8s_openapi::jiff::Timestamp::now();
        Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
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
            // A change of the Tenant triggers a reconcile anyway (see `stores`); this is only
            // the safety net.
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

    /// Publishes an Event about `obj`. A failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        obj: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj).await {
            warn!(error = %e, reason, "could not publish an event");
        }
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

/// Runs every controller until shutdown. `wiring` holds the watches they read and are
/// triggered by.
pub async fn run(client: Client, config: Config, metrics: Metrics, wiring: Wiring) {
    let Wiring {
        stores,
        queues,
        drivers,
    } = wiring;
    let watches = tokio::spawn(futures::future::join_all(drivers));
    info!("waiting for every watch to list once");
    stores.wait_until_ready().await;
    info!("watches listed; starting the controllers");
    metrics.watch_stores(&stores);
    let ctx = Arc::new(Context::new(client, config, metrics, stores));
    futures::join!(
        runner::run::<xin_api::Tenant>(ctx.clone(), queues.tenant),
        runner::run::<xin_api::Channel>(ctx.clone(), queues.channel),
        runner::run::<xin_api::AutomationRule>(ctx.clone(), queues.rule),
        runner::run::<xin_api::IngestionJob>(ctx.clone(), queues.ingestion),
    );
    watches.abort();
    info!("controllers stopped");
}
