-- Finish: record how attempts ended. One statement for every outcome (pgqueue/outcomes.py),
-- called only through pgqueue.db.transitions.finish_many by the local worker's outbox and the
-- remote-worker endpoints alike, so the rules below exist once.

-- name: task_finish_many
-- Apply a batch of outcomes, any mix of completed, failed, cancelled and released, in one
-- round trip. Each row is fenced by its lease (status running, same attempt, same worker; and,
-- for a remote worker, the worker row must belong to the caller's token): a worker that was
-- presumed dead and replaced cannot overwrite its successor's work. A refused row is simply
-- not returned.
--
-- The final status is decided here, once, from the row as it is when locked:
--   completed                            -> completed (a completion that lands first wins)
--   stopped by a budget (SPEC §12)       -> failed, error budget_exceeded (not retried)
--   cancel requested, or cancelled       -> cancelled (a cancel wins over retry and release)
--   released                             -> pending, due now, the attempt given back
--   waiting (SPEC §11)                   -> waiting for the signal o.signal, until now() +
--                                           o.wait_s if given, the attempt given back (the
--                                           trigger makes it pending at once when that signal
--                                           was sent meanwhile: sql/functions/workflows.sql)
--   failed, retryable, attempts left     -> pending after retry_in_s or the backoff
--   otherwise                            -> failed
-- The fate is computed in a sub-select of the SET so that every column derived from it reads
-- the same decision, evaluated on the locked row (a cancel committed while this statement
-- waited for the row lock is seen: READ COMMITTED re-evaluates the SET on the new version).
UPDATE pgqueue.tasks t
   SET (status, attempts, run_at, completed_at, error, result, exit_code, waiting_for) = (
           SELECT f.status,
                  -- a redeploy must not burn retries: a release gives the attempt back
                  CASE WHEN o.outcome = 'released' AND f.status = 'pending'
                       THEN t.attempts - 1
                       -- a wait never uses up a retry (SPEC §11)
                       WHEN f.status = 'waiting' THEN t.attempts - 1
                       ELSE t.attempts END,
                  CASE WHEN f.status <> 'pending' THEN t.run_at
                       WHEN o.outcome = 'released' THEN now()
                       ELSE now() + make_interval(secs => coalesce(
                                o.retry_in_s,
                                pgqueue.backoff_s(t.attempts,
                                                  coalesce(t.backoff_base_s, o.backoff_base_s),
                                                  coalesce(t.backoff_max_s, o.backoff_max_s))))
                  END,
                  CASE WHEN f.status IN ('pending', 'waiting') THEN NULL ELSE now() END,
                  CASE WHEN f.status IN ('completed', 'waiting') THEN t.error
                       -- a release leaves the error as it was, which makes the event 'requeued'
                       WHEN f.status = 'pending' AND o.outcome = 'released' THEN t.error
                       -- the budget stop's error (pgqueue.budget_stop) is the final one
                       WHEN f.budget_stop THEN
                            t.error || CASE WHEN o.outcome = 'failed'
                                            THEN jsonb_build_object('attempt_error', o.error)
                                            ELSE '{}'::jsonb END
                       -- a cancelled task says so; a failure that lost to the cancel is kept
                       WHEN f.status = 'cancelled' THEN
                            jsonb_build_object('type', 'cancelled', 'message', 'cancel requested',
                                               'retryable', false)
                            || CASE WHEN o.outcome = 'failed'
                                    THEN jsonb_build_object('attempt_error', o.error)
                                    ELSE '{}'::jsonb END
                       ELSE o.error
                  END,
                  CASE WHEN f.status = 'completed' THEN o.result ELSE t.result END,
                  CASE WHEN o.outcome IN ('completed', 'failed') THEN o.exit_code
                       ELSE t.exit_code END,
                  CASE WHEN f.status <> 'waiting' THEN NULL
                       WHEN o.wait_s IS NULL THEN jsonb_build_object('signal', o.signal)
                       ELSE jsonb_build_object('signal', o.signal, 'until',
                                               now() + make_interval(secs => o.wait_s))
                  END
             FROM (SELECT b.budget_stop, CASE
                        WHEN o.outcome = 'completed' THEN 'completed'
                        -- a user who reached a budget: their running tasks were asked to
                        -- stop and end failed; a user's own cancel clears the mark
                        WHEN b.budget_stop THEN 'failed'
                        WHEN o.outcome = 'cancelled' OR t.cancel_requested THEN 'cancelled'
                        WHEN o.outcome = 'released' THEN 'pending'
                        WHEN o.outcome = 'waiting' THEN 'waiting'
                        WHEN o.outcome = 'failed' AND o.retryable AND t.attempts <= t.max_retries
                             THEN 'pending'
                        ELSE 'failed'
                   END::pgqueue.task_status AS status
                     FROM (SELECT o.outcome <> 'completed' AND t.cancel_requested
                                  AND t.error->>'type' = 'budget_exceeded' AS budget_stop) b) f),
       usage = pgqueue.usage_add(t.usage, o.usage),
       updated_at = now(), worker_id = NULL, heartbeat_at = NULL
  FROM jsonb_to_recordset(%(items)s::jsonb)
       AS o(id uuid, attempt integer, worker_id text, outcome text, result jsonb, error jsonb,
            retryable boolean, retry_in_s float8, backoff_base_s float8, backoff_max_s float8,
            exit_code integer, usage jsonb, signal text, wait_s float8)
-- `status::text`: each row is found by its primary key, one probe per outcome. Written
-- `t.status = 'running'`, the fence matched tasks_running_idx's predicate and the planner
-- hash-joined a bitmap scan of that whole index: every running entry of every worker, and,
-- with autovacuum behind (a long drain), every dead one left by the finished tasks too
-- (docs/benchmarks.md, issue 15).
 WHERE t.id = o.id AND t.status::text = 'running' AND t.attempts = o.attempt
   AND t.worker_id = o.worker_id
   AND (%(token_id)s::bigint IS NULL
        OR EXISTS (SELECT 1 FROM pgqueue.workers w
                    WHERE w.id = t.worker_id AND w.token_id = %(token_id)s::bigint))
RETURNING t.id, t.status::text;

-- name: task_lease_state
-- Why a fenced statement touched no row: does the task exist, and who holds it.
SELECT status::text, attempts, worker_id FROM pgqueue.tasks WHERE id = %(id)s;
