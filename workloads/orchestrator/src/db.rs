//! Conversations, messages and outbox events. Every statement runs on a pool scoped to the
//! tenant by row-level security (`xin_store::connect`), so another tenant's rows are simply
//! invisible; rows are written with the tenant's name, which the policy checks again. Each
//! change and the outbox event describing it are written by one statement (data-modifying
//! CTEs), so they commit or fail together — and in one round trip.

use serde::Serialize;
use sqlx::PgPool;

/// RFC 3339 text in UTC (sqlx has no date-time feature here).
macro_rules! ts {
    ($c:literal) => {
        concat!(
            "to_char(",
            $c,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

macro_rules! conversation_columns {
    () => {
        concat!(
            "id, channel, external_user, status, ",
            ts!("created_at"),
            " AS created_at, ",
            ts!("closed_at"),
            " AS closed_at"
        )
    };
}

macro_rules! message_columns {
    () => {
        concat!(
            "id, role, text, answer_path, client_message_id, reply_to, ",
            ts!("created_at"),
            " AS created_at"
        )
    };
}

/// The CTE `ev` writing a stored user message's events: `message_received`, and
/// `handoff_requested` when the boolean parameter `$handoff` holds. Reads the CTEs `c` (the
/// conversation) and `m` (the inserted message); `$1` is the tenant, `$correlation` the
/// correlation id's parameter.
macro_rules! message_events {
    ($correlation:literal, $handoff:literal) => {
        concat!(
            "ev AS (
            INSERT INTO outbox_events (tenant, kind, conversation_id, payload, correlation_id)
            SELECT $1, k.kind, c.id,
                   jsonb_build_object('channel', c.channel, 'external_user', c.external_user, 'message_id', m.id)
                   || CASE k.kind
                        WHEN 'message_received' THEN jsonb_build_object(
                            'client_message_id', m.client_message_id, 'text_length', char_length(m.text))
                        ELSE jsonb_build_object('trigger', 'keyword')
                      END,
                   ",
            $correlation,
            "
            FROM c, m, (VALUES (1, 'message_received'), (2, 'handoff_requested')) AS k (n, kind)
            WHERE k.n = 1 OR ",
            $handoff,
            "
            ORDER BY k.n
        )"
        )
    };
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub channel: String,
    pub external_user: String,
    pub status: String,
    pub created_at: String,
    pub closed_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq)]
pub struct Message {
    pub id: i64,
    pub role: String,
    pub text: String,
    pub answer_path: Option<String>,
    pub client_message_id: Option<String>,
    pub reply_to: Option<i64>,
    pub created_at: String,
}

/// Why a change to a conversation was not made.
#[derive(Debug)]
pub enum Refused {
    NotFound,
    Closed,
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Refused {
    fn from(e: sqlx::Error) -> Self {
        Refused::Db(e)
    }
}

/// A new conversation id: 128 random bits as hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether `s` could be a conversation id (spares the database lookups of garbage).
pub fn plausible_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The open conversation of (`channel`, `user`), created when there is none: `(it, created)`.
/// Two concurrent creates meet at the unique index `conversations_open_per_user`: the loser's
/// insert waits for the winner's commit, does nothing, and the loser returns the winner's row.
pub async fn find_or_create(
    pool: &PgPool,
    tenant: &str,
    channel: &str,
    user: &str,
    correlation_id: &str,
) -> Result<(Conversation, bool), sqlx::Error> {
    for _ in 0..3 {
        if let Some(c) = open_conversation(pool, channel, user).await? {
            return Ok((c, false));
        }
        let inserted: Option<Conversation> = sqlx::query_as(concat!(
            "WITH ins AS (
                INSERT INTO conversations (id, tenant, channel, external_user) VALUES ($1, $2, $3, $4)
                ON CONFLICT (tenant, channel, external_user) WHERE status = 'open' DO NOTHING
                RETURNING *
            ), ev AS (
                INSERT INTO outbox_events (tenant, kind, conversation_id, payload, correlation_id)
                SELECT tenant, 'conversation_created', id,
                       jsonb_build_object('channel', channel, 'external_user', external_user), $5
                FROM ins
            )
            SELECT ",
            conversation_columns!(),
            " FROM ins"
        ))
        .bind(new_id())
        .bind(tenant)
        .bind(channel)
        .bind(user)
        .bind(correlation_id)
        .fetch_optional(pool)
        .await?;
        if let Some(c) = inserted {
            return Ok((c, true));
        }
    }
    // Created and closed by others three times in a row: report it as the database's trouble.
    Err(sqlx::Error::Protocol(
        "the conversation kept changing while it was being created".into(),
    ))
}

async fn open_conversation(
    pool: &PgPool,
    channel: &str,
    user: &str,
) -> Result<Option<Conversation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations WHERE channel = $1 AND external_user = $2 AND status = 'open'"
    ))
    .bind(channel)
    .bind(user)
    .fetch_optional(pool)
    .await
}

pub async fn conversation(pool: &PgPool, id: &str) -> Result<Option<Conversation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn messages(pool: &PgPool, conversation_id: &str) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE conversation_id = $1 ORDER BY id"
    ))
    .bind(conversation_id)
    .fetch_all(pool)
    .await
}

/// A user message to store.
pub struct NewMessage<'a> {
    pub tenant: &'a str,
    pub conversation_id: &'a str,
    pub text: &'a str,
    pub client_message_id: Option<&'a str>,
    pub correlation_id: &'a str,
    /// Emit `handoff_requested` too (the text asks for a person).
    pub handoff: bool,
}

/// What storing a user message did.
#[derive(Debug)]
pub enum Added {
    Stored(Message),
    /// A message with this client message id is already stored.
    Duplicate,
}

#[derive(sqlx::FromRow)]
struct AddedRow {
    status: String,
    id: Option<i64>,
    role: Option<String>,
    text: Option<String>,
    client_message_id: Option<String>,
    created_at: Option<String>,
}

/// Stores a user message with its `message_received` (and `handoff_requested`) events, in one
/// statement. The conversation row is locked FOR SHARE, so a concurrent close waits and no
/// message is added to a conversation after it was closed.
pub async fn add_user_message(pool: &PgPool, m: &NewMessage<'_>) -> Result<Added, Refused> {
    let row: Option<AddedRow> = sqlx::query_as(concat!(
        "WITH c AS (
            SELECT id, channel, external_user, status FROM conversations WHERE id = $2 FOR SHARE
        ), m AS (
            INSERT INTO messages (tenant, conversation_id, role, text, client_message_id, correlation_id)
            SELECT $1, c.id, 'user', $3, $4, $5 FROM c WHERE c.status = 'open'
            ON CONFLICT (tenant, conversation_id, client_message_id) WHERE client_message_id IS NOT NULL
            DO NOTHING
            RETURNING *
        ), ",
        message_events!("$5", "$6"),
        "
        SELECT c.status, m.id, m.role, m.text, m.client_message_id, ",
        ts!("m.created_at"),
        " AS created_at FROM c LEFT JOIN m ON true"
    ))
    .bind(m.tenant)
    .bind(m.conversation_id)
    .bind(m.text)
    .bind(m.client_message_id)
    .bind(m.correlation_id)
    .bind(m.handoff)
    .fetch_optional(pool)
    .await?;
    match row {
        None => Err(Refused::NotFound),
        Some(r) => match (r.id, r.role, r.text, r.created_at) {
            (Some(id), Some(role), Some(text), Some(created_at)) => Ok(Added::Stored(Message {
                id,
                role,
                text,
                answer_path: None,
                client_message_id: r.client_message_id,
                reply_to: None,
                created_at,
            })),
            _ if r.status != "open" => Err(Refused::Closed),
            _ => Ok(Added::Duplicate),
        },
    }
}

/// A user message for the open conversation of (`channel`, `external_user`).
pub struct Inbound<'a> {
    pub tenant: &'a str,
    pub channel: &'a str,
    pub external_user: &'a str,
    pub text: &'a str,
    pub client_message_id: Option<&'a str>,
    pub correlation_id: &'a str,
    /// Emit `handoff_requested` too (the text asks for a person).
    pub handoff: bool,
    /// How many earlier messages of the conversation to return (for the LLM).
    pub history: usize,
}

/// What [`post_inbound`] did.
#[derive(Debug)]
pub struct Posted {
    pub conversation: Conversation,
    /// The conversation was created for this message.
    pub created: bool,
    /// The stored message, or `None` when one with this client message id is already stored
    /// (a retry: see [`by_client_message_id`]).
    pub message: Option<Message>,
    /// The `history` messages before it, oldest first, as `(role, text)`.
    pub history: Vec<(String, String)>,
}

#[derive(sqlx::FromRow)]
struct PostedRow {
    id: String,
    channel: String,
    external_user: String,
    status: String,
    created_at: String,
    closed_at: Option<String>,
    created: bool,
    message_id: Option<i64>,
    message_text: Option<String>,
    message_client_id: Option<String>,
    message_created_at: Option<String>,
    history: sqlx::types::Json<Vec<(String, String)>>,
}

/// Finds or creates the open conversation of the user on the channel, stores the message in
/// it with its events (`conversation_created` when created, `message_received`, and
/// `handoff_requested` when asked for) and reads the conversation's earlier messages: one
/// statement, so one round trip and one commit. The open conversation is locked FOR SHARE,
/// so a concurrent close waits (or, when it committed first, a new conversation is started).
/// Two concurrent first messages of one user meet at the unique index
/// `conversations_open_per_user`: the loser's statement finds nothing and runs again (it then
/// sees the winner's conversation).
pub async fn post_inbound(pool: &PgPool, m: &Inbound<'_>) -> Result<Posted, sqlx::Error> {
    const POST: &str = concat!(
        "WITH existing AS (
            SELECT * FROM conversations
            WHERE tenant = $1 AND channel = $2 AND external_user = $3 AND status = 'open'
            FOR SHARE
        ), created AS (
            INSERT INTO conversations (id, tenant, channel, external_user)
            SELECT $4, $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM existing)
            ON CONFLICT (tenant, channel, external_user) WHERE status = 'open' DO NOTHING
            RETURNING *
        ), c AS (
            SELECT *, false AS created FROM existing
            UNION ALL
            SELECT *, true AS created FROM created
        ), created_event AS (
            INSERT INTO outbox_events (tenant, kind, conversation_id, payload, correlation_id)
            SELECT tenant, 'conversation_created', id,
                   jsonb_build_object('channel', channel, 'external_user', external_user), $7
            FROM created
        ), m AS (
            INSERT INTO messages (tenant, conversation_id, role, text, client_message_id, correlation_id)
            SELECT $1, c.id, 'user', $5, $6, $7 FROM c
            ON CONFLICT (tenant, conversation_id, client_message_id) WHERE client_message_id IS NOT NULL
            DO NOTHING
            RETURNING *
        ), ",
        message_events!("$7", "$8"),
        "
        SELECT c.id, c.channel, c.external_user, c.status, ",
        ts!("c.created_at"),
        " AS created_at, ",
        ts!("c.closed_at"),
        " AS closed_at, c.created,
               m.id AS message_id, m.text AS message_text, m.client_message_id AS message_client_id, ",
        ts!("m.created_at"),
        " AS message_created_at,
               (SELECT coalesce(jsonb_agg(jsonb_build_array(h.role, h.text) ORDER BY h.id), '[]')
                FROM (SELECT id, role, text FROM messages
                      WHERE tenant = $1 AND conversation_id = c.id
                      ORDER BY id DESC LIMIT $9) AS h) AS history
        FROM c LEFT JOIN m ON true"
    );
    for _ in 0..3 {
        let row: Option<PostedRow> = sqlx::query_as(POST)
            .bind(m.tenant)
            .bind(m.channel)
            .bind(m.external_user)
            .bind(new_id())
            .bind(m.text)
            .bind(m.client_message_id)
            .bind(m.correlation_id)
            .bind(m.handoff)
            .bind(m.history as i64)
            .fetch_optional(pool)
            .await?;
        let Some(r) = row else { continue };
        let message = match (r.message_id, r.message_text, r.message_created_at) {
            (Some(id), Some(text), Some(created_at)) => Some(Message {
                id,
                role: "user".into(),
                text,
                answer_path: None,
                client_message_id: r.message_client_id,
                reply_to: None,
                created_at,
            }),
            _ => None,
        };
        return Ok(Posted {
            conversation: Conversation {
                id: r.id,
                channel: r.channel,
                external_user: r.external_user,
                status: r.status,
                created_at: r.created_at,
                closed_at: r.closed_at,
            },
            created: r.created,
            message,
            history: r.history.0,
        });
    }
    // Created and closed by others three times in a row: report it as the database's trouble.
    Err(sqlx::Error::Protocol(
        "the conversation kept changing while the message was being stored".into(),
    ))
}

/// The user message stored under `client_message_id`, and its answer when there is one.
pub async fn by_client_message_id(
    pool: &PgPool,
    conversation_id: &str,
    client_message_id: &str,
) -> Result<Option<(Message, Option<Message>)>, sqlx::Error> {
    let user: Option<Message> = sqlx::query_as(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE conversation_id = $1 AND client_message_id = $2 AND role = 'user'"
    ))
    .bind(conversation_id)
    .bind(client_message_id)
    .fetch_optional(pool)
    .await?;
    let Some(user) = user else { return Ok(None) };
    let answer = answer_of(pool, conversation_id, user.id).await?;
    Ok(Some((user, answer)))
}

async fn answer_of<'e, E: sqlx::PgExecutor<'e>>(
    ex: E,
    conversation_id: &str,
    user_message: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE conversation_id = $1 AND reply_to = $2 ORDER BY id LIMIT 1"
    ))
    .bind(conversation_id)
    .bind(user_message)
    .fetch_optional(ex)
    .await
}

/// The `limit` messages before `before` (a message id), oldest first.
pub async fn history(
    pool: &PgPool,
    conversation_id: &str,
    before: i64,
    limit: usize,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let mut rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT role, text FROM messages WHERE conversation_id = $1 AND id < $2
         ORDER BY id DESC LIMIT $3",
    )
    .bind(conversation_id)
    .bind(before)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// An assistant answer to store.
pub struct NewAnswer<'a> {
    pub tenant: &'a str,
    pub conversation_id: &'a str,
    pub reply_to: i64,
    pub text: &'a str,
    pub path: &'a str,
    pub correlation_id: &'a str,
}

/// Stores the answer to a user message: `(the answer, stored now)`, in one statement. A
/// question has at most one answer (the unique index `messages_one_answer`): when a racing
/// retry stored one first, that answer wins and is returned (a second read, only then).
pub async fn store_answer(
    pool: &PgPool,
    a: &NewAnswer<'_>,
) -> Result<(Message, bool), sqlx::Error> {
    let inserted: Option<Message> = sqlx::query_as(concat!(
        "INSERT INTO messages (tenant, conversation_id, role, text, reply_to, answer_path, correlation_id)
         VALUES ($1, $2, 'assistant', $3, $4, $5, $6)
         ON CONFLICT (tenant, reply_to) WHERE reply_to IS NOT NULL DO NOTHING
         RETURNING ",
        message_columns!()
    ))
    .bind(a.tenant)
    .bind(a.conversation_id)
    .bind(a.text)
    .bind(a.reply_to)
    .bind(a.path)
    .bind(a.correlation_id)
    .fetch_optional(pool)
    .await?;
    if let Some(m) = inserted {
        return Ok((m, true));
    }
    let existing = answer_of(pool, a.conversation_id, a.reply_to)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((existing, false))
}

/// Closes a conversation: `(it, closed now)`; closing a closed one changes nothing.
pub async fn close(
    pool: &PgPool,
    tenant: &str,
    id: &str,
    correlation_id: &str,
) -> Result<(Conversation, bool), Refused> {
    let closed: Option<Conversation> = sqlx::query_as(concat!(
        "WITH upd AS (
            UPDATE conversations SET status = 'closed', closed_at = now()
            WHERE id = $1 AND status = 'open' RETURNING *
        ), ev AS (
            INSERT INTO outbox_events (tenant, kind, conversation_id, payload, correlation_id)
            SELECT $2, 'conversation_closed', id,
                   jsonb_build_object('channel', channel, 'external_user', external_user), $3
            FROM upd
        )
        SELECT ",
        conversation_columns!(),
        " FROM upd"
    ))
    .bind(id)
    .bind(tenant)
    .bind(correlation_id)
    .fetch_optional(pool)
    .await?;
    if let Some(c) = closed {
        return Ok((c, true));
    }
    match conversation(pool, id).await? {
        Some(c) => Ok((c, false)),
        None => Err(Refused::NotFound),
    }
}

/// Records that the conversation asks for a person.
pub async fn handoff(
    pool: &PgPool,
    tenant: &str,
    id: &str,
    reason: Option<&str>,
    correlation_id: &str,
) -> Result<(), Refused> {
    let status: Option<String> = sqlx::query_scalar(
        "WITH c AS (
            SELECT id, channel, external_user, status FROM conversations WHERE id = $1 FOR SHARE
        ), ev AS (
            INSERT INTO outbox_events (tenant, kind, conversation_id, payload, correlation_id)
            SELECT $2, 'handoff_requested', c.id,
                   jsonb_build_object('channel', c.channel, 'external_user', c.external_user,
                                      'trigger', 'request', 'reason', $3::text), $4
            FROM c WHERE c.status = 'open'
        )
        SELECT status FROM c",
    )
    .bind(id)
    .bind(tenant)
    .bind(reason)
    .bind(correlation_id)
    .fetch_optional(pool)
    .await?;
    match status.as_deref() {
        None => Err(Refused::NotFound),
        Some("open") => Ok(()),
        Some(_) => Err(Refused::Closed),
    }
}
