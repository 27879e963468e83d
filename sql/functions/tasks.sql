-- Functions over tasks: the arithmetic every outcome uses (backoff, usage sums) and the
-- operator API called from psql and by the queries (enqueue, cancel, retry, reap, purge).
-- The worker hot path, pgqueue.claim(), is in claim.sql.
-- Re-applied by `pgqueue migrate` after the migrations (CREATE OR REPLACE), so this file is the
-- one place each function is defined. A signature change needs a DROP in a migration first.

-- Retry delay: min(base * 2^(attempt-1), max) with +/-25 % jitter, so a burst of failures does
-- not come back as a burst.
CREATE OR REPLACE FUNCTION pgqueue.backoff_s(attempt integer, base_s double precision DEFAULT 1,
                                             max_s double precision DEFAULT 300)
RETURNS double precision LANGUAGE sql VOLATILE AS $$
    SELECT least(base_s * power(2, greatest(attempt, 1) - 1), max_s) * (0.75 + random() * 0.5)
$$;

-- Token/cost accounting: usage is summed over attempts. A report is bounded when it comes in
-- (tokens <= 10^12, cost <= 10^9: pgqueue.tasks.Usage); the sums saturate instead of
-- overflowing (numeric arithmetic, then clamped: tokens at the bigint maximum, cost at 10^18),
-- so a task that reports too often, or a row written by hand, never makes this, the
-- statement recording an outcome, /stats or a view raise (SPEC §2 "Bounded numbers").

-- A token sum clamped into bigint (negative sums, from rows written by hand, to 0).
CREATE OR REPLACE FUNCTION pgqueue.usage_tokens(n numeric)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(least(coalesce(n, 0), 9223372036854775807), 0)::bigint
$$;

-- A cost sum clamped to [0, 10^18], which double precision (JSON, Python float) holds.
CREATE OR REPLACE FUNCTION pgqueue.usage_cost(n numeric)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(least(coalesce(n, 0), 1e18), 0)::float8
$$;

-- A task's usage plus one attempt's report (NULL or {}: unchanged). STABLE, not IMMUTABLE:
-- jsonb_build_object is STABLE, and PostgreSQL inlines a SQL function into the calling
-- statement only when the body is no more volatile than the declaration; not inlined, every
-- recorded outcome paid a SQL-function call for it (docs/benchmarks.md, issue 15).
CREATE OR REPLACE FUNCTION pgqueue.usage_add(total jsonb, delta jsonb)
RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN delta IS NULL OR delta = '{}'::jsonb THEN total ELSE jsonb_build_object(
        'input_tokens',  pgqueue.usage_tokens(coalesce((total->>'input_tokens')::numeric, 0)
                                              + coalesce((delta->>'input_tokens')::numeric, 0)),
        'output_tokens', pgqueue.usage_tokens(coalesce((total->>'output_tokens')::numeric, 0)
                                              + coalesce((delta->>'output_tokens')::numeric, 0)),
        'cost',          pgqueue.usage_cost(coalesce((total->>'cost')::numeric, 0)
                                            + coalesce((delta->>'cost')::numeric, 0)))
    END
$$;


-- Enqueue from psql (Python and HTTP go through sql/queries/task_enqueue.sql, which follows
-- the same rules in fewer round trips). Returns the task, or the existing task of the same
-- owner with the same idempotency key created within p_idempotency_ttl; a reused key with a
-- different queue, kind or payload raises. Keys are scoped by owner (SPEC §3). A child of
-- parent_id gets the parent's owner; the parent must exist and, if user_id is given, be
-- that user's.
CREATE OR REPLACE FUNCTION pgqueue.enqueue(
    kind text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT now(),
    max_retries integer DEFAULT 3,
    timeout_s double precision DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    user_id text DEFAULT NULL,
    tags text[] DEFAULT '{}',
    parent_id uuid DEFAULT NULL,
    idempotency_ttl interval DEFAULT interval '1 day',
    depends_on uuid[] DEFAULT '{}',
    callback_url text DEFAULT NULL)
RETURNS pgqueue.tasks LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_task pgqueue.tasks;
    v_owner text := enqueue.user_id;
    v_parent_owner text;
BEGIN
    IF enqueue.parent_id IS NOT NULL THEN
        SELECT t.user_id INTO v_parent_owner FROM pgqueue.tasks t WHERE t.id = enqueue.parent_id;
        IF NOT FOUND OR (v_owner IS NOT NULL AND v_owner IS DISTINCT FROM v_parent_owner) THEN
            RAISE EXCEPTION 'parent task % does not exist (for this owner)', enqueue.parent_id
                  USING ERRCODE = 'no_data_found',
                        HINT = 'parent_id must be a task of the same owner; the child gets its owner.';
        END IF;
        v_owner := v_parent_owner;
    END IF;
    IF cardinality(enqueue.depends_on) > 0 THEN
        -- all at once, never waiting while holding one (sql/functions/workflows.sql, "Lock
        -- order"); the insert's trigger then finds them held
        PERFORM pgqueue.lock_tasks(enqueue.depends_on);
    END IF;
    LOOP
        INSERT INTO pgqueue.tasks AS t (kind, payload, queue, priority, run_at, max_retries,
                                        timeout_s, idempotency_key, user_id, tags, parent_id,
                                        depends_on, callback_url)
        VALUES (enqueue.kind, enqueue.payload, enqueue.queue, enqueue.priority, enqueue.run_at,
                enqueue.max_retries, enqueue.timeout_s, enqueue.idempotency_key,
                v_owner, enqueue.tags, enqueue.parent_id, enqueue.depends_on,
                enqueue.callback_url)
        ON CONFLICT ((coalesce(user_id, '')), idempotency_key) WHERE idempotency_key IS NOT NULL
        DO NOTHING
        RETURNING t.* INTO v_task;
        IF v_task.id IS NOT NULL THEN
            RETURN v_task;
        END IF;

        SELECT t.* INTO v_task FROM pgqueue.tasks t
         WHERE coalesce(t.user_id, '') = coalesce(v_owner, '')
           AND t.idempotency_key = enqueue.idempotency_key;
        IF NOT FOUND THEN
            CONTINUE;  -- the holder of the key was deleted meanwhile: insert again
        END IF;
        IF v_task.created_at < now() - idempotency_ttl THEN
            -- The key expired: release it from the old task, then insert anew.
            UPDATE pgqueue.tasks t SET idempotency_key = NULL, updated_at = now()
             WHERE t.id = v_task.id AND t.idempotency_key = enqueue.idempotency_key;
            CONTINUE;
        END IF;
        IF (v_task.queue, v_task.kind, v_task.payload) IS DISTINCT FROM
           (enqueue.queue, enqueue.kind, enqueue.payload) THEN
            RAISE EXCEPTION 'idempotency key % is already used by task % with a different queue, kind or payload',
                            enqueue.idempotency_key, v_task.id
                  USING ERRCODE = 'unique_violation',
                        CONSTRAINT = 'tasks_owner_idempotency_key_idx',
                        HINT = 'Use a new key, or send the same queue, kind and payload to get the existing task back.';
        END IF;
        RETURN v_task;
    END LOOP;
END
$$;


-- Cancel: a pending task is cancelled at once; a running one is flagged and its worker stops
-- it (told through NOTIFY on pgqueue_events). A finished task cannot be cancelled.
CREATE OR REPLACE FUNCTION pgqueue.cancel(task_id uuid)
RETURNS pgqueue.tasks LANGUAGE plpgsql AS $$
DECLARE
    v_task pgqueue.tasks;
BEGIN
    -- A task that is not running ends now, and with it everything blocked below it (the
    -- update's trigger): lock them all first, all or none (sql/functions/workflows.sql, "Lock
    -- order"), so this cancel never holds the task while it waits for one below. A running
    -- one is only flagged: one row.
    IF EXISTS (SELECT 1 FROM pgqueue.tasks t
                WHERE t.id = cancel.task_id AND t.status IN ('pending', 'blocked', 'waiting')) THEN
        PERFORM pgqueue.lock_below(cancel.task_id);
    END IF;
    -- blocked and waiting tasks hold no worker: cancelled at once, like pending ones (§2)
    UPDATE pgqueue.tasks t
       SET status = CASE WHEN t.status = 'running' THEN t.status
                         ELSE 'cancelled'::pgqueue.task_status END,
           completed_at = CASE WHEN t.status = 'running' THEN t.completed_at ELSE now() END,
           cancel_requested = true,
           -- a cancel wins over a budget stop: the task ends cancelled, not budget_exceeded
           error = CASE WHEN t.error->>'type' = 'budget_exceeded' THEN NULL ELSE t.error END,
           updated_at = now()
     WHERE t.id = task_id AND t.status IN ('pending', 'running', 'blocked', 'waiting')
    RETURNING t.* INTO v_task;
    IF v_task.id IS NULL THEN
        SELECT t.* INTO v_task FROM pgqueue.tasks t WHERE t.id = task_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'task % does not exist', task_id
                  USING ERRCODE = 'no_data_found', HINT = 'Check the id in pgqueue.tasks.';
        END IF;
        RAISE EXCEPTION 'task % is % and cannot be cancelled', task_id, v_task.status
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Only pending, blocked, waiting and running tasks can be cancelled.';
    END IF;
    RETURN v_task;
END
$$;


-- Retry by hand: a failed or cancelled task goes back to pending, due now, with one more
-- attempt allowed; its checkpoint is kept so the handler resumes where it was.
CREATE OR REPLACE FUNCTION pgqueue.retry(task_id uuid)
RETURNS pgqueue.tasks LANGUAGE plpgsql AS $$
DECLARE
    v_task pgqueue.tasks;
    v_left integer := 0;
BEGIN
    -- A task with dependencies goes back to blocked on those not completed by now (SPEC
    -- §10), read FOR SHARE as at enqueue, so a completion racing this retry is counted once.
    -- The task (FOR UPDATE) and its dependencies are locked all or none, never waiting while
    -- holding one (sql/functions/workflows.sql, "Lock order"); depends_on never changes, so
    -- it is read before the lock.
    SELECT t.* INTO v_task FROM pgqueue.tasks t
     WHERE t.id = task_id AND t.status IN ('failed', 'cancelled');
    IF v_task.id IS NOT NULL THEN
        PERFORM pgqueue.lock_tasks(v_task.depends_on, ARRAY[v_task.id]);
        SELECT t.* INTO v_task FROM pgqueue.tasks t
         WHERE t.id = task_id AND t.status IN ('failed', 'cancelled');
    END IF;
    IF v_task.id IS NOT NULL AND cardinality(v_task.depends_on) > 0 THEN
        SELECT count(*) FILTER (WHERE d.status <> 'completed') INTO v_left
          FROM pgqueue.tasks d WHERE d.id = ANY(v_task.depends_on);
        INSERT INTO pgqueue.task_deps (depends_on, task_id)
        SELECT t.id, v_task.id FROM pgqueue.tasks t
         WHERE t.id = ANY(v_task.depends_on) AND t.status <> 'completed'
        ON CONFLICT DO NOTHING;
    END IF;
    v_task := NULL;
    UPDATE pgqueue.tasks t
       SET status = CASE WHEN v_left > 0 THEN 'blocked' ELSE 'pending' END::pgqueue.task_status,
           deps_left = v_left, waiting_for = NULL,
           run_at = now(), completed_at = NULL, cancel_requested = false,
           max_retries = greatest(t.max_retries, t.attempts), worker_id = NULL,
           heartbeat_at = NULL, updated_at = now()
     WHERE t.id = task_id AND t.status IN ('failed', 'cancelled')
    RETURNING t.* INTO v_task;
    IF v_task.id IS NULL THEN
        SELECT t.* INTO v_task FROM pgqueue.tasks t WHERE t.id = task_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'task % does not exist', task_id
                  USING ERRCODE = 'no_data_found', HINT = 'Check the id in pgqueue.tasks.';
        END IF;
        RAISE EXCEPTION 'task % is % and cannot be retried', task_id, v_task.status
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Only failed and cancelled tasks can be retried.';
    END IF;
    RETURN v_task;
END
$$;


-- The reaper: running tasks whose heartbeat is older than stall_after lost their worker.
-- Requeue them (due now), or fail them when their attempts are used up, or cancel them when a
-- cancel was asked for. SKIP LOCKED makes concurrent reapers split the work instead of
-- queueing behind each other; a row a live worker is updating right now is skipped too.
CREATE OR REPLACE FUNCTION pgqueue.reap(stall_after interval DEFAULT interval '30 seconds')
RETURNS TABLE (task_id uuid, status pgqueue.task_status, worker_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    DELETE FROM pgqueue.workers w WHERE w.heartbeat_at < now() - stall_after;
    -- Budget stops the outcome trigger had to skip (their rows were locked at that moment).
    IF EXISTS (SELECT 1 FROM pgqueue.user_limits) THEN
        PERFORM pgqueue.budget_sweep();
    END IF;
    PERFORM pgqueue.wake_expired_waits();  -- signal waits whose `until` passed (SPEC §11)

    RETURN QUERY
    WITH stalled AS (
        SELECT t.id, t.worker_id AS lost_worker FROM pgqueue.tasks t
         WHERE t.status = 'running' AND t.heartbeat_at < now() - stall_after
           FOR UPDATE SKIP LOCKED
    )
    UPDATE pgqueue.tasks t
       SET status = CASE WHEN t.cancel_requested
                              AND t.error->>'type' = 'budget_exceeded' THEN 'failed'
                         WHEN t.cancel_requested THEN 'cancelled'
                         WHEN t.attempts > t.max_retries THEN 'failed'
                         ELSE 'pending' END::pgqueue.task_status,
           completed_at = CASE WHEN t.cancel_requested OR t.attempts > t.max_retries
                               THEN now() END,
           run_at = CASE WHEN t.cancel_requested OR t.attempts > t.max_retries
                         THEN t.run_at ELSE now() END,
           error = CASE WHEN t.cancel_requested AND t.error->>'type' = 'budget_exceeded'
                        THEN t.error ELSE jsonb_build_object(
               'type', 'stalled',
               'message', format('worker %s sent no heartbeat for %s', s.lost_worker, stall_after),
               'retryable', true) END,
           worker_id = NULL, heartbeat_at = NULL, updated_at = now()
      FROM stalled s WHERE t.id = s.id
    RETURNING t.id, t.status, s.lost_worker;
END
$$;


-- Delete finished tasks (completed, failed, cancelled) older than older_than, with their
-- events. Returns how many tasks went. Running and pending tasks are never touched.
CREATE OR REPLACE FUNCTION pgqueue.purge(older_than interval)
RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM pgqueue.tasks t
         WHERE t.completed_at < now() - older_than
           AND t.status IN ('completed', 'failed', 'cancelled')
        RETURNING t.id
    ), gone_events AS (
        DELETE FROM pgqueue.events e USING gone WHERE e.task_id = gone.id
    )
    SELECT count(*) FROM gone
$$;
