-- Issue 16: outbound calls, answering machines, a second carrier.
-- Agents: the message left on an answering machine (NULL: a machine is hung up on).
ALTER TABLE agents ADD COLUMN voicemail_message TEXT;

-- Calls: who dialled whom (NULL reads as inbound, every call before this migration), the
-- carrier, what answering-machine detection found, the voicemail left, the API client's
-- metadata (a JSON object).
ALTER TABLE calls ADD COLUMN direction            TEXT;
ALTER TABLE calls ADD COLUMN carrier              TEXT;
ALTER TABLE calls ADD COLUMN answered_by          TEXT;
ALTER TABLE calls ADD COLUMN voicemail_message    TEXT;
ALTER TABLE calls ADD COLUMN voicemail_left_at_ms INTEGER;
ALTER TABLE calls ADD COLUMN metadata             TEXT;
