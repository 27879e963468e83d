-- 0006 — tenant isolation of idempotency keys, a schedule-fire namespace no producer can
-- write, and bounds the schema itself enforces (issue 9, SPEC §2 "Bounded numbers", §3).
--
-- Keys scoped by owner: one key was unique across the whole table, so Bob sending Alice's
-- key got Alice's task back (or a 409 naming it). A key is now unique per owner; tasks
-- without an owner share one scope. coalesce(user_id, '') puts NULL owners in one scope
-- (a NULL is distinct from every other NULL in a plain unique index) and works on every
-- PostgreSQL we run on, unlike NULLS NOT DISTINCT (15+). '' is never a token's user
-- (api_tokens_user_valid), so only rows written by hand with user_id = '' share the
-- ownerless scope. The index stays partial: enqueues without a key never touch it.
-- (CREATE INDEX in a migration holds a SHARE lock on tasks while it builds: writes wait,
-- reads do not. The keyed rows are usually few.)

CREATE UNIQUE INDEX tasks_owner_idempotency_key_idx
    ON pgqueue.tasks ((coalesce(user_id, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX pgqueue.tasks_idempotency_key_idx;


-- Schedule fires: which slot of which schedule already made its task. The scheduler used
-- the task idempotency key `schedule:<name>:<fire time>`, which any producer could predict
-- from GET /schedules and plant first (the fire was skipped, or last_task_id pointed at the
-- producer's task). This table is written by the scheduler only, in the transaction that
-- claims the schedule row; producers have no way to insert here. Rows older than a day
-- are pruned by the scheduler as it fires (sql/queries/schedule.sql).
CREATE TABLE pgqueue.schedule_fires (
    schedule text NOT NULL,          -- no FK: a deleted schedule's recent fires may stay
    fire_at  timestamptz NOT NULL,   -- the nominal (cron) slot
    task_id  uuid NOT NULL,          -- no FK: retention deletes old tasks
    fired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, fire_at)
);

COMMENT ON TABLE pgqueue.schedule_fires IS
    'One row per schedule slot fired: the de-duplication no producer can pre-empt.';


-- Backoff and timeout bounds (SPEC §1, §2): backoff_base_s = backoff_max_s = 1e308 was
-- accepted, and the retry that needed it could not be recorded (make_interval overflow):
-- the task failed on its first attempt, or was stranded for remote workers. NaN and
-- Infinity compare above every number in PostgreSQL, so `<= bound` refuses them too.
-- Existing rows above the bounds are clamped first, so the new CHECKs hold for every row.
UPDATE pgqueue.tasks
   SET backoff_base_s = least(backoff_base_s, 86400),
       backoff_max_s = least(backoff_max_s, 86400),
       timeout_s = least(timeout_s, 604800)
 WHERE backoff_base_s > 86400 OR backoff_max_s > 86400 OR timeout_s > 604800;

ALTER TABLE pgqueue.tasks
    DROP CONSTRAINT tasks_backoff_base_positive,
    ADD CONSTRAINT tasks_backoff_base_range CHECK (backoff_base_s > 0 AND backoff_base_s <= 86400),
    DROP CONSTRAINT tasks_backoff_max_positive,
    ADD CONSTRAINT tasks_backoff_max_range CHECK (backoff_max_s > 0 AND backoff_max_s <= 86400),
    DROP CONSTRAINT tasks_timeout_positive,
    ADD CONSTRAINT tasks_timeout_range CHECK (timeout_s > 0 AND timeout_s <= 604800);
