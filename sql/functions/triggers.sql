-- Trigger functions of the tasks and events tables: the audit trail and NOTIFY step of every
-- change (docs/architecture.md). Re-applied by `pgqueue migrate` after the migrations
-- (CREATE OR REPLACE), so this file is the one place each body is defined; the triggers that
-- call them (CREATE TRIGGER) stay in the migrations that made them: tasks_insert_events and
-- tasks_update_events, tasks_touch_updated_at (0001), events_delete_horizon (0011). A new
-- body goes here, not into a new migration; a signature change needs a DROP in a migration.
-- The other trigger functions live with the rules they apply: on_tasks_outcome in
-- limits.sql, the dependency, signal and webhook ones in workflows.sql.
--
-- enable_nestloop = off: plpgsql caches each statement's plan per connection, and the
-- transition tables have no indexes. A connection whose first trigger run saw one row kept a
-- nested-loop join of new_rows and old_rows, and big statements became quadratic. Hash joins
-- are right for every size here, so the functions forbid the alternative (migration 0001).
--
-- Channel pgqueue_events carries, 60 changes per NOTIFY (well below the 8,000-byte payload
-- limit): [["<task id>", "<event>", "<status>", "<queue>", <user id as JSON or null>], ...]
-- (pgqueue/events.py decodes it). The text needs no escaping but for user_id: ids are uuids,
-- events and statuses fixed words, and queue names are checked against [A-Za-z0-9_.:-]
-- before any AFTER trigger runs. The update trigger is one statement that derives every
-- change once (diff) and feeds the audit rows, the event notifications, the cancel
-- notifications and the wake-ups from it (migration 0004).
--
-- SET TimeZone = 'UTC' (migration 0009): the audit rows put timestamps into JSON, which
-- to_jsonb renders in the session's TimeZone, and pgqueue sets none per connection (a
-- session setting does not stick through PgBouncer in transaction mode). Local to the call;
-- the PgBouncer tests run with a non-UTC server zone and check the rendered times.

CREATE OR REPLACE FUNCTION pgqueue.on_tasks_insert() RETURNS trigger
LANGUAGE plpgsql
SET enable_nestloop = off  -- see the note at the top of this file
SET TimeZone = 'UTC'  -- timestamps in the audit JSON, whatever the session's (0009)
AS $$
BEGIN
    INSERT INTO pgqueue.events (task_id, event, status, attempt, worker_id, data)
    SELECT n.id, 'created', n.status, n.attempts, n.worker_id,
           CASE WHEN n.run_at > n.created_at THEN jsonb_build_object('run_at', n.run_at) END
      FROM new_rows n;

    -- seq is contiguous within one INSERT, so seq / 60 chunks without numbering the rows.
    PERFORM pg_notify('pgqueue_events', '[' || string_agg(
                '["' || n.id || '","created","' || n.status || '","' || n.queue || '",'
                || coalesce(to_json(n.user_id)::text, 'null') || ']', ',') || ']')
       FROM new_rows n
      GROUP BY n.seq / 60;

    -- Wake workers of each queue that got a pending task, due now or later: an idle worker
    -- claims what is due and otherwise sleeps until the earliest run_at it now knows of.
    PERFORM pg_notify('pgqueue_wakeup', q.queue)
       FROM (SELECT DISTINCT queue FROM new_rows WHERE status = 'pending') q;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.on_tasks_update() RETURNS trigger
LANGUAGE plpgsql
SET enable_nestloop = off  -- see the note at the top of this file
SET TimeZone = 'UTC'  -- timestamps in the audit JSON, whatever the session's (0009)
AS $$
DECLARE
    published bigint;
BEGIN
    WITH diff AS MATERIALIZED (
        SELECT n.id, n.status, n.attempts, n.worker_id, n.queue, n.user_id, e.event,
               CASE e.event  -- what the audit row keeps besides the status
                   WHEN 'progress' THEN n.progress
                   WHEN 'checkpoint' THEN jsonb_build_object('token', n.checkpoint->'token')
                   WHEN 'failed' THEN n.error
                   WHEN 'retry_scheduled' THEN jsonb_build_object('error', n.error,
                                                                  'run_at', n.run_at)
                   WHEN 'requeued' THEN n.error
               END AS data,
               (row_number() OVER () - 1) / 60 AS chunk
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         CROSS JOIN LATERAL (SELECT pgqueue.event_of(o, n) AS event) e
         WHERE e.event IS NOT NULL  -- heartbeats and usage are not events
    ), audited AS (
        INSERT INTO pgqueue.events (task_id, event, status, attempt, worker_id, data)
        SELECT d.id, d.event, d.status, d.attempts, d.worker_id, d.data FROM diff d
    ), streamed AS (
        SELECT pg_notify('pgqueue_events', '[' || string_agg(
                   '["' || d.id || '","' || d.event || '","' || d.status || '","' || d.queue
                   || '",' || coalesce(to_json(d.user_id)::text, 'null') || ']', ',') || ']')
          FROM diff d GROUP BY d.chunk
    ), cancels AS (
        -- tell the worker holding a running task that its cancel was requested
        SELECT pg_notify('pgqueue_cancel', d.id::text) FROM diff d
         WHERE d.event = 'cancel_requested' AND d.status = 'running'
    ), wakeups AS (
        -- a task that became pending (retry with backoff, retry by hand, stall requeue,
        -- release) wakes the workers of its queue, as on insert
        SELECT pg_notify('pgqueue_wakeup', q.queue)
          FROM (SELECT DISTINCT d.queue FROM diff d
                 WHERE d.event IN ('retry_scheduled', 'requeued')) q
    )
    -- (a data-modifying WITH must be a top-level statement: hence INTO a throwaway count;
    -- the SELECT-only parts run because they are counted)
    SELECT (SELECT count(*) FROM streamed) + (SELECT count(*) FROM cancels)
           + (SELECT count(*) FROM wakeups)
      INTO published;
    RETURN NULL;
END
$$;


-- updated_at from the database clock on every change, whoever makes it. pgqueue's own
-- statements set updated_at = now() themselves; the WHEN clause is evaluated in C, so the
-- plpgsql function runs only for updates that forgot (an operator's UPDATE in psql).
CREATE OR REPLACE FUNCTION pgqueue.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- The stream's horizon (SPEC §4 resume): the newest transaction whose audit rows were
-- deleted, so a resume from before it is told it missed changes (migration 0011).
CREATE OR REPLACE FUNCTION pgqueue.on_events_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pgqueue.stream_horizon (xid)
    SELECT max(o.xid) FROM old_rows o HAVING max(o.xid) IS NOT NULL
    ON CONFLICT (one) DO UPDATE
        SET xid = greatest(pgqueue.stream_horizon.xid, excluded.xid), set_at = now();
    RETURN NULL;
END
$$;
