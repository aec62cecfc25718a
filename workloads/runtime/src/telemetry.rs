//! Logs and traces of a workload binary: JSON logs on stdout (filtered by `RUST_LOG`), and,
//! when an OTLP endpoint is configured, every `tracing` span exported over OTLP/HTTP
//! (protobuf) with W3C trace-context propagation between the services.
//!
//! Endpoint, first set wins: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), then
//! `OTEL_EXPORTER_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; `/v1/traces` is
//! appended). Headers: `OTEL_EXPORTER_HEADERS`, else `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
//! `OTEL_EXPORTER_OTLP_HEADERS`, as comma-separated `key=value` (values may be
//! percent-encoded). The exporter itself also reads the standard `OTEL_EXPORTER_OTLP_HEADERS`
//! and `OTEL_EXPORTER_OTLP_TRACES_HEADERS` and adds them on top, winning for a header name set
//! in both. `tracing initialised` is logged once on success; a bad configuration is one clear
//! error and the binary carries on without traces.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

/// The OTLP settings read from the environment.
#[derive(PartialEq)]
pub struct OtlpConfig {
    /// Full URL of the traces endpoint.
    pub endpoint: String,
    /// Often a collector's credentials (`authorization=…`): never shown by `Debug`.
    pub headers: HashMap<String, String>,
}

/// Shows the endpoint and the header names; the header values (credentials) are redacted.
impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &format_args!("{names:?} (values redacted)"))
            .finish()
    }
}

fn first_env(
    env: &dyn Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
}

/// Reads the OTLP configuration; `Ok(None)` when no endpoint is set. Errors name the
/// variable and the position of a bad entry, never a header's value.
pub fn otlp_config(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, String> {
    let endpoint = if let Some((_, v)) = first_env(env, &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
        v.trim().to_string()
    } else if let Some((_, v)) = first_env(
        env,
        &["OTEL_EXPORTER_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
    ) {
        let base = v.trim().trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    } else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "the OTLP endpoint must be an http:// or https:// URL, got {endpoint:?}"
        ));
    }
    let mut headers = HashMap::new();
    if let Some((var, raw)) = first_env(
        env,
        &[
            "OTEL_EXPORTER_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ],
    ) {
        for (i, entry) in raw
            .split(',')
            .enumerate()
            .filter(|(_, e)| !e.trim().is_empty())
        {
            let Some((k, v)) = entry.split_once('=') else {
                return Err(format!("{var}: entry {} is not key=value", i + 1));
            };
            let k = k.trim();
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!("{var}: entry {} has an invalid header name", i + 1));
            }
            let v = percent_decode(v.trim())
                .filter(|v| http::HeaderValue::from_str(v).is_ok())
                .ok_or_else(|| {
                    format!(
                        "{var}: entry {} ({k}) has a bad percent-encoding or is not a valid header value",
                        i + 1
                    )
                })?;
            headers.insert(k.to_string(), v);
        }
    }
    Ok(Some(OtlpConfig { endpoint, headers }))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Sets up logs and, when configured, traces for `service`. Call once at start and keep
/// the guard until the end of `main`.
pub fn init_telemetry(service: &'static str) -> Telemetry {
    init_telemetry_with(service, "info", false)
}

/// [`init_telemetry`] with `default_filter` when `RUST_LOG` is unset, and — with
/// `always_trace` — spans that carry trace ids even when no OTLP endpoint is configured (they
/// are then sampled but exported nowhere), so log lines can name their trace either way.
pub fn init_telemetry_with(
    service: &'static str,
    default_filter: &str,
    always_trace: bool,
) -> Telemetry {
    // The exporter's HTTP client uses rustls; kube and sqlx use the ring provider too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| default_filter.into())
    };
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false);
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let config = otlp_config(&|n| std::env::var(n).ok());
    // A bad OTLP configuration is reported; with `always_trace` spans still get their ids.
    let (built, error) = match &config {
        Ok(Some(c)) => match build_provider(service, Some(c)) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        Ok(None) => (None, None),
        Err(e) => (None, Some(e.clone())),
    };
    let provider = match built {
        Some(p) => Some(p),
        None if always_trace => build_provider(service, None).ok(),
        None => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(fmt)
        .with(otel_layer)
        .try_init();
    match (error, config) {
        (Some(e), _) => {
            tracing::error!(error = %e, "tracing not initialised; running without traces")
        }
        (None, Ok(Some(c))) => {
            tracing::info!(endpoint = %c.endpoint, headers = c.headers.len(), "tracing initialised")
        }
        _ if provider.is_some() => tracing::info!(
            "no OTEL_EXPORTER_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT set: spans get trace ids, nothing is exported"
        ),
        _ => tracing::info!(
            "tracing disabled: no OTEL_EXPORTER_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT set"
        ),
    }
    Telemetry { provider }
}

/// The trace id of `span` (32 hex digits), or `None` when spans carry none (no tracer).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let id = span.context().span().span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// A provider exporting to `c`, or — without one — a provider that only gives spans their
/// ids.
fn build_provider(
    service: &'static str,
    c: Option<&OtlpConfig>,
) -> Result<SdkTracerProvider, String> {
    let mut builder = SdkTracerProvider::builder();
    if let Some(c) = c {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(c.endpoint.clone())
            .with_headers(c.headers.clone())
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| format!("OTLP exporter for {}: {e}", c.endpoint))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Makes `span` a child of the trace context (`traceparent`) in `headers`, if any.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// Adds the current span's trace context (`traceparent`) to outgoing `headers`.
pub fn inject_trace(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        otlp_config(&|n| m.get(n).cloned())
    }

    #[test]
    fn spans_have_trace_ids_with_a_tracer_without_an_exporter() {
        let provider = build_provider("xin-test", None).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("xin-test")));
        tracing::subscriber::with_default(subscriber, || {
            let a = tracing::info_span!(parent: None, "a");
            let b = tracing::info_span!(parent: None, "b");
            let (ta, tb) = (trace_id(&a).unwrap(), trace_id(&b).unwrap());
            assert_eq!(ta.len(), 32, "{ta}");
            assert!(ta.bytes().all(|c| c.is_ascii_hexdigit()), "{ta}");
            assert_ne!(ta, tb, "two root spans, two traces");
            let child = a.in_scope(|| tracing::info_span!("child"));
            assert_eq!(
                trace_id(&child).unwrap(),
                ta,
                "a child is in its parent's trace"
            );
        });
        assert_eq!(
            trace_id(&tracing::info_span!("none")),
            None,
            "no tracer, no id"
        );
    }

    #[test]
    fn endpoint_precedence_and_paths() {
        assert_eq!(cfg(&[]), Ok(None));
        let c = cfg(&[("OTEL_EXPORTER_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        let c = cfg(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://c:4318/v1/traces");
        let c = cfg(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
            ("OTEL_EXPORTER_ENDPOINT", "http://c:4318"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "http://t:1/custom");
        assert!(
            cfg(&[("OTEL_EXPORTER_ENDPOINT", "collector:4318")])
                .unwrap_err()
                .contains("http://")
        );
    }

    #[test]
    fn headers_are_parsed_and_errors_never_show_values() {
        let c = cfg(&[
            ("OTEL_EXPORTER_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_HEADERS",
                "authorization=Bearer%20s3cret, x-tenant=acme",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "ignored=1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.headers.len(), 2);
        assert_eq!(c.headers["authorization"], "Bearer s3cret");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("authorization"),
            "{shown}"
        );
        let c = cfg(&[
            ("OTEL_EXPORTER_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.headers["a"], "b");
        let e = cfg(&[
            ("OTEL_EXPORTER_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_HEADERS", "a=1,s3cretvalue"),
        ])
        .unwrap_err();
        assert_eq!(e, "OTEL_EXPORTER_HEADERS: entry 2 is not key=value");
        for bad in ["k=s3cret%zz", "k=s3cret%0Aline"] {
            let e = cfg(&[
                ("OTEL_EXPORTER_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_HEADERS", bad),
            ])
            .unwrap_err();
            assert!(e.contains("entry 1 (k)") && !e.contains("s3cret"), "{e}");
        }
    }
}
