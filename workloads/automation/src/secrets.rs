//! The Secrets rules name, read by name through the API server in the worker's own namespace
//! (its Role grants `get` on exactly those names, nothing else), each kept for a short while
//! so a burst of runs does not become a burst of reads. Errors name the Secret and the key,
//! never a value.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::Mutex;

pub type SecretData = Arc<BTreeMap<String, Vec<u8>>>;

#[derive(Clone)]
pub struct Secrets {
    api: Option<Api<Secret>>,
    namespace: String,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<String, (Instant, SecretData)>>>,
}

impl Secrets {
    pub fn new(api: Api<Secret>, namespace: &str, ttl: Duration) -> Self {
        Secrets {
            api: Some(api),
            namespace: namespace.to_string(),
            ttl,
            cache: Arc::default(),
        }
    }

    /// Secrets given in advance, never read from an API server (benchmarks).
    pub fn fixed(namespace: &str, secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> Self {
        let now = Instant::now();
        let cache = secrets
            .into_iter()
            .map(|(k, v)| (k, (now, Arc::new(v))))
            .collect();
        Secrets {
            api: None,
            namespace: namespace.to_string(),
            ttl: Duration::MAX,
            cache: Arc::new(Mutex::new(cache)),
        }
    }

    /// The data of Secret `name`.
    pub async fn get(&self, name: &str) -> Result<SecretData, String> {
        {
            let cache = self.cache.lock().await;
            if let Some((at, data)) = cache.get(name)
                && at.elapsed() < self.ttl
            {
                return Ok(data.clone());
            }
        }
        let ns = &self.namespace;
        let Some(api) = &self.api else {
            return Err(format!("Secret {ns}/{name} not found"));
        };
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(format!("Secret {ns}/{name} not found")),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(format!(
                    "Secret {ns}/{name} is not readable by the worker (its Role grants get on the Secrets the rules name; the operator updates it when a rule changes)"
                ));
            }
            Err(e) => return Err(format!("cannot read Secret {ns}/{name}: {e}")),
        };
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let data = Arc::new(data);
        self.cache
            .lock()
            .await
            .insert(name.to_string(), (Instant::now(), data.clone()));
        Ok(data)
    }

    /// One key of Secret `name`, as text without surrounding whitespace.
    pub async fn key(&self, name: &str, key: &str) -> Result<String, String> {
        let data = self.get(name).await?;
        let ns = &self.namespace;
        let v = data
            .get(key)
            .ok_or_else(|| format!("Secret {ns}/{name} has no key {key}"))?;
        let s = std::str::from_utf8(v)
            .map_err(|_| format!("key {key} of Secret {ns}/{name} is not UTF-8 text"))?
            .trim();
        if s.is_empty() {
            return Err(format!("key {key} of Secret {ns}/{name} is empty"));
        }
        Ok(s.to_string())
    }
}
