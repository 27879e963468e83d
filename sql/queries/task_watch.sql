-- Following one task from a terminal (`pgqueue watch`, `pgqueue enqueue --wait`).

-- name: task_events_after
-- The task's events newer than the last one shown, oldest first: each change re-reads only
-- what is new, however long the trail (a progress event per step adds up).
SELECT id, task_id, event, status, attempt, worker_id, at, data
  FROM pgqueue.events
 WHERE task_id = %(id)s AND id > %(after)s
 ORDER BY id;
