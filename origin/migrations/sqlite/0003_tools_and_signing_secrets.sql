-- Issue 14: the agent acts.
-- Agents: the tenant's tools (JSON array of {name, description, input_schema, url, timeout_ms}),
-- the built-in tools it enables (JSON object), and the filler said while a slow tool runs. NULL
-- reads as none / the defaults, so agents written before this migration keep working.
ALTER TABLE agents ADD COLUMN tools            TEXT;
ALTER TABLE agents ADD COLUMN builtin_tools    TEXT;
ALTER TABLE agents ADD COLUMN filler_after_ms  INTEGER;
ALTER TABLE agents ADD COLUMN filler_utterance TEXT;

-- Turns: the tool calls made while producing a reply (JSON array of {name, input, outcome,
-- result, error, duration_ms}), written with the reply in one statement.
ALTER TABLE turns ADD COLUMN tool_calls TEXT;

-- Usage: tool calls per tenant and day.
ALTER TABLE usage_daily ADD COLUMN tool_calls INTEGER NOT NULL DEFAULT 0;

-- Each tenant's secret for X-Aybiza-Signature (tool calls now, webhooks next), created on
-- first need. After a rotation the previous secret still signs (a second v1) until
-- previous_expires_at_ms, so receivers can switch without losing requests.
CREATE TABLE signing_secrets (
    tenant_id              TEXT   NOT NULL PRIMARY KEY,
    secret                 TEXT   NOT NULL,
    previous_secret        TEXT,
    previous_expires_at_ms INTEGER,
    created_at_ms          INTEGER NOT NULL,
    rotated_at_ms          INTEGER
);
