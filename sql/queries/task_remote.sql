-- The remote-worker protocol (HTTP claim / heartbeat / complete / fail / release). Most
-- statements are shared with local workers (task_claim.sql, task_finish.sql,
-- task_maintain.sql); these are the few only the HTTP side needs.

-- name: task_claim_remote
-- Claim for a worker that may not list its kinds (%(kinds)s NULL: any kind). The kinds are then
-- those of the first %(limit)s due tasks in claim order (read through tasks_claim_idx, so no
-- scan of the backlog); pgqueue.claim() then locks and claims with SKIP LOCKED as usual.
SELECT * FROM pgqueue.claim(
    %(worker_id)s, %(queues)s::text[],
    coalesce(%(kinds)s::text[],
             (SELECT coalesce(array_agg(DISTINCT d.kind), '{}')
                FROM (SELECT kind FROM pgqueue.tasks
                       WHERE status = 'pending' AND queue = ANY(%(queues)s::text[])
                         AND run_at <= now()
                       ORDER BY priority DESC, run_at, seq
                       LIMIT %(limit)s) d)),
    %(limit)s);

-- name: worker_touch
-- A remote worker busy with tasks does not claim; its task heartbeats keep its row alive.
UPDATE pgqueue.workers SET heartbeat_at = now() WHERE id = %(id)s;

-- name: task_lease_state
-- Why a fenced statement touched no row: does the task exist, and who holds it.
SELECT status::text, attempts, worker_id FROM pgqueue.tasks WHERE id = %(id)s;
