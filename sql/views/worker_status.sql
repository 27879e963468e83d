-- pgqueue.worker_status: every worker with a heartbeat row, how fresh it is, and what it
-- runs according to the tasks table (running_tasks) beside what it last reported (reported).
-- A worker silent for longer than pgqueue.stall_s (default 30 s) is shown as not alive; the
-- reaper deletes its row on its next pass.
CREATE OR REPLACE VIEW pgqueue.worker_status AS
SELECT w.id, w.host, w.pid, w.queues, w.kinds, w.concurrency,
       w.running AS reported_running,
       (SELECT count(*) FROM pgqueue.tasks t
         WHERE t.status = 'running' AND t.worker_id = w.id) AS running_tasks,
       w.started_at,
       round(extract(epoch FROM now() - w.heartbeat_at)::numeric, 1) AS heartbeat_age_s,
       w.heartbeat_at >= now() - make_interval(
           secs => coalesce(nullif(current_setting('pgqueue.stall_s', true), '')::float8, 30))
           AS alive
  FROM pgqueue.workers w
 ORDER BY w.id;

COMMENT ON VIEW pgqueue.worker_status IS 'Workers with heartbeat age, liveness and their running task count.';
