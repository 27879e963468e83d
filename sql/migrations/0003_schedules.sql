-- 0003 — recurring schedules: a cron expression in a time zone, and the task it enqueues.
--
-- Why a table and not a cron daemon: every worker and API process may run the scheduler
-- (pgqueue.schedules.scheduler), and the row is what makes them agree. A scheduler claims
-- due rows with FOR UPDATE SKIP LOCKED, enqueues one task per row and advances
-- next_fire_at in the same transaction, so each fire time yields exactly one task however
-- many schedulers race. The task also carries the idempotency key
-- `schedule:<name>:<fire time>`: a second guard should an operator rewind next_fire_at.
--
-- next_fire_at is computed in Python (croniter, DST-aware) because PostgreSQL cannot
-- evaluate cron; the database only stores it and says what is due by its own clock.

CREATE TABLE pgqueue.schedules (
    name         text PRIMARY KEY
                 CONSTRAINT schedules_name_valid CHECK (name ~ '^[A-Za-z0-9_.:-]{1,100}$'),
    cron         text NOT NULL,
    timezone     text NOT NULL DEFAULT 'UTC',
    -- The task template: the §1 fields a producer may set (kind, payload, queue, priority,
    -- max_retries, timeout_s, user_id, tags...), validated by pgqueue before it is stored.
    task         jsonb NOT NULL CONSTRAINT schedules_task_has_kind CHECK (task ? 'kind'),
    enabled      boolean NOT NULL DEFAULT true,
    next_fire_at timestamptz NOT NULL,
    last_fire_at timestamptz,          -- the nominal (cron) time of the last fire
    last_task_id uuid,                 -- no FK: retention deletes old tasks
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE pgqueue.schedules IS
    'Recurring tasks: cron + timezone + task template. After downtime a schedule fires once, not once per missed slot.';

-- "Which enabled schedules are due?" — the scheduler's only question, asked every few
-- seconds by every process running it. Partial: paused schedules never enter it.
CREATE INDEX schedules_due_idx ON pgqueue.schedules (next_fire_at) WHERE enabled;
