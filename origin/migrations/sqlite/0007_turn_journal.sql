-- Issue 20: a live call's turns written behind, from the origin's journal, while the database
-- was away. Each carries the key its journal gave it (`journal:seq`, unique per call), so a
-- write repeated after a lost answer stores the turn once. Turns written directly have none
-- (NULLs never collide in a unique index).
ALTER TABLE turns ADD COLUMN journal_key TEXT;
CREATE UNIQUE INDEX turns_by_journal_key ON turns (tenant_id, call_id, journal_key);
