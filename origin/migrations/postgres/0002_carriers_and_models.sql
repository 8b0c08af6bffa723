-- Issue 13: what a live carrier sends and what today's Bedrock offers.
-- Agents: every ConversationRelay setting (JSON, `voice_settings`; the four older voice columns
-- stay written for readers of them), the lines the agent speaks on its own, the idle policy,
-- the Bedrock guardrail (JSON) and latency mode. NULL reads as the defaults, so agents written
-- before this migration keep working unchanged.
ALTER TABLE agents ADD COLUMN voice_settings     TEXT;
ALTER TABLE agents ADD COLUMN fallback_utterance TEXT;
ALTER TABLE agents ADD COLUMN idle_reprompt_secs BIGINT;
ALTER TABLE agents ADD COLUMN idle_reprompt      TEXT;
ALTER TABLE agents ADD COLUMN idle_reprompts     BIGINT;
ALTER TABLE agents ADD COLUMN idle_goodbye       TEXT;
ALTER TABLE agents ADD COLUMN guardrail          TEXT;
ALTER TABLE agents ADD COLUMN latency            TEXT;

-- Calls: who is calling, from the relay's `setup`.
ALTER TABLE calls ADD COLUMN caller_name    TEXT;
ALTER TABLE calls ADD COLUMN forwarded_from TEXT;
ALTER TABLE calls ADD COLUMN call_type      TEXT;

-- Turns: the language spoken, why the model stopped, why it failed (a failed turn's reply is
-- the agent's fallback utterance).
ALTER TABLE turns ADD COLUMN lang           TEXT;
ALTER TABLE turns ADD COLUMN stop_reason    TEXT;
ALTER TABLE turns ADD COLUMN failure_reason TEXT;
