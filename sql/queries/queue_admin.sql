-- Queue settings (pause, resume, concurrency limit, and the §12 limits), by `pgqueue queue`
-- and the API. The rules live in sql/functions/operator.sql and limits.sql so psql users get
-- the same behaviour. Every statement returns the settings row in the same columns
-- (QueueSettings).

-- name: queue_pause
SELECT name, concurrency_limit, paused, updated_at, rate_limit_tasks, rate_limit_per_s,
       per_user_concurrency, fair, breaker_failures, breaker_cool_down_s
  FROM pgqueue.pause_queue(%(queue)s);

-- name: queue_resume
SELECT name, concurrency_limit, paused, updated_at, rate_limit_tasks, rate_limit_per_s,
       per_user_concurrency, fair, breaker_failures, breaker_cool_down_s
  FROM pgqueue.resume_queue(%(queue)s);

-- name: queue_set_limit
-- %(limit)s NULL removes the limit.
SELECT name, concurrency_limit, paused, updated_at, rate_limit_tasks, rate_limit_per_s,
       per_user_concurrency, fair, breaker_failures, breaker_cool_down_s
  FROM pgqueue.set_queue_limit(%(queue)s, %(limit)s::integer);

-- name: queue_set_rate_limit
-- At most %(tasks)s starts in any %(per_s)s-second window; both NULL remove it.
SELECT name, concurrency_limit, paused, updated_at, rate_limit_tasks, rate_limit_per_s,
       per_user_concurrency, fair, breaker_failures, breaker_cool_down_s
  FROM pgqueue.set_rate_limit(%(queue)s, %(tasks)s::integer, %(per_s)s::float8);

-- name: queue_set_per_user_concurrency
SELECT name, concurrency_limit, paused, updated_at, rate_limit_tasks, rate_limit_per_s,
       per_user_concurrency, fair, breaker_failures, breaker_cool_down_s
  FROM pgqueue.set_per_user_concurrency(%(queue)s, %(limit)s::integer);

-- name: queue_set_fair
SELECT name, concurrency_limit, paused, updated_at, rate_limit_tasks, rate_limit_per_s,
       per_user_concurrency, fair, breaker_failures, breaker_cool_down_s
  FROM pgqueue.set_fair(%(queue)s, %(fair)s::boolean);

-- name: queue_set_circuit_breaker
-- After %(failures)s failed attempts in a row of one kind, pause that kind %(cool_down_s)s s.
SELECT name, concurrency_limit, paused, updated_at, rate_limit_tasks, rate_limit_per_s,
       per_user_concurrency, fair, breaker_failures, breaker_cool_down_s
  FROM pgqueue.set_circuit_breaker(%(queue)s, %(failures)s::integer, %(cool_down_s)s::float8);
