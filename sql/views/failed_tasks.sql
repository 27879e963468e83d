-- pgqueue.failed_tasks: tasks that ended in failure, newest first by default, with the
-- error unpacked into columns so `WHERE error_type = ...` and `GROUP BY error_message` work.
-- Put one back with `SELECT pgqueue.retry(id) FROM pgqueue.failed_tasks WHERE ...`.
CREATE OR REPLACE VIEW pgqueue.failed_tasks AS
SELECT t.id, t.queue, t.kind, t.attempts, t.max_retries,
       t.error->>'type' AS error_type,
       t.error->>'message' AS error_message,
       t.exit_code, t.user_id, t.completed_at AS failed_at, t.payload, t.tags, t.parent_id
  FROM pgqueue.tasks t
 WHERE t.status = 'failed'
 ORDER BY t.completed_at DESC;

COMMENT ON VIEW pgqueue.failed_tasks IS 'Failed tasks with error type and message as columns, newest first.';
