-- pgqueue.blocked_tasks: tasks waiting for dependencies (SPEC §10), with what each still
-- waits on: `waiting_on` lists the unfinished dependencies (from the unresolved edges),
-- `deps_left` how many. Oldest first.
CREATE OR REPLACE VIEW pgqueue.blocked_tasks AS
SELECT t.id AS task_id, t.queue, t.kind, t.user_id, t.depends_on, t.deps_left,
       ARRAY(SELECT e.depends_on FROM pgqueue.task_deps e
              JOIN pgqueue.tasks d ON d.id = e.depends_on
             WHERE e.task_id = t.id ORDER BY d.seq) AS waiting_on,
       t.created_at, now() - t.created_at AS blocked_for
  FROM pgqueue.tasks t
 WHERE t.status = 'blocked'
 ORDER BY t.seq;

COMMENT ON VIEW pgqueue.blocked_tasks IS 'Blocked tasks and the dependencies each still waits on.';
