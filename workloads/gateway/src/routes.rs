//! The routes file the operator renders (a mounted Secret): read at start and re-read when
//! it changes, so new channels and rotated keys apply without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use xin_api::routes::{ChannelRoute, Routes};

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

/// Re-reads the file every `every`; a changed file that parses replaces the table, one that
/// does not is reported and the last good routes stay in use.
pub fn watch(
    path: PathBuf,
    table: RouteTable,
    mut last: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
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
                    tracing::error!(error = %e, file = %path.display(), "routes file changed but is not valid; keeping the previous routes")
                }
            }
        }
    })
}

/// The keys a channel accepts now: expired previous keys are dropped even before the
/// operator rewrites the file.
pub fn accepted_keys(route: &ChannelRoute, now: std::time::SystemTime) -> Vec<&str> {
    let now_s = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    route
        .keys
        .iter()
        .filter(|k| match &k.expires_at {
            None => true,
            Some(t) => parse_rfc3339_seconds(t).is_some_and(|exp| exp > now_s),
        })
        .map(|k| k.key.as_str())
        .collect()
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2026-11-23T10:00:00Z`, optional
/// fraction), as the operator writes them.
fn parse_rfc3339_seconds(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_like_the_operator_writes_it() {
        assert_eq!(parse_rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_seconds("2026-11-23T10:00:00Z"),
            Some(1_795_428_000)
        );
        assert_eq!(
            parse_rfc3339_seconds("2026-11-23T10:00:00.123456Z"),
            Some(1_795_428_000)
        );
        assert_eq!(parse_rfc3339_seconds("yesterday"), None);
    }
}
