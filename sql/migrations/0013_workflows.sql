-- 0013 — dependencies (SPEC §10), durable signals (§11) and webhooks (§13).
--
-- Dependencies. A task's `depends_on` (at most 100 ids) is kept on its row for reading and
-- for a retry by hand; what is still unresolved lives in `task_deps`, one row per
-- (dependency, dependent) edge, keyed by the dependency, plus `deps_left` on the dependent.
-- When a dependency ends, one statement (the tasks_update_finished trigger, so a
-- completion written in psql counts too) deletes its edges and decrements each dependent's
-- count; a dependent reaching 0 becomes pending. So one completion unblocks any number of
-- dependents through one index range of task_deps, and a fan-in of 100 is decided by its
-- counter, never by reading the other 99 edges. The counter lives in the row the statement
-- updates: two dependencies completing at once serialize on that row, and the second
-- re-reads the count the first left (READ COMMITTED re-evaluates the SET on the new row).
-- Edges are deleted when their dependency ends, whatever the outcome, so the table holds
-- only unresolved edges. No foreign keys: tasks are purged by retention, and an FK would
-- lock the tasks on every edge insert.
--
-- The enqueue race (the last dependency completes while its dependent is inserted) is closed
-- by the insert trigger: it reads the dependencies FOR SHARE, which a completing UPDATE must
-- wait for. Either the completion committed first (the insert sees `completed` and the task
-- starts pending) or it waits for the insert's commit, and the statement it fires then reads
-- the new edges with a fresh snapshot.
--
-- A task without dependencies pays a WHEN test evaluated in C on insert, and on update one
-- statement-level trigger that finds no finished row, or an empty index range.

ALTER TABLE pgqueue.tasks
    ADD COLUMN depends_on uuid[] NOT NULL DEFAULT '{}'
        CONSTRAINT tasks_depends_on_size CHECK (cardinality(depends_on) <= 100),
    ADD COLUMN deps_left integer NOT NULL DEFAULT 0
        CONSTRAINT tasks_deps_left_positive CHECK (deps_left >= 0),
    ADD COLUMN callback_url text
        CONSTRAINT tasks_callback_url_size CHECK (length(callback_url) BETWEEN 1 AND 2048),
    ADD COLUMN waiting_for jsonb;

CREATE TABLE pgqueue.task_deps (
    depends_on uuid NOT NULL,  -- the dependency
    task_id    uuid NOT NULL,  -- the blocked dependent
    PRIMARY KEY (depends_on, task_id)
);
COMMENT ON TABLE pgqueue.task_deps IS
    'Unresolved dependency edges: deleted when the dependency ends (see migration 0013).';

-- The bodies are in sql/functions/workflows.sql (re-applied on every migrate); these stubs
-- exist so the triggers can be created here.
CREATE FUNCTION pgqueue.on_task_insert_dependencies() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE FUNCTION pgqueue.on_task_insert_edges() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE FUNCTION pgqueue.on_tasks_finished() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;

CREATE TRIGGER tasks_insert_dependencies BEFORE INSERT ON pgqueue.tasks
    FOR EACH ROW WHEN (cardinality(NEW.depends_on) > 0)
    EXECUTE FUNCTION pgqueue.on_task_insert_dependencies();
CREATE TRIGGER tasks_insert_edges AFTER INSERT ON pgqueue.tasks
    FOR EACH ROW WHEN (NEW.status = 'blocked')
    EXECUTE FUNCTION pgqueue.on_task_insert_edges();
-- One statement-level trigger for what follows a task's end: its dependents (above) and its
-- webhook (below). Named to sort after tasks_update_events: same-event triggers fire in name
-- order, so the audit row of a task's end (its event_id) exists before this one runs.
CREATE TRIGGER tasks_update_finished AFTER UPDATE ON pgqueue.tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.on_tasks_finished();

CREATE INDEX tasks_blocked_idx ON pgqueue.tasks (seq) WHERE status = 'blocked';


-- Signals. One row per (task, name): the first payload stands. A signal sent before the wait
-- is simply a row the wait finds. Deleted with their task by retention.
CREATE TABLE pgqueue.signals (
    task_id uuid NOT NULL,
    name    text NOT NULL CONSTRAINT signals_name_valid CHECK (name ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    payload jsonb,
    sent_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, name)
);
COMMENT ON TABLE pgqueue.signals IS 'Signals sent to tasks (SPEC §11); the first payload of a name stands.';

-- When a wait expires: waiting_for->>'until', as a timestamp the reaper can range-scan. The
-- text is always written by pgqueue as an RFC 3339 timestamp with its offset, so the cast
-- does not depend on the session's time zone (hence IMMUTABLE is true of the values stored).
CREATE FUNCTION pgqueue.wait_until(waiting_for jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (waiting_for->>'until')::timestamptz $$;
CREATE INDEX tasks_waiting_until_idx ON pgqueue.tasks (pgqueue.wait_until(waiting_for))
    WHERE status = 'waiting' AND waiting_for ? 'until';


-- Webhooks: one delivery task per (task, terminal event), recorded here by the trigger that
-- makes it. Producers have no way to write this table (nor the reserved queue), so no
-- producer can pre-empt or suppress a delivery (SPEC §3's internal namespace).
CREATE TABLE pgqueue.webhook_deliveries (
    task_id     uuid NOT NULL,
    event_id    bigint NOT NULL,
    delivery_id uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, event_id)
);
COMMENT ON TABLE pgqueue.webhook_deliveries IS
    'Which delivery task carries each final event of a task with a callback_url (SPEC §13).';

-- pgqueue.enqueue() takes depends_on and callback_url (sql/functions/tasks.sql re-creates it).
DROP FUNCTION IF EXISTS pgqueue.enqueue(text, jsonb, text, integer, timestamptz, integer,
                              double precision, text, text, text[], uuid, interval);
