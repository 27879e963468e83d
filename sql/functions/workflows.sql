-- Workflows: dependencies (SPEC §10), signals (§11) and webhooks (§13). The triggers these
-- bodies belong to, and why the storage looks as it does, are in migration 0013.

-- Which event a change of a task is (0001 wrote it; the workflow statuses add four):
-- pending -> blocked is a retry by hand of a task whose dependencies are unfinished
-- ('requeued'); blocked -> pending 'unblocked'; running -> waiting 'waiting'; waiting ->
-- pending 'signalled', or 'wait_timed_out' when the reaper ended the wait.
CREATE OR REPLACE FUNCTION pgqueue.event_of(o pgqueue.tasks, n pgqueue.tasks) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN o.id IS NULL THEN 'created'
        WHEN n.status IS DISTINCT FROM o.status THEN CASE n.status
            WHEN 'running'   THEN 'started'
            WHEN 'completed' THEN 'completed'
            WHEN 'failed'    THEN 'failed'
            WHEN 'cancelled' THEN 'cancelled'
            WHEN 'waiting'   THEN 'waiting'
            WHEN 'blocked'   THEN 'requeued'
            -- back to pending. A failed attempt keeps its attempt count and records an error:
            -- retry_scheduled. A stall (error type 'stalled', set by the reaper), a graceful
            -- release (attempts given back) or a retry by hand (from failed/cancelled): requeued.
            ELSE CASE WHEN o.status = 'blocked' THEN 'unblocked'
                      WHEN o.status = 'waiting' THEN
                           CASE WHEN n.waiting_for ? 'timed_out' THEN 'wait_timed_out'
                                ELSE 'signalled' END
                      WHEN o.status = 'running'
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


-- Before a task with depends_on is inserted: read its dependencies FOR SHARE (a completion
-- waits for this transaction, which closes the enqueue race: migration 0013) and decide its
-- status. pgqueue's own enqueues (Python, HTTP, pgqueue.enqueue()) have locked them already,
-- all of a batch's at once, with pgqueue.lock_tasks, so this finds them held and never waits;
-- a raw INSERT from psql waits here, in id order (see "Lock order" below). Any dependency failed or cancelled: the task is created cancelled
-- (dependency_failed). Any unfinished: blocked, deps_left = how many. All completed: pending.
-- A dependency that does not exist is an error (foreign_key_violation naming it).
CREATE OR REPLACE FUNCTION pgqueue.on_task_insert_dependencies() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_found integer;
    v_left integer;
    v_failed uuid;
    v_missing uuid;
BEGIN
    IF NEW.status NOT IN ('pending', 'blocked') THEN
        RETURN NEW;  -- an operator writing a finished row by hand: not ours to decide
    END IF;
    -- distinct, first occurrence first
    NEW.depends_on := ARRAY(SELECT u.d FROM unnest(NEW.depends_on) WITH ORDINALITY AS u(d, i)
                             GROUP BY u.d ORDER BY min(u.i));
    SELECT count(*), count(*) FILTER (WHERE d.status <> 'completed'),
           (array_agg(d.id ORDER BY d.id) FILTER (WHERE d.status IN ('failed', 'cancelled')))[1]
      INTO v_found, v_left, v_failed
      FROM (SELECT t.id, t.status FROM pgqueue.tasks t
             WHERE t.id = ANY(NEW.depends_on) ORDER BY t.id FOR SHARE) d;
    IF v_found < cardinality(NEW.depends_on) THEN
        SELECT u.d INTO v_missing FROM unnest(NEW.depends_on) AS u(d)
         WHERE NOT EXISTS (SELECT 1 FROM pgqueue.tasks t WHERE t.id = u.d) LIMIT 1;
        RAISE EXCEPTION 'dependency % does not exist', v_missing
              USING ERRCODE = 'foreign_key_violation', COLUMN = 'depends_on',
                    DETAIL = v_missing::text,
                    HINT = 'depends_on must list existing tasks.';
    END IF;
    IF v_failed IS NOT NULL THEN
        NEW.status := 'cancelled';
        NEW.completed_at := now();
        NEW.error := jsonb_build_object(
            'type', 'dependency_failed', 'dependency', v_failed, 'root', v_failed,
            'message', format('dependency %s did not complete', v_failed), 'retryable', false);
    ELSIF v_left > 0 THEN
        NEW.status := 'blocked';
    ELSE
        NEW.status := 'pending';
    END IF;
    NEW.deps_left := v_left;
    RETURN NEW;
END
$$;

-- After a blocked task is inserted: its unresolved edges. The dependencies are still locked
-- FOR SHARE by this transaction, so these are the ones the insert counted.
CREATE OR REPLACE FUNCTION pgqueue.on_task_insert_edges() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pgqueue.task_deps (depends_on, task_id)
    SELECT t.id, NEW.id FROM pgqueue.tasks t
     WHERE t.id = ANY(NEW.depends_on) AND t.status <> 'completed'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;


-- Lock order (docs/architecture.md, "Lock order"). Statements that lock several task rows
-- are of two kinds, and that alone rules out a cycle of waits:
--   enders (a finish batch, the reaper, a cancel, an UPDATE from psql) hold the rows they
--   end, taken in whatever order the plan visits them (ordering a finish batch would cost
--   the drain a second pass over its rows), then wait for the blocked dependents they
--   change, in id order (lock_dependents), and for nothing else of tasks;
--   everyone else (an enqueue with dependencies, a retry by hand, a cancel down the graph)
--   takes all its rows at once without waiting and, when one is held, lets go of all of
--   them before it waits (lock_tasks, lock_below): it never waits while holding a task row.
-- So a wait for a task row is for a holder that waits for no task row (done soon), or for an
-- ender that waits, in id order, only for blocked tasks that no ender holds out of order.
-- Heartbeats skip rows someone holds (task_heartbeat_many), and single-row statements
-- (progress, checkpoint, signal) hold one row and wait for nothing after it.

-- Wait until each of these tasks can be locked (FOR SHARE, or FOR UPDATE for p_update),
-- one at a time, each lock let go at once: the caller holds none of them while it waits.
CREATE OR REPLACE FUNCTION pgqueue.wait_for_holders(p_share uuid[], p_update uuid[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
BEGIN
    FOR v_id IN SELECT DISTINCT u FROM unnest(p_share) AS u LOOP
        BEGIN
            PERFORM FROM pgqueue.tasks t WHERE t.id = v_id FOR SHARE;
            RAISE SQLSTATE 'PQ001';  -- roll the block back: the lock goes with it
        EXCEPTION WHEN SQLSTATE 'PQ001' THEN
            NULL;
        END;
    END LOOP;
    FOR v_id IN SELECT DISTINCT u FROM unnest(p_update) AS u LOOP
        BEGIN
            PERFORM FROM pgqueue.tasks t WHERE t.id = v_id FOR UPDATE;
            RAISE SQLSTATE 'PQ001';
        EXCEPTION WHEN SQLSTATE 'PQ001' THEN
            NULL;
        END;
    END LOOP;
END
$$;

-- Lock p_share FOR SHARE and p_update FOR UPDATE, all or none: NOWAIT, and when a row is
-- held by another transaction the block rolls back (releasing what it took), waits for the
-- holders holding nothing, and tries again. The locks last until the caller's transaction
-- ends. Tasks that do not exist are not locked (the caller finds them missing).
CREATE OR REPLACE FUNCTION pgqueue.lock_tasks(p_share uuid[], p_update uuid[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        BEGIN
            PERFORM FROM pgqueue.tasks t WHERE t.id = ANY(p_update) FOR UPDATE NOWAIT;
            PERFORM FROM pgqueue.tasks t WHERE t.id = ANY(p_share) FOR SHARE NOWAIT;
            RETURN;  -- the block's subtransaction commits: the locks stay
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        PERFORM pgqueue.wait_for_holders(p_share, p_update);
    END LOOP;
END
$$;

-- The tasks an end of p_ended changes through task_deps: their direct dependents and, below
-- the ones in p_doomed (failed or cancelled), everything reachable (cancelled with them).
-- Sorted by id. A fresh snapshot at each call (plpgsql callers: one statement each).
CREATE OR REPLACE FUNCTION pgqueue.tasks_below(p_ended uuid[], p_doomed uuid[])
RETURNS uuid[] LANGUAGE sql AS $$
    WITH RECURSIVE doomed (task_id) AS (
        SELECT e.task_id FROM pgqueue.task_deps e WHERE e.depends_on = ANY(p_doomed)
        UNION
        SELECT e.task_id FROM doomed d JOIN pgqueue.task_deps e ON e.depends_on = d.task_id
    )
    SELECT coalesce(array_agg(b.id ORDER BY b.id), '{}')
      FROM (SELECT e.task_id FROM pgqueue.task_deps e WHERE e.depends_on = ANY(p_ended)
            UNION
            SELECT d.task_id FROM doomed d) AS b(id)
$$;

-- An ender's second step (on_tasks_finished): lock, in id order, the blocked tasks its end
-- changes, before any is changed. Its ended rows are held, so no new edge from them can
-- appear (an enqueue or a retry adding one holds the dependency FOR SHARE): the direct
-- dependents are final. Below a failed one the graph may grow while this waits (an edge
-- from a dependent not yet locked): then the locks of this step are let go (the block rolls
-- back) and taken again, in id order, for the larger set.
CREATE OR REPLACE FUNCTION pgqueue.lock_dependents(p_ended uuid[], p_doomed uuid[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_set uuid[] := pgqueue.tasks_below(p_ended, p_doomed);
    v_now uuid[];
BEGIN
    IF coalesce(cardinality(p_doomed), 0) = 0 THEN
        PERFORM FROM pgqueue.tasks t WHERE t.id = ANY(v_set) AND t.status = 'blocked'
          ORDER BY t.id FOR NO KEY UPDATE;
        RETURN;
    END IF;
    LOOP
        BEGIN
            PERFORM FROM pgqueue.tasks t WHERE t.id = ANY(v_set) AND t.status = 'blocked'
              ORDER BY t.id FOR NO KEY UPDATE;
            v_now := pgqueue.tasks_below(p_ended, p_doomed);
            IF v_now <@ v_set THEN
                RETURN;  -- the block commits: the locks stay
            END IF;
            RAISE SQLSTATE 'PQ001';
        EXCEPTION WHEN SQLSTATE 'PQ001' THEN
            v_set := v_now;
        END;
    END LOOP;
END
$$;

-- A cancel of a task that is not running (pgqueue.cancel): the task and everything below it
-- (cancelled with it), locked all or none like lock_tasks, until the set locked is all there
-- is below (an edge added before the lock was taken is seen by the check after it).
CREATE OR REPLACE FUNCTION pgqueue.lock_below(p_task uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_set uuid[];
    v_now uuid[] := ARRAY[p_task] || pgqueue.tasks_below('{}', ARRAY[p_task]);
    v_busy boolean;
BEGIN
    LOOP
        v_set := v_now;
        BEGIN
            PERFORM FROM pgqueue.tasks t WHERE t.id = ANY(v_set) FOR NO KEY UPDATE NOWAIT;
            v_now := ARRAY[p_task] || pgqueue.tasks_below('{}', ARRAY[p_task]);
            IF v_now <@ v_set THEN
                RETURN;
            END IF;
            RAISE SQLSTATE 'PQ001';  -- it grew: let go, and lock the larger set
        EXCEPTION
            WHEN lock_not_available THEN v_busy := true;
            WHEN SQLSTATE 'PQ001' THEN v_busy := false;
        END;
        IF v_busy THEN
            PERFORM pgqueue.wait_for_holders('{}', v_set);
        END IF;
    END LOOP;
END
$$;


-- After any UPDATE of tasks: what follows a task's end.
-- Dependencies: the edges of every task that ended in this statement are deleted; each
-- dependent's deps_left drops by its completed dependencies, and reaching 0 it is pending
-- (due at max(run_at, now())); a dependent of a failed or cancelled one is cancelled with
-- error dependency_failed, and so, in the same statement, is everything blocked below it
-- (a recursive walk of the edges: no trigger recursion as deep as the graph).
-- Signals: a task that began waiting for a signal already sent (it arrived while the attempt
-- was ending) is pending again at once. This runs with a fresh snapshot after the statement
-- that recorded the wait, and pgqueue.signal() locks the task row before it stores a signal,
-- so one of the two always sees the other: no wait misses its signal.
-- A statement that ended no task (claims, heartbeats, progress) stops at the first query.
CREATE OR REPLACE FUNCTION pgqueue.on_tasks_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_ended uuid[];
    v_doomed uuid[];
    v_waiting uuid[];
    v_woken bigint;
    v_webhooks boolean;  -- an ended task has a callback_url (read here, not probed by id)
BEGIN
    SELECT array_agg(n.id) FILTER (WHERE n.status IN ('completed', 'failed', 'cancelled')),
           array_agg(n.id) FILTER (WHERE n.status IN ('failed', 'cancelled')),
           array_agg(n.id) FILTER (WHERE n.status = 'waiting'),
           bool_or(n.callback_url IS NOT NULL) FILTER (
               WHERE n.status IN ('completed', 'failed', 'cancelled'))
      INTO v_ended, v_doomed, v_waiting, v_webhooks
      FROM new_rows n WHERE n.status IN ('completed', 'failed', 'cancelled', 'waiting');
    IF v_waiting IS NOT NULL THEN
        WITH woken AS (
            UPDATE pgqueue.tasks t
               SET status = 'pending', run_at = now(), waiting_for = NULL, updated_at = now()
             WHERE t.id = ANY(v_waiting) AND t.status = 'waiting'
               AND EXISTS (SELECT 1 FROM pgqueue.signals s
                            WHERE s.task_id = t.id AND s.name = t.waiting_for->>'signal')
            RETURNING t.queue
        )
        SELECT count(pg_notify('pgqueue_wakeup', q.queue)) INTO v_woken
          FROM (SELECT DISTINCT queue FROM woken) q;
    END IF;
    IF v_ended IS NULL THEN
        RETURN NULL;
    END IF;
    -- No edge anywhere (a queue that uses no dependencies: one read of an empty table), or
    -- none from the tasks that ended: nothing below them to change.
    IF NOT EXISTS (SELECT 1 FROM pgqueue.task_deps)
       OR NOT EXISTS (SELECT 1 FROM pgqueue.task_deps e WHERE e.depends_on = ANY(v_ended)) THEN
        IF v_webhooks THEN
            PERFORM pgqueue.webhooks_for(v_ended);
        END IF;
        RETURN NULL;
    END IF;

    -- the dependents, locked in id order before any is changed (see "Lock order" above)
    PERFORM pgqueue.lock_dependents(v_ended, v_doomed);
    WITH RECURSIVE gone AS (
        DELETE FROM pgqueue.task_deps e WHERE e.depends_on = ANY(v_ended)
        RETURNING e.task_id, e.depends_on
    ), hits AS (
        SELECT g.task_id,
               count(*) FILTER (WHERE d.status = 'completed') AS completed,
               (array_agg(g.depends_on) FILTER (WHERE d.status <> 'completed'))[1] AS failed
          FROM gone g JOIN new_rows d ON d.id = g.depends_on
         GROUP BY g.task_id
    ), doomed (task_id, dependency, root) AS (
        SELECT h.task_id, h.failed, h.failed FROM hits h WHERE h.failed IS NOT NULL
        UNION
        SELECT e.task_id, e.depends_on, x.root
          FROM doomed x JOIN pgqueue.task_deps e ON e.depends_on = x.task_id
    ), fate AS (
        SELECT a.task_id, sum(a.completed) AS completed,
               (array_agg(a.dependency) FILTER (WHERE a.dependency IS NOT NULL))[1] AS dependency,
               (array_agg(a.root) FILTER (WHERE a.root IS NOT NULL))[1] AS root
          FROM (SELECT h.task_id, h.completed, NULL::uuid AS dependency, NULL::uuid AS root
                  FROM hits h WHERE h.failed IS NULL
                UNION ALL
                SELECT x.task_id, 0, x.dependency, x.root FROM doomed x) a
         GROUP BY a.task_id
    ), changed AS (
        UPDATE pgqueue.tasks t
           SET status = CASE WHEN f.dependency IS NOT NULL THEN 'cancelled'
                             WHEN t.deps_left <= f.completed THEN 'pending'
                             ELSE 'blocked' END::pgqueue.task_status,
               deps_left = CASE WHEN f.dependency IS NOT NULL THEN t.deps_left
                                ELSE greatest(t.deps_left - f.completed, 0)::integer END,
               run_at = CASE WHEN f.dependency IS NULL AND t.deps_left <= f.completed
                             THEN greatest(t.run_at, now()) ELSE t.run_at END,
               completed_at = CASE WHEN f.dependency IS NOT NULL THEN now() END,
               error = CASE WHEN f.dependency IS NOT NULL THEN jsonb_build_object(
                           'type', 'dependency_failed', 'dependency', f.dependency,
                           'root', f.root, 'retryable', false,
                           'message', format('dependency %s did not complete', f.root))
                       ELSE t.error END,
               updated_at = now()
          FROM fate f
         WHERE t.id = f.task_id AND t.status = 'blocked'
        RETURNING t.queue, t.status
    )
    SELECT count(pg_notify('pgqueue_wakeup', q.queue)) INTO v_woken
      FROM (SELECT DISTINCT c.queue FROM changed c WHERE c.status = 'pending') q;

    IF v_webhooks THEN
        PERFORM pgqueue.webhooks_for(v_ended);
    END IF;
    RETURN NULL;
END
$$;

-- At commit, for a task inserted already final with a callback_url (migration 0014): its
-- webhook, as webhooks_for makes it for a task that ends later.
CREATE OR REPLACE FUNCTION pgqueue.on_task_inserted_final() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgqueue.webhooks_for(ARRAY[NEW.id]);
    RETURN NULL;
END
$$;

-- Webhooks (SPEC §13): one delivery task per final event of each ended task that has a
-- callback_url, in the reserved queue pgqueue.webhooks, recorded in webhook_deliveries (the
-- namespace no producer can write), so a statement re-run cannot deliver an event twice.
-- TimeZone UTC: the task snapshot renders its timestamps through to_jsonb, in the session's
-- zone otherwise, and no session setting sticks through PgBouncer (migration 0009).
CREATE OR REPLACE FUNCTION pgqueue.webhooks_for(p_ended uuid[]) RETURNS void
LANGUAGE plpgsql
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgqueue.tasks t
                    WHERE t.id = ANY(p_ended) AND t.callback_url IS NOT NULL) THEN
        RETURN;
    END IF;
    WITH finals AS (
        -- the task as it ended goes in the delivery: the handler needs no read (and no
        -- access to the task) to send it
        SELECT t.id AS task_id, t.callback_url, e.id AS event_id, e.event, to_jsonb(t) AS task,
               gen_random_uuid() AS delivery_id
          FROM pgqueue.tasks t
         CROSS JOIN LATERAL (
               -- a task inserted final (migration 0014) has only its 'created' row: the
               -- event it is delivered as is its status
               SELECT ev.id, CASE WHEN ev.event = 'created' THEN ev.status::text
                                  ELSE ev.event END AS event
                 FROM pgqueue.events ev
                WHERE ev.task_id = t.id
                  AND (ev.event IN ('completed', 'failed', 'cancelled')
                       OR (ev.event = 'created'
                           AND ev.status IN ('completed', 'failed', 'cancelled')))
                ORDER BY ev.id DESC LIMIT 1) e
         WHERE t.id = ANY(p_ended) AND t.callback_url IS NOT NULL
           AND t.status IN ('completed', 'failed', 'cancelled')
    ), recorded AS (
        INSERT INTO pgqueue.webhook_deliveries (task_id, event_id, delivery_id)
        SELECT f.task_id, f.event_id, f.delivery_id FROM finals f
        ON CONFLICT DO NOTHING
        RETURNING task_id, event_id, delivery_id
    )
    INSERT INTO pgqueue.tasks (id, queue, kind, payload, max_retries, backoff_base_s,
                               backoff_max_s, parent_id)
    SELECT r.delivery_id, 'pgqueue.webhooks', 'pgqueue.webhook',
           jsonb_build_object('task_id', r.task_id, 'event_id', r.event_id,
                              'event', f.event, 'url', f.callback_url, 'task', f.task),
           1000, 5, 3600, r.task_id
      FROM recorded r JOIN finals f USING (task_id, event_id);
END
$$;


-- Send a signal to a task (SPEC §11): store the payload (the first one of a name stands) and
-- make the task pending if it waits for that name. The task row is locked first, so a wait
-- being recorded at the same moment sees the signal (see on_tasks_finished). Returns the task
-- and whether this call stored the signal (false: a replay; `same` says if its payload was
-- identical). A terminal task, or one that does not exist, raises.
CREATE OR REPLACE FUNCTION pgqueue.send_signal(p_task_id uuid, p_name text, p_payload jsonb,
                                               OUT task pgqueue.tasks, OUT stored boolean,
                                               OUT same boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_prev jsonb;
    v_found boolean;
BEGIN
    SELECT t.* INTO task FROM pgqueue.tasks t WHERE t.id = p_task_id FOR UPDATE;
    IF task.id IS NULL THEN
        RAISE EXCEPTION 'task % does not exist', p_task_id
              USING ERRCODE = 'no_data_found', HINT = 'Check the id in pgqueue.tasks.';
    END IF;
    IF task.status IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'task % is % and cannot be signalled', p_task_id, task.status
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Only unfinished tasks take signals.';
    END IF;
    INSERT INTO pgqueue.signals (task_id, name, payload) VALUES (p_task_id, p_name, p_payload)
    ON CONFLICT DO NOTHING;
    stored := FOUND;
    IF NOT stored THEN
        SELECT s.payload INTO v_prev FROM pgqueue.signals s
         WHERE s.task_id = p_task_id AND s.name = p_name;
        same := v_prev IS NOT DISTINCT FROM p_payload;
        RETURN;
    END IF;
    same := true;
    IF task.status = 'waiting' AND task.waiting_for->>'signal' = p_name THEN
        UPDATE pgqueue.tasks t
           SET status = 'pending', run_at = now(), waiting_for = NULL, updated_at = now()
         WHERE t.id = p_task_id
        RETURNING t.* INTO task;
        PERFORM pg_notify('pgqueue_wakeup', task.queue);
    END IF;
END
$$;

-- The psql form (SPEC §7): pgqueue.signal(id, name, payload) returns the task. Sending the
-- same name again with another payload raises (the first payload stands).
CREATE OR REPLACE FUNCTION pgqueue.signal(task_id uuid, name text, payload jsonb DEFAULT NULL)
RETURNS pgqueue.tasks LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    SELECT * INTO v FROM pgqueue.send_signal(signal.task_id, signal.name, signal.payload) s;
    IF NOT v.same THEN
        RAISE EXCEPTION 'signal % was already sent to task % with another payload', name, task_id
              USING ERRCODE = 'unique_violation',
                    HINT = 'The first payload of a signal stands.';
    END IF;
    RETURN v.task;
END
$$;

-- Waits whose `until` passed (SPEC §11, the database clock): pending again, marked timed_out
-- in waiting_for so wait_for_signal raises SignalTimeout on the re-run. Called by the reaper
-- (pgqueue.reap). A range of tasks_waiting_until_idx: waiting tasks cost no poll of their own.
CREATE OR REPLACE FUNCTION pgqueue.wake_expired_waits() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_woken bigint;
BEGIN
    WITH expired AS (
        SELECT t.id FROM pgqueue.tasks t
         WHERE t.status = 'waiting' AND t.waiting_for ? 'until'
           AND pgqueue.wait_until(t.waiting_for) <= now()
           FOR UPDATE SKIP LOCKED
    ), woken AS (
        UPDATE pgqueue.tasks t
           SET status = 'pending', run_at = now(),
               waiting_for = t.waiting_for || '{"timed_out": true}', updated_at = now()
          FROM expired e WHERE t.id = e.id
        RETURNING t.queue
    ), notified AS (
        SELECT pg_notify('pgqueue_wakeup', q.queue) FROM (SELECT DISTINCT queue FROM woken) q
    )
    SELECT (SELECT count(*) FROM woken) + 0 * (SELECT count(*) FROM notified) INTO v_woken;
    RETURN v_woken;
END
$$;
