//! What every Xin workload binary shares: JSON logs carrying a `correlation_id` (internal
//! services take a caller's `X-Request-ID`; the public edge always generates its own), echoed in
//! `X-Request-ID`, Prometheus metrics `http_requests_total` and
//! `http_request_latency_seconds` by route, method and status code, JSON error bodies, a
//! metrics server that fails clearly when its port is taken, shutdown on SIGTERM, and
//! [`outbound`], the one HTTP client for tenant-supplied URLs.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::Instrument;

pub mod args;
pub mod outbound;
pub mod signing;
pub mod telemetry;

pub use telemetry::{
    Telemetry, continue_trace, init_telemetry, init_telemetry_with, inject_trace, trace_id,
};
pub use xin_api::Redacted;

pub const REQUEST_ID: &str = "x-request-id";

/// What the redacting `Debug` impls of secret-holding types show in place of a secret:
/// `redacted(&secret)` (for a key held as bytes); a secret setting that is a string is a
/// [`Redacted`] instead.
pub fn redacted<T: ?Sized>(_secret: &T) -> std::fmt::Arguments<'static> {
    format_args!("<redacted>")
}

/// JSON logs on stdout only, filtered by `RUST_LOG` (default `info`); binaries use
/// [`init_telemetry`], which adds traces.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
}

/// An HTTP client for calls to other services and providers (never to a tenant-supplied
/// URL: those go through [`outbound::Outbound`]), with rustls on the `ring`
/// provider (installed here once; kube and sqlx use it too).
pub fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a client with only timeouts set always builds")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub route: String,
    pub method: String,
}

/// The HTTP metrics of one service, plus its registry for service-specific metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    pub registry: Arc<std::sync::Mutex<Registry>>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                // 1.2 and 1.5: the latency SLO (P95 under 1.2 s) and where it pages.
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.2, 1.5, 2.5, 5.0,
                10.0,
            ])
        });
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status code",
            requests.clone(),
        );
        registry.register(
            "http_request_latency_seconds",
            "HTTP request latency by route and method",
            latency.clone(),
        );
        HttpMetrics {
            registry: Arc::new(std::sync::Mutex::new(registry)),
            requests,
            latency,
        }
    }
}

impl HttpMetrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// The correlation id of a request, put into its extensions by [`observe`].
#[derive(Clone, Debug)]
pub struct CorrelationId(pub String);

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Accepts an incoming `X-Request-ID` only when it is short and printable (it goes into logs).
fn valid_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()))
        .then(|| s.to_string())
}

/// The `method` label of the HTTP metrics: one of a fixed set, so a client cannot grow the
/// metric's label space by sending methods of its own (`OTHER` for anything else).
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware for internal services: correlation id in (a caller's valid `X-Request-ID`, else
/// a new one), span around the request (continuing the caller's `traceparent`), metrics, id
/// echoed out.
pub async fn observe(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    observe_request(metrics, req, next, true).await
}

/// [`observe`] for endpoints the public internet calls (provider webhooks, the widget):
/// nothing the client sends is trusted. Every request gets a new correlation id (echoed in
/// `X-Request-ID`), and the client's own valid `X-Request-ID` is only logged, as
/// `client_request_id`; a client's `traceparent` is ignored, every request starts its own
/// trace.
pub async fn observe_edge(
    State(metrics): State<HttpMetrics>,
    req: Request,
    next: Next,
) -> Response {
    observe_request(metrics, req, next, false).await
}

async fn observe_request(
    metrics: HttpMetrics,
    mut req: Request,
    next: Next,
    trust_caller: bool,
) -> Response {
    let start = Instant::now();
    let given = req.headers().get(REQUEST_ID).and_then(valid_id);
    let (id, client_request_id) = if trust_caller {
        (given.unwrap_or_else(new_id), None)
    } else {
        (new_id(), given)
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method()).to_string();
    req.extensions_mut().insert(CorrelationId(id.clone()));
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        correlation_id = %id,
        client_request_id = tracing::field::Empty,
        route = %route,
        method = %method
    );
    if let Some(c) = &client_request_id {
        span.record("client_request_id", c.as_str());
    }
    if trust_caller {
        continue_trace(&span, req.headers());
    }
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status_code: status,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&LatencyLabels { route, method })
        .observe(start.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "request served"
        )
    });
    resp
}

/// A 4xx/5xx with a JSON body: `{"error": code, "message": ..., "correlation_id": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub correlation_id: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        id: &CorrelationId,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            correlation_id: id.0.clone(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message, "correlation_id": self.correlation_id});
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Binds the metrics server (`/metrics`, `/health`) on `addr`; a port already in use is a
/// clear error naming the address and the variables that set it, not a panic.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: HttpMetrics,
    vars: &str,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot serve metrics on {addr} ({vars}): {e}"))?;
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<HttpMetrics>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .with_state(metrics);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// Resolves on SIGTERM or Ctrl-C: pass to `axum::serve(...).with_graceful_shutdown`, which
/// then finishes the requests in flight.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_accepted_only_when_printable_and_short() {
        assert_eq!(
            valid_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(valid_id(&HeaderValue::from_static("")), None);
        assert_eq!(
            valid_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()),
            None
        );
        assert_eq!(valid_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(new_id().len(), 32);
    }

    /// Log lines written while the guard lives, as JSON values.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<serde_json::Value> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Captured::default();
        let w = out.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(move || w.clone()),
        );
        (out, tracing::subscriber::set_default(sub))
    }

    /// A router answering its correlation id, behind `observe` or `observe_edge`.
    async fn call(edge: bool, method: &str, request_id: Option<&str>) -> (HttpMetrics, Response) {
        use tower::ServiceExt;
        let metrics = HttpMetrics::default();
        let handler = || async |axum::Extension(id): axum::Extension<CorrelationId>| id.0;
        let router = Router::new().route("/x", axum::routing::any(handler()));
        let router = if edge {
            router.layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                observe_edge,
            ))
        } else {
            router.layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                observe,
            ))
        };
        let mut req = axum::http::Request::builder().method(method).uri("/x");
        if let Some(r) = request_id {
            req = req.header(REQUEST_ID, r);
        }
        let resp = router
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        (metrics, resp)
    }

    async fn body(resp: Response) -> String {
        let b = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_edge_generates_its_own_correlation_id_and_logs_the_clients_apart() {
        let (logs, _guard) = capture();
        let (_, resp) = call(true, "POST", Some("client-abc")).await;
        let echoed = resp.headers()[REQUEST_ID].to_str().unwrap().to_string();
        let seen = body(resp).await;
        assert_ne!(
            echoed, "client-abc",
            "a client's id is not the correlation id"
        );
        assert_eq!(echoed.len(), 32);
        assert_eq!(seen, echoed, "the handler and the response agree");
        let served: Vec<_> = logs
            .lines()
            .into_iter()
            .filter(|l| l["message"] == "request served")
            .collect();
        assert_eq!(served.len(), 1, "{served:?}");
        assert_eq!(served[0]["span"]["correlation_id"], echoed.as_str());
        assert_eq!(served[0]["span"]["client_request_id"], "client-abc");

        // An invalid client id is not logged at all.
        let (_, resp) = call(true, "POST", Some("a b")).await;
        let echoed = resp.headers()[REQUEST_ID].to_str().unwrap().to_string();
        let line = logs
            .lines()
            .into_iter()
            .find(|l| l["span"]["correlation_id"] == echoed.as_str())
            .unwrap();
        assert!(line["span"].get("client_request_id").is_none(), "{line}");

        // Internal services keep trusting their caller (the gateway) for the id.
        let (_, resp) = call(false, "POST", Some("client-abc")).await;
        assert_eq!(resp.headers()[REQUEST_ID], "client-abc");
        assert_eq!(body(resp).await, "client-abc");
    }

    #[tokio::test]
    async fn the_method_label_comes_from_a_fixed_set() {
        // Logs captured here too: a test thread logging with no subscriber at all, beside one
        // that captures, can leave tracing's per-callsite cache saying "nobody listens".
        let (_logs, _guard) = capture();
        for edge in [true, false] {
            let (metrics, resp) = call(edge, "XYZZY-RANDOM", None).await;
            assert_eq!(resp.status(), 200);
            let m = metrics.encode();
            assert!(
                m.contains(r#"http_requests_total{route="/x",method="OTHER",status_code="200"} 1"#),
                "{m}"
            );
            assert!(!m.contains("XYZZY"), "{m}");
        }
        assert_eq!(method_label(&axum::http::Method::DELETE), "DELETE");
        assert_eq!(
            method_label(&axum::http::Method::from_bytes(b"PROPFIND").unwrap()),
            "OTHER"
        );
    }

    #[tokio::test]
    async fn a_taken_metrics_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve_metrics(addr, HttpMetrics::default(), "GATEWAY_METRICS_HOST/PORT")
            .await
            .unwrap_err();
        assert!(
            err.contains(&addr.to_string()) && err.contains("GATEWAY_METRICS_HOST/PORT"),
            "{err}"
        );
    }
}
