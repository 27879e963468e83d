-- 0012 — the two statuses of agent workflows (SPEC §1, §10, §11): `blocked` while a task's
-- dependencies are unfinished, `waiting` while it waits for a signal.
--
-- Alone in its migration on purpose: a value added to an enum cannot be used in the
-- transaction that adds it ("unsafe use of new value"), and every migration runs in one
-- transaction. 0013 (indexes, triggers, views on these statuses) comes after this commits.
ALTER TYPE pgqueue.task_status ADD VALUE IF NOT EXISTS 'blocked';
ALTER TYPE pgqueue.task_status ADD VALUE IF NOT EXISTS 'waiting';
