//! The HTTP handlers. Every `/v1` request is verified over its raw bytes before anything is
//! parsed; every 4xx/5xx has the JSON body of [`ApiError`]; malformed input is a 400, never
//! a 5xx.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Extension, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument;
use xin_runtime::signing::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use xin_runtime::{ApiError, CorrelationId};

use crate::Orchestrator;
use crate::db::{self, Added, Message, Refused};
use crate::llm::{AnswerPath, Turn};
use crate::retrieval::{Chunk, is_word_char};

/// Largest request body (a 4,096-character message with every character escaped fits).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_TEXT_CHARS: usize = 4096;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 128;
pub const MAX_TAGS: usize = 16;
pub const MAX_REASON_CHARS: usize = 500;

fn error(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
    id: &CorrelationId,
) -> ApiError {
    ApiError::new(status, code, message, id)
}

/// Middleware on `/v1`: reads the body (bounded), verifies `X-Xin-Timestamp` and
/// `X-Xin-Signature` over method, path and query, and the raw bytes, then hands the same bytes
/// on.
pub async fn authenticate(State(o): State<Orchestrator>, req: Request, next: Next) -> Response {
    let id = correlation(req.extensions().get::<CorrelationId>());
    let (parts, body) = req.into_parts();
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds {MAX_BODY_BYTES} bytes or could not be read"),
            &id,
        )
        .into_response()
    };
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES)
    {
        return too_large();
    }
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return too_large();
    };
    let header = |n: &str| parts.headers.get(n).map(|v| v.as_bytes());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Err(e) = signing::verify(
        &o.config.signing_key,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        parts.method.as_str(),
        path,
        &bytes,
        signing::now(),
    ) {
        tracing::info!(reason = e.code(), "request refused: signature");
        return error(StatusCode::UNAUTHORIZED, e.code(), e.message(), &id).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn correlation(id: Option<&CorrelationId>) -> CorrelationId {
    id.cloned().unwrap_or_else(|| CorrelationId(db::new_id()))
}

/// The body as `T`; an empty body counts as `{}` when `empty_ok`.
fn parse<T: DeserializeOwned>(
    body: &[u8],
    empty_ok: bool,
    id: &CorrelationId,
) -> Result<T, ApiError> {
    let body = if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not the expected JSON: {e}"),
            id,
        )
    })
}

fn invalid(message: impl Into<String>, id: &CorrelationId) -> ApiError {
    error(StatusCode::BAD_REQUEST, "invalid_request", message, id)
}

fn not_found(id: &CorrelationId) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "conversation_not_found",
        "no such conversation",
        id,
    )
}

fn closed(id: &CorrelationId) -> ApiError {
    error(
        StatusCode::CONFLICT,
        "conversation_closed",
        "the conversation is closed; create a new one",
        id,
    )
}

/// A database failure: 503 (retry later) when the database is unreachable or busy, 500
/// otherwise. The detail goes to the log, not to the client.
fn db_error(e: sqlx::Error, id: &CorrelationId) -> ApiError {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
        }),
        _ => false,
    };
    tracing::error!(error = %e, "database operation failed");
    if unavailable {
        let mut err = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; retry later",
            id,
        );
        err.retry_after = Some(1);
        err
    } else {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request failed; see the orchestrator's log for this correlation id",
            id,
        )
    }
}

fn refused(r: Refused, id: &CorrelationId) -> ApiError {
    match r {
        Refused::NotFound => not_found(id),
        Refused::Closed => closed(id),
        Refused::Db(e) => db_error(e, id),
    }
}

fn check_len(name: &str, value: &str, max: usize, id: &CorrelationId) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{name} must not be empty"), id));
    }
    // PostgreSQL text cannot hold NUL: refused here rather than failing the insert (a 5xx).
    if value.contains('\0') {
        return Err(invalid(
            format!("{name} must not contain NUL characters"),
            id,
        ));
    }
    if value.chars().count() > max {
        return Err(invalid(
            format!("{name} is longer than {max} characters"),
            id,
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewConversation {
    channel: String,
    external_user: String,
}

/// `POST /v1/conversations`: the open conversation of the user on the channel, created when
/// there is none (201) or returned as it is (200).
pub async fn create_conversation(
    State(o): State<Orchestrator>,
    Extension(id): Extension<CorrelationId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: NewConversation = parse(&body, false, &id)?;
    check_len("channel", &b.channel, MAX_NAME_CHARS, &id)?;
    check_len("external_user", &b.external_user, MAX_NAME_CHARS, &id)?;
    let (c, created) = db::find_or_create(
        &o.pool,
        &o.config.tenant,
        &b.channel,
        &b.external_user,
        &id.0,
    )
    .await
    .map_err(|e| db_error(e, &id))?;
    if created {
        tracing::info!(conversation_id = %c.id, channel = %c.channel, "conversation created");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(c)).into_response())
}

/// `GET /v1/conversations/{id}`: the conversation and its messages, oldest first.
pub async fn get_conversation(
    State(o): State<Orchestrator>,
    Extension(id): Extension<CorrelationId>,
    Path(conv): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !db::plausible_id(&conv) {
        return Err(not_found(&id));
    }
    let c = db::conversation(&o.pool, &conv)
        .await
        .map_err(|e| db_error(e, &id))?
        .ok_or_else(|| not_found(&id))?;
    let messages = db::messages(&o.pool, &conv)
        .await
        .map_err(|e| db_error(e, &id))?;
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["messages"] = serde_json::to_value(messages).unwrap_or_default();
    Ok(Json(v))
}

#[derive(Deserialize)]
struct NewMessage {
    text: String,
    #[serde(default)]
    client_message_id: Option<String>,
    /// Only chunks carrying all these tags are retrieved.
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /v1/conversations/{id}/messages`: stores the message, answers it, stores the answer.
/// Idempotent on `client_message_id`: a repeat returns the stored answer without asking the
/// LLM again.
pub async fn post_message(
    State(o): State<Orchestrator>,
    Extension(id): Extension<CorrelationId>,
    Path(conv): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: NewMessage = parse(&body, false, &id)?;
    check_message(&b.text, b.client_message_id.as_deref(), &b.tags, &id)?;
    if !db::plausible_id(&conv) {
        return Err(not_found(&id));
    }
    let cmid = b.client_message_id.as_deref();
    let handoff = asks_for_person(&b.text, &o.config.handoff_keywords);
    let added = db::add_user_message(
        &o.pool,
        &db::NewMessage {
            tenant: &o.config.tenant,
            conversation_id: &conv,
            text: &b.text,
            client_message_id: cmid,
            correlation_id: &id.0,
            handoff,
        },
    )
    .await;
    let user = match (added, cmid) {
        (Ok(Added::Stored(m)), _) => {
            if handoff {
                tracing::info!(conversation_id = %conv, "handoff requested by keyword");
            }
            m
        }
        // A retry (the conversation may have been closed since): the stored answer, or, when
        // the first attempt stopped before answering, an answer now.
        (Ok(Added::Duplicate) | Err(Refused::Closed), Some(cmid)) => {
            match db::by_client_message_id(&o.pool, &conv, cmid)
                .await
                .map_err(|e| db_error(e, &id))?
            {
                Some((user, Some(answer))) => return Ok(Json(replayed(&user, &answer))),
                Some((user, None)) => user,
                None => return Err(closed(&id)),
            }
        }
        (Ok(Added::Duplicate), None) => {
            return Err(db_error(sqlx::Error::RowNotFound, &id));
        }
        (Err(r), _) => return Err(refused(r, &id)),
    };

    let span = tracing::info_span!(
        "answer",
        conversation_id = %conv,
        message_id = user.id,
        answer.path = tracing::field::Empty,
        retrieval.chunks = tracing::field::Empty,
    );
    let (answer, path, sources) = async {
        let history = db::history(&o.pool, &conv, user.id, o.config.history_messages)
            .await
            .map_err(|e| db_error(e, &id))?;
        answer(&o, &conv, &user, history, &b.tags, &id).await
    }
    .instrument(span)
    .await?;
    Ok(Json(json!({
        "message": user,
        "answer": answer_json(&answer, path, &sources),
        "replayed": false,
    })))
}

#[derive(Deserialize)]
struct InboundMessage {
    channel: String,
    external_user: String,
    text: String,
    #[serde(default)]
    client_message_id: Option<String>,
    /// Only chunks carrying all these tags are retrieved.
    #[serde(default)]
    tags: Vec<String>,
}

fn check_message(
    text: &str,
    client_message_id: Option<&str>,
    tags: &[String],
    id: &CorrelationId,
) -> Result<(), ApiError> {
    check_len("text", text, MAX_TEXT_CHARS, id)?;
    if let Some(c) = client_message_id {
        check_len("client_message_id", c, MAX_CLIENT_MESSAGE_ID_CHARS, id)?;
    }
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!("at most {MAX_TAGS} tags"), id));
    }
    for t in tags {
        check_len("a tag", t, 64, id)?;
    }
    Ok(())
}

/// `POST /v1/messages`: a user's message on a channel, answered, in one call — the open
/// conversation of the user on the channel is found or created, and the message stored with
/// its events and read back with the conversation's recent history, in one statement; then
/// retrieval, the LLM and the stored answer (a second statement). Idempotent on
/// `client_message_id` within the open conversation, like the per-conversation route. The
/// answer carries the conversation (`conversation`) and whether it was created.
pub async fn post_inbound_message(
    State(o): State<Orchestrator>,
    Extension(id): Extension<CorrelationId>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: InboundMessage = parse(&body, false, &id)?;
    check_len("channel", &b.channel, MAX_NAME_CHARS, &id)?;
    check_len("external_user", &b.external_user, MAX_NAME_CHARS, &id)?;
    check_message(&b.text, b.client_message_id.as_deref(), &b.tags, &id)?;
    let handoff = asks_for_person(&b.text, &o.config.handoff_keywords);
    let posted = db::post_inbound(
        &o.pool,
        &db::Inbound {
            tenant: &o.config.tenant,
            channel: &b.channel,
            external_user: &b.external_user,
            text: &b.text,
            client_message_id: b.client_message_id.as_deref(),
            correlation_id: &id.0,
            handoff,
            history: o.config.history_messages,
        },
    )
    .await
    .map_err(|e| db_error(e, &id))?;
    let conv = posted.conversation;
    if posted.created {
        tracing::info!(conversation_id = %conv.id, channel = %conv.channel, "conversation created");
    }
    let (user, history) = match (posted.message, b.client_message_id.as_deref()) {
        (Some(user), _) => {
            if handoff {
                tracing::info!(conversation_id = %conv.id, "handoff requested by keyword");
            }
            (user, posted.history)
        }
        // A retry: the stored answer, or, when the first attempt stopped before answering, an
        // answer now.
        (None, Some(cmid)) => {
            match db::by_client_message_id(&o.pool, &conv.id, cmid)
                .await
                .map_err(|e| db_error(e, &id))?
            {
                Some((user, Some(answer))) => {
                    let mut v = replayed(&user, &answer);
                    v["conversation"] = serde_json::to_value(&conv).unwrap_or_default();
                    v["conversation_created"] = json!(false);
                    return Ok(Json(v));
                }
                Some((user, None)) => {
                    let history =
                        db::history(&o.pool, &conv.id, user.id, o.config.history_messages)
                            .await
                            .map_err(|e| db_error(e, &id))?;
                    (user, history)
                }
                None => return Err(db_error(sqlx::Error::RowNotFound, &id)),
            }
        }
        (None, None) => return Err(db_error(sqlx::Error::RowNotFound, &id)),
    };
    let span = tracing::info_span!(
        "answer",
        conversation_id = %conv.id,
        message_id = user.id,
        answer.path = tracing::field::Empty,
        retrieval.chunks = tracing::field::Empty,
    );
    let (answer, path, sources) = answer(&o, &conv.id, &user, history, &b.tags, &id)
        .instrument(span)
        .await?;
    Ok(Json(json!({
        "conversation": conv,
        "conversation_created": posted.created,
        "message": user,
        "answer": answer_json(&answer, path, &sources),
        "replayed": false,
    })))
}

/// Retrieval, the LLM (or its fallbacks), the stored answer. `history`: the messages before
/// `user`, oldest first.
async fn answer(
    o: &Orchestrator,
    conv: &str,
    user: &Message,
    history: Vec<(String, String)>,
    tags: &[String],
    id: &CorrelationId,
) -> Result<(Message, String, Vec<Chunk>), ApiError> {
    let span = tracing::Span::current();
    let start = Instant::now();
    let retrieved = o
        .retriever
        .retrieve(&o.pool, &user.text, tags)
        .await
        .map_err(|e| db_error(e, id))?;
    o.metrics
        .retrieval_seconds
        .observe(start.elapsed().as_secs_f64());
    span.record("retrieval.chunks", retrieved.chunks.len());
    let turns: Vec<Turn> = history
        .into_iter()
        .map(|(role, text)| Turn { role, text })
        .collect();
    let a = o
        .llm
        .answer(&o.config.tenant, &user.text, &turns, &retrieved.chunks)
        .await;
    span.record("answer.path", a.path.as_str());
    tracing::info!(
        path = a.path.as_str(),
        reason = a.reason.as_deref().unwrap_or(""),
        chunks = retrieved.chunks.len(),
        candidates = retrieved.candidates,
        vector = retrieved.vector_used,
        vector_note = retrieved.vector_note.as_deref().unwrap_or(""),
        retrieval_ms = start.elapsed().as_millis() as u64,
        "answered"
    );
    let (stored, fresh) = db::store_answer(
        &o.pool,
        &db::NewAnswer {
            tenant: &o.config.tenant,
            conversation_id: conv,
            reply_to: user.id,
            text: &a.text,
            path: a.path.as_str(),
            correlation_id: &id.0,
        },
    )
    .await
    .map_err(|e| db_error(e, id))?;
    if fresh {
        o.metrics.answered(a.path.as_str());
    }
    let path = stored
        .answer_path
        .clone()
        .unwrap_or_else(|| AnswerPath::Extractive.as_str().into());
    Ok((stored, path, retrieved.chunks))
}

fn answer_json(m: &Message, path: String, sources: &[Chunk]) -> Value {
    json!({
        "id": m.id,
        "text": m.text,
        "path": path,
        "created_at": m.created_at,
        "sources": sources.iter().map(|c| json!({
            "document_id": c.document_id,
            "chunk_index": c.chunk_index,
            "title": c.title,
            "score": (c.score * 1e4).round() / 1e4,
        })).collect::<Vec<_>>(),
    })
}

/// A repeat of an answered message: the stored answer. Its sources are not stored, so they
/// are not repeated.
fn replayed(user: &Message, answer: &Message) -> Value {
    let path = answer.answer_path.clone().unwrap_or_default();
    json!({
        "message": user,
        "answer": answer_json(answer, path, &[]),
        "replayed": true,
    })
}

/// The lower-cased words of `s` (letters, digits and marks of any script).
pub fn words_lower(s: &str) -> Vec<String> {
    s.split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `text` contains one of the keywords (each a sequence of words) as whole words.
pub fn asks_for_person(text: &str, keywords: &[Vec<String>]) -> bool {
    let words = words_lower(text);
    keywords
        .iter()
        .filter(|k| !k.is_empty())
        .any(|k| words.windows(k.len()).any(|w| w == k.as_slice()))
}

/// `POST /v1/conversations/{id}/close`: closes it (idempotent; one `conversation_closed`).
pub async fn close_conversation(
    State(o): State<Orchestrator>,
    Extension(id): Extension<CorrelationId>,
    Path(conv): Path<String>,
) -> Result<Json<db::Conversation>, ApiError> {
    if !db::plausible_id(&conv) {
        return Err(not_found(&id));
    }
    let (c, now) = db::close(&o.pool, &o.config.tenant, &conv, &id.0)
        .await
        .map_err(|r| refused(r, &id))?;
    if now {
        tracing::info!(conversation_id = %conv, "conversation closed");
    }
    Ok(Json(c))
}

#[derive(Deserialize)]
struct Handoff {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/conversations/{id}/handoff`: records that a person should take over.
pub async fn request_handoff(
    State(o): State<Orchestrator>,
    Extension(id): Extension<CorrelationId>,
    Path(conv): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: Handoff = parse(&body, true, &id)?;
    if let Some(r) = &b.reason
        && r.chars().count() > MAX_REASON_CHARS
    {
        return Err(invalid(
            format!("reason is longer than {MAX_REASON_CHARS} characters"),
            &id,
        ));
    }
    if !db::plausible_id(&conv) {
        return Err(not_found(&id));
    }
    db::handoff(&o.pool, &o.config.tenant, &conv, b.reason.as_deref(), &id.0)
        .await
        .map_err(|r| refused(r, &id))?;
    tracing::info!(conversation_id = %conv, "handoff requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"conversation_id": conv, "event": "handoff_requested"})),
    )
        .into_response())
}

/// How long `/ready` waits for the embedding index's first load before reporting ready
/// anyway (retrieval is lexical until the index is loaded).
pub const INDEX_READY_GRACE: Duration = Duration::from_secs(300);

/// `/ready`: 200 when the database answers within two seconds, else 503; also 503 while the
/// embedding index is still loading, for at most [`INDEX_READY_GRACE`] after start (so a
/// rollout keeps the old pod serving until the new one answers with its index).
pub async fn ready(State(o): State<Orchestrator>) -> Response {
    if o.retriever.index().is_some_and(|i| !i.loaded()) && o.started.elapsed() < INDEX_READY_GRACE {
        return (StatusCode::SERVICE_UNAVAILABLE, "embedding index loading").into_response();
    }
    let ping = sqlx::query("SELECT 1").execute(&o.pool);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
}

pub async fn no_route(id: Option<Extension<CorrelationId>>) -> ApiError {
    let id = correlation(id.as_ref().map(|e| &e.0));
    error(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route",
        &id,
    )
}

pub async fn wrong_method(id: Option<Extension<CorrelationId>>) -> ApiError {
    let id = correlation(id.as_ref().map(|e| &e.0));
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
        &id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_keywords;

    #[test]
    fn handoff_keywords_match_whole_words_in_any_case() {
        let k = parse_keywords("human, agent,operator, talk to a person");
        assert!(asks_for_person("I want a HUMAN please", &k));
        assert!(asks_for_person("agent.", &k));
        assert!(asks_for_person("Can I talk to a  person?", &k));
        assert!(!asks_for_person("humanity is great", &k));
        assert!(!asks_for_person("the agents' fees", &k));
        assert!(!asks_for_person("talk to a bot", &k));
        assert!(asks_for_person(
            "می‌خواهم با اپراتور صحبت کنم",
            &parse_keywords("اپراتور")
        ));
        assert!(!asks_for_person("anything", &parse_keywords(" , ,")));
    }
}
