-- pgqueue.usage_by_user: tokens and cost by owner, queue and day (UTC) — who uses the budget.
-- A task counts on the day it was created: its usage, summed over all its attempts, then
-- lands on one day that never moves. Finished tasks deleted by retention
-- (PGQUEUE_RETENTION_DAYS) leave the totals: keep them longer if you bill from this view.
-- Every figure is read and summed as numeric (arbitrary precision; a bigint cast failed on a
-- row written by hand), so no task's figures can make the view raise (SPEC §2 "Bounded
-- numbers"). The columns stay numeric: CREATE OR REPLACE VIEW cannot change their types.
CREATE OR REPLACE VIEW pgqueue.usage_by_user AS
SELECT t.user_id, t.queue,
       (t.created_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS tasks,
       count(*) FILTER (WHERE t.status = 'failed') AS failed,
       sum((t.usage->>'input_tokens')::numeric) AS input_tokens,
       sum((t.usage->>'output_tokens')::numeric) AS output_tokens,
       sum((t.usage->>'cost')::numeric) AS cost
  FROM pgqueue.tasks t
 GROUP BY t.user_id, t.queue, day;

COMMENT ON VIEW pgqueue.usage_by_user IS 'Tokens and cost by user, queue and UTC day (of task creation).';
