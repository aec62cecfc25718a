//! `xin-gateway`: one per tenant, serving all its channels. Verifies provider webhooks exactly
//! as each provider documents, bounds body size and rate, and writes every verified message to
//! the PostgreSQL inbox (idempotent on the provider's message id) before answering 200.
#![forbid(unsafe_code)]

pub mod backlog;
pub mod client;
pub mod forward;
pub mod inbox;
pub mod limits;
pub mod polls;
pub use xin_gateway_input::providers;
pub mod reply;
pub mod routes;
pub mod server;
pub mod verify;
pub mod widget;

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, options};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use sqlx::PgPool;
use xin_api::channel::ChannelType;
use xin_runtime::{ApiError, CorrelationId, HttpMetrics};

use crate::limits::{Buckets, FAILURE_BURST, FAILURE_RATE_PER_SECOND};
use crate::providers::{Inbound, MetaMessages};
use crate::routes::RouteTable;
use crate::verify::Refusal;

pub use polls::{MAX_POLLS, MAX_POLLS_PER_SESSION, MAX_POLLS_PER_USER};
pub use server::serve;

/// The longest `hub.challenge` echoed (Meta sends a short number); longer is a 400.
pub const MAX_CHALLENGE_CHARS: usize = 256;

/// How long `/ready` waits for the database before answering 503 (not the pool's acquire
/// timeout: a probe must get its answer quickly).
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The `channel` label of a request for a channel that is not in the routes: the label never
/// comes from the URL, so a client cannot grow the metrics with names of its own.
pub const UNKNOWN_CHANNEL: &str = "unknown";

/// Name of the counter of refused requests (`…_total` once exposed).
pub const REFUSED_REQUESTS: &str = "gateway_refused_requests";

/// Labels of [`REFUSED_REQUESTS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// A channel of the routes, or [`UNKNOWN_CHANNEL`].
    pub channel: String,
    /// The error code answered (`missing_signature`, `too_many_failures`, `rate_limited` …).
    pub reason: String,
}

/// Name of the counter of dropped Meta notification items (`…_total` once exposed).
pub const FOREIGN_ENTRIES: &str = "gateway_foreign_entries";

/// A `channel` label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

#[derive(Clone)]
pub struct Gateway {
    pub tenant: String,
    pub routes: RouteTable,
    pub pool: PgPool,
    /// Signs the widget's session tokens (the tenant signing key).
    pub session_key: Arc<Vec<u8>>,
    pub widget_session_ttl: std::time::Duration,
    /// How long a request body may take to arrive (`GATEWAY_BODY_READ_TIMEOUT_SECONDS`).
    pub body_read_timeout: std::time::Duration,
    /// Wakes the forwarding worker after an accept.
    pub wake: Arc<tokio::sync::Notify>,
    /// Writes accepted messages, many requests per commit ([`inbox`]).
    pub inbox: inbox::Inbox,
    /// Wakes widget long polls when the worker stores an answer.
    pub answered: Arc<tokio::sync::Notify>,
    /// Widget long polls in progress (at most [`MAX_POLLS`], and fewer per session and user).
    pub polls: polls::Polls,
    /// The rate at which each end user may start widget polls ([`polls::POLL_RATE_PER_SECOND`]).
    pub(crate) poll_rate: Arc<Buckets>,
    /// Requests refused, by channel and reason ([`REFUSED_REQUESTS`], registered by [`app`]).
    pub refusals: Family<RefusalLabels, Counter>,
    /// Meta notification items for another phone number or page ([`FOREIGN_ENTRIES`]).
    pub foreign: Family<ChannelLabel, Counter>,
    /// Proxies whose `X-Forwarded-For` names the client (`GATEWAY_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Anonymous visitors' requests, by client address and by visitor
    /// ([`limits::ANONYMOUS_ADDRESS_RATE_PER_SECOND`], [`limits::ANONYMOUS_VISITOR_RATE_PER_SECOND`]).
    pub(crate) anonymous: Arc<Buckets>,
    limiter: Arc<Buckets>,
    /// Each channel's failure budget (see [`limits::FAILURE_RATE_PER_SECOND`]).
    failures: Arc<Buckets>,
}

impl Gateway {
    pub fn new(tenant: String, routes: RouteTable, pool: PgPool, session_key: Vec<u8>) -> Self {
        let wake = Arc::<tokio::sync::Notify>::default();
        Gateway {
            inbox: inbox::Inbox::new(
                pool.clone(),
                tenant.clone(),
                wake.clone(),
                inbox::InboxSettings::default(),
            ),
            tenant,
            routes,
            pool,
            session_key: Arc::new(session_key),
            widget_session_ttl: std::time::Duration::from_secs(900),
            body_read_timeout: server::DEFAULT_BODY_READ_TIMEOUT,
            wake,
            answered: Arc::default(),
            polls: polls::Polls::default(),
            poll_rate: Arc::default(),
            refusals: Family::default(),
            foreign: Family::default(),
            trusted_proxies: Arc::default(),
            anonymous: Arc::default(),
            limiter: Arc::default(),
            failures: Arc::default(),
        }
    }

    /// The group commit's limits (the default is [`inbox::InboxSettings::default`]).
    pub fn with_inbox_settings(mut self, settings: inbox::InboxSettings) -> Self {
        self.inbox = inbox::Inbox::new(
            self.pool.clone(),
            self.tenant.clone(),
            self.wake.clone(),
            settings,
        );
        self
    }

    /// The channel's rate limit as a 429 with `Retry-After`. Only verified requests are
    /// charged: call it after the signature, identity or session token is checked.
    pub(crate) fn limit(
        &self,
        channel: &str,
        route: &xin_api::routes::ChannelRoute,
        id: &CorrelationId,
    ) -> Result<(), ApiError> {
        self.limiter
            .take(
                channel,
                route.requests_per_second as f64,
                route.burst as f64,
            )
            .map_err(|wait| {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests for this channel",
                    id,
                );
                e.retry_after = Some(wait);
                self.refused(channel, e)
            })
    }

    /// Reads a request body of at most `limit` bytes within [`Gateway::body_read_timeout`]:
    /// 413 `payload_too_large` above the limit, 408 `body_timeout` when it does not arrive in
    /// time (a client trickling its body cannot hold a connection and a task for long).
    pub(crate) async fn read_body(
        &self,
        body: Body,
        limit: usize,
        id: &CorrelationId,
    ) -> Result<axum::body::Bytes, ApiError> {
        match tokio::time::timeout(self.body_read_timeout, to_bytes(body, limit)).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(_)) => Err(too_large(limit, id)),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
                id,
            )),
        }
    }

    /// Counts a refusal of a request for `channel` (a name from the routes) and returns it.
    pub(crate) fn refused(&self, channel: &str, e: ApiError) -> ApiError {
        self.refusals
            .get_or_create(&RefusalLabels {
                channel: channel.to_string(),
                reason: e.code.to_string(),
            })
            .inc();
        e
    }

    /// A request for `channel` (a name from the routes) failed verification: it spends the
    /// channel's failure budget, never its rate limit. While the budget lasts the refusal is
    /// answered as is and logged; once it is spent the answer is 429 `too_many_failures`
    /// (with `Retry-After`) and only the next logged refusal says how many were not logged.
    pub(crate) fn verification_failed(&self, channel: &str, e: ApiError) -> ApiError {
        match self
            .failures
            .take_counting(channel, FAILURE_RATE_PER_SECOND, FAILURE_BURST)
        {
            Ok(unlogged) => {
                tracing::warn!(
                    channel,
                    reason = e.code,
                    status = e.status.as_u16(),
                    unlogged_since_last = unlogged,
                    "request refused: verification failed"
                );
                self.refused(channel, e)
            }
            Err(wait) => self.refused(
                channel,
                ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: "too_many_failures",
                    message: "too many requests that failed verification for this channel; \
                              retry later"
                        .into(),
                    correlation_id: e.correlation_id,
                    retry_after: Some(wait),
                },
            ),
        }
    }

    /// 404 for a channel that is not in the routes: counted under [`UNKNOWN_CHANNEL`], and
    /// logged within a budget of its own.
    pub(crate) fn unknown_channel(&self, channel: &str, id: &CorrelationId) -> ApiError {
        // "" is no channel name: the budget of the unknown ones.
        if let Ok(unlogged) =
            self.failures
                .take_counting("", FAILURE_RATE_PER_SECOND, FAILURE_BURST)
        {
            tracing::warn!(
                unlogged_since_last = unlogged,
                "request refused: unknown channel"
            );
        }
        self.refused(UNKNOWN_CHANNEL, not_found(channel, id))
    }
}

/// The gateway's routes, wrapped with correlation ids and HTTP metrics; registers the
/// gateway's own metrics in `metrics` (call it once per registry).
pub fn app(gw: Gateway, metrics: HttpMetrics) -> Router {
    {
        let mut registry = metrics.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.register(
            REFUSED_REQUESTS,
            "Requests refused by channel (a name from the routes, or unknown) and reason (the error code answered)",
            gw.refusals.clone(),
        );
        registry.register(
            inbox::BATCH_MESSAGES,
            "Messages written per inbox commit (concurrent accepts share one commit)",
            gw.inbox.batch_sizes(),
        );
        registry.register(
            FOREIGN_ENTRIES,
            "Meta notification items addressed to another phone number or page than the channel's, dropped and not stored",
            gw.foreign.clone(),
        );
    }
    Router::new()
        .route("/webhooks/{channel}", get(handshake).post(receive))
        .route(xin_api::widget::script_path(), get(widget::script))
        .route("/widget/embed.js", get(widget::script_unpinned))
        .route(
            "/widget/{channel}/config",
            options(widget::preflight).get(widget::config),
        )
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
        .with_state(gw.clone())
        // Each channel has its own limit, enforced in `receive`.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            xin_runtime::observe_edge,
        ))
}

/// 200 when the database answers within [`READY_TIMEOUT`], else 503.
async fn ready(State(gw): State<Gateway>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, sqlx::query("SELECT 1").execute(&gw.pool)).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(_)) | Err(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
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
        .ok_or_else(|| gw.unknown_channel(&channel, &id))?;
    match route.type_ {
        ChannelType::Whatsapp | ChannelType::Instagram => {}
        ChannelType::Telegram | ChannelType::Web => {
            return Err(gw.refused(
                &channel,
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "only WhatsApp and Instagram channels have a GET handshake",
                    &id,
                ),
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
        (true, Some(c)) if c.chars().count() > MAX_CHALLENGE_CHARS => Err(gw.refused(
            &channel,
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_challenge",
                format!("hub.challenge is longer than {MAX_CHALLENGE_CHARS} characters"),
                &id,
            ),
        )),
        // Echoed as plain text that a browser must not sniff into anything else.
        (true, Some(c)) => Ok((
            StatusCode::OK,
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; charset=utf-8",
                ),
                (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (axum::http::header::CACHE_CONTROL, "no-store"),
            ],
            c,
        )
            .into_response()),
        (true, None) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_challenge",
            "hub.challenge is required",
            &id,
        )),
        (false, _) => Err(gw.verification_failed(
            &channel,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "verification_failed",
                "hub.mode or hub.verify_token is wrong",
                &id,
            ),
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

/// The answer to a webhook that failed verification.
fn refusal_error(r: Refusal, id: &CorrelationId) -> ApiError {
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

/// A provider webhook: verification (on the raw bytes), then the channel's rate limit, then
/// parsing and the durable accept. A request that fails verification spends the channel's
/// failure budget, never its rate limit.
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
        .ok_or_else(|| gw.unknown_channel(&channel, &id))?;
    let refuse = |e: ApiError| gw.refused(&channel, e);
    let unverified = |r: Refusal| gw.verification_failed(&channel, refusal_error(r, &id));
    if route.suspended {
        return Err(refuse(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "channel_suspended",
            "this channel is suspended",
            &id,
        )));
    }
    let header = |n: &str| headers.get(n).map(|v| v.as_bytes());
    let now = SystemTime::now();
    // What can be checked before the body is read is: the token, or the signature's form.
    let signature = match route.type_ {
        ChannelType::Telegram => {
            verify::telegram_token(
                header("x-telegram-bot-api-secret-token"),
                &routes::accepted_keys(&route, now),
            )
            .map_err(unverified)?;
            None
        }
        ChannelType::Whatsapp | ChannelType::Instagram => Some(
            verify::meta_signature_header(
                header("x-hub-signature-256"),
                &routes::accepted_app_secrets(&route, now),
            )
            .map_err(unverified)?,
        ),
        ChannelType::Web => {
            return Err(refuse(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "not_a_webhook_channel",
                format!(
                    "web channels are not served by webhook POST; the widget uses /widget/{channel}/…"
                ),
                &id,
            )));
        }
    };
    let limit = route.max_body_bytes.max(0) as usize;
    if headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(refuse(too_large(limit, &id)));
    }
    let bytes = gw.read_body(body, limit, &id).await.map_err(refuse)?;
    if let Some(sig) = &signature {
        verify::meta_signature_matches(sig, &bytes, &routes::accepted_app_secrets(&route, now))
            .map_err(unverified)?;
    }
    // Verified: now, and only now, the channel's rate limit.
    gw.limit(&channel, &route, &id)?;
    let parsed = match route.type_ {
        ChannelType::Telegram => providers::telegram(&bytes).map(|messages| MetaMessages {
            messages,
            foreign: 0,
        }),
        ChannelType::Whatsapp => providers::whatsapp_for(&bytes, route.phone_number_id.as_deref()),
        ChannelType::Instagram => providers::instagram_for(&bytes, route.page_id.as_deref()),
        // Refused above.
        ChannelType::Web => Ok(MetaMessages::default()),
    };
    let MetaMessages { messages, foreign } = parsed.map_err(|m| {
        refuse(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_payload",
            m.0,
            &id,
        ))
    })?;
    if foreign > 0 {
        gw.foreign
            .get_or_create(&ChannelLabel {
                channel: channel.clone(),
            })
            .inc_by(foreign as u64);
        tracing::warn!(
            channel = %channel,
            dropped = foreign,
            "notification items for another phone number or page dropped (the app secret is shared by several of them)"
        );
    }
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

/// [`inbox_unavailable`] for a failed [`accept`], logged in the request's span (so with its
/// correlation id; the committer also logs the cause once per batch).
pub(crate) fn store_failed(e: &inbox::AcceptError, id: &CorrelationId) -> ApiError {
    tracing::warn!(error = %e, "message not stored; answered 503");
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

/// Writes the messages to the inbox, all or none, through the group commit ([`inbox`]); a
/// message already there (a provider retry) is skipped. Returns how many were new, once the
/// commit that holds them is done.
pub async fn accept(
    gw: &Gateway,
    channel: &str,
    messages: &[Inbound],
    id: &CorrelationId,
) -> Result<u64, inbox::AcceptError> {
    if messages.is_empty() {
        return Ok(0);
    }
    let mut trace = http::HeaderMap::new();
    xin_runtime::inject_trace(&mut trace);
    let traceparent = trace
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    gw.inbox.accept(channel, messages, &id.0, traceparent).await
}
