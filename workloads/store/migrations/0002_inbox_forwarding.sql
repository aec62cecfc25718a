-- Forwarding state of the gateway inbox: the worker leases rows (locked_until, extended
-- while it works on one), records the answer, then marks them replied; a row it gives up on
-- is a dead letter (failed_at, last_error). trace_context keeps the accepting request's W3C
-- traceparent so forwarding continues its trace.
ALTER TABLE gateway_inbox
    ADD COLUMN trace_context   TEXT,
    ADD COLUMN locked_until    TIMESTAMPTZ,
    ADD COLUMN attempts        INT NOT NULL DEFAULT 0,
    ADD COLUMN last_error      TEXT,
    ADD COLUMN conversation_id TEXT,
    ADD COLUMN answer          TEXT,
    ADD COLUMN answered_at     TIMESTAMPTZ,
    ADD COLUMN replied_at      TIMESTAMPTZ,
    ADD COLUMN failed_at       TIMESTAMPTZ;
-- `forwarded_at` (from 0001) is what replied_at now says.
UPDATE gateway_inbox SET replied_at = forwarded_at WHERE forwarded_at IS NOT NULL;
ALTER TABLE gateway_inbox DROP COLUMN forwarded_at;
DROP INDEX IF EXISTS gateway_inbox_pending;
CREATE INDEX gateway_inbox_pending ON gateway_inbox (tenant, id) WHERE replied_at IS NULL AND failed_at IS NULL;
CREATE INDEX gateway_inbox_sender ON gateway_inbox (tenant, channel, sender, id);
