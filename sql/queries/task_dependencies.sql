-- Dependencies (SPEC §10) on the producer side.

-- name: task_lock_dependencies
-- Lock the dependencies of an enqueue (all of a batch's at once) FOR SHARE before its INSERT,
-- in the same transaction: pgqueue.lock_tasks takes them all or none and never waits while
-- holding one (sql/functions/workflows.sql, "Lock order"), so the insert's trigger, which
-- locks each row's dependencies again, finds them held and waits for nobody. Issued only
-- for enqueues that name a dependency.
SELECT pgqueue.lock_tasks(%(ids)s::uuid[]);
