-- Issue 14, the read API: `GET /v1/calls` lists a tenant's calls newest first a page at a time
-- (`started_at_ms` descending, then `id`, a cursor after the last one), and `GET /v1/usage` sums
-- the minutes of the calls that started in a range of days. Without this index both read every
-- call of the tenant and sort them; with it a page reads its rows in order and stops.
-- Numbered 0005 so it never collides with the migrations of issue 14's other parts (0003, 0004).
CREATE INDEX calls_by_start ON calls (tenant_id, started_at_ms, id);
