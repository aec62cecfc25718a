//! The routes file the operator renders (a mounted Secret): read at start and re-read when
//! it changes, so new channels and rotated keys apply without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use xin_api::routes::{ChannelRoute, Routes, WebhookKey};
use xin_runtime::HttpMetrics;

/// The current routes, swapped whole on reload.
#[derive(Clone, Default)]
pub struct RouteTable(Arc<RwLock<Arc<Routes>>>);

impl RouteTable {
    pub fn get(&self) -> Arc<Routes> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, routes: Routes) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }

    pub fn channel(&self, name: &str) -> Option<ChannelRoute> {
        self.get().channels.iter().find(|c| c.name == name).cloned()
    }
}

/// Reads and parses the routes file. The error names the file, never its contents.
pub fn load(path: &PathBuf) -> Result<(Routes, Vec<u8>), String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read routes file {}: {e}", path.display()))?;
    let routes = serde_json::from_slice(&bytes)
        .map_err(|e| format!("routes file {} is not valid: {e}", path.display()))?;
    Ok((routes, bytes))
}

/// Name of the counter of rejected reloads (`…_total` once exposed).
pub const RELOAD_FAILURES: &str = "gateway_routes_reload_failures";

/// Re-reads the file every `every`; a changed file that parses replaces the table, one that
/// does not is logged, counted in `metrics` as [`RELOAD_FAILURES`] (at every re-read while it
/// stays so) and the last good routes stay in use.
pub fn watch(
    path: PathBuf,
    table: RouteTable,
    mut last: Vec<u8>,
    every: Duration,
    metrics: &HttpMetrics,
) -> tokio::task::JoinHandle<()> {
    let failures = Counter::<u64>::default();
    metrics
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .register(
            RELOAD_FAILURES,
            "Re-reads of a changed routes file that was not valid and not loaded (the last good routes stay in use)",
            failures.clone(),
        );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if bytes == last {
                continue;
            }
            match serde_json::from_slice::<Routes>(&bytes) {
                Ok(r) => {
                    tracing::info!(channels = r.channels.len(), "routes reloaded");
                    table.set(r);
                    last = bytes;
                }
                Err(e) => {
                    failures.inc();
                    tracing::error!(error = %e, file = %path.display(), "routes file changed but is not valid; keeping the previous routes")
                }
            }
        }
    })
}

/// The keys a channel accepts at `now`: expired previous keys are dropped even before the
/// operator rewrites the file.
pub fn accepted_keys(route: &ChannelRoute, now: SystemTime) -> Vec<&str> {
    unexpired(&route.keys, now).collect()
}

/// The Meta app secrets a channel accepts signatures from at `now`: the current
/// `credentials.appSecret` and each of `credentials.previousAppSecrets` until its expiry
/// (the same rule as [`accepted_keys`]).
pub fn accepted_app_secrets(route: &ChannelRoute, now: SystemTime) -> Vec<&str> {
    route
        .credentials
        .app_secret
        .as_deref()
        .into_iter()
        .chain(unexpired(&route.credentials.previous_app_secrets, now))
        .collect()
}

/// The keys whose expiry (if any) is after `now`.
fn unexpired(keys: &[WebhookKey], now: SystemTime) -> impl Iterator<Item = &str> {
    keys.iter()
        .filter(move |k| match &k.expires_at {
            None => true,
            Some(t) => SystemTime::from(t.0) > now,
        })
        .map(|k| k.key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xin_api::channel::ChannelType;
    use xin_api::routes::{Credentials, Time};

    #[test]
    fn a_previous_key_is_accepted_until_its_expiry() {
        let key = |key: &str, exp: Option<&str>| WebhookKey {
            key: key.into(),
            expires_at: exp.map(|e| Time(e.parse().unwrap())),
        };
        let route = ChannelRoute {
            name: "tg".into(),
            type_: ChannelType::Telegram,
            path: "/webhooks/tg".into(),
            suspended: false,
            max_body_bytes: 1024,
            requests_per_second: 1,
            burst: 1,
            keys: vec![
                key("current", None),
                key("previous", Some("2026-11-23T10:00:00Z")),
            ],
            credentials: Credentials::default(),
            allowed_origins: vec![],
            phone_number_id: None,
            page_id: None,
            legacy_identity_tokens: false,
            anonymous_visitors: false,
            display_name: None,
            theme: None,
        };
        // 2026-11-23T10:00:00Z
        let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_428_000);
        assert_eq!(
            accepted_keys(&route, expiry - Duration::from_millis(1)),
            ["current", "previous"]
        );
        assert_eq!(accepted_keys(&route, expiry), ["current"]);
        assert_eq!(
            accepted_keys(&route, expiry + Duration::from_secs(3600)),
            ["current"]
        );
    }
}
