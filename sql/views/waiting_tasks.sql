-- pgqueue.waiting_tasks: tasks waiting for a signal (SPEC §11), with the signal's name and
-- until when they wait (NULL: no timeout). Send one with pgqueue.signal(task_id, name, payload).
CREATE OR REPLACE VIEW pgqueue.waiting_tasks AS
SELECT t.id AS task_id, t.queue, t.kind, t.user_id,
       t.waiting_for->>'signal' AS signal,
       pgqueue.wait_until(t.waiting_for) AS until,
       t.updated_at AS waiting_since, t.attempts
  FROM pgqueue.tasks t
 WHERE t.status = 'waiting'
 ORDER BY t.updated_at;

COMMENT ON VIEW pgqueue.waiting_tasks IS 'Tasks waiting for a signal, with its name and deadline.';
