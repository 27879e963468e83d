-- Reads of the operator views (sql/views/) for `pgqueue status`: the terminal shows what
-- psql users see, from the same definitions.

-- name: view_queue_stats
SELECT queue, pending, due, running, completed, failed, cancelled,
       oldest_due_age_s::float8, completed_last_minute, paused, concurrency_limit, limits,
       open_breakers
  FROM pgqueue.queue_stats ORDER BY queue;

-- name: view_worker_status
SELECT id, host, pid, queues, concurrency, running_tasks, heartbeat_age_s::float8, alive
  FROM pgqueue.worker_status;

-- name: view_failed_recent
-- The latest failures (the view is ordered newest first).
SELECT id, queue, kind, attempts, error_type, error_message, exit_code, failed_at
  FROM pgqueue.failed_tasks LIMIT %(limit)s;

-- name: view_stalled_count
SELECT count(*) FROM pgqueue.stalled_tasks;
