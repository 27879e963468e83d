-- pgqueue.running_tasks: what runs right now, where, for how long, and how fresh its
-- heartbeat is. A heartbeat_age_s near PGQUEUE_STALL_S means its worker is in trouble.
-- Reads running rows only (tasks_running_idx).
CREATE OR REPLACE VIEW pgqueue.running_tasks AS
SELECT t.id, t.queue, t.kind, t.worker_id, t.attempts AS attempt, t.max_retries,
       t.user_id, t.started_at,
       round(extract(epoch FROM now() - t.started_at)::numeric, 1) AS runtime_s,
       round(extract(epoch FROM now() - t.heartbeat_at)::numeric, 1) AS heartbeat_age_s,
       t.timeout_s, t.cancel_requested, t.progress, t.parent_id
  FROM pgqueue.tasks t
 WHERE t.status = 'running';

COMMENT ON VIEW pgqueue.running_tasks IS 'Running tasks with runtime and heartbeat age (seconds).';
