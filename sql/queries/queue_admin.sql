-- Queue settings (pause, resume, concurrency limit), by `pgqueue queue` and the API. The
-- rules live in sql/functions/operator.sql so psql users get the same behaviour.

-- name: queue_pause
SELECT name, concurrency_limit, paused, updated_at FROM pgqueue.pause_queue(%(queue)s);

-- name: queue_resume
SELECT name, concurrency_limit, paused, updated_at FROM pgqueue.resume_queue(%(queue)s);

-- name: queue_set_limit
-- %(limit)s NULL removes the limit.
SELECT name, concurrency_limit, paused, updated_at
  FROM pgqueue.set_queue_limit(%(queue)s, %(limit)s::integer);
