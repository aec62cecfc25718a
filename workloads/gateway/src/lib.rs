//! `xin-gateway`: one per tenant, serving all its channels. Verifies provider webhooks exactly
//! as each provider documents, bounds body size and rate, and writes every verified message to
//! the PostgreSQL inbox (idempotent on the provider's message id) before answering 200.
#![forbid(unsafe_code)]

pub mod forward;
pub mod providers;
pub mod reply;
pub mod routes;
pub mod verify;
pub mod widget;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, options};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::PgPool;
use xin_api::channel::ChannelType;
use xin_runtime::{ApiError, CorrelationId, HttpMetrics};

use crate::providers::Inbound;
use crate::routes::RouteTable;
use crate::verify::Refusal;

/// Widget long polls one gateway holds open at once; more get a 429.
pub const MAX_POLLS: usize = 256;

#[derive(Clone)]
pub struct Gateway {
    pub tenant: String,
    pub routes: RouteTable,
    pub pool: PgPool,
    /// Signs the widget's session tokens (the tenant signing key).
    pub session_key: Arc<Vec<u8>>,
    pub widget_session_ttl: std::time::Duration,
    /// Wakes the forwarding worker after an accept.
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes widget long polls when the worker stores an answer.
    pub answered: Arc<tokio::sync::Notify>,
    /// Widget long polls in progress (at most [`MAX_POLLS`]).
    pub polls: Arc<tokio::sync::Semaphore>,
    limiter: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl Gateway {
    pub fn new(tenant: String, routes: RouteTable, pool: PgPool, session_key: Vec<u8>) -> Self {
        Gateway {
            tenant,
            routes,
            pool,
            session_key: Arc::new(session_key),
            widget_session_ttl: std::time::Duration::from_secs(900),
            wake: Arc::default(),
            answered: Arc::default(),
            polls: Arc::new(tokio::sync::Semaphore::new(MAX_POLLS)),
            limiter: Arc::default(),
        }
    }

    /// The channel's rate limit as a 429 with `Retry-After`.
    pub(crate) fn limit(
        &self,
        channel: &str,
        route: &xin_api::routes::ChannelRoute,
        id: &CorrelationId,
    ) -> Result<(), ApiError> {
        self.take(channel, route.requests_per_second, route.burst)
            .map_err(|wait| {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests for this channel",
                    id,
                );
                e.retry_after = Some(wait);
                e
            })
    }
}

/// Token bucket per channel.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Gateway {
    /// `Ok` when the channel may take one more request now, else the seconds to wait.
    fn take(&self, channel: &str, rps: i32, burst: i32) -> Result<(), u64> {
        let mut m = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let b = m.entry(channel.to_string()).or_insert(Bucket {
            tokens: burst as f64,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * rps as f64).min(burst as f64);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rps.max(1) as f64).ceil().max(1.0) as u64)
        }
    }
}

/// The gateway's routes, wrapped with correlation ids and HTTP metrics.
pub fn app(gw: Gateway, metrics: HttpMetrics) -> Router {
    Router::new()
        .route("/webhooks/{channel}", get(handshake).post(receive))
        .route(
            "/widget/{channel}/session",
            options(widget::preflight).post(widget::session),
        )
        .route(
            "/widget/{channel}/messages",
            options(widget::preflight)
                .post(widget::post_message)
                .get(widget::get_messages),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(gw)
        // Each channel has its own limit, enforced in `receive`.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            xin_runtime::observe_edge,
        ))
}

async fn ready(State(gw): State<Gateway>) -> Response {
    match sqlx::query("SELECT 1").execute(&gw.pool).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
}

#[derive(Deserialize)]
struct HubQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's subscription handshake: echo `hub.challenge` as plain text when `hub.verify_token`
/// is the channel's verify token (or, without one, its webhook key).
async fn handshake(
    State(gw): State<Gateway>,
    Path(channel): Path<String>,
    Query(q): Query<HubQuery>,
    Extension(id): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let route = gw
        .routes
        .channel(&channel)
        .ok_or_else(|| not_found(&channel, &id))?;
    match route.type_ {
        ChannelType::Whatsapp | ChannelType::Instagram => {}
        ChannelType::Telegram | ChannelType::Web => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only WhatsApp and Instagram channels have a GET handshake",
                &id,
            ));
        }
    }
    let expected: Vec<&str> = match &route.credentials.verify_token {
        Some(t) => vec![t.as_str()],
        None => routes::accepted_keys(&route, SystemTime::now()),
    };
    let token = q.verify_token.unwrap_or_default();
    let ok = q.mode.as_deref() == Some("subscribe")
        && verify::telegram_token(Some(token.as_bytes()), &expected).is_ok();
    match (ok, q.challenge) {
        (true, Some(c)) => Ok((
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            c,
        )
            .into_response()),
        (true, None) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_challenge",
            "hub.challenge is required",
            &id,
        )),
        (false, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "verification_failed",
            "hub.mode or hub.verify_token is wrong",
            &id,
        )),
    }
}

pub(crate) fn not_found(channel: &str, id: &CorrelationId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_channel",
        format!("no channel {channel:?} on this gateway"),
        id,
    )
}

fn refused(r: Refusal, id: &CorrelationId) -> ApiError {
    match r {
        Refusal::Missing(h) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            format!("{h} header is required"),
            id,
        ),
        Refusal::Invalid(h) => ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            format!("{h} does not match"),
            id,
        ),
        Refusal::NoKey => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "channel_not_configured",
            "this channel has no key to verify requests with; nothing is accepted until it has one",
            id,
        ),
    }
}

/// A provider webhook: limits, verification on the raw bytes, parsing, durable accept.
async fn receive(
    State(gw): State<Gateway>,
    Path(channel): Path<String>,
    Extension(id): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let route = gw
        .routes
        .channel(&channel)
        .ok_or_else(|| not_found(&channel, &id))?;
    if route.suspended {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "channel_suspended",
            "this channel is suspended",
            &id,
        ));
    }
    gw.limit(&channel, &route, &id)?;
    let limit = route.max_body_bytes.max(0) as usize;
    if headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large(limit, &id));
    }
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit, &id))?;

    let header = |n: &str| headers.get(n).map(|v| v.as_bytes());
    let meta_signed = || {
        let secret = route.credentials.app_secret.as_deref().unwrap_or_default();
        verify::meta_signature(header("x-hub-signature-256"), &bytes, &[secret])
            .map_err(|r| refused(r, &id))
    };
    let parsed = match route.type_ {
        ChannelType::Telegram => {
            verify::telegram_token(
                header("x-telegram-bot-api-secret-token"),
                &routes::accepted_keys(&route, SystemTime::now()),
            )
            .map_err(|r| refused(r, &id))?;
            providers::telegram(&bytes)
        }
        ChannelType::Whatsapp => {
            meta_signed()?;
            providers::whatsapp(&bytes)
        }
        ChannelType::Instagram => {
            meta_signed()?;
            providers::instagram(&bytes)
        }
        ChannelType::Web => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "not_a_webhook_channel",
                format!(
                    "web channels are not served by webhook POST; the widget uses /widget/{channel}/…"
                ),
                &id,
            ));
        }
    };
    let messages = parsed
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "malformed_payload", m.0, &id))?;
    let accepted = accept(&gw, &channel, &messages, &id)
        .await
        .map_err(|e| store_failed(&e, &id))?;
    tracing::info!(channel = %channel, received = messages.len(), new = accepted, "webhook accepted");
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({"received": messages.len(), "new": accepted})),
    )
        .into_response())
}

/// 503 `inbox_unavailable`: the inbox could not be read or written (the database is down);
/// the caller, a provider or the widget, retries.
pub(crate) fn inbox_unavailable(message: &str, id: &CorrelationId) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "inbox_unavailable",
        message,
        id,
    )
}

/// [`inbox_unavailable`] for a failed [`accept`], logged.
pub(crate) fn store_failed(e: &sqlx::Error, id: &CorrelationId) -> ApiError {
    tracing::error!(error = %e, "inbox write failed");
    inbox_unavailable("the message could not be stored; retry later", id)
}

fn too_large(limit: usize, id: &CorrelationId) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds this channel's limit of {limit} bytes"),
        id,
    )
}

/// Writes the messages to the inbox in one statement (all or none); a message already there
/// (a provider retry) is skipped. Returns how many were new.
pub async fn accept(
    gw: &Gateway,
    channel: &str,
    messages: &[Inbound],
    id: &CorrelationId,
) -> Result<u64, sqlx::Error> {
    if messages.is_empty() {
        return Ok(0);
    }
    let mut trace = http::HeaderMap::new();
    xin_runtime::inject_trace(&mut trace);
    let traceparent = trace
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // One statement, so one round trip and atomic without an explicit transaction.
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m.provider_message_id.as_str())
        .collect();
    let senders: Vec<&str> = messages.iter().map(|m| m.sender.as_str()).collect();
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    let new = sqlx::query(
        "INSERT INTO gateway_inbox (tenant, channel, provider_message_id, sender, text, correlation_id, trace_context)
         SELECT $1, $2, m.id, m.sender, m.text, $6, $7
         FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS m(id, sender, text, n)
         ORDER BY m.n
         ON CONFLICT (tenant, channel, provider_message_id) DO NOTHING",
    )
    .bind(&gw.tenant)
    .bind(channel)
    .bind(&ids)
    .bind(&senders)
    .bind(&texts)
    .bind(&id.0)
    .bind(&traceparent)
    .execute(&gw.pool)
    .await?
    .rows_affected();
    if new > 0 {
        gw.wake.notify_one();
    }
    Ok(new)
}
