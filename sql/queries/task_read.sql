-- Reads: single tasks, listings and the audit trail.

-- name: task_get
SELECT * FROM pgqueue.tasks WHERE id = %(id)s;

-- name: task_get_many
SELECT * FROM pgqueue.tasks WHERE id = ANY(%(ids)s::uuid[]);

-- name: task_list
-- Newest first, keyset-paginated on seq (%(before_seq)s is the cursor). Every filter is
-- optional: NULL means "any". Served by tasks_seq_idx, or tasks_user_idx per user.
SELECT * FROM pgqueue.tasks
 WHERE (%(before_seq)s::bigint IS NULL OR seq < %(before_seq)s::bigint)
   AND (%(status)s::pgqueue.task_status IS NULL OR status = %(status)s::pgqueue.task_status)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
   AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
   AND (%(user_id)s::text IS NULL OR user_id = %(user_id)s::text)
   AND (%(parent_id)s::uuid IS NULL OR parent_id = %(parent_id)s::uuid)
 ORDER BY seq DESC
 LIMIT %(limit)s;

-- name: task_events
-- A task's audit trail, oldest first.
SELECT id, task_id, event, status, attempt, worker_id, at, data
  FROM pgqueue.events WHERE task_id = %(id)s ORDER BY id;

-- name: task_dependency_results
-- The results of the dependencies of these tasks (SPEC §10 ctx.dependency_results), as
-- (dependent id, dependency id, result). Asked only for claimed tasks that have
-- dependencies; one primary-key probe per dependency.
SELECT d.task_id, t.id, t.result
  FROM unnest(%(ids)s::uuid[], %(deps)s::uuid[]) AS d(task_id, dep)
  JOIN pgqueue.tasks t ON t.id = d.dep;

-- name: task_signals
-- Signals already sent to these tasks (all names, or one), for wait_for_signal.
SELECT task_id, name, payload FROM pgqueue.signals
 WHERE task_id = ANY(%(ids)s::uuid[]) AND (%(name)s::text IS NULL OR name = %(name)s::text);
