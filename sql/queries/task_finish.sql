-- Finish: record the outcome of an attempt. Every statement is fenced by the lease
-- (status running, same attempt, same worker): a worker that was presumed dead and
-- replaced cannot overwrite the work of its successor. A refused row is simply not returned.

-- name: task_complete_many
-- Complete a batch of tasks in one statement (the worker flushes completions together).
UPDATE pgqueue.tasks t
   SET status = 'completed', result = c.result, exit_code = c.exit_code,
       usage = pgqueue.usage_add(t.usage, c.usage), progress = coalesce(c.progress, t.progress),
       completed_at = now(), updated_at = now(), worker_id = NULL, heartbeat_at = NULL
  FROM jsonb_to_recordset(%(items)s::jsonb)
       AS c(id uuid, attempt integer, worker_id text, result jsonb, usage jsonb, exit_code integer,
            progress jsonb)
 WHERE t.id = c.id AND t.status = 'running' AND t.attempts = c.attempt AND t.worker_id = c.worker_id
RETURNING t.id;

-- name: task_fail
-- Record a failed attempt. Retryable with attempts left: back to pending, due after the
-- backoff (or the delay the handler asked for). Otherwise: failed for good.
UPDATE pgqueue.tasks t
   SET status = CASE WHEN %(retryable)s AND t.attempts <= t.max_retries
                     THEN 'pending' ELSE 'failed' END::pgqueue.task_status,
       run_at = CASE WHEN %(retryable)s AND t.attempts <= t.max_retries
                     THEN now() + make_interval(secs => coalesce(
                              %(retry_in_s)s::float8,
                              pgqueue.backoff_s(t.attempts,
                                                coalesce(t.backoff_base_s, %(backoff_base_s)s::float8),
                                                coalesce(t.backoff_max_s, %(backoff_max_s)s::float8))))
                     ELSE t.run_at END,
       completed_at = CASE WHEN %(retryable)s AND t.attempts <= t.max_retries
                           THEN NULL ELSE now() END,
       error = %(error)s::jsonb, exit_code = %(exit_code)s::integer,
       usage = pgqueue.usage_add(t.usage, %(usage)s::jsonb),
       updated_at = now(), worker_id = NULL, heartbeat_at = NULL
 WHERE t.id = %(id)s AND t.status = 'running' AND t.attempts = %(attempt)s
   AND t.worker_id = %(worker_id)s
RETURNING t.*;

-- name: task_cancelled
-- The worker stopped a task whose cancel was requested.
UPDATE pgqueue.tasks t
   SET status = 'cancelled', completed_at = now(), usage = pgqueue.usage_add(t.usage, %(usage)s::jsonb),
       error = %(error)s::jsonb, updated_at = now(), worker_id = NULL, heartbeat_at = NULL
 WHERE t.id = %(id)s AND t.status = 'running' AND t.attempts = %(attempt)s
   AND t.worker_id = %(worker_id)s
RETURNING t.*;

-- name: task_release_many
-- Graceful shutdown: hand unfinished tasks back, due now, without spending an attempt
-- (attempts - 1: a redeploy must not burn retries). The error is left as it was, which
-- makes the event 'requeued'.
UPDATE pgqueue.tasks t
   SET status = 'pending', attempts = t.attempts - 1, run_at = now(),
       usage = pgqueue.usage_add(t.usage, r.usage),
       updated_at = now(), worker_id = NULL, heartbeat_at = NULL
  FROM jsonb_to_recordset(%(items)s::jsonb) AS r(id uuid, attempt integer, usage jsonb)
 WHERE t.id = r.id AND t.status = 'running' AND t.attempts = r.attempt
   AND t.worker_id = %(worker_id)s
RETURNING t.id;
