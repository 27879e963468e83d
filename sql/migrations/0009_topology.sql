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

-- 2. Autovacuum for a sustained 10,000 tasks/s.
--
-- Measured per task (bench/scaling.py, pg_stat_user_tables after draining 20,000 tasks, see
-- docs/scaling.md): tasks gets 1 insert and ~1.9 updates, none of them HOT (claim and
-- completion change status, which the partial indexes cover), so ~1.9 dead rows; events gets
-- ~2.9 inserts (created, started, completed) and is deleted later by retention. At 10,000
-- tasks/s that is ~19,000 dead rows/s in tasks and ~29,000 new rows/s in events.
--
-- * Triggers by count, not by fraction. 0001's 2 % of tasks (20 % default for events) grows
--   with the history the table keeps: with one day of history at 10k/s (864 M rows), 2 % is
--   17 M dead rows, a quarter of an hour of churn, in which the claim index fills with entries
--   of rows that are no longer pending and every claim walks past them. With scale factor 0
--   the threshold is absolute; autovacuum_naptime (1 min, server-wide) then bounds how often
--   a table is looked at, so a pass finds ~1.1 M dead rows, 7 MB of dead-tuple memory, well
--   within the default autovacuum_work_mem (64 MB).
-- * No throttling on these two tables (cost_delay 0): a throttled pass that takes longer than
--   the churn it has to clean never catches up; the default budget (cost limit 200 per 2 ms
--   sleep) is sized for background tables, not for a queue's.
-- * Insert-driven vacuums for events (PG 13+): an append-only table is otherwise vacuumed
--   only by retention's deletes or the anti-wraparound pass. At 10k tasks/s with single
--   enqueues (one transaction each) 200 M xids (autovacuum_freeze_max_age) pass in under six
--   hours: a table never frozen before then is read whole by the anti-wraparound vacuum.
--   Frequent insert-driven passes with a low freeze_min_age freeze rows as they settle, so
--   that pass skips the all-frozen pages. A finished task's row is never updated again, so
--   tasks gets the same low freeze age (rows of pending or running tasks are young, and
--   freeze_min_age protects them).
-- * Analyze by count too for tasks: the planner's idea of how many rows are pending decides
--   how claims and listings use the partial indexes; 100,000 changes is ~5 s at that rate.
ALTER TABLE pgqueue.tasks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 200000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 100000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_freeze_min_age = 1000000
);
ALTER TABLE pgqueue.events SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_freeze_min_age = 1000000
);
