-- Queue controls for operators (and `pgqueue queue`, and the API): pause, resume, limit.
-- Settings live in pgqueue.queues; pgqueue.claim() reads them at every claim, so a change
-- applies to every worker at once, without a restart. A queue needs no row until it is set.

-- Stop claiming from a queue. Running tasks finish; pending ones wait.
CREATE OR REPLACE FUNCTION pgqueue.pause_queue(queue_name text)
RETURNS pgqueue.queues LANGUAGE sql AS $$
    INSERT INTO pgqueue.queues AS q (name, paused) VALUES (queue_name, true)
    ON CONFLICT (name) DO UPDATE SET paused = true, updated_at = now()
    RETURNING q.*
$$;

-- Claim from a queue again; idle workers of that queue are woken at once (NOTIFY).
CREATE OR REPLACE FUNCTION pgqueue.resume_queue(queue_name text)
RETURNS pgqueue.queues LANGUAGE sql AS $$
    WITH q AS (
        INSERT INTO pgqueue.queues AS q (name, paused) VALUES (queue_name, false)
        ON CONFLICT (name) DO UPDATE SET paused = false, updated_at = now()
        RETURNING q.*
    ), woken AS (
        SELECT pg_notify('pgqueue_wakeup', queue_name)
    )
    SELECT q.* FROM q, woken
$$;

-- At most max_running tasks of this queue run at once, across all workers (NULL: no limit).
-- Lowering a limit stops nothing that runs; new claims wait until the count is below it.
CREATE OR REPLACE FUNCTION pgqueue.set_queue_limit(queue_name text, max_running integer)
RETURNS pgqueue.queues LANGUAGE sql AS $$
    WITH q AS (
        INSERT INTO pgqueue.queues AS q (name, concurrency_limit) VALUES (queue_name, max_running)
        ON CONFLICT (name) DO UPDATE SET concurrency_limit = max_running, updated_at = now()
        RETURNING q.*
    ), woken AS (
        SELECT pg_notify('pgqueue_wakeup', queue_name)  -- a raised limit frees slots now
    )
    SELECT q.* FROM q, woken
$$;
