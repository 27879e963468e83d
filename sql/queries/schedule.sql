-- Schedules (sql/migrations/0003_schedules.sql): managed by pgqueue.schedules.service
-- (CLI and HTTP), fired by pgqueue.schedules.scheduler.

-- name: clock_now
-- The database clock: every scheduling decision is taken in its time, never a client's.
SELECT now();

-- name: schedule_insert
-- A new schedule; no row back means the name is taken.
INSERT INTO pgqueue.schedules (name, cron, timezone, task, enabled, next_fire_at)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(task)s::jsonb, %(enabled)s,
        %(next_fire_at)s::timestamptz)
ON CONFLICT (name) DO NOTHING
RETURNING *;

-- name: schedule_get
SELECT * FROM pgqueue.schedules WHERE name = %(name)s;

-- name: schedule_get_for_update
-- Lock one schedule while its new definition is computed (PATCH reads, then writes).
SELECT * FROM pgqueue.schedules WHERE name = %(name)s FOR UPDATE;

-- name: schedule_list
SELECT * FROM pgqueue.schedules ORDER BY name;

-- name: schedule_update
-- Replace a schedule's definition (the caller computed next_fire_at for it).
UPDATE pgqueue.schedules
   SET cron = %(cron)s, timezone = %(timezone)s, task = %(task)s::jsonb,
       enabled = %(enabled)s, next_fire_at = %(next_fire_at)s::timestamptz, updated_at = now()
 WHERE name = %(name)s
RETURNING *;

-- name: schedule_delete
-- A schedule and its record of fires (a new schedule of the same name starts afresh).
WITH fires AS (DELETE FROM pgqueue.schedule_fires WHERE schedule = %(name)s)
DELETE FROM pgqueue.schedules WHERE name = %(name)s RETURNING name;

-- name: schedule_claim_due
-- The enabled schedules due at %(now)s (NULL: the database's now()), locked for this
-- transaction. SKIP LOCKED: a schedule another scheduler is firing right now is not due for
-- us; by the time its lock is released, its next_fire_at has moved on. That is what makes
-- many schedulers fire each slot once. Served by schedules_due_idx.
SELECT s.*, coalesce(%(now)s::timestamptz, now()) AS clock
  FROM pgqueue.schedules s
 WHERE s.enabled AND s.next_fire_at <= coalesce(%(now)s::timestamptz, now())
 ORDER BY s.next_fire_at
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED;

-- name: schedule_fire_record
-- Record that this slot of the schedule made this task; no row back means the slot had
-- already fired (an operator rewound next_fire_at), and the caller rolls its task back.
-- pgqueue.schedule_fires (migration 0006) is written by the scheduler only: no producer can
-- pre-empt a fire, unlike the task idempotency key `schedule:<name>:<slot>` it replaces.
-- Fires older than a day of this schedule go in the same statement (PK range), so the
-- table holds about a day of slots per schedule.
WITH pruned AS (
    DELETE FROM pgqueue.schedule_fires
     WHERE schedule = %(name)s AND fire_at < %(fire_at)s::timestamptz - interval '1 day'
)
INSERT INTO pgqueue.schedule_fires (schedule, fire_at, task_id)
VALUES (%(name)s, %(fire_at)s::timestamptz, %(task_id)s::uuid)
ON CONFLICT (schedule, fire_at) DO NOTHING
RETURNING task_id;

-- name: schedule_fired
-- Record a fire and move the schedule to its next slot (same transaction as the claim).
-- A slot that had already fired keeps the task it made as last_task_id.
UPDATE pgqueue.schedules
   SET last_fire_at = %(fire_at)s::timestamptz,
       last_task_id = CASE WHEN %(already_fired)s::boolean THEN last_task_id
                           ELSE %(task_id)s::uuid END,
       next_fire_at = %(next_fire_at)s::timestamptz, updated_at = now()
 WHERE name = %(name)s;

-- name: schedule_next_due_in
-- Seconds until the earliest enabled schedule is due (NULL when none is): how long an idle
-- scheduler may sleep.
SELECT extract(epoch FROM min(next_fire_at) - now())::float8
  FROM pgqueue.schedules WHERE enabled;

-- name: schedule_disable
-- Pause a schedule whose expression or time zone can no longer be evaluated (an edited row,
-- a zone gone from tzdata), instead of failing on it at every pass.
UPDATE pgqueue.schedules SET enabled = false, updated_at = now() WHERE name = %(name)s;
