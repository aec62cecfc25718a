-- The automation worker's durable queue (xin-automation, docs/automation.md).
--
-- One row per run of a rule. `dedupe_key` makes a run unique per rule and cause — a scheduled
-- time (`schedule:<UTC instant>`), an outbox event (`event:<id>`), a run-now request
-- (`manual:<annotation value>`) — so two worker replicas, or one that restarts, never queue the
-- same run twice. Workers claim due runs with FOR UPDATE SKIP LOCKED and hold them by a lease
-- (`lease_owner`, `lease_until`); a worker killed mid-run leaves its lease to expire and another
-- claims the run again with the same idempotency key (at-least-once delivery). A run ends
-- `succeeded`, `dead` (out of attempts, with the last error) or `cancelled`.
CREATE TABLE automation_runs (
    id              BIGSERIAL   PRIMARY KEY,
    tenant          TEXT        NOT NULL,
    rule            TEXT        NOT NULL,
    rule_uid        TEXT        NOT NULL,
    dedupe_key      TEXT        NOT NULL,
    trigger         TEXT        NOT NULL CHECK (trigger IN ('schedule', 'event', 'manual')),
    scheduled_for   TIMESTAMPTZ,
    event_id        BIGINT,
    -- What templates see (docs/automation.md, "Templates"), captured when the run is queued.
    context         JSONB       NOT NULL DEFAULT '{}',
    correlation_id  TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'running', 'succeeded', 'dead', 'cancelled')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    run_after       TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    UNIQUE (rule_uid, dedupe_key)
);
-- Due runs, in order; expired leases; a rule's recent runs.
CREATE INDEX automation_runs_due ON automation_runs (run_after, id) WHERE state = 'pending';
CREATE INDEX automation_runs_leased ON automation_runs (lease_until) WHERE state = 'running';
CREATE INDEX automation_runs_recent ON automation_runs (rule_uid, id DESC);

-- Where each scheduled rule's scheduler has got to: fire times up to `cursor` are decided.
-- `schedule` is the crontab and zone the cursor was computed for; an edited schedule starts
-- afresh from the time of the edit.
CREATE TABLE automation_schedules (
    rule_uid TEXT        PRIMARY KEY,
    tenant   TEXT        NOT NULL,
    rule     TEXT        NOT NULL,
    schedule TEXT        NOT NULL,
    cursor   TIMESTAMPTZ NOT NULL
);

-- Counters per rule for its status, kept by the statements that finish runs (the runs
-- themselves are deleted after the retention period).
CREATE TABLE automation_rule_stats (
    rule_uid      TEXT        PRIMARY KEY,
    tenant        TEXT        NOT NULL,
    succeeded     BIGINT      NOT NULL DEFAULT 0,
    failed        BIGINT      NOT NULL DEFAULT 0,
    dead_lettered BIGINT      NOT NULL DEFAULT 0,
    last_run_at   TIMESTAMPTZ,
    last_error    TEXT
);

-- Operations requested by annotation (run now, retry, cancel, ...), each value acted on once
-- whichever replica sees it first.
CREATE TABLE automation_operations (
    rule_uid   TEXT        NOT NULL,
    annotation TEXT        NOT NULL,
    value      TEXT        NOT NULL,
    result     TEXT        NOT NULL,
    message    TEXT        NOT NULL,
    -- what a preview or a simulation produced, shown in the rule's status
    detail     JSONB,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_uid, annotation, value)
);
