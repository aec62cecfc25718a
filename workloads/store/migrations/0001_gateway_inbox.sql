-- Messages accepted by the gateway, before anything else happens to them. A provider's
-- retry of the same message hits the unique key and is not stored twice. The forwarding
-- worker leases rows (locked_until), records the answer, then marks them replied.
CREATE TABLE gateway_inbox (
    id                  BIGSERIAL PRIMARY KEY,
    tenant              TEXT        NOT NULL,
    channel             TEXT        NOT NULL,
    provider_message_id TEXT        NOT NULL,
    sender              TEXT        NOT NULL,
    text                TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    -- W3C traceparent of the accepting request, so forwarding continues its trace
    trace_context       TEXT,
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- forwarding state
    locked_until        TIMESTAMPTZ,
    attempts            INT         NOT NULL DEFAULT 0,
    last_error          TEXT,
    conversation_id     TEXT,
    answer              TEXT,
    answered_at         TIMESTAMPTZ,
    replied_at          TIMESTAMPTZ,
    -- given up after too many attempts (dead letter); last_error says why
    failed_at           TIMESTAMPTZ,
    UNIQUE (tenant, channel, provider_message_id)
);
CREATE INDEX gateway_inbox_pending ON gateway_inbox (tenant, id) WHERE replied_at IS NULL AND failed_at IS NULL;
CREATE INDEX gateway_inbox_sender ON gateway_inbox (tenant, channel, sender, id);
