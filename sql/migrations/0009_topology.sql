-- 0009 — production topology (SPEC §17): nothing may depend on session state, and the two
-- tables that churn get autovacuum settings for a sustained 10,000 tasks/s.

-- 1. The audit triggers put timestamps into JSON (events.data.run_at of created and
-- retry_scheduled). to_jsonb renders a timestamptz in the session's TimeZone, and pgqueue no
-- longer sets one per connection: through PgBouncer in transaction mode a session setting does
-- not stick, and a startup `options` parameter is refused. A function-level SET is local to
-- the call, so it is safe under any pooling; it costs one setting per statement, not per row.
-- A later migration that re-creates these functions must keep the clause (the PgBouncer
-- tests run with a non-UTC server zone and check the rendered times).
ALTER FUNCTION pgqueue.on_tasks_insert() SET TimeZone = 'UTC';
ALTER FUNCTION pgqueue.on_tasks_update() SET TimeZone = 'UTC';
