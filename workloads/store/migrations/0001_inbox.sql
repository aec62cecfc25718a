-- Messages accepted by the gateway, before anything else happens to them. A provider's
-- retry of the same message hits the unique key and is not stored twice.
CREATE TABLE IF NOT EXISTS gateway_inbox (
    id                  BIGSERIAL PRIMARY KEY,
    tenant              TEXT        NOT NULL,
    channel             TEXT        NOT NULL,
    provider_message_id TEXT        NOT NULL,
    sender              TEXT        NOT NULL,
    text                TEXT        NOT NULL,
    correlation_id      TEXT        NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    forwarded_at        TIMESTAMPTZ,
    UNIQUE (tenant, channel, provider_message_id)
);
CREATE INDEX IF NOT EXISTS gateway_inbox_pending ON gateway_inbox (received_at) WHERE forwarded_at IS NULL;
