-- Agents, their phone numbers, calls, turns and daily usage. Every key starts with the tenant:
-- no query can reach another tenant's rows without naming it. Times are Unix milliseconds.

CREATE TABLE agents (
    tenant_id              TEXT             NOT NULL,
    id                     TEXT             NOT NULL,
    name                   TEXT             NOT NULL,
    system_prompt          TEXT             NOT NULL,
    greeting               TEXT,
    model                  TEXT,
    fallback_models        TEXT,             -- JSON array, NULL = the origin's default chain
    max_tokens             BIGINT           NOT NULL,
    temperature            DOUBLE PRECISION,
    top_p                  DOUBLE PRECISION,
    stop_sequences         TEXT             NOT NULL, -- JSON array
    voice                  TEXT,
    language               TEXT,
    tts_provider           TEXT,
    transcription_provider TEXT,
    phone_numbers          TEXT             NOT NULL, -- JSON array, as given; agent_phone_numbers indexes it
    version                BIGINT           NOT NULL,
    created_at_ms          BIGINT           NOT NULL,
    updated_at_ms          BIGINT           NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE agent_phone_numbers (
    tenant_id    TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, phone_number)
);
CREATE INDEX agent_phone_numbers_by_agent ON agent_phone_numbers (tenant_id, agent_id);

CREATE TABLE calls (
    tenant_id        TEXT   NOT NULL,
    id               TEXT   NOT NULL,
    agent_id         TEXT   NOT NULL,
    source           TEXT   NOT NULL,
    carrier_call_sid TEXT,
    from_number      TEXT,
    to_number        TEXT,
    region           TEXT   NOT NULL,
    status           TEXT   NOT NULL,
    turn_count       BIGINT NOT NULL DEFAULT 0,
    started_at_ms    BIGINT NOT NULL,
    ended_at_ms      BIGINT,
    end_reason       TEXT,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE turns (
    tenant_id     TEXT    NOT NULL,
    call_id       TEXT    NOT NULL,
    seq           BIGINT  NOT NULL,
    role          TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    interrupted   BOOLEAN NOT NULL DEFAULT FALSE,
    model         TEXT,
    input_tokens  BIGINT,
    output_tokens BIGINT,
    ttft_ms       BIGINT,
    duration_ms   BIGINT,
    created_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, call_id, seq)
);

CREATE TABLE usage_daily (
    tenant_id     TEXT   NOT NULL,
    day           BIGINT NOT NULL, -- days since 1970-01-01, UTC
    calls         BIGINT NOT NULL DEFAULT 0,
    turns         BIGINT NOT NULL DEFAULT 0,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
