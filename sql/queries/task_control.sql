-- Control: what producers and operators do to a task. The rules live in the SQL functions
-- (sql/functions/tasks.sql) so psql users get exactly the same behaviour.

-- name: task_cancel
SELECT * FROM pgqueue.cancel(%(id)s);

-- name: task_retry
SELECT * FROM pgqueue.retry(%(id)s);

-- name: task_signal
-- Send a signal (SPEC §11); pgqueue.send_signal decides everything, see workflows.sql.
SELECT (s.task).*, s.stored, s.same
  FROM pgqueue.send_signal(%(id)s, %(name)s, %(payload)s::jsonb) s;
