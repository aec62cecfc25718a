-- Conversations and their messages, owned by the orchestrator.
CREATE TABLE conversations (
    id            TEXT        PRIMARY KEY,
    tenant        TEXT        NOT NULL,
    channel       TEXT        NOT NULL,
    external_user TEXT        NOT NULL,
    status        TEXT        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at     TIMESTAMPTZ
);
-- At most one open conversation per end user of a channel.
CREATE UNIQUE INDEX conversations_open_per_user ON conversations (tenant, channel, external_user) WHERE status = 'open';

CREATE TABLE messages (
    id                BIGSERIAL   PRIMARY KEY,
    tenant            TEXT        NOT NULL,
    conversation_id   TEXT        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT        NOT NULL CHECK (role IN ('user', 'assistant')),
    text              TEXT        NOT NULL,
    -- the caller's idempotency key of a user message; its answer points back to it
    client_message_id TEXT,
    reply_to          BIGINT      REFERENCES messages (id) ON DELETE CASCADE,
    answer_path       TEXT        CHECK (answer_path IN ('llm', 'fallback', 'extractive')),
    correlation_id    TEXT        NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX messages_idempotent ON messages (tenant, conversation_id, client_message_id) WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_by_conversation ON messages (tenant, conversation_id, id);
-- One answer per user message, whatever races a retry brings.
CREATE UNIQUE INDEX messages_one_answer ON messages (tenant, reply_to) WHERE reply_to IS NOT NULL;

-- Knowledge chunks, written by the ingestion worker and read by retrieval. `tsv` uses the
-- `simple` configuration (no stemming) so every language, Persian included, is matched.
CREATE TABLE knowledge_chunks (
    id          BIGSERIAL   PRIMARY KEY,
    tenant      TEXT        NOT NULL,
    document_id TEXT        NOT NULL,
    chunk_index INT         NOT NULL,
    title       TEXT        NOT NULL DEFAULT '',
    source      TEXT        NOT NULL DEFAULT '',
    text        TEXT        NOT NULL,
    token_count INT         NOT NULL,
    visibility  TEXT        NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'internal')),
    tags        TEXT[]      NOT NULL DEFAULT '{}',
    embedding   REAL[],
    tsv         TSVECTOR    GENERATED ALWAYS AS (to_tsvector('simple', title || ' ' || text)) STORED,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant, document_id, chunk_index)
);
CREATE INDEX knowledge_chunks_tsv ON knowledge_chunks USING GIN (tsv);
CREATE INDEX knowledge_chunks_tags ON knowledge_chunks USING GIN (tags);
CREATE INDEX knowledge_chunks_embedded ON knowledge_chunks (tenant, id) WHERE embedding IS NOT NULL;
-- The orchestrator's in-memory vector index refreshes from what changed since its last look.
CREATE INDEX knowledge_chunks_updated ON knowledge_chunks (tenant, updated_at, id);
-- Any update (a re-embedding included) moves updated_at, which that refresh relies on.
CREATE FUNCTION xin_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER knowledge_chunks_touch BEFORE UPDATE ON knowledge_chunks
    FOR EACH ROW EXECUTE FUNCTION xin_touch_updated_at();

-- Conversation events for the automation worker (transactional outbox).
CREATE TABLE outbox_events (
    id              BIGSERIAL   PRIMARY KEY,
    tenant          TEXT        NOT NULL,
    kind            TEXT        NOT NULL CHECK (kind IN ('message_received', 'conversation_created', 'conversation_closed', 'handoff_requested')),
    conversation_id TEXT        NOT NULL,
    payload         JSONB       NOT NULL DEFAULT '{}',
    correlation_id  TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at    TIMESTAMPTZ
);
CREATE INDEX outbox_events_pending ON outbox_events (tenant, id) WHERE processed_at IS NULL;
