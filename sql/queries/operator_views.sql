-- Reads of the operator views (sql/views/) for `pgqueue status`: the terminal shows what
-- psql users see, from the same definitions. (Its queues and workers are the rows of
-- GET /queues and /workers, stats.sql, which read the same views.)

-- name: view_failed_recent
-- The latest failures (the view is ordered newest first).
SELECT id, queue, kind, attempts, error_type, error_message, exit_code, failed_at
  FROM pgqueue.failed_tasks LIMIT %(limit)s;

-- name: view_stalled_count
SELECT count(*) FROM pgqueue.stalled_tasks;
