-- Per-user budgets and caps (SPEC §12), by PUT/GET /users/{user}/limits and `pgqueue limits`.
-- The rules (what counts as spend, when a budget is used up) live in sql/functions/limits.sql.

-- name: user_limits_set
-- Replace a user's limits (all NULL: remove them). Lowered below the spend: running tasks are
-- stopped; raised: pending tasks are claimable at once.
SELECT user_id, cost_per_day::float8, cost_per_month::float8, max_running, updated_at
  FROM pgqueue.set_user_limits(%(user_id)s, %(cost_per_day)s::numeric,
                               %(cost_per_month)s::numeric, %(max_running)s::integer);

-- name: user_limits_get
-- A user's limits, NULLs when none are set.
SELECT %(user_id)s::text AS user_id, l.cost_per_day::float8, l.cost_per_month::float8,
       l.max_running, l.updated_at
  FROM (SELECT 1) one
  LEFT JOIN pgqueue.user_limits l ON l.user_id = %(user_id)s::text;

-- name: user_limits_list
SELECT user_id, cost_per_day::float8, cost_per_month::float8, max_running, updated_at
  FROM pgqueue.user_limits ORDER BY user_id;

-- name: user_usage_get
-- What a user spent today and this month (UTC), what runs, whether a budget is used up, and
-- the daily rollup of the last %(days)s days.
SELECT %(user_id)s::text AS user_id,
       s.day_cost::float8, s.month_cost::float8,
       (SELECT count(*) FROM pgqueue.tasks r
         WHERE r.status = 'running' AND r.user_id = %(user_id)s::text) AS running,
       pgqueue.budget_exhausted(%(user_id)s::text) AS budget_exhausted,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'day', d.day, 'input_tokens', d.input_tokens,
                    'output_tokens', d.output_tokens, 'cost', d.cost) ORDER BY d.day DESC)
                   FROM pgqueue.usage_daily d
                  WHERE d.user_id = %(user_id)s::text
                    AND d.day > (now() AT TIME ZONE 'UTC')::date - %(days)s::integer),
                '[]') AS days
  FROM pgqueue.user_spend(%(user_id)s::text) s;
