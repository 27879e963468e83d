-- 0007 — a cancel wins, and a remote worker's lease is bound to the token that claimed it.
--
-- A cancel wins (SPEC §2): once cancel_requested is set, a retryable failure, a release, a
-- timeout or a stall ends the task cancelled; a cancelled task is never handed out again.
-- task_finish_many and pgqueue.reap() decide so; the schema makes the rule hold for every
-- writer, psql included: a task whose cancel was requested is never pending, so no claim can
-- see it. Before this, a retryable failure of a task whose cancel had been requested put it
-- back to pending with the flag set, and it was claimed and run again. Such rows end now.
UPDATE pgqueue.tasks
   SET status = 'cancelled', completed_at = now(), updated_at = now(),
       error = jsonb_build_object('type', 'cancelled', 'message', 'cancel requested',
                                  'retryable', false)
 WHERE status = 'pending' AND cancel_requested;

ALTER TABLE pgqueue.tasks
    ADD CONSTRAINT tasks_cancel_wins CHECK (NOT (cancel_requested AND status = 'pending'));

-- Which API token a remote worker claims with (SPEC §4: "a lease is bound to the worker token
-- that claimed it"). A worker id is chosen by its client, and a lease is "<attempt>:<worker
-- id>": without this, any worker token that learnt a lease could heartbeat, complete or fail
-- another token's task. The claim records its token on the worker's row (and refuses a
-- worker id another token holds); every report is fenced by it. NULL for local workers,
-- which report with database credentials. No foreign key: tokens are revoked, never deleted,
-- and worker rows come and go with their heartbeats.
ALTER TABLE pgqueue.workers ADD COLUMN token_id bigint;
