-- Limits, fairness and budgets (SPEC §12): the rules pgqueue.claim() enforces and
-- pgqueue.why() explains. Each rule is defined once, here, and both call it, so an
-- explanation cannot drift from what the claim does.

-- Running tasks of one queue (the partial tasks_running_idx holds only running rows).
CREATE OR REPLACE FUNCTION pgqueue.queue_running(p_queue text)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM pgqueue.tasks r WHERE r.status = 'running' AND r.queue = p_queue
$$;

-- How many more tasks of a queue may start now, by its concurrency limit and its rate limit
-- (NULL: that limit is not set), and when the rate limit frees its next slot. The rate limit
-- counts the claim-written ring of recent starts: a start at t is allowed while fewer than N
-- starts lie in (t - S, t], so any S-second window holds at most N.
CREATE OR REPLACE FUNCTION pgqueue.queue_room(q pgqueue.queues)
RETURNS TABLE (concurrency_free integer, rate_free integer, rate_frees_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN q.concurrency_limit IS NOT NULL
                THEN greatest(0, q.concurrency_limit - pgqueue.queue_running(q.name))::integer END,
           CASE WHEN q.rate_limit_tasks IS NOT NULL
                THEN greatest(0, q.rate_limit_tasks - w.in_window)::integer END,
           CASE WHEN q.rate_limit_tasks IS NOT NULL AND w.in_window >= q.rate_limit_tasks
                THEN w.oldest + make_interval(secs => q.rate_limit_per_s) END
      FROM (SELECT count(*) AS in_window, min(s) AS oldest
              FROM unnest(q.rate_starts) AS s
             WHERE q.rate_limit_tasks IS NOT NULL
               AND s > now() - make_interval(secs => q.rate_limit_per_s)) w
$$;

-- A user's spend today and this month (UTC calendar periods), from the rollup.
CREATE OR REPLACE FUNCTION pgqueue.user_spend(p_user text)
RETURNS TABLE (day_cost numeric, month_cost numeric)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(u.cost) FILTER (WHERE u.day = (now() AT TIME ZONE 'UTC')::date), 0),
           coalesce(sum(u.cost), 0)
      FROM pgqueue.usage_daily u
     WHERE u.user_id = coalesce(p_user, '')
       AND u.day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date
$$;

-- Which budget of a user is used up ('cost_per_day', 'cost_per_month'), NULL when none is.
-- Reaching a limit counts as crossing it: a budget of 0 runs nothing.
CREATE OR REPLACE FUNCTION pgqueue.budget_exhausted(p_user text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN l.cost_per_day IS NOT NULL AND s.day_cost >= l.cost_per_day THEN 'cost_per_day'
                WHEN l.cost_per_month IS NOT NULL AND s.month_cost >= l.cost_per_month
                THEN 'cost_per_month' END
      FROM pgqueue.user_limits l, pgqueue.user_spend(l.user_id) s
     WHERE l.user_id = p_user
$$;

-- Users whose tasks the claim skips because a budget is used up.
CREATE OR REPLACE FUNCTION pgqueue.users_over_budget()
RETURNS text[] LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(l.user_id), '{}')
      FROM pgqueue.user_limits l
     WHERE (l.cost_per_day IS NOT NULL OR l.cost_per_month IS NOT NULL)
       AND pgqueue.budget_exhausted(l.user_id) IS NOT NULL
$$;

-- Running tasks per owner: in one queue and in all (per-queue and per-user caps).
CREATE OR REPLACE FUNCTION pgqueue.user_running(p_queue text)
RETURNS TABLE (user_id text, in_queue bigint, total bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.user_id, count(*) FILTER (WHERE r.queue = p_queue), count(*)
      FROM pgqueue.tasks r
     WHERE r.status = 'running' AND r.user_id IS NOT NULL
     GROUP BY r.user_id
$$;

-- How many more tasks of one owner may start in a queue now: the least of the queue's
-- per-user concurrency and the user's max_running, minus what runs (NULL: no such cap).
-- 0 for a user over budget.
CREATE OR REPLACE FUNCTION pgqueue.user_room(p_per_user integer, p_in_queue bigint,
                                             p_max_running integer, p_total bigint,
                                             p_over_budget boolean)
RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_over_budget THEN 0
                WHEN p_per_user IS NULL AND p_max_running IS NULL THEN NULL
                ELSE greatest(0, least(p_per_user - coalesce(p_in_queue, 0),
                                       p_max_running - coalesce(p_total, 0)))::integer END
$$;

-- A kind's circuit breaker in a queue: 'closed', 'open' (until open_until), 'half_open' (the
-- cool-down passed: one probe may start) or 'probing' (the probe runs; nothing else starts).
CREATE OR REPLACE FUNCTION pgqueue.breaker_state(b pgqueue.breakers)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN b.open_until IS NULL THEN 'closed'
                WHEN b.open_until > now() THEN 'open'
                WHEN b.probe_id IS NOT NULL AND EXISTS (
                         SELECT 1 FROM pgqueue.tasks p
                          WHERE p.id = b.probe_id AND p.status = 'running'
                            AND p.attempts = b.probe_attempt) THEN 'probing'
                ELSE 'half_open' END
$$;


-- The kinds of a queue whose breaker is open or probing now: not claimed (queue_stats, /queues).
CREATE OR REPLACE FUNCTION pgqueue.open_breakers(p_queue text)
RETURNS text[] LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(b.kind ORDER BY b.kind), '{}') FROM pgqueue.breakers b
     WHERE b.queue = p_queue AND b.open_until IS NOT NULL
       AND pgqueue.breaker_state(b) IN ('open', 'probing')
$$;


-- Outcomes: the spend rollup, the budget stop and the circuit breakers, from one statement's
-- changed rows. Both parts return at once when they have nothing to do (no row carries usage;
-- no queue has a breaker), which is what keeps queues without limits paying nothing.
CREATE OR REPLACE FUNCTION pgqueue.on_tasks_outcome() RETURNS trigger
LANGUAGE plpgsql
SET enable_nestloop = off  -- see 0001: cached one-row plans made big statements quadratic
AS $$
DECLARE
    v_over text[];
    v_kind record;
BEGIN
    -- Spend: the usage each row gained in this statement, per owner, on today's UTC date.
    IF EXISTS (SELECT 1 FROM new_rows n
                WHERE n.usage <> '{"input_tokens": 0, "output_tokens": 0, "cost": 0}'::jsonb) THEN
        WITH gained AS (
            SELECT coalesce(n.user_id, '') AS user_id,
                   sum(coalesce((n.usage->>'input_tokens')::numeric, 0)
                       - coalesce((o.usage->>'input_tokens')::numeric, 0)) AS input_tokens,
                   sum(coalesce((n.usage->>'output_tokens')::numeric, 0)
                       - coalesce((o.usage->>'output_tokens')::numeric, 0)) AS output_tokens,
                   sum(coalesce((n.usage->>'cost')::numeric, 0)
                       - coalesce((o.usage->>'cost')::numeric, 0)) AS cost,
                   count(*) AS attempts
              FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE n.usage IS DISTINCT FROM o.usage
             GROUP BY 1
        ), rolled AS (
            -- in owner order, so concurrent statements lock rollup rows in one order
            INSERT INTO pgqueue.usage_daily AS u (user_id, day, input_tokens, output_tokens,
                                                  cost, attempts)
            SELECT g.user_id, (now() AT TIME ZONE 'UTC')::date, g.input_tokens,
                   g.output_tokens, g.cost, g.attempts
              FROM gained g ORDER BY g.user_id
            ON CONFLICT (user_id, day) DO UPDATE
               SET input_tokens = u.input_tokens + excluded.input_tokens,
                   output_tokens = u.output_tokens + excluded.output_tokens,
                   cost = u.cost + excluded.cost,
                   attempts = u.attempts + excluded.attempts
            RETURNING u.user_id
        )
        SELECT array_agg(r.user_id) INTO v_over FROM rolled r
         WHERE EXISTS (SELECT 1 FROM pgqueue.user_limits l WHERE l.user_id = r.user_id);
        -- Budgets read the rollup as this statement left it (the next statement's snapshot).
        IF v_over IS NOT NULL THEN
            PERFORM pgqueue.budget_stop(u) FROM unnest(v_over) AS u
              WHERE pgqueue.budget_exhausted(u) IS NOT NULL;
        END IF;
    END IF;

    -- Circuit breakers: consecutive failed attempts per queue and kind. Order inside one
    -- statement is unknown, so a statement with a success counts only its own failures.
    -- The probe's outcome decides: success closes, failure re-opens for another cool-down.
    IF EXISTS (SELECT 1 FROM pgqueue.queues q WHERE q.breaker_failures IS NOT NULL) THEN
        FOR v_kind IN
            SELECT n.queue, n.kind, q.breaker_failures AS threshold,
                   make_interval(secs => q.breaker_cool_down_s) AS cool_down,
                   count(*) FILTER (WHERE n.status = 'completed') AS ok,
                   count(*) FILTER (WHERE n.status <> 'completed') AS failed,
                   coalesce(array_agg(n.id) FILTER (WHERE n.status = 'completed'), '{}') AS ok_ids,
                   coalesce(array_agg(n.id) FILTER (WHERE n.status <> 'completed'), '{}') AS failed_ids
              FROM new_rows n JOIN old_rows o ON o.id = n.id
              JOIN pgqueue.queues q ON q.name = n.queue AND q.breaker_failures IS NOT NULL
             WHERE o.status = 'running'
               AND (n.status IN ('completed', 'failed')
                    OR (n.status = 'pending' AND n.attempts = o.attempts AND n.error IS NOT NULL))
               AND coalesce(n.error->>'type', '') <> 'budget_exceeded'
             GROUP BY n.queue, n.kind, q.breaker_failures, q.breaker_cool_down_s
             ORDER BY n.queue, n.kind  -- one lock order for concurrent statements
        LOOP
            INSERT INTO pgqueue.breakers (queue, kind) VALUES (v_kind.queue, v_kind.kind)
            ON CONFLICT (queue, kind) DO NOTHING;
            UPDATE pgqueue.breakers b
               SET failures = CASE WHEN b.probe_id = ANY(v_kind.ok_ids) THEN 0
                                   WHEN b.probe_id = ANY(v_kind.failed_ids) THEN b.failures + v_kind.failed
                                   WHEN v_kind.ok > 0 THEN v_kind.failed
                                   ELSE b.failures + v_kind.failed END,
                   open_until = CASE
                       WHEN b.probe_id = ANY(v_kind.ok_ids) THEN NULL
                       WHEN b.probe_id = ANY(v_kind.failed_ids) THEN now() + v_kind.cool_down
                       WHEN v_kind.ok > 0 THEN CASE WHEN v_kind.failed >= v_kind.threshold
                                                    THEN now() + v_kind.cool_down END
                       WHEN b.open_until IS NULL AND b.failures + v_kind.failed >= v_kind.threshold
                       THEN now() + v_kind.cool_down
                       ELSE b.open_until END,
                   probe_id = CASE WHEN b.probe_id = ANY(v_kind.ok_ids || v_kind.failed_ids)
                                   THEN NULL ELSE b.probe_id END,
                   updated_at = now()
             WHERE b.queue = v_kind.queue AND b.kind = v_kind.kind;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;


-- The budget stop: a user who reached a budget has their running tasks asked to cancel, marked
-- so they end `failed` with error type budget_exceeded (not retried) instead of `cancelled`.
-- SKIP LOCKED: a row another statement holds (its outcome being written, a heartbeat) is left
-- for the sweep in pgqueue.reap(), so an outcome never waits on this, nor deadlocks with it.
CREATE OR REPLACE FUNCTION pgqueue.budget_stop(p_user text)
RETURNS bigint LANGUAGE sql AS $$
    WITH stop AS (
        SELECT t.id FROM pgqueue.tasks t
         WHERE t.status = 'running' AND t.user_id = p_user AND NOT t.cancel_requested
           FOR UPDATE SKIP LOCKED
    ), stopped AS (
        UPDATE pgqueue.tasks t
           SET cancel_requested = true,
               error = jsonb_build_object(
                   'type', 'budget_exceeded',
                   'message', format('user %s reached its %s budget', p_user,
                                     pgqueue.budget_exhausted(p_user)),
                   'retryable', false),
               updated_at = now()
          FROM stop WHERE t.id = stop.id
        RETURNING t.id
    )
    SELECT count(*) FROM stopped
$$;

-- Budget stops that the trigger had to skip (rows locked at that moment): called by the reaper.
CREATE OR REPLACE FUNCTION pgqueue.budget_sweep()
RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(sum(pgqueue.budget_stop(u)), 0)::bigint
      FROM unnest(pgqueue.users_over_budget()) AS u
     WHERE EXISTS (SELECT 1 FROM pgqueue.tasks t
                    WHERE t.status = 'running' AND t.user_id = u AND NOT t.cancel_requested)
$$;


-- Settings. Each upserts the queue's settings row and wakes its workers (a limit raised or
-- removed frees slots now). NULL removes the limit.

-- At most `tasks` starts in any `per_s`-second window, across all workers.
CREATE OR REPLACE FUNCTION pgqueue.set_rate_limit(queue_name text, tasks integer,
                                                  per_s double precision)
RETURNS pgqueue.queues LANGUAGE sql AS $$
    WITH q AS (
        INSERT INTO pgqueue.queues AS q (name, rate_limit_tasks, rate_limit_per_s)
        VALUES (queue_name, tasks, per_s)
        ON CONFLICT (name) DO UPDATE
           SET rate_limit_tasks = tasks, rate_limit_per_s = per_s, updated_at = now()
        RETURNING q.*
    ), woken AS (SELECT pg_notify('pgqueue_wakeup', queue_name))
    SELECT q.* FROM q, woken
$$;

-- At most k running tasks per user_id in this queue.
CREATE OR REPLACE FUNCTION pgqueue.set_per_user_concurrency(queue_name text, k integer)
RETURNS pgqueue.queues LANGUAGE sql AS $$
    WITH q AS (
        INSERT INTO pgqueue.queues AS q (name, per_user_concurrency) VALUES (queue_name, k)
        ON CONFLICT (name) DO UPDATE SET per_user_concurrency = k, updated_at = now()
        RETURNING q.*
    ), woken AS (SELECT pg_notify('pgqueue_wakeup', queue_name))
    SELECT q.* FROM q, woken
$$;

-- Among due tasks of equal priority, serve the user with the fewest running tasks first.
CREATE OR REPLACE FUNCTION pgqueue.set_fair(queue_name text, fair boolean)
RETURNS pgqueue.queues LANGUAGE sql AS $$
    INSERT INTO pgqueue.queues AS q (name, fair) VALUES (queue_name, fair)
    ON CONFLICT (name) DO UPDATE SET fair = set_fair.fair, updated_at = now()
    RETURNING q.*
$$;

-- After `failures` consecutive failed attempts of one kind, do not claim that kind for
-- `cool_down_s`; then one probe decides. Removing the breaker forgets its state.
CREATE OR REPLACE FUNCTION pgqueue.set_circuit_breaker(queue_name text, failures integer,
                                                       cool_down_s double precision)
RETURNS pgqueue.queues LANGUAGE sql AS $$
    WITH q AS (
        INSERT INTO pgqueue.queues AS q (name, breaker_failures, breaker_cool_down_s)
        VALUES (queue_name, failures, cool_down_s)
        ON CONFLICT (name) DO UPDATE
           SET breaker_failures = failures, breaker_cool_down_s = cool_down_s, updated_at = now()
        RETURNING q.*
    ), forgotten AS (
        DELETE FROM pgqueue.breakers b
         WHERE b.queue = queue_name AND set_circuit_breaker.failures IS NULL
    ), woken AS (SELECT pg_notify('pgqueue_wakeup', queue_name))
    SELECT q.* FROM q, woken
$$;

-- A user's budgets and cap, all at once (NULL: no such limit; all NULL: no limits at all).
-- A budget lowered below today's spend stops the user's running tasks; a raised one lets
-- their pending tasks be claimed at once (their queues' workers are woken).
CREATE OR REPLACE FUNCTION pgqueue.set_user_limits(user_name text, cost_per_day numeric,
                                                   cost_per_month numeric, max_running integer)
RETURNS pgqueue.user_limits LANGUAGE plpgsql AS $$
DECLARE
    v_row pgqueue.user_limits;
BEGIN
    IF set_user_limits.cost_per_day IS NULL AND set_user_limits.cost_per_month IS NULL
       AND set_user_limits.max_running IS NULL THEN
        DELETE FROM pgqueue.user_limits l WHERE l.user_id = user_name;
        v_row := ROW(user_name, NULL, NULL, NULL, now());
    ELSE
        INSERT INTO pgqueue.user_limits AS l (user_id, cost_per_day, cost_per_month, max_running)
        VALUES (user_name, set_user_limits.cost_per_day, set_user_limits.cost_per_month,
                set_user_limits.max_running)
        ON CONFLICT (user_id) DO UPDATE
           SET cost_per_day = excluded.cost_per_day, cost_per_month = excluded.cost_per_month,
               max_running = excluded.max_running, updated_at = now()
        RETURNING l.* INTO v_row;
        IF pgqueue.budget_exhausted(user_name) IS NOT NULL THEN
            PERFORM pgqueue.budget_stop(user_name);
        END IF;
    END IF;
    PERFORM pg_notify('pgqueue_wakeup', q.queue)
       FROM (SELECT DISTINCT t.queue FROM pgqueue.tasks t
              WHERE t.user_id = user_name AND t.status = 'pending') q;
    RETURN v_row;
END
$$;


-- Why is this task not running? Every reason of SPEC §12 that holds now, each
-- {"code", "detail", ...}, computed by the rules pgqueue.claim() applies (the functions above).
-- A running or finished task has no reasons. `blocked` and `waiting_signal` read their
-- columns through to_jsonb(), so this function needs no change when those features land.
CREATE OR REPLACE FUNCTION pgqueue.why(task_id uuid)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_task pgqueue.tasks;
    v_row jsonb;
    v_q pgqueue.queues;
    v_room record;
    v_running record;
    v_limits pgqueue.user_limits;
    v_breaker pgqueue.breakers;
    v_state text;
    v_budget text;
    v_free integer;
    v_ahead bigint;
    v_reasons jsonb := '[]';
BEGIN
    SELECT t.* INTO v_task FROM pgqueue.tasks t WHERE t.id = task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % does not exist', task_id
              USING ERRCODE = 'no_data_found', HINT = 'Check the id in pgqueue.tasks.';
    END IF;
    v_row := to_jsonb(v_task);
    IF v_task.status::text NOT IN ('pending', 'blocked', 'waiting') THEN
        RETURN jsonb_build_object('status', v_task.status, 'reasons', v_reasons);
    END IF;

    IF v_task.status::text = 'blocked' THEN
        v_reasons := v_reasons || jsonb_build_object(
            'code', 'blocked',
            'detail', 'waits for its dependencies to complete',
            'dependencies', coalesce((
                SELECT jsonb_agg(d.id) FROM pgqueue.tasks d
                 WHERE d.id IN (SELECT jsonb_array_elements_text(v_row->'depends_on')::uuid)
                   AND d.status <> 'completed'), '[]'));
    END IF;
    IF v_task.status::text = 'waiting' THEN
        v_reasons := v_reasons || jsonb_build_object(
            'code', 'waiting_signal',
            'detail', format('waits for the signal %s', v_row->'waiting_for'->>'signal'),
            'signal', v_row->'waiting_for'->'signal',
            'until', v_row->'waiting_for'->'until');
    END IF;
    IF v_task.run_at > now() THEN
        v_reasons := v_reasons || jsonb_build_object(
            'code', 'scheduled', 'detail', format('not due before %s', v_task.run_at),
            'run_at', v_task.run_at);
    END IF;

    SELECT q.* INTO v_q FROM pgqueue.queues q WHERE q.name = v_task.queue;
    IF coalesce(v_q.paused, false) THEN
        v_reasons := v_reasons || jsonb_build_object(
            'code', 'queue_paused', 'detail', format('queue %s is paused', v_task.queue));
    END IF;
    IF v_q.limited THEN
        SELECT r.* INTO v_room FROM pgqueue.queue_room(v_q) r;
        IF v_room.concurrency_free = 0 THEN
            v_reasons := v_reasons || jsonb_build_object(
                'code', 'concurrency_limit',
                'detail', format('queue %s runs %s tasks, its limit', v_task.queue,
                                 v_q.concurrency_limit),
                'limit', v_q.concurrency_limit);
        END IF;
        IF v_room.rate_free = 0 THEN
            v_reasons := v_reasons || jsonb_build_object(
                'code', 'rate_limited',
                'detail', format('queue %s started %s tasks in the last %s s; a slot frees at %s',
                                 v_task.queue, v_q.rate_limit_tasks, v_q.rate_limit_per_s,
                                 v_room.rate_frees_at),
                'frees_at', v_room.rate_frees_at);
        END IF;
    END IF;

    IF v_task.user_id IS NOT NULL THEN
        SELECT l.* INTO v_limits FROM pgqueue.user_limits l WHERE l.user_id = v_task.user_id;
        v_budget := pgqueue.budget_exhausted(v_task.user_id);
        IF v_budget IS NOT NULL THEN
            v_reasons := v_reasons || jsonb_build_object(
                'code', 'budget_exhausted',
                'detail', format('user %s reached its %s budget (%s)', v_task.user_id, v_budget,
                                 CASE v_budget WHEN 'cost_per_day' THEN v_limits.cost_per_day
                                               ELSE v_limits.cost_per_month END),
                'limit', v_budget);
        END IF;
        SELECT r.* INTO v_running FROM pgqueue.user_running(v_task.queue) r
         WHERE r.user_id = v_task.user_id;
        v_free := pgqueue.user_room(v_q.per_user_concurrency, v_running.in_queue,
                                    v_limits.max_running, v_running.total, false);
        IF v_free = 0 THEN
            v_reasons := v_reasons || jsonb_build_object(
                'code', 'per_user_limit',
                'detail', CASE WHEN v_q.per_user_concurrency IS NOT NULL
                                AND coalesce(v_running.in_queue, 0) >= v_q.per_user_concurrency
                               THEN format('user %s runs %s tasks in queue %s, its per-user limit',
                                           v_task.user_id, v_running.in_queue, v_task.queue)
                               ELSE format('user %s runs %s tasks, its max_running',
                                           v_task.user_id, v_running.total) END,
                'running', coalesce(v_running.total, 0));
        END IF;
    END IF;

    IF v_q.breaker_failures IS NOT NULL THEN
        SELECT b.* INTO v_breaker FROM pgqueue.breakers b
         WHERE b.queue = v_task.queue AND b.kind = v_task.kind;
        IF FOUND THEN
            v_state := pgqueue.breaker_state(v_breaker);
            IF v_state IN ('open', 'probing') THEN
                v_reasons := v_reasons || jsonb_build_object(
                    'code', 'circuit_open',
                    'detail', CASE v_state
                        WHEN 'open' THEN format('%s failed %s times in a row; no %s task starts before %s',
                                                v_task.kind, v_breaker.failures, v_task.kind,
                                                v_breaker.open_until)
                        ELSE format('a probe task of %s runs; its outcome decides', v_task.kind) END,
                    'until', v_breaker.open_until);
            END IF;
        END IF;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pgqueue.workers w
                    WHERE v_task.queue = ANY(w.queues)
                      AND (cardinality(w.kinds) = 0 OR v_task.kind = ANY(w.kinds))) THEN
        v_reasons := v_reasons || jsonb_build_object(
            'code', 'no_worker',
            'detail', format('no live worker serves queue %s and kind %s', v_task.queue,
                             v_task.kind));
    END IF;

    IF v_task.status = 'pending' AND v_task.run_at <= now() THEN
        SELECT count(*) INTO v_ahead FROM pgqueue.tasks t
         WHERE t.status = 'pending' AND t.queue = v_task.queue AND t.run_at <= now()
           AND (t.priority > v_task.priority
                OR (t.priority = v_task.priority
                    AND (t.run_at, t.seq) < (v_task.run_at, v_task.seq)));
        IF v_ahead > 0 THEN
            v_reasons := v_reasons || jsonb_build_object(
                'code', 'backlog',
                'detail', format('%s tasks are ahead of it in claim order', v_ahead),
                'ahead', v_ahead);
        END IF;
    END IF;
    RETURN jsonb_build_object('status', v_task.status, 'reasons', v_reasons);
END
$$;
