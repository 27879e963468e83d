-- 0014 — a task inserted already final gets its webhook too (SPEC §13).
--
-- A task whose dependency had failed or been cancelled before its enqueue is created
-- `cancelled` (dependency_failed, sql/functions/workflows.sql): it never passes through an
-- UPDATE, so the tasks_update_finished trigger of 0013 never saw it and its callback_url was
-- never called. This trigger covers inserts. It is row-level with a WHEN clause (evaluated
-- in C: a task that is not final or has no callback_url pays nothing) and deferred to commit,
-- because the audit row that gives the delivery its event_id is written by the
-- statement-level tasks_insert_events, which fires after every row-level AFTER trigger of
-- the statement. Its body is in sql/functions/workflows.sql (re-applied on every migrate).
CREATE FUNCTION pgqueue.on_task_inserted_final() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;

CREATE CONSTRAINT TRIGGER tasks_insert_final AFTER INSERT ON pgqueue.tasks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.callback_url IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION pgqueue.on_task_inserted_final();
