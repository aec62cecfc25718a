//! Prometheus metrics of the operator, and a client layer that counts every write request it
//! sends to the API server (so "no write when nothing changed" is measured, not assumed).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod objects;
pub use objects::{StoreFigures, ingestion_lag};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub verb: String,
    pub resource: String,
}

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub reconciles: Family<KindLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub writes: Family<WriteLabels, Counter>,
    pub requests: Family<WriteLabels, Counter>,
    /// The object-condition and ingestion-lag gauges, read from the stores once
    /// [`Metrics::watch_stores`] hands them over.
    pub stores: StoreFigures,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("xin_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let writes = Family::<WriteLabels, Counter>::default();
        let requests = Family::<WriteLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations run, by kind",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by kind and error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconciliation took, by kind",
            duration.clone(),
        );
        registry.register(
            "write_requests",
            "Write requests (POST, PUT, PATCH, DELETE) sent to the API server, by verb and resource",
            writes.clone(),
        );
        registry.register(
            "api_requests",
            "Every request sent to the API server, by verb (GET, LIST, WATCH, POST, PATCH, PUT, DELETE) and resource",
            requests.clone(),
        );
        // Failures of every kind and label at 0, so a rate (and an alert on it) has a series
        // before the first failure.
        for kind in ["Tenant", "Channel", "AutomationRule", "IngestionJob"] {
            for error in crate::error::Error::FAILURE_LABELS {
                let _ = failures.get_or_create(&FailureLabels {
                    kind: kind.into(),
                    error: error.into(),
                });
            }
        }
        let stores = StoreFigures::default();
        // Its metrics get the registry's prefix too (`xin_operator_object_condition`).
        registry.register_collector(Box::new(stores.clone()));
        Metrics {
            stores,
            registry: Arc::new(registry),
            requests,
            reconciles,
            failures,
            duration,
            writes,
        }
    }
}

impl Metrics {
    /// Reads the object-condition and ingestion-lag gauges from `stores` from now on.
    pub fn watch_stores(&self, stores: &crate::stores::Stores) {
        let _ = self.stores.0.set(stores.clone());
    }

    pub fn reconciled(&self, kind: &str, took: Duration) {
        let labels = KindLabels { kind: kind.into() };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &str, error: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                error: error.into(),
            })
            .inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        out
    }

    /// Total writes, optionally excluding one resource (the leader-election Lease).
    pub fn total_writes(&self, excluding: Option<&str>) -> u64 {
        // Family has no iterator; encode and sum the samples instead.
        self.encode()
            .lines()
            .filter(|l| l.starts_with("xin_operator_write_requests_total{"))
            .filter(|l| excluding.is_none_or(|r| !l.contains(&format!("resource=\"{r}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// The segments of a request path after the API group and version, and after
/// `namespaces/<ns>` when the path is inside a namespace: `[secrets, x]`, `[deployments, x,
/// status]`, `[namespaces]`.
fn resource_segments(path: &str) -> Vec<&str> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => segs.get(2..),
        Some(&"apis") => segs.get(3..),
        _ => None,
    }
    .unwrap_or(&[]);
    match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail.to_vec(),
        other => other.to_vec(),
    }
}

/// The resource a request path names: `/api/v1/namespaces/ns/secrets/x` → `secrets`,
/// `/apis/apps/v1/namespaces/ns/deployments/x/status` → `deployments/status`.
pub fn resource_of_path(path: &str) -> String {
    match resource_segments(path).as_slice() {
        [] => "unknown".into(),
        [res] | [res, _] => (*res).into(),
        [res, _, sub, ..] => format!("{res}/{sub}"),
    }
}

/// The verb of a request as Kubernetes names it: a GET of a collection is a LIST, with
/// `watch=true` a WATCH.
pub fn verb_of(method: &http::Method, uri: &http::Uri) -> &'static str {
    let query = uri.query().unwrap_or_default();
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match *method {
        http::Method::GET if watch => "WATCH",
        // A collection (one segment: `secrets`) is listed; anything deeper is one object.
        http::Method::GET if resource_segments(uri.path()).len() == 1 => "LIST",
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// Tower layer that counts every request in [`Metrics::requests`] and the write requests in
/// [`Metrics::writes`].
#[derive(Clone)]
pub struct CountWritesLayer(pub Metrics);

impl<S> tower::Layer<S> for CountWritesLayer {
    type Service = CountWrites<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountWrites {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CountWrites<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> tower::Service<http::Request<B>> for CountWrites<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let m = req.method();
        self.metrics
            .requests
            .get_or_create(&WriteLabels {
                verb: verb_of(m, req.uri()).into(),
                resource: resource_of_path(req.uri().path()),
            })
            .inc();
        if m != http::Method::GET && m != http::Method::HEAD && m != http::Method::OPTIONS {
            self.metrics
                .writes
                .get_or_create(&WriteLabels {
                    verb: m.as_str().to_string(),
                    resource: resource_of_path(req.uri().path()),
                })
                .inc();
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_of_path_names_the_resource_and_subresource() {
        assert_eq!(
            resource_of_path("/api/v1/namespaces/a/secrets/x"),
            "secrets"
        );
        assert_eq!(resource_of_path("/api/v1/namespaces/a/secrets"), "secrets");
        assert_eq!(resource_of_path("/api/v1/namespaces/a"), "namespaces");
        assert_eq!(resource_of_path("/api/v1/namespaces"), "namespaces");
        assert_eq!(
            resource_of_path("/apis/apps/v1/namespaces/a/deployments/x/status"),
            "deployments/status"
        );
        assert_eq!(
            resource_of_path("/apis/xin.dev/v1alpha1/tenants/acme/status"),
            "tenants/status"
        );
        assert_eq!(
            resource_of_path("/apis/coordination.k8s.io/v1/namespaces/xin-system/leases/xin"),
            "leases"
        );
        assert_eq!(resource_of_path("/healthz"), "unknown");
    }

    #[test]
    fn verbs_name_lists_gets_and_watches() {
        let v = |m: http::Method, u: &str| verb_of(&m, &u.parse().unwrap());
        assert_eq!(v(http::Method::GET, "/api/v1/namespaces/a/secrets"), "LIST");
        assert_eq!(
            v(http::Method::GET, "/api/v1/secrets?labelSelector=x"),
            "LIST"
        );
        assert_eq!(
            v(http::Method::GET, "/api/v1/namespaces/a/secrets/x"),
            "GET"
        );
        assert_eq!(v(http::Method::GET, "/api/v1/namespaces/a"), "GET");
        assert_eq!(
            v(
                http::Method::GET,
                "/apis/apps/v1/deployments?watch=true&resourceVersion=1"
            ),
            "WATCH"
        );
        assert_eq!(
            v(
                http::Method::PATCH,
                "/apis/xin.dev/v1alpha1/tenants/a/status"
            ),
            "PATCH"
        );
    }

    #[test]
    fn total_writes_sums_and_excludes() {
        let m = Metrics::default();
        for (verb, res, n) in [
            ("PATCH", "secrets", 3),
            ("PATCH", "leases", 5),
            ("DELETE", "jobs", 1),
        ] {
            for _ in 0..n {
                m.writes
                    .get_or_create(&WriteLabels {
                        verb: verb.into(),
                        resource: res.into(),
                    })
                    .inc();
            }
        }
        assert_eq!(m.total_writes(None), 9);
        assert_eq!(m.total_writes(Some("leases")), 4);
    }
}
