-- Maintenance while tasks run: heartbeats, progress, checkpoints, the reaper, retention.

-- name: task_heartbeat_many
-- Refresh the heartbeat of the tasks a worker runs. Returns the ones it still holds with
-- their cancel flag: a task missing from the answer was reaped and must be abandoned; a set
-- flag is the polling fallback for a missed cancel NOTIFY. Only heartbeat_at changes, an
-- unindexed column, so these updates are HOT.
-- A row another transaction holds right now is skipped, not waited for: the finish of the
-- same worker ends these rows in its own order, so a heartbeat waiting for one of them while
-- holding others deadlocked with it (sql/functions/workflows.sql, "Lock order"). A skipped
-- row is answered from the last committed state (the lease as it stands; a cancel being
-- flagged is seen by the next beat), so the worker keeps it; its heartbeat_at is refreshed
-- by the next beat. The holder is brief (a finish, a cancel, a producer's FOR SHARE of a
-- dependency) or the reaper, whose requeue the next beat reports as a loss.
WITH beat AS (
    UPDATE pgqueue.tasks t
       SET heartbeat_at = now(), updated_at = now()
      FROM (SELECT l.id FROM pgqueue.tasks l
              JOIN unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS h(id, attempt)
                ON l.id = h.id
             WHERE l.status = 'running' AND l.attempts = h.attempt
               AND l.worker_id = %(worker_id)s
               FOR NO KEY UPDATE OF l SKIP LOCKED) mine
     WHERE t.id = mine.id
    RETURNING t.id, t.cancel_requested
)
SELECT b.id, b.cancel_requested FROM beat b
UNION ALL
SELECT t.id, t.cancel_requested
  FROM pgqueue.tasks t
  JOIN unnest(%(ids)s::uuid[], %(attempts)s::integer[]) AS h(id, attempt) ON t.id = h.id
 WHERE t.status = 'running' AND t.attempts = h.attempt AND t.worker_id = %(worker_id)s
   AND t.id NOT IN (SELECT b.id FROM beat b);

-- name: task_progress
-- Save progress (also a heartbeat). Returns the cancel flag; no row means the lease is stale.
UPDATE pgqueue.tasks t
   SET progress = %(progress)s::jsonb, heartbeat_at = now(), updated_at = now()
 WHERE t.id = %(id)s AND t.status = 'running' AND t.attempts = %(attempt)s
   AND t.worker_id = %(worker_id)s
RETURNING t.cancel_requested;

-- name: task_checkpoint
-- Save a checkpoint a later attempt resumes from (also a heartbeat).
UPDATE pgqueue.tasks t
   SET checkpoint = jsonb_build_object('token', %(token)s::text, 'data', %(data)s::jsonb,
                                       'saved_at', pgqueue.utc_text(now())),
       heartbeat_at = now(), updated_at = now()
 WHERE t.id = %(id)s AND t.status = 'running' AND t.attempts = %(attempt)s
   AND t.worker_id = %(worker_id)s
RETURNING t.cancel_requested;

-- name: task_report
-- A remote worker's heartbeat over HTTP: any of progress, checkpoint and a usage delta.
-- Fenced like task_finish_many: the lease, and the token the worker claimed with.
UPDATE pgqueue.tasks t
   SET progress = coalesce(%(progress)s::jsonb, t.progress),
       checkpoint = CASE WHEN %(checkpoint)s::jsonb IS NULL THEN t.checkpoint
                         ELSE jsonb_build_object('token', %(checkpoint)s::jsonb->'token',
                                                 'data', %(checkpoint)s::jsonb->'data',
                                                 'saved_at', pgqueue.utc_text(now())) END,
       usage = pgqueue.usage_add(t.usage, %(usage)s::jsonb),
       heartbeat_at = now(), updated_at = now()
 WHERE t.id = %(id)s AND t.status = 'running' AND t.attempts = %(attempt)s
   AND t.worker_id = %(worker_id)s
   AND (%(token_id)s::bigint IS NULL
        OR EXISTS (SELECT 1 FROM pgqueue.workers w
                    WHERE w.id = t.worker_id AND w.token_id = %(token_id)s::bigint))
RETURNING t.cancel_requested;

-- name: task_reap
-- Requeue, fail or cancel running tasks whose worker stopped heartbeating (pgqueue.reap).
SELECT * FROM pgqueue.reap(make_interval(secs => %(stall_s)s::float8));

-- name: task_purge_batch
-- Retention: delete up to %(limit)s finished tasks older than %(older_than_s)s seconds, and
-- their events. Small batches keep each transaction short (no long locks, little WAL at once);
-- the caller loops until a batch comes back short.
WITH gone AS (
    DELETE FROM pgqueue.tasks t
     WHERE t.id IN (SELECT id FROM pgqueue.tasks
                     WHERE completed_at < now() - make_interval(secs => %(older_than_s)s::float8)
                     ORDER BY completed_at
                     LIMIT %(limit)s
                       FOR UPDATE SKIP LOCKED)
    RETURNING t.id
), gone_events AS (
    DELETE FROM pgqueue.events e USING gone WHERE e.task_id = gone.id
)
SELECT count(*) FROM gone;

-- name: worker_register
-- A worker process announces itself (and again after a reconnect).
INSERT INTO pgqueue.workers (id, host, pid, queues, kinds, concurrency)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::text[], %(kinds)s::text[], %(concurrency)s)
ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = now(), queues = excluded.queues, kinds = excluded.kinds,
       concurrency = excluded.concurrency;

-- name: worker_heartbeat
-- The worker's own heartbeat row; re-created if the reaper deleted it during an outage. A
-- remote worker's row records the token it claims with (NULL for local workers); a row held
-- by another token is left alone and no row is returned: that worker id is taken.
INSERT INTO pgqueue.workers (id, host, pid, queues, kinds, concurrency, running, token_id)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::text[], %(kinds)s::text[], %(concurrency)s,
        %(running)s, %(token_id)s::bigint)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), running = excluded.running
 WHERE pgqueue.workers.token_id IS NOT DISTINCT FROM excluded.token_id
RETURNING id;

-- name: worker_remove
-- A worker that shut down cleanly leaves no heartbeat row behind.
DELETE FROM pgqueue.workers WHERE id = %(id)s;
