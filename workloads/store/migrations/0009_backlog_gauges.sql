-- The gateway's dead letters, counted every few seconds for `gateway_inbox_dead_letters`: a
-- partial index so the count reads only the rows set aside, never the whole inbox. (The
-- pending rows already have one: gateway_inbox_pending; the orchestrator's outbox too:
-- outbox_events_pending.)
CREATE INDEX gateway_inbox_dead ON gateway_inbox (tenant, failed_at) WHERE failed_at IS NOT NULL;
