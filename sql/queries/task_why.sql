-- Why a task is not running (SPEC §12). The reasons are computed in pgqueue.why()
-- (sql/functions/limits.sql) by the rules the claim applies.

-- name: task_why
-- Why a task is not running: {"status", "reasons": [...]} (pgqueue.why).
SELECT pgqueue.why(%(id)s::uuid);
