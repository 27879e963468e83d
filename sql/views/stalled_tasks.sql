-- pgqueue.stalled_tasks: running tasks whose worker went silent — what the reaper will
-- requeue (or fail, or cancel) on its next pass. The threshold is the session setting
-- pgqueue.stall_s (`SET pgqueue.stall_s = 60;`), 30 s (the PGQUEUE_STALL_S default) if unset.
-- worker_alive says whether the worker still has a heartbeat row: alive but silent on a task
-- points at a blocked event loop or a lost connection; gone means the process died.
CREATE OR REPLACE VIEW pgqueue.stalled_tasks AS
SELECT t.id, t.queue, t.kind, t.worker_id, t.attempts AS attempt, t.max_retries,
       round(extract(epoch FROM now() - t.heartbeat_at)::numeric, 1) AS heartbeat_age_s,
       t.started_at, t.cancel_requested,
       CASE WHEN t.cancel_requested THEN 'cancelled'
            WHEN t.attempts > t.max_retries THEN 'failed'
            ELSE 'pending' END AS reaper_will_make_it,
       (w.id IS NOT NULL) AS worker_alive
  FROM pgqueue.tasks t
  LEFT JOIN pgqueue.workers w ON w.id = t.worker_id
 WHERE t.status = 'running'
   AND t.heartbeat_at < now() - make_interval(
           secs => coalesce(nullif(current_setting('pgqueue.stall_s', true), '')::float8, 30));

COMMENT ON VIEW pgqueue.stalled_tasks IS 'Running tasks without a heartbeat for pgqueue.stall_s (default 30) seconds.';
