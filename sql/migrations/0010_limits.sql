-- 0010 — limits, fairness and budgets (SPEC §12): per-queue rate limits, per-user concurrency,
-- fair claiming and circuit breakers; per-user cost budgets and caps, kept in a daily spend
-- rollup that retention does not delete.
--
-- Everything here is read by pgqueue.claim() only for queues that set a limit and only while
-- some user has limits (pgqueue.queues.limited, pgqueue.user_limits): the claim of a queue
-- without limits reads one settings row, as before.

ALTER TABLE pgqueue.queues
    -- at most rate_limit_tasks starts in any rate_limit_per_s-second window
    ADD COLUMN rate_limit_tasks integer
        CONSTRAINT queues_rate_limit_tasks_range CHECK (rate_limit_tasks BETWEEN 1 AND 100000),
    ADD COLUMN rate_limit_per_s double precision
        CONSTRAINT queues_rate_limit_per_s_range CHECK (rate_limit_per_s > 0 AND rate_limit_per_s <= 86400),
    -- The start times of the last rate_limit_tasks claims, oldest first. Written by the claim
    -- while it holds this row locked, so concurrent claimers count each other's starts; a ring
    -- in the row is one read and one write per claim, where counting the audit trail would
    -- read up to N event rows.
    ADD COLUMN rate_starts timestamptz[] NOT NULL DEFAULT '{}',
    ADD COLUMN per_user_concurrency integer
        CONSTRAINT queues_per_user_concurrency_range CHECK (per_user_concurrency BETWEEN 1 AND 100000),
    ADD COLUMN fair boolean NOT NULL DEFAULT false,
    ADD COLUMN breaker_failures integer
        CONSTRAINT queues_breaker_failures_range CHECK (breaker_failures BETWEEN 1 AND 100000),
    ADD COLUMN breaker_cool_down_s double precision
        CONSTRAINT queues_breaker_cool_down_range CHECK (breaker_cool_down_s > 0 AND breaker_cool_down_s <= 86400),
    ADD CONSTRAINT queues_rate_limit_both
        CHECK ((rate_limit_tasks IS NULL) = (rate_limit_per_s IS NULL)),
    ADD CONSTRAINT queues_breaker_both
        CHECK ((breaker_failures IS NULL) = (breaker_cool_down_s IS NULL)),
    -- The claim's one question about a queue: does anything restrict it? Stored, so the fast
    -- path tests one boolean of the settings row.
    ADD COLUMN limited boolean GENERATED ALWAYS AS (
        paused OR concurrency_limit IS NOT NULL OR rate_limit_tasks IS NOT NULL
        OR per_user_concurrency IS NOT NULL OR fair OR breaker_failures IS NOT NULL) STORED;

-- Circuit breaker state per queue and kind, written by the outcome trigger below (failures in
-- a row, opening) and by the claim (the probe it hands out).
CREATE TABLE pgqueue.breakers (
    queue         text NOT NULL,
    kind          text NOT NULL,
    failures      integer NOT NULL DEFAULT 0,  -- consecutive failed attempts
    open_until    timestamptz,                 -- NULL: closed; past: half-open (one probe)
    probe_id      uuid,                        -- the task sent as the probe, while it runs
    probe_attempt integer,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, kind)
);

-- Fair queues: when the claim last served each owner. Among owners with as many running
-- tasks, the one served longest ago goes first, so a one-task owner behind a 100,000-task
-- owner starts within one claim even when every claim takes a single task (running counts
-- alone cannot tell two idle owners apart). '' is the tasks without an owner.
CREATE TABLE pgqueue.fair_turns (
    queue     text NOT NULL,
    user_id   text NOT NULL,
    served_at timestamptz NOT NULL,
    PRIMARY KEY (queue, user_id)
);

-- Per-user budgets and caps (PUT /users/{user}/limits). NULL: no such limit.
CREATE TABLE pgqueue.user_limits (
    user_id        text PRIMARY KEY CONSTRAINT user_limits_user_id_length CHECK (length(user_id) BETWEEN 1 AND 255),
    cost_per_day   numeric CONSTRAINT user_limits_cost_per_day_range CHECK (cost_per_day >= 0),
    cost_per_month numeric CONSTRAINT user_limits_cost_per_month_range CHECK (cost_per_month >= 0),
    max_running    integer CONSTRAINT user_limits_max_running_range CHECK (max_running BETWEEN 0 AND 100000),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Spend per owner and UTC day, summed from the usage every recorded attempt adds. Retention
-- deletes tasks, never these rows: budgets and monthly reports outlive the tasks. '' is the
-- tasks without an owner (a primary key cannot hold NULL). numeric: sums never overflow.
CREATE TABLE pgqueue.usage_daily (
    user_id       text NOT NULL,
    day           date NOT NULL,
    input_tokens  numeric NOT NULL DEFAULT 0,
    output_tokens numeric NOT NULL DEFAULT 0,
    cost          numeric NOT NULL DEFAULT 0,
    attempts      bigint NOT NULL DEFAULT 0,  -- usage reports counted in
    PRIMARY KEY (user_id, day)
);

-- Per-user claim scans (fair, per-user caps): the distinct owners of a queue's backlog are
-- found by skipping through this index, then each owner's first due tasks in claim order.
-- Partial like tasks_claim_idx: it holds the backlog only, and a claim's UPDATE to running
-- adds nothing to it.
CREATE INDEX tasks_user_claim_idx ON pgqueue.tasks (queue, user_id, priority DESC, run_at, seq)
    WHERE status = 'pending';

-- Outcomes feed the spend rollup, the budget stop and the circuit breakers. One statement-level
-- trigger, like the audit trigger: a flush of 1,000 outcomes costs one run. Its body lives in
-- sql/functions/limits.sql (re-applied on migrate); this is the placeholder it replaces.
CREATE FUNCTION pgqueue.on_tasks_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_limits_outcome AFTER UPDATE ON pgqueue.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.on_tasks_outcome();
