-- pgqueue.usage_by_day: spend per owner and UTC day, from the rollup the outcome trigger keeps
-- (sql/functions/limits.sql). Retention never deletes it, so it outlives the tasks it counts.
-- user_id NULL: tasks without an owner.
CREATE OR REPLACE VIEW pgqueue.usage_by_day AS
SELECT nullif(u.user_id, '') AS user_id, u.day, u.input_tokens, u.output_tokens, u.cost,
       u.attempts
  FROM pgqueue.usage_daily u;

COMMENT ON VIEW pgqueue.usage_by_day IS 'Spend per user and UTC day, kept after retention deletes the tasks.';
