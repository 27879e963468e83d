-- The worker hot path: pgqueue.claim(), the one statement every claim runs (local workers
-- through sql/queries/task_claim.sql, remote ones through the same query over HTTP). Apart
-- from the operator API (tasks.sql) so a change to one is read without the other.
-- Re-applied by `pgqueue migrate` after the migrations (CREATE OR REPLACE), so this file is the
-- one place it is defined. A signature change needs a DROP in a migration first. Its body is
-- plpgsql, resolved when first run: the limits functions it calls (limits.sql, applied after
-- this file) need not exist yet when it is created.

-- Claim up to p_limit due tasks for one worker, in claim order (priority desc, run_at, seq),
-- only of kinds it can run, skipping rows other claimers hold (SKIP LOCKED: claims never
-- wait for each other's rows). p_kinds NULL: any kind (remote workers that do not list theirs).
--
-- Plans: plpgsql re-planned the claim for every call (a custom plan per p_limit and queue
-- list), which was most of an idle claim's time. A generic plan is planned once per
-- connection. Each branch only picks the due rows; one UPDATE starts them, by
-- `id = ANY(v_ids)`, an index probe per id whatever the estimate (joined to the due rows, the
-- generic plan hash-joined a sequential scan of the whole table, slower as the table grows).
-- No JIT: the generic plan cannot know p_limit and costs the due-row scan as if it read a
-- tenth of the backlog, so once the table holds ~100,000 pending rows its estimate passes
-- jit_above_cost and every claim compiled its expressions again (JIT code is not cached
-- with the plan) for an index scan that stops after p_limit rows: most of a claim's time in
-- a big table (docs/benchmarks.md, issue 15).
--
-- Limits (SPEC §12) are enforced here, across all workers, by rules defined once in
-- sql/functions/limits.sql (pgqueue.why() explains a task with the same rules). A claim whose
-- queues set no limit while no user has limits takes the fast path, which reads one settings
-- row and nothing else of the limits.
CREATE OR REPLACE FUNCTION pgqueue.claim(p_worker_id text, p_queues text[], p_kinds text[],
                                         p_limit integer)
RETURNS SETOF pgqueue.tasks LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off  -- see above
AS $$
DECLARE
    v_restricted text[];
    v_users boolean;
    v_ids uuid[];  -- the due tasks this claim locked, then starts
    -- the limited path
    v_held text[] := '{}';      -- owners over budget: none of their tasks start
    v_capped boolean := false;  -- some owner with max_running has due tasks here
    v_q pgqueue.queues;
    v_name text;
    v_room integer;
    v_closed text[];            -- kinds whose breaker is open, or whose probe runs
    v_half_open text[];         -- kinds whose breaker lets one probe start
    v_probes uuid[] := '{}';
    v_got uuid[];
    v_got_priority integer[];
    v_got_rank bigint[];
    v_all uuid[] := '{}';
    v_all_priority integer[] := '{}';
    v_all_rank bigint[] := '{}';
    v_got_owners text[];
    v_owners text[] := '{}';    -- owners of what this claim took so far (max_running)
BEGIN
    SELECT (SELECT array_agg(q.name ORDER BY q.name) FROM pgqueue.queues q
             WHERE q.name = ANY(p_queues) AND q.limited),
           EXISTS (SELECT 1 FROM pgqueue.user_limits)
      INTO v_restricted, v_users;

    IF v_restricted IS NULL AND NOT v_users THEN
        -- Fast path, the common case. Each queue is scanned on its own (LATERAL, queue = name)
        -- so tasks_claim_idx yields rows already in claim order and the scan stops at the
        -- limit; `queue = ANY(array)` made the planner sort the whole backlog instead (a
        -- claim's cost then grew with the backlog; this way it does not).
        SELECT array_agg(c.id) INTO v_ids FROM (
            SELECT d.id
              FROM unnest(p_queues) AS q(name)
             CROSS JOIN LATERAL (
                   SELECT t.id, t.priority, t.run_at, t.seq FROM pgqueue.tasks t
                    WHERE t.status = 'pending' AND t.queue = q.name AND t.run_at <= now()
                      AND (p_kinds IS NULL OR t.kind = ANY(p_kinds))
                    ORDER BY t.priority DESC, t.run_at, t.seq
                    LIMIT p_limit
                      FOR UPDATE SKIP LOCKED) d
             ORDER BY d.priority DESC, d.run_at, d.seq
             LIMIT p_limit) c;
    ELSE
        -- Limited path. Claimers of one limited queue take turns on its settings row (held until
        -- this claim commits, a fraction of a millisecond), so each counts what the one before it
        -- started: running tasks, the rate ring, the breaker's probe. Claimers of other queues do
        -- not wait. Lock order: queue rows by name, then capped users by id.
        PERFORM 1 FROM pgqueue.queues q
          WHERE q.name = ANY(v_restricted) AND NOT q.paused ORDER BY q.name FOR UPDATE;
        IF v_users THEN
            v_held := pgqueue.users_over_budget();
            -- max_running holds across queues: lock the capped owners this claim could start.
            PERFORM 1 FROM pgqueue.user_limits u
              WHERE u.max_running IS NOT NULL
                AND EXISTS (SELECT 1 FROM unnest(p_queues) AS q(name)
                             CROSS JOIN LATERAL (
                                   SELECT 1 FROM pgqueue.tasks t
                                    WHERE t.status = 'pending' AND t.queue = q.name
                                      AND t.user_id = u.user_id AND t.run_at <= now()
                                    LIMIT 1) d)
              ORDER BY u.user_id FOR UPDATE;
            v_capped := FOUND;
        END IF;

        -- Each statement below runs with a fresh snapshot (plpgsql, READ COMMITTED): it sees what
        -- the previous holder of the locks above committed.
        FOR v_name IN SELECT n.name FROM unnest(p_queues) WITH ORDINALITY AS n(name, i) ORDER BY n.i
        LOOP
            v_q := NULL;
            SELECT q.* INTO v_q FROM pgqueue.queues q WHERE q.name = v_name;
            CONTINUE WHEN coalesce(v_q.paused, false);
            v_room := p_limit;
            IF v_q.limited THEN
                SELECT least(p_limit, r.concurrency_free, r.rate_free) INTO v_room
                  FROM pgqueue.queue_room(v_q) r;
            END IF;
            CONTINUE WHEN v_room <= 0;

            v_closed := '{}';
            v_half_open := '{}';
            IF v_q.breaker_failures IS NOT NULL THEN
                SELECT coalesce(array_agg(b.kind) FILTER (WHERE s.state IN ('open', 'probing')), '{}'),
                       coalesce(array_agg(b.kind) FILTER (WHERE s.state = 'half_open'), '{}')
                  INTO v_closed, v_half_open
                  FROM pgqueue.breakers b
                 CROSS JOIN LATERAL (SELECT pgqueue.breaker_state(b) AS state) s
                 WHERE b.queue = v_name AND b.open_until IS NOT NULL;
            END IF;
            IF cardinality(v_half_open) > 0 THEN
                -- One probe per half-open kind; the rest of that kind waits for its outcome.
                SELECT array_agg(p.id), array_agg(p.priority), array_agg(0::bigint)
                  INTO v_got, v_got_priority, v_got_rank
                  FROM (SELECT d.id, d.priority FROM unnest(v_half_open) AS k(kind)
                         CROSS JOIN LATERAL (
                               SELECT t.id, t.priority FROM pgqueue.tasks t
                                WHERE t.status = 'pending' AND t.queue = v_name
                                  AND t.kind = k.kind AND t.run_at <= now()
                                  AND (p_kinds IS NULL OR t.kind = ANY(p_kinds))
                                  AND (t.user_id IS NULL OR t.user_id <> ALL(v_held))
                                ORDER BY t.priority DESC, t.run_at, t.seq
                                LIMIT 1
                                  FOR UPDATE SKIP LOCKED) d
                         LIMIT v_room) p;
                IF v_got IS NOT NULL THEN
                    v_probes := v_probes || v_got;
                    v_all := v_all || v_got;
                    v_all_priority := v_all_priority || v_got_priority;
                    v_all_rank := v_all_rank || v_got_rank;
                    v_room := v_room - cardinality(v_got);
                END IF;
                v_closed := v_closed || v_half_open;
                CONTINUE WHEN v_room <= 0;
            END IF;

            v_got := NULL;
            IF coalesce(v_q.fair, false) OR v_q.per_user_concurrency IS NOT NULL OR v_capped THEN
                -- Per owner: find the owners of this queue's backlog by skipping through
                -- tasks_user_claim_idx (one probe per owner), take each one's first due tasks up
                -- to what its caps allow, then order them: by priority, then (fair) by how many
                -- the owner would have running, then in claim order. Each owner contributes about
                -- its share of the room, so a 100,000-task owner costs what a 1-task owner does.
                WITH RECURSIVE owners(user_id) AS (
                    (SELECT t.user_id FROM pgqueue.tasks t
                      WHERE t.status = 'pending' AND t.queue = v_name AND t.user_id IS NOT NULL
                      ORDER BY t.user_id LIMIT 1)
                    UNION ALL
                    SELECT (SELECT t.user_id FROM pgqueue.tasks t
                             WHERE t.status = 'pending' AND t.queue = v_name
                               AND t.user_id > o.user_id
                             ORDER BY t.user_id LIMIT 1)
                      FROM owners o WHERE o.user_id IS NOT NULL
                ), room AS MATERIALIZED (
                    SELECT o.user_id, coalesce(r.in_queue, 0) AS in_queue,
                           CASE WHEN o.user_id IS NULL THEN v_room  -- no owner: no per-user cap
                                ELSE coalesce(pgqueue.user_room(
                                         v_q.per_user_concurrency, r.in_queue, l.max_running,
                                         -- with what this claim took from the queues before
                                         coalesce(r.total, 0) + (SELECT count(*) FROM unnest(v_owners) w
                                                                  WHERE w = o.user_id),
                                         o.user_id = ANY(v_held)), v_room)
                           END AS free
                      FROM (SELECT w.user_id FROM owners w WHERE w.user_id IS NOT NULL
                            UNION ALL
                            SELECT NULL WHERE EXISTS (  -- the tasks without an owner, as one
                                SELECT 1 FROM pgqueue.tasks t
                                 WHERE t.status = 'pending' AND t.queue = v_name
                                   AND t.user_id IS NULL)) o
                      LEFT JOIN pgqueue.user_running(v_name) r ON r.user_id = o.user_id
                      LEFT JOIN pgqueue.user_limits l ON l.user_id = o.user_id
                ), shares AS (
                    SELECT m.user_id, m.in_queue, f.served_at,
                           least(m.free, v_room,
                                 2 * greatest(1, ceil(v_room::numeric / count(*) OVER ()))::integer
                                 + CASE WHEN v_q.fair THEN (max(m.in_queue) OVER () - m.in_queue)::integer
                                        ELSE 0 END) AS take
                      FROM room m
                      LEFT JOIN pgqueue.fair_turns f
                             ON v_q.fair AND f.queue = v_name AND f.user_id = coalesce(m.user_id, '')
                     WHERE m.free > 0
                ), picked AS (
                    SELECT d.id, d.priority, d.run_at, d.seq, s.served_at, s.user_id,
                           CASE WHEN v_q.fair
                                THEN s.in_queue + row_number() OVER (
                                         PARTITION BY s.user_id
                                         ORDER BY d.priority DESC, d.run_at, d.seq)
                                ELSE 0 END AS load
                      FROM shares s
                     CROSS JOIN LATERAL (
                           -- (FOR UPDATE may not sit in a UNION member itself: hence the wrappers)
                           SELECT * FROM (SELECT t.id, t.priority, t.run_at, t.seq FROM pgqueue.tasks t
                             WHERE t.status = 'pending' AND t.queue = v_name AND t.run_at <= now()
                               AND t.user_id = s.user_id
                               AND (p_kinds IS NULL OR t.kind = ANY(p_kinds))
                               AND t.kind <> ALL(v_closed)
                             ORDER BY t.priority DESC, t.run_at, t.seq
                             LIMIT s.take
                               FOR UPDATE SKIP LOCKED) mine
                           UNION ALL
                           SELECT * FROM (SELECT t.id, t.priority, t.run_at, t.seq FROM pgqueue.tasks t
                             WHERE s.user_id IS NULL
                               AND t.status = 'pending' AND t.queue = v_name AND t.run_at <= now()
                               AND t.user_id IS NULL
                               AND (p_kinds IS NULL OR t.kind = ANY(p_kinds))
                               AND t.kind <> ALL(v_closed)
                             ORDER BY t.priority DESC, t.run_at, t.seq
                             LIMIT s.take
                               FOR UPDATE SKIP LOCKED) ownerless) d
                ), chosen AS (
                    SELECT p.id, p.priority, p.user_id,
                           row_number() OVER (ORDER BY p.priority DESC, p.load,
                                                       p.served_at NULLS FIRST, p.run_at, p.seq) AS rank
                      FROM picked p
                     ORDER BY p.priority DESC, p.load, p.served_at NULLS FIRST, p.run_at, p.seq
                     LIMIT v_room
                )
                SELECT array_agg(c.id ORDER BY c.rank), array_agg(c.priority ORDER BY c.rank),
                       array_agg(c.rank ORDER BY c.rank), array_agg(c.user_id)
                  INTO v_got, v_got_priority, v_got_rank, v_got_owners
                  FROM chosen c;
                v_owners := v_owners || coalesce(v_got_owners, '{}');
            ELSE
                SELECT array_agg(d.id), array_agg(d.priority),
                       array_agg(d.rank)
                  INTO v_got, v_got_priority, v_got_rank
                  FROM (SELECT x.id, x.priority, row_number() OVER () AS rank FROM (
                        SELECT t.id, t.priority FROM pgqueue.tasks t
                         WHERE t.status = 'pending' AND t.queue = v_name AND t.run_at <= now()
                           AND (p_kinds IS NULL OR t.kind = ANY(p_kinds))
                           AND t.kind <> ALL(v_closed)
                           AND (t.user_id IS NULL OR t.user_id <> ALL(v_held))
                         ORDER BY t.priority DESC, t.run_at, t.seq
                         LIMIT v_room
                           FOR UPDATE SKIP LOCKED) x) d;
            END IF;
            IF v_got IS NOT NULL THEN
                v_all := v_all || v_got;
                v_all_priority := v_all_priority || v_got_priority;
                v_all_rank := v_all_rank || v_got_rank;
            END IF;
        END LOOP;

        -- Across queues: by priority, then each queue's own order taken in turn.
        SELECT array_agg(c.id) INTO v_ids FROM (
            SELECT a.id FROM unnest(v_all, v_all_priority, v_all_rank) AS a(id, priority, rank)
             ORDER BY a.priority DESC, a.rank
             LIMIT p_limit) c;

    END IF;

    -- The rows stay locked (FOR UPDATE above) until this transaction ends; start them all.
    RETURN QUERY
    WITH claimed AS (
        UPDATE pgqueue.tasks t
           SET status = 'running', attempts = t.attempts + 1, worker_id = p_worker_id,
               started_at = now(), heartbeat_at = now(), updated_at = now()
         WHERE t.id = ANY(v_ids)
        RETURNING t.*
    )
    SELECT * FROM claimed ORDER BY priority DESC, run_at, seq;  -- claim order, as promised
    IF v_restricted IS NULL OR v_ids IS NULL THEN
        RETURN;  -- no limited queue asked (its bookkeeping below reads nothing then)
    END IF;

    -- What the limits remember of these starts (the rows of the limited queues are locked by
    -- us; the started tasks are read back by id, visible to this statement).
    -- rate-limited queues remember their last N starts
    UPDATE pgqueue.queues q
       SET rate_starts = (SELECT array_agg(s.at ORDER BY s.at) FROM (
                              SELECT r.at FROM unnest(q.rate_starts || array_fill(now(), ARRAY[n.started::integer])) AS r(at)
                               ORDER BY r.at DESC LIMIT q.rate_limit_tasks) s)
      FROM (SELECT c.queue, count(*) AS started FROM pgqueue.tasks c
             WHERE c.id = ANY(v_ids) GROUP BY c.queue) n
     WHERE q.name = n.queue AND q.rate_limit_tasks IS NOT NULL;
    -- fair queues remember when each owner was served (the tie-break above)
    INSERT INTO pgqueue.fair_turns AS f (queue, user_id, served_at)
    SELECT c.queue, coalesce(c.user_id, ''), now()
      FROM pgqueue.tasks c JOIN pgqueue.queues q ON q.name = c.queue AND q.fair
     WHERE c.id = ANY(v_ids)
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (queue, user_id) DO UPDATE SET served_at = excluded.served_at;
    -- a probe holds its breaker half-open: no other task of its kind starts meanwhile
    IF cardinality(v_probes) > 0 THEN
        UPDATE pgqueue.breakers b
           SET probe_id = c.id, probe_attempt = c.attempts, updated_at = now()
          FROM pgqueue.tasks c
         WHERE c.id = ANY(v_probes) AND b.queue = c.queue AND b.kind = c.kind;
    END IF;
END
$$;
