//! The web widget's endpoints. The site that embeds the widget signs each end user's id, for
//! this channel and until an expiry, with the channel's identity secret (an identity token,
//! see [`identity_token`], computed on the site's server); the gateway exchanges a valid one
//! for a short-lived session token, which authorises sending messages and reading the
//! answers. Browsers may call only from the channel's allowed origins (CORS).
//!
//! - `GET /widget/embed.<hash>.js`: the widget's script ([`xin_api::widget`]), cached for a
//!   year (its name changes with its content); `GET /widget/embed.js`: the same, cached 5 min
//! - `GET /widget/{channel}/config` → the channel's theme and whether anonymous visitors may chat
//! - `POST /widget/{channel}/session` `{"user_id","identity_token"}` (a user the site signed
//!   in) or `{"visitor_id"}` (an anonymous visitor, where the channel allows them) →
//!   `{"session_token","expires_in"}`
//! - `POST /widget/{channel}/messages` (Bearer session) `{"text","client_message_id"?}` → 202 `{"message_id"}`
//! - `GET /widget/{channel}/messages?after=<id>&wait=<s>` (Bearer session) → the user's
//!   messages after `after` with their answers, waiting up to `wait` s (≤ 25) for one.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use xin_api::channel::ChannelType;
use xin_api::routes::ChannelRoute;
use xin_runtime::{ApiError, CorrelationId};

use crate::client::{Peer, client_address};
use crate::limits::{
    ANONYMOUS_ADDRESS_BURST, ANONYMOUS_ADDRESS_RATE_PER_SECOND, ANONYMOUS_VISITOR_BURST,
    ANONYMOUS_VISITOR_RATE_PER_SECOND,
};
use crate::polls::{POLL_BURST, POLL_RATE_PER_SECOND, PollCap};
use crate::providers::Inbound;
use crate::{Gateway, accept, inbox_unavailable, store_failed};

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The furthest ahead an identity token may expire: 24 hours after it is presented (plus
/// [`IDENTITY_CLOCK_SKEW`]). A token is a bearer credential for the user; a site hands out a
/// fresh one rather than one that lasts.
pub const IDENTITY_TOKEN_MAX_LIFETIME_SECONDS: i64 = 86_400;
/// Allowance for the site's clock running ahead of the gateway's, on the far-future bound only.
pub const IDENTITY_CLOCK_SKEW_SECONDS: i64 = 300;

fn identity_mac(secret: &str, channel: &str, exp: &str, user_id: &str) -> Hmac<Sha256> {
    let mut m = hmac(secret.as_bytes());
    m.update(b"xin-identity-v1\n");
    m.update(channel.as_bytes());
    m.update(b"\n");
    m.update(exp.as_bytes());
    m.update(b"\n");
    m.update(user_id.as_bytes());
    m
}

/// The identity token the embedding site computes for `user_id` on `channel`, valid until
/// `exp` (Unix seconds): `v1.<exp>.<hex HMAC-SHA256(secret, "xin-identity-v1\n" ‖ channel ‖
/// "\n" ‖ exp ‖ "\n" ‖ user_id)>`, with `exp` in decimal as it appears in the token.
pub fn identity_token(secret: &str, channel: &str, user_id: &str, exp: i64) -> String {
    let exp = exp.to_string();
    let tag = identity_mac(secret, channel, &exp, user_id).finalize();
    format!("v1.{exp}.{}", hex::encode(tag.into_bytes()))
}

/// The identity token of Xin before 0.2: `hex(HMAC-SHA256(secret, user_id))`, bound to no
/// channel and never expiring. Accepted only on channels with `acceptLegacyIdentityTokens`.
pub fn legacy_identity_token(secret: &str, user_id: &str) -> String {
    let mut m = hmac(secret.as_bytes());
    m.update(user_id.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Why an identity token is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum IdentityRefusal {
    /// Malformed, or its MAC does not match the user, channel and expiry (a wrong secret).
    Invalid,
    /// Its expiry has passed.
    Expired,
    /// It expires more than [`IDENTITY_TOKEN_MAX_LIFETIME_SECONDS`] ahead.
    TooFarAhead,
    /// The old format, on a channel that no longer accepts it.
    Legacy,
    /// The channel has no identity secret: nothing is accepted.
    NoSecret,
}

/// Checks `token` for `user_id` on `channel` at `now` (Unix seconds). The MAC is compared in
/// constant time, and checked before the expiry, so the reasons beyond `Invalid` are only
/// ever told to someone holding a token the site signed.
pub fn check_identity_token(
    secret: &str,
    channel: &str,
    user_id: &str,
    token: &str,
    now: i64,
    accept_legacy: bool,
) -> Result<(), IdentityRefusal> {
    if secret.trim().is_empty() {
        return Err(IdentityRefusal::NoSecret);
    }
    let token = token.trim();
    if let Some(rest) = token.strip_prefix("v1.") {
        let (exp, tag) = rest.split_once('.').ok_or(IdentityRefusal::Invalid)?;
        if exp.is_empty() || exp.len() > 18 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdentityRefusal::Invalid);
        }
        let tag = hex::decode(tag).map_err(|_| IdentityRefusal::Invalid)?;
        identity_mac(secret, channel, exp, user_id)
            .verify_slice(&tag)
            .map_err(|_| IdentityRefusal::Invalid)?;
        let exp: i64 = exp.parse().map_err(|_| IdentityRefusal::Invalid)?;
        if exp <= now {
            return Err(IdentityRefusal::Expired);
        }
        if exp > now + IDENTITY_TOKEN_MAX_LIFETIME_SECONDS + IDENTITY_CLOCK_SKEW_SECONDS {
            return Err(IdentityRefusal::TooFarAhead);
        }
        return Ok(());
    }
    let legacy_form = token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit());
    if !legacy_form {
        return Err(IdentityRefusal::Invalid);
    }
    if !accept_legacy {
        return Err(IdentityRefusal::Legacy);
    }
    let given = hex::decode(token).map_err(|_| IdentityRefusal::Invalid)?;
    let mut m = hmac(secret.as_bytes());
    m.update(user_id.as_bytes());
    m.verify_slice(&given).map_err(|_| IdentityRefusal::Invalid)
}

fn identity_refused(r: IdentityRefusal, id: &CorrelationId) -> ApiError {
    let (status, code, message) = match r {
        IdentityRefusal::Invalid => (
            StatusCode::FORBIDDEN,
            "invalid_identity_token",
            "identity_token does not match user_id and this channel",
        ),
        IdentityRefusal::Expired => (
            StatusCode::FORBIDDEN,
            "identity_token_expired",
            "identity_token has expired; the site must sign a fresh one",
        ),
        IdentityRefusal::TooFarAhead => (
            StatusCode::FORBIDDEN,
            "identity_token_expiry_too_far",
            "identity_token expires more than 24 hours ahead; sign one with a nearer expiry",
        ),
        IdentityRefusal::Legacy => (
            StatusCode::FORBIDDEN,
            "legacy_identity_token",
            "identity tokens of the old format (hex HMAC of the user id) are not accepted on \
             this channel; sign v1.<exp>.<mac> tokens (see the gateway documentation)",
        ),
        IdentityRefusal::NoSecret => (
            StatusCode::SERVICE_UNAVAILABLE,
            "channel_not_configured",
            "this channel has no identity secret to verify tokens with; nothing is accepted \
             until it has one",
        ),
    };
    ApiError::new(status, code, message, id)
}

pub use xin_gateway_input::session::{check_session, issue_session};

use xin_runtime::signing::now;

/// The inbox key of a widget message: a digest of the user and the client's id (each up to
/// 128 characters, so the key has a fixed length and no two pairs can collide).
pub fn widget_message_id(user: &str, client_id: &str) -> String {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update((user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    h.update(client_id.as_bytes());
    format!("web:{}", hex::encode(h.finalize()))
}

/// The CORS origin to echo, or a refusal when the request comes from a page on another
/// origin. Requests without `Origin` (not from a browser) are let through: they still need an
/// identity or session token.
fn allowed_origin(
    gw: &Gateway,
    route: &ChannelRoute,
    headers: &HeaderMap,
    id: &CorrelationId,
) -> Result<Option<HeaderValue>, ApiError> {
    match headers.get(header::ORIGIN) {
        None => Ok(None),
        Some(o)
            if route
                .allowed_origins
                .iter()
                .any(|a| a.as_bytes() == o.as_bytes()) =>
        {
            Ok(Some(o.clone()))
        }
        Some(_) => Err(gw.verification_failed(
            &route.name,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin may not use the widget of this channel",
                id,
            ),
        )),
    }
}

fn with_cors(origin: Option<HeaderValue>, r: Result<Response, ApiError>) -> Response {
    let mut resp = r.unwrap_or_else(IntoResponse::into_response);
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, retry-after"),
        );
    }
    resp
}

fn web_route(gw: &Gateway, channel: &str, id: &CorrelationId) -> Result<ChannelRoute, ApiError> {
    gw.routes
        .channel(channel)
        .filter(|r| match r.type_ {
            ChannelType::Web => true,
            ChannelType::Telegram | ChannelType::Whatsapp | ChannelType::Instagram => false,
        })
        .ok_or_else(|| gw.unknown_channel(channel, id))
}

/// Resolves the route and the CORS origin, answering a refused origin itself.
fn prelude(
    gw: &Gateway,
    channel: &str,
    headers: &HeaderMap,
    id: &CorrelationId,
) -> Result<(ChannelRoute, Option<HeaderValue>), Box<Response>> {
    let route = web_route(gw, channel, id).map_err(|e| Box::new(e.into_response()))?;
    let origin =
        allowed_origin(gw, &route, headers, id).map_err(|e| Box::new(with_cors(None, Err(e))))?;
    Ok((route, origin))
}

/// CORS preflight.
pub async fn preflight(
    State(gw): State<Gateway>,
    Path(channel): Path<String>,
    Extension(id): Extension<CorrelationId>,
    headers: HeaderMap,
) -> Response {
    let (_, origin) = match prelude(&gw, &channel, &headers, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut resp = with_cors(origin, Ok(StatusCode::NO_CONTENT.into_response()));
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, x-request-id"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

async fn json_body<T: serde::de::DeserializeOwned>(
    gw: &Gateway,
    route: &ChannelRoute,
    body: Body,
    id: &CorrelationId,
) -> Result<T, ApiError> {
    let limit = route.max_body_bytes.max(0) as usize;
    let bytes = gw
        .read_body(body, limit, id)
        .await
        .map_err(|e| gw.refused(&route.name, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("invalid request body: {e}"),
            id,
        )
    })
}

#[derive(Deserialize)]
struct SessionRequest {
    user_id: Option<String>,
    identity_token: Option<String>,
    visitor_id: Option<String>,
}

fn valid_user(u: &str) -> bool {
    !u.is_empty() && u.len() <= 128 && u.chars().all(|c| !c.is_control())
}

/// The prefix of an anonymous visitor's user id (`anon:<visitor_id>`): identified users'
/// ids may not start with it, so neither can read the other's messages.
pub const ANONYMOUS_PREFIX: &str = "anon:";

/// A visitor id: 16–64 characters of `A-Z a-z 0-9 _ -` (the widget makes 32 hex digits).
fn valid_visitor(v: &str) -> bool {
    (16..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The script, served from memory.
fn script_response(cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
            // Any page may load it; with `integrity`, a cross-origin script needs CORS.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                "cross-origin",
            ),
        ],
        xin_api::widget::EMBED_JS,
    )
        .into_response()
}

/// `GET /widget/embed.<hash>.js`: named by its content, so cached for a year.
pub async fn script() -> Response {
    script_response("public, max-age=31536000, immutable")
}

/// `GET /widget/embed.js`: the current script for pages that do not pin it (no `integrity`
/// possible, since it changes with each release), cached for 5 minutes.
pub async fn script_unpinned() -> Response {
    script_response("public, max-age=300")
}

#[derive(serde::Serialize)]
struct WidgetConfig<'a> {
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    welcome_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_color: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<xin_api::channel::WidgetLocale>,
    anonymous_visitors: bool,
}

/// `GET /widget/{channel}/config`: the channel's theme (no secret in it), for the widget.
pub async fn config(
    State(gw): State<Gateway>,
    Path(channel): Path<String>,
    Extension(id): Extension<CorrelationId>,
    headers: HeaderMap,
) -> Response {
    let route = match web_route(&gw, &channel, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // A refused page may read this refusal (its own origin echoed on the 403), so the widget
    // says "not available on this site" instead of looking offline. The endpoints that take
    // tokens never echo a refused origin.
    let origin = match allowed_origin(&gw, &route, &headers, &id) {
        Ok(o) => o,
        Err(e) => return with_cors(headers.get(header::ORIGIN).cloned(), Err(e)),
    };
    let theme = route.theme.clone().unwrap_or_default();
    let body = WidgetConfig {
        title: theme
            .title
            .as_deref()
            .or(route.display_name.as_deref())
            .unwrap_or(&route.name),
        welcome_message: theme.welcome_message.as_deref(),
        primary_color: theme.primary_color.as_deref(),
        locale: theme.locale,
        anonymous_visitors: route.anonymous_visitors,
    };
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    with_cors(origin, Ok(resp))
}

/// Anonymous visitors' limits, per client address and then per visitor (429 `rate_limited`
/// with `Retry-After`).
fn anonymous_limits(
    gw: &Gateway,
    channel: &str,
    peer: Option<Peer>,
    headers: &HeaderMap,
    visitor: &str,
    id: &CorrelationId,
) -> Result<(), ApiError> {
    let address = peer
        .map(|Peer(p)| client_address(p.ip(), headers, &gw.trusted_proxies).to_string())
        .unwrap_or_default();
    let refuse = |wait: u64, message: &'static str| {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message, id);
        e.retry_after = Some(wait);
        gw.refused(channel, e)
    };
    gw.anonymous
        .take(
            &format!("address\n{address}"),
            ANONYMOUS_ADDRESS_RATE_PER_SECOND,
            ANONYMOUS_ADDRESS_BURST,
        )
        .map_err(|w| refuse(w, "too many requests from this address; slow down"))?;
    gw.anonymous
        .take(
            &format!("visitor\n{channel}\n{visitor}"),
            ANONYMOUS_VISITOR_RATE_PER_SECOND,
            ANONYMOUS_VISITOR_BURST,
        )
        .map_err(|w| refuse(w, "too many requests from this visitor; slow down"))
}

/// Exchanges an identity token (or, where the channel allows anonymous visitors, a visitor
/// id) for a session token.
pub async fn session(
    State(gw): State<Gateway>,
    Path(channel): Path<String>,
    Extension(id): Extension<CorrelationId>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (route, origin) = match prelude(&gw, &channel, &headers, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = async {
        let req: SessionRequest = json_body(&gw, &route, body, &id).await?;
        let bad = |code: &'static str, message: &'static str| {
            ApiError::new(StatusCode::BAD_REQUEST, code, message, &id)
        };
        let (user_id, identity_token) = match (req.user_id, req.identity_token, req.visitor_id) {
            (None, None, Some(visitor)) => {
                if !route.anonymous_visitors {
                    return Err(gw.verification_failed(
                        &channel,
                        ApiError::new(
                            StatusCode::FORBIDDEN,
                            "anonymous_visitors_not_allowed",
                            "this channel accepts only users the site identifies (user_id and identity_token)",
                            &id,
                        ),
                    ));
                }
                if !valid_visitor(&visitor) {
                    return Err(bad(
                        "invalid_visitor_id",
                        "visitor_id must be 16–64 characters of A-Z, a-z, 0-9, _ and -",
                    ));
                }
                anonymous_limits(&gw, &channel, peer.map(|p| p.0), &headers, &visitor, &id)?;
                gw.limit(&channel, &route, &id)?;
                return Ok(session_response(&gw, &channel, &format!("{ANONYMOUS_PREFIX}{visitor}")));
            }
            (Some(u), Some(t), None) => (u, t),
            (_, _, Some(_)) => {
                return Err(bad(
                    "ambiguous_session_request",
                    "send either visitor_id (an anonymous visitor) or user_id with identity_token, not both",
                ));
            }
            _ => {
                return Err(bad(
                    "missing_identity",
                    "send user_id with identity_token (a user the site identifies) or visitor_id (an anonymous visitor)",
                ));
            }
        };
        if !valid_user(&user_id) || user_id.starts_with(ANONYMOUS_PREFIX) {
            return Err(bad(
                "invalid_user_id",
                "user_id must be 1–128 printable characters, not starting with anon:",
            ));
        }
        let req = (user_id, identity_token);
        let secret = route
            .credentials
            .identity_secret
            .as_deref()
            .unwrap_or_default();
        check_identity_token(
            secret,
            &channel,
            &req.0,
            &req.1,
            now(),
            route.legacy_identity_tokens,
        )
        .map_err(|r| gw.verification_failed(&channel, identity_refused(r, &id)))?;
        // Counted only once verified, so a flood of bad tokens cannot use up real users' rate.
        gw.limit(&channel, &route, &id)?;
        Ok(session_response(&gw, &channel, &req.0))
    }
    .await;
    with_cors(origin, result)
}

fn session_response(gw: &Gateway, channel: &str, user: &str) -> Response {
    let expires = now() + gw.widget_session_ttl.as_secs() as i64;
    let token = issue_session(&gw.session_key, channel, user, expires);
    (
        StatusCode::OK,
        axum::Json(json!({"session_token": token, "expires_in": gw.widget_session_ttl.as_secs()})),
    )
        .into_response()
}

/// The user of the request's valid session token, and the token's MAC (which names the
/// session).
fn session_user(
    gw: &Gateway,
    channel: &str,
    headers: &HeaderMap,
    id: &CorrelationId,
) -> Result<(String, String), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            gw.verification_failed(
                channel,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_session",
                    "Authorization: Bearer <session_token> is required",
                    id,
                ),
            )
        })?;
    let token = token.trim();
    // The session is named by its MAC, in one case (hex decoding takes either, so the
    // same token could otherwise be spelt many ways and count as many sessions).
    let session = token
        .split_once('.')
        .map(|(_, tag)| tag.to_ascii_lowercase())
        .unwrap_or_default();
    check_session(&gw.session_key, channel, token, now())
        .map(|user| (user, session))
        .ok_or_else(|| {
            gw.verification_failed(
                channel,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_session",
                    "the session token is invalid or expired; start a new session",
                    id,
                ),
            )
        })
}

#[derive(Deserialize)]
struct MessageRequest {
    text: String,
    client_message_id: Option<String>,
}

/// A message from the widget: stored in the inbox like a webhook's, answered by the worker.
pub async fn post_message(
    State(gw): State<Gateway>,
    Path(channel): Path<String>,
    Extension(id): Extension<CorrelationId>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (route, origin) = match prelude(&gw, &channel, &headers, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = async {
        let (user, _) = session_user(&gw, &channel, &headers, &id)?;
        if let Some(visitor) = user.strip_prefix(ANONYMOUS_PREFIX) {
            anonymous_limits(&gw, &channel, peer.map(|p| p.0), &headers, visitor, &id)?;
        }
        gw.limit(&channel, &route, &id)?;
        let req: MessageRequest = json_body(&gw, &route, body, &id).await?;
        let len = req.text.chars().count();
        if req.text.trim().is_empty() || len > 4096 || req.text.contains('\0') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_text",
                "text must be 1–4096 characters, without NUL",
                &id,
            ));
        }
        let client_id = match req.client_message_id {
            Some(c) if valid_user(&c) => c,
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_message_id",
                    "client_message_id must be 1–128 printable characters",
                    &id,
                ));
            }
            None => format!("{:032x}", rand::random::<u128>()),
        };
        let msg = Inbound {
            provider_message_id: widget_message_id(&user, &client_id),
            sender: user,
            text: req.text,
        };
        accept(&gw, &channel, std::slice::from_ref(&msg), &id)
            .await
            .map_err(|e| store_failed(&e, &id))?;
        let mid: i64 = sqlx::query_scalar(
            "SELECT id FROM gateway_inbox WHERE channel = $1 AND provider_message_id = $2",
        )
        .bind(&channel)
        .bind(&msg.provider_message_id)
        .fetch_one(&gw.pool)
        .await
        .map_err(|_| inbox_unavailable("the message could not be read back; retry later", &id))?;
        Ok((StatusCode::ACCEPTED, axum::Json(json!({"message_id": mid}))).into_response())
    }
    .await;
    with_cors(origin, result)
}

#[derive(Deserialize)]
pub struct AfterQuery {
    after: Option<i64>,
    wait: Option<u64>,
}

#[derive(sqlx::FromRow, serde::Serialize)]
struct Exchange {
    id: i64,
    text: String,
    answer: Option<String>,
    /// The gateway gave up on it (it will get no answer).
    failed: bool,
}

/// The user's messages after `after`, with answers; waits up to `wait` seconds for a new
/// answer when none is there yet.
pub async fn get_messages(
    State(gw): State<Gateway>,
    Path(channel): Path<String>,
    Query(q): Query<AfterQuery>,
    Extension(id): Extension<CorrelationId>,
    headers: HeaderMap,
) -> Response {
    let (_, origin) = match prelude(&gw, &channel, &headers, &id) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = async {
        let (user, session) = session_user(&gw, &channel, &headers, &id)?;
        // Authenticated: now charged to the user's poll rate.
        let user_key = format!("{channel}\n{user}");
        gw.poll_rate
            .take(&user_key, POLL_RATE_PER_SECOND, POLL_BURST)
            .map_err(|wait| {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many widget polls for this user; slow down",
                    &id,
                );
                e.retry_after = Some(wait);
                gw.refused(&channel, e)
            })?;
        // Long polls hold a request open: bounded per gateway so they cannot starve webhooks,
        // and per session and user so that one of them cannot take every slot.
        let _slot = gw.polls.open(&session, &user_key).map_err(|cap| {
            let message = match cap {
                PollCap::Session => {
                    "this session already has as many polls open as it may; retry when one ends"
                }
                PollCap::User => {
                    "this user already has as many polls open as they may; retry when one ends"
                }
                PollCap::Gateway => "too many widget polls at once; retry shortly",
            };
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_polls",
                message,
                &id,
            );
            e.retry_after = Some(1);
            gw.refused(&channel, e)
        })?;
        let after = q.after.unwrap_or(0);
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(25));
        loop {
            let rows: Vec<Exchange> = sqlx::query_as(
                "SELECT id, text, answer, failed_at IS NOT NULL AS failed FROM gateway_inbox
                 WHERE channel = $1 AND sender = $2 AND id > $3 ORDER BY id LIMIT 100",
            )
            .bind(&channel)
            .bind(&user)
            .bind(after)
            .fetch_all(&gw.pool)
            .await
            .map_err(|_| inbox_unavailable("messages cannot be read now; retry later", &id))?;
            let answered = rows.iter().any(|r| r.answer.is_some() || r.failed);
            if answered || tokio::time::Instant::now() >= deadline {
                return Ok(axum::Json(json!({"messages": rows})).into_response());
            }
            // Woken early when this gateway stores an answer; else every 500 ms.
            let _ = tokio::time::timeout(Duration::from_millis(500), gw.answered.notified()).await;
        }
    }
    .await;
    with_cors(origin, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/gateway.md.
    const EXAMPLE: &str =
        "v1.1767225600.a918f3085681d842dd492ea2d949aec7aa59f01cb1dbb8d90e7842f438300282";

    #[test]
    fn identity_tokens_are_bound_to_user_channel_and_expiry() {
        let secret = "site-identity-secret";
        assert_eq!(
            identity_token(secret, "web", "u-42", 1_767_225_600),
            EXAMPLE
        );
        let now = 1_767_225_600 - 3600;
        let check = |channel: &str, user: &str, token: &str, now: i64| {
            check_identity_token(secret, channel, user, token, now, false)
        };
        assert_eq!(check("web", "u-42", EXAMPLE, now), Ok(()));
        // Bound to the user, the channel and the secret.
        assert_eq!(
            check("web", "u-43", EXAMPLE, now),
            Err(IdentityRefusal::Invalid)
        );
        assert_eq!(
            check("web2", "u-42", EXAMPLE, now),
            Err(IdentityRefusal::Invalid)
        );
        assert_eq!(
            check_identity_token("other", "web", "u-42", EXAMPLE, now, false),
            Err(IdentityRefusal::Invalid)
        );
        // The expiry is covered by the MAC: moving it forges nothing.
        let moved = EXAMPLE.replace("1767225600", "1767229200");
        assert_eq!(
            check("web", "u-42", &moved, now),
            Err(IdentityRefusal::Invalid)
        );
        // Expired at its second, not before.
        assert_eq!(check("web", "u-42", EXAMPLE, 1_767_225_599), Ok(()));
        assert_eq!(
            check("web", "u-42", EXAMPLE, 1_767_225_600),
            Err(IdentityRefusal::Expired)
        );
        // At most 24 h (and the clock skew allowance) ahead.
        let far = 1_767_225_600 - IDENTITY_TOKEN_MAX_LIFETIME_SECONDS - IDENTITY_CLOCK_SKEW_SECONDS;
        assert_eq!(check("web", "u-42", EXAMPLE, far), Ok(()));
        assert_eq!(
            check("web", "u-42", EXAMPLE, far - 1),
            Err(IdentityRefusal::TooFarAhead)
        );
        let year = identity_token(secret, "web", "u-42", now + 365 * 86_400);
        assert_eq!(
            check("web", "u-42", &year, now),
            Err(IdentityRefusal::TooFarAhead)
        );
        for bad in [
            "",
            "v1.",
            "v1.x.00",
            "v1.-5.00",
            "v1.1767225600",
            "v2.1.ab",
            "zz",
        ] {
            assert_eq!(
                check("web", "u-42", bad, now),
                Err(IdentityRefusal::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_identity_token(" ", "web", "u-42", EXAMPLE, now, false),
            Err(IdentityRefusal::NoSecret)
        );
    }

    #[test]
    fn legacy_identity_tokens_only_where_the_channel_accepts_them() {
        let legacy = legacy_identity_token("s", "u");
        assert_eq!(legacy.len(), 64);
        assert_eq!(
            check_identity_token("s", "web", "u", &legacy, 0, false),
            Err(IdentityRefusal::Legacy)
        );
        assert_eq!(
            check_identity_token("s", "web", "u", &legacy, 0, true),
            Ok(())
        );
        assert_eq!(
            check_identity_token("s", "web", "v", &legacy, 0, true),
            Err(IdentityRefusal::Invalid)
        );
        // A v1 token is still checked as one where legacy tokens are accepted.
        let v1 = identity_token("s", "web", "u", 100);
        assert_eq!(check_identity_token("s", "web", "u", &v1, 50, true), Ok(()));
        assert_eq!(
            check_identity_token("s", "web", "u", &v1, 100, true),
            Err(IdentityRefusal::Expired)
        );
    }
}
