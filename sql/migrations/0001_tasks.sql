-- 0001 — the queue itself: tasks, their audit trail, live workers, per-queue settings,
-- and the triggers that turn every task change into an event row plus a NOTIFY.
--
-- Why triggers: a task changed by pgqueue, by another replica or by an operator in psql
-- must be audited and streamed the same way. Statement-level triggers with transition
-- tables do that with one INSERT into events and a handful of NOTIFYs per *statement*,
-- so a 10,000-row bulk insert or a 500-row batched claim costs about what one row does.

CREATE SCHEMA IF NOT EXISTS pgqueue;

CREATE TYPE pgqueue.task_status AS ENUM ('pending', 'running', 'completed', 'failed', 'cancelled');

CREATE TABLE pgqueue.tasks (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Insertion order: the last tie-break of the claim order and the keyset of listings.
    -- created_at cannot serve: it is the transaction start time, equal for a whole batch.
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    queue            text NOT NULL DEFAULT 'default'
                     CONSTRAINT tasks_queue_valid CHECK (queue ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    kind             text NOT NULL
                     CONSTRAINT tasks_kind_valid CHECK (kind ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    payload          jsonb NOT NULL DEFAULT '{}',
    priority         integer NOT NULL DEFAULT 0
                     CONSTRAINT tasks_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    run_at           timestamptz NOT NULL DEFAULT now(),
    status           pgqueue.task_status NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0 CONSTRAINT tasks_attempts_positive CHECK (attempts >= 0),
    max_retries      integer NOT NULL DEFAULT 3
                     CONSTRAINT tasks_max_retries_range CHECK (max_retries BETWEEN 0 AND 1000),
    timeout_s        double precision CONSTRAINT tasks_timeout_positive CHECK (timeout_s > 0),
    -- Per-task backoff override; NULL means the handler's or the default (1 s .. 300 s).
    backoff_base_s   double precision CONSTRAINT tasks_backoff_base_positive CHECK (backoff_base_s > 0),
    backoff_max_s    double precision CONSTRAINT tasks_backoff_max_positive CHECK (backoff_max_s > 0),
    idempotency_key  text CONSTRAINT tasks_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    user_id          text,
    tags             text[] NOT NULL DEFAULT '{}',
    parent_id        uuid,
    result           jsonb,
    error            jsonb,
    exit_code        integer,
    progress         jsonb,
    checkpoint       jsonb,
    usage            jsonb NOT NULL DEFAULT '{"input_tokens": 0, "output_tokens": 0, "cost": 0}',
    worker_id        text,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    heartbeat_at     timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- The state machine, enforced where no client can bypass it (docs/state-machine.md).
    CONSTRAINT tasks_completed_at_iff_terminal
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (completed_at IS NOT NULL)),
    CONSTRAINT tasks_running_has_worker
        CHECK (status <> 'running' OR (worker_id IS NOT NULL AND heartbeat_at IS NOT NULL)),
    CONSTRAINT tasks_attempts_within_limit CHECK (attempts <= max_retries + 1)
)
-- fillfactor 80: heartbeats and progress rewrite a running row every few seconds; free room
-- on the page lets those updates be HOT (no index touched, no index bloat). Status changes
-- are never HOT anyway (status is in index predicates), so more room would be wasted.
WITH (fillfactor = 80,
      -- The table churns (each task is updated 2+ times, then deleted by retention):
      -- vacuum after 2 % dead rows instead of 20 %, so the claim index stays small.
      autovacuum_vacuum_scale_factor = 0.02,
      autovacuum_analyze_scale_factor = 0.02,
      autovacuum_vacuum_cost_delay = 1);

COMMENT ON TABLE pgqueue.tasks IS 'One row per task; see docs/state-machine.md for the transitions.';

-- The claim index: only due-able pending rows, in claim order per queue. Partial, so it holds
-- the backlog only (finished rows never enter it) and stays small however big the table grows.
-- kind is not in it: workers usually handle every kind of their queues; the filter on kind is
-- applied to the few rows the index yields.
CREATE INDEX tasks_claim_idx ON pgqueue.tasks (queue, priority DESC, run_at, seq)
    WHERE status = 'pending';

-- "When is the next future task due?" — asked by an idle worker so it can sleep until then.
-- Only rows scheduled later than their creation (delays, retry backoff) enter it, so the
-- common due-now enqueue pays nothing for it.
CREATE INDEX tasks_scheduled_idx ON pgqueue.tasks (queue, run_at)
    WHERE status = 'pending' AND run_at > created_at;

-- The reaper and the running views look at running rows only (a few hundred at most).
-- worker_id, not heartbeat_at, is the key: indexing heartbeat_at would make every heartbeat
-- a non-HOT update.
CREATE INDEX tasks_running_idx ON pgqueue.tasks (worker_id) WHERE status = 'running';

-- Keyset pagination of GET /tasks and per-user listings, newest first.
CREATE UNIQUE INDEX tasks_seq_idx ON pgqueue.tasks (seq);
CREATE INDEX tasks_user_idx ON pgqueue.tasks (user_id, seq) WHERE user_id IS NOT NULL;
CREATE INDEX tasks_parent_idx ON pgqueue.tasks (parent_id) WHERE parent_id IS NOT NULL;

-- Retention deletes finished rows oldest first in small batches.
CREATE INDEX tasks_finished_idx ON pgqueue.tasks (completed_at) WHERE completed_at IS NOT NULL;

-- Idempotency: one live task per key, race-free (INSERT .. ON CONFLICT DO NOTHING waits for a
-- concurrent inserter of the same key). A key older than the TTL is released by clearing it
-- on the old row (see task_enqueue.sql), so the index needs no time component.
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON pgqueue.tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;


-- Audit trail: one row per state change, written by the triggers below.
CREATE TABLE pgqueue.events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id   uuid NOT NULL,  -- no FK: events outlive nothing, but an FK would lock tasks on insert
    event     text NOT NULL,
    status    pgqueue.task_status NOT NULL,
    attempt   integer NOT NULL,
    worker_id text,
    at        timestamptz NOT NULL DEFAULT now(),
    data      jsonb
) WITH (autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX events_task_idx ON pgqueue.events (task_id, id);

COMMENT ON TABLE pgqueue.events IS 'Audit trail: every task state change, oldest first by id.';


-- One heartbeat row per live worker process.
CREATE TABLE pgqueue.workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    kinds        text[] NOT NULL,
    concurrency  integer NOT NULL,
    running      integer NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);  -- rewritten every heartbeat; keep those updates HOT


-- Per-queue settings; a queue needs no row here to exist. Limits apply across all workers.
CREATE TABLE pgqueue.queues (
    name              text PRIMARY KEY CONSTRAINT queues_name_valid CHECK (name ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    concurrency_limit integer CONSTRAINT queues_limit_positive CHECK (concurrency_limit > 0),
    paused            boolean NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now()
);


-- ---------------------------------------------------------------------------------------
-- Events and notifications
--
-- Channel pgqueue_events carries one small JSON array per statement chunk:
--   [["<task id>", "<event>", "<status>", "<queue>", "<user or null>", <event id>], ...]
--   (migration 0004 dropped the event id and rewrote these functions)
-- Everything a stream subscriber needs to route and authorize; the full task is read by
-- id when needed. pg_notify payloads are limited to 8000 bytes, so rows are chunked by 60.
-- Channel pgqueue_wakeup carries a queue name when a pending task appears there, and
-- pgqueue_cancel the id of a running task whose cancel was requested: workers LISTEN to
-- these two only, not to the firehose. One wake-up per queue per statement, which is what
-- keeps bulk writes quiet.
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgqueue.event_of(o pgqueue.tasks, n pgqueue.tasks) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN o.id IS NULL THEN 'created'
        WHEN n.status IS DISTINCT FROM o.status THEN CASE n.status
            WHEN 'running'   THEN 'started'
            WHEN 'completed' THEN 'completed'
            WHEN 'failed'    THEN 'failed'
            WHEN 'cancelled' THEN 'cancelled'
            -- back to pending. A failed attempt keeps its attempt count and records an error:
            -- retry_scheduled. A stall (error type 'stalled', set by the reaper), a graceful
            -- release (attempts given back) or a retry by hand (from failed/cancelled): requeued.
            ELSE CASE WHEN o.status = 'running'
                        AND n.attempts = o.attempts
                        AND n.error IS NOT NULL
                        AND coalesce(n.error->>'type', '') <> 'stalled'
                      THEN 'retry_scheduled' ELSE 'requeued' END
            END
        WHEN n.cancel_requested AND NOT o.cancel_requested THEN 'cancel_requested'
        WHEN n.checkpoint IS DISTINCT FROM o.checkpoint THEN 'checkpoint'
        WHEN n.progress IS DISTINCT FROM o.progress THEN 'progress'
        ELSE NULL  -- heartbeats, usage: not events
    END
$$;

CREATE FUNCTION pgqueue.event_data(event text, n pgqueue.tasks) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE event
        WHEN 'progress' THEN n.progress
        WHEN 'checkpoint' THEN jsonb_build_object('token', n.checkpoint->'token')
        WHEN 'failed' THEN n.error
        WHEN 'retry_scheduled' THEN jsonb_build_object('error', n.error, 'run_at', n.run_at)
        WHEN 'requeued' THEN n.error
        WHEN 'created' THEN CASE WHEN n.run_at > n.created_at
                                 THEN jsonb_build_object('run_at', n.run_at) END
        ELSE NULL
    END
$$;

-- The trigger bodies below are single statements on purpose: measured on a single-row insert,
-- the first version (a helper function that re-split the changes into chunks, plus a loop
-- per queue) cost ~150 us more per enqueue than this: Queue.enqueue went from 1,880/s to 2,850/s.
-- Changes are published 60 per NOTIFY: ~110 bytes each, well below the 8000-byte limit.
--
-- enable_nestloop = off: plpgsql caches each statement's plan per connection, and the
-- transition tables have no indexes. A connection whose first trigger run saw one row kept a
-- nested-loop join of new_rows and old_rows; the same connection then needed 61 s for a
-- 20,000-row UPDATE and 4.9 s (instead of 0.36 s) for a 10,000-row INSERT. Hash joins are
-- right for every size here, so the functions forbid the alternative.

CREATE FUNCTION pgqueue.on_tasks_insert() RETURNS trigger
LANGUAGE plpgsql
SET enable_nestloop = off  -- see the note above
AS $$
DECLARE
    published bigint;
BEGIN
    WITH ins AS (
        INSERT INTO pgqueue.events (task_id, event, status, attempt, worker_id, data)
        SELECT n.id, 'created', n.status, n.attempts, n.worker_id, pgqueue.event_data('created', n)
          FROM new_rows n
        RETURNING id, task_id, status
    ), numbered AS (
        SELECT ins.id, ins.task_id, ins.status, n.queue, n.user_id,
               (row_number() OVER (ORDER BY ins.id) - 1) / 60 AS chunk
          FROM ins JOIN new_rows n ON n.id = ins.task_id
    )
    -- (a data-modifying WITH must be a top-level SELECT: hence INTO a throwaway count)
    SELECT count(pg_notify('pgqueue_events', payload)) INTO published FROM (
        SELECT jsonb_agg(jsonb_build_array(task_id, 'created', status, queue, user_id, id)
                         ORDER BY id)::text AS payload
          FROM numbered GROUP BY chunk
    ) chunks;

    -- Wake workers of each queue that got a pending task, due now or later: an idle worker
    -- claims what is due and otherwise sleeps until the earliest run_at it now knows of.
    -- (Waking only for due tasks left a delayed task waiting for the next poll.)
    PERFORM pg_notify('pgqueue_wakeup', q.queue)
       FROM (SELECT DISTINCT queue FROM new_rows WHERE status = 'pending') q;
    RETURN NULL;
END
$$;

CREATE FUNCTION pgqueue.on_tasks_update() RETURNS trigger
LANGUAGE plpgsql
SET enable_nestloop = off  -- see the note above
AS $$
DECLARE
    published bigint;
BEGIN
    WITH diff AS (
        SELECT n.id, n.status, n.attempts, n.worker_id, n.queue, n.user_id, e.event,
               pgqueue.event_data(e.event, n) AS data
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         CROSS JOIN LATERAL (SELECT pgqueue.event_of(o, n) AS event) e
    ), ins AS (
        INSERT INTO pgqueue.events (task_id, event, status, attempt, worker_id, data)
        SELECT d.id, d.event, d.status, d.attempts, d.worker_id, d.data
          FROM diff d
         WHERE d.event IS NOT NULL
        ORDER BY d.id
        RETURNING id, task_id, event, status
    ), numbered AS (
        SELECT ins.id, ins.task_id, ins.event, ins.status, d.queue, d.user_id,
               (row_number() OVER (ORDER BY ins.id) - 1) / 60 AS chunk
          FROM ins JOIN diff d ON d.id = ins.task_id
    )
    SELECT count(pg_notify('pgqueue_events', payload)) INTO published FROM (
        SELECT jsonb_agg(jsonb_build_array(task_id, event, status, queue, user_id, id)
                         ORDER BY id)::text AS payload
          FROM numbered GROUP BY chunk
    ) chunks;

    -- Tell the worker holding a running task that its cancel was requested.
    PERFORM pg_notify('pgqueue_cancel', n.id::text)
       FROM new_rows n JOIN old_rows o ON o.id = n.id
      WHERE n.status = 'running' AND n.cancel_requested AND NOT o.cancel_requested;

    -- A task that became pending (retry with backoff, retry by hand, stall requeue, release)
    -- wakes the workers of its queue, for the same reason as on insert.
    PERFORM pg_notify('pgqueue_wakeup', q.queue) FROM (
        SELECT DISTINCT n.queue FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE n.status = 'pending' AND o.status <> 'pending'
    ) q;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_insert_events AFTER INSERT ON pgqueue.tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.on_tasks_insert();

CREATE TRIGGER tasks_update_events AFTER UPDATE ON pgqueue.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.on_tasks_update();

-- updated_at from the database clock on every change, whoever makes it. pgqueue's own
-- statements set updated_at = now() themselves; the WHEN clause is evaluated in C, so the
-- plpgsql function runs only for updates that forgot (an operator's UPDATE in psql).
CREATE FUNCTION pgqueue.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER tasks_touch_updated_at BEFORE UPDATE ON pgqueue.tasks
    FOR EACH ROW WHEN (NEW.updated_at = OLD.updated_at) EXECUTE FUNCTION pgqueue.touch_updated_at();
