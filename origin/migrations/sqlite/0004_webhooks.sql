-- Issue 14, post-call webhooks (shared::webhook).
-- A tenant's endpoints: where events go, which events (JSON array of names, e.g.
-- ["call.ended","call.started"]), optionally only one agent's calls. An endpoint that keeps
-- failing is disabled with a reason (enabled = false); re-enabling forgets its failures.
CREATE TABLE webhook_endpoints (
    tenant_id            TEXT    NOT NULL,
    id                   TEXT    NOT NULL,
    url                  TEXT    NOT NULL,
    agent_id             TEXT,
    events               TEXT    NOT NULL,
    description          TEXT,
    enabled              INTEGER NOT NULL DEFAULT 1, -- 0 or 1: sqlx's Any driver cannot read SQLite BOOLEAN
    disabled_reason      TEXT,
    disabled_at_ms       INTEGER,
    consecutive_failures INTEGER  NOT NULL DEFAULT 0,
    failing_since_ms     INTEGER,
    created_at_ms        INTEGER  NOT NULL,
    updated_at_ms        INTEGER  NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- The outbox: each event once (its JSON body as POSTed), written in the same transaction as
-- the change it reports.
CREATE TABLE webhook_events (
    tenant_id     TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    call_id       TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    created_at_ms INTEGER  NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- One row per event and subscribed endpoint, in the same transaction. A replica claims due
-- rows by setting lease_owner/lease_until_ms in one conditional UPDATE, so no two replicas
-- send a row at once; a lease left by a replica that died expires and the row is claimed
-- again. status: pending, delivered, failed (retries ran out).
CREATE TABLE webhook_deliveries (
    tenant_id          TEXT    NOT NULL,
    endpoint_id        TEXT    NOT NULL,
    event_id           TEXT    NOT NULL,
    event_type         TEXT    NOT NULL,
    call_id            TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    attempts           INTEGER  NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER  NOT NULL,
    lease_owner        TEXT,
    lease_until_ms     INTEGER,
    last_status_code   INTEGER,
    last_error         TEXT,
    last_attempt_at_ms INTEGER,
    delivered_at_ms    INTEGER,
    created_at_ms      INTEGER  NOT NULL,
    PRIMARY KEY (tenant_id, endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (tenant_id, endpoint_id, created_at_ms);
