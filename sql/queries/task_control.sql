-- Control: what producers and operators do to a task. The rules live in the SQL functions
-- (sql/functions/tasks.sql) so psql users get exactly the same behaviour.

-- name: task_cancel
SELECT * FROM pgqueue.cancel(%(id)s);

-- name: task_retry
SELECT * FROM pgqueue.retry(%(id)s);
